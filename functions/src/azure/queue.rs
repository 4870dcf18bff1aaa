//! Queue-triggered functions: one envelope per invocation, retried by rescheduling rather than abandoning.
//!
//! The attempt number is the `milinkAttempt` application property our retries carry (1 when absent) plus
//! the host's `DeliveryCount` minus one, so both our rescheduled retries and Service Bus redeliveries
//! after a crash or a failed invocation count toward `[server] max_attempts`.
use super::payload::{self, InvocationResult};
use super::AzureHost;
use crate::embedded::dispatcher::backoff;
use crate::handlers;
use axum::http::StatusCode;
use milink_azure::servicebus::ATTEMPT_PROPERTY;
use milink_azure::store::DeadLetterRecord;
use milink_azure::BusMessage;
use milink_core::error::EngineError;
use milink_core::message::Envelope;
use serde_json::{Map, Value};

/// Handles one delivery.
pub(super) async fn run(
    host: &AzureHost,
    stage: &str,
    trigger: Option<&Value>,
    metadata: &Map<String, Value>,
) -> (StatusCode, InvocationResult) {
    let envelope = match trigger.map(payload::trigger_json).map(serde_json::from_value::<Envelope>) {
        Some(Ok(envelope)) => envelope,
        Some(Err(error)) => return poison(format!("the message is not a milink envelope: {error}")),
        None => return poison("Data.message is missing".into()),
    };
    if envelope.stage != stage {
        tracing::warn!(queue = stage, envelope_stage = %envelope.stage, "message on another stage's queue; handling it anyway");
    }
    let attempt = attempt(metadata);
    match handlers::handle(&host.ctx, &envelope).await {
        Ok(()) => (StatusCode::OK, InvocationResult::log(format!("{} handled (attempt {attempt})", envelope.envelope_id))),
        Err(handlers::Retry(error)) => retry_or_give_up(host, &envelope, attempt, error).await,
    }
}

/// Which attempt this delivery is (1-based).
pub(super) fn attempt(metadata: &Map<String, Value>) -> u32 {
    let ours = payload::get(metadata, "ApplicationProperties")
        .map(payload::unwrap_json)
        .and_then(|properties| match properties {
            Value::Object(map) => payload::metadata_u32(&map, ATTEMPT_PROPERTY),
            _ => None,
        })
        .unwrap_or(1);
    let deliveries = payload::metadata_u32(metadata, "DeliveryCount").unwrap_or(1).max(1);
    ours.saturating_add(deliveries - 1)
}

async fn retry_or_give_up(host: &AzureHost, envelope: &Envelope, attempt: u32, error: EngineError) -> (StatusCode, InvocationResult) {
    let server = &host.ctx.config.server;
    if attempt >= server.max_attempts {
        let last_error = format!("{}: {}", error.code, error.message);
        if let Err(handlers::Retry(e)) = handlers::exhausted(&host.ctx, envelope, error).await {
            // Not recorded: fail the invocation so Service Bus delivers it again.
            return (StatusCode::SERVICE_UNAVAILABLE, InvocationResult::log(format!("could not record exhausted retries: {}", e.message)));
        }
        let record = DeadLetterRecord {
            id: envelope.envelope_id.clone(),
            stage: envelope.stage.clone(),
            envelope: serde_json::to_value(envelope).unwrap_or(Value::Null),
            deliveries: attempt,
            last_error: Some(last_error.clone()),
            dead_at: host.ctx.clock.now(),
        };
        if let Err(e) = host.store.put_dead_letter(&record).await {
            tracing::error!(error = %e, message = %envelope.envelope_id, "dead letter not recorded (the flow already knows)");
        }
        return (StatusCode::OK, InvocationResult::log(format!("{} gave up after {attempt} attempts: {last_error}", envelope.envelope_id)));
    }
    let delay = backoff(server.retry_base_ms, server.retry_max_ms, attempt);
    let at = host.ctx.clock.now() + chrono::Duration::from_std(delay).unwrap_or_default();
    let retry = BusMessage::retry_of(envelope, host.sender.queue_prefix(), attempt + 1, at);
    match host.sender.send(&retry).await {
        Ok(()) => {
            tracing::info!(message = %envelope.envelope_id, attempt, delay_ms = delay.as_millis() as u64, error = %error.message, "retry scheduled");
            (StatusCode::OK, InvocationResult::log(format!("{} retry {} at {at}: {}", envelope.envelope_id, attempt + 1, error.message)))
        }
        Err(send_error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            InvocationResult::log(format!("could not schedule a retry ({send_error}); failing so Service Bus redelivers")),
        ),
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
        assert_eq!(attempt(first.as_object().unwrap()), 1);
        let redelivered = json!({ "DeliveryCount": 3 });
        assert_eq!(attempt(redelivered.as_object().unwrap()), 3);
        let rescheduled = json!({ "DeliveryCount": "\"2\"", "ApplicationProperties": { "milinkAttempt": "4" } });
        assert_eq!(attempt(rescheduled.as_object().unwrap()), 5);
        assert_eq!(attempt(json!({}).as_object().unwrap()), 1);
    }
}
