//! A Functions host double: drives the custom handler exactly the way the real host does
//! (reference/functions-host.md §1): `POST http://127.0.0.1:{port}/{FunctionName}` with a chunked JSON body
//! `{Data, Metadata}` and the host's headers; Service Bus bodies double-encoded, scalar metadata
//! JSON-encoded strings (`"DeliveryCount": "1"`), the body's top-level properties leaked into the metadata
//! as the host's ApplyBindingData does; HTTP requests in the host's `req` shape with route parameters; timer
//! payloads as TimerInfo. HTTP functions are proxied as they came when host.json enables
//! `enableProxyingHttpRequest`, else sent in the `req` shape, without the body of a chunked request. A
//! non-2xx or a dropped connection is a failed invocation: the trigger message is abandoned (the bus
//! redelivers it) and outputs are dropped.
use super::bus::{BusDouble, Message};
use milink_functions::azure::catalog::{Trigger, FUNCTIONS};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const HOST_VERSION: &str = "4.1037.0.0";

/// Talks to one custom handler.
#[derive(Clone)]
pub struct HostDouble {
    base: String,
    http: reqwest::Client,
    invocations: Arc<AtomicU64>,
    /// host.json's `customHandler.enableProxyingHttpRequest`: HTTP functions are proxied as they came
    /// instead of sent as `Data.req`.
    proxying: bool,
}

/// What the committed host.json says about proxying HTTP functions.
fn proxying_in_host_json() -> bool {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../host.json");
    let host: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    host["customHandler"]["enableProxyingHttpRequest"].as_bool().unwrap_or(false)
}

/// A body sent in 512-byte frames, so reqwest sends it chunked (no Content-Length).
fn chunked(bytes: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<http_body::Frame<axum::body::Bytes>, std::io::Error>> =
        bytes.chunks(512).map(|c| Ok(http_body::Frame::data(axum::body::Bytes::copy_from_slice(c)))).collect();
    reqwest::Body::wrap(http_body_util::StreamBody::new(futures::stream::iter(chunks)))
}

/// An invocation's outcome as the host sees it.
pub enum Outcome {
    /// 2xx with the handler's JSON.
    Succeeded(Value),
    /// Non-2xx or no answer.
    Failed(String),
}

fn sys(function: &str) -> Value {
    json!({ "MethodName": function, "UtcNow": chrono::Utc::now().to_rfc3339(), "RandGuid": uuid::Uuid::new_v4().to_string() })
}

/// How the host stores a scalar in binding data: JSON-serialized, then as a string value.
fn encoded(value: &str) -> Value {
    Value::String(serde_json::to_string(value).unwrap())
}

impl HostDouble {
    pub fn new(base: String) -> Self {
        Self { base, http: reqwest::Client::new(), invocations: Arc::default(), proxying: proxying_in_host_json() }
    }

