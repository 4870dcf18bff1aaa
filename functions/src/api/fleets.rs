//! Fleet plans (`/api/fleets`): apply a plan of waves, watch it, approve a wave, cut over or cancel a
//! wave or the whole plan. The rules live in [`milink_core::fleet`]; a plan is stored as its migrations
//! (each knows its plan and wave), so this module only creates, selects and sums them.
//!
//! - `POST /api/fleets` (a plan as JSON): checks the whole plan (names, duplicates, settings, known
//!   connections, engine pairs, readiness in the latest assessments) and refuses it with every problem
//!   listed, or creates every migration of every wave. The first wave starts as any migration does;
//!   later waves validate now and wait `Queued` with their wave's reason. Idempotent.
//! - `GET /api/fleets`, `GET /api/fleets/{name}`: counts by status, progress, aggregate lag, the seeding
//!   ETA, the estimated monthly cost, and per wave its state (`waiting` with the reason, `running`, `done`).
//! - `POST /api/fleets/{name}/approve` `{"wave"}`; `POST /api/fleets/{name}/cutover`
//!   `{"wave"?, "confirmTrafficStopped"}`; `POST /api/fleets/{name}/cancel` `{"wave"?}`: batch actions
//!   (`super::batch`), reporting per migration; one refusal never stops the others.
use super::batch::{self, BatchRequest};
use super::error::{parse_body, ApiError, ErrorCode};
use super::migrations::{create, refuse_not_ready};
use super::ApiState;
use crate::handlers::apply;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use milink_core::fleet::{self, Plan};
use milink_core::flow::Event;
use milink_core::migration::{Migration, Status};
use milink_core::names::{ConnectionName, DatabaseName};
use milink_core::ports::MigrationFilter;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// `POST /api/fleets`: applies a plan.
pub async fn apply_plan(State(state): State<ApiState>, body: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    let plan: Plan = parse_body(&body)?;
    let planned = plan.migrations().map_err(invalid_plan)?;
    let ctx = &state.ctx;
    let mut problems = consistent_with_earlier(&plans(&state).await?.remove(&plan.name).unwrap_or_default(), &planned);
    let mut pairs = BTreeSet::new();
    for p in &planned {
        if pairs.insert((p.source.clone(), p.target.clone())) {
            let checked = match (ctx.config.endpoint(&p.source), ctx.config.endpoint(&p.target)) {
                (Ok(s), Ok(t)) => ctx.engines.for_pair(s, t).map(|_| ()),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            if let Err(error) = checked {
                problems.push(ApiError::from(error).message);
            }
        }
    }
    if !problems.is_empty() {
        return Err(invalid_plan(problems));
    }
    let mut by_source: BTreeMap<&ConnectionName, Vec<DatabaseName>> = BTreeMap::new();
    for p in &planned {
        by_source.entry(&p.source).or_default().push(p.database.clone());
    }
    for (source, databases) in by_source {
        refuse_not_ready(&state, source, &databases).await?;
    }
    let mut migrations = Vec::new();
    for p in planned {
        migrations.push(create(ctx, &p.source, &p.target, p.database, p.settings, Some(p.membership)).await?);
    }
    tracing::info!(plan = plan.name.as_str(), migrations = migrations.len(), "fleet plan applied");
    Ok((StatusCode::ACCEPTED, Json(json!({ "name": plan.name, "migrations": migrations }))))
}

/// A plan applied again must keep what its migrations already carry: each wave's number and name, and each
/// database's wave (a migration's wave never changes; a retry of a failed one may take the new place).
fn consistent_with_earlier(existing: &[Migration], planned: &[fleet::Planned]) -> Vec<String> {
    let mut problems = BTreeSet::new();
    for m in existing {
        let Some(was) = &m.fleet else { continue };
        for p in planned {
            let now = &p.membership;
            if (now.wave == was.wave) != (now.wave_name == was.wave_name) {
                problems.insert(format!(
                    "plan {} was applied with wave {} named {:?}; apply it again with the same waves in the same order (add new waves at the end), or use another plan name",
                    was.plan, was.wave, was.wave_name
                ));
            }
            let same_database = p.source == m.source && p.target == m.target && p.database == m.database;
            if same_database && now.wave_name != was.wave_name && !m.phase.is_terminal() {
                problems.insert(format!(
                    "{} is already migrating in wave {:?} of plan {}; cancel that migration to move it to wave {:?}",
                    m.database, was.wave_name, was.plan, now.wave_name
                ));
            }
        }
    }
    problems.into_iter().collect()
}

fn invalid_plan(problems: Vec<String>) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidPlan, format!("the plan has {} problem(s): {}", problems.len(), problems.join("; ")))
        .with_details(json!(problems))
}

