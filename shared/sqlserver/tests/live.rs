//! Live tests against a real SQL Server and a real Azure SQL Managed Instance. They run only when the
//! environment names them and otherwise print that they were skipped (and pass): nothing here pretends to
//! have run against a server. Read-only tests need only the connection variables; the link round trip also
//! needs `MILINK_LIVE_CREATE_LINK=1`, because it creates (and then cancels) a real link.
//!
//! | variable | meaning |
//! |---|---|
//! | `MILINK_LIVE_SQLSERVER_URL` | `sqlserver://login@host:port` of the source |
//! | `MILINK_LIVE_SQLSERVER_PASSWORD` | its password (or an Entra token with `..._AUTH=entra_token`) |
//! | `MILINK_LIVE_SQLSERVER_AUTH` | `sql` (default), `entra_token`, `entra` |
//! | `MILINK_LIVE_SQLSERVER_TRUST_CERT` | `1` to accept a self-signed certificate (test servers only) |
//! | `MILINK_LIVE_SQLSERVER_REPLICATION_URL` | `tcp://<ip>:5022` the MI reaches SQL Server at |
//! | `MILINK_LIVE_MI_RESOURCE_ID` | the managed instance's ARM resource id |
//! | `MILINK_LIVE_MI_ARM_BASE_URL` | ARM endpoint (default public cloud) |
//! | `MILINK_LIVE_MI_CREDENTIAL` | `default`, `managed_identity`, `workload_identity`, `azure_cli`, `client_secret` |
//! | `MILINK_LIVE_MI_TDS_ENDPOINT` / `_TDS_USER` / `_PASSWORD` | optional MI TDS endpoint for MI-side checks |
//! | `MILINK_LIVE_DATABASE` | database to validate / link |
//! | `MILINK_LIVE_FENCE_LOGINS` | comma-separated logins to check for fencing |
//! | `MILINK_LIVE_CREATE_LINK` | `1` to create and cancel a real link |
//! | `MILINK_LIVE_DROP_TARGET` | `1` to also delete the seeded database on the MI when cancelling |
use milink_core::config::{Endpoint, Secret};
use milink_core::migration::Settings;
use milink_core::names::{ConnectionName, DatabaseName, MigrationId};
use milink_core::ports::{Engine, LinkPlan};
use milink_sqlserver::SqlServerEngine;
use std::time::Duration;

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn skip(test: &str, needs: &[&str]) -> bool {
    let missing: Vec<&str> = needs.iter().copied().filter(|n| var(n).is_none()).collect();
    if missing.is_empty() {
        return false;
    }
    eprintln!("SKIPPED {test}: not run against a real server; set {} to run it (see tests/live.rs)", missing.join(", "));
    true
}

fn source() -> Endpoint {
    let mut options = toml::Table::new();
    if let Some(auth) = var("MILINK_LIVE_SQLSERVER_AUTH") {
        options.insert("auth".into(), toml::Value::String(auth));
    }
    if var("MILINK_LIVE_SQLSERVER_TRUST_CERT").as_deref() == Some("1") {
        options.insert("trust_server_certificate".into(), toml::Value::Boolean(true));
    }
    options.insert("sample_seconds".into(), toml::Value::Integer(5));
    Endpoint {
        name: ConnectionName::parse("live-sqlserver").unwrap(),
        engine: "sqlserver".into(),
        url: var("MILINK_LIVE_SQLSERVER_URL").unwrap(),
        password: var("MILINK_LIVE_SQLSERVER_PASSWORD").map(Secret::new),
        replication_url: var("MILINK_LIVE_SQLSERVER_REPLICATION_URL"),
        options,
    }
}

fn target() -> Endpoint {
    let mut options = toml::Table::new();
    for (env, key) in [("MILINK_LIVE_MI_ARM_BASE_URL", "arm_base_url"), ("MILINK_LIVE_MI_CREDENTIAL", "credential"), ("MILINK_LIVE_MI_TDS_ENDPOINT", "tds_endpoint"), ("MILINK_LIVE_MI_TDS_USER", "tds_user")] {
        if let Some(value) = var(env) {
            options.insert(key.into(), toml::Value::String(value));
        }
    }
    Endpoint {
        name: ConnectionName::parse("live-mi").unwrap(),
        engine: "azure-sql-mi".into(),
        url: var("MILINK_LIVE_MI_RESOURCE_ID").unwrap(),
        password: var("MILINK_LIVE_MI_PASSWORD").map(Secret::new),
        replication_url: None,
        options,
    }
}

