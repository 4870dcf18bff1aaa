//! From a differing chunk to the differing keys: bisection on the key (halves compared by checksum,
//! only differing halves descended), then row hashes of small ranges merged in key order, and, while the
//! link syncs, each candidate key settled at matched positions.
//!
//! While the link syncs, the whole descent runs inside the pair of matched snapshots the chunk was
//! compared in (both sides frozen, so no wait for the link per step); what it finds are *candidates*:
//! real differences plus the few rows changed on the source between the two snapshots. Settling tells
//! them apart: the candidates' rows are read in fresh matched snapshots, then once more on the source; a
//! target row equal to either source read clears it; a source row unchanged across both reads with a
//! target that still differs is a real difference (the target's snapshot lies between the two source
//! reads); a source row that changed in between is read again, a few rounds. What still changes then
//! (a counter updated without pause; up to [`MAX_LOCKED_KEYS`] keys) is read once more with the source's
//! rows locked (`read::locked`), both sides at one point of the row's history; past the lock's or the
//! link's wait, or for a key with no source row to lock whose target row exists, it is called
//! unsettled, never a difference.
use super::read::{self, RowHashes, Sums};
use super::scope::TableSpec;
use super::sql::{self, KeyRange, KeyValues};
use super::{Context, Pair};
use milink_core::migration::{DifferingRange, MAX_LISTED_KEYS};
use milink_core::EngineError;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;

/// Ranges this small are compared row by row instead of being halved again (a fine chunk, ~5,000 rows,
/// goes straight to its rows: two halvings would cost more round trips than reading them).
const LEAF_ROWS: u64 = 6_000;
/// Halving stops here whatever the counts say.
const MAX_DEPTH: u32 = 24;
/// Rounds of re-reading a key that differs while the source keeps changing it.
const SETTLE_ROUNDS: usize = 5;
/// Keys still changing after those rounds that are settled with the source's rows locked (`read::locked`);
/// more are left unsettled rather than held.
const MAX_LOCKED_KEYS: usize = 100;
/// Candidate keys a live verification settles per table before giving up on the rest as unsettled.
const MAX_CANDIDATES: usize = 10 * MAX_LISTED_KEYS;

pub(super) const LAG: &str = "the link did not pass the source's position in time";
pub(super) const HOT: &str = "rows kept changing on the source on every read";

/// What narrowing one differing range found.
#[derive(Debug, Default)]
pub(super) struct Narrowed {
    pub(super) ranges: Vec<DifferingRange>,
    /// Target rows minus source rows over the real differences, when every difference was narrowed to
    /// keys (then the chunk's counts at a matched position are known); None otherwise.
    pub(super) row_delta: Option<i64>,
    /// Why part of the range could not be settled (live only).
    pub(super) unsettled: Option<&'static str>,
}

/// What the descent found in one differing chunk, before settling.
#[derive(Debug)]
pub(super) enum Found {
    /// A small range compared row by row: every row of it, merged.
    Rows(Vec<Entry>),
    /// A range not narrowed (the table already lists [`MAX_LISTED_KEYS`]; static only).
    Unlisted(DifferingRange),
}

/// Both sides' checksums of `ranges`, read at once (inside matched snapshots when the caller holds them).
pub(super) async fn checksums(pair: &Pair, context: &Context, table: &TableSpec, ranges: &[KeyRange]) -> Result<(Vec<Sums>, Vec<Sums>), EngineError> {
    tokio::try_join!(
        read::checksums(&pair.src, table, ranges, context.hashing),
        read::checksums(&pair.tgt, table, ranges, context.hashing)
    )
}

/// [`checksums`] at once when static, in fresh matched snapshots when live. None when the link did not
/// reach the source's position in time.
pub(super) async fn compare(pair: &Pair, context: &Context, table: &TableSpec, ranges: &[KeyRange]) -> Result<Option<(Vec<Sums>, Vec<Sums>)>, EngineError> {
    let work = checksums(pair, context, table, ranges);
    match &context.slot {
        None => Ok(Some(work.await?)),
        Some(slot) => read::matched(pair, slot, work).await,
    }
}

type Boxed<'a> = Pin<Box<dyn Future<Output = Result<Vec<Found>, EngineError>> + Send + 'a>>;

