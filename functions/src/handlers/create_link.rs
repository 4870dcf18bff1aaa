//! Create link: the engine creates everything the link needs, each step checking what exists first,
//! so a redelivered message after a crash resumes instead of failing on "already exists".
use super::Step;
use milink_core::error::EngineError;
use milink_core::flow::Event;

/// Creates (or finishes creating) the link.
pub async fn run(step: &Step<'_>) -> Result<Event, EngineError> {
    step.engine_call("create_link", step.engine.create_link(step.plan)).await?;
    tracing::info!(link = %step.plan.link_name(), "link created");
    Ok(Event::LinkCreated)
}
