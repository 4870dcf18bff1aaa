//! Batch actions: one request, many migrations (`POST /api/batch/cutover`, `POST /api/batch/cancel`).
//!
//! The selection is a filter (source, target, explicit ids; at least one, so "every migration" is never
//! an accident). Each selected migration is asked on its own, exactly as `POST /api/migrations/{id}/...`
//! would, and the answer lists what happened to each one: `accepted` (the cutover or cancel runs; watch
//! the migration for its end), `skipped` (not in a state the action applies to: not ready, already
//! finished) or `refused` (the flow or the store said no, with the reason). One migration's refusal or
//! error never stops the others, and once accepted each cutover runs its own steps on its own ordering
//! key, so one that fails (a fence that times out, a verification that finds differences) leaves the
//! others to complete. The one confirmation (`confirmTrafficStopped`) covers every selected migration.
use super::error::{parse_body, ApiError, ErrorCode};
use super::ApiState;
use crate::handlers::{apply, ApplyError};
use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use milink_core::flow::Event;
use milink_core::migration::{Migration, Status};
use milink_core::ports::MigrationFilter;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct BatchRequest {
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    ids: Option<Vec<String>>,
    #[serde(default)]
    confirm_traffic_stopped: bool,
}

impl BatchRequest {
    /// Exactly these migrations (a fleet plan's wave).
    pub(super) fn ids(ids: Vec<String>, confirm_traffic_stopped: bool) -> Self {
        Self { ids: Some(ids), confirm_traffic_stopped, ..Self::default() }
    }

    fn selects(&self, m: &Migration) -> bool {
        self.source.as_deref().is_none_or(|s| m.source.as_str() == s)
            && self.target.as_deref().is_none_or(|t| m.target.as_str() == t)
            && self.ids.as_ref().is_none_or(|ids| ids.iter().any(|id| id == m.id.as_str()))
    }
}

/// `POST /api/batch/cutover`: cuts over every selected migration that is ReadyForCutover.
pub async fn cutover(State(state): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    cutover_selected(&state, &parse_body(&body)?).await
}

/// Cuts over every migration `request` selects that is ReadyForCutover.
pub(super) async fn cutover_selected(state: &ApiState, request: &BatchRequest) -> Result<Json<Value>, ApiError> {
    if !request.confirm_traffic_stopped {
        return Err(ApiError::bad_request(
            ErrorCode::ConfirmationRequired,
            "a batch cutover needs the confirmation that application traffic to every selected source database is stopped (confirmTrafficStopped: true)",
        ));
    }
    let event = Event::CutoverRequested { confirm_traffic_stopped: true };
    run(state, request, &event, |m| m.status() == Status::ReadyForCutover, "not ReadyForCutover").await
}

/// `POST /api/batch/cancel`: cancels every selected migration that has not finished.
pub async fn cancel(State(state): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    cancel_selected(&state, &parse_body(&body)?).await
}

/// Cancels every migration `request` selects that has not finished.
pub(super) async fn cancel_selected(state: &ApiState, request: &BatchRequest) -> Result<Json<Value>, ApiError> {
    run(state, request, &Event::CancelRequested, |m| !m.phase.is_terminal(), "already finished").await
}

async fn run(
    state: &ApiState,
    request: &BatchRequest,
    event: &Event,
    applies: impl Fn(&Migration) -> bool,
    why_not: &str,
) -> Result<Json<Value>, ApiError> {
    if request.source.is_none() && request.target.is_none() && request.ids.is_none() {
        return Err(ApiError::bad_request(ErrorCode::InvalidBody, "select migrations with \"source\", \"target\" or \"ids\" (at least one)"));
    }
    let mut selected: Vec<Migration> = state.ctx.migrations.list(&MigrationFilter::default()).await?;
    selected.retain(|m| request.selects(m));
    selected.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let mut results = Vec::new();
    for m in &selected {
        let (outcome, status, message) = if !applies(m) {
            ("skipped", m.status().as_str().to_owned(), format!("{why_not}: the migration is {}", m.status().as_str()))
        } else {
            match apply(&state.ctx, &m.id, event).await {
                Ok(saved) => ("accepted", saved.status().as_str().to_owned(), "requested; watch the migration for its end".to_owned()),
                Err(ApplyError::Rejected(rejection)) => ("refused", m.status().as_str().to_owned(), rejection.to_string()),
                Err(error) => ("refused", m.status().as_str().to_owned(), error.to_string()),
            }
        };
        tracing::info!(migration = %m.id, outcome, "batch");
        results.push(json!({
            "id": m.id,
            "source": m.source,
            "target": m.target,
            "database": m.database,
            "outcome": outcome,
            "status": status,
            "message": message,
        }));
    }
    let tally = |outcome: &str| results.iter().filter(|r| r["outcome"] == outcome).count();
    let counts = json!({ "accepted": tally("accepted"), "skipped": tally("skipped"), "refused": tally("refused") });
    Ok(Json(json!({ "selected": results.len(), "counts": counts, "results": results })))
}
