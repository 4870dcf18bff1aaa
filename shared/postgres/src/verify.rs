//! Content verification: are the target's rows the source's rows? On demand while the link syncs
//! ([`verify`]) and inside the cutover ([`compare_static`], called by `finalize` after the fence and drain).
//!
//! **What is compared.** Scope first (`scope`): every permanent user table of the source must be in the
//! link's publication and on the target with the same column names and types, and the target must have no
//! extra table; each violation is a `Difference`, so a table created on the source after the link can
//! never let a cutover pass. Then content, per table: a table with a key is compared whole first (one
//! checksum per side), and cut only where it differs: when both sides are static, and while the link
//! syncs whenever the rows its lag can make differ are named by a stream (`moved`, up to 10 M rows: see
//! Consistency); otherwise, and to narrow a difference, the primary key (or replica identity index) cuts
//! the table into chunks of ~50k rows (~5k for a single integer key without tracking: `chunks::plan`),
//! boundaries computed once on the source (`chunks`); per chunk both sides compute `count(*)` and
//! `sum(hash of the row)` (`sql`), with the columns listed by name so
//! physical column order does not matter, and identical session settings on both sides (UTC, ISO dates,
//! exact floats, hex bytea) so text forms match. Each value is hashed by its type's own hash function
//! (values equal by their type's equality hash alike, so e.g. numeric `1.0` and `1.00` are equal), a
//! type without one through its text, and the column hashes are combined per row (`sql::Hashing`). A chunk that differs
//! is halved by key until small, then compared row by row; the differing keys are listed (at most
//! `MAX_LISTED_KEYS` per table, the ranges and counts are always reported). A table without a key
//! (REPLICA IDENTITY FULL) is one chunk and differs as a whole. A partitioned table is read through its
//! parent without ONLY (its key ranges span every partition), so it is one entry of the report.
//!
//! **Consistency.** In `finalize` both sides are static (source fenced, link drained), so one read each,
//! at once, is exact. While the link syncs the sides are at different positions. A whole table is read
//! in two snapshots taken at once (`read::unmatched`), with a stream that began before both (a temporary
//! copy of the link's slot on demand, the tracking slots before the fence) naming every key a commit
//! held by one snapshot and not the other can have changed: the whole checksum minus those rows' hashes
//! proves every other row equal, and those rows are compared by key (`chunks::compare_whole_live`).
//! Everything else reads *matched snapshots* (`read::matched`): a REPEATABLE READ snapshot on the source whose WAL insert
//! position L is noted; the target's replication origin is polled until its apply worker has committed
//! L (this moves at each applied commit, not at the slot's flush feedback, so the wait is the link's lag
//! and the target's snapshot lands at most one poll past L); then a REPEATABLE READ snapshot on the
//! target, and both read at leisure. A chunk that still differs is compared again in fresh matched
//! snapshots; if it differs again it is narrowed to keys and each key settled (`narrow`): read again in
//! matched snapshots, then once more on the source; a target row equal to either source read was merely
//! lagging, one that differs from a source row unchanged across both reads is a real difference. So
//! replication lag is never reported as a difference. What keeps changing on every read is read once
//! more with the source's rows held `FOR SHARE` while the target catches up (`read::locked`); what even
//! that cannot settle (a lock or the link not had in time, too many such rows) is *unsettled*: the
//! verification is then not complete, and says which tables (the cutover's verification settles them,
//! the source being fenced). Tables still being seeded
//! are skipped, which also makes it incomplete. Large objects and sequences are not carried while the
//! link syncs, so only `finalize` looks at them.
//!
//! **Detection strength.** A row's hash is 64 bits (PostgreSQL's own `hash*extended` functions, seeded
//! per column, combined and mixed again by `hashint8extended`); a chunk's checksum is the exact (numeric)
//! sum of its rows' hashes plus the row count. A changed row goes unnoticed only if the hash deltas of
//! the changed rows of one chunk sum to exactly zero: about 2^-64 for accidental changes. These hashes
//! are not cryptographic: someone able to write chosen rows could craft a collision on purpose; the
//! verification guards against lost, stale and stray writes, not against an adversary (VDiff's RFC for
//! SHA-256 rows pays for that). Values equal by their type's equality hash alike (`1.0` and `1.00`).
//!
//! **The cutover's write-downtime window.** Before the fence (`before_fence`, called by the engine's
//! `prepare_cutover` while the source still takes writes) every table is verified in full as above,
//! after logical slots (`test_decoding`) were created on both servers (`track`). A table (compared whole)
//! or a chunk that differs there only at keys those slots name as changed since (rows that moved between
//! the two snapshots under load) is equal for this verification: checksums without those keys' rows, in
//! the same snapshots, prove the rest (`chunks::compare_whole_live`, `chunks::excuse`), and the changed
//! keys are compared later. Its outcome,
//! the tables found equal, is written into the source's WAL. A difference it proves refuses the cutover
//! there, before anything is fenced. Then catch-up rounds (`catch_up`) take the streams, compare the keys
//! changed during the verification in matched snapshots, and write what they could not prove into a new
//! record, until a round is short. After the fence the source's stream is read during the drain, and
//! after the drain `compare_static` reads what is left of both streams: the keys changed on the source
//! since the last round, and the rows the target wrote itself (`only-local`: an application writing to
//! the target during sync). Only those keys and the carried ones are compared (key lookups on both
//! sides), plus whole tables that were truncated, have no key, or were not found equal before the fence.
//! So what lies in the window grows with the writes since the last round, not with the data; without
//! that verification (it failed, waited more than 30 s for the link or 10 s for a lock, or the
//! target refused a slot) the window compares every table in full, as safe and slower, and the report says why
//! (`Verification::window`).
//!
//! **Cost.** A table compared whole is one parallel sequential scan per side (with JIT), both sides at
//! once, plus key lookups of the rows the stream names (a few thousand under the benchmark's load). Per
//! row both sides hash every column (about 1.5–1.8× a `count(*)` of the same rows on an idle server, per
//! side), so on one machine running both servers the floor is near 2–2.5× `count(*)`; measured with
//! `cargo bench -p milink-e2e --bench pg_verify` (on demand under load at pgbench scale 50: 2.9× the
//! median `count(*)` in two runs, rounds 2.3–3.3×). Measured by hand at scale 50, idle, one side: `count(*)` 160–215 ms, the whole table's
//! checksum 287–356 ms, the grouped checksum of 1,001 chunks 480–507 ms. Chunked batches: an integer key's
//! chunks are summed by one grouped statement per side (`sql::grouped_checksum`), up to 10 M rows per pair
//! of matched snapshots; other keys read 8 chunks per pair.
mod catch_up;
mod chunks;
mod moved;
mod narrow;
mod read;
mod scope;
mod sql;
mod track;

