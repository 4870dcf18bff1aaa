//! The stage handlers, one file each, and what they share: how an event is applied to a migration.
//!
//! [`handle`] routes an envelope to its stage. A handler returns `Err` only for *transient* failures;
//! the host retries those with backoff and, when attempts run out, calls [`exhausted`], which lets the
//! flow decide (Stalled, or abandon a cutover). Definite failures become `StepFailed` events inside the
//! handler, so the message is consumed and the migration shows the error and its remediation.
pub mod assess;
pub mod cancel;
pub mod create_link;
pub mod cutover;
pub mod notify;
pub mod validate;
pub mod verify;

use crate::context::Context;
use milink_core::config::LookupError;
use milink_core::error::EngineError;
use milink_core::flow::{self, Command, Event, Rejection};
use milink_core::message::{Envelope, Payload};
use milink_core::migration::Migration;
use milink_core::names::MigrationId;
use milink_core::ports::{LinkPlan, StoreError};
use std::sync::Arc;
use tracing::Instrument;

/// A failure worth retrying.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Retry(pub EngineError);

impl From<StoreError> for Retry {
    fn from(error: StoreError) -> Self {
        Retry(EngineError::transient("store_unavailable", error.to_string(), "check the state store; milink retries"))
    }
}

/// Why applying an event did not produce a saved state.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// No such migration.
    #[error("migration {0} not found")]
    NotFound(MigrationId),
    /// The flow refused (user requests only).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ApplyError> for Retry {
    fn from(error: ApplyError) -> Self {
        match error {
            ApplyError::Store(e) => e.into(),
            other => Retry(EngineError::transient("apply_failed", other.to_string(), "milink retries")),
        }
    }
}