fn plan() -> LinkPlan {
    let fence_roles = var("MILINK_LIVE_FENCE_LOGINS").map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()).unwrap_or_default();
    LinkPlan {
        migration_id: MigrationId::new_random(),
        source: source(),
        target: target(),
        database: DatabaseName::parse(&var("MILINK_LIVE_DATABASE").unwrap()).unwrap(),
        settings: Settings { fence_roles, ..Settings::default() },
    }
}

#[tokio::test]
async fn live_assess_a_real_sql_server() {
    if skip("live_assess_a_real_sql_server", &["MILINK_LIVE_SQLSERVER_URL", "MILINK_LIVE_SQLSERVER_PASSWORD"]) {
        return;
    }
    let assessment = SqlServerEngine::new().assess(&source()).await.expect("assessment against the live SQL Server");
    eprintln!("RAN against a real SQL Server: {}", assessment.server_version);
    for finding in &assessment.instance_findings {
        eprintln!("  instance {:?} {}: {}", finding.severity, finding.rule, finding.message);
    }
    for database in &assessment.databases {
        eprintln!("  {} → {:?} ({} findings)", database.name, database.readiness, database.findings.len());
    }
    eprintln!("  recommendation: {:?}", assessment.recommendation.as_ref().map(|r| (&r.sku, r.monthly_cost_usd, &r.confidence)));
    assert!(!assessment.server_version.is_empty());
}

#[tokio::test]
async fn live_read_a_real_managed_instance() {
    if skip("live_read_a_real_managed_instance", &["MILINK_LIVE_MI_RESOURCE_ID"]) {
        return;
    }
    let connections = milink_sqlserver::connections::LiveConnections::default();
    let target = milink_sqlserver::connections::Connections::target(&connections, &target()).expect("target options");
    let instance = target.api.instance().await.expect("GET managed instance");
    let certificate = target.api.endpoint_certificate().await.expect("GET endpointCertificates/DATABASE_MIRRORING");
    let links = target.api.links().await.expect("GET distributedAvailabilityGroups");
    eprintln!(
        "RAN against a real managed instance: {:?}, update policy {:?}, certificate {} bytes, {} links",
        instance.properties.fully_qualified_domain_name,
        instance.properties.database_format,
        certificate.properties.public_blob.map_or(0, |b| b.len() / 2),
        links.len()
    );
}

#[tokio::test]
async fn live_validate_a_real_link_plan() {
    if skip("live_validate_a_real_link_plan", &["MILINK_LIVE_SQLSERVER_URL", "MILINK_LIVE_SQLSERVER_PASSWORD", "MILINK_LIVE_MI_RESOURCE_ID", "MILINK_LIVE_DATABASE"]) {
        return;
    }
    let findings = SqlServerEngine::new().validate(&plan()).await.expect("validation against live servers");
    eprintln!("RAN validation against real servers:");
    for finding in &findings {
        eprintln!("  {:?} {}: {} → {}", finding.severity, finding.rule, finding.message, finding.remediation);
    }
}

#[tokio::test]
async fn live_create_observe_and_cancel_a_real_link() {
    if skip(
        "live_create_observe_and_cancel_a_real_link",
        &["MILINK_LIVE_SQLSERVER_URL", "MILINK_LIVE_SQLSERVER_PASSWORD", "MILINK_LIVE_MI_RESOURCE_ID", "MILINK_LIVE_DATABASE", "MILINK_LIVE_CREATE_LINK"],
    ) {
        return;
    }
    let engine = SqlServerEngine::new();
    let plan = plan();
    engine.create_link(&plan).await.expect("create the link");
    engine.create_link(&plan).await.expect("a repeat resumes and changes nothing");
    let mut last = None;
    for _ in 0..60 {
        let observation = engine.observe(&plan, chrono::Utc::now()).await.expect("observe");
        eprintln!("  {:?} {:.0}% lag {:?} problem {:?}", observation.phase, observation.progress_percent, observation.lag_bytes, observation.problem);
        let done = observation.problem.is_some() || observation.phase == milink_core::migration::LinkPhase::Streaming;
        last = Some(observation);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let report = engine.cancel(&plan, var("MILINK_LIVE_DROP_TARGET").as_deref() == Some("1")).await.expect("cancel");
    eprintln!("RAN a real link: last observation {last:?}\n  removed {:#?}\n  left {:#?}", report.removed, report.left);
}