/// Descends into a range whose sides differ (`sides` are its checksums), reading both sides as they
/// are (static, or frozen in the caller's matched snapshots).
pub(super) fn descend<'a>(
    pair: &'a Pair,
    context: &'a Context,
    index: usize,
    table: &'a TableSpec,
    range: KeyRange,
    sides: (Sums, Sums),
    depth: u32,
) -> Boxed<'a> {
    Box::pin(async move {
        let (source, target) = sides;
        if context.slot.is_none() && context.listed[index].load(Ordering::SeqCst) >= MAX_LISTED_KEYS {
            return Ok(vec![Found::Unlisted(unlisted(pair, table, &range, &source, &target).await?)]);
        }
        let rows = |session| read::row_hashes(session, table, &range, context.hashing);
        if source.rows.max(target.rows) <= LEAF_ROWS || depth >= MAX_DEPTH {
            let (s, t) = tokio::try_join!(rows(&pair.src), rows(&pair.tgt))?;
            return Ok(vec![Found::Rows(merge(s, t))]);
        }
        let Some(middle) = middle_key(pair, table, &range, &source, &target).await? else {
            let (s, t) = tokio::try_join!(rows(&pair.src), rows(&pair.tgt))?;
            return Ok(vec![Found::Rows(merge(s, t))]);
        };
        let halves = [
            KeyRange { lower: range.lower.clone(), upper: Some(middle.clone()) },
            KeyRange { lower: Some(middle), upper: range.upper.clone() },
        ];
        let (sources, targets) = checksums(pair, context, table, &halves).await?;
        let mut found = Vec::new();
        for ((half, s), t) in halves.into_iter().zip(sources).zip(targets) {
            if s != t {
                found.extend(descend(pair, context, index, table, half, (s, t), depth + 1).await?);
            }
        }
        Ok(found)
    })
}

/// The key in the middle of the range, read on the side holding more of its rows.
async fn middle_key(pair: &Pair, table: &TableSpec, range: &KeyRange, source: &Sums, target: &Sums) -> Result<Option<KeyValues>, EngineError> {
    let (session, rows) = if source.rows >= target.rows { (&pair.src, source.rows) } else { (&pair.tgt, target.rows) };
    let offset = (rows / 2) as i64;
    let row = session.maybe_row("finding a bisection point", &sql::key_at_offset(table, range), &[&offset]).await?;
    Ok(row.map(|r| r.get(0)).filter(|key: &KeyValues| Some(key) != range.lower.as_ref()))
}

/// A differing range reported without keys, named by its first and last keys.
async fn unlisted(pair: &Pair, table: &TableSpec, range: &KeyRange, source: &Sums, target: &Sums) -> Result<DifferingRange, EngineError> {
    let session = if source.rows > 0 { &pair.src } else { &pair.tgt };
    let edge = |descending| async move {
        let row = session.maybe_row("naming a differing range", &sql::edge_key(table, range, descending), &[]).await?;
        Ok::<_, EngineError>(row.map(|r| sql::key_display(&table.key, &r.get::<_, KeyValues>(0))).unwrap_or_default())
    };
    let (from_key, to_key) = tokio::try_join!(edge(false), edge(true))?;
    Ok(DifferingRange { from_key, to_key, source_rows: source.rows, target_rows: target.rows, keys: Vec::new() })
}

/// Turns what the descents of several chunks found into their reports; while the link syncs, all their
/// candidate keys are settled together first (one wait for the link per round), at most `limit` per
/// table ([`MAX_CANDIDATES`] unless said), past which the rest is called unsettled.
pub(super) async fn conclude(
    pair: &Pair,
    context: &Context,
    index: usize,
    table: &TableSpec,
    chunks: Vec<Vec<Found>>,
    early: Option<read::Early>,
    limit: Option<usize>,
) -> Result<Vec<Narrowed>, EngineError> {
    let mut why = None;
    let mut chunks = chunks;
    if context.slot.is_some() {
        let mut candidates: Vec<(usize, usize, usize)> = Vec::new();
        for (c, found) in chunks.iter().enumerate() {
            for (f, item) in found.iter().enumerate() {
                if let Found::Rows(entries) = item {
                    candidates.extend((0..entries.len()).filter(|&n| entries[n].differs()).map(|n| (c, f, n)));
                }
            }
        }
        let before = context.candidates[index].fetch_add(candidates.len(), Ordering::SeqCst);
        if before + candidates.len() > limit.unwrap_or(MAX_CANDIDATES) {
            return Ok(chunks.iter().map(|_| Narrowed { unsettled: Some(HOT), ..Narrowed::default() }).collect());
        }
        let mut flat: Vec<Entry> = candidates
            .iter()
            .map(|&(c, f, n)| match &chunks[c][f] {
                Found::Rows(entries) => entries[n].clone(),
                Found::Unlisted(_) => unreachable!("candidates come from rows"),
            })
            .collect();
        let all: Vec<usize> = (0..flat.len()).collect();
        why = settle(pair, context, table, &mut flat, all, early).await?;
        for (&(c, f, n), settled) in candidates.iter().zip(flat) {
            if let Found::Rows(entries) = &mut chunks[c][f] {
                entries[n] = settled;
            }
        }
    }
    Ok(chunks
        .into_iter()
        .map(|found| {
            let mut narrowed = Narrowed { row_delta: Some(0), unsettled: why, ..Narrowed::default() };
            for item in found {
                let part = match item {
                    Found::Rows(entries) => report(context, index, table, &entries),
                    Found::Unlisted(range) => Narrowed { ranges: vec![range], row_delta: None, unsettled: None },
                };
                narrowed.ranges.extend(part.ranges);
                narrowed.row_delta = narrowed.row_delta.zip(part.row_delta).map(|(a, b)| a + b);
            }
            narrowed
        })
        .collect())
}

