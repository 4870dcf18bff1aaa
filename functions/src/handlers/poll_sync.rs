//! Poll sync: the timer's handler. Looks at every syncing link and feeds what it sees to the flow; also
//! nudges stalled command-driven steps so they are retried when their time comes.
//!
//! Polls run with bounded concurrency, and the host never starts a tick before the previous one ended,
//! so a slow server delays its own observations and nothing else.
use super::apply;
use crate::context::Context;
use futures::stream::{self, StreamExt};
use milink_core::flow::Event;
use milink_core::migration::{Migration, Phase};
use milink_core::ports::MigrationFilter;

/// One slow server must not hold up the tick for every other link.
const OBSERVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What one tick did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickSummary {
    /// Links observed.
    pub observed: usize,
    /// Observations that failed.
    pub failed: usize,
    /// Stalled steps nudged.
    pub nudged: usize,
}

/// Runs one tick over every active migration, at most `concurrency` at a time.
pub async fn tick(ctx: &Context, concurrency: usize) -> TickSummary {
    let migrations = match ctx.migrations.list(&MigrationFilter { active_only: true }).await {
        Ok(migrations) => migrations,
        Err(error) => {
            tracing::warn!(%error, "poll: cannot list migrations");
            return TickSummary::default();
        }
    };
    let results: Vec<TickSummary> =
        stream::iter(migrations).map(|m| poll_one(ctx, m)).buffer_unordered(concurrency.max(1)).collect().await;
    results.into_iter().fold(TickSummary::default(), |a, b| TickSummary {
        observed: a.observed + b.observed,
        failed: a.failed + b.failed,
        nudged: a.nudged + b.nudged,
    })
}

async fn poll_one(ctx: &Context, migration: Migration) -> TickSummary {
    let mut summary = TickSummary::default();
    if migration.stall.as_ref().is_some_and(|s| s.retry_at.is_some()) {
        summary.nudged = 1;
        if let Err(error) = apply(ctx, &migration.id, &Event::Tick).await {
            tracing::warn!(migration = %migration.id, %error, "poll: nudge failed");
        }
    }
    if migration.phase != Phase::Syncing {
        return summary;
    }
    let event = observation_event(ctx, &migration).await;
    match event {
        Event::Observed { .. } => summary.observed = 1,
        _ => summary.failed = 1,
    }
    if let Err(error) = apply(ctx, &migration.id, &event).await {
        tracing::warn!(migration = %migration.id, %error, "poll: could not record the observation");
    }
    summary
}

/// Looks at one syncing link (bounded by [`OBSERVE_TIMEOUT`]) and returns what to tell the flow:
/// `Observed`, or `ObserveFailed` with the reason. Shared by both hosts' poll timers.
pub async fn observation_event(ctx: &Context, migration: &Migration) -> Event {
    match observe(ctx, migration).await {
        Ok(observation) => Event::Observed { observation },
        Err(error) => {
            tracing::debug!(migration = %migration.id, error = %error.message, "poll: observe failed");
            Event::ObserveFailed { error }
        }
    }
}

async fn observe(
    ctx: &Context,
    migration: &Migration,
) -> Result<milink_core::migration::Observation, milink_core::error::EngineError> {
    let (plan, engine) = super::link_for(ctx, migration)?;
    match tokio::time::timeout(OBSERVE_TIMEOUT, engine.observe(&plan, ctx.clock.now())).await {
        Ok(observation) => observation,
        Err(_) => Err(milink_core::error::EngineError::transient(
            "observe_timeout",
            format!("looking at the link took longer than {} s", OBSERVE_TIMEOUT.as_secs()),
            "check that both servers answer quickly (locks, load, network)",
        )),
    }
}