use crate::connect::{Server, Session};
use chunks::{Batch, ChunkOutcome};
use milink_core::migration::{Position, TableCount, Verification, VerifyMethod, WindowCheck};
use milink_core::ports::LinkPlan;
use milink_core::EngineError;
use scope::TableSpec;
use sql::{Hashing, KeyValues};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use track::{Recheck, Tracked};
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;

/// Session pairs reading in parallel (each a source and a target connection).
const WORKERS: usize = 3;
/// Chunks per source snapshot while the link syncs (one wait for the link per batch).
const LIVE_BATCH: usize = 8;
/// Rows per pair of matched snapshots for a single integer key, whose chunks one grouped scan sums
/// (`sql::grouped_checksum`): 2,000 chunks of ~5,000 rows, or 200 of ~50,000 (`chunks::plan`).
const LIVE_GROUPED_ROWS: usize = 10_000_000;
/// The largest table (estimated rows) compared whole while the link syncs, when the rows that can differ
/// between its two snapshots are named (`moved`, the tracking slots): a bigger one would hold both
/// snapshots open for as long as its scan, and the stream of keys to name grow with it.
const LIVE_WHOLE_ROWS: f64 = 10_000_000.0;

/// One source and one target session, with the verification's settings.
pub(super) struct Pair {
    src: Session,
    tgt: Session,
    /// Verifying before the fence: a link that does not apply a position within 30 s, or a lock held 10 s,
    /// ends it (`read::matched`, the sessions' lock_timeout); finalize then compares everything.
    before_fence: bool,
}