/// Every migration of every plan, by plan name.
async fn plans(state: &ApiState) -> Result<BTreeMap<String, Vec<Migration>>, ApiError> {
    let mut plans: BTreeMap<String, Vec<Migration>> = BTreeMap::new();
    for m in state.ctx.migrations.list(&MigrationFilter::default()).await? {
        if let Some(plan) = m.fleet.as_ref().map(|f| f.plan.clone()) {
            plans.entry(plan).or_default().push(m);
        }
    }
    for members in plans.values_mut() {
        members.sort_by(|a, b| (a.fleet.as_ref().map(|f| f.wave), a.created_at, &a.id).cmp(&(b.fleet.as_ref().map(|f| f.wave), b.created_at, &b.id)));
    }
    Ok(plans)
}

async fn members(state: &ApiState, name: &str) -> Result<Vec<Migration>, ApiError> {
    plans(state).await?.remove(name).ok_or_else(|| ApiError::not_found("fleet plan", name))
}

/// `GET /api/fleets`.
pub async fn list(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let plans = plans(&state).await?;
    let costs = Costs::read(&state, &plans.values().map(Vec::as_slice).collect::<Vec<_>>()).await;
    let fleets: Vec<Value> = plans.iter().map(|(name, members)| status(name, members, &costs)).collect();
    Ok(Json(json!({ "fleets": fleets })))
}

/// `GET /api/fleets/{name}`.
pub async fn show(State(state): State<ApiState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let members = members(&state, &name).await?;
    let costs = Costs::read(&state, &[&members]).await;
    let mut value = status(&name, &members, &costs);
    value["migrations"] = json!(members.iter().map(super::view::summary).collect::<Vec<_>>());
    Ok(Json(value))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WaveAction {
    #[serde(default)]
    wave: Option<String>,
    #[serde(default)]
    confirm_traffic_stopped: bool,
}

/// The members of `name` in `wave` (all when None); 404 for an unknown plan or wave.
async fn selection(state: &ApiState, name: &str, wave: Option<&str>) -> Result<Vec<Migration>, ApiError> {
    let members = members(state, name).await?;
    let Some(wave) = wave else { return Ok(members) };
    let selected: Vec<Migration> = members.into_iter().filter(|m| m.fleet.as_ref().is_some_and(|f| f.wave_name == wave)).collect();
    if selected.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, format!("plan {name} has no wave {wave}")));
    }
    Ok(selected)
}

/// `POST /api/fleets/{name}/approve` `{"wave": "main"}`.
pub async fn approve(State(state): State<ApiState>, Path(name): Path<String>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let action: WaveAction = parse_body(&body)?;
    let Some(wave) = action.wave else {
        return Err(ApiError::bad_request(ErrorCode::InvalidBody, "name the wave to approve: {\"wave\": \"...\"}"));
    };
    let selected = selection(&state, &name, Some(&wave)).await?;
    let event = Event::WaveApproved { plan: name.clone(), wave: wave.clone() };
    let mut results = Vec::new();
    for m in &selected {
        let (outcome, message) = match apply(&state.ctx, &m.id, &event).await {
            Ok(_) => ("accepted", "approved; it starts when the earlier waves let it and its servers have room".to_owned()),
            Err(error) => ("refused", error.to_string()),
        };
        results.push(json!({ "id": m.id, "database": m.database, "outcome": outcome, "message": message }));
    }
    // The gate opens now: admit at once rather than on the next tick.
    let ctx = state.ctx.clone();
    tokio::spawn(async move { crate::runtime::admission::run(&ctx).await });
    Ok(Json(json!({ "plan": name, "wave": wave, "results": results })))
}

/// `POST /api/fleets/{name}/cutover`: every ReadyForCutover migration of the wave (or of the plan).
pub async fn cutover(State(state): State<ApiState>, Path(name): Path<String>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let action: WaveAction = parse_body(&body)?;
    let selected = selection(&state, &name, action.wave.as_deref()).await?;
    let request = BatchRequest::ids(selected.iter().map(|m| m.id.to_string()).collect(), action.confirm_traffic_stopped);
    batch::cutover_selected(&state, &request).await
}

/// `POST /api/fleets/{name}/cancel`: every unfinished migration of the wave (or of the plan).
pub async fn cancel(State(state): State<ApiState>, Path(name): Path<String>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let action: WaveAction = if body.is_empty() { WaveAction::default() } else { parse_body(&body)? };
    let selected = selection(&state, &name, action.wave.as_deref()).await?;
    let request = BatchRequest::ids(selected.iter().map(|m| m.id.to_string()).collect(), false);
    batch::cancel_selected(&state, &request).await
}

/// The latest assessments' monthly cost per source connection (the size recommended for its workload).
struct Costs(BTreeMap<ConnectionName, Option<(f64, String)>>);

