//! Assessment routes: request one (202, runs in the background), read a report.
use super::error::{parse_body, ApiError, ErrorCode};
use super::ApiState;
use crate::handlers::assess;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use milink_core::assessment::AssessmentReport;
use milink_core::names::ConnectionName;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssessRequest {
    connection: String,
}

/// `POST /api/assessments`.
pub async fn create(State(state): State<ApiState>, body: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: AssessRequest = parse_body(&body)?;
    let connection = ConnectionName::parse(&request.connection)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidName, e.to_string()))?;
    let endpoint =
        state.ctx.config.endpoint(&connection)?;
    state.ctx.engines.for_source(endpoint)?;
    let id = uuid::Uuid::new_v4().to_string();
    let report = AssessmentReport::running(id.clone(), connection.clone(), state.ctx.clock.now());
    state.ctx.assessments.put_assessment(&report, &[assess::request(&id, &connection)]).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id, "status": "Running" }))))
}

/// `GET /api/assessments/{id}`.
pub async fn get(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<AssessmentReport>, ApiError> {
    let report = state.ctx.assessments.get_assessment(&id).await?.ok_or_else(|| ApiError::not_found("assessment", &id))?;
    Ok(Json(report))
}
