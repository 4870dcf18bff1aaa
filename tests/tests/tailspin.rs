//! The seed lab's story, for real: two local PostgreSQL servers, the real `milink` binary, a writer
//! playing the application until the fence stops it, and a data check done with plain SQL.
use milink_e2e::milink::Milink;
use milink_e2e::pg::{self, Side};
use milink_e2e::writer::{self, Writer};
use milink_e2e::unique;
use serde_json::json;
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(180);

fn database<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["databases"].as_array().and_then(|dbs| dbs.iter().find(|d| d["name"] == name)).unwrap_or_else(|| panic!("{name} not in {report:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn tailspin_assess_link_sync_and_cut_over_under_live_writes() -> anyhow::Result<()> {
    let toystore = unique("ToyStore");
    let customer360 = unique("Customer360");
    pg::load_sample(&toystore, "toystore.sql").await?;
    pg::load_sample(&customer360, "customer360.sql").await?;
    let webhook = milink_e2e::webhook::Webhook::start().await?;
    let milink = Milink::start(&format!("[notify]\nwebhook_url = \"{}\"\n", webhook.url)).await?;

    // Assess: ToyStore is ready, Customer360 is not, and says why.
    let report = milink.assess("src").await?;
    assert_eq!(report["status"], "Completed", "{report:#}");
    assert_ne!(database(&report, &toystore)["readiness"], "NotReady");
    let c360 = database(&report, &customer360);
    assert_eq!(c360["readiness"], "NotReady");
    let blockers: Vec<_> = c360["findings"].as_array().unwrap().iter().filter(|f| f["severity"] == "Blocker").collect();
    assert!(!blockers.is_empty() && blockers.iter().all(|b| b["remediation"].as_str().is_some_and(|r| !r.is_empty())));

    // A not-ready database is refused with its blockers; nothing is started.
    let (status, refused) = milink
        .post("/api/migrations", &json!({ "source": "src", "target": "dst", "databases": [customer360] }))
        .await?;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "database_not_ready");
    assert!(refused["error"]["details"][0]["blockers"].as_array().is_some_and(|b| !b.is_empty()));

    // Link ToyStore while the application writes.
    let writer = Writer::start(&toystore);
    let id = milink.start_migration(&toystore, json!({})).await?;
    // Starting again, one after the other or all at once, returns the same migration.
    assert_eq!(milink.start_migration(&toystore, json!({})).await?, id);
    let concurrent = futures_join(&milink, &toystore).await?;
    assert!(concurrent.iter().all(|other| *other == id), "{concurrent:?} vs {id}");
    let listed = milink.get("/api/migrations").await?;
    let ours = listed["migrations"].as_array().unwrap().iter().filter(|m| m["database"] == toystore.as_str()).count();
    assert_eq!(ours, 1);

    let ready = milink.wait_status(&id, "ReadyForCutover", READY_TIMEOUT).await?;
    assert!(ready["lagBytes"].as_u64().is_some());

    // Cutover needs the confirmation.
    let (status, body) = milink.post(&format!("/api/migrations/{id}/cutover"), &json!({})).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("confirmation_required")));

    milink.cut_over_when_ready(&id, READY_TIMEOUT).await?;
    let written = writer.until_fenced().await;
    let stopped_by = written.stopped_by.clone().unwrap_or_default();
    assert!(stopped_by.contains("read-only") || stopped_by.contains("57P01"), "the fence must stop the writer: {stopped_by:?}");
    let done = milink.wait_status(&id, "Completed", Duration::from_secs(120)).await?;
    assert!(done["cutover"]["writeDowntimeMs"].as_i64().is_some(), "{done:#}");
    assert!(done["history"].as_array().unwrap().iter().any(|h| h["message"].as_str().unwrap_or("").contains("write downtime")));
    assert!(written.orders.len() > 10, "the writer wrote during sync: {} ({:?})", written.orders.len(), written.stopped_by);

    writer::assert_acknowledged_on_target(&toystore, &written).await?;
    pg::assert_target_matches_source(&toystore).await?;
    // The source stays fenced after cutover.
    let source = pg::connect(Side::Source, &toystore).await?;
    assert!(source.execute("UPDATE products SET stock = stock WHERE product_id = 1", &[]).await.is_err());
    // Cutover of a completed migration is refused.
    let (status, _) = milink.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await?;
    assert_eq!(status, 409);

    // The password never reached a log line, even at debug level (the subscription's CONNECTION carries it).
    assert!(!milink.logs().contains(&pg::servers().password), "the password leaked into the log");
    // Notifications reached the webhook: assessment done, ready for cutover, completed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = webhook.received();
    let statuses: Vec<&str> = received.iter().filter(|n| n["migrationId"] == id.as_str()).filter_map(|n| n["status"].as_str()).collect();
    assert!(statuses.contains(&"ReadyForCutover") && statuses.contains(&"Completed"), "{received:#?}");
    assert!(received.iter().any(|n| n["kind"] == "assessment"), "{received:#?}");

    pg::drop_everywhere(&toystore).await;
    pg::drop_everywhere(&customer360).await;
    Ok(())
}