impl Costs {
    /// Read for the sources the plans name, once each.
    async fn read(state: &ApiState, plans: &[&[Migration]]) -> Self {
        let sources: BTreeSet<&ConnectionName> = plans.iter().flat_map(|members| members.iter().map(|m| &m.source)).collect();
        let mut costs = BTreeMap::new();
        for name in sources {
            let report = state.ctx.assessments.latest_assessment(name).await.ok().flatten();
            let cost = report.and_then(|r| r.recommendation).and_then(|r| {
                let as_of = r.price_list.map(|p| format!("{} ({}, {})", p.source, p.region, p.as_of)).unwrap_or_default();
                r.monthly_cost_usd.map(|c| (c, as_of))
            });
            costs.insert(name.clone(), cost);
        }
        Self(costs)
    }
}

/// A plan's status from its members.
fn status(name: &str, members: &[Migration], costs: &Costs) -> Value {
    let all: Vec<&Migration> = members.iter().collect();
    let mut waves: BTreeMap<u32, Vec<&Migration>> = BTreeMap::new();
    for m in &all {
        waves.entry(m.fleet.as_ref().map_or(0, |f| f.wave)).or_default().push(m);
    }
    let wave_views: Vec<Value> = waves
        .values()
        .map(|wave| {
            let first = wave[0].fleet.as_ref();
            let unfinished: Vec<&&Migration> = wave.iter().filter(|m| !m.phase.is_terminal()).collect();
            let waiting: Vec<String> = unfinished.iter().filter_map(|m| fleet::gate(m, &all)).collect();
            let (state, reason) = if unfinished.is_empty() {
                ("done", None)
            } else if waiting.len() == unfinished.len() && unfinished.iter().all(|m| m.status() == Status::Queued) {
                ("waiting", waiting.first().cloned())
            } else {
                ("running", None)
            };
            let mut view = totals(wave);
            view["number"] = json!(first.map(|f| f.wave));
            view["name"] = json!(first.map(|f| &f.wave_name));
            view["approval"] = json!(first.is_some_and(|f| f.approval));
            view["approved"] = json!(wave.iter().all(|m| m.fleet.as_ref().is_some_and(|f| f.approved_at.is_some())));
            // Waiting for an approval, or held by a failed earlier migration: approving starts it.
            view["needsApproval"] = json!(waiting.iter().any(|r| fleet::approval_lifts(r)));
            view["startAfter"] = json!(first.map(|f| f.start_after));
            view["state"] = json!(state);
            view["reason"] = json!(reason);
            view
        })
        .collect();
    let mut value = totals(&all);
    value["name"] = json!(name);
    let sources: BTreeSet<&ConnectionName> = all.iter().map(|m| &m.source).collect();
    let per_source: Vec<Value> = sources
        .iter()
        .map(|s| {
            let cost = costs.0.get(*s).cloned().flatten();
            json!({ "source": s, "monthlyCostUsd": cost.as_ref().map(|c| c.0), "priceList": cost.map(|c| c.1) })
        })
        .collect();
    let known: Vec<f64> = per_source.iter().filter_map(|c| c["monthlyCostUsd"].as_f64()).collect();
    value["estimatedCost"] = json!({
        "monthlyCostUsd": (known.len() == per_source.len()).then(|| known.iter().sum::<f64>()),
        "perSource": per_source,
        "method": "the size recommended by each source's latest assessment, one target per source; null until every source has an assessment with a cost",
    });
    value["waves"] = json!(wave_views);
    value
}

/// Counts and sums over some migrations.
fn totals(migrations: &[&Migration]) -> Value {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for m in migrations {
        *counts.entry(m.status().as_str()).or_default() += 1;
    }
    let counted: Vec<f64> = migrations
        .iter()
        .filter(|m| m.status() != Status::Cancelled)
        .map(|m| match m.status() {
            Status::Completed => 100.0,
            _ => m.observation.as_ref().map_or(0.0, |o| o.progress_percent),
        })
        .collect();
    let syncing = |m: &&&Migration| !m.phase.is_terminal();
    let observations = || migrations.iter().filter(syncing).filter_map(|m| m.observation.as_ref());
    json!({
        "total": migrations.len(),
        "counts": counts,
        "progressPercent": (!counted.is_empty()).then(|| (counted.iter().sum::<f64>() / counted.len() as f64 * 10.0).round() / 10.0),
        "lagBytes": observations().filter_map(|o| o.lag_bytes).sum::<u64>(),
        "maxLagSeconds": observations().filter_map(|o| o.lag_seconds).reduce(f64::max),
        "seedingEtaSeconds": observations().filter_map(|o| o.seed.as_ref().and_then(|s| s.eta_seconds)).reduce(f64::max),
    })
}
