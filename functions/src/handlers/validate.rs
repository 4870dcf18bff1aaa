//! Validate: prerequisites and the connection test, both directions. Blockers fail the migration
//! with every reason at once, so a user fixes them in one round.
use super::Step;
use milink_core::error::EngineError;
use milink_core::flow::Event;

/// Runs the engine's validation.
pub async fn run(step: &Step<'_>) -> Result<Event, EngineError> {
    let findings = step.engine_call("validate", step.engine.validate(step.plan)).await?;
    for finding in &findings {
        tracing::info!(rule = %finding.rule, severity = ?finding.severity, "{}", finding.message);
    }
    Ok(Event::Validated { findings })
}
