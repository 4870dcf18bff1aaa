//! Verify: compares source and target content while the link syncs (on demand), and records the report.
//!
//! The engine compares at matched positions, so replication lag is not a difference; the report (tables,
//! chunks, differing keys, positions, timing) lands on the migration as its last verification, where a
//! difference blocks the next cutover until a later verification is clean.
use super::Step;
use milink_core::error::EngineError;
use milink_core::flow::Event;

/// Runs one verification request.
pub async fn run(step: &Step<'_>, request: u32) -> Result<Event, EngineError> {
    let started = step.ctx.clock.now();
    let mut verification = step.engine_call("verify", step.engine.verify(step.plan)).await?;
    verification.started_at.get_or_insert(started);
    verification.finished_at.get_or_insert(step.ctx.clock.now());
    tracing::info!(request, summary = %verification.summary(), rows = verification.rows_compared, "verified");
    Ok(Event::Verified { request, verification })
}
