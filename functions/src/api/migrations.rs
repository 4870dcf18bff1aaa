//! Migration routes: start (idempotent), list, show, cutover, cancel.
use super::error::{parse_body, ApiError, ErrorCode};
use super::{view, ApiState};
use crate::handlers::{apply, ApplyError};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use milink_core::assessment::Readiness;
use milink_core::flow::{self, Event};
use milink_core::migration::{Migration, Settings};
use milink_core::names::{ConnectionName, DatabaseName, MigrationId};
use milink_core::ports::{Created, MigrationFilter};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StartRequest {
    source: String,
    target: String,
    databases: Vec<String>,
    #[serde(default)]
    settings: Settings,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CutoverRequest {
    #[serde(default)]
    confirm_traffic_stopped: bool,
}

fn name_error(error: milink_core::names::NameError) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidName, error.to_string())
}

/// `POST /api/migrations`: starts one migration per database; a database already migrating on this
/// link returns the migration it has (never a second one). Refuses all if any database is Not ready.
pub async fn start(State(state): State<ApiState>, body: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: StartRequest = parse_body(&body)?;
    let ctx = &state.ctx;
    request.settings.validate().map_err(|m| ApiError::bad_request(ErrorCode::InvalidSettings, m))?;
    let source = ConnectionName::parse(&request.source).map_err(name_error)?;
    let target = ConnectionName::parse(&request.target).map_err(name_error)?;
    let source_endpoint = ctx.config.endpoint(&source)?;
    let target_endpoint = ctx.config.endpoint(&target)?;
    ctx.engines
        .for_pair(source_endpoint, target_endpoint)?;
    if request.databases.is_empty() {
        return Err(ApiError::bad_request(ErrorCode::InvalidBody, "name at least one database in \"databases\""));
    }
    let mut databases = Vec::new();
    for name in &request.databases {
        let database = DatabaseName::parse(name).map_err(name_error)?;
        if !databases.contains(&database) {
            databases.push(database);
        }
    }
    refuse_not_ready(&state, &source, &databases).await?;
    let mut started = Vec::new();
    for database in databases {
        started.push(create(ctx, &source, &target, database, request.settings.clone(), None).await?);
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "migrations": started }))))
}

/// Creates one migration (or finds the one this database already has on this link) and answers its
/// summary line; `fleet` places it in a plan's wave.
pub(super) async fn create(
    ctx: &crate::context::Context,
    source: &ConnectionName,
    target: &ConnectionName,
    database: DatabaseName,
    settings: Settings,
    fleet: Option<milink_core::fleet::Membership>,
) -> Result<Value, ApiError> {
    let mut migration = Migration::new(MigrationId::new_random(), source.clone(), target.clone(), database, settings, ctx.clock.now());
    migration.fleet = fleet;
    let transition = flow::start(migration);
    // Through outbox_for, so the first step continues this request's trace.
    let outbox = crate::handlers::outbox_for(&transition.migration.id, 1, transition.commands);
    let (migration, existing) = match ctx.migrations.create(&transition.migration, &outbox).await? {
        Created::New(m) => (m, false),
        Created::Existing(m) => (m, true),
    };
    tracing::info!(migration = %migration.id, database = %migration.database, existing, "start");
    Ok(json!({
        "id": migration.id,
        "source": migration.source,
        "target": migration.target,
        "database": migration.database,
        "status": migration.status().as_str(),
        "existing": existing,
        "plan": migration.fleet.as_ref().map(|f| &f.plan),
        "wave": migration.fleet.as_ref().map(|f| &f.wave_name),
    }))
}

pub(super) async fn refuse_not_ready(state: &ApiState, source: &ConnectionName, databases: &[DatabaseName]) -> Result<(), ApiError> {
    let Some(report) = state.ctx.assessments.latest_assessment(source).await? else { return Ok(()) };
    let mut refused = Vec::new();
    for database in databases {
        let Some(assessed) = report.databases.iter().find(|d| d.name == database.as_str()) else { continue };
        if assessed.readiness == Readiness::NotReady {
            let blockers = report.blockers_for(database.as_str()).unwrap_or_default();
            refused.push(json!({ "database": database, "assessmentId": report.id, "blockers": blockers }));
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    let names: Vec<_> = refused.iter().filter_map(|r| r["database"].as_str()).collect();
    Err(ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::DatabaseNotReady,
        format!(
            "{} not ready in the latest assessment ({}); fix the blockers listed in details, assess again, then start",
            names.join(", "),
            report.id
        ),
    )
    .with_details(json!(refused)))
}

/// `GET /api/migrations`.
pub async fn list(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let migrations = state.ctx.migrations.list(&MigrationFilter::default()).await?;
    Ok(Json(json!({ "migrations": migrations.iter().map(view::summary).collect::<Vec<_>>() })))
}

/// `GET /api/migrations/{id}`.
pub async fn show(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let migration = state
        .ctx
        .migrations
        .load(&MigrationId(id.clone()))
        .await?
        .ok_or_else(|| ApiError::not_found("migration", &id))?;
    Ok(Json(view::detail(&migration)))
}

/// `POST /api/migrations/{id}/cutover`.
pub async fn cutover(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: CutoverRequest = if body.is_empty() { CutoverRequest::default() } else { parse_body(&body)? };
    let event = Event::CutoverRequested { confirm_traffic_stopped: request.confirm_traffic_stopped };
    request_event(&state, id, event).await
}

/// `POST /api/migrations/{id}/failback`.
pub async fn failback(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: CutoverRequest = if body.is_empty() { CutoverRequest::default() } else { parse_body(&body)? };
    let event = Event::FailbackRequested { confirm_traffic_stopped: request.confirm_traffic_stopped };
    request_event(&state, id, event).await
}

/// `POST /api/migrations/{id}/drop-reverse-link`: removes the reverse link a completed cutover kept; no
/// failback after it (the target stops keeping WAL for the source).
pub async fn drop_reverse_link(State(state): State<ApiState>, Path(id): Path<String>) -> Result<(StatusCode, Json<Value>), ApiError> {
    request_event(&state, id, Event::DropReverseLinkRequested).await
}

/// `POST /api/migrations/{id}/verify`: compares source and target content while the link syncs; the
/// report appears as `verification` on the migration when it is done.
pub async fn verify(State(state): State<ApiState>, Path(id): Path<String>) -> Result<(StatusCode, Json<Value>), ApiError> {
    request_event(&state, id, Event::VerifyRequested).await
}

/// `POST /api/migrations/{id}/cancel`.
pub async fn cancel(State(state): State<ApiState>, Path(id): Path<String>) -> Result<(StatusCode, Json<Value>), ApiError> {
    request_event(&state, id, Event::CancelRequested).await
}

async fn request_event(state: &ApiState, id: String, event: Event) -> Result<(StatusCode, Json<Value>), ApiError> {
    match apply(&state.ctx, &MigrationId(id.clone()), &event).await {
        Ok(migration) => Ok((StatusCode::ACCEPTED, Json(view::summary(&migration)))),
        Err(ApplyError::NotFound(_)) => Err(ApiError::not_found("migration", &id)),
        Err(ApplyError::Rejected(rejection)) => Err(rejection.into()),
        Err(ApplyError::Store(error)) => Err(error.into()),
    }
}
