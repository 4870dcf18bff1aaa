//! Cancel: give the source its writes back if a cutover had fenced it, then remove everything the link
//! created. The target database stays unless the migration's settings asked to drop it.
use super::Step;
use milink_core::error::EngineError;
use milink_core::flow::Event;

/// Unfences if needed and drops the link.
pub async fn run(step: &Step<'_>, unfence: bool, drop_target: bool) -> Result<Event, EngineError> {
    if unfence {
        step.engine_call("unfence", step.engine.unfence(step.plan)).await?;
    }
    step.engine_call("drop_link", step.engine.drop_link(step.plan, drop_target)).await?;
    tracing::info!(drop_target, "link removed");
    Ok(Event::LinkDropped)
}
