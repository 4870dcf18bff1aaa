//! The custom-handler wire format: what the Functions host POSTs to `/{FunctionName}` and what it expects
//! back (reference/functions-host.md §1.2–1.6).
//!
//! Decoding is tolerant on purpose, because the host's shapes vary with its version and the trigger:
//! a Service Bus body arrives as JSON text inside a JSON string (sometimes twice), scalar metadata arrive
//! JSON-encoded (`"DeliveryCount": "2"`, `"MessageId": "\"m-1\""`), numbers may be strings, keys are
//! case-insensitive on the host's side, and an HTTP body may be a string, an object, base64, or absent.
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One invocation as the host sends it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Invocation {
    /// Trigger and input binding values, by binding name.
    #[serde(rename = "Data", alias = "data", default)]
    pub data: Map<String, Value>,
    /// Trigger metadata.
    #[serde(rename = "Metadata", alias = "metadata", default)]
    pub metadata: Map<String, Value>,
}

/// What the handler answers: output bindings, log lines, return value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InvocationResult {
    /// Output binding values by name.
    #[serde(rename = "Outputs")]
    pub outputs: Map<String, Value>,
    /// Lines for the invocation log (Application Insights in Azure).
    #[serde(rename = "Logs")]
    pub logs: Vec<String>,
    /// The `$return` binding's value.
    #[serde(rename = "ReturnValue")]
    pub return_value: Value,
}

impl InvocationResult {
    /// A result with one log line.
    pub fn log(line: impl Into<String>) -> Self {
        Self { logs: vec![line.into()], ..Self::default() }
    }
}

/// Peels JSON text out of JSON strings, up to three layers: `"\"{\\\"a\\\":1}\""` becomes `{"a":1}`.
/// A string that is not JSON text stays a string.
pub fn unwrap_json(value: &Value) -> Value {
    let mut current = value.clone();
    for _ in 0..3 {
        let Value::String(text) = &current else { break };
        match serde_json::from_str::<Value>(text) {
            Ok(inner) => current = inner,
            Err(_) => break,
        }
    }
    current
}

/// A value by key, ignoring case (the host's binding-data dictionary is case-insensitive).
pub fn get<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

