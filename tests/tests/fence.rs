//! Fan-out through the real binary (issue 8): one source database migrated to two targets. The cutover
//! of one migration completes and leaves the source fenced; the other migration's cutover is abandoned
//! (its drain held by a lock on its target) and unfences only its own fence: the source stays read-only.
use milink_e2e::milink::Milink;
use milink_e2e::pg::{self, Side};
use milink_e2e::unique;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// The third local cluster (`dev/pg.sh replica`, wal_level = replica: fine for a subscriber), as a second target.
fn second_target_url() -> String {
    let script = milink_e2e::workspace_root().join("dev/pg.sh");
    let up = Command::new("bash").arg(&script).arg("replica").output().expect("running dev/pg.sh replica");
    assert!(up.status.success(), "dev/pg.sh replica failed: {}", String::from_utf8_lossy(&up.stderr));
    let env = Command::new("bash").arg(&script).arg("env").output().expect("running dev/pg.sh env");
    String::from_utf8_lossy(&env.stdout)
        .lines()
        .find_map(|line| line.trim().strip_prefix("export MILINK_PG_REPLICA_URL=").map(str::to_owned))
        .expect("dev/pg.sh env prints MILINK_PG_REPLICA_URL")
}

async fn connect_url(url: &str, database: &str) -> anyhow::Result<tokio_postgres::Client> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.password(pg::servers().password.as_str()).dbname(database);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A fresh session on the source database can write (it reads the database's default, like an application).
async fn source_writable(database: &str) -> anyhow::Result<bool> {
    let source = pg::connect(Side::Source, database).await?;
    Ok(source.execute("UPDATE products SET stock = stock WHERE product_id = 1", &[]).await.is_ok())
}

async fn start(milink: &Milink, target: &str, database: &str, settings: serde_json::Value) -> anyhow::Result<String> {
    let body = json!({ "source": "src", "target": target, "databases": [database], "settings": settings });
    let (status, body) = milink.post("/api/migrations", &body).await?;
    anyhow::ensure!(status == 202, "start answered {status}: {body}");
    Ok(body["migrations"][0]["id"].as_str().unwrap_or_default().to_owned())
}

async fn fence_keys(database: &str) -> anyhow::Result<i64> {
    let admin = pg::connect(Side::Source, "postgres").await?;
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_db_role_setting s, unnest(s.setconfig) AS item
             WHERE s.setrole = 0 AND s.setdatabase = (SELECT oid FROM pg_database WHERE datname = $1)
               AND item LIKE 'milink.fence\\_%'",
            &[&database],
        )
        .await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_abandoned_cutover_never_unfences_another_migrations_fence() -> anyhow::Result<()> {
    let database = unique("ToyStoreFanout");
    pg::load_sample(&database, "toystore.sql").await?;
    let second = second_target_url();
    let second_admin = connect_url(&second, "postgres").await?;
    second_admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg::ident(&database))).await?;
    let servers = pg::servers();
    let milink = Milink::start(&format!(
        "[connections.dst2]\nengine = \"postgres\"\nurl = \"{second}\"\npassword_file = \"{}\"\n",
        servers.password_file
    ))
    .await?;
    let held = start(&milink, "dst", &database, json!({ "drainTimeoutSeconds": 3 })).await?;
    let other = start(&milink, "dst2", &database, json!({})).await?;
    assert_ne!(held, other, "one migration per target");
    milink.wait_status(&held, "ReadyForCutover", READY_TIMEOUT).await?;
    milink.wait_status(&other, "ReadyForCutover", READY_TIMEOUT).await?;

    // The other migration cuts over: the source is fenced for good.
    let (status, body) = milink.post(&format!("/api/migrations/{other}/cutover"), &json!({ "confirmTrafficStopped": true })).await?;
    assert_eq!(status, 202, "{body}");
    milink.wait_status(&other, "Completed", Duration::from_secs(120)).await?;
    assert!(!source_writable(&database).await?, "a completed cutover leaves the source read-only");
    // The other cutover wrote to the shared source (its fence, its records): the held link catches up
    // with that before its migration is ready again (seen once on a loaded CI machine: CatchingUp here).
    milink.wait_status(&held, "ReadyForCutover", READY_TIMEOUT).await?;

    // The held migration's drain cannot finish: its target's apply waits behind a lock on products, and a
    // change to products (made by a superuser turning read-only off) is on its way.
    let mut blocker = pg::connect(Side::Target, &database).await?;
    let lock = blocker.transaction().await?;
    lock.batch_execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE").await?;
    let source = pg::connect(Side::Source, &database).await?;
    // Separate statements: the SET counts from the next transaction on.
    source.batch_execute("SET default_transaction_read_only = off").await?;
    source.batch_execute("UPDATE products SET stock = stock + 1 WHERE product_id = 1").await?;
    let (status, body) = milink.post(&format!("/api/migrations/{held}/cutover"), &json!({ "confirmTrafficStopped": true })).await?;
    assert_eq!(status, 202, "{body}");
    let back = milink
        // Up to 10 s for the tracking slot (the blocker's transaction), 30 s for the verification before the
        // fence to give up on a link that cannot apply, then the 3 s drain: two minutes leave room for a busy CI.
        .wait_for(&held, "the abandoned cutover", Duration::from_secs(120), |m| {
            m["cutover"]["abandonedReason"].is_string() && m["status"] != "CuttingOver"
        })
        .await?;
    assert!(back["cutover"]["abandonedReason"].as_str().unwrap_or_default().contains("did not confirm"), "{back:#}");
    assert!(!source_writable(&database).await?, "the abandoned cutover's unfence lifted the other migration's fence");
    assert_eq!(fence_keys(&database).await?, 1, "only the completed migration's fence is left");

    // Released, the held migration cuts over too; the source stays read-only with both fences in place.
    lock.rollback().await?;
    // Its link catches up with the released change; the lag can cross the ready threshold between a poll and
    // the request (seen once on a loaded CI machine: 409), so it asks the way a user watching the status would.
    milink.cut_over_when_ready(&held, READY_TIMEOUT).await?;
    milink.wait_status(&held, "Completed", Duration::from_secs(120)).await?;
    assert!(!source_writable(&database).await?);
    assert_eq!(fence_keys(&database).await?, 2);
    pg::assert_target_matches_source(&database).await?;
    assert!(!milink.logs().contains(&servers.password), "the password leaked into milink's log");

    pg::drop_everywhere(&database).await;
    second_admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg::ident(&database))).await?;
    Ok(())
}