    /// Waits until the handler answers the readiness probe (any status counts, as for the host).
    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if self.http.get(format!("{}/", self.base)).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the custom handler did not answer the readiness probe");
    }

    pub fn invocations(&self) -> u64 {
        self.invocations.load(Ordering::Relaxed)
    }

    /// One invocation, body sent chunked (no Content-Length), as the host's HttpClient does.
    pub async fn invoke(&self, function: &str, payload: &Value) -> Outcome {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        let bytes = serde_json::to_vec(payload).unwrap();
        let response = self
            .http
            .post(format!("{}/{function}", self.base))
            .header("Content-Type", "application/json; charset=utf-8")
            .header("X-Azure-Functions-InvocationId", uuid::Uuid::new_v4().to_string())
            .header("X-Azure-Functions-HostVersion", HOST_VERSION)
            .header("User-Agent", format!("Azure-Functions-Host/{HOST_VERSION}"))
            .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .body(chunked(bytes))
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return Outcome::Failed(format!("no answer: {error}")),
        };
        let status = response.status();
        let is_json = response.headers().get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("application/json"));
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Outcome::Failed(format!("HTTP {status}: {text}"));
        }
        assert!(is_json, "the host reads only JSON answers (azure-functions-host #6462): {text}");
        match serde_json::from_str::<Value>(&text) {
            Ok(value) if value.is_object() => Outcome::Succeeded(value),
            _ => Outcome::Failed(format!("unparsable 2xx body: {text}")),
        }
    }

    /// Delivers a Service Bus message to the function bound to its queue.
    pub async fn deliver(&self, message: &Message) -> Outcome {
        let function = FUNCTIONS
            .iter()
            .find(|f| matches!(f.trigger, Trigger::Queue { stage } if message.queue == format!("milink-{stage}")))
            .unwrap_or_else(|| panic!("no function listens on {}", message.queue));
        let enqueued = message.enqueued_at.to_rfc3339();
        let mut metadata = Map::new();
        for (key, value) in [
            ("DeliveryCount", Value::String(message.delivery_count.to_string())),
            ("MessageId", encoded(&message.message_id)),
            ("SessionId", encoded(&message.session_id)),
            ("SequenceNumber", Value::String(message.sequence.to_string())),
            ("ContentType", encoded("application/json")),
            ("LockToken", encoded(&uuid::Uuid::new_v4().to_string())),
            ("EnqueuedTimeUtc", Value::String(enqueued.clone())),
            ("EnqueuedTime", Value::String(enqueued)),
            ("ApplicationProperties", Value::Object(message.properties.clone())),
            ("UserProperties", Value::Object(message.properties.clone())),
            ("MessageReceiver", json!({})),
            ("MessageSession", json!({ "SessionId": message.session_id })),
            ("MessageActions", json!({})),
            ("SessionActions", json!({})),
            ("Client", json!({ "FullyQualifiedNamespace": "milink-test.servicebus.windows.net" })),
            ("sys", sys(function.name)),
        ] {
            metadata.insert(key.to_owned(), value);
        }
        // ApplyBindingData: a JSON body's top-level non-array properties are copied into the binding data
        // (primitives as strings), overwriting same-named keys, case-insensitively. An envelope field named
        // like a Service Bus property would replace it here, as in the real host.
        if let Ok(Value::Object(body)) = serde_json::from_str::<Value>(&message.body) {
            for (key, value) in body {
                let leaked = match value {
                    Value::Array(_) => continue,
                    Value::Object(_) => value,
                    Value::String(text) => encoded(&text),
                    other => Value::String(other.to_string()),
                };
                let existing = metadata.keys().find(|k| k.eq_ignore_ascii_case(&key)).cloned();
                metadata.remove(existing.as_deref().unwrap_or(&key));
                metadata.insert(key, leaked);
            }
        }
        // The trigger's string value, JSON-serialized again: the double encoding.
        let data = json!({ "message": encoded(&message.body) });
        self.invoke(function.name, &json!({ "Data": data, "Metadata": metadata })).await
    }

    /// Fires a timer function.
    pub async fn fire(&self, function: &str) -> Outcome {
        let timer = json!({ "Schedule": { "AdjustForDST": true }, "ScheduleStatus": null, "IsPastDue": false });
        self.invoke(function, &json!({ "Data": { "timer": timer }, "Metadata": { "sys": sys(function) } })).await
    }

    /// An API request, routed as the Functions host routes it (function.json routes under `/api`); returns
    /// the API's status and JSON body. The caller's body is sent with a Content-Length.
    pub async fn http(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.http_as(method, path, body, false).await
    }

    /// The same request with the caller's body sent chunked (`Transfer-Encoding: chunked`, no
    /// Content-Length), as a streaming client or `curl -H 'Transfer-Encoding: chunked'` sends it.
    pub async fn http_chunked(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        self.http_as(method, path, Some(body), true).await
    }

    /// As the host does it: with proxying on (host.json), the request goes to the handler at its own path,
    /// headers and body as they came (YARP streams the body: a chunked one stays chunked) plus the host's
    /// invocation headers, and the handler's answer is the caller's. Without proxying it goes in the `req`
    /// shape to `/{FunctionName}`, and `Body` is there only when the caller sent `Content-Length > 0`
    /// (`GetRequestAsJObject`): a chunked body is dropped. The API's status and body come from the `res`
    /// output then, or 500 when the invocation failed (what the host answers the caller).
    async fn http_as(&self, method: &str, path: &str, body: Option<&Value>, send_chunked: bool) -> (u16, Value) {
        let (function, params) = route(method, path).unwrap_or_else(|| panic!("no HTTP function serves {method} {path}"));
        if self.proxying {
            self.invocations.fetch_add(1, Ordering::Relaxed);
            let mut request = self
                .http
                .request(method.parse().unwrap(), format!("{}{path}", self.base))
                .header("Accept", "application/json")
                .header("User-Agent", "milink-test")
                .header("X-Forwarded-Host", "localhost:7071")
                .header("X-Azure-Functions-InvocationId", uuid::Uuid::new_v4().to_string())
                .header("X-Azure-Functions-HostVersion", HOST_VERSION)
                .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
            if let Some(body) = body {
                let bytes = body.to_string().into_bytes();
                request = request.header("Content-Type", "application/json");
                request = if send_chunked { request.body(chunked(bytes)) } else { request.body(bytes) };
            }
            return match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let text = response.text().await.unwrap_or_default();
                    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
                }
                // YARP's ForwarderError fails the invocation (EnsureSuccessfulForwardingAsync throws): 500.
                Err(error) => (500, json!({ "hostError": format!("proxying failed: {error}") })),
            };
        }
        let mut headers = json!({ "Accept": ["application/json"], "Host": ["localhost:7071"], "User-Agent": ["milink-test"] });
        let mut request = json!({
            "Url": format!("http://localhost:7071{path}"),
            "Method": method,
            "Query": {},
            "Headers": {},
            "Params": params,
            "Identities": [{ "AuthenticationType": null, "IsAuthenticated": false, "Claims": [] }],
        });
        if let Some(body) = body {
            headers["Content-Type"] = json!(["application/json"]);
            if send_chunked {
                headers["Transfer-Encoding"] = json!(["chunked"]);
            } else {
                headers["Content-Length"] = json!([body.to_string().len().to_string()]);
                request["Body"] = Value::String(body.to_string());
            }
        }
        request["Headers"] = headers.clone();
        let mut metadata = json!({ "Query": {}, "Headers": headers, "sys": sys(function) });
        for (key, value) in params.as_object().unwrap() {
            metadata[key] = encoded(value.as_str().unwrap());
        }
        match self.invoke(function, &json!({ "Data": { "req": request }, "Metadata": metadata })).await {
            Outcome::Succeeded(result) => {
                let res = &result["Outputs"]["res"];
                let status: u16 = match &res["statusCode"] {
                    Value::String(text) => text.parse().unwrap(),
                    other => other.as_u64().unwrap() as u16,
                };
                let body = res["body"].as_str().map(|t| serde_json::from_str(t).unwrap_or(Value::String(t.to_owned())));
                (status, body.unwrap_or(Value::Null))
            }
            Outcome::Failed(reason) => (500, json!({ "hostError": reason })),
        }
    }
}

