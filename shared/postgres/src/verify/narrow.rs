//! From a differing chunk to the differing keys: bisection on the key (halves compared by checksum,
//! only differing halves descended), then row hashes of small ranges merged in key order, and, while the
//! link syncs, each candidate key settled at matched positions.
//!
//! Settling (live only): a key that differs may only have changed between the matched snapshots. Its
//! rows are read in matched snapshots again (source at L, target once it applied L), then the source row
//! once more: a target row equal to either source read clears it; a source row unchanged across both
//! reads with a target that still differs is a real difference (the target's snapshot lies between the
//! two source reads); a source row that changed in between is read again, a few rounds, and then called
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

/// Ranges this small are compared row by row instead of being halved again.
const LEAF_ROWS: u64 = 2_000;
/// The same while the link syncs: every halving costs a wait for the link, more than reading the rows
/// of a chunk, so a chunk is read row by row at once.
pub(super) const LIVE_LEAF_ROWS: u64 = 100_000;
/// Halving stops here whatever the counts say (a range that keeps changing under load).
const MAX_DEPTH: u32 = 24;
/// Rounds of re-reading a key that differs while the source keeps changing it.
const SETTLE_ROUNDS: usize = 5;
/// Candidate keys a live verification settles per table before giving up on the rest as unsettled.
const MAX_CANDIDATES: usize = 10 * MAX_LISTED_KEYS;

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

impl Narrowed {
    fn merge(&mut self, other: Narrowed) {
        self.ranges.extend(other.ranges);
        self.row_delta = match (self.row_delta, other.row_delta) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.unsettled = self.unsettled.or(other.unsettled);
    }
}

pub(super) const LAG: &str = "the link did not pass the source's position in time";
pub(super) const HOT: &str = "rows kept changing on the source on every read";

/// Both sides' checksums of `ranges`: at once when static, in matched snapshots when live. None when
/// the link did not reach the source's position in time.
pub(super) async fn compare(pair: &Pair, context: &Context, table: &TableSpec, ranges: &[KeyRange]) -> Result<Option<(Vec<Sums>, Vec<Sums>)>, EngineError> {
    let hashing = context.hashing;
    let source = read::checksums(&pair.src, table, ranges, hashing);
    let target = read::checksums(&pair.tgt, table, ranges, hashing);
    match &context.slot {
        None => Ok(Some(tokio::try_join!(source, target)?)),
        Some(slot) => read::matched(pair, slot, source, target).await,
    }
}

type Boxed<'a> = Pin<Box<dyn Future<Output = Result<Narrowed, EngineError>> + Send + 'a>>;

