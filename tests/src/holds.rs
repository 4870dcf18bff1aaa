//! Holding a step mid-way, the way a busy server would, and looking at what a step left behind: the
//! scenarios of "one step at a time per migration", shared by the Azure host's tests and the embedded
//! host's. Everything here is plain SQL against the dev servers, independent of milink.
use crate::pg::{self, Side};
use anyhow::Result;
use tokio_postgres::Client;

/// A transaction that holds a lock until [`Held::release`] (rolled back, so it changes nothing).
pub struct Held {
    client: Client,
}

impl Held {
    /// Rolls the holding transaction back: the held step goes on.
    pub async fn release(self) -> Result<()> {
        self.client.batch_execute("ROLLBACK").await?;
        Ok(())
    }
}

/// Holds the link's schema copy: pg_dump takes a share lock on every table it dumps, so an exclusive lock
/// on one of the source database's tables stops CreateLink mid-way until released.
pub async fn hold_schema_copy(database: &str, table: &str) -> Result<Held> {
    let client = pg::connect(Side::Source, database).await?;
    client.batch_execute(&format!("BEGIN; LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", pg::ident(table))).await?;
    Ok(Held { client })
}

/// Holds the fence: an uncommitted `ALTER DATABASE ... SET` on the database's settings row makes the
/// fence's own `ALTER DATABASE ... SET default_transaction_read_only` wait for it, so Fence stops mid-way
/// until released (and nothing is left behind: the holder rolls back).
pub async fn hold_fence(database: &str) -> Result<Held> {
    let client = pg::connect(Side::Source, "postgres").await?;
    client.batch_execute(&format!("BEGIN; ALTER DATABASE {} SET work_mem = '4MB'", pg::ident(database))).await?;
    Ok(Held { client })
}

/// What milink's links left for `database`: publications (source), replication slots (source) and
/// subscriptions (target) named `milink_%`. A slot left behind retains WAL until the source's disk fills.
pub async fn replication_objects_left(database: &str) -> Result<Vec<String>> {
    let mut left = Vec::new();
    let source = pg::connect(Side::Source, database).await?;
    for row in source.query("SELECT 'publication ' || pubname FROM pg_publication WHERE pubname LIKE 'milink\\_%'", &[]).await? {
        left.push(row.get::<_, String>(0));
    }
    let slots = "SELECT 'slot ' || slot_name FROM pg_replication_slots WHERE slot_name LIKE 'milink\\_%' AND database = $1";
    for row in source.query(slots, &[&database]).await? {
        left.push(row.get::<_, String>(0));
    }
    let target = pg::connect(Side::Target, "postgres").await?;
    let subscriptions = "SELECT 'subscription ' || s.subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid
                         WHERE s.subname LIKE 'milink\\_%' AND d.datname = $1";
    for row in target.query(subscriptions, &[&database]).await? {
        left.push(row.get::<_, String>(0));
    }
    Ok(left)
}

/// Whether a new session on the source database can write (the fence is gone): it starts read-write and
/// a write commits.
pub async fn source_writable(database: &str) -> Result<bool> {
    let client = pg::connect(Side::Source, database).await?;
    let read_only: String = client.query_one("SHOW default_transaction_read_only", &[]).await?.get(0);
    if read_only != "off" {
        return Ok(false);
    }
    Ok(client.batch_execute("CREATE TEMP TABLE milink_probe (x int); INSERT INTO milink_probe VALUES (1)").await.is_ok())
}
