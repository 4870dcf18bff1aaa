//! Queue-triggered functions: one envelope per invocation, delivered through the runtime
//! ([`crate::runtime::deliver`]); a retry is a rescheduled send rather than an abandon, because an
//! abandoned message comes back at once and burns through the queue's delivery count in seconds.
use super::payload::{self, InvocationResult};
use super::AzureHost;
use crate::runtime::{self, Delivered, Transport, TransportError};
use async_trait::async_trait;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use milink_azure::servicebus::ATTEMPT_PROPERTY;
use milink_azure::BusMessage;
use milink_core::message::{Envelope, Stage};
use milink_core::ports::DeadLetter;
use serde_json::{Map, Value};

/// Handles one delivery.
pub(super) async fn run(
    host: &AzureHost,
    stage: Stage,
    trigger: Option<&Value>,
    metadata: &Map<String, Value>,
) -> (StatusCode, InvocationResult) {
    let envelope = match trigger.map(payload::trigger_json).map(serde_json::from_value::<Envelope>) {
        Some(Ok(envelope)) => envelope,
        Some(Err(error)) => return poison(format!("the message is not a milink envelope: {error}")),
        None => return poison("Data.message is missing".into()),
    };
    if envelope.stage != stage {
        tracing::warn!(queue = %stage, envelope_stage = %envelope.stage, "message on another stage's queue; handling it anyway");
    }
    let (chain, attempt) = attempt(metadata);
    let transport = BusTransport { host, chain };
    match runtime::deliver(&host.ctx, &envelope, attempt, &transport).await {
        Ok(Delivered::Done) => (StatusCode::OK, InvocationResult::log(format!("{} handled (attempt {attempt})", envelope.envelope_id))),
        Ok(Delivered::Retrying { attempt: next, error }) => {
            (StatusCode::OK, InvocationResult::log(format!("{} retry {next} scheduled: {error}", envelope.envelope_id)))
        }
        Ok(Delivered::DeadLettered { error }) => {
            (StatusCode::OK, InvocationResult::log(format!("{} gave up after {attempt} attempts: {error}", envelope.envelope_id)))
        }
        // Not settled (the retry could not be sent): fail the invocation so Service Bus delivers it again.
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, InvocationResult::log(format!("could not settle ({error}); failing so Service Bus redelivers"))),
    }
}

/// Which attempt this delivery is: (the retry chain's own count, the attempt counting redeliveries too).
///
/// The chain count is the `milinkAttempt` application property our retries carry (1 when absent); the
/// attempt adds the host's `DeliveryCount` minus one, so Service Bus redeliveries after a crash or a failed
/// invocation count toward `[server] max_attempts` too.
pub(super) fn attempt(metadata: &Map<String, Value>) -> (u32, u32) {
    let ours = payload::get(metadata, "ApplicationProperties")
        .map(payload::unwrap_json)
        .and_then(|properties| match properties {
            Value::Object(map) => payload::metadata_u32(&map, ATTEMPT_PROPERTY),
            _ => None,
        })
        .unwrap_or(1);
    let deliveries = payload::metadata_u32(metadata, "DeliveryCount").unwrap_or(1).max(1);
    (ours, ours.saturating_add(deliveries - 1))
}

/// Service Bus as the runtime's transport: a retry is a scheduled send of the same envelope, completion
/// is the 200 answer itself, dead letters go to the dead-letter table.
struct BusTransport<'a> {
    host: &'a AzureHost,
    /// The retry chain's count of the message being handled.
    chain: u32,
}

#[async_trait]
impl Transport for BusTransport<'_> {
    async fn complete(&self, _: &Envelope) -> Result<(), TransportError> {
        Ok(()) // the 200 answer completes the message
    }

    async fn retry(&self, envelope: &Envelope, attempt: u32, at: DateTime<Utc>, _error: &str) -> Result<(), TransportError> {
        // The id follows the chain, not the redelivery count: if this invocation's answer is lost after the
        // send, Service Bus delivers the message again, and that delivery's retry has the same id, so
        // duplicate detection drops it instead of starting a second retry chain.
        let mut message = BusMessage::retry_of(envelope, self.host.sender.queue_prefix(), attempt, at);
        message.message_id = format!("{}:retry{}", envelope.envelope_id, self.chain + 1);
        self.host.sender.send(&message).await.map_err(|e| TransportError(e.to_string()))
    }

    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), TransportError> {
        self.host.store.put_dead_letter(&letter).await.map_err(|e| TransportError(e.to_string()))
    }
}

fn poison(reason: String) -> (StatusCode, InvocationResult) {
    tracing::error!(%reason, "undecodable message; failing it so Service Bus dead-letters it after its max delivery count");
    (StatusCode::UNPROCESSABLE_ENTITY, InvocationResult::log(reason))
}

#[cfg(test)]
mod tests {
    use super::attempt;
    use serde_json::json;

    #[test]
    fn attempts_count_our_retries_and_the_hosts_redeliveries() {
        let first = json!({ "DeliveryCount": "1" });
        assert_eq!(attempt(first.as_object().unwrap()), (1, 1));
        let redelivered = json!({ "DeliveryCount": 3 });
        assert_eq!(attempt(redelivered.as_object().unwrap()), (1, 3));
        let rescheduled = json!({ "DeliveryCount": "\"2\"", "ApplicationProperties": { "milinkAttempt": "4" } });
        assert_eq!(attempt(rescheduled.as_object().unwrap()), (4, 5));
        assert_eq!(attempt(json!({}).as_object().unwrap()), (1, 1));
    }
}