/// One entry of two key-ordered row lists merged: the key and its row hash on each side.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Entry {
    pub(super) key: KeyValues,
    pub(super) source: Option<i64>,
    pub(super) target: Option<i64>,
}

impl Entry {
    fn differs(&self) -> bool {
        self.source != self.target
    }
}

/// Merges two lists sorted in the same key order without comparing keys in Rust (their SQL order is
/// not Rust's): a key present on both sides is the later one of the two heads, so the other head goes
/// first. Should the orders disagree (different collations on the sides), the rest is merged by lookup.
pub(super) fn merge(source: RowHashes, target: RowHashes) -> Vec<Entry> {
    let source_keys: HashSet<&KeyValues> = source.iter().map(|(k, _)| k).collect();
    let target_map: HashMap<&KeyValues, i64> = target.iter().map(|(k, h)| (k, *h)).collect();
    let only_source = |(k, h): &(KeyValues, i64)| Entry { key: k.clone(), source: Some(*h), target: None };
    let only_target = |(k, h): &(KeyValues, i64)| Entry { key: k.clone(), source: None, target: Some(*h) };
    let mut out = Vec::with_capacity(source.len().max(target.len()));
    let (mut i, mut j) = (0, 0);
    loop {
        match (source.get(i), target.get(j)) {
            (None, None) => return out,
            (Some(s), Some(t)) if s.0 == t.0 => {
                out.push(Entry { key: s.0.clone(), source: Some(s.1), target: Some(t.1) });
                (i, j) = (i + 1, j + 1);
            }
            (Some(s), Some(t)) if target_map.contains_key(&s.0) && !source_keys.contains(&t.0) => {
                out.push(only_target(t));
                j += 1;
            }
            (Some(s), _) if !target_map.contains_key(&s.0) => {
                out.push(only_source(s));
                i += 1;
            }
            (_, Some(t)) if !source_keys.contains(&t.0) => {
                out.push(only_target(t));
                j += 1;
            }
            _ => break,
        }
    }
    out.extend(source[i..].iter().map(|(k, h)| Entry { key: k.clone(), source: Some(*h), target: target_map.get(k).copied() }));
    out.extend(target[j..].iter().filter(|(k, _)| !source_keys.contains(k)).map(only_target));
    out
}

/// The differing range of one compared leaf, its keys listed within the table's allowance.
pub(super) fn report(context: &Context, index: usize, table: &TableSpec, entries: &[Entry]) -> Narrowed {
    let differing: Vec<usize> = (0..entries.len()).filter(|&n| entries[n].differs()).collect();
    let row_delta = differing.iter().map(|&n| i64::from(entries[n].target.is_some()) - i64::from(entries[n].source.is_some())).sum();
    let (Some(&first), Some(&last)) = (differing.first(), differing.last()) else {
        return Narrowed { ranges: Vec::new(), row_delta: Some(0), unsettled: None };
    };
    let before = context.listed[index].fetch_add(differing.len(), Ordering::SeqCst);
    let allowed = MAX_LISTED_KEYS.saturating_sub(before).min(differing.len());
    let span = &entries[first..=last];
    let display = |n: usize| sql::key_display(&table.key, &entries[n].key);
    let range = DifferingRange {
        from_key: display(first),
        to_key: display(last),
        source_rows: span.iter().filter(|e| e.source.is_some()).count() as u64,
        target_rows: span.iter().filter(|e| e.target.is_some()).count() as u64,
        keys: differing.iter().take(allowed).map(|&n| display(n)).collect(),
    };
    Narrowed { ranges: vec![range], row_delta: Some(row_delta), unsettled: None }
}

