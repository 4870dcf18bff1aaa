//! Reading the sides: checksums and row hashes of key ranges and rows by key, and, while the link syncs,
//! matched snapshots (the target's taken as soon as it has applied the source's snapshot position).
use super::sql::{self, Hashing, KeyRange, KeyValues};
use super::scope::TableSpec;
use super::Pair;
use crate::connect::Session;
use milink_core::EngineError;
use std::collections::HashMap;
use std::future::Future;
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

/// How long a live verification waits for the link to pass a source position before calling the
/// range unsettled (before the fence: `BEFORE_FENCE_LINK_WAIT`, then it gives up).
const WAIT_LIMIT: Duration = Duration::from_secs(60);

pub(super) async fn checksums(session: &Session, table: &TableSpec, ranges: &[KeyRange], hashing: Hashing) -> Result<Vec<Sums>, EngineError> {
    if let Some(grouped) = sql::grouped_checksum(table, ranges, hashing) {
        // The planner takes the chunk number for a function of the key and expects one group per key
        // value: it sorts every row (spilling to disk) and aggregates in order. There are only as many
        // groups as chunks, so a parallel hash aggregate is right: at pgbench scale 50 one side's
        // statement went from 1,111 to 527 ms (the whole table's single checksum: 317 ms). Planner costs
        // only: the rows read and the sums are the same.
        session.run("favouring a hash aggregate for chunk checksums", "SET enable_sort = off; SET parallel_tuple_cost = 0").await?;
        let rows = session.rows("computing chunk checksums", &grouped, &[]).await;
        // After a failed statement the transaction is aborted and the RESET fails too: the first error wins.
        let reset = session.run("restoring the planner's costs", "RESET enable_sort; RESET parallel_tuple_cost").await;
        let rows = rows?;
        reset?;
        let mut out = vec![Sums { rows: 0, sum: "0".into() }; ranges.len()];
        for row in rows {
            let bucket = row.get::<_, i32>(0).clamp(0, ranges.len() as i32 - 1) as usize;
            out[bucket] = Sums { rows: row.get::<_, i64>(1).max(0) as u64, sum: row.get(2) };
        }
        return Ok(out);
    }
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
    Ok(row_hashes_by_key(session, table, keys, hashing).await?.into_iter().collect())
}

/// Keys per lookup statement: a single integer key is one array literal whatever its length; any other
/// key is a list of row comparisons, kept to `KEYS_PER_BATCH`.
fn lookup_batch(table: &TableSpec) -> usize {
    if sql::integer_key(table) { usize::MAX } else { super::KEYS_PER_BATCH }
}

/// The rows of `keys` as (key values, row hash), in key order.
/// (Batches of a non-integer key are each in key order, not all together: `narrow::merge` pairs keys
/// whatever their order.)
pub(super) async fn row_hashes_by_key(session: &Session, table: &TableSpec, keys: &[KeyValues], hashing: Hashing) -> Result<RowHashes, EngineError> {
    let mut out = Vec::with_capacity(keys.len());
    for group in keys.chunks(lookup_batch(table)) {
        let rows = session.rows("reading rows by key", &sql::rows_by_key_in_order(table, group, hashing), &[]).await?;
        out.extend(rows.iter().map(|r| (r.get(0), r.get(1))));
    }
    Ok(out)
}

