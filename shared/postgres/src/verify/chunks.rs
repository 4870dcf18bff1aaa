//! Cutting a table into key-ordered chunks (once, on the source, so both sides use the same boundary
//! values), and comparing a batch of chunks.
//!
//! An integer key is cut arithmetically between its min and max (two index probes, no scan); any other
//! key by a Bernoulli sample of keys, sorted, taking evenly spaced boundaries. The first and last chunks
//! are unbounded below and above, so a target row outside the source's key span still falls in a chunk.
use super::narrow::{self, Narrowed, HOT, LAG};
use super::read::{self, Sums};
use super::scope::TableSpec;
use super::sql::{self, KeyRange, KeyValues};
use super::{Context, Pair};
use crate::connect::Session;
use milink_core::migration::DifferingRange;
use milink_core::EngineError;

/// Rows per chunk the boundaries aim at.
const CHUNK_ROWS: f64 = 50_000.0;
/// The same for a single integer key when no tracking slot names the changed keys (`fine`): one grouped
/// scan sums all its chunks (`sql::grouped_checksum`) at the same cost whatever their number, and every
/// row that moves between a live verification's two snapshots makes its chunk differ and be narrowed, so
/// small chunks leave a tenth of the rows to narrow. (With tracking, each differing chunk costs a
/// statement of its own to excuse: those keep the larger chunks.)
const FINE_CHUNK_ROWS: f64 = 5_000.0;
/// Sampled keys per chunk, for non-integer keys.
const SAMPLES_PER_CHUNK: f64 = 20.0;

/// Rows per chunk the boundaries of `table` aim at (`fine`: see [`FINE_CHUNK_ROWS`]).
pub(super) fn rows_per_chunk(table: &TableSpec, fine: bool) -> usize {
    if fine && sql::integer_key(table) { FINE_CHUNK_ROWS as usize } else { CHUNK_ROWS as usize }
}

/// The chunks of a table (`fine`: see [`FINE_CHUNK_ROWS`]).
pub(super) async fn plan(src: &Session, table: &TableSpec, fine: bool) -> Result<Vec<KeyRange>, EngineError> {
    let chunks = (table.estimated_rows / rows_per_chunk(table, fine) as f64).ceil() as i64;
    if table.key.is_empty() || chunks <= 1 {
        return Ok(vec![KeyRange::default()]);
    }
    let boundaries: Vec<KeyValues> = if sql::integer_key(table) {
        let row = src.row("reading the key's bounds", &sql::integer_bounds(table), &[]).await?;
        let bounds = (row.get::<_, Option<String>>(0), row.get::<_, Option<String>>(1));
        let (Some(min), Some(max)) = (bounds.0.and_then(|v| v.parse::<i64>().ok()), bounds.1.and_then(|v| v.parse::<i64>().ok())) else {
            return Ok(vec![KeyRange::default()]);
        };
        // No more chunks than keys in the span (a chunk of width 0 cannot be cut).
        let span = i128::from(max) - i128::from(min) + 1;
        even_boundaries(min, max, i128::from(chunks).min(span) as i64).into_iter().map(|b| vec![b.to_string()]).collect()
    } else {
        let percent = (100.0 * chunks as f64 * SAMPLES_PER_CHUNK / table.estimated_rows.max(1.0)).min(100.0);
        let sample: Vec<KeyValues> =
            src.rows("sampling keys", &sql::sampled_keys(table), &[&percent]).await?.iter().map(|r| r.get(0)).collect();
        let mut picked: Vec<KeyValues> =
            (1..chunks).map(|n| (sample.len() as i64 * n / chunks) as usize).filter_map(|at| sample.get(at).cloned()).collect();
        picked.dedup();
        picked
    };
    Ok(ranges_between(boundaries))
}

/// Interior boundaries cutting `min..=max` into `chunks` spans of equal width (computed in i128: a
/// bigint key spanning the whole type does not overflow).
fn even_boundaries(min: i64, max: i64, chunks: i64) -> Vec<i64> {
    let width = (i128::from(max) - i128::from(min) + 1) / i128::from(chunks);
    if width < 1 {
        return Vec::new();
    }
    (1..chunks).map(|n| (i128::from(min) + width * i128::from(n)) as i64).collect()
}

