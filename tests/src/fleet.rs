//! Support for the fleet tests and benches: the worker-limited target (`dev/pg.sh small`: a cluster of
//! its own, so restarting or filling it never touches the clusters other tests share), starting many
//! migrations, and waiting on the whole list.
use crate::milink::Milink;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

/// The name of the worker-limited target in milink's config.
pub const SMALL: &str = "small";

/// Starts the small cluster (idempotent) and returns its URL.
pub fn small_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        crate::pg::servers();
        let script = crate::workspace_root().join("dev/pg.sh");
        let up = Command::new("bash").arg(&script).arg("small").output().expect("running dev/pg.sh small");
        assert!(up.status.success(), "dev/pg.sh small failed:\n{}{}", String::from_utf8_lossy(&up.stdout), String::from_utf8_lossy(&up.stderr));
        let env = Command::new("bash").arg(&script).arg("env").output().expect("running dev/pg.sh env");
        String::from_utf8_lossy(&env.stdout)
            .lines()
            .find_map(|l| l.trim().strip_prefix("export MILINK_PG_SMALL_URL=").map(str::to_owned))
            .expect("dev/pg.sh env prints MILINK_PG_SMALL_URL")
    })
}

/// The config section for the small target (a connection named [`SMALL`]).
pub fn small_connection() -> String {
    format!(
        "[connections.{SMALL}]\nengine = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n",
        small_url(),
        crate::pg::servers().password_file
    )
}

/// A second name for the shared source server, so a test has two "sources" to tell apart.
pub fn second_source(name: &str) -> String {
    let servers = crate::pg::servers();
    format!("[connections.{name}]\nengine = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n", servers.source_url, servers.password_file)
}

/// A second name for the shared target server (its own caps and queue in milink's eyes).
pub fn second_target(name: &str) -> String {
    let servers = crate::pg::servers();
    format!("[connections.{name}]\nengine = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n", servers.target_url, servers.password_file)
}

/// Connects to `database` on the small target.
pub async fn connect_small(database: &str) -> Result<Client> {
    let mut config: tokio_postgres::Config = small_url().parse()?;
    config.password(crate::pg::servers().password.as_str()).dbname(database);
    let (client, connection) = config.connect(NoTls).await.with_context(|| format!("connecting to {database} on small"))?;
    tokio::spawn(async move { drop(connection.await) });
    Ok(client)
}

/// Loads the ToyStore sample as `database` on the source, dropping it on the small target.
pub async fn load_for_small(database: &str) -> Result<()> {
    drop_on_small(database).await;
    crate::pg::load_sample(database, "toystore.sql").await
}

/// Drops `database` on the small target (best effort).
pub async fn drop_on_small(database: &str) {
    if let Ok(admin) = connect_small("postgres").await {
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", crate::pg::ident(database))).await;
    }
}

/// Fails unless `database` on the small target holds exactly the source's rows.
pub async fn assert_equal_on_small(database: &str) -> Result<()> {
    let source = crate::pg::table_fingerprints(crate::pg::Side::Source, database).await?;
    let target = crate::pg::fingerprints(&connect_small(database).await?).await?;
    if source != target || source.is_empty() {
        bail!("{database}: source and small target differ:\nsource {source:?}\ntarget {target:?}");
    }
    Ok(())
}

/// Starts one migration per database in one request; returns their ids in the order given.
pub async fn start_many(milink: &Milink, source: &str, target: &str, databases: &[String]) -> Result<Vec<String>> {
    let (status, body) = milink.post("/api/migrations", &json!({ "source": source, "target": target, "databases": databases })).await?;
    if status != 202 {
        bail!("start answered {status}: {body}");
    }
    Ok(body["migrations"].as_array().into_iter().flatten().map(|m| m["id"].as_str().unwrap_or_default().to_owned()).collect())
}

/// The migrations `ids`, as the API shows them now, in the order of `ids`.
pub async fn show_all(milink: &Milink, ids: &[String]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for id in ids {
        out.push(milink.get(&format!("/api/migrations/{id}")).await?);
    }
    Ok(out)
}

/// Polls the migrations `ids` until `done` holds for the list; fails on timeout with the list and log.
pub async fn wait_all(milink: &Milink, ids: &[String], what: &str, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Result<Vec<Value>> {
    let deadline = Instant::now() + timeout;
    loop {
        let all = show_all(milink, ids).await?;
        if done(&all) {
            return Ok(all);
        }
        if Instant::now() > deadline {
            let summary: Vec<_> = all.iter().map(|m| format!("{} {} {}", m["database"], m["status"], m["reason"])).collect();
            bail!("waiting for {what}: {summary:#?}\nlog:\n{}", milink.logs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many of `all` have `status`.
pub fn count(all: &[Value], status: &str) -> usize {
    all.iter().filter(|m| m["status"] == status).count()
}