/// Narrows a range whose sides differ (`source`/`target` are its checksums) down to keys.
pub(super) fn narrow<'a>(
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
        let budget_left = context.listed[index].load(Ordering::SeqCst) < MAX_LISTED_KEYS;
        if context.slot.is_none() && !budget_left {
            return unlisted(pair, table, &range, &source, &target).await;
        }
        let leaf_rows = if context.slot.is_some() { LIVE_LEAF_ROWS } else { LEAF_ROWS };
        if source.rows.max(target.rows) <= leaf_rows || depth >= MAX_DEPTH {
            return leaf(pair, context, index, table, &range).await;
        }
        let Some(middle) = middle_key(pair, table, &range, &source, &target).await? else {
            return leaf(pair, context, index, table, &range).await;
        };
        let halves = [
            KeyRange { lower: range.lower.clone(), upper: Some(middle.clone()) },
            KeyRange { lower: Some(middle), upper: range.upper.clone() },
        ];
        let Some((sources, targets)) = compare(pair, context, table, &halves).await? else {
            return Ok(Narrowed { unsettled: Some(LAG), ..Narrowed::default() });
        };
        let mut found = Narrowed { row_delta: Some(0), ..Narrowed::default() };
        for ((half, s), t) in halves.into_iter().zip(sources).zip(targets) {
            if s != t {
                found.merge(narrow(pair, context, index, table, half, (s, t), depth + 1).await?);
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

/// A differing range reported without keys (the table already lists [`MAX_LISTED_KEYS`]).
async fn unlisted(pair: &Pair, table: &TableSpec, range: &KeyRange, source: &Sums, target: &Sums) -> Result<Narrowed, EngineError> {
    let session = if source.rows > 0 { &pair.src } else { &pair.tgt };
    let edge = |descending| async move {
        let row = session.maybe_row("naming a differing range", &sql::edge_key(table, range, descending), &[]).await?;
        Ok::<_, EngineError>(row.map(|r| sql::key_display(&table.key, &r.get::<_, KeyValues>(0))).unwrap_or_default())
    };
    let (from_key, to_key) = tokio::try_join!(edge(false), edge(true))?;
    let range = DifferingRange { from_key, to_key, source_rows: source.rows, target_rows: target.rows, keys: Vec::new() };
    Ok(Narrowed { ranges: vec![range], row_delta: None, unsettled: None })
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

/// Row hashes of ranges on both sides, merged per range: at once when static, in one pair of matched
/// snapshots when live.
async fn leaf_entries(pair: &Pair, context: &Context, table: &TableSpec, ranges: &[KeyRange]) -> Result<Option<Vec<Vec<Entry>>>, EngineError> {
    let hashing = context.hashing;
    let all = |session| async move {
        let mut out = Vec::with_capacity(ranges.len());
        for range in ranges {
            out.push(read::row_hashes(session, table, range, hashing).await?);
        }
        Ok::<_, EngineError>(out)
    };
    let (source, target) = (all(&pair.src), all(&pair.tgt));
    let both = match &context.slot {
        None => Some(tokio::try_join!(source, target)?),
        Some(slot) => read::matched(pair, slot, source, target).await?,
    };
    Ok(both.map(|(source, target)| source.into_iter().zip(target).map(|(s, t)| merge(s, t)).collect()))
}

async fn leaf(pair: &Pair, context: &Context, index: usize, table: &TableSpec, range: &KeyRange) -> Result<Narrowed, EngineError> {
    Ok(leaves(pair, context, index, table, std::slice::from_ref(range)).await?.remove(0))
}

/// Ranges small enough to compare row by row, read together; while the link syncs, their candidate keys
/// are settled together too (one wait for the link per round, however many ranges).
pub(super) async fn leaves(pair: &Pair, context: &Context, index: usize, table: &TableSpec, ranges: &[KeyRange]) -> Result<Vec<Narrowed>, EngineError> {
    let unsettled = |why| (0..ranges.len()).map(|_| Narrowed { unsettled: Some(why), ..Narrowed::default() }).collect();
    let Some(per_range) = leaf_entries(pair, context, table, ranges).await? else {
        return Ok(unsettled(LAG));
    };
    let spans: Vec<usize> = per_range.iter().map(Vec::len).collect();
    let mut entries: Vec<Entry> = per_range.into_iter().flatten().collect();
    let mut why = None;
    if context.slot.is_some() {
        let candidates: Vec<usize> = (0..entries.len()).filter(|&n| entries[n].differs()).collect();
        let before = context.candidates[index].fetch_add(candidates.len(), Ordering::SeqCst);
        if before + candidates.len() > MAX_CANDIDATES {
            return Ok(unsettled(HOT));
        }
        why = settle(pair, context, table, &mut entries, candidates).await?;
    }
    let mut out = Vec::with_capacity(ranges.len());
    let mut start = 0;
    for len in spans {
        out.push(Narrowed { unsettled: why, ..report(context, index, table, &entries[start..start + len]) });
        start += len;
    }
    Ok(out)
}

/// The differing range of one compared leaf, its keys listed within the table's allowance.
fn report(context: &Context, index: usize, table: &TableSpec, entries: &[Entry]) -> Narrowed {
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
async fn settle(pair: &Pair, context: &Context, table: &TableSpec, entries: &mut [Entry], mut candidates: Vec<usize>) -> Result<Option<&'static str>, EngineError> {
    let slot = context.slot.as_deref().unwrap_or_default();
    let hashing = context.hashing;
    for _ in 0..SETTLE_ROUNDS {
        if candidates.is_empty() {
            return Ok(None);
        }
        let keys: Vec<KeyValues> = candidates.iter().map(|&n| entries[n].key.clone()).collect();
        let source = read::rows_by_key(&pair.src, table, &keys, hashing);
        let target = read::rows_by_key(&pair.tgt, table, &keys, hashing);
        let Some((first, target)) = read::matched(pair, slot, source, target).await? else {
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
