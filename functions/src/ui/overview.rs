//! The dashboard's read models: `GET /api/connections` (names and engines) and `GET /api/overview` (the
//! four steps of the journey, latest assessments, migrations by status, and `nextActions`).
//!
//! `nextActions` is the deterministic counterpart of the portal's Copilot panel: [`next_actions`] is a pure
//! function of what the stores hold, ordered by how far along the journey each item is (act on what is
//! ready to finish before starting new work), so the same state always gives the same list.
//!
//! Connections are listed by name and engine only: their URLs name hosts, ports and user names, which the
//! UI does not need to pick a source or a target and which a shared screen should not show.
use crate::api::error::ApiError;
use crate::api::ApiState;
use axum::extract::State;
use axum::Json;
use milink_core::assessment::{AssessmentReport, Readiness};
use milink_core::ports::MigrationFilter;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A database's readiness in a connection's latest completed assessment.
#[derive(Debug, Clone, PartialEq)]
pub struct AssessedDatabase {
    /// Database name.
    pub name: String,
    /// Its readiness.
    pub readiness: Readiness,
}

/// A connection's latest completed assessment, as the overview needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct AssessmentFact {
    /// The assessed connection.
    pub connection: String,
    /// Report id.
    pub id: String,
    /// Its databases.
    pub databases: Vec<AssessedDatabase>,
}

/// A migration, as the overview needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationFact {
    /// Id.
    pub id: String,
    /// Source connection.
    pub source: String,
    /// Database.
    pub database: String,
    /// API status string.
    pub status: String,
    /// Why it is where it is, when it says.
    pub reason: Option<String>,
}

/// One thing to do next.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NextAction {
    /// `cutover`, `investigate`, `fixBlockers`, `startMigration`, `assess`, `configure`.
    pub kind: &'static str,
    /// What to do, in a sentence.
    pub title: String,
    /// The connection it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The database it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The migration it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration_id: Option<String>,
    /// The assessment it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assessment_id: Option<String>,
}

impl NextAction {
    fn new(kind: &'static str, title: String) -> Self {
        Self { kind, title, connection: None, database: None, migration_id: None, assessment_id: None }
    }
}

const TERMINAL: &[&str] = &["Completed", "FailedBack", "Failed", "Cancelled"];

/// What to do next, most urgent first: cut over what is ready, look at what is stuck, fix blockers, start
/// what is ready and not migrating (one line per source), assess what was never assessed. Sources are the connections not used
/// as a migration's target.
pub fn next_actions(connections: &[String], targets: &[String], assessments: &[AssessmentFact], migrations: &[MigrationFact]) -> Vec<NextAction> {
    let mut actions = Vec::new();
    if connections.is_empty() {
        actions.push(NextAction::new("configure", "Add the source and target connections to milink.toml, then restart milink".into()));
        return actions;
    }
    for m in migrations.iter().filter(|m| m.status == "ReadyForCutover") {
        let mut action = NextAction::new("cutover", format!("Stop the application's traffic to {}, then cut over", m.database));
        action.database = Some(m.database.clone());
        action.migration_id = Some(m.id.clone());
        actions.push(action);
    }
    for m in migrations.iter().filter(|m| matches!(m.status.as_str(), "Stalled" | "Blocked" | "Failed")) {
        let why = m.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        let mut action = NextAction::new("investigate", format!("{} is {}{why}", m.database, m.status));
        action.database = Some(m.database.clone());
        action.migration_id = Some(m.id.clone());
        actions.push(action);
    }
    let migrating = |source: &str, database: &str| {
        migrations.iter().any(|m| m.source == source && m.database == database && !matches!(m.status.as_str(), "Failed" | "Cancelled"))
    };
    for assessment in assessments {
        for db in assessment.databases.iter().filter(|d| d.readiness == Readiness::NotReady) {
            let mut action = NextAction::new("fixBlockers", format!("Fix the blockers of {} on {}, then assess again", db.name, assessment.connection));
            action.connection = Some(assessment.connection.clone());
            action.database = Some(db.name.clone());
            action.assessment_id = Some(assessment.id.clone());
            actions.push(action);
        }
    }
    for assessment in assessments {
        let ready: Vec<&str> = assessment
            .databases
            .iter()
            .filter(|d| d.readiness != Readiness::NotReady && !migrating(&assessment.connection, &d.name))
            .map(|d| d.name.as_str())
            .collect();
        // One line per source, not per database: a server with fifty ready databases is one decision.
        let mut action = match ready.as_slice() {
            [] => continue,
            [one] => {
                let mut action = NextAction::new("startMigration", format!("Start migrating {one} from {}", assessment.connection));
                action.database = Some((*one).to_owned());
                action
            }
            many => NextAction::new("startMigration", format!("Start migrating the {} ready databases of {}", many.len(), assessment.connection)),
        };
        action.connection = Some(assessment.connection.clone());
        actions.push(action);
    }
    for connection in connections.iter().filter(|c| !targets.contains(c) && !assessments.iter().any(|a| &a.connection == *c)) {
        let mut action = NextAction::new("assess", format!("Assess {connection}"));
        action.connection = Some(connection.clone());
        actions.push(action);
    }
    actions
}

