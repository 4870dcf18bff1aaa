//! What changed after the verification before the fence, so the cutover's window compares only that.
//!
//! Before the fence (`start`), a logical slot with the `test_decoding` plugin is created on the source
//! and, where the target allows it, one on the target; only then does the full verification take its
//! snapshots, so every commit a snapshot of it did not see comes after the slots' consistent points and
//! is decoded. When that verification ends, `record` writes its outcome into the source's WAL itself (a
//! transactional logical message, flushed: the tables it found equal, with their rows). After the fence
//! and the drain, `changes` peeks both slots: the source's stream up to the fence holds every key
//! changed on the source since the verification's snapshots, and the message; the target's, decoded
//! with `only-local`, holds every row written on the target by anything but the link's apply worker
//! (an application writing to the target during sync, a hand fix). A table is then re-compared in the
//! window: not at all when neither stream touched it and the verification found it equal; key by key
//! for the keys either stream names; whole when it was truncated, has no key, changed without keys, or
//! was not found equal before the fence. So the window's cost follows the writes since the
//! verification, not the size of the data.
//!
//! Falls back to the full comparison (never to less) when anything is missing: no slot (a crash, an
//! older milink, a target that refused a slot: `wal_level` below logical, no REPLICATION role), or no
//! message (the verification did not finish). The slots are dropped after the cutover's comparison, by
//! unfence and by drop_link; until then they hold the source's WAL since the verification began.
//!
//! Parsing follows test_decoding's output: `table <schema>.<name>: <ACTION>: <column>[<type>]:<value> ...`
//! with identifiers quoted as `quote_identifier` does and values as SQL literals (numbers and booleans
//! bare), `null`, or `unchanged-toast-datum`. Partitions are decoded under their own names and mapped to
//! their root, the table a verification compares.
use super::scope::TableSpec;
use super::sql::KeyValues;
use crate::connect::{writable, Session};
use milink_core::EngineError;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The message's prefix in the source's WAL.
const PREFIX: &str = "milink_verified";

/// The prefix of the records read through `slot`: every slot of the database decodes every message, and
/// two migrations of one source database (two targets) must each trust only their own link's records.
fn record_prefix(slot: &str) -> String {
    format!("{PREFIX}:{slot}")
}
/// Keys of one table past which the window compares the table whole instead (cheaper by then).
const MAX_KEYS_PER_TABLE: usize = 200_000;

/// The tracking slot's name (on both servers): the link's name with a suffix.
pub(super) fn slot_name(link: &str) -> String {
    format!("{link}_vt")
}

/// A table as the record names it: its name and its columns (names and types), so a table whose columns
/// changed after the verification before the fence (a column added with a default rewrites no row in
/// the stream) is compared whole, never passed on the strength of rows that had other columns.
pub(super) fn fingerprint(table: &TableSpec) -> String {
    let columns: Vec<String> = table.columns.iter().map(|c| format!("{} {}", c.name, c.type_sql)).collect();
    format!("{}\u{1f}{}", table.display_name(), columns.join("\u{1f}"))
}

/// What re-comparing a table in the window takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Recheck {
    /// These keys only.
    Keys(BTreeSet<KeyValues>),
    /// The whole table.
    Whole(&'static str),
}

/// What changed since the verification before the fence, per table (display name); tables absent
/// from `changed` and present in `verified` are equal without another read.
#[derive(Debug, Default)]
pub(super) struct Changes {
    /// Tables found equal before the fence (by [`fingerprint`]), with their rows then.
    pub(super) verified: BTreeMap<String, u64>,
    pub(super) changed: HashMap<String, Recheck>,
    /// Changes decoded (both streams), for the log and the report.
    pub(super) decoded: u64,
}

impl Changes {
    /// What table `table` needs in the window; None when nothing.
    pub(super) fn recheck(&self, table: &TableSpec) -> Option<Recheck> {
        let name = table.display_name();
        if let Some(Recheck::Whole(why)) = self.changed.get("") {
            return Some(Recheck::Whole(why));
        }
        if !self.verified.contains_key(&fingerprint(table)) {
            return Some(Recheck::Whole("not found equal before the fence, or its columns changed since"));
        }
        match self.changed.get(&name) {
            Some(Recheck::Keys(_)) if table.key.is_empty() => Some(Recheck::Whole("no key")),
            other => other.cloned(),
        }
    }
}

async fn drop_slot(session: &Session, slot: &str) -> Result<(), EngineError> {
    session
        .rows(
            "dropping the verification's tracking slot",
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active",
            &[&slot],
        )
        .await?;
    Ok(())
}

