//! The local PostgreSQL servers (`dev/pg.sh up`) and helpers to load and compare databases.
use anyhow::{bail, Context, Result};
use std::process::Command;
use std::sync::OnceLock;
use tokio_postgres::{Client, NoTls};

/// Where the servers are.
#[derive(Debug, Clone)]
pub struct Servers {
    pub source_url: String,
    pub target_url: String,
    pub password_file: String,
    pub password: String,
}

static SERVERS: OnceLock<Servers> = OnceLock::new();

/// Starts the servers (idempotent; `dev/pg.sh` locks against parallel callers) and reads where they are.
pub fn servers() -> &'static Servers {
    SERVERS.get_or_init(|| {
        let script = crate::workspace_root().join("dev/pg.sh");
        let up = Command::new("bash").arg(&script).arg("up").output().expect("running dev/pg.sh up");
        assert!(up.status.success(), "dev/pg.sh up failed:\n{}{}", String::from_utf8_lossy(&up.stdout), String::from_utf8_lossy(&up.stderr));
        let env = Command::new("bash").arg(&script).arg("env").output().expect("running dev/pg.sh env");
        let text = String::from_utf8_lossy(&env.stdout).to_string();
        let var = |name: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix("export ")?.strip_prefix(&format!("{name}=")).map(|v| v.trim_matches(['"', '\'']).to_owned()))
                .unwrap_or_else(|| panic!("dev/pg.sh env did not print {name}:\n{text}"))
        };
        let password_file = var("MILINK_PG_PASSWORD_FILE");
        let password = std::fs::read_to_string(&password_file).expect("reading the password file").trim().to_owned();
        Servers { source_url: var("MILINK_PG_SOURCE_URL"), target_url: var("MILINK_PG_TARGET_URL"), password_file, password }
    })
}

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

/// Connects to `database` on one side.
pub async fn connect(side: Side, database: &str) -> Result<Client> {
    let s = servers();
    let url = match side {
        Side::Source => &s.source_url,
        Side::Target => &s.target_url,
    };
    let mut config: tokio_postgres::Config = url.parse().context("parsing the server URL")?;
    config.password(s.password.as_str()).dbname(database);
    let (client, connection) = config.connect(NoTls).await.with_context(|| format!("connecting to {database} on {side:?}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Quotes an identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates `database` on the source from a Tailspin SQL file (toystore.sql or customer360.sql), and
/// makes sure the target does not have it.
pub async fn load_sample(database: &str, file: &str) -> Result<()> {
    let sql = std::fs::read_to_string(crate::workspace_root().join("dev/tailspin").join(file))?;
    for side in [Side::Source, Side::Target] {
        let admin = connect(side, "postgres").await?;
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(database))).await?;
    }
    connect(Side::Source, "postgres").await?.batch_execute(&format!("CREATE DATABASE {}", ident(database))).await?;
    connect(Side::Source, database).await?.batch_execute(&sql).await?;
    Ok(())
}

/// Drops `database` on both sides (best effort: cleanup).
pub async fn drop_everywhere(database: &str) {
    // A test that failed (or killed milink) may leave its link: the subscription first, detached from its
    // slot, then every slot of the database on the source (a logical slot blocks DROP DATABASE, and an
    // inactive one retains the source's WAL for every later test).
    if let Ok(target) = connect(Side::Target, database).await {
        let subscriptions = target.query("SELECT subname::text FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())", &[]).await;
        for row in subscriptions.unwrap_or_default() {
            let name = ident(row.get::<_, &str>(0));
            let _ = target
                .batch_execute(&format!(
                    "ALTER SUBSCRIPTION {name} DISABLE; ALTER SUBSCRIPTION {name} SET (slot_name = NONE); DROP SUBSCRIPTION {name}"
                ))
                .await;
        }
    }
    for side in [Side::Source, Side::Target] {
        if let Ok(admin) = connect(side, "postgres").await {
            let _ = admin
                .execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL",
                    &[&database],
                )
                .await;
            for _ in 0..20 {
                let dropped = admin
                    .execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active", &[&database])
                    .await;
                let left = admin.query_opt("SELECT 1 FROM pg_replication_slots WHERE database = $1", &[&database]).await;
                if dropped.is_err() || matches!(left, Ok(None)) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(database))).await;
        }
    }
}

/// Row count, and a checksum of every row's text, per table, ordered by table name.
pub async fn table_fingerprints(side: Side, database: &str) -> Result<Vec<(String, i64, String)>> {
    fingerprints(&connect(side, database).await?).await
}

/// [`table_fingerprints`] over an open connection (any server).
pub async fn fingerprints(client: &Client) -> Result<Vec<(String, i64, String)>> {
    let tables = client
        .query(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    for row in tables {
        let table: String = row.get(0);
        let sql = format!(
            "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"
        );
        let r = client.query_one(&sql, &[]).await?;
        out.push((table, r.get::<_, i64>(0), r.get::<_, String>(1)));
    }
    Ok(out)
}

/// Every sequence's last value (NULL as 0).
pub async fn sequences(side: Side, database: &str) -> Result<Vec<(String, i64)>> {
    let client = connect(side, database).await?;
    let rows = client
        .query("SELECT format('%I.%I', schemaname, sequencename), coalesce(last_value, 0) FROM pg_sequences ORDER BY 1", &[])
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The data check of a completed migration: every table identical row for row, sequences on the target
/// at or past the source's.
pub async fn assert_target_matches_source(database: &str) -> Result<()> {
    let source = table_fingerprints(Side::Source, database).await?;
    let target = table_fingerprints(Side::Target, database).await?;
    if source != target {
        bail!("source and target differ:\nsource {source:?}\ntarget {target:?}");
    }
    let source_sequences = sequences(Side::Source, database).await?;
    let target_sequences = sequences(Side::Target, database).await?;
    for ((name, source_value), (_, target_value)) in source_sequences.iter().zip(&target_sequences) {
        if target_value < source_value {
            bail!("sequence {name}: target {target_value} is behind source {source_value}");
        }
    }
    if source_sequences.len() != target_sequences.len() {
        bail!("sequence lists differ: {source_sequences:?} vs {target_sequences:?}");
    }
    Ok(())
}
