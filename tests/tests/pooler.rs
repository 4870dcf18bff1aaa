//! Cutover behind PgBouncer with the real binary: the application's clients are connected THROUGH the
//! pooler (`dev/pgbouncer.sh`), keep writing while milink cuts over, and see a pause, not an error. Every
//! acknowledged write is then looked for on the target, and new transactions must land there. A pooler that
//! refuses the PAUSE (a wrong admin password) abandons the cutover with a clear error and leaves the source
//! writable, back at ReadyForCutover.
use milink_e2e::milink::Milink;
use milink_e2e::pg::{self, Side};
use milink_e2e::unique;
use milink_e2e::writer::{self, Written};
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const READY_TIMEOUT: Duration = Duration::from_secs(180);
const CLIENTS: usize = 4;

fn pooler() -> &'static HashMap<String, String> {
    static VARS: OnceLock<HashMap<String, String>> = OnceLock::new();
    VARS.get_or_init(|| {
        let _ = pg::servers();
        let script = milink_e2e::workspace_root().join("dev/pgbouncer.sh");
        let up = Command::new("bash").arg(&script).arg("up").output().expect("dev/pgbouncer.sh up");
        assert!(up.status.success(), "dev/pgbouncer.sh up failed:\n{}", String::from_utf8_lossy(&up.stderr));
        let env = Command::new("bash").arg(&script).arg("env").output().expect("dev/pgbouncer.sh env");
        String::from_utf8_lossy(&env.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    })
}

fn port_of(url: &str) -> String {
    url.rsplit(':').next().and_then(|rest| rest.split('/').next()).unwrap_or_default().to_owned()
}

/// The `[connections.src.options]` that name the pooler; `password_file` overrides the admin password's file.
fn pooler_options(password_file: Option<&str>) -> String {
    let vars = pooler();
    format!(
        "[connections.src.options]\npooler_admin_url = \"{}\"\npooler_password_file = \"{}\"\npooler_databases_file = \"{}\"\n",
        vars["MILINK_PGBOUNCER_ADMIN_URL"],
        password_file.unwrap_or(&vars["MILINK_PGBOUNCER_ADMIN_PASSWORD_FILE"]),
        vars["MILINK_PGBOUNCER_DATABASES_FILE"]
    )
}

/// Adds (or removes) the database's entry in the pooler's file, as milink writes it: under the lock, by rename.
fn set_entry(database: &str, present: bool) {
    let file = PathBuf::from(&pooler()["MILINK_PGBOUNCER_DATABASES_FILE"]);
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(file.with_extension("ini.lock")).unwrap();
    lock.lock().unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = text.lines().filter(|l| !l.starts_with(&format!("{database} ="))).map(str::to_owned).collect();
    if present {
        let port = port_of(&pg::servers().source_url);
        lines.push(format!("{database} = host=127.0.0.1 port={port} dbname={database}"));
    }
    let temporary = file.with_extension("ini.test-new");
    std::fs::write(&temporary, lines.join("\n") + "\n").unwrap();
    std::fs::set_permissions(&temporary, std::fs::metadata(&file).unwrap().permissions()).unwrap();
    std::fs::rename(&temporary, &file).unwrap();
}

async fn through_pooler(database: &str) -> Result<Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = pooler()["MILINK_PGBOUNCER_URL"].parse().unwrap();
    config.password(pg::servers().password.as_str()).dbname(database).connect_timeout(Duration::from_secs(10));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move { drop(connection.await) });
    Ok(client)
}

/// What the pooled clients saw.
#[derive(Default)]
struct Seen {
    written: Written,
    errors: Vec<String>,
    max_latency: Duration,
    transactions: u64,
}

/// `CLIENTS` application clients writing through the pooler, each its own products (so the last
/// acknowledged stock of a product is well defined), one simple-protocol transaction at a time.
async fn pooled_writers(database: &str, stop: Arc<AtomicBool>) -> Seen {
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| tokio::spawn(write_through_pooler(database.to_owned(), client, stop.clone())))
        .collect();
    let mut seen = Seen::default();
    for task in tasks {
        let one = task.await.expect("writer task");
        seen.written.orders.extend(one.written.orders);
        seen.written.stock_updates.extend(one.written.stock_updates);
        seen.errors.extend(one.errors);
        seen.max_latency = seen.max_latency.max(one.max_latency);
        seen.transactions += one.transactions;
    }
    seen
}