/// Drops the tracking slots on both sides (each if present).
pub(super) async fn stop(src: &Session, tgt: Option<&Session>, link: &str) -> Result<(), EngineError> {
    let slot = slot_name(link);
    drop_slot(src, &slot).await?;
    if let Some(tgt) = tgt {
        drop_slot(tgt, &slot).await?;
    }
    Ok(())
}

/// Creates the tracking slots, both at once (after dropping older ones of this link). The source's is
/// required; the target's is not: without it the target is not tracked, which `changes` turns into a full
/// comparison. Returns why the target is not tracked, if it is not.
///
/// Created, not copied from the link's slot (which `moved` does for a live verification, and which is
/// made at once where creating waits for a consistent point under load): a copy's stream would begin at
/// the link's confirmed position, which can lie before an earlier attempt's record, and every peek of it
/// would decode again from the link's restart point.
pub(super) async fn start(src: &Session, tgt: &Session, link: &str) -> Result<Option<String>, EngineError> {
    let slot = slot_name(link);
    stop(src, Some(tgt), link).await?;
    writable(src).await?;
    let clock = std::time::Instant::now();
    let sql = "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'test_decoding')";
    let params: &[&(dyn tokio_postgres::types::ToSql + Sync)] = &[&slot];
    let (on_source, on_target) = tokio::join!(
        src.row("creating the verification's tracking slot on the source", sql, params),
        tgt.row("creating the verification's tracking slot on the target", sql, params)
    );
    tracing::debug!(tracked_target = on_target.is_ok(), ms = clock.elapsed().as_millis() as u64, "tracking slots created");
    if let Err(error) = on_source {
        if on_target.is_ok() {
            if let Err(dropping) = drop_slot(tgt, &slot).await {
                tracing::warn!(error = %dropping.message, "could not drop the target's tracking slot; the next attempt drops it");
            }
        }
        return Err(error);
    }
    Ok(on_target.err().map(|e| {
        tracing::warn!(error = %e.message, "the target's writes cannot be tracked: the cutover compares every row in its window");
        e.message
    }))
}

/// What the verification before the fence established, as written into the source's WAL: whether the
/// target is tracked, the tables found equal (by [`fingerprint`], with their rows then), and what a
/// catch-up round (`catch_up`) left to the window: keys it could not prove equal, or whole tables.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Record {
    pub(super) target_tracked: bool,
    pub(super) verified: BTreeMap<String, u64>,
    pub(super) carried: BTreeMap<String, Recheck>,
}

/// Why a table carried whole from a catch-up round is compared whole.
const CARRIED_WHOLE: &str = "not proven equal by the catch-up before the fence";

/// Writes `record` into the source's WAL, flushed (a local synchronous commit), so the stream read after it
/// finds it. Format `v2 target=<0|1>` then one line per entry, every name and value length-prefixed
/// (`<bytes>:<text>`, so any character is safe): `= <rows> <name>` for a table found equal, `W <name>`
/// for a table carried whole, `K <name> <n> <v1>…<vn>` for a carried key.
pub(super) async fn record(src: &Session, link: &str, record: &Record) -> Result<(), EngineError> {
    let content = encode(record);
    writable(src).await?;
    // Flushed locally, never waiting for the link (the synchronous hold may be engaged: `cutover::hold`).
    src.run("flushing the verification's record", "SET synchronous_commit = local").await?;
    src.row("recording the verification in the source's WAL", "SELECT pg_logical_emit_message(true, $1, $2)::text", &[&record_prefix(&slot_name(link)), &content])
        .await?;
    Ok(())
}

fn prefixed(text: &str) -> String {
    format!("{}:{text}", text.len())
}

fn encode(record: &Record) -> String {
    let mut content = format!("v2 target={}\n", u8::from(record.target_tracked));
    for (name, rows) in &record.verified {
        content.push_str(&format!("= {rows} {}\n", prefixed(name)));
    }
    for (name, recheck) in &record.carried {
        match recheck {
            Recheck::Whole(_) => content.push_str(&format!("W {}\n", prefixed(name))),
            Recheck::Keys(keys) => {
                for key in keys {
                    let values: String = key.iter().map(|v| prefixed(v)).collect();
                    content.push_str(&format!("K {} {} {values}\n", prefixed(name), key.len()));
                }
            }
        }
    }
    content
}

/// Reads `<bytes>:<text>` from the front of `rest`.
fn take_prefixed(rest: &str) -> Option<(&str, &str)> {
    let (length, after) = rest.split_once(':')?;
    let length: usize = length.parse().ok()?;
    Some((after.get(..length)?, after.get(length..)?))
}