/// What every worker shares.
pub(super) struct Context {
    hashing: Hashing,
    /// The link's slot while the link syncs (live comparison); None when both sides are static.
    slot: Option<String>,
    /// Keys listed so far, per table.
    listed: Vec<AtomicUsize>,
    /// Candidate keys settled so far, per table (live only).
    candidates: Vec<AtomicUsize>,
    /// The verification before the fence, whose tracking slots name every key changed since it began: a
    /// chunk that differs only at such keys is equal for it (`chunks::excuse`); the catch-up rounds and
    /// the window compare those keys again.
    tracked: Option<Tracking>,
    /// On demand while the link syncs: the stream naming the rows that can differ between a whole table's
    /// two snapshots, so it is compared by one checksum per side (`moved`); None when the source has none.
    moved: Option<moved::Moved>,
    /// The source, for a session of its own where one is needed (`read::locked`'s flush).
    source: Server,
}

/// Where to read the tracking streams from (sessions of their own, outside the matched snapshots).
pub(super) struct Tracking {
    link: String,
    source: Server,
    target: Server,
    database: String,
    /// A slot serves one reader at a time: the workers take turns.
    reading: tokio::sync::Mutex<()>,
}

async fn open_pair(source: &Server, target: &Server, database: &str, before_fence: bool) -> Result<Pair, EngineError> {
    let (src, tgt) = tokio::try_join!(source.connect(Some(database)), target.connect(Some(database)))?;
    let settings = match before_fence {
        // Its own commits (the tracking record) never wait for the link during the hold (`cutover::hold`).
        true => format!("{}; SET lock_timeout = '{}s'; SET synchronous_commit = local", sql::SESSION_SETTINGS, BEFORE_FENCE_LOCK_WAIT.as_secs()),
        false => sql::SESSION_SETTINGS.to_owned(),
    };
    tokio::try_join!(
        src.run("setting the verification's session settings", &settings),
        tgt.run("setting the verification's session settings", &settings)
    )?;
    Ok(Pair { src, tgt, before_fence })
}

/// How long the verification before the fence waits for a lock, and for the link to apply a position,
/// before giving up (the cutover then goes on and compares everything inside its window). A lock held 10 s
/// is the user's, and the cutover must not queue behind it. The link gets longer: waiting there costs no
/// write downtime, while giving up moves a full comparison into the window; on a busy 2-core CI machine an
/// idle database's link once took over 10 s to confirm a position. A link that cannot apply at all (its
/// target blocked) still holds the cutover request at most that long before the fence.
pub(super) const BEFORE_FENCE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// See [`BEFORE_FENCE_LOCK_WAIT`].
pub(super) const BEFORE_FENCE_LINK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// On demand while the link syncs.
pub(crate) async fn verify(plan: &LinkPlan) -> Result<Verification, EngineError> {
    Ok(compare(plan, Some(plan.link_name()), false, false).await?.0)
}

/// Before the fence, while the link syncs: starts tracking changes (`track`), verifies every table in
/// full (whole tables, or chunks at matched positions: `chunks`), and records which tables it found equal, so the cutover's comparison after
/// the fence ([`compare_static`]) re-reads only what changed since.
pub(crate) async fn before_fence(plan: &LinkPlan) -> Result<Verification, EngineError> {
    let (source, target) = (Server::new("source", &plan.source)?, Server::new("target", &plan.target)?);
    let pair = open_pair(&source, &target, plan.database.as_str(), true).await?;
    let link = plan.link_name();
    forget_taken(&link); // an earlier attempt's parts belong to slots `start` makes again
    // A hold left by a crashed attempt: the records below must not wait for a link that may not stream.
    crate::cutover::hold::release(plan).await;
    let untracked_target = track::start(&pair.src, &pair.tgt, &link).await?;
    let (verification, unsettled, fingerprints) = compare(plan, Some(link.clone()), true, false).await?;
    let verified: BTreeMap<String, u64> = verification
        .tables
        .iter()
        .filter(|t| !t.differs() && !unsettled.contains(&t.table))
        .filter_map(|t| Some((fingerprints.get(&t.table)?.clone(), t.source_rows)))
        .collect();
    let equal = verified.len();
    let record = track::Record { target_tracked: untracked_target.is_none(), verified, carried: BTreeMap::new() };
    track::record(&pair.src, &link, &record).await?;
    tracing::info!(
        database = plan.database.as_str(),
        tables = verification.tables.len(),
        equal,
        rows = verification.rows_compared,
        "verified before the fence"
    );
    if verification.proves_a_difference() {
        // The cutover is refused before the fence: nothing for the window to track.
        track::stop(&pair.src, Some(&pair.tgt), &link).await?;
        return Ok(verification);
    }
    // From here to the fence the source's commits wait for the link (`cutover::hold`): the rounds see
    // only what the link can apply, and the fence finds the target caught up.
    crate::cutover::hold::engage(plan).await;
    if untracked_target.is_none() {
        catch_up::rounds(plan, &source, &target, &pair).await;
        take_before_fence(plan, &pair).await;
    }
    Ok(verification)
}

