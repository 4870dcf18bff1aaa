//! A Service Bus double (named as such: the real service cannot run here, and its emulator speaks only
//! AMQP). It serves the REST send endpoint the sender uses and checks every request against the
//! documented contract before accepting it: a SAS token that verifies with the policy key, a
//! `BrokerProperties` header with a MessageId and (the queues are session-enabled) a SessionId, an RFC 1123
//! scheduled time. Then it behaves like the queues milink's Bicep creates: duplicate detection on MessageId,
//! FIFO per session with one message of a session in flight at a time, scheduled messages invisible until
//! due, abandon = immediate redelivery with DeliveryCount + 1, dead-lettering after the max delivery count.
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use serde_json::{Map, Value};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

pub const KEY_NAME: &str = "milink-send";
pub const KEY: &str = "dGVzdC1wb2xpY3kta2V5";
/// As infra/main.bicep sets it.
pub const MAX_DELIVERY_COUNT: u32 = 10;

/// A message on a queue.
#[derive(Debug, Clone)]
pub struct Message {
    pub queue: String,
    pub body: String,
    pub message_id: String,
    pub session_id: String,
    pub properties: Map<String, Value>,
    pub visible_at: DateTime<Utc>,
    pub enqueued_at: DateTime<Utc>,
    pub sequence: u64,
    pub delivery_count: u32,
}

#[derive(Default)]
struct Queues {
    messages: VecDeque<Message>,
    in_flight: HashSet<(String, String)>,
    seen_ids: HashSet<String>,
    dead: Vec<(Message, String)>,
    sequence: u64,
    accepted: u64,
    duplicates: u64,
    rejected: Vec<String>,
}

/// The double; cheap to clone.
#[derive(Clone, Default)]
pub struct BusDouble {
    queues: Arc<Mutex<Queues>>,
}

impl BusDouble {
    /// Serves the REST endpoint; returns the namespace URL.
    pub async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = Router::new().route("/{queue}/messages", post(send)).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        url
    }

    /// Takes the next deliverable message (visible, its session not in flight), locking its session.
    pub fn receive(&self) -> Option<Message> {
        let mut queues = self.queues.lock().unwrap();
        let now = Utc::now();
        let index = {
            let q = &*queues;
            let mut heads_seen = HashSet::new();
            let mut best: Option<(DateTime<Utc>, u64, usize)> = None;
            for (i, m) in q.messages.iter().enumerate() {
                let key = (m.queue.clone(), m.session_id.clone());
                if q.in_flight.contains(&key) || m.visible_at > now {
                    continue;
                }
                // FIFO per session: only the session's first visible message may go.
                if !heads_seen.insert(key) {
                    continue;
                }
                if best.is_none_or(|(at, seq, _)| (m.visible_at, m.sequence) < (at, seq)) {
                    best = Some((m.visible_at, m.sequence, i));
                }
            }
            best.map(|(_, _, i)| i)
        }?;
        let mut message = queues.messages.remove(index)?;
        message.delivery_count += 1;
        queues.in_flight.insert((message.queue.clone(), message.session_id.clone()));
        Some(message)
    }

    /// The handler succeeded: the message is gone, its session free.
    pub fn complete(&self, message: &Message) {
        let mut queues = self.queues.lock().unwrap();
        queues.in_flight.remove(&(message.queue.clone(), message.session_id.clone()));
    }

    /// A redelivery of a completed message, as when a lock is lost after the handler ran: same id, same
    /// session, next in line.
    pub fn redeliver(&self, message: &Message) {
        let mut queues = self.queues.lock().unwrap();
        let mut again = message.clone();
        again.visible_at = Utc::now();
        queues.messages.push_front(again);
    }

    /// The handler failed: back to the head of its session at once, or dead-lettered.
    pub fn abandon(&self, message: Message, reason: &str) {
        let mut queues = self.queues.lock().unwrap();
        queues.in_flight.remove(&(message.queue.clone(), message.session_id.clone()));
        if message.delivery_count >= MAX_DELIVERY_COUNT {
            queues.dead.push((message, format!("MaxDeliveryCountExceeded: {reason}")));
        } else {
            let mut again = message;
            again.visible_at = Utc::now();
            queues.messages.push_front(again);
        }
    }

    /// Service Bus dead-letters a received message by itself (a poison verdict, a lock lost too often):
    /// the handler never sees it again.
    pub fn dead_letter(&self, message: Message, reason: &str) {
        let mut queues = self.queues.lock().unwrap();
        queues.in_flight.remove(&(message.queue.clone(), message.session_id.clone()));
        queues.dead.push((message, reason.to_owned()));
    }

    /// Nothing queued, nothing in flight.
    pub fn idle(&self) -> bool {
        let queues = self.queues.lock().unwrap();
        queues.messages.is_empty() && queues.in_flight.is_empty()
    }

    pub fn dead_letters(&self) -> Vec<(Message, String)> {
        self.queues.lock().unwrap().dead.clone()
    }

    /// (accepted sends, duplicates dropped, requests refused with the reason).
    pub fn stats(&self) -> (u64, u64, Vec<String>) {
        let queues = self.queues.lock().unwrap();
        (queues.accepted, queues.duplicates, queues.rejected.clone())
    }
}

