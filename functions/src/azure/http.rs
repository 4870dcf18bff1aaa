//! HTTP-triggered functions, in the two ways the Functions host can send them:
//!
//! - **Proxied** (host.json `enableProxyingHttpRequest: true`, what we ship): the host forwards the caller's
//!   request as it came (YARP, azure-functions-host `DefaultHttpWorkerService.ProxyInvocationRequest`) to
//!   its original path under `/api`, headers and body streamed, and passes our response back untouched.
//!   [`proxied`] runs it through the shared API router. A chunked request keeps its body this way.
//! - **Data/Metadata** (`Data.req`, when proxying is off or a host predates it): the request is rebuilt from
//!   the host's JSON and the router's response becomes the `res` output binding. The host copies a body
//!   into `Data.req.Body` only when the caller sent `Content-Length > 0`
//!   (`HttpRequestExtensions.GetRequestAsJObject`), so a chunked request arrives without its body; [`run`]
//!   answers such a request 411 instead of running the route on an empty body.
//!
//! The trace continues: the caller's `traceparent` arrives among `Data.req`'s headers and is passed on
//! with them, so the API's server span ([`crate::telemetry::http`]) is its child. When the caller sent
//! none but the Functions host put its own on the invocation (its invocation span), that one is used, so
//! the request still joins the host's trace in Application Insights.
use super::payload::{HostRequest, InvocationResult};
use super::AzureHost;
use crate::api::error::{ApiError, ErrorCode};
use crate::api::{self, ApiState};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
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
    if request.body.is_empty() && request.lost_chunked_body() {
        let refusal = ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            ErrorCode::InvalidBody,
            "the Functions host forwarded this chunked request without its body (it copies a body only when Content-Length is set); \
             send the request with Content-Length, or deploy host.json with enableProxyingHttpRequest: true",
        );
        return output(refusal.into_response(), "the host dropped a chunked request's body; answered 411").await;
    }
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
    output(response, "").await
}

/// A request the host proxied as it came (`enableProxyingHttpRequest`): the API answers it directly, and
/// the host passes the answer to the caller as is.
pub(super) async fn proxied(host: &AzureHost, request: Request<Body>) -> Response {
    let router = api::app(ApiState { ctx: host.ctx.clone(), dead_letters: Some(host.store_dead_letters()) });
    match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The API's response as the `res` output binding (plus a log line when `log` is not empty).
async fn output(response: Response, log: &str) -> (StatusCode, InvocationResult) {
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
    let mut result = if log.is_empty() { InvocationResult::default() } else { InvocationResult::log(log) };
    // statusCode as a string, as the host's HttpOutputBindingResponse declares it; the body as text so the
    // bytes are the API's exactly (our bodies are JSON objects, never mistaken for base64).
    result.outputs.insert("res".into(), json!({ "statusCode": status.as_u16().to_string(), "headers": headers, "body": body }));
    (StatusCode::OK, result)
}