/// How rows are hashed: each column by its type's hash function where both servers have them (11+).
async fn hashing(src: &Session, tgt: &Session) -> Result<Hashing, EngineError> {
    Ok(match src.version_num().await?.min(tgt.version_num().await?) >= 110_000 {
        true => Hashing::Columns,
        false => Hashing::Text,
    })
}

/// What the cutover consumed of the tracking streams in this process, kept for the window: the passes
/// just before the fence ([`take_before_fence`]) and the source's stream read while the drain waits for
/// the target (the source is fenced, so its stream up to the fence is complete). The window then decodes
/// only what is left, usually little. Kept until the cutover ends (a second finalize reads it again); a
/// restart loses it and the window then finds no record and compares everything: slower, never less.
#[derive(Default)]
struct Kept {
    before_fence: track::Taken,
    drain: Option<Taken>,
    /// Made ready during the drain for the window's comparison; taken by its first use.
    ready: Option<Ready>,
}

enum Taken {
    Running(tokio::task::JoinHandle<(Option<track::SourcePart>, Option<Ready>)>),
    Done(Option<track::SourcePart>),
}

/// What the window needs before it compares, made ready while the drain waits: its first pair of
/// sessions, the scope and the hashing (measured: opening the pair and reading the scope took 30-45 ms
/// of the window). The window still reads the catalog again, beside the streams, and uses this scope only
/// if the catalog is unchanged: DDL on the target during the drain (or by a superuser past the fence) must
/// not escape.
struct Ready {
    pair: Pair,
    catalog: scope::Catalog,
    scope: scope::Scope,
    hashing: Hashing,
}

fn taken() -> &'static Mutex<std::collections::HashMap<String, Kept>> {
    static TAKEN: std::sync::OnceLock<Mutex<std::collections::HashMap<String, Kept>>> = std::sync::OnceLock::new();
    TAKEN.get_or_init(Default::default)
}

/// Passes that consume both streams without comparing, between the last catch-up round and the fence:
/// each decodes what the application wrote during the one before, so the window's share shrinks to what
/// is written during the last pass (tens of milliseconds under the synchronous hold). At most this many.
const PASSES_BEFORE_FENCE: usize = 3;
/// A pass that decoded fewer changes than this ends the passes.
const SMALL_PASS: u64 = 300;

async fn take_before_fence(plan: &LinkPlan, pair: &Pair) {
    let link = plan.link_name();
    let tables = match scope::scope(&pair.src, &pair.tgt, &link).await {
        Ok(scope) => scope.tables,
        Err(_) => return,
    };
    for _ in 0..PASSES_BEFORE_FENCE {
        let started = std::time::Instant::now();
        tokio::join!(track::log_running_transactions(&pair.src, &link), track::log_running_transactions(&pair.tgt, &link));
        match track::take_both(&pair.src, &pair.tgt, &link, &tables).await {
            Ok(Some((source, target))) => {
                let decoded = source.decoded() + target.decoded();
                tracing::info!(decoded, ms = started.elapsed().as_millis() as u64, "tracking streams read before the fence");
                let mut kept = taken().lock().unwrap_or_else(|p| p.into_inner());
                let entry = kept.entry(link.clone()).or_default();
                entry.before_fence.source.push(source);
                entry.before_fence.target.push(target);
                if decoded < SMALL_PASS {
                    return;
                }
            }
            Ok(None) => return,
            Err(error) => {
                // Consumed or not, the window stays right: it trusts kept parts only while the slots are
                // where the last kept part left them (`track::read`).
                tracing::warn!(error = %error.message, "could not read the tracking streams before the fence; the window reads them");
                return;
            }
        }
    }
}