fn refuse(double: &BusDouble, status: StatusCode, reason: String) -> (StatusCode, String) {
    double.queues.lock().unwrap().rejected.push(reason.clone());
    (status, reason)
}

async fn send(State(double): State<BusDouble>, Path(queue): Path<String>, uri: Uri, headers: HeaderMap, body: String) -> (StatusCode, String) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Err(reason) = verify_sas(header("authorization").as_deref(), &uri) {
        return refuse(&double, StatusCode::UNAUTHORIZED, reason);
    }
    if header("content-type").as_deref() != Some("application/json") {
        return refuse(&double, StatusCode::BAD_REQUEST, "Content-Type must be application/json".into());
    }
    let broker: Map<String, Value> = match header("brokerproperties").map(|b| serde_json::from_str(&b)) {
        Some(Ok(Value::Object(map))) => map,
        _ => return refuse(&double, StatusCode::BAD_REQUEST, "BrokerProperties is missing or not a JSON object".into()),
    };
    let Some(message_id) = broker.get("MessageId").and_then(Value::as_str).filter(|id| !id.is_empty() && id.len() <= 128) else {
        return refuse(&double, StatusCode::BAD_REQUEST, "MessageId missing or longer than 128".into());
    };
    let Some(session_id) = broker.get("SessionId").and_then(Value::as_str) else {
        return refuse(
            &double,
            StatusCode::BAD_REQUEST,
            "The SessionId was not set on a message, and it cannot be sent to the entity.".into(),
        );
    };
    let visible_at = match broker.get("ScheduledEnqueueTimeUtc").and_then(Value::as_str) {
        None => Utc::now(),
        Some(text) => match DateTime::parse_from_rfc2822(text) {
            Ok(at) => at.to_utc(),
            Err(e) => return refuse(&double, StatusCode::BAD_REQUEST, format!("ScheduledEnqueueTimeUtc {text:?}: {e}")),
        },
    };
    let standard = ["authorization", "content-type", "brokerproperties", "content-length", "host", "accept", "user-agent"];
    let properties: Map<String, Value> = headers
        .iter()
        .filter(|(name, _)| !standard.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            let text = value.to_str().ok()?;
            Some((name.as_str().to_owned(), serde_json::from_str(text).unwrap_or(Value::String(text.to_owned()))))
        })
        .collect();
    let mut queues = double.queues.lock().unwrap();
    if !queues.seen_ids.insert(format!("{queue}/{message_id}")) {
        queues.duplicates += 1;
        return (StatusCode::CREATED, String::new()); // duplicate detection: accepted and dropped
    }
    queues.sequence += 1;
    queues.accepted += 1;
    let message = Message {
        queue,
        body,
        message_id: message_id.to_owned(),
        session_id: session_id.to_owned(),
        properties,
        visible_at,
        enqueued_at: Utc::now(),
        sequence: queues.sequence,
        delivery_count: 0,
    };
    queues.messages.push_back(message);
    (StatusCode::CREATED, String::new())
}

/// `SharedAccessSignature sr=…&sig=…&se=…&skn=…`, signed over the entity URI with [`KEY`].
fn verify_sas(token: Option<&str>, uri: &Uri) -> Result<(), String> {
    let token = token.ok_or("no Authorization header")?;
    let fields = token.strip_prefix("SharedAccessSignature ").ok_or("not a SAS token")?;
    let field = |name: &str| fields.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}="))).ok_or(format!("SAS without {name}"));
    let (sr, sig, se, skn) = (field("sr")?, field("sig")?, field("se")?, field("skn")?);
    if skn != KEY_NAME {
        return Err(format!("unknown policy {skn}"));
    }
    let expiry: i64 = se.parse().map_err(|_| "se is not a number")?;
    if expiry < Utc::now().timestamp() {
        return Err("expired token".into());
    }
    let decode = |t: &str| percent_encoding::percent_decode_str(t).decode_utf8().map(|s| s.into_owned()).unwrap_or_default();
    let entity = uri.path().trim_end_matches("/messages");
    if !decode(sr).ends_with(entity) {
        return Err(format!("token for {} used on {entity}", decode(sr)));
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(format!("{sr}\n{se}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if decode(sig) != expected {
        return Err("signature does not verify".into());
    }
    Ok(())
}