fn parse_record(content: &str) -> Option<Record> {
    let (head, mut rest) = content.split_once('\n')?;
    let (version, target) = head.split_once(" target=")?;
    let target_tracked = match target {
        "1" => true,
        "0" => false,
        _ => return None,
    };
    let mut record = Record { target_tracked, ..Record::default() };
    match version {
        // Written by an older milink: `<rows> <bytes>:<name>` per table found equal.
        "v1" => {
            while !rest.is_empty() {
                let (rows, after) = rest.split_once(' ')?;
                let (name, after) = take_prefixed(after)?;
                record.verified.insert(name.to_owned(), rows.parse().ok()?);
                rest = after.strip_prefix('\n')?;
            }
        }
        "v2" => {
            while !rest.is_empty() {
                let (kind, after) = rest.split_once(' ')?;
                rest = match kind {
                    "=" => {
                        let (rows, after) = after.split_once(' ')?;
                        let (name, after) = take_prefixed(after)?;
                        record.verified.insert(name.to_owned(), rows.parse().ok()?);
                        after
                    }
                    "W" => {
                        let (name, after) = take_prefixed(after)?;
                        record.carried.insert(name.to_owned(), Recheck::Whole(CARRIED_WHOLE));
                        after
                    }
                    "K" => {
                        let (name, after) = take_prefixed(after)?;
                        let (count, mut after) = after.strip_prefix(' ')?.split_once(' ')?;
                        let mut key = Vec::new();
                        for _ in 0..count.parse::<usize>().ok()? {
                            let (value, next) = take_prefixed(after)?;
                            key.push(value.to_owned());
                            after = next;
                        }
                        let entry = record.carried.entry(name.to_owned()).or_insert_with(|| Recheck::Keys(BTreeSet::new()));
                        if let Recheck::Keys(keys) = entry {
                            keys.insert(key);
                        }
                        after
                    }
                    _ => return None,
                }
                .strip_prefix('\n')?;
            }
        }
        _ => return None,
    }
    Some(record)
}

/// Adds what a record carried to what the stream changed: keys join the table's keys, whole wins.
pub(super) fn merge(changed: &mut HashMap<String, Recheck>, carried: BTreeMap<String, Recheck>) {
    for (name, recheck) in carried {
        match (changed.get_mut(&name), recheck) {
            (Some(Recheck::Whole(_)), _) => {}
            (Some(entry), Recheck::Whole(why)) => *entry = Recheck::Whole(why),
            (Some(Recheck::Keys(keys)), Recheck::Keys(more)) => {
                keys.extend(more);
                if keys.len() > MAX_KEYS_PER_TABLE {
                    changed.insert(name, Recheck::Whole("many rows changed since the verification"));
                }
            }
            (None, recheck) => {
                changed.insert(name, recheck);
            }
        }
    }
}

