//! `observe(plan)`: one look at the link from both ends, turned into phase, progress, lag and problems.
//!
//! - Phase and progress come from the target's `pg_subscription_rel`: every table `r` (ready) means
//!   Streaming; otherwise Seeding, with progress weighted by each table's size on the source (a table
//!   being copied counts by how much of it has arrived), so one huge table is not "1 of 40 done".
//! - Lag is measured where it is true: on the source, `pg_current_wal_lsn()` minus the slot's
//!   `confirmed_flush_lsn`. That counts WAL the walsender has not even sent yet, which sent-vs-flushed
//!   (pg_easy_replicate's measure) misses. The slot's `confirmed_flush_lsn` is also the progress marker.
//! - Lag in seconds is the source's `flush_lag` for the subscription's walsender while it reports one;
//!   otherwise, when bytes are behind, the time since the target last confirmed a position
//!   (`pg_stat_subscription.latest_end_time`), an upper bound; zero when nothing is behind.
//! - Problems: a missing subscription or slot, a lost slot, a disabled subscription, apply or table-sync
//!   errors that increased recently, and an apply worker or slot that has been missing or inactive for
//!   longer than a short grace (workers restart by themselves within seconds, so a single look proves
//!   nothing). The engine remembers, per link, the counters and since when something is missing.
//! - Schema drift: `drift` compares the source's tables, columns and sequences with the link and the
//!   target (every few seconds, cheaply when nothing moved), carries what it can and reports the rest.
//!   Apply errors that come with a change it could not carry are worded with that change's remedy; apply
//!   errors from just before it carried a change (a row with the new column arriving first) are forgiven.
use crate::connect::{Server, Session};
use crate::drift::{self, Drift};
use crate::seed;
use crate::connect::subscription_oid;
use crate::sql::quote_ident;
use chrono::{DateTime, Duration, Utc};
use milink_core::migration::{LinkPhase, LinkProblem, Observation, Position, ProblemKind, SchemaChange, SeedProgress};
use milink_core::ports::LinkPlan;
use milink_core::EngineError;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio_postgres::types::PgLsn;

/// How long an apply worker may be missing, or a slot inactive, before it is a problem.
const GRACE_SECONDS: i64 = 15;
/// How long an increase of the error counters stays a problem (apply retries every few seconds).
const ERROR_MEMORY_SECONDS: i64 = 60;

/// What the engine remembers between observations, per link.
#[derive(Default)]
pub(crate) struct Watches {
    links: Mutex<HashMap<String, Watch>>,
    drift: drift::Memory,
    /// Parallel seeding runs here (started by create_link, restarted by observe after a restart).
    pub(crate) seeders: seed::Seeders,
}