/// A metadata string: `"\"m-1\""`, `"m-1"`, or a number.
pub fn metadata_string(metadata: &Map<String, Value>, key: &str) -> Option<String> {
    match unwrap_json(get(metadata, key)?) {
        Value::String(text) => Some(text),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// A metadata count: `2`, `"2"`, `"\"2\""`.
pub fn metadata_u32(metadata: &Map<String, Value>, key: &str) -> Option<u32> {
    match unwrap_json(get(metadata, key)?) {
        Value::Number(number) => number.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// A trigger's payload as JSON: unwraps encoded strings, and tries base64 when the text is not JSON
/// (a binary-typed binding).
pub fn trigger_json(value: &Value) -> Value {
    let unwrapped = unwrap_json(value);
    if let Value::String(text) = &unwrapped {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text.trim()) {
            if let Ok(inner) = serde_json::from_slice::<Value>(&bytes) {
                return unwrap_json(&inner);
            }
        }
    }
    unwrapped
}

/// An HTTP trigger's request as the host shapes it (`Data.req`).
#[derive(Debug, Clone, Default)]
pub struct HostRequest {
    /// Method, upper case.
    pub method: String,
    /// Path and query, from `Url`.
    pub path_and_query: String,
    /// Headers (first value of each).
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl HostRequest {
    /// Whether the caller sent a chunked body that the host left out: a method that carries a body,
    /// `Transfer-Encoding: chunked` and no `Content-Length` among the caller's headers. The host fills
    /// `Body` only when `Content-Length > 0` (azure-functions-host `GetRequestAsJObject`).
    pub fn lost_chunked_body(&self) -> bool {
        let header = |name: &str| self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.to_ascii_lowercase());
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH")
            && header("transfer-encoding").is_some_and(|v| v.contains("chunked"))
            && header("content-length").is_none()
    }

    /// Reads `Data.<binding>`; `None` when it is not an HTTP request.
    pub fn decode(value: &Value) -> Option<Self> {
        let request = trigger_object(value)?;
        let method = get(&request, "Method").and_then(Value::as_str).unwrap_or("GET").to_ascii_uppercase();
        let url = get(&request, "Url").and_then(Value::as_str)?;
        let path_and_query = match reqwest::Url::parse(url) {
            Ok(parsed) => match parsed.query() {
                Some(query) => format!("{}?{query}", parsed.path()),
                None => parsed.path().to_owned(),
            },
            Err(_) if url.starts_with('/') => url.to_owned(),
            Err(_) => return None,
        };
        let mut headers = Vec::new();
        if let Some(Value::Object(map)) = get(&request, "Headers").map(unwrap_json) {
            for (name, value) in map {
                let first = match value {
                    Value::Array(values) => values.first().and_then(Value::as_str).map(str::to_owned),
                    Value::String(text) => Some(text),
                    _ => None,
                };
                if let Some(first) = first {
                    headers.push((name, first));
                }
            }
        }
        let body = match get(&request, "Body") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(text)) => body_bytes(text, &headers),
            Some(other) => serde_json::to_vec(other).unwrap_or_default(),
        };
        Some(Self { method, path_and_query, headers, body })
    }
}

fn trigger_object(value: &Value) -> Option<Map<String, Value>> {
    match unwrap_json(value) {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// A string body is the text itself, unless the request was binary, in which case the host sent base64.
fn body_bytes(text: &str, headers: &[(String, String)]) -> Vec<u8> {
    let content_type = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.to_ascii_lowercase());
    let binary = content_type.is_some_and(|t| t.starts_with("application/octet-stream") || t.starts_with("multipart/"));
    if binary {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text) {
            return bytes;
        }
    }
    text.as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn double_encoded_bodies_and_stringly_metadata_decode() {
        let body = json!({ "envelopeId": "m:validate:1:0", "n": 1 });
        let once = Value::String(body.to_string());
        let twice = Value::String(once.to_string());
        assert_eq!(trigger_json(&once), body);
        assert_eq!(trigger_json(&twice), body);
        assert_eq!(trigger_json(&body), body);
        let base64 = Value::String(base64::engine::general_purpose::STANDARD.encode(body.to_string()));
        assert_eq!(trigger_json(&base64), body);

        let metadata = json!({ "DeliveryCount": "2", "messageid": "\"m-1\"", "SequenceNumber": 17, "Odd": "\"\\\"3\\\"\"" });
        let metadata = metadata.as_object().unwrap();
        assert_eq!(metadata_u32(metadata, "DeliveryCount"), Some(2));
        assert_eq!(metadata_u32(metadata, "SequenceNumber"), Some(17));
        assert_eq!(metadata_u32(metadata, "Odd"), Some(3));
        assert_eq!(metadata_string(metadata, "MessageId").as_deref(), Some("m-1"));
        assert_eq!(metadata_u32(metadata, "Missing"), None);
    }

    #[test]
    fn http_requests_decode_in_the_hosts_shape() {
        let request = json!({
            "Url": "https://app.azurewebsites.net/api/migrations/42/cutover?x=1",
            "Method": "post",
            "Query": { "x": "1" },
            "Headers": { "Content-Type": ["application/json"], "X-One": "v" },
            "Params": { "id": "42" },
            "Body": "{\"confirmTrafficStopped\":true}"
        });
        let decoded = HostRequest::decode(&request).unwrap();
        assert_eq!(decoded.method, "POST");
        assert_eq!(decoded.path_and_query, "/api/migrations/42/cutover?x=1");
        assert_eq!(decoded.body, br#"{"confirmTrafficStopped":true}"#);
        assert!(decoded.headers.contains(&("X-One".into(), "v".into())));

        let without_body = json!({ "Url": "http://localhost:7071/api/migrations", "Method": "GET" });
        assert!(HostRequest::decode(&without_body).unwrap().body.is_empty());
        let object_body = json!({ "Url": "http://h/api/x", "Method": "POST", "Body": { "a": 1 } });
        assert_eq!(HostRequest::decode(&object_body).unwrap().body, br#"{"a":1}"#);
        let as_string = Value::String(without_body.to_string());
        assert!(HostRequest::decode(&as_string).is_some());
    }
}