fn ranges_between(boundaries: Vec<KeyValues>) -> Vec<KeyRange> {
    let mut ranges = Vec::with_capacity(boundaries.len() + 1);
    let mut lower = None;
    for boundary in boundaries {
        ranges.push(KeyRange { lower, upper: Some(boundary.clone()) });
        lower = Some(boundary);
    }
    ranges.push(KeyRange { lower, upper: None });
    ranges
}

/// What one chunk came to.
#[derive(Debug)]
pub(super) struct ChunkOutcome {
    pub(super) table: usize,
    pub(super) chunk: usize,
    pub(super) source_rows: u64,
    pub(super) target_rows: u64,
    pub(super) differing: Vec<DifferingRange>,
    pub(super) unsettled: Option<&'static str>,
}

/// Chunks of one table compared together (one pair of matched snapshots when live).
pub(super) struct Batch {
    pub(super) table: usize,
    pub(super) first_chunk: usize,
    pub(super) ranges: Vec<KeyRange>,
    /// The whole table as one range, cut into chunks only if it differs: when both sides are static
    /// and equal, as they should be at cutover, one sequential (parallel) scan per side is the cheapest;
    /// while the link syncs, with the rows that can differ between the snapshots named
    /// (`compare_whole_live`).
    pub(super) whole: bool,
    /// Instead of ranges, these keys: the keys changed since the verification before the fence (inside
    /// the cutover's window, static; in a catch-up round before the fence, live).
    pub(super) keys: Option<Vec<KeyValues>>,
}

/// Rounds of re-reading a whole keyless table that differs while the source keeps changing.
const KEYLESS_ROUNDS: usize = 5;

pub(super) async fn compare_batch(pair: &Pair, context: &Context, tables: &[TableSpec], batch: Batch) -> Result<Vec<ChunkOutcome>, EngineError> {
    let table = &tables[batch.table];
    let keyed = !table.key.is_empty();
    let outcome = |chunk: usize, source_rows: u64, target_rows: u64| ChunkOutcome {
        table: batch.table,
        chunk: batch.first_chunk + chunk,
        source_rows,
        target_rows,
        differing: Vec::new(),
        unsettled: None,
    };
    if let Some(keys) = &batch.keys {
        // Static sides read at once; while the link syncs (a catch-up round before the fence), in matched
        // snapshots, and a key that differs there is not narrowed further: the window compares it again.
        let compared = match &context.slot {
            None => Some(compare_keys(pair, context, batch.table, table, keys).await?),
            Some(slot) => read::matched(pair, slot, compare_keys(pair, context, batch.table, table, keys)).await?,
        };
        let Some((source_rows, target_rows, differing)) = compared else {
            return Ok(vec![ChunkOutcome { unsettled: Some(LAG), ..outcome(0, 0, 0) }]);
        };
        return Ok(vec![ChunkOutcome { differing, ..outcome(0, source_rows, target_rows) }]);
    }
    if batch.whole && keyed && context.slot.is_some() {
        // Boxed: its future is large (both sides' work, the fallback to chunks).
        return Box::pin(compare_whole_live(pair, context, tables, batch)).await;
    }
    // Checksums, and the descent into every differing chunk, in one pair of matched snapshots when live.
    let work = async {
        let (sources, mut targets) = narrow::checksums(pair, context, table, &batch.ranges).await?;
        if keyed && !batch.whole {
            excuse(pair, context, table, &batch.ranges, &sources, &mut targets).await?;
        }
        let mut found = Vec::new();
        for (n, range) in batch.ranges.iter().enumerate() {
            if sources[n] != targets[n] && keyed && !batch.whole {
                let sides = (sources[n].clone(), targets[n].clone());
                found.push((n, narrow::descend(pair, context, batch.table, table, range.clone(), sides, 0).await?));
            }
        }
        Ok((sources, targets, found))
    };
    let read = match &context.slot {
        None => Some(work.await?),
        Some(slot) => read::matched(pair, slot, work).await?,
    };
    let Some((sources, targets, found)) = read else {
        return Ok((0..batch.ranges.len()).map(|n| ChunkOutcome { unsettled: Some(LAG), ..outcome(n, 0, 0) }).collect());
    };
    if batch.whole && keyed && sources[0] != targets[0] {
        let chunks = Batch { table: batch.table, first_chunk: 0, ranges: plan(&pair.src, table, context.tracked.is_none()).await?, whole: false, keys: None };
        return Box::pin(compare_batch(pair, context, tables, chunks)).await;
    }
    let mut out = Vec::with_capacity(batch.ranges.len());
    for (n, (source, target)) in sources.iter().zip(&targets).enumerate() {
        if source == target {
            out.push(outcome(n, source.rows, target.rows));
        } else if !keyed {
            let found = keyless(pair, context, table, source.clone(), target.clone(), context.slot.is_none()).await?;
            out.push(ChunkOutcome { differing: found.ranges, unsettled: found.unsettled, ..outcome(n, source.rows, target.rows) });
        }
    }
    let (chunks, found): (Vec<usize>, Vec<Vec<narrow::Found>>) = found.into_iter().unzip();
    for (n, narrowed) in chunks.into_iter().zip(narrow::conclude(pair, context, batch.table, table, found, None, None).await?) {
        let (source, target) = (&sources[n], &targets[n]);
        let target_rows = narrowed.row_delta.map_or(target.rows, |delta| (source.rows as i64 + delta).max(0) as u64);
        out.push(ChunkOutcome { differing: narrowed.ranges, unsettled: narrowed.unsettled, ..outcome(n, source.rows, target_rows) });
    }
    out.sort_by_key(|o| o.chunk);
    Ok(out)
}