/// Settles the `candidates` (indexes into `entries`) at matched positions; entries found equal are
/// updated to equal, real differences keep their sides. Returns why some stayed unsettled, if any did.
/// `early`: the source's rows of every candidate, read at a noted position while the caller still
/// compared (`read::Early`); the first round then reads only the target, as soon as it has applied that
/// position (by then it usually has: no wait for the link), and the source once more.
async fn settle(
    pair: &Pair,
    context: &Context,
    table: &TableSpec,
    entries: &mut [Entry],
    mut candidates: Vec<usize>,
    mut early: Option<read::Early>,
) -> Result<Option<&'static str>, EngineError> {
    let slot = context.slot.as_deref().unwrap_or_default();
    let hashing = context.hashing;
    for _ in 0..SETTLE_ROUNDS {
        if candidates.is_empty() {
            return Ok(None);
        }
        let keys: Vec<KeyValues> = candidates.iter().map(|&n| entries[n].key.clone()).collect();
        let read = match early.take() {
            Some(early) => match read::wait_for_link(pair, slot, early.position).await? {
                true => Some((early.rows, read::rows_by_key(&pair.tgt, table, &keys, hashing).await?)),
                false => None,
            },
            None => {
                let both = async {
                    tokio::try_join!(read::rows_by_key(&pair.src, table, &keys, hashing), read::rows_by_key(&pair.tgt, table, &keys, hashing))
                };
                read::matched(pair, slot, both).await?
            }
        };
        let Some((first, target)) = read else {
            return Ok(Some(LAG));
        };
        let again = read::rows_by_key(&pair.src, table, &keys, hashing).await?;
        let mut changing = Vec::new();
        for (&n, key) in candidates.iter().zip(&keys) {
            let (before, now, on_target) = (first.get(key).copied(), again.get(key).copied(), target.get(key).copied());
            if on_target == before || on_target == now {
                entries[n].source = on_target;
                entries[n].target = on_target;
            } else if before == now {
                entries[n].source = before;
                entries[n].target = on_target;
            } else {
                changing.push(n);
            }
        }
        candidates = changing;
    }
    if candidates.is_empty() {
        return Ok(None);
    }
    // The last resort for rows that changed between every pair of reads (a counter): read with the
    // source's rows locked, the two sides are at one point of the row's history, so each is equal or
    // differs, exactly.
    if candidates.len() <= MAX_LOCKED_KEYS {
        let keys: Vec<KeyValues> = candidates.iter().map(|&n| entries[n].key.clone()).collect();
        match read::locked(pair, slot, &context.source, table, &keys, hashing).await {
            Ok(Some((source, target))) => {
                let mut still = Vec::new();
                for (&n, key) in candidates.iter().zip(&keys) {
                    let (on_source, on_target) = (source.get(key).copied(), target.get(key).copied());
                    // No row was there to lock: one inserted since may be what the target holds.
                    if on_source.is_none() && on_target.is_some() {
                        still.push(n);
                        continue;
                    }
                    entries[n].source = on_source;
                    entries[n].target = on_target;
                }
                if still.is_empty() {
                    return Ok(None);
                }
                candidates = still;
            }
            Ok(None) => tracing::debug!(table = %table.display_name(), keys = keys.len(), "the link did not pass the locked rows' position in time"),
            Err(error) => tracing::debug!(table = %table.display_name(), error = %error.message, "could not lock the rows that kept changing"),
        }
    }
    // Never reported as differences: they were not equal, but not proven different either.
    for n in candidates {
        entries[n].target = entries[n].source;
    }
    Ok(Some(HOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(keys: &[(&str, i64)]) -> RowHashes {
        keys.iter().map(|(k, h)| (vec![k.to_string()], *h)).collect()
    }

    #[test]
    fn merging_keeps_key_order_and_pairs_each_key_once() {
        let source = rows(&[("a", 1), ("b", 2), ("d", 4), ("e", 5)]);
        let target = rows(&[("a", 1), ("c", 3), ("d", 9), ("f", 6)]);
        let merged = merge(source, target);
        let keys: Vec<&str> = merged.iter().map(|e| e.key[0].as_str()).collect();
        assert_eq!(keys, ["a", "b", "c", "d", "e", "f"]);
        let differing: Vec<&str> = merged.iter().filter(|e| e.differs()).map(|e| e.key[0].as_str()).collect();
        assert_eq!(differing, ["b", "c", "d", "e", "f"]);
        assert_eq!(merged[3], Entry { key: vec!["d".into()], source: Some(4), target: Some(9) });
    }

    #[test]
    fn merging_lists_in_disagreeing_orders_still_pairs_every_key() {
        let merged = merge(rows(&[("a", 1), ("B", 2)]), rows(&[("B", 2), ("a", 1)]));
        assert_eq!(merged.len(), 2);
        assert!(merged.iter().all(|e| !e.differs()), "{merged:?}");
    }
}
