//! Sync polling at fleet scale: thousands of links per tick, within the timer period.
//!
//! One tick lists the active migrations once, groups them by source server, and observes each group with
//! its own concurrency limit (a server with 500 databases is never hit by 500 sessions at once) under a
//! global limit. Each observation is decided against the state just listed and saved with that state's
//! version, so a link costs one observation and one conditional write; only a lost race (a step saved the
//! migration meanwhile) falls back to re-reading and re-deciding ([`crate::handlers::apply`]).
//!
//! Ticks never overlap: the Functions timer runs as a singleton across instances, and within a process a
//! tick that finds the previous one still running returns at once. A tick stops starting observations
//! when its time budget (a fraction of the period) is spent; the links it did not reach are the ones
//! observed longest ago, so they come first next time, and the summary says how many were deferred.
use crate::context::Context;
use crate::handlers::apply;
use futures::stream::{self, StreamExt};
use milink_core::flow::{self, Event};
use milink_core::message::Envelope;
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

/// What one tick did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FleetTick {
    /// Active migrations listed.
    pub listed: usize,
    /// Source servers they are on.
    pub sources: usize,
    /// Links observed.
    pub observed: usize,
    /// Observations that failed (recorded as such).
    pub failed: usize,
    /// Stalled steps nudged.
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
pub async fn tick_once(ctx: &Context, settings: &PollSettings, running: &tokio::sync::Mutex<()>) -> FleetTick {
    let Ok(_guard) = running.try_lock() else {
        return FleetTick { skipped: true, ..FleetTick::default() };
    };
    tick(ctx, settings).await
}

/// One tick over every active migration.
pub async fn tick(ctx: &Context, settings: &PollSettings) -> FleetTick {
    let started = Instant::now();
    let deadline = started + settings.budget;
    let migrations = match ctx.migrations.list(&MigrationFilter { active_only: true }).await {
        Ok(migrations) => migrations,
        Err(error) => {
            tracing::warn!(%error, "poll: cannot list migrations");
            return FleetTick { elapsed: started.elapsed(), ..FleetTick::default() };
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
    let mut summary = FleetTick { listed, sources, elapsed: started.elapsed(), ..FleetTick::default() };
    for one in results {
        summary.observed += one.observed;
        summary.failed += one.failed;
        summary.nudged += one.nudged;
        summary.conflicts += one.conflicts;
        summary.deferred += one.deferred;
    }
    summary
}

async fn poll_one(ctx: &Context, migration: Migration) -> One {
    let mut one = One::default();
    if migration.stall.as_ref().is_some_and(|s| s.retry_at.is_some()) {
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
    let event = crate::handlers::poll_sync::observation_event(ctx, migration).await;
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
    let outbox = Envelope::for_commands(&migration.id, migration.version + 1, transition.commands);
    ctx.migrations.save(&transition.migration, &outbox).await.map(drop)
}
