//! Fleet: admission control by capacity, with the real binary and real PostgreSQL.
//! - Against a target with 4 logical replication workers (`dev/pg.sh small`), four migrations started at
//!   once: two start (each seeding link needs 2 workers), the others wait Queued saying why, the third
//!   starts by itself once the first two stream, the fourth once a cutover frees a worker; all end equal.
//! - Queued migrations stay queued across a restart of milink, and start in start order.
use milink_e2e::fleet::{self, count, start_many, wait_all, SMALL};
use milink_e2e::milink::Milink;
use milink_e2e::{pg, unique};
use serde_json::{json, Value};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread")]
async fn queued_migrations_start_by_themselves_when_a_worker_limited_target_frees_capacity() -> anyhow::Result<()> {
    let databases: Vec<String> = (1..=4).map(|n| unique(&format!("FleetAdmit{n}"))).collect();
    for database in &databases {
        fleet::load_for_small(database).await?;
    }
    let milink = Milink::start(&fleet::small_connection()).await?;
    let ids = start_many(&milink, "src", SMALL, &databases).await?;
    // Two seeding links take the 4 workers (2 each); once they stream (1 each) the third fits and starts
    // by itself; the fourth then waits, saying why. Seeding is fast, so the test looks at the settled state.
    let all = wait_all(&milink, &ids, "three ready, the fourth queued", TIMEOUT, |all| count(all, "ReadyForCutover") == 3).await?;
    assert_eq!(all[3]["status"], "Queued", "3 streaming links + 2 for a seeding one exceed 4 workers: {all:#?}");
    let reason = all[3]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("logical replication worker on small") && reason.contains("of 4 in use"), "the queued one says why: {reason}");
    // A cutover drops its subscription: the fourth starts.
    milink.cut_over_when_ready(&ids[0], TIMEOUT).await?;
    milink.wait_status(&ids[0], "Completed", TIMEOUT).await?;
    milink.wait_status(&ids[3], "ReadyForCutover", TIMEOUT).await?;
    for id in &ids[1..] {
        milink.cut_over_when_ready(id, TIMEOUT).await?;
    }
    wait_all(&milink, &ids, "all completed", TIMEOUT, |all| count(all, "Completed") == 4).await?;
    for database in &databases {
        fleet::assert_equal_on_small(database).await?;
        pg::drop_everywhere(database).await;
        fleet::drop_on_small(database).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_migrations_stay_queued_in_order_across_a_restart() -> anyhow::Result<()> {
    let databases: Vec<String> = (1..=3).map(|n| unique(&format!("FleetRestart{n}"))).collect();
    for database in &databases {
        pg::load_sample(database, "toystore.sql").await?;
    }
    // A target connection of its own, capped at one active migration.
    let config = format!("{}\n[admission]\nmax_active_per_target = 1\n", fleet::second_target("capped"));
    let mut milink = Milink::start(&config).await?;
    let ids = start_many(&milink, "src", "capped", &databases).await?;
    // A migration enters Queued saying "checking the capacity of both servers" until the next admission tick
    // names what it waits for; the test waits for that tick rather than racing it (a CI run caught the race).
    let says_why = |queued: &Value| {
        let reason = queued["reason"].as_str().unwrap_or_default();
        reason.contains("max_active_per_target") || reason.contains("behind older")
    };
    wait_all(&milink, &ids, "one started, two queued saying why", TIMEOUT, |all| {
        count(all, "Queued") == 2 && all[0]["status"] != "Queued" && all[0]["status"] != "Validating" && all[1..].iter().all(&says_why)
    })
    .await?;
    milink.restart().await?;
    tokio::time::sleep(Duration::from_secs(2)).await; // ten poll ticks of the restarted milink
    let all = fleet::show_all(&milink, &ids).await?;
    assert_eq!([&all[1]["status"], &all[2]["status"]], ["Queued", "Queued"], "still queued after a restart: {all:#?}");
    // Freeing the slot starts the oldest queued migration, not the newest.
    let (status, body) = milink.post(&format!("/api/migrations/{}/cancel", ids[0]), &json!({})).await?;
    assert_eq!(status, 202, "{body}");
    let all = wait_all(&milink, &ids, "the second started", TIMEOUT, |all| all[1]["status"] != "Queued").await?;
    assert_eq!(all[2]["status"], "Queued", "the third waits behind the second: {all:#?}");
    for id in &ids {
        milink.post(&format!("/api/migrations/{id}/cancel"), &json!({})).await?;
    }
    wait_all(&milink, &ids, "all cancelled", TIMEOUT, |all| count(all, "Cancelled") == 3).await?;
    for database in &databases {
        pg::drop_everywhere(database).await;
    }
    Ok(())
}

/// Batch cutover of every Ready migration from source `src`: one of them fails its cutover (a row written
/// on the target makes its verification differ), the other completes; a migration from another source
/// (`src2`, same server under another name) is not touched.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_cutover_by_source_completes_the_others_when_one_fails() -> anyhow::Result<()> {
    let databases: Vec<String> = (1..=3).map(|n| unique(&format!("FleetBatch{n}"))).collect();
    for database in &databases {
        pg::load_sample(database, "toystore.sql").await?;
    }
    let milink = Milink::start(&fleet::second_source("src2")).await?;
    let mut ids = start_many(&milink, "src", "dst", &databases[..2]).await?;
    ids.extend(start_many(&milink, "src2", "dst", &databases[2..]).await?);
    wait_all(&milink, &ids, "all ready", TIMEOUT, |all| count(all, "ReadyForCutover") == 3).await?;
    // A write on the target that the source does not have: the cutover's verification must refuse it.
    pg::connect(pg::Side::Target, &databases[1])
        .await?
        .batch_execute("INSERT INTO products (product_id, sku, name, category, price) VALUES (999999, 'only-on-target', 'x', 'x', 1)")
        .await?;
    let (status, body) = milink.post("/api/batch/cutover", &json!({ "source": "src" })).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("confirmation_required")), "{body}");
    let (status, body) = milink.post("/api/batch/cutover", &json!({ "source": "src", "confirmTrafficStopped": true })).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["selected"], 2, "only the migrations from src: {body:#}");
    assert_eq!(body["counts"]["accepted"], 2, "{body:#}");
    let all = wait_all(&milink, &ids, "one completed, one abandoned", TIMEOUT, |all| {
        all[0]["status"] == "Completed" && all[1]["cutover"]["abandonedReason"].is_string() && all[1]["status"] != "CuttingOver"
    })
    .await?;
    assert!(all[1]["cutover"]["abandonedReason"].as_str().unwrap_or_default().contains("differs"), "{:#}", all[1]);
    assert_eq!(all[2]["status"], "ReadyForCutover", "another source's migration is untouched");
    pg::assert_target_matches_source(&databases[0]).await?;
    assert!(milink_e2e::holds::source_writable(&databases[1]).await?, "the failed cutover gave its source its writes back");
    let (status, body) = milink.post("/api/batch/cancel", &json!({ "ids": [ids[1], ids[2], ids[0]] })).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["counts"]["accepted"].as_u64(), body["counts"]["skipped"].as_u64()), (Some(2), Some(1)), "the completed one is skipped: {body:#}");
    wait_all(&milink, &ids[1..], "the others cancelled", TIMEOUT, |all| count(all, "Cancelled") == 2).await?;
    for database in &databases {
        pg::drop_everywhere(database).await;
    }
    Ok(())
}