/// Keys changed in one chunk past which the chunk is narrowed instead of excused.
const MAX_EXCUSED_KEYS: usize = 20_000;
/// Estimated rows under which a whole table compared live takes matched snapshots (`compare_whole_live`).
const SMALL_TABLE_ROWS: f64 = 100_000.0;
/// Keys named by the stream past which a whole table compared live is cut into chunks instead of
/// compared without their rows (and candidates settled per table, at most).
const MAX_MOVED_KEYS: usize = 20_000;

/// A whole table compared while the link syncs, by one checksum per side, in two snapshots taken at once
/// and *not* matched (`read::unmatched`: no wait for the link; matched for a small table), the rows that
/// may differ between them named by a stream that began before both: the temporary copy of the link's
/// slot on demand (`moved`: from the link's confirmed position, so every commit the target had not
/// applied when either snapshot was taken), the tracking slots before the fence (once the target has
/// applied past where they began). Beside the target's checksum the stream is read up to now, and both
/// sides' rows of the keys it names are read in the same snapshots, by the same predicate. A checksum is
/// a sum of row hashes, so the whole table's minus these rows' is the checksum of every other row, on
/// each side: when those agree, every other row is equal (with the strength of any checksum here),
/// whatever the lag, and the named rows are compared by key: settled like any candidate on demand
/// (`narrow::conclude`: the source's side read early, so the link has usually passed it by then), or,
/// before the fence, left to the catch-up rounds and the window, whose streams name them (as `excuse`).
/// Otherwise (a real difference elsewhere, a stream that cannot name everything, more than
/// [`MAX_MOVED_KEYS`] keys) the table is cut into chunks, compared in matched snapshots: never less.
async fn compare_whole_live(pair: &Pair, context: &Context, tables: &[TableSpec], batch: Batch) -> Result<Vec<ChunkOutcome>, EngineError> {
    let table = &tables[batch.table];
    let whole = [KeyRange::default()];
    let outcome = |source_rows: u64, target_rows: u64| ChunkOutcome {
        table: batch.table,
        chunk: 0,
        source_rows,
        target_rows,
        differing: Vec::new(),
        unsettled: None,
    };
    let clock = std::time::Instant::now();
    let head = read::checksums(&pair.src, table, &whole, context.hashing);
    let work = async {
        let snapshots = clock.elapsed();
        // On demand, the source's rows of those keys are also read at once, outside the snapshots, for
        // settling the ones that differ without another wait for the link (`narrow::conclude`).
        let keys_and_early = async {
            let keys = moved_keys(context, tables, table).await?.filter(|keys| !keys.is_empty() && keys.len() <= MAX_MOVED_KEYS);
            let early = match (&context.moved, &keys) {
                (Some(moved), Some(keys)) => moved.rows(table, &keys.iter().cloned().collect::<Vec<_>>(), context.hashing).await,
                _ => None,
            };
            Ok((keys, early))
        };
        let (target, (keys, early)) = tokio::try_join!(read::checksums(&pair.tgt, table, &whole, context.hashing), keys_and_early)?;
        let rows = match keys {
            Some(keys) => {
                let keys: Vec<KeyValues> = keys.into_iter().collect();
                Some(tokio::try_join!(
                    read::row_hashes_by_key(&pair.src, table, &keys, context.hashing),
                    read::row_hashes_by_key(&pair.tgt, table, &keys, context.hashing)
                )?)
            }
            None => None,
        };
        Ok((target, rows, early, snapshots))
    };
    // A stream that began after the link's confirmed position (the tracking slots, a created slot) names
    // only commits after its beginning: the target must have applied past it first, or a commit it still
    // lacks could be in neither snapshot's stream (the table would then be cut into chunks: slower, never
    // less). Once it has, this costs one read of the target's applied position.
    let begins = match (&context.moved, &context.tracked) {
        (Some(moved), _) => moved.begins_at(),
        // Where the source's tracking slot began: nothing consumes it during this verification.
        (None, Some(tracking)) => super::track::confirmed(&pair.src, &tracking.link).await?,
        (None, None) => None,
    };
    if let Some(position) = begins {
        if !read::wait_for_link(pair, context.slot.as_deref().unwrap_or_default(), position).await? {
            if pair.before_fence {
                return Err(read::link_behind());
            }
            return Ok(vec![ChunkOutcome { unsettled: Some(LAG), ..outcome(0, 0) }]);
        }
    }
    // A small table takes matched snapshots: its scan is short, so not waiting for the link gains little,
    // while its rows are often the hottest (a branch updated by every transaction), and with the target
    // a lag behind every one of them would be a candidate that keeps changing through settling.
    let both = match table.estimated_rows < SMALL_TABLE_ROWS {
        true => read::matched(pair, context.slot.as_deref().unwrap_or_default(), async { tokio::try_join!(head, work) }).await?,
        false => Some(read::unmatched(pair, head, work).await?),
    };
    let Some((mut sources, (mut targets, rows, early, snapshots))) = both else {
        return Ok(vec![ChunkOutcome { unsettled: Some(LAG), ..outcome(0, 0) }]);
    };
    let (source, target) = (sources.remove(0), targets.remove(0));
    let read_ms = clock.elapsed().as_millis() as u64;
    let rest = |whole: &Sums, rows: &read::RowHashes| {
        let sum = whole.sum.parse::<i128>().ok()? - rows.iter().map(|(_, hash)| i128::from(*hash)).sum::<i128>();
        Some((whole.rows.checked_sub(rows.len() as u64)?, sum))
    };
    let moved = match rows {
        Some((on_source, on_target)) if source != target && rest(&source, &on_source).is_some_and(|r| Some(r) == rest(&target, &on_target)) => {
            Some((on_source, on_target))
        }
        _ => None,
    };
    tracing::debug!(
        table = %table.display_name(),
        snapshots_ms = snapshots.as_millis() as u64,
        read_ms,
        equal = source == target,
        moved = moved.as_ref().map(|(s, t)| s.len().max(t.len())),
        "compared a table whole"
    );
    if source == target {
        return Ok(vec![outcome(source.rows, target.rows)]);
    }
    let Some((on_source, on_target)) = moved else {
        // Cut as `verify::compare` cuts a table it does not compare whole: an integer key's chunks in
        // one grouped statement, others a few per pair of matched snapshots.
        let ranges = plan(&pair.src, table, context.tracked.is_none()).await?;
        let size = if sql::integer_key(table) { ranges.len().max(1) } else { super::LIVE_BATCH };
        let mut out = Vec::new();
        for (n, group) in ranges.chunks(size).enumerate() {
            let chunks = Batch { table: batch.table, first_chunk: n * size, ranges: group.to_vec(), whole: false, keys: None };
            out.extend(Box::pin(compare_batch(pair, context, tables, chunks)).await?);
        }
        return Ok(out);
    };
    if context.tracked.is_some() {
        return Ok(vec![outcome(source.rows, source.rows)]);
    }
    let found = vec![vec![narrow::Found::Rows(narrow::merge(on_source, on_target))]];
    // As many candidates as keys named (all may differ by the link's lag), each settled by key.
    let narrowed = narrow::conclude(pair, context, batch.table, table, found, early, Some(MAX_MOVED_KEYS)).await?.remove(0);
    let target_rows = narrowed.row_delta.map_or(target.rows, |delta| (source.rows as i64 + delta).max(0) as u64);
    Ok(vec![ChunkOutcome { differing: narrowed.ranges, unsettled: narrowed.unsettled, ..outcome(source.rows, target_rows) }])
}

