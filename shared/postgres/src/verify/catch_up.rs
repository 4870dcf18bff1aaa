//! Catch-up rounds before the fence: what the source changed during the full verification is compared
//! while the source still takes writes, so the window after the fence has only the last round's changes.
//!
//! The full verification before the fence takes seconds to minutes; under load, thousands of keys change
//! meanwhile, and the window used to decode and compare all of them with writes stopped. A round takes
//! (consumes) both tracking streams up to now, compares the keys they name in matched snapshots (the
//! link still syncs), and writes a new record: the tables found equal as before, plus what it could not
//! prove (keys that differed or did not settle, whole tables) carried to the window. Consuming is what
//! keeps the window short: after a round, the streams start where it started, so the window decodes only
//! what came after.
//!
//! Why a key proven equal in a round can be left out of the window: the round's source snapshot is taken
//! after the stream was read up to L, and the target's once it has applied that snapshot's position; a
//! later change to the key on the source commits after L, and a later write on the target by anything
//! but the link is in the target's stream after the round's read: either is in the window's streams.
//!
//! Rounds repeat while they shrink the delta (at most [`ROUNDS`]), and stop once a round took less than
//! [`SHORT_ROUND`] or decoded fewer than [`SMALL_DELTA`] changes: by then the window's share is what the
//! application writes in that time. A round that fails after consuming leaves no record past it, and
//! the window compares everything (as safe, slower); one that fails in its comparison carries every key
//! it took.
use super::chunks::Batch;
use super::track::{self, Recheck, Record, Tracked};
use super::{open_pair, run_workers, scope, sql, Context, Pair, KEYS_PER_BATCH};
use crate::connect::Server;
use milink_core::ports::LinkPlan;
use milink_core::EngineError;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

/// At most this many rounds.
pub(super) const ROUNDS: usize = 4;
/// A round this short means the window would be as short: stop.
pub(super) const SHORT_ROUND: Duration = Duration::from_millis(300);
/// Changes below which another round is not worth it.
pub(super) const SMALL_DELTA: u64 = 500;

/// What one round did, for the log.
#[derive(Debug)]
pub(super) struct Round {
    /// Changes decoded from both streams.
    pub(super) decoded: u64,
    /// Keys compared.
    pub(super) keys: usize,
    /// Keys and whole tables left to the window.
    pub(super) carried_keys: usize,
    pub(super) carried_whole: usize,
}

