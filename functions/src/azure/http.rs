//! HTTP-triggered functions: the host's `Data.req` becomes an HTTP request for the shared API router, and
//! the router's response becomes the `res` output binding.
//!
//! The trace continues: the caller's `traceparent` arrives among `Data.req`'s headers and is passed on
//! with them, so the API's server span ([`crate::telemetry::http`]) is its child. When the caller sent
//! none but the Functions host put its own on the invocation (its invocation span), that one is used, so
//! the request still joins the host's trace in Application Insights.
use super::payload::{HostRequest, InvocationResult};
use super::AzureHost;
use crate::api::{self, ApiState};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

/// Runs one API request. Always 200 to the host: the API's own status travels in `res.statusCode`.
pub(super) async fn run(
    host: &AzureHost,
    trigger: Option<&Value>,
    invocation_trace: Option<&axum::http::HeaderValue>,
) -> (StatusCode, InvocationResult) {
    let Some(request) = trigger.and_then(HostRequest::decode) else {
        return (StatusCode::BAD_REQUEST, InvocationResult::log("Data.req is missing or not an HTTP request"));
    };
    let mut builder = Request::builder().method(request.method.as_str()).uri(&request.path_and_query);
    for (name, value) in &request.headers {
        // The host adds hop-by-hop and length headers for its own request; the body is already whole.
        if !matches!(name.to_ascii_lowercase().as_str(), "content-length" | "transfer-encoding" | "host" | "connection") {
            builder = builder.header(name, value);
        }
    }
    let caller_traced = request.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("traceparent"));
    if let (false, Some(traceparent)) = (caller_traced, invocation_trace) {
        builder = builder.header("traceparent", traceparent);
    }
    let Ok(http_request) = builder.body(Body::from(request.body)) else {
        return (StatusCode::BAD_REQUEST, InvocationResult::log("the request in Data.req is malformed"));
    };
    let router = api::app(ApiState { ctx: host.ctx.clone(), dead_letters: Some(host.store_dead_letters()) });
    let response = match router.oneshot(http_request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let status = response.status();
    let headers: serde_json::Map<String, Value> = response
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str() != "content-length")
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), json!(value.to_str().ok()?))))
        .collect();
    let body = match response.into_body().collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(error) => return (StatusCode::INTERNAL_SERVER_ERROR, InvocationResult::log(format!("reading the API response: {error}"))),
    };
    let mut result = InvocationResult::default();
    // statusCode as a string, as the host's HttpOutputBindingResponse declares it; the body as text so the
    // bytes are the API's exactly (our bodies are JSON objects, never mistaken for base64).
    result.outputs.insert("res".into(), json!({ "statusCode": status.as_u16().to_string(), "headers": headers, "body": body }));
    (StatusCode::OK, result)
}