async fn write_through_pooler(database: String, client_number: usize, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    let mut client = None;
    let mut n: i64 = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let product = ((n as usize * CLIENTS + client_number) % 48 + 1) as i32;
        let started = Instant::now();
        if client.is_none() {
            match through_pooler(&database).await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    seen.errors.push(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let sql = format!(
            "BEGIN; INSERT INTO orders (customer_id, status, ordered_at) \
             VALUES ((SELECT min(customer_id) FROM customers) + {n} % 100, 'placed', now()) RETURNING order_id; \
             UPDATE products SET stock = stock + 1 WHERE product_id = {product} RETURNING stock; COMMIT"
        );
        let result = client.as_ref().expect("connected").simple_query(&sql).await;
        let latency = started.elapsed();
        match result {
            Ok(messages) => {
                let values: Vec<i64> = messages
                    .iter()
                    .filter_map(|m| if let SimpleQueryMessage::Row(r) = m { r.get(0)?.parse().ok() } else { None })
                    .collect();
                seen.written.orders.push(values[0]);
                seen.written.stock_updates.push((product, values[1] as i32));
                seen.max_latency = seen.max_latency.max(latency);
                seen.transactions += 1;
            }
            Err(error) => {
                seen.errors.push(match error.as_db_error() {
                    Some(db) => format!("{}: {}", db.code().code(), db.message()),
                    None => error.to_string(),
                });
                client = None; // reconnect, as an application's pool would
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seen
}


/// Which server a new transaction through the pooler runs on.
async fn server_port_through_pooler(database: &str) -> anyhow::Result<String> {
    let client = through_pooler(database).await?;
    let rows = client.simple_query("SELECT inet_server_port()::text").await?;
    Ok(rows.iter().find_map(|m| if let SimpleQueryMessage::Row(r) = m { r.get(0).map(str::to_owned) } else { None }).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_behind_the_pooler_see_a_pause_not_errors_and_land_on_the_target() -> anyhow::Result<()> {
    let database = unique("pooler_cutover");
    pg::load_sample(&database, "toystore.sql").await?;
    set_entry(&database, true);
    let milink = Milink::start(&pooler_options(None)).await?;
    let id = milink.start_migration(&database, json!({})).await?;
    milink.wait_status(&id, "ReadyForCutover", READY_TIMEOUT).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let writers = tokio::spawn({
        let (database, stop) = (database.clone(), stop.clone());
        async move { pooled_writers(&database, stop).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    milink.cut_over_when_ready(&id, READY_TIMEOUT).await?;
    let done = milink.wait_status(&id, "Completed", Duration::from_secs(120)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await; // writes after the cutover, on the target
    stop.store(true, Ordering::SeqCst);
    let seen = writers.await?;

    let target_port = port_of(&pg::servers().target_url);
    let pause = milink_e2e::pgbench::pooler_pause(&milink.logs()).unwrap_or_else(|| panic!("no PAUSE and RESUME in milink's log:\n{}", milink.logs()));
    println!(
        "pooler cutover: {} transactions, {} failed, max transaction latency {} ms, pause {} ms, write downtime {} ms, steps {}",
        seen.transactions,
        seen.errors.len(),
        seen.max_latency.as_millis(),
        pause.as_millis(),
        done["cutover"]["writeDowntimeMs"],
        done["cutover"]["steps"]
    );
    assert!(seen.errors.is_empty(), "clients behind the pooler saw errors: {:?}", seen.errors);
    assert!(seen.transactions > 20, "the clients wrote: {}", seen.transactions);
    // The goal is 1 s; the pause spans fence, drain, finalize and switch, which take longer than that here
    // (printed above). What the pooler itself must guarantee: no client waits longer than milink holds it.
    assert!(
        seen.max_latency <= pause + Duration::from_millis(500),
        "longest transaction {:?} exceeds the pause {pause:?}",
        seen.max_latency
    );
    writer::assert_acknowledged_on_target(&database, &seen.written).await?;
    assert_eq!(server_port_through_pooler(&database).await?, target_port, "new transactions land on the target");
    let entries = std::fs::read_to_string(&pooler()["MILINK_PGBOUNCER_DATABASES_FILE"])?;
    assert!(entries.contains(&format!("{database} = host=127.0.0.1 port={target_port} dbname={database}")), "{entries}");
    let admin_password = std::fs::read_to_string(&pooler()["MILINK_PGBOUNCER_ADMIN_PASSWORD_FILE"])?;
    assert!(!milink.logs().contains(admin_password.trim()), "the pooler's admin password leaked into the log");

    set_entry(&database, false);
    pg::drop_everywhere(&database).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pooler_that_refuses_the_pause_abandons_the_cutover_and_the_source_stays_writable() -> anyhow::Result<()> {
    let database = unique("pooler_refused");
    pg::load_sample(&database, "toystore.sql").await?;
    set_entry(&database, true);
    let wrong = tempfile::NamedTempFile::new()?;
    std::fs::write(wrong.path(), "not-the-admin-password")?;
    let milink = Milink::start(&pooler_options(Some(&wrong.path().display().to_string()))).await?;
    let id = milink.start_migration(&database, json!({})).await?;
    milink.wait_status(&id, "ReadyForCutover", READY_TIMEOUT).await?;

    let (status, body) = milink.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await?;
    assert_eq!(status, 202, "{body}");
    let back = milink
        .wait_for(&id, "the abandoned cutover", Duration::from_secs(60), |m| {
            m["cutover"]["abandonedReason"].is_string() && m["status"] == "ReadyForCutover"
        })
        .await?;
    let reason = back["cutover"]["abandonedReason"].as_str().unwrap_or_default();
    // The reason names the pooler and says what to do; the migration is not failed, the link is intact.
    assert!(reason.contains("pooler of connection 'src' (127.0.0.1:"), "{back:#}");
    assert!(reason.contains("nothing was fenced") && reason.contains("pooler_password_file"), "{back:#}");
    assert!(back["errorCode"].is_null(), "{back:#}");
    // Nothing was fenced: the source takes writes, directly and through the pooler.
    pg::connect(Side::Source, &database).await?.batch_execute("UPDATE products SET stock = stock + 1 WHERE product_id = 1").await?;
    assert_eq!(server_port_through_pooler(&database).await?, port_of(&pg::servers().source_url));
    assert!(!milink.logs().contains("not-the-admin-password"), "the admin password leaked into the log");

    milink.post(&format!("/api/migrations/{id}/cancel"), &json!({})).await?;
    milink.wait_status(&id, "Cancelled", Duration::from_secs(60)).await?;
    set_entry(&database, false);
    pg::drop_everywhere(&database).await;
    Ok(())
}

/// Runs the pooled writers while `during` runs, plus a second before and after; returns what they saw.
async fn writing_through<F: std::future::Future<Output = anyhow::Result<()>>>(database: &str, during: F) -> anyhow::Result<Seen> {
    let stop = Arc::new(AtomicBool::new(false));
    let writers = tokio::spawn({
        let (database, stop) = (database.to_owned(), stop.clone());
        async move { pooled_writers(&database, stop).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let result = during.await;
    tokio::time::sleep(Duration::from_secs(1)).await; // writes after the switch, on the new primary
    stop.store(true, Ordering::SeqCst);
    let seen = writers.await?;
    result.map(|()| seen)
}

/// What the writers of several runs acknowledged, in the order of the runs (the last stock of a product is
/// the one of the last run that touched it).
fn in_order(runs: &[&Seen]) -> Written {
    let mut all = Written::default();
    for run in runs {
        all.orders.extend(&run.written.orders);
        all.stock_updates.extend(&run.written.stock_updates);
    }
    all
}

/// Every table's rows equal on both sides, once the link has carried the last writes (it runs forward
/// again after a failback).
async fn tables_become_equal(database: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let source = pg::table_fingerprints(Side::Source, database).await?;
        let target = pg::table_fingerprints(Side::Target, database).await?;
        if source == target {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "source and target differ:\nsource {source:?}\ntarget {target:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The link kept after the last cutover (the reverse subscription on the source, its slot on the target)
/// is not removed by anything milink offers after Completed; the test removes it.
async fn drop_links_of(database: &str) -> anyhow::Result<()> {
    for side in [Side::Source, Side::Target] {
        let client = pg::connect(side, database).await?;
        client.batch_execute("SET default_transaction_read_only = off").await?;
        let rows = client.query("SELECT subname::text FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())", &[]).await?;
        for row in rows {
            let name = pg::ident(row.get(0));
            client.batch_execute(&format!("ALTER SUBSCRIPTION {name} DISABLE; ALTER SUBSCRIPTION {name} SET (slot_name = NONE); DROP SUBSCRIPTION {name}")).await?;
        }
    }
    for side in [Side::Source, Side::Target] {
        pg::connect(side, "postgres").await?.query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1", &[&database]).await?;
    }
    Ok(())
}

/// Issue 9: cutover keeping the reverse link, failback, and cutover again, each under live writes through
/// PgBouncer. After each, every acknowledged transaction is on the side that is primary, no client saw an
/// error, the pooler sends new transactions to that side, and the tables are equal on both sides.
#[tokio::test(flavor = "multi_thread")]
async fn cutover_failback_and_cutover_again_under_live_writes_through_the_pooler_lose_nothing() -> anyhow::Result<()> {
    let database = unique("pooler_failback");
    pg::load_sample(&database, "toystore.sql").await?;
    set_entry(&database, true);
    let milink = Milink::start(&pooler_options(None)).await?;
    let id = milink.start_migration(&database, json!({ "keepReverseLink": true })).await?;
    milink.wait_status(&id, "ReadyForCutover", READY_TIMEOUT).await?;
    let (source_port, target_port) = (port_of(&pg::servers().source_url), port_of(&pg::servers().target_url));

    let cutover = writing_through(&database, async {
        milink.cut_over_when_ready(&id, READY_TIMEOUT).await?;
        milink.wait_status(&id, "Completed", Duration::from_secs(120)).await.map(drop)
    })
    .await?;
    println!("cutover keeping the reverse link: {} transactions, {} failed, max latency {} ms", cutover.transactions, cutover.errors.len(), cutover.max_latency.as_millis());
    assert!(cutover.errors.is_empty(), "clients saw errors during the cutover: {:?}", cutover.errors);
    writer::assert_acknowledged_on(Side::Target, &database, &cutover.written).await?;

    let mut failback_took = Duration::ZERO;
    let failback = writing_through(&database, async {
        let started = Instant::now();
        let (status, body) = milink.post(&format!("/api/migrations/{id}/failback"), &json!({ "confirmTrafficStopped": true })).await?;
        anyhow::ensure!(status == 202, "failback answered {status}: {body}");
        let done = milink.wait_status(&id, "FailedBack", Duration::from_secs(60)).await?;
        failback_took = started.elapsed();
        let steps: Vec<&str> = done["cutover"]["failbackSteps"].as_array().into_iter().flatten().filter_map(|s| s["step"].as_str()).collect();
        anyhow::ensure!(steps == ["Fencing", "Draining", "Finalizing", "Switching"], "the failback's steps are recorded: {done:#}");
        Ok(())
    })
    .await?;
    println!(
        "failback: {} ms end to end; {} transactions, {} failed, max latency {} ms",
        failback_took.as_millis(), failback.transactions, failback.errors.len(), failback.max_latency.as_millis()
    );
    assert!(failback.errors.is_empty(), "clients saw errors during the failback: {:?}", failback.errors);
    assert!(failback.transactions > 20, "the clients wrote: {}", failback.transactions);
    // Everything acknowledged since the start, on the target and then on the source, is on the source.
    writer::assert_acknowledged_on(Side::Source, &database, &in_order(&[&cutover, &failback])).await?;
    assert_eq!(server_port_through_pooler(&database).await?, source_port, "after failback new transactions land on the source");
    tables_become_equal(&database).await?;

    let again = writing_through(&database, async {
        let (status, body) = milink.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await?;
        anyhow::ensure!(status == 202, "the second cutover answered {status}: {body}");
        milink.wait_for(&id, "the second cutover", Duration::from_secs(120), |m| m["status"] == "Completed" && m["cutover"]["attempt"] == 2).await.map(drop)
    })
    .await?;
    println!("cutover again: {} transactions, {} failed, max latency {} ms", again.transactions, again.errors.len(), again.max_latency.as_millis());
    assert!(again.errors.is_empty(), "clients saw errors failing forward again: {:?}", again.errors);
    writer::assert_acknowledged_on(Side::Target, &database, &in_order(&[&cutover, &failback, &again])).await?;
    assert_eq!(server_port_through_pooler(&database).await?, target_port, "failing forward again lands on the target");
    tables_become_equal(&database).await?;

    // The migration is made final: milink removes the reverse link from both servers; no failback after it.
    let (status, body) = milink.post(&format!("/api/migrations/{id}/drop-reverse-link"), &json!({})).await?;
    anyhow::ensure!(status == 202, "drop-reverse-link answered {status}: {body}");
    milink.wait_for(&id, "the reverse link removed", Duration::from_secs(60), |m| m["cutover"]["reverseLink"] == "dropped").await?;
    let left: i64 = pg::connect(Side::Source, &database).await?.query_one("SELECT count(*) FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())", &[]).await?.get(0);
    let slots: i64 = pg::connect(Side::Target, "postgres").await?
        .query_one("SELECT count(*) FROM pg_replication_slots WHERE database = $1", &[&database]).await?.get(0);
    assert_eq!((left, slots), (0, 0), "no subscription on the source, no slot on the target keeping WAL");
    let (status, body) = milink.post(&format!("/api/migrations/{id}/failback"), &json!({ "confirmTrafficStopped": true })).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("cannot_fail_back")), "{body}");

    drop_links_of(&database).await?;
    set_entry(&database, false);
    pg::drop_everywhere(&database).await;
    Ok(())
}
