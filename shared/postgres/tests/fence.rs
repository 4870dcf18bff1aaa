//! The fence on real servers (issue 8): nothing escapes it (sessions connected before, logins racing it,
//! the source's own subscriptions), two migrations of one database keep their own fences, a repeated step
//! (a crash between statements, retried) ends right, and no password reaches the target's server log.
mod support;

use milink_core::ports::{Engine, LinkPlan};
use milink_core::Severity;
use milink_postgres::PostgresEngine;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio_postgres::Client;

const APP_PASSWORD: &str = "app-pw-8";

/// A database with one table and a non-superuser role that may write it.
async fn setup(prefix: &str) -> (String, String) {
    let database = unique(prefix);
    let app = unique("app_");
    create_source_database(&database, "CREATE TABLE t (id bigserial PRIMARY KEY, note text)").await;
    connect(&servers().source_url, &database)
        .await
        .batch_execute(&format!(
            "CREATE ROLE {app} LOGIN PASSWORD '{APP_PASSWORD}';
             GRANT ALL ON ALL TABLES IN SCHEMA public TO {app}; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {app};"
        ))
        .await
        .unwrap();
    (database, app)
}

async fn teardown(database: &str, app: &str) {
    let admin = connect(&servers().source_url, "postgres").await;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(database))).await.unwrap();
    admin.batch_execute(&format!("DROP ROLE IF EXISTS {app}")).await.unwrap();
}

async fn app_session(database: &str, app: &str) -> Result<Client, tokio_postgres::Error> {
    connect_as(&servers().source_url, database, Some((app, APP_PASSWORD))).await
}

async fn insert(client: &Client) -> Result<u64, tokio_postgres::Error> {
    client.execute("INSERT INTO t (note) VALUES ('x')", &[]).await
}

/// A fresh application session writes (true) or is refused (false).
async fn writable(database: &str, app: &str) -> bool {
    insert(&app_session(database, app).await.unwrap()).await.is_ok()
}

/// The database's own settings entry, sorted.
async fn database_settings(database: &str) -> Vec<String> {
    let admin = connect(&servers().source_url, "postgres").await;
    let row = admin
        .query_one(
            "SELECT coalesce((SELECT setconfig FROM pg_db_role_setting
                              WHERE setrole = 0 AND setdatabase = (SELECT oid FROM pg_database WHERE datname = $1)), '{}')",
            &[&database],
        )
        .await
        .unwrap();
    let mut items: Vec<String> = row.get(0);
    items.sort();
    items
}

fn plan_on(database: &str) -> LinkPlan {
    plan(database)
}

#[tokio::test]
async fn a_session_connected_before_the_fence_cannot_commit_after_it() {
    let (database, app) = setup("fence_before_").await;
    let engine = PostgresEngine::new();
    let plan = plan_on(&database);
    let idle = app_session(&database, &app).await.unwrap();
    let in_transaction = app_session(&database, &app).await.unwrap();
    in_transaction.batch_execute("BEGIN; INSERT INTO t (note) VALUES ('in flight')").await.unwrap();

    let probe = connect(&servers().source_url, "postgres").await;
    let started = Instant::now();
    let position = engine.fence(&plan).await.expect("fence");
    eprintln!("fence of a small database with two sessions took {:?}", started.elapsed());
    // The fence's record is flushed when the fence returns: the walsender sends only flushed WAL, and on a
    // fenced source only the WAL writer would flush it, up to wal_writer_delay (200 ms) later.
    let flushed: tokio_postgres::types::PgLsn = probe.query_one("SELECT pg_current_wal_flush_lsn()", &[]).await.unwrap().get(0);
    assert!(u64::from(flushed) >= position.0, "the fence returned before its record was flushed: {flushed} < {}", position.0);

    assert!(insert(&idle).await.is_err(), "a session connected before the fence wrote after it");
    assert!(in_transaction.batch_execute("COMMIT").await.is_err(), "a transaction open at the fence committed after it");
    assert!(!writable(&database, &app).await, "a new session writes through the fence");
    let admin = connect(&servers().source_url, &database).await;
    let rows: i64 = admin.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(rows, 0, "the in-flight insert did not land");

    engine.unfence(&plan).await.expect("unfence");
    assert!(writable(&database, &app).await);
    teardown(&database, &app).await;
}