/// The keys of `table` that can have moved between a live pair's snapshots (read after both were taken):
/// from the temporary slot on demand (`moved`), from the tracking slots before the fence (which also name
/// the target's own writes). None when no stream names them all.
async fn moved_keys(context: &Context, tables: &[TableSpec], table: &TableSpec) -> Result<Option<std::collections::BTreeSet<KeyValues>>, EngineError> {
    if let Some(moved) = &context.moved {
        return Ok(moved.keys(table, tables).await);
    }
    let Some(tracking) = &context.tracked else { return Ok(None) };
    let _turn = tracking.reading.lock().await;
    let (src, tgt) = tracking_sessions(tracking).await?;
    super::track::changed_keys(&src, &tgt, &tracking.link, table).await
}

/// Sessions to read the tracking streams on, with the verification's settings: `test_decoding` prints
/// key values in the reading session's DateStyle, IntervalStyle and TimeZone, and the keys read back are
/// cast under the pair's.
async fn tracking_sessions(tracking: &super::Tracking) -> Result<(crate::connect::Session, crate::connect::Session), EngineError> {
    let (src, tgt) = tokio::try_join!(
        tracking.source.connect(Some(&tracking.database)),
        tracking.target.connect(Some(&tracking.database))
    )?;
    tokio::try_join!(
        src.run("setting the verification's session settings", sql::SESSION_SETTINGS),
        tgt.run("setting the verification's session settings", sql::SESSION_SETTINGS)
    )?;
    Ok((src, tgt))
}

