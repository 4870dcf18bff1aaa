//! Delivering one message, the same way in both hosts: run its handler (a panic is a failed delivery),
//! settle the outcome ([`super::settle`]), and act on it through the host's [`Transport`].
//!
//! Giving up is two things in a fixed order: first the flow is told ([`handlers::exhausted`]: the step
//! stalls, or its cutover is abandoned and the source unfenced), then the message becomes a dead letter.
//! When the flow cannot be told (the store is down), the message is retried a little later instead of
//! being dropped: a dead letter the flow never heard of is how a migration got stuck CuttingOver.
use super::settle::{settle, RetryPolicy, Settlement};
use crate::context::Context;
use crate::handlers;
use crate::telemetry::metrics;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use milink_core::error::EngineError;
use milink_core::message::Envelope;
use milink_core::ports::DeadLetter;

/// How long to wait before trying again to record a give-up the store refused.
const RECORD_GIVE_UP_AGAIN: chrono::Duration = chrono::Duration::seconds(5);

/// A transport could not settle a message: the host lets its queue deliver it again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

/// What a host does with a settled message: the only part of delivery that differs between hosts.
#[async_trait]
pub trait Transport: Send + Sync {
    /// The message was handled: remove it.
    async fn complete(&self, envelope: &Envelope) -> Result<(), TransportError>;
    /// Deliver it again as `attempt`, not before `at`.
    async fn retry(&self, envelope: &Envelope, attempt: u32, at: DateTime<Utc>, error: &str) -> Result<(), TransportError>;
    /// Keep it as a dead letter.
    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), TransportError>;
}

/// How a delivery ended, for the host's answer and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// Handled.
    Done,
    /// Scheduled again.
    Retrying {
        /// The next attempt.
        attempt: u32,
        /// Why.
        error: String,
    },
    /// Given up; the flow knows.
    DeadLettered {
        /// The last error.
        error: String,
    },
}

/// Runs delivery number `attempt` of `envelope` and settles it.
pub async fn deliver(ctx: &Context, envelope: &Envelope, attempt: u32, transport: &dyn Transport) -> Result<Delivered, TransportError> {
    let started = std::time::Instant::now();
    let outcome = std::panic::AssertUnwindSafe(handlers::handle(ctx, envelope))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(handlers::Retry(EngineError::transient("handler_panicked", "the step's handler panicked (a bug)", "see the log; report it"))))
        .map_err(|handlers::Retry(error)| error);
    let seconds = started.elapsed().as_secs_f64();
    let delivered = settle_outcome(ctx, envelope, attempt, outcome, transport).await?;
    let recorded = match &delivered {
        Delivered::Done => metrics::Outcome::Done,
        Delivered::Retrying { .. } => metrics::Outcome::Retry,
        Delivered::DeadLettered { .. } => metrics::Outcome::DeadLetter,
    };
    metrics::delivered(metrics::step_label(&envelope.payload), recorded, seconds);
    Ok(delivered)
}

async fn settle_outcome(
    ctx: &Context,
    envelope: &Envelope,
    attempt: u32,
    outcome: Result<(), EngineError>,
    transport: &dyn Transport,
) -> Result<Delivered, TransportError> {
    let policy = RetryPolicy::of(&ctx.config.server);
    let settlement = settle(outcome, attempt, &policy, ctx.clock.now(), &mut rand::thread_rng());
    let id = envelope.envelope_id.as_str();
    match settlement {
        Settlement::Done => transport.complete(envelope).await.map(|()| Delivered::Done),
        Settlement::Retry { attempt: next, at, error } => {
            tracing::info!(message = id, attempt, retry_at = %at, error = %error.message, "retrying");
            transport.retry(envelope, next, at, &error.message).await?;
            Ok(Delivered::Retrying { attempt: next, error: error.message })
        }
        Settlement::GiveUp { error } => give_up(ctx, envelope, attempt, error, transport).await,
    }
}

async fn give_up(ctx: &Context, envelope: &Envelope, attempt: u32, error: EngineError, transport: &dyn Transport) -> Result<Delivered, TransportError> {
    let last_error = format!("{}: {}", error.code, error.message);
    if let Err(handlers::Retry(e)) = handlers::exhausted(ctx, envelope, error).await {
        tracing::error!(error = %e.message, message = %envelope.envelope_id, "could not record exhausted retries; trying again shortly");
        transport.retry(envelope, attempt, ctx.clock.now() + RECORD_GIVE_UP_AGAIN, &e.message).await?;
        return Ok(Delivered::Retrying { attempt, error: e.message });
    }
    let letter = DeadLetter {
        id: envelope.envelope_id.clone(),
        stage: envelope.stage,
        envelope: serde_json::to_value(envelope).unwrap_or(serde_json::Value::Null),
        deliveries: attempt,
        last_error: Some(last_error.clone()),
        dead_at: ctx.clock.now(),
    };
    if let Err(e) = transport.dead_letter(letter).await {
        // The flow already knows (stalled, with the poll's watchdog to resend); only the record is lost.
        tracing::error!(error = %e, message = %envelope.envelope_id, "dead letter not recorded (the flow already knows)");
    }
    Ok(Delivered::DeadLettered { error: last_error })
}