/// Regression (issue 8): a session whose login was in progress when the fence ran connected with read-only
/// off and wrote after the fence returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logins_racing_the_fence_cannot_commit_after_it_returns() {
    let (database, app) = setup("fence_race_").await;
    let engine = PostgresEngine::new();
    let plan = plan_on(&database);
    let fenced = Arc::new(AtomicBool::new(false));
    let mut logins = Vec::new();
    // Logins start every 2 ms from 100 ms before the fence until after it; each one that gets in waits
    // for the fence to return, then tries to write.
    for _ in 0..120 {
        let (database, app, done) = (database.clone(), app.clone(), fenced.clone());
        logins.push(tokio::spawn(async move {
            let Ok(client) = app_session(&database, &app).await else { return None };
            while !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Some(insert(&client).await.is_ok())
        }));
        tokio::time::sleep(Duration::from_millis(2)).await;
        if logins.len() == 50 {
            let (engine, plan, fenced) = (PostgresEngine::new(), plan.clone(), fenced.clone());
            logins.push(tokio::spawn(async move {
                let started = Instant::now();
                engine.fence(&plan).await.expect("fence");
                eprintln!("fence racing logins took {:?}", started.elapsed());
                fenced.store(true, Ordering::SeqCst);
                None
            }));
        }
    }
    let mut tried = 0;
    for login in logins {
        if let Some(wrote) = login.await.unwrap() {
            tried += 1;
            assert!(!wrote, "a login racing the fence wrote after the fence returned");
        }
    }
    assert!(tried > 50, "most logins got in: {tried}");
    engine.unfence(&plan).await.expect("unfence");
    teardown(&database, &app).await;
}

/// Regression (issue 8), made deterministic: `post_auth_delay` holds a login after it has read the
/// database's settings (read-only still off) and before it shows in pg_stat_activity; the fence must wait
/// for it and end it.
#[tokio::test]
async fn a_login_in_progress_at_the_fence_cannot_write_after_it() {
    let (database, app) = setup("fence_login_").await;
    let engine = PostgresEngine::new();
    let plan = plan_on(&database);
    let mut config: tokio_postgres::Config = servers().source_url.parse().unwrap();
    config.dbname(&database).user(&app).password(APP_PASSWORD).options("-c post_auth_delay=1");
    let login = tokio::spawn(async move {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok::<_, tokio_postgres::Error>(client)
    });
    let admin = connect(&servers().source_url, "postgres").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // The login holds its lock on the database, but pg_stat_activity does not show it yet.
        let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_locks l WHERE l.locktype = 'object' AND l.classid = 'pg_database'::regclass
                   AND l.objid = (SELECT oid FROM pg_database WHERE datname = $1)
                   AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.pid)",
                &[&database],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the login never reached its post-authentication delay");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    engine.fence(&plan).await.expect("fence");
    if let Ok(client) = login.await.unwrap() {
        assert!(insert(&client).await.is_err(), "a login in progress at the fence wrote after it");
    }
    engine.unfence(&plan).await.expect("unfence");
    teardown(&database, &app).await;
}

/// Regression (issue 9): a session that logged in while the source was fenced read `on` at login and stayed
/// read-only after an abandoned cutover unfenced the database, so the application's writes kept failing on
/// it (through a pooler, for as long as the pooler kept that server connection).
#[tokio::test]
async fn a_session_that_logged_in_during_the_fence_is_not_left_read_only_by_the_unfence() {
    let (database, app) = setup("fence_during_").await;
    let engine = PostgresEngine::new();
    let plan = plan_on(&database);
    engine.fence(&plan).await.expect("fence");
    let during = app_session(&database, &app).await.unwrap();
    let refused = insert(&during).await.expect_err("a session that logged in during the fence wrote");
    assert_eq!(refused.code(), Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION));

    engine.unfence(&plan).await.expect("unfence");
    match insert(&during).await {
        Ok(_) => {}
        Err(error) => assert_ne!(
            error.code(),
            Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION),
            "a session that logged in during the fence is still read-only after the unfence"
        ),
    }
    assert!(writable(&database, &app).await, "a new session cannot write after the unfence");
    teardown(&database, &app).await;
}