/// Loads the migration, decides, and saves state with its messages; on a version conflict re-reads and
/// re-decides (the other writer may have made this event stale).
pub async fn apply(ctx: &Context, id: &MigrationId, event: &Event) -> Result<Migration, ApplyError> {
    let mut conflicts = 0;
    loop {
        let current = ctx.migrations.load(id).await?.ok_or_else(|| ApplyError::NotFound(id.clone()))?;
        let transition = flow::decide(&current, event, ctx.clock.now())?;
        if !transition.changed {
            return Ok(current);
        }
        let outbox = outbox_for(id, current.version + 1, transition.commands);
        match ctx.migrations.save(&transition.migration, &outbox).await {
            Ok(saved) => return Ok(saved),
            Err(StoreError::Conflict(_)) if conflicts < 20 => conflicts += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The messages of a transition saved at `version`, carrying the current trace context: every writer
/// of a migration (handlers, API, poll) builds its outbox here, so a migration stays one trace.
pub fn outbox_for(id: &MigrationId, version: u64, commands: Vec<Command>) -> Vec<Envelope> {
    let trace_parent = crate::telemetry::current_trace_parent();
    Envelope::for_commands(id, version, commands).into_iter().map(|e| e.with_trace_parent(trace_parent.clone())).collect()
}

/// Routes one message to its stage.
pub async fn handle(ctx: &Context, envelope: &Envelope) -> Result<(), Retry> {
    match &envelope.payload {
        Payload::Assess { assessment_id, connection } => {
            let span = tracing::info_span!(
                "assess",
                otel.name = "assess",
                assessment = %assessment_id,
                connection = %connection,
                trace_id = tracing::field::Empty,
            );
            crate::telemetry::continue_trace(&span, envelope.trace_parent.as_deref());
            assess::run(ctx, assessment_id, connection).instrument(span).await
        }
        Payload::AssessmentCompleted { assessment_id, message } => {
            let span = tracing::info_span!("notify", assessment = %assessment_id, trace_id = tracing::field::Empty);
            crate::telemetry::continue_trace(&span, envelope.trace_parent.as_deref());
            notify::assessment_completed(ctx, &envelope.envelope_id, assessment_id, message).instrument(span).await
        }
        Payload::Migration { migration_id, command } => {
            let span = tracing::info_span!(
                "step",
                otel.name = format!("step {}", command.name()),
                migration = %migration_id,
                step = command.name(),
                trace_id = tracing::field::Empty,
            );
            crate::telemetry::continue_trace(&span, envelope.trace_parent.as_deref());
            run_command(ctx, migration_id, command, &envelope.envelope_id).instrument(span).await
        }
    }
}

async fn run_command(ctx: &Context, id: &MigrationId, command: &Command, envelope_id: &str) -> Result<(), Retry> {
    let Some(migration) = ctx.migrations.load(id).await? else {
        tracing::warn!("message for unknown migration dropped");
        return Ok(());
    };
    if !flow::is_current(&migration, command) {
        tracing::debug!(phase = ?migration.phase, "stale or duplicate message ignored");
        return Ok(());
    }
    if let Command::Notify { status, message } = command {
        return notify::migration(ctx, envelope_id, &migration, status, message).await;
    }
    // A config problem is retried (and then stalls) rather than failing: a renamed connection during a
    // cutover must not strand a fenced source; fixing the config and restarting lets the step finish.
    let (plan, engine) = link_for(ctx, &migration).map_err(Retry)?;
    let step = Step { ctx, id, command, plan: &plan, engine };
    let event = match command {
        Command::Validate => validate::run(&step).await,
        Command::CreateLink => create_link::run(&step).await,
        Command::DropLink { unfence, drop_target } => cancel::run(&step, *unfence, *drop_target).await,
        Command::Verify { request } => verify::run(&step, *request).await,
        _ => cutover::run(&step).await,
    };
    match event {
        Ok(event) => {
            let saved = apply(ctx, id, &event).await.map_err(Retry::from)?;
            if matches!(command, Command::Validate) {
                // Queued by the validation: start it now if it fits, rather than a poll tick later.
                crate::runtime::admission::run(ctx).await;
            }
            if crate::telemetry::metrics::is_cutover_step(command) {
                crate::telemetry::metrics::cutover_recorded(&migration, &saved);
            }
            Ok(())
        }
        Err(error) if error.is_transient() => Err(Retry(error)),
        Err(error) => fail(ctx, id, command, error).await,
    }
}

/// One command being handled, with what the stage needs.
pub struct Step<'a> {
    /// The context.
    pub ctx: &'a Context,
    /// The migration.
    pub id: &'a MigrationId,
    /// The command.
    pub command: &'a Command,
    /// The link plan (secrets in memory).
    pub plan: &'a LinkPlan,
    /// The engine for the pair.
    pub engine: Arc<dyn milink_core::ports::Engine>,
}

impl Step<'_> {
    /// Runs one engine operation in its own span, a child of this step's (see [`crate::telemetry::spans`]).
    pub async fn engine_call<T>(
        &self,
        operation: &'static str,
        work: impl std::future::Future<Output = Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        crate::telemetry::spans::traced(crate::telemetry::spans::engine(operation, self.engine.name(), self.plan), work).await
    }
}

/// The plan and engine of a migration's link, from the config as it is now.
pub fn link_for(ctx: &Context, migration: &Migration) -> Result<(LinkPlan, Arc<dyn milink_core::ports::Engine>), EngineError> {
    let plan = crate::engines::plan(&ctx.config, migration).map_err(LookupError::into_engine_error)?;
    let engine = ctx.engines.for_pair(&plan.source, &plan.target).map_err(LookupError::into_engine_error)?;
    Ok((plan, engine))
}

async fn fail(ctx: &Context, id: &MigrationId, command: &Command, error: EngineError) -> Result<(), Retry> {
    tracing::warn!(code = %error.code, error = %error.message, "step failed");
    let event = Event::StepFailed { command: command.clone(), error };
    apply(ctx, id, &event).await.map(drop).map_err(Retry::from)
}

/// Called by the host when a message's retries are used up.
pub async fn exhausted(ctx: &Context, envelope: &Envelope, error: EngineError) -> Result<(), Retry> {
    match &envelope.payload {
        Payload::Migration { migration_id, command } => {
            tracing::warn!(migration = %migration_id, step = command.name(), error = %error.message, "retries exhausted");
            let event = Event::StepExhausted { command: command.clone(), error };
            match apply(ctx, migration_id, &event).await {
                Ok(saved) => {
                    if saved.stall.is_some() {
                        crate::telemetry::metrics::stalled(command.name());
                    }
                    Ok(())
                }
                Err(ApplyError::NotFound(_)) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Payload::Assess { assessment_id, .. } => assess::give_up(ctx, assessment_id, error).await,
        Payload::AssessmentCompleted { .. } => Ok(()),
    }
}
