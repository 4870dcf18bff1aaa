//! Reading one side: checksums and row hashes of key ranges, on the source inside a REPEATABLE READ
//! snapshot whose WAL position is noted, and waiting for the link to pass a position.
use super::sql::{self, Hashing, KeyRange, KeyValues};
use super::scope::TableSpec;
use crate::connect::Session;
use milink_core::EngineError;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_postgres::types::PgLsn;

/// Rows and hash sum of a range on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sums {
    pub(super) rows: u64,
    pub(super) sum: String,
}

/// (key values, row hash) in key order.
pub(super) type RowHashes = Vec<(KeyValues, i64)>;

/// A source read at a WAL position: every change committed in the snapshot lies before `position`.
pub(super) struct AtPosition<T> {
    pub(super) value: T,
    pub(super) position: Option<u64>,
}

/// How long a live verification waits for the link to pass a source position before calling the
/// range unsettled.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

pub(super) async fn checksums(session: &Session, table: &TableSpec, ranges: &[KeyRange], hashing: Hashing) -> Result<Vec<Sums>, EngineError> {
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let row = session.row("computing a chunk checksum", &sql::checksum(table, range, hashing), &[]).await?;
        out.push(Sums { rows: row.get::<_, i64>(0).max(0) as u64, sum: row.get(1) });
    }
    Ok(out)
}

pub(super) async fn row_hashes(session: &Session, table: &TableSpec, range: &KeyRange, hashing: Hashing) -> Result<RowHashes, EngineError> {
    let rows = session.rows("reading row hashes of a key range", &sql::row_hashes(table, range, hashing), &[]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub(super) async fn rows_by_key(
    session: &Session,
    table: &TableSpec,
    keys: &[KeyValues],
    hashing: Hashing,
) -> Result<HashMap<KeyValues, i64>, EngineError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = session.rows("reading rows by key", &sql::rows_by_key(table, keys, hashing), &[]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Runs `read` on the source inside a REPEATABLE READ snapshot when `live`, noting
/// `pg_current_wal_insert_lsn()` as the snapshot's first statement: a transaction whose commit the
/// snapshot sees inserted its commit record before, so the target holds it once it passed that position.
pub(super) async fn in_snapshot<'a, T, F>(session: &'a Session, live: bool, read: F) -> Result<AtPosition<T>, EngineError>
where
    F: std::future::Future<Output = Result<T, EngineError>> + 'a,
{
    if !live {
        return Ok(AtPosition { value: read.await?, position: None });
    }
    session.run("opening a snapshot on the source", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    let result = async {
        let row = session.row("noting the snapshot's position", "SELECT pg_current_wal_insert_lsn()", &[]).await?;
        let position = u64::from(row.get::<_, PgLsn>(0));
        let value = read.await?;
        Ok(AtPosition { value, position: Some(position) })
    }
    .await;
    // A failed read leaves the transaction aborted; ending it either way keeps the session usable.
    let end = session.run("closing the snapshot", if result.is_ok() { "COMMIT" } else { "ROLLBACK" }).await;
    let value = result?;
    end?;
    Ok(value)
}

/// The slot's confirmed position (what the target has applied and flushed).
pub(super) async fn confirmed(src: &Session, slot: &str) -> Result<u64, EngineError> {
    let row = src
        .maybe_row(
            "reading the link's confirmed position",
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?
        .ok_or_else(|| {
            EngineError::definite(
                "slot_missing",
                format!("{}: replication slot {slot} does not exist", src.place().label()),
                "The link is gone: cancel the migration and start it again.",
            )
        })?;
    Ok(row.get::<_, Option<PgLsn>>(0).map(u64::from).unwrap_or(0))
}

/// Waits until the link confirmed `position`; false when it did not within [`WAIT_LIMIT`].
pub(super) async fn wait_for(src: &Session, slot: &str, position: Option<u64>) -> Result<bool, EngineError> {
    let Some(position) = position else { return Ok(true) };
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if confirmed(src, slot).await? >= position {
            return Ok(true);
        }
        if started.elapsed() > WAIT_LIMIT {
            return Ok(false);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