/// One round; None when there is nothing to catch up with (no record, or the target is untracked: the
/// window compares everything anyway).
pub(super) async fn round(plan: &LinkPlan, source: &Server, target: &Server, pair: &Pair) -> Result<Option<Round>, EngineError> {
    let link = plan.link_name();
    let tables = scope::scope(&pair.src, &pair.tgt, &link).await?.tables;
    let Tracked::Changes(changes) = track::take(&pair.src, &pair.tgt, &link, &tables).await? else { return Ok(None) };
    let verified = changes.verified.clone();
    let mut carried: BTreeMap<String, Recheck> = BTreeMap::new();
    let mut queue = VecDeque::new();
    let mut groups: BTreeMap<(usize, usize), Vec<sql::KeyValues>> = BTreeMap::new();
    for (index, table) in tables.iter().enumerate() {
        match changes.recheck(table) {
            None => {}
            Some(Recheck::Whole(why)) => {
                carried.insert(table.display_name(), Recheck::Whole(why));
            }
            Some(Recheck::Keys(keys)) => {
                let keys: Vec<sql::KeyValues> = keys.into_iter().collect();
                for (n, group) in keys.chunks(KEYS_PER_BATCH).enumerate() {
                    groups.insert((index, n), group.to_vec());
                    queue.push_back(Batch { table: index, first_chunk: n, ranges: Vec::new(), whole: false, keys: Some(group.to_vec()) });
                }
            }
        }
    }
    if let Some(Recheck::Whole(why)) = changes.changed.get("") {
        carried.insert(String::new(), Recheck::Whole(why));
    }
    // Changes of tables outside the scope now (a scope difference refuses the cutover anyway) are carried
    // whole: consumed here, they would be lost should the table come back into scope.
    let in_scope: BTreeSet<String> = tables.iter().map(|t| t.display_name()).collect();
    for name in changes.changed.keys().filter(|name| !name.is_empty() && !in_scope.contains(*name)) {
        carried.insert(name.clone(), Recheck::Whole("changed while outside the verification's scope"));
    }
    let keys: usize = groups.values().map(Vec::len).sum();
    let mut carry = |index: usize, n: usize, groups: &mut BTreeMap<(usize, usize), Vec<sql::KeyValues>>| {
        if let Some(group) = groups.remove(&(index, n)) {
            let entry = carried.entry(tables[index].display_name()).or_insert_with(|| Recheck::Keys(BTreeSet::new()));
            if let Recheck::Keys(set) = entry {
                set.extend(group);
            }
        }
    };
    if !queue.is_empty() {
        let context = Context {
            hashing: super::hashing(&pair.src, &pair.tgt).await?,
            slot: Some(link.clone()),
            tracked: None,
            moved: None,
            source: source.clone(),
            listed: tables.iter().map(|_| AtomicUsize::new(0)).collect(),
            candidates: tables.iter().map(|_| AtomicUsize::new(0)).collect(),
        };
        let compared = async {
            let first = open_pair(source, target, plan.database.as_str(), true).await?;
            run_workers(&first, source, target, plan.database.as_str(), &context, &tables, queue).await
        };
        match compared.await {
            Ok(outcomes) => {
                for outcome in outcomes {
                    let equal = outcome.unsettled.is_none() && outcome.differing.is_empty() && outcome.source_rows == outcome.target_rows;
                    if equal {
                        groups.remove(&(outcome.table, outcome.chunk));
                    }
                }
                // What is left did not compare equal: the window looks again.
                for (index, n) in groups.keys().copied().collect::<Vec<_>>() {
                    carry(index, n, &mut groups);
                }
            }
            Err(error) => {
                tracing::warn!(error = %error.message, "catch-up comparison failed: its keys go to the window");
                for (index, n) in groups.keys().copied().collect::<Vec<_>>() {
                    carry(index, n, &mut groups);
                }
            }
        }
    }
    let carried_keys = carried.values().map(|r| if let Recheck::Keys(k) = r { k.len() } else { 0 }).sum();
    let carried_whole = carried.values().filter(|r| matches!(r, Recheck::Whole(_))).count();
    let target_tracked = true; // `take` returns changes only when the target's writes are tracked
    track::record(&pair.src, &link, &Record { target_tracked, verified, carried }).await?;
    Ok(Some(Round { decoded: changes.decoded, keys, carried_keys, carried_whole }))
}

/// Rounds until the delta is small (module doc); never an error: a failed round only leaves more to the
/// window (or, failing after it consumed the streams, the whole comparison).
pub(super) async fn rounds(plan: &LinkPlan, source: &Server, target: &Server, pair: &Pair) -> Vec<(Round, Duration)> {
    let mut done = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        match round(plan, source, target, pair).await {
            Ok(Some(round)) => {
                let took = started.elapsed();
                tracing::info!(
                    decoded = round.decoded,
                    keys = round.keys,
                    carried_keys = round.carried_keys,
                    carried_whole = round.carried_whole,
                    ms = took.as_millis() as u64,
                    "caught up before the fence"
                );
                let last = took < SHORT_ROUND || round.decoded < SMALL_DELTA;
                done.push((round, took));
                if last {
                    break;
                }
            }
            Ok(None) => break,
            Err(error) => {
                tracing::warn!(error = %error.message, "catch-up round failed: the window compares what is left");
                break;
            }
        }
    }
    done
}
