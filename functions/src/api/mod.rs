//! The HTTP API, built by one function ([`app`]) so the embedded host, the Azure Functions adapter and
//! the tests all serve the same routes and bodies. JSON, camelCase; errors are
//! `{"error":{"code","message"}}` with stable codes ([`error::ApiError`]).
pub mod assessments;
pub mod batch;
pub mod connections;
pub mod error;
pub mod fleets;
pub mod migrations;
pub mod view;

use crate::context::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use error::{ApiError, ErrorCode};
use serde_json::{json, Value};
use std::sync::Arc;

/// The OpenAPI document of these routes.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the routes share.
#[derive(Clone)]
pub struct ApiState {
    /// Handlers' context.
    pub ctx: Context,
    /// The host's dead letters, when it has a queue of its own.
    pub dead_letters: Option<Arc<dyn milink_core::ports::DeadLetters>>,
}

/// Builds the router.
pub fn app(state: ApiState) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/openapi.json", get(openapi))
        .route("/api/assessments", post(assessments::create))
        .route("/api/assessments/{id}", get(assessments::get))
        .route("/api/connections/{name}/test", post(connections::test))
        .route("/api/migrations", post(migrations::start).get(migrations::list))
        .route("/api/migrations/{id}", get(migrations::show))
        .route("/api/migrations/{id}/cutover", post(migrations::cutover))
        .route("/api/migrations/{id}/cancel", post(migrations::cancel))
        .route("/api/migrations/{id}/verify", post(migrations::verify))
        .route("/api/migrations/{id}/failback", post(migrations::failback))
        .route("/api/migrations/{id}/drop-reverse-link", post(migrations::drop_reverse_link))
        .route("/api/batch/cutover", post(batch::cutover))
        .route("/api/batch/cancel", post(batch::cancel))
        .route("/api/fleets", post(fleets::apply_plan).get(fleets::list))
        .route("/api/fleets/{name}", get(fleets::show))
        .route("/api/fleets/{name}/approve", post(fleets::approve))
        .route("/api/fleets/{name}/cutover", post(fleets::cutover))
        .route("/api/fleets/{name}/cancel", post(fleets::cancel))
        .route("/api/deadletters", get(dead_letters))
        .route("/metrics", get(crate::telemetry::metrics::scrape))
        .merge(crate::ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(crate::telemetry::http::trace_request))
        .with_state(state)
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn dead_letters(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let letters = match &state.dead_letters {
        Some(source) => source.dead_letters().await?,
        None => Vec::new(),
    };
    Ok(Json(json!({ "deadLetters": letters })))
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed, "this route does not take that method; see GET /api/openapi.json")
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route; see GET /api/openapi.json")
}
