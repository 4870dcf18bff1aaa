//! Test support: real PostgreSQL servers, uniquely named databases, and plans.
//!
//! The servers come from the environment (`MILINK_PG_SOURCE_URL`, `MILINK_PG_TARGET_URL`,
//! `MILINK_PG_REPLICA_URL`, and `MILINK_PG_PASSWORD_FILE` or `MILINK_PG_PASSWORD`), as `dev/pg.sh env`
//! prints them; when `MILINK_PG_SOURCE_URL` is not set, `dev/pg.sh up` is run (it is idempotent and takes a
//! lock, so the parallel test processes nextest starts can all call it) and its `env` output is read.
//! Every test makes its own databases, roles and migration ids, so tests run in parallel on the same two
//! clusters without seeing each other.
#![allow(dead_code, unreachable_pub)]

use milink_core::config::{Endpoint, Secret};
use milink_core::migration::{LinkPhase, Observation, Settings};
use milink_core::ports::{Engine, LinkPlan};
use milink_core::{ConnectionName, DatabaseName, MigrationId};
use milink_postgres::PostgresEngine;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, Config, NoTls};

pub struct Servers {
    pub source_url: String,
    pub target_url: String,
    pub password: String,
}

fn pg_sh() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dev/pg.sh")
}

fn run_pg_sh(args: &[&str]) -> HashMap<String, String> {
    let output = Command::new("bash").arg(pg_sh()).args(args).output().expect("run dev/pg.sh");
    assert!(
        output.status.success(),
        "dev/pg.sh {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let env = Command::new("bash").arg(pg_sh()).arg("env").output().expect("run dev/pg.sh env");
    String::from_utf8_lossy(&env.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn password_from(vars: &HashMap<String, String>) -> String {
    if let Ok(password) = std::env::var("MILINK_PG_PASSWORD") {
        return password;
    }
    let file = std::env::var("MILINK_PG_PASSWORD_FILE")
        .ok()
        .or_else(|| vars.get("MILINK_PG_PASSWORD_FILE").cloned())
        .expect("MILINK_PG_PASSWORD_FILE or MILINK_PG_PASSWORD");
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {file}: {e}")).trim_end().to_owned()
}

/// The source and target servers, started by `dev/pg.sh up` when the environment names none.
pub fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let vars = match std::env::var("MILINK_PG_SOURCE_URL") {
            Ok(_) => HashMap::new(),
            Err(_) => run_pg_sh(&["up"]),
        };
        let var = |name: &str| std::env::var(name).ok().or_else(|| vars.get(name).cloned()).unwrap_or_else(|| panic!("{name}"));
        Servers {
            source_url: var("MILINK_PG_SOURCE_URL"),
            target_url: var("MILINK_PG_TARGET_URL"),
            password: password_from(&vars),
        }
    })
}

/// The cluster with wal_level=replica (`dev/pg.sh replica`).
pub fn replica_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("MILINK_PG_REPLICA_URL") {
        Ok(url) => url,
        Err(_) => run_pg_sh(&["replica"]).remove("MILINK_PG_REPLICA_URL").expect("MILINK_PG_REPLICA_URL"),
    })
    .clone()
}

pub fn endpoint(name: &str, url: &str, password: Option<&str>) -> Endpoint {
    Endpoint {
        name: ConnectionName::parse(name).unwrap(),
        engine: "postgres".into(),
        url: url.into(),
        password: password.map(Secret::new),
        replication_url: None,
        options: Default::default(),
    }
}

pub fn source() -> Endpoint {
    endpoint("test-src", &servers().source_url, Some(&servers().password))
}

pub fn target() -> Endpoint {
    endpoint("test-tgt", &servers().target_url, Some(&servers().password))
}

/// A name nobody else uses: `prefix` plus 8 random hex digits.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

pub fn plan(database: &str) -> LinkPlan {
    LinkPlan {
        migration_id: MigrationId::new_random(),
        source: source(),
        target: target(),
        database: DatabaseName::parse(database).unwrap(),
        settings: Settings::default(),
    }
}

/// A plan on the native table-sync path (`seedParallel = false`), where `create_link` makes the slot and
/// the subscription at once. Tests of those steps use it; the parallel path, where the slot and the
/// subscription come at the end of the seeding, is covered end to end in `tests/tests/seed.rs`.
pub fn native_plan(database: &str) -> LinkPlan {
    let mut plan = plan(database);
    plan.settings.seed_parallel = false;
    plan
}

pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A client on `database` of the server at `url`, as `user` (milink's role when None).
pub async fn connect_as(url: &str, database: &str, user: Option<(&str, &str)>) -> Result<Client, tokio_postgres::Error> {
    let mut config: Config = url.parse().unwrap();
    config.dbname(database);
    match user {
        Some((name, password)) => config.user(name).password(password),
        None => config.password(&servers().password),
    };
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

pub async fn connect(url: &str, database: &str) -> Client {
    connect_as(url, database, None).await.unwrap_or_else(|e| panic!("connect to {database}: {e}"))
}

pub fn sample(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dev/tailspin").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Creates `database` on the source and runs `sql` in it.
pub async fn create_source_database(database: &str, sql: &str) {
    let admin = connect(&servers().source_url, "postgres").await;
    admin.batch_execute(&format!("CREATE DATABASE {}", quote(database))).await.unwrap();
    let client = connect(&servers().source_url, database).await;
    client.batch_execute(sql).await.unwrap_or_else(|e| panic!("load {database}: {e:?}"));
}

/// Removes everything a test made: the link, the target database, the source database.
pub async fn cleanup(engine: &PostgresEngine, plan: &LinkPlan) {
    let _ = engine.unfence(plan).await;
    engine.drop_link(plan, true).await.expect("drop_link");
    let admin = connect(&servers().source_url, "postgres").await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(plan.database.as_str())))
        .await
        .unwrap();
}

/// Observes until the link streams with lag at or below the plan's threshold; returns every observation.
pub async fn observe_until_ready(engine: &PostgresEngine, plan: &LinkPlan, timeout: Duration) -> Vec<Observation> {
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        let observation = engine.observe(plan, chrono::Utc::now()).await.expect("observe");
        let ready = observation.phase == LinkPhase::Streaming
            && observation.lag_bytes.is_some_and(|lag| lag <= plan.settings.ready_lag_bytes);
        seen.push(observation);
        if ready {
            return seen;
        }
        assert!(started.elapsed() < timeout, "not ready after {timeout:?}; last: {:?}", seen.last());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the target has confirmed `position` (the drain).
pub async fn drain(engine: &PostgresEngine, plan: &LinkPlan, position: milink_core::migration::Position) {
    let started = Instant::now();
    loop {
        let positions = engine.positions(plan).await.expect("positions");
        if positions.target >= position {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "drain did not reach {position:?}: {positions:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts no error text carries the password.
pub fn assert_no_secret(text: &str) {
    assert!(!text.contains(&servers().password), "a secret leaked into: {text}");
}