/// Partition (schema, name) → its root's display name, on one side.
async fn partition_roots(session: &Session) -> Result<HashMap<(String, String), String>, EngineError> {
    let rows = session
        .rows(
            "mapping partitions to their root",
            "SELECT n.nspname::text, c.relname::text, rn.nspname || '.' || r.relname
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_class r ON r.oid = pg_partition_root(c.oid) JOIN pg_namespace rn ON rn.oid = r.relnamespace
             WHERE c.relispartition",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| ((r.get(0), r.get(1)), r.get(2))).collect())
}

/// Why the window must compare everything, or what changed.
pub(super) enum Tracked {
    Changes(Changes),
    Untracked(String),
}

/// Reads both streams up to their ends (peeking: a repeated finalize reads them again); the source is
/// fenced and drained, so its stream ends past the fence. `taken` is what this process consumed of each
/// stream before (the passes just before the fence, [`take_both`], and the source's during the drain,
/// [`take_source`]), in order: the rest is read after it.
pub(super) async fn changes(src: &Session, tgt: &Session, link: &str, tables: &[TableSpec], taken: Taken) -> Result<Tracked, EngineError> {
    read(src, tgt, link, tables, false, taken).await
}

/// What this process consumed of the tracking streams and keeps for the window, in stream order.
#[derive(Debug, Default, Clone)]
pub(super) struct Taken {
    pub(super) source: Vec<SourcePart>,
    pub(super) target: Vec<SourcePart>,
}

/// Consumes both streams up to now without comparing anything (the passes between the last catch-up
/// round and the fence): the caller keeps both parts for the window, which then decodes only what came
/// after. The source's first: once its record is consumed, a process that loses the parts (a restart)
/// leaves a window that finds no record and compares everything; consuming the target's first could
/// leave a record that vouches for target writes nobody kept. None without tracking on both sides.
pub(super) async fn take_both(src: &Session, tgt: &Session, link: &str, tables: &[TableSpec]) -> Result<Option<(SourcePart, SourcePart)>, EngineError> {
    if !tracking_slot(src, link).await? || !tracking_slot(tgt, link).await? {
        return Ok(None);
    }
    let source = read_stream(src, link, tables, true, false).await?;
    let target = read_stream(tgt, link, tables, true, true).await?;
    Ok(Some((source, target)))
}

/// Writes a running-transactions record into the side's WAL now, so that the next consuming read moves
/// the tracking slot's restart point up to here: every read of a logical slot decodes again from that
/// point, which otherwise moves only with the server's own such records (every 15 s under load, or at a
/// checkpoint), so a read just before the fence re-decoded up to 15 s of WAL. PostgreSQL 16+ has
/// `pg_log_standby_snapshot()`; before it, creating a logical slot is what writes one (the temporary slot
/// is dropped at once; waiting for its consistent point is cut short, the record is written before).
/// Never an error: without it the reads are as right, only slower.
pub(super) async fn log_running_transactions(session: &Session, link: &str) {
    let result = match session.version_num().await {
        Ok(version) if version >= 160_000 => session.try_run("SELECT pg_log_standby_snapshot()").await,
        Ok(_) => {
            let slot = format!("{}_snap", slot_name(link));
            let _ = session.try_run("SET statement_timeout = '20ms'").await;
            let created = session
                .try_run(&format!("SELECT pg_create_logical_replication_slot({}, 'test_decoding', true)", crate::sql::quote_literal(&slot)))
                .await;
            let _ = session.try_run("SET statement_timeout = 0").await; // the verification's own setting
            let _ = session.try_run(&format!("SELECT pg_drop_replication_slot({})", crate::sql::quote_literal(&slot))).await;
            created
        }
        Err(_) => return,
    };
    if let Err(error) = result {
        tracing::debug!(error = %error, "could not log running transactions; the next read decodes more WAL");
    }
}

impl SourcePart {
    /// Changes decoded.
    pub(super) fn decoded(&self) -> u64 {
        self.decoded
    }

    /// What the changes were, per table (display name; "" for a line that could not be read).
    pub(super) fn into_changed(self) -> HashMap<String, Recheck> {
        self.changed
    }
}

/// Takes both streams up to now, consuming them (a catch-up round before the fence): what it returns
/// must be written back with [`record`] as carried, or proven equal; a round that fails in between
/// leaves no record after it, and the window then compares everything (slower, never less).
pub(super) async fn take(src: &Session, tgt: &Session, link: &str, tables: &[TableSpec]) -> Result<Tracked, EngineError> {
    read(src, tgt, link, tables, true, Taken::default()).await
}

/// What one side's stream held: the changes, how many, and the last record in it.
#[derive(Debug, Default, Clone)]
pub(super) struct SourcePart {
    changed: HashMap<String, Recheck>,
    decoded: u64,
    record: Option<Record>,
    /// After a consuming read: the slot's confirmed position before and after it. Parts kept in memory
    /// are trusted only as an unbroken chain that ends where the slot is now (see [`read`]).
    consumed: Option<(Option<u64>, Option<u64>)>,
}

/// The tracking slot's confirmed position on this side.
pub(super) async fn confirmed(session: &Session, link: &str) -> Result<Option<u64>, EngineError> {
    let sql = "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()";
    let row = session.maybe_row("reading the tracking slot's position", sql, &[&slot_name(link)]).await?;
    Ok(row.and_then(|r| r.get::<_, Option<tokio_postgres::types::PgLsn>>(0)).map(u64::from))
}

/// Whether the link's tracking slot exists on this side (in this database).
pub(super) async fn tracking_slot(session: &Session, link: &str) -> Result<bool, EngineError> {
    let sql = "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database() AND plugin = 'test_decoding'";
    Ok(session.row("looking for the tracking slot", sql, &[&slot_name(link)]).await?.get::<_, i64>(0) > 0)
}

/// Consumes the source's stream up to now; None without a tracking slot. Run during the drain (the source
/// is fenced, so its stream is complete up to the fence): the window then decodes only what is left.
pub(super) async fn take_source(src: &Session, link: &str, tables: &[TableSpec]) -> Result<Option<SourcePart>, EngineError> {
    if !tracking_slot(src, link).await? {
        return Ok(None);
    }
    read_stream(src, link, tables, true, false).await.map(Some)
}

/// One side's stream up to now, peeked or consumed: the changes of `tables`, how many, and the last
/// record in it (only the source's holds records). `local`: only what the side wrote itself (the
/// target's own writes, not the link's).
async fn read_stream(session: &Session, link: &str, tables: &[TableSpec], consume: bool, local: bool) -> Result<SourcePart, EngineError> {
    let from = match consume {
        true => confirmed(session, link).await?,
        false => None,
    };
    let mut part = read_slot(session, &slot_name(link), tables, consume, local).await?;
    if consume {
        part.consumed = Some((from, confirmed(session, link).await?));
    }
    Ok(part)
}

/// [`read_stream`] of any `test_decoding` slot (also a live verification's temporary one: `moved`).
pub(super) async fn read_slot(session: &Session, slot: &str, tables: &[TableSpec], consume: bool, local: bool) -> Result<SourcePart, EngineError> {
    let function = if consume { "pg_logical_slot_get_changes" } else { "pg_logical_slot_peek_changes" };
    let sql = format!(
        "SELECT data FROM {function}($1, $2, NULL, 'skip-empty-xacts', '1', 'include-xids', '0'{})",
        if local { ", 'only-local', '1'" } else { "" }
    );
    let keys: HashMap<String, &TableSpec> = tables.iter().map(|t| (t.display_name(), t)).collect();
    let roots = partition_roots(session).await?;
    let mut part = SourcePart::default();
    let prefix = format!("message: transactional: 1 prefix: {}, sz: ", record_prefix(slot));
    let upto = flushed_end(session).await?;
    for row in session.rows("reading the changes since the verification", &sql, &[&slot, &upto]).await? {
        let line: String = row.get(0);
        if let Some(content) = line.strip_prefix(&prefix) {
            // The last record wins: a catch-up round's supersedes the verification's.
            part.record = content.split_once(" content:").and_then(|(_, c)| parse_record(c));
            continue;
        }
        part.decoded += note(&mut part.changed, &line, &keys, &roots);
    }
    Ok(part)
}

/// Flushes the side's WAL and returns where a record ends, past every commit made before the call (the
/// end of a transactional logical message whose commit is flushed, as `cutover::FLUSH_WAL`'s). A read of
/// the stream is bounded there (`upto_lsn`) so that it never waits: unbounded, it decodes up to the flush
/// pointer, which the WAL writer leaves inside a record whenever it flushes a partial page, and the read
/// then waits until the rest of that record is flushed, up to `wal_writer_delay` (200 ms) on a server
/// whose commits are asynchronous (the target: the apply worker commits with `synchronous_commit` off)
/// or fenced. Measured, reads of an empty target stream took 165–192 ms. It also makes the read complete:
/// an unbounded read stops at the flush pointer, before commits made with `synchronous_commit = off` that
/// are already visible but not yet flushed. Never waits for a standby (`synchronous_commit = local`,
/// against the cutover's synchronous hold). An error when it cannot: the callers then fall back as for
/// any failed read (the window compares everything).
pub(super) async fn flushed_end(session: &Session) -> Result<tokio_postgres::types::PgLsn, EngineError> {
    let failed = |detail: String| {
        EngineError::transient(
            "flush_failed",
            format!("{}: could not flush the WAL before reading the verification's changes: {detail}", session.place().label()),
            "milink compares every row instead; check that the role may call pg_logical_emit_message.",
        )
    };
    // The cutover's flush (one query string: a failure leaves no aborted block on a session other reads
    // are pipelined on); the simple protocol returns its position as text.
    match session.client().simple_query(crate::cutover::FLUSH_WAL).await {
        Ok(messages) => messages
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).and_then(|lsn| lsn.parse().ok()),
                _ => None,
            })
            .ok_or_else(|| failed("no position returned".into())),
        Err(error) => Err(failed(crate::errors::classify(&error, session.place(), "flushing the WAL").message)),
    }
}

