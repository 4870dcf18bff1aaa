//! Sending to Service Bus queues over REST (`POST {namespace}/{queue}/messages`).
//!
//! Why REST and not the Functions output binding: the binding cannot set `MessageId`, `SessionId` or
//! `ScheduledEnqueueTimeUtc` from a custom handler (reference/functions-host.md §1.6), and the flow needs all
//! three: the message id is the envelope's deterministic id (the queue's duplicate detection drops a
//! message sent twice, by a committer and by the relay), the session is the envelope's ordering key (one
//! migration's steps run one at a time, in order), and retries are scheduled later rather than abandoned into
//! an immediate redelivery. Why REST and not AMQP: the Functions host does all receiving, so sending is the
//! only operation we need, and one HTTPS POST per message needs no AMQP stack.
//!
//! The namespace URL is configurable, so tests point the sender at a local double that checks each request
//! against the documented contract (URL, `Authorization`, `BrokerProperties`).
use crate::auth::{self, BusAuth};
use crate::store::Publisher;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use milink_core::message::Envelope;
use reqwest::Url;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The application property carrying how many times a message's step has been tried.
pub const ATTEMPT_PROPERTY: &str = "milinkAttempt";
/// How long a SAS token we make stays valid.
const SAS_TTL_SECONDS: i64 = 3600;

/// Where to send and how to sign in.
#[derive(Debug, Clone)]
pub struct ServiceBusConfig {
    /// `https://<namespace>.servicebus.windows.net` (or a test double's URL).
    pub namespace_url: String,
    /// SAS (development) or Entra token (managed identity).
    pub auth: BusAuth,
    /// Queue names are this prefix plus the stage: `milink-assess`, `milink-migration`, `milink-notify`.
    pub queue_prefix: String,
}

impl ServiceBusConfig {
    /// Checks what can be checked without the network.
    pub fn validate(&self) -> Result<(), String> {
        let url = Url::parse(&self.namespace_url).map_err(|e| format!("service bus URL {:?}: {e}", self.namespace_url))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(format!("service bus URL {:?} must be https://<namespace>.servicebus.windows.net", self.namespace_url));
        }
        if !self.queue_prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            return Err(format!("queue prefix {:?}: letters, digits, '-', '_' and '.' only", self.queue_prefix));
        }
        Ok(())
    }
}

/// One message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct BusMessage {
    /// The queue.
    pub queue: String,
    /// The body (JSON).
    pub body: String,
    /// Duplicate-detection key.
    pub message_id: String,
    /// Session (ordering key).
    pub session_id: Option<String>,
    /// Deliver no earlier than this.
    pub scheduled_enqueue_time: Option<DateTime<Utc>>,
    /// Application properties (sent as headers).
    pub properties: BTreeMap<String, Value>,
}

impl BusMessage {
    /// The message for an envelope: its stage's queue, its id, its ordering key as the session.
    pub fn for_envelope(envelope: &Envelope, queue_prefix: &str) -> Self {
        Self {
            queue: format!("{queue_prefix}{}", envelope.stage),
            body: serde_json::to_string(envelope).expect("an envelope serializes"),
            message_id: envelope.envelope_id.clone(),
            session_id: Some(envelope.ordering_key.clone()),
            scheduled_enqueue_time: None,
            properties: BTreeMap::new(),
        }
    }

    /// The same envelope again, for attempt `attempt`, not before `at` (a retry with backoff). Its id is
    /// derived from the original and the attempt, so resending the same retry is still deduplicated.
    pub fn retry_of(envelope: &Envelope, queue_prefix: &str, attempt: u32, at: DateTime<Utc>) -> Self {
        let mut message = Self::for_envelope(envelope, queue_prefix);
        message.message_id = format!("{}:retry{attempt}", envelope.envelope_id);
        message.scheduled_enqueue_time = Some(at);
        message.properties.insert(ATTEMPT_PROPERTY.into(), json!(attempt));
        message
    }

    /// The `BrokerProperties` header: JSON, times in RFC 1123 as the REST API documents them.
    pub fn broker_properties(&self) -> Value {
        let mut properties = Map::new();
        properties.insert("MessageId".into(), json!(self.message_id));
        if let Some(session) = &self.session_id {
            properties.insert("SessionId".into(), json!(session));
        }
        if let Some(at) = self.scheduled_enqueue_time {
            properties.insert("ScheduledEnqueueTimeUtc".into(), json!(at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()));
        }
        Value::Object(properties)
    }
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: network, throttling (429/503), server errors, expired credentials being refreshed.
    #[error("service bus: {0}")]
    Transient(String),
    /// Will fail again until someone fixes the configuration: 401/403 (rights), 404/410 (no such queue),
    /// 400 (bad request), 413 (too large).
    #[error("service bus: {0}")]
    Definite(String),
}