/// Starts reading the source's tracking stream (after the fence, during the drain) and making the
/// window's [`Ready`]. Never an error: a failure only leaves both to the window.
pub(crate) fn take_during_drain(plan: &LinkPlan) {
    let plan = plan.clone();
    let link = plan.link_name();
    let task = tokio::spawn(async move {
        let read = async {
            let started = std::time::Instant::now();
            let (source, target) = (Server::new("source", &plan.source)?, Server::new("target", &plan.target)?);
            let pair = open_pair(&source, &target, plan.database.as_str(), false).await?;
            let link = plan.link_name();
            let (catalog, hashing) = tokio::try_join!(scope::catalog(&pair.src, &pair.tgt, &link), hashing(&pair.src, &pair.tgt))?;
            let scope = scope::of(&pair.src, &catalog).await?;
            let scoped_ms = started.elapsed().as_millis() as u64;
            let part = track::take_source(&pair.src, &link, &scope.tables).await?;
            let decoded = part.as_ref().map_or(0, |p| p.decoded());
            tracing::info!(decoded, scoped_ms, ms = started.elapsed().as_millis() as u64, "read the source's changes during the drain");
            Ok::<_, EngineError>((part, Ready { pair, catalog, scope, hashing }))
        };
        match read.await {
            Ok((part, ready)) => (part, Some(ready)),
            Err(error) => {
                tracing::warn!(error = %error.message, "could not read the source's changes during the drain; the window reads them");
                (None, None)
            }
        }
    });
    taken().lock().unwrap_or_else(|p| p.into_inner()).entry(link).or_default().drain = Some(Taken::Running(task));
}

/// Waits for the drain's reading if it still runs, and keeps what it made.
async fn settle_drain(link: &str) {
    let running = {
        let mut kept = taken().lock().unwrap_or_else(|p| p.into_inner());
        match kept.get_mut(link).map(|kept| &mut kept.drain) {
            Some(drain @ Some(Taken::Running(_))) => drain.take(),
            _ => None,
        }
    };
    if let Some(Taken::Running(task)) = running {
        let (part, ready) = task.await.unwrap_or((None, None));
        // Forgotten meanwhile (the cutover ended): nothing to keep.
        if let Some(entry) = taken().lock().unwrap_or_else(|p| p.into_inner()).get_mut(link) {
            entry.drain = Some(Taken::Done(part));
            entry.ready = ready;
        }
    }
}

/// The window's [`Ready`], if the drain made one (taken: a second comparison opens its own).
async fn take_ready(link: &str) -> Option<Ready> {
    settle_drain(link).await;
    let ready = taken().lock().unwrap_or_else(|p| p.into_inner()).get_mut(link).and_then(|kept| kept.ready.take());
    ready.filter(|r| !r.pair.src.client().is_closed() && !r.pair.tgt.client().is_closed())
}

/// Everything kept for the window, in stream order (the drain's reading awaited if still running).
async fn taken_for_window(link: &str) -> track::Taken {
    settle_drain(link).await;
    let mut kept = taken().lock().unwrap_or_else(|p| p.into_inner());
    let entry = kept.entry(link.to_owned()).or_default();
    let part = match &entry.drain {
        Some(Taken::Done(part)) => part.clone(),
        _ => None,
    };
    let mut all = entry.before_fence.clone();
    all.source.extend(part);
    all
}

/// Forgets what was kept for the window (the cutover ended either way, or a new one starts).
pub(crate) fn forget_taken(link: &str) {
    if let Some(Kept { drain: Some(Taken::Running(task)), .. }) = taken().lock().unwrap_or_else(|p| p.into_inner()).remove(link) {
        task.abort();
    }
}

/// Drops what `before_fence` left (after the cutover's comparison, on unfence, on drop_link).
pub(crate) async fn stop_tracking(plan: &LinkPlan) -> Result<(), EngineError> {
    let source = Server::new("source", &plan.source)?;
    let src = source.connect(Some(plan.database.as_str())).await?;
    let tgt = Server::new("target", &plan.target)?.connect(Some(plan.database.as_str())).await.ok();
    track::stop(&src, tgt.as_ref(), &plan.link_name()).await
}

/// Both sides static (after the fence and the drain): only what changed since the verification before
/// the fence when it was tracked, everything otherwise.
pub(crate) async fn compare_static(plan: &LinkPlan) -> Result<Verification, EngineError> {
    Ok(compare(plan, None, false, true).await?.0)
}