async fn read(src: &Session, tgt: &Session, link: &str, tables: &[TableSpec], consume: bool, taken: Taken) -> Result<Tracked, EngineError> {
    if !tracking_slot(src, link).await? {
        return Ok(Tracked::Untracked("no verification before the fence was tracked".into()));
    }
    // Parts this process kept are the streams' past only if nothing consumed the slots since: a read that
    // failed after consuming, a second reader, a retried step elsewhere that made the slots again. Then
    // the kept parts are not the whole past (and may hold the record): compare everything.
    for (session, parts) in [(src, &taken.source), (tgt, &taken.target)] {
        if parts.is_empty() {
            continue;
        }
        let spans: Vec<(Option<u64>, Option<u64>)> = parts.iter().map(|p| p.consumed.unwrap_or((None, None))).collect();
        let chained = spans.iter().all(|(from, to)| from.is_some() && to.is_some()) && spans.windows(2).all(|w| w[0].1 == w[1].0);
        let now = confirmed(session, link).await?;
        if !chained || spans.last().map(|s| s.1) != Some(now) {
            return Ok(Tracked::Untracked("the changes read before the window do not match the tracking slots".into()));
        }
    }
    // Peeking (the window), both sides are read at once; consuming (a round), the source's first (see
    // `take_both` for why the order matters).
    let (rest, own) = match consume {
        true => (read_stream(src, link, tables, true, false).await?, None),
        false => {
            let target = async {
                match tracking_slot(tgt, link).await? {
                    true => read_stream(tgt, link, tables, false, true).await.map(Some),
                    false => Ok(None),
                }
            };
            let (rest, own) = tokio::join!(read_stream(src, link, tables, false, false), target);
            match own {
                Ok(own) => (rest?, Some(own)),
                // Without the target's writes the window cannot trust anything it did not compare.
                Err(error) => return Ok(Tracked::Untracked(format!("the target's own writes could not be read ({})", error.message))),
            }
        }
    };
    let mut changes = Changes::default();
    let mut record = None;
    for part in taken.source.into_iter().chain(std::iter::once(rest)) {
        changes.decoded += part.decoded;
        merge(&mut changes.changed, part.changed.into_iter().collect());
        record = part.record.or(record);
    }
    let Some(record) = record else {
        return Ok(Tracked::Untracked("the verification before the fence did not finish".into()));
    };
    let own = match own {
        Some(own) => own,
        None if tracking_slot(tgt, link).await? => Some(read_stream(tgt, link, tables, true, true).await?),
        None => None,
    };
    let Some(own) = own.filter(|_| record.target_tracked) else {
        return Ok(Tracked::Untracked("writes on the target were not tracked".into()));
    };
    for part in taken.target.into_iter().chain(std::iter::once(own)) {
        changes.decoded += part.decoded;
        merge(&mut changes.changed, part.changed.into_iter().collect());
    }
    merge(&mut changes.changed, record.carried);
    changes.verified = record.verified;
    Ok(Tracked::Changes(changes))
}

