//! The keys of rows that can differ between a live verification's two snapshots because of the link's
//! lag, so a whole table can be compared by one checksum per side under a write load.
//!
//! While the link syncs, the target's snapshot is never at the source's position: behind it by the
//! link's lag, or, matched (`read::matched`), just past it. Under load a whole table's checksum therefore
//! always differs a little, which used to mean cutting the table into chunks and summing each (one
//! grouped scan per side, about 1.6× the cost of one sum, measured by hand at pgbench scale 50), then
//! narrowing the chunks that differed. Instead, before the verification's first snapshot, the link's
//! slot is copied (`pg_copy_logical_replication_slot`, temporary, with `test_decoding`): the copy starts
//! at the link's confirmed position, which the target has applied, so its stream, read after both
//! snapshots, names every key a commit that one snapshot holds and the other does not can have changed
//! (and more: whatever changed since). `chunks::compare_whole_live` then takes the whole table's
//! checksum minus those rows' hashes on each side, and compares the rows themselves by key. Where the
//! link's slot is far behind (a copy decodes from its restart point) a fresh slot is created instead; it
//! names the commits after its consistent point, so the comparison then waits for the target to pass it.
//!
//! Temporary: the slot belongs to its session and is gone when the verification drops it, or when the
//! session or the server ends, so a crash leaves nothing holding WAL. Best effort: a server that can do
//! neither (no free replication slot, no REPLICATION role, a creation waiting more than [`CREATE_WAIT`]
//! for running transactions, PostgreSQL before 12) leaves the verification cutting tables into chunks
//! as before. Whatever the stream names, a difference it misses makes the rest differ, and the table is
//! then cut into chunks: the stream can make a verification faster, never weaker.
use super::scope::TableSpec;
use super::sql::KeyValues;
use super::track::{self, Recheck};
use crate::connect::{Server, Session};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

/// How long creating the slot may wait for the transactions running on the source to end (a logical
/// slot starts where none of them runs). Past it the verification goes on without the slot.
const CREATE_WAIT: &str = "5s";

/// The stream of a temporary slot on the source, read by one worker at a time.
pub(super) struct Moved {
    state: tokio::sync::Mutex<State>,
    /// A session of its own for reading rows early (`rows`): an error there must not end the slot's
    /// session (a temporary slot is dropped on any error in its session), and it waits for no lock long.
    reader: tokio::sync::Mutex<Session>,
    /// Where a created slot's stream begins (its consistent point); None for a copy of the link's slot,
    /// whose stream begins where the target has already applied.
    begins_at: Option<u64>,
}

struct State {
    session: Session,
    slot: String,
    /// Everything the stream held so far, per table (consumed as read: each read decodes only what is new).
    changed: HashMap<String, Recheck>,
    /// A read failed: the stream may have lost changes, nothing is named from now on.
    broken: bool,
}

/// Creates the slot; None when the source cannot (the verification then cuts tables into chunks).
pub(super) async fn start(source: &Server, database: &str, link_slot: &str) -> Option<Moved> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // Unique across processes too (in a container every milink may be pid 1).
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let slot = format!("milink_moved_{}_{}_{nanos:x}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let clock = std::time::Instant::now();
    let reader = async {
        let reader = source.connect(Some(database)).await?;
        reader.run("setting the early reads' session", &format!("{}; SET lock_timeout = '{READER_LOCK_WAIT}'", super::sql::SESSION_SETTINGS)).await?;
        Ok::<_, milink_core::EngineError>(reader)
    };
    let (session, reader) = tokio::join!(source.connect(Some(database)), reader);
    let reader = match reader {
        Ok(reader) => reader,
        Err(error) => {
            tracing::debug!(error = %error.message, "no session for the moved rows' early reads; tables are cut into chunks");
            return None;
        }
    };
    let session = match session {
        Ok(session) => session,
        Err(error) => {
            tracing::debug!(error = %error.message, "no session for the moved rows' slot; tables are cut into chunks");
            return None;
        }
    };
    let connected_ms = clock.elapsed().as_millis() as u64;
    let created = async {
        if session.version_num().await? < 120_000 {
            return Ok(None); // `track` maps partitions to their root with pg_partition_root (12+)
        }
        session.run("bounding the slot's creation", &format!("SET statement_timeout = '{CREATE_WAIT}'")).await?;
        let copied = match copyable(&session, link_slot).await {
            true => session
                .try_run(&format!(
                    "SELECT pg_copy_logical_replication_slot({}, {}, true, 'test_decoding')",
                    crate::sql::quote_literal(link_slot),
                    crate::sql::quote_literal(&slot)
                ))
                .await
                .map_err(|error| tracing::debug!(error = %error, "could not copy the link's slot; creating one"))
                .is_ok(),
            false => false,
        };
        let mut begins_at = None;
        if !copied {
            let row = session
                .row(
                    "creating a temporary slot for the rows that move during the verification",
                    "SELECT lsn FROM pg_create_logical_replication_slot($1, 'test_decoding', true)",
                    &[&slot],
                )
                .await?;
            begins_at = Some(u64::from(row.get::<_, tokio_postgres::types::PgLsn>(0)));
        }
        session.run("restoring the statement timeout", "SET statement_timeout = 0").await?;
        // `test_decoding` prints key values in the reading session's DateStyle, IntervalStyle and TimeZone;
        // the keys read back are cast under the pair's.
        session.run("setting the verification's session settings", super::sql::SESSION_SETTINGS).await?;
        Ok::<_, milink_core::EngineError>(Some(begins_at))
    };
    let created = created.await;
    tracing::debug!(connected_ms, ms = clock.elapsed().as_millis() as u64, made = matches!(created, Ok(Some(_))), "the moved rows' slot");
    match created {
        Ok(Some(begins_at)) => Some(Moved {
            state: tokio::sync::Mutex::new(State { session, slot, changed: HashMap::new(), broken: false }),
            reader: tokio::sync::Mutex::new(reader),
            begins_at,
        }),
        Ok(None) => None,
        Err(error) => {
            tracing::debug!(error = %error.message, "could not create the moved rows' slot; tables are cut into chunks");
            None
        }
    }
}