#[tokio::test]
async fn two_migrations_of_one_database_keep_their_own_fences() {
    let (database, app) = setup("fence_fanout_").await;
    let admin = connect(&servers().source_url, "postgres").await;
    admin.batch_execute(&format!("ALTER DATABASE {} SET default_transaction_read_only = off", quote(&database))).await.unwrap();
    let before = database_settings(&database).await;
    let engine = PostgresEngine::new();
    let (first, second) = (plan_on(&database), plan_on(&database));

    engine.fence(&first).await.expect("fence first");
    engine.fence(&second).await.expect("fence second");
    engine.unfence(&first).await.expect("unfence first");
    assert!(!writable(&database, &app).await, "unfencing one migration unfenced the other");
    engine.unfence(&first).await.expect("unfence first again");
    assert!(!writable(&database, &app).await, "a repeated unfence of one migration unfenced the other");

    engine.unfence(&second).await.expect("unfence second");
    assert!(writable(&database, &app).await, "the last unfence gives writes back");
    assert_eq!(database_settings(&database).await, before, "the original setting is back, no key left");
    teardown(&database, &app).await;
}

#[tokio::test]
async fn repeated_fences_and_unfences_end_right() {
    let (database, app) = setup("fence_twice_").await;
    let engine = PostgresEngine::new();
    let (first, second) = (plan_on(&database), plan_on(&database));
    // A retried step after a crash runs every statement again.
    engine.fence(&first).await.expect("fence");
    engine.fence(&first).await.expect("fence again");
    engine.fence(&second).await.expect("fence second");
    engine.unfence(&second).await.expect("unfence second");
    engine.unfence(&second).await.expect("unfence second again");
    assert!(!writable(&database, &app).await);
    engine.fence(&first).await.expect("fence after a partial unfence");
    engine.unfence(&first).await.expect("unfence");
    engine.unfence(&first).await.expect("unfence again");
    assert!(writable(&database, &app).await);
    assert!(database_settings(&database).await.is_empty(), "nothing left behind");
    teardown(&database, &app).await;
}

#[tokio::test]
async fn a_database_fenced_by_the_old_single_key_is_still_unfenced() {
    let (database, app) = setup("fence_legacy_").await;
    let admin = connect(&servers().source_url, "postgres").await;
    // What milink wrote before fences were per migration.
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {0} SET milink.saved_read_only = 'unset'; ALTER DATABASE {0} SET default_transaction_read_only = on",
            quote(&database)
        ))
        .await
        .unwrap();
    let engine = PostgresEngine::new();
    let (old, new) = (plan_on(&database), plan_on(&database));
    engine.fence(&new).await.expect("fence");
    engine.unfence(&new).await.expect("unfence the new one");
    assert!(!writable(&database, &app).await, "the old fence still holds");
    engine.unfence(&old).await.expect("unfence the old one (it has no key of its own)");
    assert!(writable(&database, &app).await);
    assert!(database_settings(&database).await.is_empty());
    teardown(&database, &app).await;
}

