//! The sync timer's tick, for both hosts: thousands of links per tick, within the timer period.
//!
//! One tick lists the active migrations once, groups them by source server, and observes each group with
//! its own concurrency limit (a server with 500 databases is never hit by 500 sessions at once) under a
//! global limit. Each observation is decided against the state just listed and saved with that state's
//! version, so a link costs one observation and one conditional write; only a lost race (a step saved the
//! migration meanwhile) falls back to re-reading and re-deciding ([`crate::handlers::apply`]).
//!
//! Every migration with a step in flight also passes the watchdog ([`flow::watchdog_due`]): a step whose
//! message was lost (dead-lettered by the bus, dropped by a crash the outbox could not see) is sent again,
//! and a drain whose deadline has passed without an answer is abandoned, so the source gets its writes
//! back even if the drain's message never comes back. That costs one pure check per migration and a write
//! only when due.
//!
//! Ticks never overlap: the Functions timer runs as a singleton across instances, the embedded host's
//! timer waits for a tick to end, and within a process a tick that finds the previous one still running
//! returns at once. A tick stops starting observations
//! when its time budget (a fraction of the period) is spent; the links it did not reach are the ones
//! observed longest ago, so they come first next time, and the summary says how many were deferred.
use crate::context::Context;
use crate::handlers::{apply, outbox_for};
use futures::stream::{self, StreamExt};
use milink_core::flow::{self, Event};
use milink_core::migration::{Migration, Phase};
use milink_core::names::ConnectionName;
use milink_core::ports::{MigrationFilter, StoreError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Limits of one tick.
#[derive(Debug, Clone)]
pub struct PollSettings {
    /// Observations in flight against one source server.
    pub per_source: usize,
    /// Observations in flight in total.
    pub total: usize,
    /// Stop starting observations after this long (keep it well under the timer period).
    pub budget: Duration,
}

impl Default for PollSettings {
    fn default() -> Self {
        // For the 30 s schedule in catalog.rs: 20 s of work leaves a third of the period spare.
        Self { per_source: 8, total: 64, budget: Duration::from_secs(20) }
    }
}

/// One slow server must not hold up the tick for every other link.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one tick did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollTick {
    /// Active migrations listed.
    pub listed: usize,
    /// Source servers they are on.
    pub sources: usize,
    /// Links observed.
    pub observed: usize,
    /// Observations that failed (recorded as such).
    pub failed: usize,
    /// Stalled steps nudged, and steps the watchdog found lost.
    pub nudged: usize,
    /// Saves that lost a race and were re-decided.
    pub conflicts: usize,
    /// Links not reached because the budget ran out.
    pub deferred: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// True when a previous tick was still running and this one did nothing.
    pub skipped: bool,
}

#[derive(Default)]
struct One {
    observed: usize,
    failed: usize,
    nudged: usize,
    conflicts: usize,
    deferred: usize,
}

/// Runs one tick unless one is already running in this process.
pub async fn tick_once(ctx: &Context, settings: &PollSettings, running: &tokio::sync::Mutex<()>) -> PollTick {
    let Ok(_guard) = running.try_lock() else {
        return PollTick { skipped: true, ..PollTick::default() };
    };
    tick(ctx, settings).await
}