/// Whether the link's slot is worth copying: its restart point (where a copy decodes from) is less than
/// [`COPY_BEHIND`] behind the WAL. A copy is made at once, where creating a slot waits for a consistent
/// point (measured under the benchmark's load with the link streaming: 100-450 ms, against 2-4 ms for a
/// copy); it starts where the link's slot has been confirmed, so its first read also names what the link
/// has not confirmed yet (more keys, never fewer).
async fn copyable(session: &Session, link_slot: &str) -> bool {
    let sql = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::float8 FROM pg_replication_slots
               WHERE slot_name = $1 AND slot_type = 'logical' AND confirmed_flush_lsn IS NOT NULL";
    match session.maybe_row("looking at the link's slot", sql, &[&link_slot]).await {
        Ok(Some(row)) => row.get::<_, Option<f64>>(0).is_some_and(|behind| behind < COPY_BEHIND),
        _ => false,
    }
}

/// How long an early read waits for a lock: the pair's snapshots hold the table, so an exclusive lock
/// queued by the application behind them would otherwise wait for this read, which waits for it.
const READER_LOCK_WAIT: &str = "200ms";

/// Bytes of WAL behind its restart point past which the link's slot is not copied (a copy's first read
/// decodes them all, inside a table's comparison).
const COPY_BEHIND: f64 = 64.0 * 1024.0 * 1024.0;

impl Moved {
    /// Where the stream begins when the target may not have applied that far (a created slot).
    pub(super) fn begins_at(&self) -> Option<u64> {
        self.begins_at
    }

    /// The source's rows of `keys` now, in a snapshot whose WAL position is noted by its first statement
    /// (as `read::matched`'s source side), on a session of its own; None when the read fails or waits
    /// for a lock (settling then reads in matched snapshots, waiting for the link).
    pub(super) async fn rows(&self, table: &TableSpec, keys: &[KeyValues], hashing: super::sql::Hashing) -> Option<super::read::Early> {
        let session = self.reader.lock().await;
        let read = async {
            session.run("opening a snapshot on the source", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
            let position = session.row("noting the snapshot's position", "SELECT pg_current_wal_insert_lsn()", &[]).await?;
            let rows = super::read::rows_by_key(&session, table, keys, hashing).await?;
            Ok::<_, milink_core::EngineError>(super::read::Early { position: u64::from(position.get::<_, tokio_postgres::types::PgLsn>(0)), rows })
        };
        let read = read.await;
        let closed = session.run("closing the snapshot", "ROLLBACK").await;
        read.and_then(|early| closed.map(|()| early))
            .map_err(|error| tracing::debug!(error = %error.message, "could not read the moved rows early; settling waits for the link"))
            .ok()
    }

    /// The keys of `table` changed since the stream began (a copy: the link's confirmed position; a
    /// created slot: its consistent point), read up to now (call it after both
    /// snapshots were taken); None when they cannot all be named (the table was truncated, a line could
    /// not be read, too many keys, a read failed).
    pub(super) async fn keys(&self, table: &TableSpec, tables: &[TableSpec]) -> Option<BTreeSet<KeyValues>> {
        let mut state = self.state.lock().await;
        if !state.broken {
            let State { session, slot, .. } = &*state;
            match track::read_slot(session, slot, tables, true, false).await {
                Ok(part) => track::merge(&mut state.changed, part.into_changed().into_iter().collect()),
                Err(error) => {
                    tracing::warn!(error = %error.message, "could not read the moved rows' slot; the tables left are cut into chunks");
                    state.broken = true;
                }
            }
        }
        if state.broken || state.changed.contains_key("") {
            return None;
        }
        match state.changed.get(&table.display_name()) {
            None => Some(BTreeSet::new()),
            Some(Recheck::Keys(keys)) => Some(keys.clone()),
            Some(Recheck::Whole(_)) => None,
        }
    }
}
