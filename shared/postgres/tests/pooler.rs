//! The pooler client against a real PgBouncer (`dev/pgbouncer.sh up`, in front of `dev/pg.sh`'s clusters):
//! the engine's fence PAUSEs the database, its switch repoints the entry and RESUMEs, its unfence RESUMEs;
//! repeats are harmless; a pooler that is down, refuses the login or cannot pause in time fails the fence
//! with a clear error (transient: the flow retries, then abandons the cutover) and leaves the source writable. Every check asks PgBouncer or the servers.
mod support;

use milink_core::ports::{Engine, LinkPlan};
use milink_core::ErrorKind;
use milink_postgres::PostgresEngine;
use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use support::*;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// What `dev/pgbouncer.sh env` prints.
struct Pooler {
    url: String,
    admin_url: String,
    admin_password_file: String,
    databases_file: String,
}

fn pooler() -> &'static Pooler {
    static POOLER: OnceLock<Pooler> = OnceLock::new();
    POOLER.get_or_init(|| {
        let _ = servers(); // dev/pg.sh first: the pooler's script reads its password
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dev/pgbouncer.sh");
        let up = Command::new("bash").arg(&script).arg("up").output().expect("run dev/pgbouncer.sh up");
        assert!(up.status.success(), "dev/pgbouncer.sh up failed:\n{}", String::from_utf8_lossy(&up.stderr));
        let env = Command::new("bash").arg(&script).arg("env").output().expect("run dev/pgbouncer.sh env");
        let vars: HashMap<String, String> = String::from_utf8_lossy(&env.stdout)
            .lines()
            .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Pooler {
            url: vars["MILINK_PGBOUNCER_URL"].clone(),
            admin_url: vars["MILINK_PGBOUNCER_ADMIN_URL"].clone(),
            admin_password_file: vars["MILINK_PGBOUNCER_ADMIN_PASSWORD_FILE"].clone(),
            databases_file: vars["MILINK_PGBOUNCER_DATABASES_FILE"].clone(),
        }
    })
}

/// A plan whose source connection names the pooler, with `extra` options overriding.
fn pooled_plan(database: &str, extra: &str) -> LinkPlan {
    let p = pooler();
    let mut plan = plan(database);
    let mut options = format!(
        "pooler_admin_url = \"{}\"\npooler_password_file = \"{}\"\npooler_databases_file = \"{}\"\npooler_pause_timeout_seconds = 2\n",
        p.admin_url, p.admin_password_file, p.databases_file
    );
    for line in extra.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        options = options.lines().filter(|l| !l.starts_with(key)).map(|l| format!("{l}\n")).collect();
        options.push_str(&format!("{line}\n"));
    }
    plan.source.options = options.parse().unwrap();
    plan
}

/// Adds or removes the database's entry the way milink writes the file: under its lock, by rename.
fn edit_entries(edit: impl FnOnce(String) -> String) {
    let file = PathBuf::from(&pooler().databases_file);
    let lock = fs::OpenOptions::new().create(true).truncate(false).write(true).open(file.with_extension("ini.lock")).unwrap();
    lock.lock().unwrap();
    let text = edit(fs::read_to_string(&file).unwrap());
    let temporary = file.with_extension("ini.test-new");
    fs::write(&temporary, text).unwrap();
    fs::set_permissions(&temporary, fs::metadata(&file).unwrap().permissions()).unwrap();
    fs::rename(&temporary, &file).unwrap();
}

fn add_entry(database: &str) {
    let port = servers().source_url.rsplit(':').next().unwrap().split('/').next().unwrap().to_owned();
    edit_entries(|text| format!("{text}{database} = host=127.0.0.1 port={port} dbname={database}\n"));
}

fn remove_entry(database: &str) {
    edit_entries(|text| text.lines().filter(|l| !l.starts_with(&format!("{database} ="))).map(|l| format!("{l}\n")).collect());
}

async fn admin() -> Client {
    let mut config: tokio_postgres::Config = pooler().admin_url.parse().unwrap();
    config.password(fs::read_to_string(&pooler().admin_password_file).unwrap().trim());
    let (client, connection) = config.connect(NoTls).await.expect("admin console");
    tokio::spawn(async move { drop(connection.await) });
    client
}

/// The pooler's SHOW DATABASES row of `database`: (port, paused).
async fn shown(database: &str) -> Option<(String, bool)> {
    let rows = admin().await.simple_query("SHOW DATABASES").await.unwrap();
    rows.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) if r.get("name") == Some(database) => {
            Some((r.get("port").unwrap().to_owned(), r.get("paused") == Some("1")))
        }
        _ => None,
    })
}