/// A link that stops (its subscription disabled on the target) raises one `linkStalled` alert at the
/// webhook within a minute, not one per poll tick, and one "cleared" when it runs again.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_link_raises_one_alert_at_the_webhook_even_across_a_restart_and_clears_it() -> anyhow::Result<()> {
    let database = unique("FleetAlert");
    pg::load_sample(&database, "toystore.sql").await?;
    let hook = milink_e2e::webhook::Webhook::start().await?;
    let mut milink = Milink::start(&format!("[alerts]\nwebhook_url = \"{}?code=not-for-logs\"\n", hook.url)).await?;
    let id = milink.start_migration(&database, json!({})).await?;
    milink.wait_status(&id, "ReadyForCutover", TIMEOUT).await?;
    let link = format!("milink_{}", id.chars().filter(char::is_ascii_alphanumeric).take(12).collect::<String>());
    let target = pg::connect(pg::Side::Target, &database).await?;
    target.batch_execute(&format!("ALTER SUBSCRIPTION {link} DISABLE")).await?;
    let stalled_at = std::time::Instant::now();
    let alerts_for = |raised: bool| hook.received().into_iter().filter(|a| a["alert"] == "linkStalled" && a["raised"] == raised && a["migrationId"] == id.as_str()).count();
    while alerts_for(true) == 0 {
        anyhow::ensure!(stalled_at.elapsed() < Duration::from_secs(60), "no linkStalled alert within a minute; log:\n{}", milink.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // ten more poll ticks
    assert_eq!(alerts_for(true), 1, "deduplicated: {:#?}", hook.received());
    // What is raised is stored: a restart does not raise it again while the condition holds.
    milink.restart().await?;
    milink.wait_for(&id, "the stalled status after the restart", TIMEOUT, |m| m["status"] == "Stalled").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(alerts_for(true), 1, "raised again after a restart: {:#?}", hook.received());
    let alert = hook.received().into_iter().find(|a| a["alert"] == "linkStalled").unwrap_or_default();
    assert!(alert["message"].as_str().unwrap_or_default().contains("disabled"), "the alert says why: {alert:#}");
    target.batch_execute(&format!("ALTER SUBSCRIPTION {link} ENABLE")).await?;
    while alerts_for(false) == 0 {
        anyhow::ensure!(stalled_at.elapsed() < Duration::from_secs(120), "no cleared alert; log:\n{}", milink.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!milink.logs().contains("not-for-logs"), "the webhook's query string reached the log");
    milink.post(&format!("/api/migrations/{id}/cancel"), &json!({})).await?;
    milink.wait_status(&id, "Cancelled", TIMEOUT).await?;
    pg::drop_everywhere(&database).await;
    Ok(())
}