/// The keys of `table` changed since the tracking slots were created, on the source or by the target's
/// own writes (peeked: nothing is consumed); None when they cannot be named (the table was truncated,
/// has no key, a line could not be read, or the target is not tracked).
pub(super) async fn changed_keys(src: &Session, tgt: &Session, link: &str, table: &TableSpec) -> Result<Option<BTreeSet<KeyValues>>, EngineError> {
    let mut changed = HashMap::new();
    for (session, local) in [(src, false), (tgt, true)] {
        if !tracking_slot(session, link).await? {
            return Ok(None);
        }
        let part = match read_stream(session, link, std::slice::from_ref(table), false, local).await {
            Ok(part) => part,
            // Nothing is excused: the chunk is narrowed instead.
            Err(error) if error.code == "flush_failed" => return Ok(None),
            Err(error) => return Err(error),
        };
        merge(&mut changed, part.changed.into_iter().collect());
    }
    if changed.contains_key("") {
        return Ok(None);
    }
    Ok(match changed.remove(&table.display_name()) {
        None => Some(BTreeSet::new()),
        Some(Recheck::Keys(keys)) => Some(keys),
        Some(Recheck::Whole(_)) => None,
    })
}

/// Notes what one decoded line changed; returns 1 for a change, 0 for anything else.
fn note(changed: &mut HashMap<String, Recheck>, line: &str, tables: &HashMap<String, &TableSpec>, roots: &HashMap<(String, String), String>) -> u64 {
    let Some(rest) = line.strip_prefix("table ") else { return 0 };
    let mut cursor = Cursor { text: rest };
    let mut names = Vec::new();
    loop {
        let Some(schema) = cursor.identifier() else { return whole_unknown(changed, line) };
        if !cursor.eat(".") {
            return whole_unknown(changed, line);
        }
        let Some(name) = cursor.identifier() else { return whole_unknown(changed, line) };
        names.push(roots.get(&(schema.clone(), name.clone())).cloned().unwrap_or(format!("{schema}.{name}")));
        if !cursor.eat(", ") {
            break;
        }
    }
    if !cursor.eat(": ") {
        return whole_unknown(changed, line);
    }
    let action = cursor.until(": ");
    if action == "TRUNCATE" || names.len() != 1 {
        for name in names {
            changed.insert(name, Recheck::Whole("truncated since the verification"));
        }
        return 1;
    }
    let name = names.remove(0);
    let Some(table) = tables.get(&name) else {
        // A consumed change of a table outside this read's scope is gone once consumed: should the table
        // come back into scope (DDL undone), it must be compared whole, not trusted.
        changed.insert(name, Recheck::Whole("changed while outside the verification's scope"));
        return 1;
    };
    let entry = changed.entry(name).or_insert_with(|| Recheck::Keys(BTreeSet::new()));
    let Recheck::Keys(keys) = entry else { return 1 };
    if table.key.is_empty() {
        *entry = Recheck::Whole("no key");
        return 1;
    }
    // An UPDATE that changed the key names the old key first ("old-key: ... new-tuple: ..."): both count.
    let mut tuples = Vec::new();
    if cursor.eat("old-key: ") {
        tuples.push(cursor.columns(Some("new-tuple: ")));
        cursor.eat("new-tuple: ");
    }
    tuples.push(cursor.columns(None));
    for tuple in tuples {
        let key: Option<KeyValues> = tuple.and_then(|columns| {
            table.key.iter().map(|k| columns.iter().find(|(name, _)| *name == k.name).and_then(|(_, v)| v.clone())).collect()
        });
        match key {
            Some(key) => {
                keys.insert(key);
            }
            None => {
                *entry = Recheck::Whole("changed without its key in the stream");
                return 1;
            }
        }
    }
    if keys.len() > MAX_KEYS_PER_TABLE {
        *entry = Recheck::Whole("many rows changed since the verification");
    }
    1
}