/// Before the fence: a chunk that differs only at keys changed since the verification's tracking began
/// is equal for this verification (its target checksum is set to the source's). Those keys are in the
/// tracking streams, so the catch-up rounds and the window compare them again; every other key of the
/// chunk has not changed on either side since, so its rows are compared here, in the same matched
/// snapshots, by checksums that leave the changed keys out. Under a write load this replaces narrowing
/// chunks that differ only because rows moved between the two snapshots (the expensive part of a live
/// verification).
async fn excuse(pair: &Pair, context: &Context, table: &TableSpec, ranges: &[KeyRange], sources: &[Sums], targets: &mut [Sums]) -> Result<(), EngineError> {
    let Some(tracking) = &context.tracked else { return Ok(()) };
    let differing: Vec<usize> = (0..ranges.len()).filter(|&n| sources[n] != targets[n]).collect();
    if differing.is_empty() {
        return Ok(());
    }
    // Read after both snapshots were taken: every change either could have seen is in the streams.
    let _turn = tracking.reading.lock().await;
    let (src, tgt) = tracking_sessions(tracking).await?;
    let Some(changed) = super::track::changed_keys(&src, &tgt, &tracking.link, table).await? else { return Ok(()) };
    for n in differing {
        let keys = sql::keys_in_range(table, &ranges[n], changed.iter());
        if keys.is_empty() || keys.len() > MAX_EXCUSED_KEYS {
            continue;
        }
        let statement = sql::checksum_excluding(table, &ranges[n], &keys, context.hashing);
        let (source, target) = tokio::try_join!(
            pair.src.row("computing a chunk checksum without the changed keys", &statement, &[]),
            pair.tgt.row("computing a chunk checksum without the changed keys", &statement, &[])
        )?;
        let sums = |row: &tokio_postgres::Row| Sums { rows: row.get::<_, i64>(0).max(0) as u64, sum: row.get(1) };
        if sums(&source) == sums(&target) {
            targets[n] = sources[n].clone();
        }
    }
    Ok(())
}