/// A client of the application, connected through the pooler.
async fn through_pooler(database: &str) -> Client {
    let mut config: tokio_postgres::Config = pooler().url.parse().unwrap();
    config.password(servers().password.as_str()).dbname(database);
    let (client, connection) = config.connect(NoTls).await.expect("connect through the pooler");
    tokio::spawn(async move { drop(connection.await) });
    client
}

/// The port of the server that ran a write through the pooler (simple protocol: transaction pooling).
async fn write_through(client: &Client) -> Result<String, tokio_postgres::Error> {
    let rows = client
        .simple_query("BEGIN; UPDATE products SET stock = stock + 1 WHERE product_id = 1; SELECT inet_server_port()::text; COMMIT")
        .await?;
    Ok(rows.iter().find_map(|m| if let SimpleQueryMessage::Row(r) = m { r.get(0).map(str::to_owned) } else { None }).unwrap())
}

async fn linked(database: &str) -> (PostgresEngine, LinkPlan) {
    create_source_database(database, &sample("toystore.sql")).await;
    add_entry(database);
    let engine = PostgresEngine::new();
    let plan = pooled_plan(database, "");
    engine.create_link(&plan).await.expect("create_link");
    observe_until_ready(&engine, &plan, Duration::from_secs(120)).await;
    (engine, plan)
}