/// Matches `path` (under `/api/`) against the HTTP functions' route templates.
fn route(method: &str, path: &str) -> Option<(&'static str, Value)> {
    let path = path.split('?').next()?.strip_prefix("/api/")?;
    let segments: Vec<&str> = path.split('/').collect();
    FUNCTIONS.iter().find_map(|function| {
        let Trigger::Http { route, methods, .. } = function.trigger else { return None };
        if !methods.contains(&method.to_ascii_lowercase().as_str()) {
            return None;
        }
        let template: Vec<&str> = route.split('/').collect();
        if template.len() != segments.len() {
            return None;
        }
        let mut params = Map::new();
        for (t, s) in template.iter().zip(&segments) {
            match t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                Some(name) => {
                    params.insert(name.to_owned(), Value::String((*s).to_owned()));
                }
                None if t == s => {}
                None => return None,
            }
        }
        Some((function.name, Value::Object(params)))
    })
}

/// A host pump: delivers messages (several sessions at once, as `maxConcurrentSessions` allows) and fires
/// the timers, until stopped.
pub struct Pump {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Faults the pump injects.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Every message is delivered a second time after it was handled.
    pub deliver_twice: bool,
    /// The first message whose body contains this is dead-lettered by the bus instead of delivered (the
    /// ones after it are delivered).
    pub lose: Option<&'static str>,
}

impl Pump {
    pub fn start(host: HostDouble, bus: BusDouble, faults: Faults, timer_every: std::time::Duration) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let token = stop.clone();
        let mut lost = false;
        let task = tokio::spawn(async move {
            let timers = {
                let (host, token) = (host.clone(), token.clone());
                tokio::spawn(async move {
                    while !token.is_cancelled() {
                        // Sequential: a timer occurrence never overlaps the previous one.
                        for function in ["PollSync", "Relay"] {
                            if let Outcome::Failed(reason) = host.fire(function).await {
                                eprintln!("host double: timer {function} failed: {reason}");
                            }
                        }
                        tokio::time::sleep(timer_every).await;
                    }
                })
            };
            let mut running = tokio::task::JoinSet::new();
            while !token.is_cancelled() {
                while running.len() < 16 {
                    let Some(message) = bus.receive() else { break };
                    if !lost && faults.lose.is_some_and(|pattern| message.body.contains(pattern)) {
                        lost = true;
                        bus.dead_letter(message, "lost on purpose by the test");
                        continue;
                    }
                    let (host, bus) = (host.clone(), bus.clone());
                    running.spawn(async move {
                        match host.deliver(&message).await {
                            Outcome::Succeeded(_) => {
                                bus.complete(&message);
                                if faults.deliver_twice && message.delivery_count == 1 {
                                    bus.redeliver(&message);
                                }
                            }
                            Outcome::Failed(reason) => bus.abandon(message, &reason),
                        }
                    });
                }
                tokio::select! {
                    _ = running.join_next(), if !running.is_empty() => {}
                    _ = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
                    _ = token.cancelled() => {}
                }
            }
            while running.join_next().await.is_some() {}
            let _ = timers.await;
        });
        Self { stop, task }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