/// Both sides' rows of `keys` (static sides), compared by row hash: (source rows, target rows, the
/// differing keys). Rows are paired by the key text each side returns, never by the text looked up, so
/// a key whose text form differs from the stream's (a `char(n)` key's padding) is still compared.
async fn compare_keys(
    pair: &Pair,
    context: &Context,
    index: usize,
    table: &TableSpec,
    keys: &[KeyValues],
) -> Result<(u64, u64, Vec<DifferingRange>), EngineError> {
    let (source, target) = tokio::try_join!(
        read::rows_by_key(&pair.src, table, keys, context.hashing),
        read::rows_by_key(&pair.tgt, table, keys, context.hashing)
    )?;
    let found: std::collections::BTreeSet<&KeyValues> = source.keys().chain(target.keys()).collect();
    let entries: Vec<narrow::Entry> = found
        .into_iter()
        .map(|key| narrow::Entry { key: key.clone(), source: source.get(key).copied(), target: target.get(key).copied() })
        .collect();
    let narrowed = narrow::report(context, index, table, &entries);
    Ok((source.len() as u64, target.len() as u64, narrowed.ranges))
}

/// A table without a key differs as a whole: reported without keys once proven (static, or, live, the
/// same source and target content in two matched reads in a row).
async fn keyless(pair: &Pair, context: &Context, table: &TableSpec, mut source: Sums, mut target: Sums, mut stable: bool) -> Result<Narrowed, EngineError> {
    let whole = [KeyRange::default()];
    for _ in 0..KEYLESS_ROUNDS {
        if stable {
            let range = DifferingRange {
                from_key: "(whole table: no key)".into(),
                to_key: "(whole table: no key)".into(),
                source_rows: source.rows,
                target_rows: target.rows,
                keys: Vec::new(),
            };
            return Ok(Narrowed { ranges: vec![range], row_delta: None, unsettled: None });
        }
        let Some((mut s, mut t)) = narrow::compare(pair, context, table, &whole).await? else {
            return Ok(Narrowed { unsettled: Some(LAG), ..Narrowed::default() });
        };
        let (again, on_target) = (s.remove(0), t.remove(0));
        if again == on_target {
            return Ok(Narrowed { row_delta: Some(0), ..Narrowed::default() });
        }
        stable = again == source && on_target == target;
        (source, target) = (again, on_target);
    }
    Ok(Narrowed { unsettled: Some(HOT), ..Narrowed::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_keys_are_cut_evenly_without_overflow() {
        assert_eq!(even_boundaries(1, 100, 4), vec![26, 51, 76]);
        assert_eq!(even_boundaries(5, 6, 4), Vec::<i64>::new());
        assert_eq!(even_boundaries(i64::MIN, i64::MAX, 2), vec![0]);
    }

    #[test]
    fn the_outer_chunks_are_unbounded() {
        let ranges = ranges_between(vec![vec!["10".into()], vec!["20".into()]]);
        assert_eq!(ranges.len(), 3);
        assert_eq!(ranges[0].lower, None);
        assert_eq!(ranges[2].upper, None);
        assert_eq!(ranges[1].lower.as_deref(), Some(&["10".to_string()][..]));
    }
}