/// The four steps of the journey, each done or not, with a line saying where it stands.
pub fn steps(assessments: &[AssessmentFact], migrations: &[MigrationFact]) -> Value {
    let count = |pred: &dyn Fn(&MigrationFact) -> bool| migrations.iter().filter(|m| pred(m)).count();
    let synced = count(&|m| matches!(m.status.as_str(), "ReadyForCutover" | "CuttingOver" | "Completed" | "FailingBack" | "FailedBack"));
    let syncing = count(&|m| !TERMINAL.contains(&m.status.as_str()));
    let completed = count(&|m| m.status == "Completed");
    let linked: std::collections::BTreeSet<&str> = migrations.iter().map(|m| m.source.as_str()).collect();
    json!([
        { "step": "assess", "title": "Assess source instance", "done": !assessments.is_empty(),
          "detail": format!("{} source(s) assessed", assessments.len()) },
        { "step": "target", "title": "Create or select a target", "done": !migrations.is_empty(),
          "detail": if migrations.is_empty() { "pick a target when you start a migration".to_owned() } else { format!("{} source(s) linked to a target", linked.len()) } },
        { "step": "migrate", "title": "Migrate data", "done": synced > 0,
          "detail": format!("{syncing} migration(s) in progress, {synced} caught up or beyond") },
        { "step": "cutover", "title": "Cutover", "done": completed > 0,
          "detail": format!("{completed} migration(s) completed") },
    ])
}

fn assessment_fact(report: &AssessmentReport) -> AssessmentFact {
    AssessmentFact {
        connection: report.connection.to_string(),
        id: report.id.clone(),
        databases: report.databases.iter().map(|d| AssessedDatabase { name: d.name.clone(), readiness: d.readiness }).collect(),
    }
}

/// `GET /api/connections`: `{"connections":[{"name","engine"}]}`.
pub async fn connections(State(state): State<ApiState>) -> Json<Value> {
    let list: Vec<Value> = state.ctx.config.connections.values().map(|c| json!({ "name": c.name, "engine": c.engine })).collect();
    Json(json!({ "connections": list }))
}