/// One tick over every active migration.
pub async fn tick(ctx: &Context, settings: &PollSettings) -> PollTick {
    let started = Instant::now();
    let deadline = started + settings.budget;
    // Capacity freed since the last tick (a link streams, a migration ended) starts queued migrations.
    crate::runtime::admission::run(ctx).await;
    let migrations = match ctx.migrations.list(&MigrationFilter { active_only: true }).await {
        Ok(migrations) => migrations,
        Err(error) => {
            tracing::warn!(%error, "poll: cannot list migrations");
            return PollTick { elapsed: started.elapsed(), ..PollTick::default() };
        }
    };
    let listed = migrations.len();
    let mut by_source: BTreeMap<ConnectionName, Vec<Migration>> = BTreeMap::new();
    for migration in migrations {
        by_source.entry(migration.source.clone()).or_default().push(migration);
    }
    let sources = by_source.len();
    let total = Arc::new(Semaphore::new(settings.total.max(1)));
    let groups = by_source.into_values().map(|mut group| {
        // Stalest first, so a tick cut short by its budget serves the others next time.
        group.sort_by_key(|m| m.observation.as_ref().map(|o| o.at));
        let total = total.clone();
        async move {
            stream::iter(group)
                .map(|migration| {
                    let total = total.clone();
                    async move {
                        let _permit = total.acquire_owned().await.expect("the semaphore is never closed");
                        if Instant::now() >= deadline {
                            return One { deferred: 1, ..One::default() };
                        }
                        poll_one(ctx, migration).await
                    }
                })
                .buffer_unordered(settings.per_source.max(1))
                .collect::<Vec<One>>()
                .await
        }
    });
    let results: Vec<One> = futures::future::join_all(groups).await.into_iter().flatten().collect();
    let mut summary = PollTick { listed, sources, elapsed: started.elapsed(), ..PollTick::default() };
    for one in results {
        summary.observed += one.observed;
        summary.failed += one.failed;
        summary.nudged += one.nudged;
        summary.conflicts += one.conflicts;
        summary.deferred += one.deferred;
    }
    crate::telemetry::fleet::refresh_for_export(ctx).await;
    crate::runtime::alerts::run(ctx).await;
    summary
}

async fn poll_one(ctx: &Context, migration: Migration) -> One {
    let mut one = One::default();
    if flow::watchdog_due(&migration, ctx.clock.now()) {
        // A stalled step whose retry time came, or a step whose message is presumed lost: the flow
        // re-sends it (or abandons a drain past its deadline).
        one.nudged = 1;
        if let Err(error) = apply(ctx, &migration.id, &Event::Tick).await {
            tracing::warn!(migration = %migration.id, %error, "poll: nudge failed");
        }
        // The nudge saved a newer version: record this tick's observation by re-reading.
        if migration.phase == Phase::Syncing {
            let event = observe_event(ctx, &migration, &mut one).await;
            if let Err(error) = apply(ctx, &migration.id, &event).await {
                tracing::warn!(migration = %migration.id, %error, "poll: could not record the observation");
            }
        }
        return one;
    }
    if migration.phase != Phase::Syncing {
        return one;
    }
    let event = observe_event(ctx, &migration, &mut one).await;
    match record(ctx, &migration, &event).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            one.conflicts = 1;
            if let Err(error) = apply(ctx, &migration.id, &event).await {
                tracing::warn!(migration = %migration.id, %error, "poll: could not record the observation");
            }
        }
        Err(error) => tracing::warn!(migration = %migration.id, %error, "poll: could not record the observation"),
    }
    one
}

async fn observe_event(ctx: &Context, migration: &Migration, one: &mut One) -> Event {
    let event = observation_event(ctx, migration).await;
    match event {
        Event::Observed { .. } => one.observed = 1,
        _ => one.failed = 1,
    }
    event
}

/// Decides against the listed state and saves with its version: one write, no re-read.
async fn record(ctx: &Context, migration: &Migration, event: &Event) -> Result<(), StoreError> {
    let Ok(transition) = flow::decide(migration, event, ctx.clock.now()) else { return Ok(()) };
    if !transition.changed {
        return Ok(());
    }
    let outbox = outbox_for(&migration.id, migration.version + 1, transition.commands);
    ctx.migrations.save(&transition.migration, &outbox).await.map(drop)
}

/// Looks at one syncing link (bounded by [`OBSERVE_TIMEOUT`]) and returns what to tell the flow:
/// `Observed`, or `ObserveFailed` with the reason.
pub async fn observation_event(ctx: &Context, migration: &Migration) -> Event {
    let observed = match crate::handlers::link_for(ctx, migration) {
        Ok((plan, engine)) => match tokio::time::timeout(OBSERVE_TIMEOUT, engine.observe(&plan, ctx.clock.now())).await {
            Ok(observation) => observation,
            Err(_) => Err(milink_core::error::EngineError::transient(
                "observe_timeout",
                format!("looking at the link took longer than {} s", OBSERVE_TIMEOUT.as_secs()),
                "check that both servers answer quickly (locks, load, network)",
            )),
        },
        Err(error) => Err(error),
    };
    match observed {
        Ok(observation) => Event::Observed { observation },
        Err(error) => {
            tracing::debug!(migration = %migration.id, error = %error.message, "poll: observe failed");
            Event::ObserveFailed { error }
        }
    }
}