#[tokio::test(flavor = "multi_thread")]
async fn fence_pauses_switch_repoints_and_resumes_and_repeats_change_nothing() {
    let database = unique("pooler_switch_");
    let (engine, plan) = linked(&database).await;
    let client = through_pooler(&database).await;
    let source_port = write_through(&client).await.expect("a write through the pooler before the cutover");

    let position = engine.fence(&plan).await.expect("fence");
    assert_eq!(shown(&database).await.map(|s| s.1), Some(true), "the fence pauses the database on the pooler");
    engine.fence(&plan).await.expect("a repeated fence (PAUSE of a paused database) succeeds");
    // A transaction sent now waits in the pooler instead of failing on the read-only source.
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        (write_through(&client).await, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the pooler holds the transaction during the cutover");

    drain(&engine, &plan, position).await;
    engine.finalize(&plan).await.expect("finalize");
    engine.switch(&plan, false).await.expect("switch");
    let (port, waited) = waiting.await.unwrap();
    let port = port.expect("the held transaction succeeds after the switch");
    let target_port = servers().target_url.rsplit(':').next().unwrap().split('/').next().unwrap().to_owned();
    assert_ne!(source_port, target_port);
    assert_eq!(port, target_port, "the held transaction ran on the target");
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    assert_eq!(shown(&database).await, Some((target_port.clone(), false)), "the entry points at the target, resumed");
    let entry = fs::read_to_string(&pooler().databases_file).unwrap();
    assert!(entry.contains(&format!("{database} = host=127.0.0.1 port={target_port} dbname={database}")), "{entry}");

    engine.switch(&plan, false).await.expect("a repeated switch (RESUME of a running database) succeeds");
    let fresh = through_pooler(&database).await;
    assert_eq!(write_through(&fresh).await.unwrap(), target_port, "new transactions land on the target");
    remove_entry(&database);
    cleanup(&engine, &plan).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unfence_resumes_and_the_source_takes_the_held_writes() {
    let database = unique("pooler_unfence_");
    let (engine, plan) = linked(&database).await;
    let client = through_pooler(&database).await;
    engine.fence(&plan).await.expect("fence");
    let waiting = tokio::spawn(async move { write_through(&client).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.unfence(&plan).await.expect("unfence");
    let source_port = servers().source_url.rsplit(':').next().unwrap().split('/').next().unwrap().to_owned();
    assert_eq!(waiting.await.unwrap().expect("the held write succeeds on the unfenced source"), source_port);
    assert_eq!(shown(&database).await.map(|s| s.1), Some(false));
    engine.unfence(&plan).await.expect("a repeated unfence (RESUME of a running database) succeeds");
    remove_entry(&database);
    cleanup(&engine, &plan).await;
}

/// The fence failed before touching the source: a direct write still succeeds.
async fn assert_source_writable(database: &str) {
    let direct = connect(&servers().source_url, database).await;
    direct.batch_execute("UPDATE products SET stock = stock + 1 WHERE product_id = 2").await.expect("the source is writable");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pooler_that_is_down_or_refuses_the_login_fails_the_fence_clearly_and_fences_nothing() {
    let database = unique("pooler_down_");
    create_source_database(&database, &sample("toystore.sql")).await;
    add_entry(&database);
    let engine = PostgresEngine::new();

    let down = pooled_plan(&database, "pooler_admin_url = \"postgresql://pgbouncer_admin@127.0.0.1:1/pgbouncer\"");
    let error = engine.fence(&down).await.expect_err("a pooler that is down");
    assert_eq!((error.code.as_str(), error.kind), ("pooler_unreachable", ErrorKind::Transient), "{error:?}");
    assert!(error.message.contains("pooler of connection 'test-src' (127.0.0.1:1)"), "{}", error.message);
    assert!(error.remediation.contains("PgBouncer is running"), "{}", error.remediation);
    // Retried, then abandoned: the abandoned cutover shows the message only, so it says what to do too.
    assert!(error.message.contains("nothing was fenced") && error.message.contains("PgBouncer is running"), "{}", error.message);
    assert_source_writable(&database).await;
    engine.unfence(&down).await.expect("the unfence after it succeeds: a pooler that is down holds no pause");

    let secret_file = std::env::temp_dir().join(format!("{database}.wrong"));
    fs::write(&secret_file, "wrong-admin-secret-42").unwrap();
    let wrong = pooled_plan(&database, &format!("pooler_password_file = \"{}\"", secret_file.display()));
    let error = engine.fence(&wrong).await.expect_err("a wrong admin password");
    assert_eq!((error.code.as_str(), error.kind), ("pooler_authentication_failed", ErrorKind::Transient), "{error:?}");
    assert!(error.remediation.contains("pooler_password_file"), "{}", error.remediation);
    assert!(!format!("{error:?}").contains("wrong-admin-secret-42"));
    assert_source_writable(&database).await;
    engine.unfence(&wrong).await.expect("the unfence after it succeeds");
    assert!(!shown(&database).await.is_some_and(|s| s.1), "nothing paused");

    remove_entry(&database);
    let missing = engine.fence(&pooled_plan(&database, "")).await.expect_err("no entry to repoint");
    assert_eq!(missing.code, "pooler_entry_missing", "{missing:?}");
    assert!(missing.remediation.contains("%include"), "{}", missing.remediation);
    assert_source_writable(&database).await;
    let _ = fs::remove_file(secret_file);
    drop_source(&database).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_held_open_through_the_pooler_times_the_pause_out_and_the_pause_is_lifted() {
    let database = unique("pooler_timeout_");
    create_source_database(&database, &sample("toystore.sql")).await;
    add_entry(&database);
    let engine = PostgresEngine::new();
    let plan = pooled_plan(&database, "pooler_pause_timeout_seconds = 1");
    let holder = through_pooler(&database).await;
    holder.simple_query("BEGIN; SELECT 1").await.unwrap();

    let started = Instant::now();
    let error = engine.fence(&plan).await.expect_err("PAUSE cannot finish while a transaction is open");
    assert_eq!((error.code.as_str(), error.kind), ("pooler_pause_timeout", ErrorKind::Transient), "{error:?}");
    assert!(error.message.contains("within 1 s") && error.remediation.contains("idle in transaction"), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by the timeout: {:?}", started.elapsed());
    assert_eq!(shown(&database).await.map(|s| s.1), Some(false), "the pause is lifted");
    holder.simple_query("COMMIT").await.expect("the held transaction was not disturbed");
    let other = through_pooler(&database).await;
    write_through(&other).await.expect("clients go on");
    assert_source_writable(&database).await;
    drop(holder);
    remove_entry(&database);
    drop_source(&database).await;
}

async fn drop_source(database: &str) {
    let admin = connect(&servers().source_url, "postgres").await;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(database))).await.unwrap();
}

/// Pooler problems are said at validation, before anything starts: options that do not parse, and a
/// databases file without the database's entry (the cutover would otherwise fail only at its fence).
#[tokio::test(flavor = "multi_thread")]
async fn validation_names_a_broken_pooler_configuration_before_anything_starts() {
    let database = support::unique("PoolVal");
    let engine = PostgresEngine::new();
    let missing_entry = pooled_plan(&database, "");
    remove_entry(&database);
    let findings = engine.validate(&missing_entry).await.unwrap();
    assert!(findings.iter().any(|f| f.rule == "pooler_entry_missing" && f.severity == milink_core::Severity::Blocker), "{findings:#?}");
    let unknown_option = pooled_plan(&database, "pooler_paws_timeout = 3");
    let findings = engine.validate(&unknown_option).await.unwrap();
    assert!(findings.iter().any(|f| f.message.contains("pooler_paws_timeout")), "{findings:#?}");
}