/// Key lookups per statement when re-comparing changed keys.
const KEYS_PER_BATCH: usize = 1_000;

/// The verification, the tables that did not settle, and each compared table's [`track::fingerprint`];
/// with `stop_tracking_after`, the tracking slots are dropped once it has read them (the cutover's).
async fn compare(
    plan: &LinkPlan,
    slot: Option<String>,
    before_fence: bool,
    stop_tracking_after: bool,
) -> Result<(Verification, BTreeSet<String>, BTreeMap<String, String>), EngineError> {
    let started_at = chrono::Utc::now();
    let clock = std::time::Instant::now();
    let source = Server::new("source", &plan.source)?;
    let target = Server::new("target", &plan.target)?;
    let database = plan.database.as_str();
    let link = plan.link_name();
    // The window's first pair and scope were made ready during the drain, when it could.
    let ready = match (&slot, before_fence) {
        (None, false) => take_ready(&link).await,
        _ => None,
    };
    let (first, ready) = match ready {
        Some(Ready { pair, catalog, scope, hashing }) => (pair, Some((catalog, scope, hashing))),
        None => (open_pair(&source, &target, database, before_fence).await?, None),
    };
    let connected_ms = clock.elapsed().as_millis() as u64;
    let mut moved = None;
    // Independent reads, pipelined on the two sessions (inside the window, every round trip counts).
    let (scope, hashing, seeding, start_positions, tracked) = match ready {
        // The streams are read with the scope made ready while the catalog is read again (doc of
        // `Ready`); when the catalog changed, the scope is made again and the streams read again with it.
        Some((ready_catalog, ready_scope, hashing)) => {
            let kept = taken_for_window(&link).await;
            let early = track::changes(&first.src, &first.tgt, &link, &ready_scope.tables, kept.clone());
            let (catalog, start_positions, early) = tokio::try_join!(scope::catalog(&first.src, &first.tgt, &link), positions(&first.src, &link), early)?;
            let (scope, tracked) = match catalog == ready_catalog {
                true => (ready_scope, early),
                false => {
                    let scope = scope::of(&first.src, &catalog).await?;
                    let tracked = track::changes(&first.src, &first.tgt, &link, &scope.tables, kept).await?;
                    (scope, tracked)
                }
            };
            (scope, hashing, BTreeSet::new(), start_positions, Some(tracked))
        }
        None => {
            let seeding = async {
                match slot {
                    Some(_) => still_seeding(&first.tgt, &link).await,
                    None => Ok(BTreeSet::new()),
                }
            };
            // Created before any snapshot of the verification is taken (see `moved`).
            let moving = async {
                match slot.is_some() && !before_fence {
                    true => Ok(moved::start(&source, database, &link).await),
                    false => Ok(None),
                }
            };
            let (scope, hashing, seeding, start_positions, moving) = tokio::try_join!(
                scope::scope(&first.src, &first.tgt, &link),
                hashing(&first.src, &first.tgt),
                seeding,
                positions(&first.src, &link),
                moving
            )?;
            moved = moving;
            (scope, hashing, seeding, start_positions, None)
        }
    };
    let scoped_ms = clock.elapsed().as_millis() as u64;
    let tables: Vec<TableSpec> = scope.tables.into_iter().filter(|t| !seeding.contains(&t.display_name())).collect();
    // Before the fence a whole table needs the target's stream too (its own writes): without it, a
    // table that differs under load would be read whole and then again in chunks.
    let target_tracked = before_fence && track::tracking_slot(&first.tgt, &link).await?;
    let tracked = match (slot.as_ref(), tracked) {
        (Some(_), _) => None,
        (None, Some(tracked)) => Some(tracked),
        (None, None) => Some(track::changes(&first.src, &first.tgt, &link, &tables, taken_for_window(&link).await).await?),
    };
    let changes = match &tracked {
        Some(Tracked::Changes(changes)) => Some(changes),
        _ => None,
    };
    let planned_ms = clock.elapsed().as_millis() as u64;
    let mut window = tracked.as_ref().map(|t| WindowCheck {
        changes: changes.map_or(0, |c| c.decoded),
        full_reason: match t {
            Tracked::Untracked(why) => Some(why.clone()),
            Tracked::Changes(_) => None,
        },
        ..WindowCheck::default()
    });
    let mut queue = VecDeque::new();
    let mut incremental = BTreeMap::new();
    for (index, table) in tables.iter().enumerate() {
        let batch_size = if sql::integer_key(table) { LIVE_GROUPED_ROWS / chunks::rows_per_chunk(table, !before_fence) } else { LIVE_BATCH };
        let whole = Batch { table: index, first_chunk: 0, ranges: vec![Default::default()], whole: true, keys: None };
        if slot.is_none() {
            match changes.map(|c| c.recheck(table)) {
                None => queue.push_back(whole),
                Some(Some(Recheck::Whole(why))) => {
                    if let Some(window) = window.as_mut() {
                        window.whole_tables.push(format!("{} ({why})", table.display_name()));
                    }
                    queue.push_back(whole);
                }
                Some(recheck) => {
                    incremental.insert(index, changes.and_then(|c| c.verified.get(&track::fingerprint(table)).copied()).unwrap_or(0));
                    let keys: Vec<KeyValues> = match recheck {
                        Some(Recheck::Keys(keys)) => keys.into_iter().collect(),
                        _ => Vec::new(),
                    };
                    for (n, group) in keys.chunks(KEYS_PER_BATCH).enumerate() {
                        let keys = Some(group.to_vec());
                        queue.push_back(Batch { table: index, first_chunk: n, ranges: Vec::new(), whole: false, keys });
                    }
                }
            }
            continue;
        }
        // Whole while the link syncs when the rows that move between snapshots can be named: by the
        // temporary slot (on demand), or by the tracking slots (before the fence).
        if !table.key.is_empty() && table.estimated_rows <= LIVE_WHOLE_ROWS && (moved.is_some() || target_tracked) {
            queue.push_back(whole);
            continue;
        }
        let ranges = chunks::plan(&first.src, table, !before_fence).await?;
        for (n, group) in ranges.chunks(batch_size).enumerate() {
            queue.push_back(Batch { table: index, first_chunk: n * batch_size, ranges: group.to_vec(), whole: false, keys: None });
        }
    }
    let tracked = before_fence.then(|| Tracking {
        link: link.clone(),
        source: source.clone(),
        target: target.clone(),
        database: database.to_owned(),
        reading: tokio::sync::Mutex::new(()),
    });
    let context = Context {
        hashing,
        tracked,
        moved,
        slot,
        source: source.clone(),
        listed: tables.iter().map(|_| AtomicUsize::new(0)).collect(),
        candidates: tables.iter().map(|_| AtomicUsize::new(0)).collect(),
    };
    let outcomes = run_workers(&first, &source, &target, database, &context, &tables, queue).await?;
    let compared_ms = clock.elapsed().as_millis() as u64;
    let end_positions = positions(&first.src, &link).await?;
    if stop_tracking_after {
        track::stop(&first.src, Some(&first.tgt), &link).await?;
    }
    let (mut verification, unsettled) = assemble(&tables, outcomes, &seeding, &incremental);
    if let Some(window) = window.as_mut() {
        window.rows_compared = verification.rows_compared;
    }
    verification.window = window;
    verification.differences = scope.differences;
    verification.started_at = Some(started_at);
    verification.finished_at = Some(chrono::Utc::now());
    verification.source_position = start_positions.map(|p| Position(p.0)).or(end_positions.map(|p| Position(p.0)));
    verification.target_position = end_positions.map(|p| Position(p.1));
    tracing::info!(
        database,
        tables = verification.tables.len(),
        rows = verification.rows_compared,
        complete = verification.complete,
        clean = verification.is_clean(),
        changes = verification.window.as_ref().map(|w| w.changes),
        connected_ms,
        scoped_ms,
        planned_ms,
        compared_ms,
        took_ms = clock.elapsed().as_millis() as u64,
        "verified content"
    );
    let fingerprints = tables.iter().map(|t| (t.display_name(), track::fingerprint(t))).collect();
    Ok((verification, unsettled, fingerprints))
}