/// A line that could not be parsed: nothing to attach it to, so it makes the comparison whole.
fn whole_unknown(changed: &mut HashMap<String, Recheck>, line: &str) -> u64 {
    tracing::warn!(line = %line.chars().take(200).collect::<String>(), "unparsed change in the tracking stream");
    changed.insert(String::new(), Recheck::Whole("a change that could not be read"));
    1
}

/// Reading test_decoding's output.
struct Cursor<'a> {
    text: &'a str,
}

impl<'a> Cursor<'a> {
    fn eat(&mut self, token: &str) -> bool {
        match self.text.strip_prefix(token) {
            Some(rest) => {
                self.text = rest;
                true
            }
            None => false,
        }
    }

    fn until(&mut self, token: &str) -> &'a str {
        let (head, rest) = self.text.split_once(token).unwrap_or((self.text, ""));
        self.text = rest;
        head
    }

    /// An identifier as `quote_identifier` prints it: bare, or in double quotes with `""` for `"`.
    fn identifier(&mut self) -> Option<String> {
        if let Some(rest) = self.text.strip_prefix('"') {
            let (value, after) = quoted(rest, '"')?;
            self.text = after;
            return Some(value);
        }
        let end = self.text.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$')).unwrap_or(self.text.len());
        if end == 0 {
            return None;
        }
        let (value, after) = self.text.split_at(end);
        self.text = after;
        Some(value.to_owned())
    }

    /// `name[type]:value` separated by spaces, up to `stop` or the end; a value of None is `null` or an
    /// unchanged TOAST value (not its text). None when the tuple cannot be read (or has no data).
    fn columns(&mut self, stop: Option<&str>) -> Option<Vec<(String, Option<String>)>> {
        let mut out = Vec::new();
        loop {
            if self.text.is_empty() || stop.is_some_and(|s| self.text.starts_with(s)) {
                return Some(out);
            }
            if self.text.starts_with("(no-tuple-data)") {
                return None;
            }
            let name = self.identifier()?;
            // The type's name may itself hold brackets (`integer[]`): it ends at the first "]:".
            let (_, after) = self.text.strip_prefix('[')?.split_once("]:")?;
            self.text = after;
            let value = if let Some(rest) = self.text.strip_prefix('\'') {
                let (value, after) = quoted(rest, '\'')?;
                self.text = after;
                Some(value)
            } else if let Some(rest) = self.text.strip_prefix("B'") {
                let (value, after) = quoted(rest, '\'')?;
                self.text = after;
                Some(value)
            } else {
                let end = self.text.find(' ').unwrap_or(self.text.len());
                let (bare, after) = self.text.split_at(end);
                self.text = after;
                match bare {
                    "null" | "unchanged-toast-datum" => None,
                    "true" => Some("true".into()),
                    "false" => Some("false".into()),
                    number => Some(number.to_owned()),
                }
            };
            out.push((name, value));
            self.eat(" ");
        }
    }
}