/// The source database subscribes to `upstream` on the target cluster; returns the upstream's name.
async fn subscribe_source_to_upstream(database: &str) -> String {
    let upstream = unique("fence_upstream_");
    let target_admin = connect(&servers().target_url, "postgres").await;
    target_admin.batch_execute(&format!("CREATE DATABASE {}", quote(&upstream))).await.unwrap();
    let up = connect(&servers().target_url, &upstream).await;
    up.batch_execute("CREATE TABLE t (id bigserial PRIMARY KEY, note text); CREATE PUBLICATION up FOR TABLE t").await.unwrap();
    let mut config: tokio_postgres::Config = servers().target_url.parse().unwrap();
    config.dbname(&upstream);
    let port = config.get_ports()[0];
    let conninfo = format!("host=127.0.0.1 port={port} user=milink dbname={upstream} password={}", servers().password);
    let src = connect(&servers().source_url, database).await;
    let (sub, held) = (quote(&format!("{upstream}_sub")), quote(&format!("{upstream}_held")));
    for sql in [
        "SET log_min_error_statement = panic".to_owned(),
        format!("CREATE SUBSCRIPTION {sub} CONNECTION '{conninfo}' PUBLICATION up WITH (copy_data = false)"),
        format!("CREATE SUBSCRIPTION {held} CONNECTION '{conninfo}' PUBLICATION up WITH (connect = false)"),
    ] {
        src.batch_execute(&sql).await.unwrap();
    }
    upstream
}