/// Compares the queue's batches with `first` and up to [`WORKERS`]` - 1` more session pairs (opened at
/// once, only as many as there are batches for).
async fn run_workers(
    first: &Pair,
    source: &Server,
    target: &Server,
    database: &str,
    context: &Context,
    tables: &[TableSpec],
    queue: VecDeque<Batch>,
) -> Result<Vec<ChunkOutcome>, EngineError> {
    let workers = WORKERS.min(queue.len()).max(1);
    let queue = Mutex::new(queue);
    let extra = futures::future::try_join_all((1..workers).map(|_| open_pair(source, target, database, first.before_fence))).await?;
    let pairs: Vec<&Pair> = std::iter::once(first).chain(extra.iter()).collect();
    let work = pairs.iter().map(|pair| async {
        let mut out = Vec::new();
        loop {
            let next = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None);
            let Some(batch) = next else { return Ok::<_, EngineError>(out) };
            // Boxed: a batch's future is large (whole tables, their fallback to chunks, descents).
            out.extend(Box::pin(chunks::compare_batch(pair, context, tables, batch)).await?);
        }
    });
    let results = futures::future::try_join_all(work).await?;
    Ok(results.into_iter().flatten().collect())
}

/// The report, and the tables that did not settle. A table in `incremental` (found equal before the
/// fence, compared key by key since) reports its rows from then, moved by the rows found only on one side.
fn assemble(
    tables: &[TableSpec],
    mut outcomes: Vec<ChunkOutcome>,
    seeding: &BTreeSet<String>,
    incremental: &BTreeMap<usize, u64>,
) -> (Verification, BTreeSet<String>) {
    outcomes.sort_by_key(|o| (o.table, o.chunk));
    let mut verification = Verification { method: VerifyMethod::Checksum, complete: true, ..Verification::default() };
    let mut unsettled: Vec<String> = Vec::new();
    for (index, table) in tables.iter().enumerate() {
        let mut count = TableCount::counted(table.display_name(), 0, 0);
        let mut reason = None;
        for outcome in outcomes.iter().filter(|o| o.table == index) {
            count.chunks += 1;
            count.source_rows += outcome.source_rows;
            count.target_rows += outcome.target_rows;
            count.differing.extend(outcome.differing.iter().cloned());
            reason = reason.or(outcome.unsettled);
        }
        if let Some(reason) = reason {
            unsettled.push(format!("{} ({reason})", table.display_name()));
        }
        verification.rows_compared += count.source_rows;
        if let Some(&before) = incremental.get(&index) {
            let moved = count.target_rows as i64 - count.source_rows as i64;
            (count.source_rows, count.target_rows) = (before, (before as i64 + moved).max(0) as u64);
        }
        verification.tables.push(count);
    }
    let mut reasons = Vec::new();
    if !unsettled.is_empty() {
        reasons.push(format!("not settled while the link syncs: {}", unsettled.join(", ")));
    }
    if !seeding.is_empty() {
        reasons.push(format!("still seeding: {}", seeding.iter().cloned().collect::<Vec<_>>().join(", ")));
    }
    if !reasons.is_empty() {
        verification.complete = false;
        verification.incomplete_reason = Some(reasons.join("; "));
    }
    let unsettled_tables = tables
        .iter()
        .enumerate()
        .filter(|(index, _)| outcomes.iter().any(|o| o.table == *index && o.unsettled.is_some()))
        .map(|(_, t)| t.display_name())
        .collect();
    (verification, unsettled_tables)
}

/// Tables whose initial copy has not finished (their rows cannot be compared yet), by root table.
async fn still_seeding(tgt: &Session, subscription: &str) -> Result<BTreeSet<String>, EngineError> {
    let rows = tgt
        .rows(
            "listing tables still being seeded",
            "SELECT DISTINCT n.nspname || '.' || c.relname
             FROM pg_subscription s JOIN pg_subscription_rel sr ON sr.srsubid = s.oid
             JOIN pg_class c ON c.oid = coalesce(pg_partition_root(sr.srrelid), sr.srrelid)
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE s.subname = $1 AND sr.srsubstate <> 'r'",
            &[&subscription],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// (source WAL position, slot's confirmed position), when the slot exists.
async fn positions(src: &Session, slot: &str) -> Result<Option<(u64, u64)>, EngineError> {
    let row = src
        .maybe_row(
            "reading positions",
            "SELECT pg_current_wal_lsn(), confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row.map(|r| {
        let lsn = |n: usize| r.get::<_, Option<tokio_postgres::types::PgLsn>>(n).map(u64::from).unwrap_or(0);
        (lsn(0), lsn(1))
    }))
}