/// Runs `work` with both sides in matched snapshots: a REPEATABLE READ snapshot on the source whose WAL
/// insert position L is noted as its first statement (every transaction it sees committed before L),
/// then, as soon as the target has applied L, a REPEATABLE READ snapshot on the target; `work` then
/// reads both sides at leisure (a whole bisection if need be), both frozen. The target's snapshot is at
/// most one poll past L, whatever the link's lag, so few rows change between the two snapshots even
/// under load. None when the target did not reach L within [`WAIT_LIMIT`].
pub(super) async fn matched<'a, R, F>(pair: &'a Pair, slot: &'a str, work: F) -> Result<Option<R>, EngineError>
where
    F: Future<Output = Result<R, EngineError>> + 'a,
{
    // On the heap: the callers' futures are large and nest (a whole table cut into chunks compares them
    // in snapshots of their own, each descending further).
    let work = Box::pin(work);
    pair.src.run("opening a snapshot on the source", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    let result = async {
        let row = pair.src.row("noting the snapshot's position", "SELECT pg_current_wal_insert_lsn()", &[]).await?;
        let position = u64::from(row.get::<_, PgLsn>(0));
        let limit = if pair.before_fence { super::BEFORE_FENCE_LINK_WAIT } else { WAIT_LIMIT };
        if !wait_applied(pair, slot, position, limit).await? {
            if pair.before_fence {
                return Err(link_behind());
            }
            return Ok(None);
        }
        pair.tgt.run("opening a snapshot on the target", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        pair.tgt.row("taking the target's snapshot", "SELECT 1", &[]).await?;
        Ok(Some(work.await?))
    }
    .await;
    let closed = close(pair).await;
    let value = result?; // the first error wins
    closed?;
    Ok(value)
}

/// Runs `head` on the source's session and `work` (both sessions) at once, in REPEATABLE READ snapshots
/// taken one after the other, *not* matched: the target's is wherever the link is, behind or past the
/// source's. For a caller that names every row the link's lag can make differ between the two
/// (`chunks::compare_whole_live`, from a stream that began before both snapshots): no wait for the link.
pub(super) async fn unmatched<'a, H, G, R, F>(pair: &'a Pair, head: H, work: F) -> Result<(G, R), EngineError>
where
    H: Future<Output = Result<G, EngineError>> + 'a,
    F: Future<Output = Result<R, EngineError>> + 'a,
{
    // On the heap: the callers' futures are large and nest (cutting into chunks compares in snapshots of its own).
    let (head, work) = (Box::pin(head), Box::pin(work));
    let result = async {
        pair.src.run("opening a snapshot on the source", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        pair.src.row("taking the source's snapshot", "SELECT 1", &[]).await?;
        pair.tgt.run("opening a snapshot on the target", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        pair.tgt.row("taking the target's snapshot", "SELECT 1", &[]).await?;
        tokio::try_join!(head, work)
    }
    .await;
    let closed = close(pair).await;
    let value = result?; // the first error wins
    closed?;
    Ok(value)
}

/// Ends both sessions' snapshots. Read-only: ROLLBACK is the same as COMMIT, and harmless when no
/// transaction is open (a failed read leaves one aborted; this keeps the sessions usable either way).
async fn close(pair: &Pair) -> Result<(), EngineError> {
    let ends = tokio::join!(pair.src.run("closing the snapshot", "ROLLBACK"), pair.tgt.run("closing the snapshot", "ROLLBACK"));
    ends.0?;
    ends.1
}

/// The source's rows of some keys read at a noted position, outside any pair of snapshots (`moved`), to
/// settle candidates with (`narrow::settle`): the target is read once it has applied `position`.
pub(super) struct Early {
    pub(super) position: u64,
    pub(super) rows: HashMap<KeyValues, i64>,
}

/// Before the fence, a link that did not apply a position within `BEFORE_FENCE_LINK_WAIT`.
pub(super) fn link_behind() -> EngineError {
    EngineError::transient(
        "verification_link_behind",
        format!("the link did not apply the source's position within {} s", super::BEFORE_FENCE_LINK_WAIT.as_secs()),
        "the cutover compares every row after the fence instead",
    )
}

/// Waits until the target has applied `position` (as [`matched`] does); false past the live limit.
pub(super) async fn wait_for_link(pair: &Pair, slot: &str, position: u64) -> Result<bool, EngineError> {
    let limit = if pair.before_fence { super::BEFORE_FENCE_LINK_WAIT } else { WAIT_LIMIT };
    wait_applied(pair, slot, position, limit).await
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

/// What the target has applied: the end of the last source commit its apply worker committed, from the
/// subscription's replication origin (in memory, updated at each applied commit, so it moves at once,
/// unlike the slot's confirmed position, which waits for the target's WAL flush and its next feedback).
async fn applied(tgt: &Session, subscription: &str) -> Result<u64, EngineError> {
    let row = tgt
        .maybe_row(
            "reading the target's applied position",
            "SELECT pg_replication_origin_progress('pg_' || s.oid, false) FROM pg_subscription s
             WHERE s.subname = $1 AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&subscription],
        )
        .await?;
    Ok(row.and_then(|r| r.get::<_, Option<PgLsn>>(0)).map(u64::from).unwrap_or(0))
}

/// Both sides' rows of `keys` at one point of the source's history, for rows that changed between every
/// other pair of reads (`narrow::settle`'s last resort). The source's rows are read with `FOR SHARE`
/// (the share lock pt-table-checksum's chunk reads take), so no one can change them (a key with no row
/// is not locked: an insert can still come, which the caller accounts for). Then a commit of milink's
/// own, on a session of its own (one more connection to the source, for this moment), flushes the WAL
/// past the lock (`cutover::FLUSH_WAL`, never waiting for a standby): nothing else may (the writers of
/// these rows wait for the lock, and may be all there is), and the walsender decodes only flushed WAL.
/// The target's rows are read until they equal the locked ones, or until the target is past that
/// commit: its apply worker recorded a position past it (`received_lsn`, the drain's proof in
/// `cutover::positions`: the worker handles the stream in order), or its applied position passed it.
/// Either way every commit before the lock, which holds all that changed these rows, is applied and
/// visible (only the last applied commit may not be visible yet, and it began after the lock). Then the
/// lock is released.
///
/// The application's writes to these rows wait meanwhile: up to [`LOCK_WAIT`] while the locks are taken
/// (a row being written is not waited for longer), then up to [`LOCKED_LINK_WAIT`] from the lock, the
/// flush included (bounded by [`LOCK_WAIT`] too). None when the link did not pass in time; an error (the
/// locks or the flush not had in time, no UPDATE privilege, which `FOR SHARE` needs, no connection
/// left) leaves the session out of the transaction all the same. Dropped midway, the transaction stays
/// open on `pair.src` until the pair is dropped (every caller drops it with the failed verification),
/// which ends the session and its locks.
pub(super) async fn locked(
    pair: &Pair,
    slot: &str,
    source: &crate::connect::Server,
    table: &TableSpec,
    keys: &[KeyValues],
    hashing: Hashing,
) -> Result<Option<(HashMap<KeyValues, i64>, HashMap<KeyValues, i64>)>, EngineError> {
    // Before the transaction: a failed connection leaves nothing open, and connecting holds no lock.
    let flusher = source.connect(Some(pair.src.database())).await?;
    flusher.run("bounding the flush", &format!("SET statement_timeout = '{LOCK_WAIT}'")).await?;
    pair.src
        .run(
            "locking the rows that kept changing",
            &format!("BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE; SET LOCAL lock_timeout = '{LOCK_WAIT}'; SET LOCAL statement_timeout = '{LOCK_WAIT}'"),
        )
        .await?;
    let result = async {
        let mut on_source = HashMap::new();
        for group in keys.chunks(lookup_batch(table)) {
            let sql = format!("{} FOR SHARE", sql::rows_by_key_in_order(table, group, hashing));
            let rows = pair.src.rows("reading the rows that kept changing, locked", &sql, &[]).await?;
            on_source.extend(rows.iter().map(|r| (r.get::<_, KeyValues>(0), r.get::<_, i64>(1))));
        }
        let locked_at = Instant::now();
        let flushed = super::track::flushed_end(&flusher).await.map(u64::from)?;
        loop {
            // The positions first: rows read after them hold at least that much.
            let received = crate::cutover::positions::received(&pair.tgt, slot).await?.unwrap_or(0);
            let past = received >= flushed || applied(&pair.tgt, slot).await? >= flushed;
            let on_target = rows_by_key(&pair.tgt, table, keys, hashing).await?;
            // Equal to rows that cannot change: settled, wherever the target's positions are.
            if past || keys.iter().all(|key| on_target.get(key) == on_source.get(key)) {
                return Ok(Some((on_source, on_target)));
            }
            if locked_at.elapsed() > LOCKED_LINK_WAIT {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    .await;
    pair.src.run("releasing the rows that kept changing", "ROLLBACK").await?;
    result
}

/// How long `locked` waits to take its locks, all of them (`lock_timeout` and `statement_timeout`), and
/// for its flush.
const LOCK_WAIT: &str = "200ms";
/// How long `locked` holds its rows, from the lock: past it they stay unsettled.
const LOCKED_LINK_WAIT: Duration = Duration::from_millis(500);

/// Waits until the target has applied `position` (or the slot confirmed it: an idle source sends no
/// commit past it, and only the slot moves then); false when it did not within [`WAIT_LIMIT`].
async fn wait_applied(pair: &Pair, slot: &str, position: u64, limit: Duration) -> Result<bool, EngineError> {
    let started = Instant::now();
    for poll in 0u32.. {
        if applied(&pair.tgt, slot).await? >= position {
            return Ok(true);
        }
        if poll % 20 == 0 && confirmed(&pair.src, slot).await? >= position {
            return Ok(true);
        }
        if started.elapsed() > limit {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(if poll < 500 { 1 } else { 10 })).await;
    }
    Ok(false)
}