/// `GET /api/overview`.
pub async fn overview(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let ctx = &state.ctx;
    let mut reports = Vec::new();
    for name in ctx.config.connections.keys() {
        if let Some(report) = ctx.assessments.latest_assessment(name).await? {
            reports.push(report);
        }
    }
    let migrations = ctx.migrations.list(&MigrationFilter::default()).await?;
    let facts: Vec<MigrationFact> = migrations
        .iter()
        .map(|m| MigrationFact {
            id: m.id.to_string(),
            source: m.source.to_string(),
            database: m.database.to_string(),
            status: m.status().as_str().to_owned(),
            reason: m.reason(),
        })
        .collect();
    let assessed: Vec<AssessmentFact> = reports.iter().map(assessment_fact).collect();
    let connections: Vec<String> = ctx.config.connections.keys().map(|k| k.to_string()).collect();
    let targets: Vec<String> = migrations.iter().map(|m| m.target.to_string()).collect();
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for fact in &facts {
        *by_status.entry(fact.status.as_str()).or_default() += 1;
    }
    let latest: Vec<Value> = reports
        .iter()
        .map(|r| {
            let tally = |readiness| r.databases.iter().filter(|d| d.readiness == readiness).count();
            json!({
                "id": r.id, "connection": r.connection, "status": r.status, "completedAt": r.completed_at,
                "ready": tally(Readiness::Ready), "readyWithWarnings": tally(Readiness::ReadyWithWarnings), "notReady": tally(Readiness::NotReady),
            })
        })
        .collect();
    Ok(Json(json!({
        "connections": ctx.config.connections.values().map(|c| json!({ "name": c.name, "engine": c.engine })).collect::<Vec<_>>(),
        "assessments": latest,
        "migrationsByStatus": by_status,
        "steps": steps(&assessed, &facts),
        "nextActions": next_actions(&connections, &targets, &assessed, &facts),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migration(database: &str, status: &str) -> MigrationFact {
        MigrationFact { id: format!("m-{database}"), source: "src".into(), database: database.into(), status: status.into(), reason: None }
    }

    fn tailspin() -> AssessmentFact {
        AssessmentFact {
            connection: "src".into(),
            id: "a1".into(),
            databases: vec![
                AssessedDatabase { name: "Customer360".into(), readiness: Readiness::NotReady },
                AssessedDatabase { name: "ToyStore".into(), readiness: Readiness::Ready },
            ],
        }
    }

    fn kinds(actions: &[NextAction]) -> Vec<(&str, Option<&str>)> {
        actions.iter().map(|a| (a.kind, a.database.as_deref().or(a.connection.as_deref()))).collect()
    }

    #[test]
    fn a_fresh_install_is_told_to_assess_its_sources_and_nothing_else() {
        let connections = vec!["dst".to_owned(), "src".to_owned()];
        let actions = next_actions(&connections, &[], &[], &[]);
        assert_eq!(kinds(&actions), vec![("assess", Some("dst")), ("assess", Some("src"))]);
        assert_eq!(kinds(&next_actions(&[], &[], &[], &[])), vec![("configure", None)]);
    }

    #[test]
    fn after_the_tailspin_assessment_fix_customer360_and_start_toystore() {
        let connections = vec!["dst".to_owned(), "src".to_owned()];
        let actions = next_actions(&connections, &[], &[tailspin()], &[]);
        assert_eq!(kinds(&actions), vec![("fixBlockers", Some("Customer360")), ("startMigration", Some("ToyStore")), ("assess", Some("dst"))]);
    }

    #[test]
    fn a_ready_migration_comes_first_and_a_migrating_database_is_not_started_again() {
        let connections = vec!["dst".to_owned(), "src".to_owned()];
        let targets = vec!["dst".to_owned()];
        let actions = next_actions(&connections, &targets, &[tailspin()], &[migration("ToyStore", "ReadyForCutover")]);
        assert_eq!(kinds(&actions), vec![("cutover", Some("ToyStore")), ("fixBlockers", Some("Customer360"))]);
        let again = next_actions(&connections, &targets, &[tailspin()], &[migration("ToyStore", "Cancelled")]);
        assert!(kinds(&again).contains(&("startMigration", Some("ToyStore"))), "a cancelled migration can be started again");
    }

    #[test]
    fn many_ready_databases_on_one_source_are_one_action() {
        let mut assessment = tailspin();
        assessment.databases.push(AssessedDatabase { name: "Catalog".into(), readiness: Readiness::ReadyWithWarnings });
        let actions = next_actions(&["src".to_owned()], &[], &[assessment], &[]);
        let start: Vec<_> = actions.iter().filter(|a| a.kind == "startMigration").collect();
        assert_eq!(start.len(), 1);
        assert_eq!(start[0].title, "Start migrating the 2 ready databases of src");
        assert_eq!((start[0].connection.as_deref(), start[0].database.as_deref()), (Some("src"), None));
    }

    #[test]
    fn the_steps_tick_as_the_journey_advances() {
        let done = |v: &Value| v.as_array().unwrap().iter().map(|s| s["done"].as_bool().unwrap()).collect::<Vec<_>>();
        assert_eq!(done(&steps(&[], &[])), vec![false, false, false, false]);
        assert_eq!(done(&steps(&[tailspin()], &[migration("ToyStore", "Seeding")])), vec![true, true, false, false]);
        assert_eq!(done(&steps(&[tailspin()], &[migration("ToyStore", "Completed")])), vec![true, true, true, true]);
    }
}