/// The text up to the closing `quote` (a doubled quote is one), and what follows it.
fn quoted(text: &str, quote: char) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c == quote {
            if chars.peek().is_some_and(|(_, next)| *next == quote) {
                chars.next();
                value.push(quote);
                continue;
            }
            return Some((value, &text[at + c.len_utf8()..]));
        }
        value.push(c);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::scope::Column;
    use super::*;

    fn column(name: &str) -> Column {
        Column { name: name.into(), type_sql: "text".into(), hash_function: None, numeric: false }
    }

    fn spec(schema: &str, name: &str, key: &[&str]) -> TableSpec {
        TableSpec {
            schema: schema.into(),
            name: name.into(),
            partitioned: false,
            columns: key.iter().map(|k| column(k)).collect(),
            key: key.iter().map(|k| column(k)).collect(),
            estimated_rows: 0.0,
        }
    }

    fn decode(lines: &[&str], tables: &[TableSpec]) -> HashMap<String, Recheck> {
        let by_name: HashMap<String, &TableSpec> = tables.iter().map(|t| (t.display_name(), t)).collect();
        let roots = HashMap::from([(("public".to_string(), "m_2024".to_string()), "public.m".to_string())]);
        let mut changed = HashMap::new();
        for line in lines {
            note(&mut changed, line, &by_name, &roots);
        }
        changed
    }

    fn keys(list: &[&[&str]]) -> Recheck {
        Recheck::Keys(list.iter().map(|k| k.iter().map(|v| v.to_string()).collect()).collect())
    }

    #[test]
    fn test_decoding_lines_name_the_changed_keys_old_and_new() {
        let odd = spec("public", "Odd \"t\"", &["a", "b c"]);
        let changed = decode(
            &[
                r#"table public."Odd ""t""": INSERT: a[integer]:1 "b c"[text]:'x''y z' d[text]:'q'"#,
                r#"table public."Odd ""t""": UPDATE: old-key: a[integer]:1 "b c"[text]:'x''y z' new-tuple: a[integer]:2 "b c"[text]:'x''y z' d[text]:null"#,
                r#"table public."Odd ""t""": DELETE: a[integer]:7 "b c"[text]:'w'"#,
                "BEGIN",
                "COMMIT",
            ],
            &[odd],
        );
        assert_eq!(changed["public.Odd \"t\""], keys(&[&["1", "x'y z"], &["2", "x'y z"], &["7", "w"]]));
    }

    #[test]
    fn a_change_of_a_table_outside_the_scope_makes_it_whole() {
        let known = spec("public", "known", &["id"]);
        let changed = decode(&["table public.gone: UPDATE: id[integer]:3 v[text]:'x'"], &[known]);
        assert!(matches!(changed["public.gone"], Recheck::Whole(_)), "{changed:?}");
    }

    #[test]
    fn truncates_unreadable_lines_and_partitions_are_handled() {
        let tables = [spec("public", "p", &["id"]), spec("public", "m", &["id"]), spec("public", "q", &["id"])];
        let changed = decode(
            &[
                "table public.p, public.q: TRUNCATE: (no-flags)",
                "table public.m_2024: UPDATE: id[integer]:5 tags[text[]]:'{a,b}'",
                "table public.q: DELETE: (no-tuple-data)",
            ],
            &tables,
        );
        assert!(matches!(changed["public.p"], Recheck::Whole(_)));
        assert!(matches!(changed["public.q"], Recheck::Whole(_)));
        assert_eq!(changed["public.m"], keys(&[&["5"]]));
        let unreadable = decode(&["table ???"], &tables);
        assert!(matches!(unreadable[""], Recheck::Whole(_)));
    }

    #[test]
    fn the_record_round_trips_names_keys_and_values_with_any_characters() {
        let verified = BTreeMap::from([("public.a b\nc".to_string(), 3), ("s.t".to_string(), 0)]);
        let record = Record {
            target_tracked: true,
            verified: verified.clone(),
            carried: BTreeMap::from([
                ("public.k:1 \n".to_string(), keys(&[&["1", "x:y\nz"], &["", "3:"]])),
                ("public.w".to_string(), Recheck::Whole(CARRIED_WHOLE)),
            ]),
        };
        assert_eq!(parse_record(&encode(&record)), Some(record));
        // What an older milink wrote still reads.
        let mut v1 = "v1 target=0\n".to_string();
        for (name, rows) in &verified {
            v1.push_str(&format!("{rows} {}:{name}\n", name.len()));
        }
        assert_eq!(parse_record(&v1), Some(Record { target_tracked: false, verified, carried: BTreeMap::new() }));
        assert_eq!(parse_record("v3 target=1\n"), None);
        assert_eq!(parse_record("v2 target=1\nK 3:abc 2 1:x\n"), None, "a truncated key is refused, not half-read");
    }

    #[test]
    fn carried_keys_join_the_streams_keys_and_whole_wins() {
        let mut changed = HashMap::from([("a".to_string(), keys(&[&["1"]])), ("b".to_string(), Recheck::Whole("no key"))]);
        merge(
            &mut changed,
            BTreeMap::from([
                ("a".to_string(), keys(&[&["2"]])),
                ("b".to_string(), keys(&[&["3"]])),
                ("c".to_string(), Recheck::Whole(CARRIED_WHOLE)),
            ]),
        );
        assert_eq!(changed["a"], keys(&[&["1"], &["2"]]));
        assert_eq!(changed["b"], Recheck::Whole("no key"));
        assert_eq!(changed["c"], Recheck::Whole(CARRIED_WHOLE));
    }
}
