//! Cutover: fence → drain → finalize → switch, one command per step (and unfence when abandoned); and
//! failback, the same switch in reverse over a kept reverse link.
//!
//! Each step is its own message so a crash resumes at the step it was in. Drain is the only step that
//! waits: it compares the target's confirmed position with the fence position until it reaches it (and,
//! for engines that ask for it, stays equal for `drain_stable_seconds`), or until the deadline stored in the
//! migration, so a redelivered drain after a restart keeps the original deadline.
use super::Step;
use milink_core::drain::{DrainRule, DrainVerdict};
use milink_core::error::EngineError;
use milink_core::flow::{Command, Event};
use milink_core::migration::Position;
use std::time::Duration;

/// How often drain compares positions (two queries on sessions the engine keeps open, not two logins).
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// Every this many polls (about a second), drain checks it is still wanted.
const RECHECK_EVERY: u32 = 100;

async fn still_wanted(step: &Step<'_>) -> bool {
    match step.ctx.migrations.load(step.id).await {
        Ok(Some(migration)) => milink_core::flow::is_current(&migration, step.command),
        Ok(None) => false,
        Err(_) => true, // the store blinked: keep draining until the deadline
    }
}

/// Runs one cutover step.
pub async fn run(step: &Step<'_>) -> Result<Event, EngineError> {
    let (engine, plan) = (&step.engine, step.plan);
    match step.command {
        Command::Fence { attempt } => {
            // Outside the write downtime: the source still takes writes until the fence.
            if let Some(verified) = step.engine_call("verify before the fence", engine.prepare_cutover(plan)).await? {
                tracing::info!(summary = %verified.summary(), rows = verified.rows_compared, "verified before the fence");
                // A proven difference now would be found again after the fence: refuse before writes stop.
                if verified.proves_a_difference() {
                    return Ok(Event::RefusedBeforeFence { attempt: *attempt, verification: verified });
                }
            }
            let started_at = step.ctx.clock.now();
            let position = step.engine_call("fence", engine.fence(plan)).await?;
            tracing::info!(position = position.0, "source fenced");
            Ok(Event::Fenced { attempt: *attempt, started_at, position })
        }
        Command::Drain { attempt, position, deadline } => {
            // One span for the whole wait, not one per position check (twenty a second).
            step.engine_call("drain", drain(step, *attempt, *position, *deadline)).await
        }
        Command::Finalize { attempt } => {
            let verification = step.engine_call("finalize", engine.finalize(plan)).await?;
            Ok(Event::Finalized { attempt: *attempt, verification })
        }
        Command::Switch { attempt, keep_reverse_link } => {
            step.engine_call("switch", engine.switch(plan, *keep_reverse_link)).await?;
            tracing::info!("target is primary");
            Ok(Event::Switched { attempt: *attempt })
        }
        Command::Unfence { attempt } => {
            step.engine_call("unfence", engine.unfence(plan)).await?;
            tracing::info!("source unfenced");
            Ok(Event::Unfenced { attempt: *attempt })
        }
        Command::DropReverseLink => {
            step.engine_call("drop reverse link", engine.drop_reverse_link(plan)).await?;
            tracing::info!("reverse link removed");
            Ok(Event::ReverseLinkDropped)
        }
        Command::Failback => {
            let steps = step.engine_call("failback", engine.failback(plan)).await?;
            tracing::info!("failed back: the source is primary again");
            Ok(Event::FailedBack { steps })
        }
        other => Err(EngineError::definite(
            "internal",
            format!("cutover handler got a {} command", other.name()),
            "report this as a bug",
        )),
    }
}

async fn drain(
    step: &Step<'_>,
    attempt: u32,
    target: Position,
    deadline: chrono::DateTime<chrono::Utc>,
) -> Result<Event, EngineError> {
    let clock = &step.ctx.clock;
    let stable_seconds = step.plan.settings.drain_stable_seconds.max(step.engine.min_drain_stable_seconds());
    let mut rule = DrainRule::new(target, stable_seconds);
    let mut reached = None;
    let mut polls: u32 = 0;
    loop {
        match step.engine.positions(step.plan).await {
            Ok(positions) => {
                reached = Some(positions.target);
                if let DrainVerdict::Drained(position) = rule.observe(positions.target, clock.now()) {
                    return Ok(Event::Drained { attempt, position });
                }
            }
            Err(error) if error.is_transient() => tracing::warn!(error = %error.message, "drain: positions unavailable"),
            Err(error) => return Err(error),
        }
        if clock.now() >= deadline {
            return Ok(Event::DrainTimedOut { attempt, reached });
        }
        // A cancel (or anything else that made this drain stale) must not wait for the deadline with
        // the source fenced: look at the migration again now and then, and stop when it moved on.
        polls += 1;
        if polls.is_multiple_of(RECHECK_EVERY) && !still_wanted(step).await {
            return Ok(Event::DrainTimedOut { attempt, reached }); // stale: decide ignores it
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}