/// Sends messages to the stage queues.
#[derive(Debug, Clone)]
pub struct ServiceBusSender {
    config: ServiceBusConfig,
    base: Url,
    http: reqwest::Client,
}

impl ServiceBusSender {
    /// A sender; fails on a bad URL or prefix.
    pub fn new(config: ServiceBusConfig, http: reqwest::Client) -> Result<Self, String> {
        config.validate()?;
        let mut text = config.namespace_url.trim_end_matches('/').to_owned();
        text.push('/');
        let base = Url::parse(&text).map_err(|e| e.to_string())?;
        Ok(Self { config, base, http })
    }

    /// The queue-name prefix.
    pub fn queue_prefix(&self) -> &str {
        &self.config.queue_prefix
    }

    /// The `Authorization` header value for `queue`.
    async fn authorization(&self, queue_url: &Url) -> Result<String, SendError> {
        match &self.config.auth {
            BusAuth::Sas { key_name, key } => {
                let expiry = Utc::now().timestamp() + SAS_TTL_SECONDS;
                let resource = queue_url.as_str().trim_end_matches("/messages");
                Ok(auth::service_bus_sas(resource, key_name, key, expiry))
            }
            BusAuth::Token(credential) => auth::bearer(credential.as_ref(), auth::SERVICE_BUS_SCOPE)
                .await
                .map_err(|e| SendError::Transient(e.to_string())),
        }
    }

    /// Sends one message; Ok once Service Bus answered 201.
    pub async fn send(&self, message: &BusMessage) -> Result<(), SendError> {
        let url = self
            .base
            .join(&format!("{}/messages", auth::encode_component(&message.queue)))
            .map_err(|e| SendError::Definite(format!("queue URL: {e}")))?;
        let authorization = self.authorization(&url).await?;
        let mut request = self
            .http
            .post(url)
            .header("Authorization", authorization)
            .header("Content-Type", "application/json")
            .header("BrokerProperties", message.broker_properties().to_string())
            .body(message.body.clone());
        for (name, value) in &message.properties {
            request = request.header(name.as_str(), value.to_string());
        }
        let response = request.send().await.map_err(|e| SendError::Transient(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        if status == 201 {
            return Ok(());
        }
        let body: String = response.text().await.unwrap_or_default().chars().take(300).collect();
        let what = format!("send to {} answered HTTP {status}: {body}", message.queue);
        match status {
            400 | 401 | 403 | 404 | 410 | 413 => Err(SendError::Definite(format!(
                "{what}; check the queue exists and the identity has Azure Service Bus Data Sender on it"
            ))),
            _ => Err(SendError::Transient(what)),
        }
    }
}

#[async_trait]
impl Publisher for ServiceBusSender {
    async fn publish(&self, envelopes: &[Envelope]) -> Result<(), String> {
        for envelope in envelopes {
            self.send(&BusMessage::for_envelope(envelope, &self.config.queue_prefix)).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use milink_core::flow::Command;
    use milink_core::names::MigrationId;

    #[test]
    fn an_envelope_becomes_a_message_on_its_stage_queue_with_its_id_and_session() {
        let envelope = Envelope::for_command(&MigrationId("m-1".into()), 4, 0, Command::CreateLink);
        let message = BusMessage::for_envelope(&envelope, "milink-");
        assert_eq!(message.queue, "milink-migration", "every step of a migration goes to its one session queue");
        assert_eq!(message.message_id, "m-1:create-link:4:0");
        assert_eq!(message.broker_properties(), json!({ "MessageId": "m-1:create-link:4:0", "SessionId": "m-1" }));
        let at = DateTime::parse_from_rfc3339("1994-11-06T08:49:37Z").unwrap().to_utc();
        let retry = BusMessage::retry_of(&envelope, "milink-", 2, at);
        assert_eq!(retry.broker_properties()["ScheduledEnqueueTimeUtc"], "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(retry.message_id, "m-1:create-link:4:0:retry2");
        assert_eq!(retry.properties[ATTEMPT_PROPERTY], 2);
    }
}