async fn futures_join(milink: &Milink, database: &str) -> anyhow::Result<Vec<String>> {
    let starts = (0..5).map(|_| milink.start_migration(database, json!({})));
    futures::future::join_all(starts).await.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_during_seeding_and_during_draining_it_resumes_and_loses_nothing() -> anyhow::Result<()> {
    let toystore = unique("ToyStoreKill");
    pg::load_sample(&toystore, "toystore.sql").await?;
    // Enough data that seeding takes seconds, so the kill lands in the middle of it.
    pg::connect(Side::Source, &toystore)
        .await?
        .batch_execute(
            "CREATE TABLE audit_log (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text NOT NULL); \
             INSERT INTO audit_log (body) SELECT repeat(md5(g::text), 4) FROM generate_series(1, 600000) g;",
        )
        .await?;
    let mut milink = Milink::start("").await?;
    let writer = Writer::start(&toystore);
    let id = milink.start_migration(&toystore, json!({ "drainTimeoutSeconds": 120 })).await?;
    milink.wait_status(&id, "Seeding", READY_TIMEOUT).await?;
    milink.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    milink.restart().await?;
    milink.wait_status(&id, "ReadyForCutover", READY_TIMEOUT).await?;

    // Hold the drain: a lock on the target keeps the apply worker from applying changes to products.
    let mut blocker = pg::connect(Side::Target, &toystore).await?;
    let lock = blocker.transaction().await?;
    lock.batch_execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE").await?;
    let (status, body) = milink.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await?;
    assert_eq!(status, 202, "{body}");
    milink.wait_for(&id, "Draining", Duration::from_secs(120), |m| m["step"] == "Draining").await?;
    milink.kill(); // in the middle of the drain, with the source fenced
    milink.restart().await?;
    lock.rollback().await?;
    let written = writer.until_fenced().await;
    milink.wait_status(&id, "Completed", Duration::from_secs(180)).await?;
    assert!(!written.orders.is_empty(), "the writer wrote: {:?}", written.stopped_by);
    writer::assert_acknowledged_on_target(&toystore, &written).await?;
    pg::assert_target_matches_source(&toystore).await?;
    pg::drop_everywhere(&toystore).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_that_cannot_finish_unfences_the_source_and_returns_to_ready() -> anyhow::Result<()> {
    let toystore = unique("ToyStoreDrain");
    pg::load_sample(&toystore, "toystore.sql").await?;
    let milink = Milink::start("").await?;
    let id = milink.start_migration(&toystore, json!({ "drainTimeoutSeconds": 3 })).await?;
    milink.wait_status(&id, "ReadyForCutover", READY_TIMEOUT).await?;

    // Hold a lock on the target so the apply worker cannot apply the next change to products.
    let mut blocker = pg::connect(Side::Target, &toystore).await?;
    let lock = blocker.transaction().await?;
    lock.batch_execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE").await?;
    let source = pg::connect(Side::Source, &toystore).await?;
    source.execute("UPDATE products SET stock = stock + 1 WHERE product_id = 1", &[]).await?;

    let (status, _) = milink.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await?;
    assert_eq!(status, 202);
    let back = milink
        .wait_for(&id, "the abandoned cutover", Duration::from_secs(120), |m| {
            m["cutover"]["abandonedReason"].is_string() && m["status"] != "CuttingOver"
        })
        .await?;
    assert!(back["cutover"]["abandonedReason"].as_str().unwrap().contains("did not confirm"), "{back:#}");
    lock.rollback().await?;

    // The source takes writes again, and a second cutover completes.
    let fresh = pg::connect(Side::Source, &toystore).await?;
    fresh.execute("UPDATE products SET stock = stock + 1 WHERE product_id = 2", &[]).await?;
    // A status read just after the abandoned cutover can still be the one before it (a 409 on a loaded
    // machine), so it asks the way a user watching the status would.
    milink.cut_over_when_ready(&id, READY_TIMEOUT).await?;
    milink.wait_status(&id, "Completed", Duration::from_secs(120)).await?;
    pg::assert_target_matches_source(&toystore).await?;
    pg::drop_everywhere(&toystore).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_database_names_migrate_correctly() -> anyhow::Result<()> {
    let milink = Milink::start("").await?;
    for base in ["Toy\"Store", "Toy Store", "Tøy'商店"] {
        let name = unique(base);
        pg::load_sample(&name, "toystore.sql").await?;
        let id = milink.start_migration(&name, json!({})).await?;
        milink.wait_status(&id, "ReadyForCutover", READY_TIMEOUT).await?;
        let (status, body) = milink.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await?;
        assert_eq!(status, 202, "{body}");
        milink.wait_status(&id, "Completed", Duration::from_secs(120)).await?;
        pg::assert_target_matches_source(&name).await?;
        pg::drop_everywhere(&name).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cutover_is_refused_when_not_ready_and_cancel_cleans_up() -> anyhow::Result<()> {
    let toystore = unique("ToyStoreCancel");
    pg::load_sample(&toystore, "toystore.sql").await?;
    let milink = Milink::start("").await?;
    let id = milink.start_migration(&toystore, json!({})).await?;
    let (status, body) = milink.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await?;
    // Right after start the link is validating or deploying: not ready.
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("not_ready_for_cutover")), "{body}");
    milink.wait_status(&id, "ReadyForCutover", READY_TIMEOUT).await?;
    let (status, _) = milink.post(&format!("/api/migrations/{id}/cancel"), &json!({})).await?;
    assert_eq!(status, 202);
    milink.wait_status(&id, "Cancelled", Duration::from_secs(60)).await?;
    let source = pg::connect(Side::Source, &toystore).await?;
    let leftovers: i64 = source
        .query_one("SELECT (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'milink%' AND database = current_database())", &[])
        .await?
        .get(0);
    assert_eq!(leftovers, 0, "cancel leaves no publication or slot on the source");
    let target = pg::connect(Side::Target, &toystore).await?;
    let subscriptions: i64 = target.query_one("SELECT count(*) FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())", &[]).await?.get(0);
    assert_eq!(subscriptions, 0);
    // After a cancel the same database can be started again: a new migration.
    let again = milink.start_migration(&toystore, json!({})).await?;
    assert_ne!(again, id);
    let (_, _) = milink.post(&format!("/api/migrations/{again}/cancel"), &json!({})).await?;
    milink.wait_status(&again, "Cancelled", Duration::from_secs(60)).await?;
    pg::drop_everywhere(&toystore).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_target_on_cancel_drops_only_a_database_milink_created() -> anyhow::Result<()> {
    let milink = Milink::start("").await?;
    let exists = |name: String| async move {
        let admin = pg::connect(Side::Target, "postgres").await?;
        let n: i64 = admin.query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&name]).await?.get(0);
        anyhow::Ok(n == 1)
    };

    // milink created it: cancel with dropTargetOnCancel drops it.
    let created = unique("ToyStoreDrop");
    pg::load_sample(&created, "toystore.sql").await?;
    let id = milink.start_migration(&created, json!({ "dropTargetOnCancel": true })).await?;
    milink.wait_status(&id, "ReadyForCutover", READY_TIMEOUT).await?;
    assert!(exists(created.clone()).await?);
    milink.post(&format!("/api/migrations/{id}/cancel"), &json!({})).await?;
    milink.wait_status(&id, "Cancelled", Duration::from_secs(60)).await?;
    assert!(!exists(created.clone()).await?, "the database milink created is dropped");

    // It was there before, with data: validation refuses it, and cancel keeps it.
    let theirs = unique("ToyStoreTheirs");
    pg::load_sample(&theirs, "toystore.sql").await?;
    let admin = pg::connect(Side::Target, "postgres").await?;
    admin.batch_execute(&format!("CREATE DATABASE {}", pg::ident(&theirs))).await?;
    pg::connect(Side::Target, &theirs).await?.batch_execute("CREATE TABLE precious (id int PRIMARY KEY); INSERT INTO precious VALUES (1)").await?;
    let id = milink.start_migration(&theirs, json!({ "dropTargetOnCancel": true })).await?;
    milink.wait_for(&id, "Failed", Duration::from_secs(60), |m| m["status"] == "Failed").await?;
    let (status, body) = milink.post(&format!("/api/migrations/{id}/cancel"), &json!({})).await?;
    assert_eq!(status, 202, "{body}");
    let cancelled = milink.wait_status(&id, "Cancelled", Duration::from_secs(60)).await?;
    assert_eq!(cancelled["status"], "Cancelled");
    assert!(exists(theirs.clone()).await?, "a database milink did not create is never dropped");
    let kept: i64 = pg::connect(Side::Target, &theirs).await?.query_one("SELECT count(*) FROM precious", &[]).await?.get(0);
    assert_eq!(kept, 1, "a database milink did not create is never dropped");
    pg::drop_everywhere(&created).await;
    pg::drop_everywhere(&theirs).await;
    Ok(())
}