async fn subscription_states(database: &str) -> Vec<(String, bool, bool)> {
    let src = connect(&servers().source_url, database).await;
    let rows = src
        .query(
            "SELECT s.subname::text, s.subenabled, EXISTS (SELECT 1 FROM pg_stat_subscription w WHERE w.subid = s.oid AND w.pid IS NOT NULL)
             FROM pg_subscription s WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
}

#[tokio::test]
async fn the_source_databases_own_subscriptions_stop_at_the_fence_and_come_back() {
    let (database, app) = setup("fence_chain_").await;
    let upstream = subscribe_source_to_upstream(&database).await;
    let src = connect(&servers().source_url, &database).await;
    // A decoding slot on the source shows every change after the fence, whoever wrote it.
    let watch = unique("fence_watch_");
    src.query_one("SELECT pg_create_logical_replication_slot($1, 'test_decoding')", &[&watch]).await.unwrap();
    let up = connect(&servers().target_url, &upstream).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                up.execute("INSERT INTO t (note) VALUES ('upstream')", &[]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            up
        })
    };
    // The subscription applies rows until the fence.
    let applied = || async { connect(&servers().source_url, &database).await.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get::<_, i64>(0) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while applied().await == 0 {
        assert!(Instant::now() < deadline, "the source's subscription never applied a row");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let engine = PostgresEngine::new();
    let plan = plan_on(&database);
    let position = engine.fence(&plan).await.expect("fence");
    let at_fence = applied().await;
    let states = subscription_states(&database).await;
    assert!(states.iter().all(|(_, enabled, worker)| !enabled && !worker), "{states:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(applied().await, at_fence, "the subscription applied rows after the fence");
    // The fence ended every session older than it, this test's own included.
    let src = connect(&servers().source_url, &database).await;
    let late: i64 = src
        .query_one(
            "SELECT count(*) FROM pg_logical_slot_peek_changes($1, NULL, NULL)
             WHERE lsn >= $2::text::pg_lsn AND data LIKE 'table public.t:%'",
            &[&watch, &tokio_postgres::types::PgLsn::from(position.0).to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(late, 0, "changes to t lie after the fence position");

    engine.unfence(&plan).await.expect("unfence");
    let states = subscription_states(&database).await;
    let enabled: Vec<(&str, bool)> = states.iter().map(|(name, enabled, _)| (name.as_str(), *enabled)).collect();
    assert_eq!(enabled, [(format!("{upstream}_held").as_str(), false), (format!("{upstream}_sub").as_str(), true)], "only the one milink disabled comes back");
    let deadline = Instant::now() + Duration::from_secs(30);
    while applied().await == at_fence {
        assert!(Instant::now() < deadline, "the subscription did not resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(database_settings(&database).await.is_empty(), "the note is gone too");

    stop.store(true, Ordering::Relaxed);
    drop(writer.await.unwrap());
    // `src` logged in while the database was fenced, so the unfence ended it (it would have stayed read-only).
    assert!(src.batch_execute("SELECT 1").await.is_err(), "a session that logged in during the fence survived the unfence");
    let src = connect(&servers().source_url, &database).await;
    src.query_one("SELECT pg_drop_replication_slot($1)", &[&watch]).await.unwrap();
    src.batch_execute("SET default_transaction_read_only = off").await.unwrap();
    for suffix in ["sub", "held"] {
        let sub = quote(&format!("{upstream}_{suffix}"));
        for sql in [format!("ALTER SUBSCRIPTION {sub} DISABLE"), format!("ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)"), format!("DROP SUBSCRIPTION {sub}")] {
            src.batch_execute(&sql).await.unwrap();
        }
    }
    drop(src);
    teardown(&database, &app).await;
    let target_admin = connect(&servers().target_url, "postgres").await;
    let slots = target_admin.query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1", &[&upstream]).await;
    drop(slots);
    target_admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(&upstream))).await.unwrap();
}

/// Where `dev/pg.sh` sends the target cluster's server log (`pg_ctl -l <dir>/log/<cluster>.log`), when this
/// machine can read it.
async fn target_log() -> Option<std::path::PathBuf> {
    let admin = connect(&servers().target_url, "postgres").await;
    let data: String = admin.query_one("SELECT current_setting('data_directory')", &[]).await.ok()?.get(0);
    let data = std::path::Path::new(&data);
    let log = data.parent()?.join("log").join(format!("{}.log", data.file_name()?.to_str()?));
    std::fs::metadata(&log).ok().map(|_| log)
}

/// Whether what the log gained since it was `from` bytes long holds the password.
fn log_holds_password(log: &std::path::Path, from: usize) -> bool {
    let text = std::fs::read(log).unwrap();
    String::from_utf8_lossy(text.get(from..).unwrap_or_default()).contains(&servers().password)
}

/// Regression (issue 8): a failing CREATE SUBSCRIPTION (or validation's probe) must not write the source's
/// password into the target's server log, which logs a failing statement's text by default.
#[tokio::test]
async fn a_failing_create_subscription_leaves_no_password_in_the_targets_log() {
    let Some(log) = target_log().await else {
        eprintln!("the target's server log is not readable here; nothing to check");
        return;
    };
    let from = std::fs::metadata(&log).unwrap().len() as usize;
    let (database, app) = setup("fence_secret_").await;
    let engine = PostgresEngine::new();
    let mut plan = plan_on(&database);
    // The native path runs CREATE SUBSCRIPTION inside create_link; the parallel path runs the same statement,
    // built and logged-quietly by the same function, at the end of its seeding.
    plan.settings.seed_parallel = false;
    // The target cannot reach the source on this address: both the probe and the subscription fail.
    plan.source.replication_url = Some(servers().source_url.replace(":54311", ":1"));
    let findings = engine.validate(&plan).await.expect("validate");
    assert!(findings.iter().any(|f| f.rule == "unreachable" && f.severity == Severity::Blocker), "{findings:?}");
    let error = engine.create_link(&plan).await.expect_err("the target cannot reach the source");
    assert_no_secret(&error.message);
    assert!(!log_holds_password(&log, from), "the password reached the target's server log");
    let _ = engine.drop_link(&plan, true).await;

    // A role that cannot turn statement logging off is warned about, and the probe is not run.
    let role = unique("nosuper_");
    let target_admin = connect(&servers().target_url, "postgres").await;
    target_admin.batch_execute(&format!("CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{APP_PASSWORD}'")).await.unwrap();
    plan.target = endpoint("test-tgt", &servers().target_url.replace("milink@", &format!("{role}@")), Some(APP_PASSWORD));
    plan.source.replication_url = None;
    let findings = engine.validate(&plan).await.expect("validate");
    let warning = findings.iter().find(|f| f.rule == "password_may_reach_target_log").expect("a warning about the log");
    assert_eq!(warning.severity, Severity::Warning);
    assert!(warning.remediation.contains("log_min_error_statement"), "{warning:?}");
    assert!(!log_holds_password(&log, from), "the password reached the target's server log");
    target_admin.batch_execute(&format!("DROP ROLE {role}")).await.unwrap();
    teardown(&database, &app).await;
}
