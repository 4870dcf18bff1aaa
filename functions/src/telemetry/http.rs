//! HTTP server spans, for both hosts: the API router runs every request inside an `http` span
//! (`otel.kind = server`), continuing the caller's W3C `traceparent` header when it sends one.
//!
//! Both hosts pass through here: the embedded host serves the router on its socket, and the Azure host
//! rebuilds each request from the Functions host's `Data.req`, headers included, so a `traceparent` the
//! caller (or the Functions host) sent continues here instead of being dropped. A migration started by a
//! request stays in that request's trace: the outbox written inside the span carries its context.
//!
//! Attributes are the method, the matched route (`/api/migrations/{id}`, not the path: ids are not what a
//! trace is searched by, and a path could carry anything a caller typed) and the status code. Never a
//! header value or a body.
use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// Routes polled by machines (scrapers, probes): a trace per poll would bury the requests people make.
const UNTRACED: [&str; 2] = ["/metrics", "/api/health"];

/// The middleware (`axum::middleware::from_fn(trace_request)`).
pub async fn trace_request(request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |path| path.as_str()).to_owned();
    if UNTRACED.contains(&route.as_str()) {
        return next.run(request).await;
    }
    let span = tracing::info_span!(
        "http",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new().extract(&Headers(request.headers()));
    let _ = span.set_parent(parent);
    super::continue_trace(&span, None);
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    tracing::debug!(parent: &span, status = status.as_u16(), "answered");
    response
}