impl Watches {
    /// Forgets a link that no longer exists.
    pub(crate) fn forget(&self, link_name: &str) {
        self.links.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(link_name);
        self.drift.forget(link_name);
        self.seeders.forget(link_name);
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Watch {
    errors: Option<(i64, i64)>,
    errors_increased_at: Option<DateTime<Utc>>,
    worker_missing_since: Option<DateTime<Utc>>,
    slot_inactive_since: Option<DateTime<Utc>>,
    /// When the drift check last carried a change to the target.
    drift_carried_at: Option<DateTime<Utc>>,
}

/// The target's side of the link.
#[derive(Debug, Default)]
pub(crate) struct TargetView {
    subscription: bool,
    enabled: bool,
    apply_worker: bool,
    /// (`schema.table`, state letter, bytes on the target).
    tables: Vec<(String, String, i64)>,
    /// (apply_error_count, sync_error_count), PostgreSQL 15+.
    errors: Option<(i64, i64)>,
    seconds_since_confirmed: Option<f64>,
    /// Parallel seeding's progress, while it runs (no subscription yet).
    seed: Option<seed::Progress>,
}

/// The source's side: the slot.
#[derive(Debug, Default)]
pub(crate) struct SlotView {
    active: bool,
    wal_status: Option<String>,
    confirmed_flush: Option<u64>,
    current: u64,
    flush_lag_seconds: Option<f64>,
}

pub(crate) async fn observe(plan: &LinkPlan, now: DateTime<Utc>, watches: &Watches) -> Result<Observation, EngineError> {
    let source = Server::new("source", &plan.source)?;
    let target = Server::new("target", &plan.target)?;
    let name = plan.link_name();
    let looks = async { tokio::try_join!(look_at_target(&target, plan, &name), look_at_slot(&source, &name)) };
    let (looks, drift) = tokio::join!(looks, watches.drift.check(plan, now));
    let (target_view, slot) = looks?;
    if let Some(progress) = &target_view.seed {
        watches.seeders.ensure_running(plan);
        return Ok(seeding(now, progress, watches.seeders.failure(&name)));
    }
    let seeding = target_view.tables.iter().any(|(_, state, _)| state != "r");
    let source_bytes = match seeding {
        true => source_sizes(&source, plan, &target_view.tables).await?,
        false => HashMap::new(),
    };
    let mut all = watches.links.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let watch = all.entry(name.clone()).or_default();
    Ok(assemble_with_drift(&name, now, &target_view, slot.as_ref(), &source_bytes, watch, drift))
}

async fn look_at_target(target: &Server, plan: &LinkPlan, name: &str) -> Result<TargetView, EngineError> {
    let tgt = match target.connect(Some(plan.database.as_str())).await {
        Ok(session) => session,
        Err(error) if error.code == "database_not_found" => return Ok(TargetView::default()),
        Err(error) => return Err(error),
    };
    let oid = match subscription_oid(&tgt, name).await? {
        Some(oid) => oid,
        // The seeder starts the subscription and drops its record in one transaction: a look that found no
        // subscription just before that commit finds the record gone just after (no record, or no table of
        // records for the last link). Look again before calling the subscription missing.
        None => match seed::progress(&tgt, name).await {
            Ok(Some(seed)) => return Ok(TargetView { seed: Some(seed), ..TargetView::default() }),
            Ok(None) => match subscription_oid(&tgt, name).await? {
                Some(oid) => oid,
                None => return Ok(TargetView::default()),
            },
            Err(error) => match subscription_oid(&tgt, name).await? {
                Some(oid) => oid,
                None => return Err(error),
            },
        },
    };
    let row = tgt
        .row(
            "reading the subscription's state",
            "SELECT s.subenabled,
                    EXISTS (SELECT 1 FROM pg_stat_subscription w WHERE w.subid = s.oid AND w.relid IS NULL
                            AND w.pid IS NOT NULL),
                    (SELECT extract(epoch FROM now() - max(w.latest_end_time))::float8 FROM pg_stat_subscription w
                     WHERE w.subid = s.oid AND w.relid IS NULL)
             FROM pg_subscription s WHERE s.oid = $1",
            &[&oid],
        )
        .await?;
    let tables = tgt
        .rows(
            "reading the subscription's tables",
            "SELECT n.nspname || '.' || c.relname, sr.srsubstate::text, pg_table_size(c.oid)
             FROM pg_subscription_rel sr JOIN pg_class c ON c.oid = sr.srrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE sr.srsubid = $1",
            &[&oid],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let errors = match tgt.version_num().await? >= 150_000 {
        true => error_counts(&tgt, oid).await?,
        false => None,
    };
    Ok(TargetView {
        seed: None,
        subscription: true,
        enabled: row.get(0),
        apply_worker: row.get(1),
        tables,
        errors,
        seconds_since_confirmed: row.get(2),
    })
}

async fn error_counts(tgt: &Session, oid: u32) -> Result<Option<(i64, i64)>, EngineError> {
    let row = tgt
        .maybe_row(
            "reading the subscription's error counters",
            "SELECT apply_error_count, sync_error_count FROM pg_stat_subscription_stats WHERE subid = $1",
            &[&oid],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

async fn look_at_slot(source: &Server, name: &str) -> Result<Option<SlotView>, EngineError> {
    let admin = source.connect(None).await?;
    let row = admin
        .maybe_row(
            "reading the replication slot",
            "SELECT s.active, s.wal_status, s.confirmed_flush_lsn, pg_current_wal_lsn(),
                    (SELECT extract(epoch FROM r.flush_lag)::float8 FROM pg_stat_replication r
                     WHERE r.pid = s.active_pid)
             FROM pg_replication_slots s WHERE s.slot_name = $1",
            &[&name],
        )
        .await?;
    Ok(row.map(|r| SlotView {
        active: r.get(0),
        wal_status: r.get(1),
        confirmed_flush: r.get::<_, Option<PgLsn>>(2).map(u64::from),
        current: u64::from(r.get::<_, PgLsn>(3)),
        flush_lag_seconds: r.get(4),
    }))
}

/// A look at a link seeding in parallel: progress over copy and index build; the marker moves with every
/// byte copied and every index block built, so a copy that stops moving is reported stalled; a failed
/// seeder (it is restarted) is the problem until it succeeds.
fn seeding(now: DateTime<Utc>, progress: &seed::Progress, failure: Option<EngineError>) -> Observation {
    tracing::debug!(
        copied_bytes = progress.copied_bytes,
        total_bytes = progress.total_bytes + progress.index_bytes,
        eta_seconds = progress.eta_seconds(),
        "seeding progress"
    );
    Observation {
        at: now,
        phase: LinkPhase::Seeding,
        // 100 % is for a link that streams: the subscription still has to start after the last index.
        progress_percent: progress.percent().min(99.9),
        lag_bytes: None,
        lag_seconds: None,
        progress_marker: Some(Position(progress.work_marker())),
        problem: failure.map(|error| LinkProblem { kind: None, reason: error.message, remediation: error.remediation }),
        drift: Vec::new(),
        seed: Some(SeedProgress {
            copied_bytes: progress.done_bytes().max(0) as u64,
            total_bytes: (progress.total_bytes + progress.index_bytes).max(0) as u64,
            eta_seconds: progress.eta_seconds().map(|s| s.round()),
        }),
    }
}

/// Bytes of each subscribed table on the source, the weights of seeding progress.
async fn source_sizes(
    source: &Server,
    plan: &LinkPlan,
    tables: &[(String, String, i64)],
) -> Result<HashMap<String, i64>, EngineError> {
    let src = source.connect(Some(plan.database.as_str())).await?;
    let names: Vec<&str> = tables.iter().map(|(name, _, _)| name.as_str()).collect();
    let rows = src
        .rows(
            "reading table sizes on the source",
            "SELECT n.nspname || '.' || c.relname, pg_table_size(c.oid)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname || '.' || c.relname = ANY($1)",
            &[&names],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Seeding progress, 0–100: finished tables count fully, the one being copied by how much has arrived.
pub(crate) fn seeding_progress(tables: &[(String, String, i64)], source_bytes: &HashMap<String, i64>) -> f64 {
    if tables.is_empty() {
        return 100.0;
    }
    let (done, total) = seeding_bytes(tables, source_bytes);
    (done / total * 100.0).clamp(0.0, 100.0)
}

/// Native table sync: bytes copied (estimated from the target's table sizes) and bytes to copy. No ETA:
/// table sync records no start, and its tables run one or two at a time at rates that differ.
pub(crate) fn seeding_bytes(tables: &[(String, String, i64)], source_bytes: &HashMap<String, i64>) -> (f64, f64) {
    let (mut done, mut total) = (0.0, 0.0);
    for (name, state, target_bytes) in tables {
        // Empty tables still weigh a page, so a database of empty tables still shows progress.
        let weight = source_bytes.get(name).copied().unwrap_or(0).max(8192) as f64;
        let fraction = match state.as_str() {
            "r" | "s" | "f" => 1.0,
            "d" => (*target_bytes as f64 / weight).min(0.99),
            _ => 0.0,
        };
        done += weight * fraction;
        total += weight;
    }
    (done, total)
}

fn problem(reason: String, remediation: String) -> Option<LinkProblem> {
    Some(LinkProblem { kind: None, reason, remediation })
}

fn slot_problem(reason: String, remediation: String) -> Option<LinkProblem> {
    Some(LinkProblem { kind: Some(ProblemKind::SlotInactive), reason, remediation })
}

/// What the memory of earlier looks says about this one.
struct Signals {
    worker_gone: bool,
    slot_idle: bool,
    recent_errors: bool,
}

/// Updates the link's memory with this look and says what it shows.
fn remember(now: DateTime<Utc>, target: &TargetView, slot: Option<&SlotView>, watch: &mut Watch) -> Signals {
    let grace = Duration::seconds(GRACE_SECONDS);
    let since = |mark: &mut Option<DateTime<Utc>>, missing: bool| -> bool {
        match (missing, *mark) {
            (false, _) => {
                *mark = None;
                false
            }
            (true, None) => {
                *mark = Some(now);
                false
            }
            (true, Some(start)) => now - start >= grace,
        }
    };
    let worker_gone = since(&mut watch.worker_missing_since, target.subscription && target.enabled && !target.apply_worker);
    let slot_idle = since(&mut watch.slot_inactive_since, slot.is_some_and(|s| !s.active) && target.enabled);
    if let Some(counts) = target.errors {
        // The first look is only a baseline: counters from before milink started say nothing about now.
        if watch.errors.is_some_and(|before| counts.0 > before.0 || counts.1 > before.1) {
            watch.errors_increased_at = Some(now);
        }
        watch.errors = Some(counts);
    }
    let recent_errors = watch.errors_increased_at.is_some_and(|at| now - at < Duration::seconds(ERROR_MEMORY_SECONDS));
    Signals { worker_gone, slot_idle, recent_errors }
}

/// Everything observe decides, without I/O, for a link without schema drift.
#[cfg(test)]
pub(crate) fn assemble(
    name: &str,
    now: DateTime<Utc>,
    target: &TargetView,
    slot: Option<&SlotView>,
    source_bytes: &HashMap<String, i64>,
    watch: &mut Watch,
) -> Observation {
    assemble_with_drift(name, now, target, slot, source_bytes, watch, Drift::default())
}

/// Everything observe decides, without I/O.
pub(crate) fn assemble_with_drift(
    name: &str,
    now: DateTime<Utc>,
    target: &TargetView,
    slot: Option<&SlotView>,
    source_bytes: &HashMap<String, i64>,
    watch: &mut Watch,
    drift: Drift,
) -> Observation {
    let mut signals = remember(now, target, slot, watch);
    if drift.carried_now {
        watch.drift_carried_at = Some(now);
    }
    // Rows using a new column fail to apply until the column is carried; those errors are not a problem
    // once it is (the worker retries every few seconds, so a later error counts again after the grace).
    let forgiven = |at: DateTime<Utc>| watch.drift_carried_at.is_some_and(|carried| at <= carried + Duration::seconds(GRACE_SECONDS));
    if watch.errors_increased_at.is_some_and(forgiven) {
        watch.errors_increased_at = None;
        signals.recent_errors = false;
    }
    let lag_bytes = slot.and_then(|s| s.confirmed_flush.map(|confirmed| s.current.saturating_sub(confirmed)));
    let lag_seconds = match (lag_bytes, slot.and_then(|s| s.flush_lag_seconds)) {
        (Some(0), _) => Some(0.0),
        (_, Some(seconds)) => Some(seconds),
        (Some(_), None) => target.seconds_since_confirmed,
        (None, None) => None,
    };
    let phase = match (target.subscription, target.tables.iter().all(|(_, state, _)| state == "r")) {
        (false, _) => LinkPhase::Deploying,
        (true, true) => LinkPhase::Streaming,
        (true, false) => LinkPhase::Seeding,
    };
    Observation {
        at: now,
        phase,
        progress_percent: match phase {
            LinkPhase::Deploying => 0.0,
            LinkPhase::Seeding => seeding_progress(&target.tables, source_bytes),
            LinkPhase::Streaming => 100.0,
        },
        lag_bytes,
        lag_seconds,
        progress_marker: slot.and_then(|s| s.confirmed_flush).map(Position),
        problem: link_problem(name, target, slot, &signals, watch.errors, &drift.changes),
        drift: drift.changes,
        seed: (phase == LinkPhase::Seeding).then(|| {
            let (copied, total) = seeding_bytes(&target.tables, source_bytes);
            SeedProgress { copied_bytes: copied as u64, total_bytes: total as u64, eta_seconds: None }
        }),
    }
}

/// The most serious thing wrong with the link, first match wins: a link that cannot resume at all comes
/// before one that is merely disabled, which comes before one that is failing and retrying.
fn link_problem(
    name: &str,
    target: &TargetView,
    slot: Option<&SlotView>,
    signals: &Signals,
    errors: Option<(i64, i64)>,
    drift: &[SchemaChange],
) -> Option<LinkProblem> {
    let wal_status = slot.and_then(|s| s.wal_status.as_deref());
    if !target.subscription {
        problem(
            format!("subscription {name} does not exist in the target database"),
            "Start the link again (create link is safe to repeat), or cancel the migration.".into(),
        )
    } else if slot.is_none() {
        problem(
            format!("replication slot {name} does not exist on the source"),
            "The link cannot resume without its slot: cancel the migration and start it again.".into(),
        )
    } else if wal_status == Some("lost") {
        problem(
            format!("replication slot {name} lost WAL it still needed (max_slot_wal_keep_size)"),
            "The link cannot resume: cancel and start again, with a larger max_slot_wal_keep_size on the source."
                .into(),
        )
    } else if !target.enabled {
        problem(
            format!("subscription {name} is disabled on the target"),
            format!("On the target database run: ALTER SUBSCRIPTION {} ENABLE;", quote_ident(name)),
        )
    } else if let Some(change) = drift.iter().find(|change| !change.carried).filter(|_| signals.recent_errors) {
        // Most likely "logical replication target relation ... is missing replicated column": say which.
        problem(
            format!(
                "the target keeps failing to apply changes, most likely because the schema changed on the source: {} {}",
                change.object, change.change
            ),
            change.remediation.clone(),
        )
    } else if signals.recent_errors {
        let (apply, sync) = errors.unwrap_or_default();
        problem(
            format!("the target keeps failing to apply changes ({apply} apply errors, {sync} table copy errors so far)"),
            "Read the target server's log for the failing statement: usually a schema difference or rows that \
             already exist on the target. Fix it; the subscription retries by itself."
                .into(),
        )
    } else if signals.worker_gone {
        problem(
            format!("no apply worker has been running for subscription {name} for {GRACE_SECONDS}s or more"),
            "Check the target's log, and that max_logical_replication_workers and max_worker_processes leave room."
                .into(),
        )
    } else if signals.slot_idle {
        slot_problem(
            format!("nothing has used replication slot {name} on the source for {GRACE_SECONDS}s or more"),
            "Check that the target can still reach the source (network, pg_hba.conf, password) and the target's log."
                .into(),
        )
    } else if wal_status == Some("unreserved") {
        problem(
            format!("replication slot {name} is about to lose WAL it needs (wal_status unreserved)"),
            "Raise max_slot_wal_keep_size on the source, or let the target catch up first.".into(),
        )
    } else {
        None
    }
}

#[cfg(test)]
#[path = "observe_tests.rs"]
mod tests;
