//! Validate: prerequisites and the connection test, both directions. Blockers fail the migration
//! with every reason at once, so a user fixes them in one round.
use super::Step;
use milink_core::error::EngineError;
use milink_core::flow::Event;

/// Runs the engine's validation.
pub async fn run(step: &Step<'_>) -> Result<Event, EngineError> {
    let mut findings = step.engine_call("validate", step.engine.validate(step.plan)).await?;
    if let Some(migration) = step.ctx.migrations.load(step.id).await.ok().flatten() {
        for reason in crate::runtime::admission::never_fits(step.ctx, &migration).await {
            let remediation = "raise that setting on the server (a restart applies it), or migrate to another server";
            findings.push(milink_core::Finding::new("capacity_never_fits", milink_core::Severity::Blocker, reason, remediation));
        }
    }
    for finding in &findings {
        tracing::info!(rule = %finding.rule, severity = ?finding.severity, "{}", finding.message);
    }
    Ok(Event::Validated { findings })
}
