//! The whole engine through the core's `Engine` trait: a FAKE SQL Server (no real one is reachable) and the
//! real ARM client against the contract server. Proves step order, check-then-act idempotency, resume after
//! a partial run, the cutover paths and cancel; SQL Server's own behaviour is the live suite's job.
mod support;

use milink_core::error::ErrorKind;
use milink_core::migration::{LinkPhase, Settings};
use milink_core::ports::Engine;
use milink_sqlserver::lsn::position_of;
use serde_json::json;
use support::contract::FQDN;
use support::fake_sql::{FakeEndpoint, FakeSqlServer};
use support::plan;
use support::rig::{rig, rig_with, settings, streaming, DAG, DB};

#[tokio::test]
async fn create_link_makes_every_object_once_and_a_repeat_changes_nothing() {
    let rig = rig().await;
    let plan = plan(&rig.server.base_url, DB, settings());
    rig.engine.create_link(&plan).await.unwrap();
    {
        let s = rig.sql.state.lock().unwrap();
        assert!(s.master_key);
        assert!(s.certificates.contains_key("milink_endpoint_cert"));
        assert_eq!(s.certificates.get(FQDN).map(String::as_str), Some("308203B23082021AA003020102021034C597BA"), "the MI's certificate, named exactly as its FQDN");
        assert!(s.certificates.contains_key("MicrosoftPKI") && s.certificates.contains_key("DigiCertPKI"));
        assert!(s.issuers.contains(&("DigiCertPKI".into(), "*.database.windows.net".into())));
        assert_eq!(s.endpoint, Some(FakeEndpoint { name: "milink_mirroring_endpoint".into(), auth: "CERTIFICATE".into(), algorithm: "AES".into(), certificate: Some("milink_endpoint_cert".into()), port: 5022 }));
        assert_eq!(s.groups["milink_0f1e2d3c4b5a_ag"].database.as_deref(), Some(DB));
        assert!(s.groups[DAG].distributed);
    }
    {
        let state = rig.server.state();
        let key = rig.sql.state.lock().unwrap().certificates["milink_endpoint_cert"].clone();
        assert_eq!(state.trust_certificates.get("SQL01_milink_endpoint_cert"), Some(&key), "SQL Server's public key uploaded to the MI");
        let link = &state.dags[DAG];
        assert_eq!(link["partnerEndpoint"], "TCP://10.0.0.4:5022");
        assert_eq!(link["partnerAvailabilityGroupName"], "milink_0f1e2d3c4b5a_ag");
        assert_eq!(link["instanceAvailabilityGroupName"], "milink_0f1e2d3c4b5a_mi");
        assert_eq!(link["failoverMode"], "Manual", "SQL Server 2022 CU13+ with the 2022 update policy can fail back");
        assert!(state.invalid_bodies.is_empty(), "{:?}", state.invalid_bodies);
    }
    let executed_once = rig.sql.executed();
    let puts_once = rig.server.state().requests.iter().filter(|r| r.method == "PUT").count();
    rig.engine.create_link(&plan).await.unwrap();
    let repeated: Vec<String> = rig.sql.executed()[executed_once.len()..].to_vec();
    assert!(repeated.iter().all(|sql| sql.contains("sp_certificate_add_issuer")), "only the server-side idempotent issuer call repeats: {repeated:#?}");
    assert_eq!(rig.server.state().requests.iter().filter(|r| r.method == "PUT").count(), puts_once, "no second PUT");
}

#[tokio::test]
async fn create_link_resumes_and_reuses_an_existing_endpoint() {
    let rig = rig().await;
    {
        let mut s = rig.sql.state.lock().unwrap();
        s.master_key = true;
        s.endpoint = Some(FakeEndpoint { name: "Hadr_endpoint".into(), auth: "NEGOTIATE".into(), algorithm: "RC4".into(), certificate: None, port: 5023 });
    }
    let plan = plan(&rig.server.base_url, DB, settings());
    rig.engine.create_link(&plan).await.unwrap();
    let executed = rig.sql.executed();
    assert!(!executed.iter().any(|s| s.contains("CREATE MASTER KEY")), "an existing master key is kept");
    assert!(executed.iter().any(|s| s.starts_with("ALTER ENDPOINT [Hadr_endpoint]") && s.contains("LISTENER_PORT = 5023") && s.contains("WINDOWS NEGOTIATE CERTIFICATE [milink_endpoint_cert]")));
    assert!(!executed.iter().any(|s| s.starts_with("CREATE ENDPOINT")));
    assert_eq!(rig.server.state().dags[DAG]["partnerEndpoint"], "TCP://10.0.0.4:5022", "the configured replication_url wins for the partner endpoint");
}

#[tokio::test]
async fn observe_follows_the_link_from_deploying_to_streaming() {
    let rig = rig().await;
    let plan = plan(&rig.server.base_url, DB, settings());
    assert_eq!(rig.engine.observe(&plan, chrono::Utc::now()).await.unwrap().phase, LinkPhase::Deploying);
    rig.engine.create_link(&plan).await.unwrap();
    rig.sql.state.lock().unwrap().replicas = vec![json!({ "is_local": 1, "synchronization_state_desc": "SYNCHRONIZING" }), json!({ "is_local": 0, "connected_state_desc": "CONNECTED", "synchronization_state_desc": "NOT SYNCHRONIZING" })];
    let seeding = rig.engine.observe(&plan, chrono::Utc::now()).await.unwrap();
    assert_eq!((seeding.phase, seeding.progress_percent), (LinkPhase::Seeding, 80.0));
    streaming(&rig, "71000009408200001", "71000009408200001");
    let streaming = rig.engine.observe(&plan, chrono::Utc::now()).await.unwrap();
    assert_eq!((streaming.phase, streaming.lag_bytes, streaming.problem), (LinkPhase::Streaming, Some(0), None));
}

#[tokio::test]
async fn cutover_fences_waits_for_stable_equal_lsns_and_breaks_the_link() {
    let rig = rig().await;
    let plan = plan(&rig.server.base_url, DB, settings());
    rig.engine.create_link(&plan).await.unwrap();
    streaming(&rig, "71000009408200001", "71000009408200001");

    let fenced_at = rig.engine.fence(&plan).await.unwrap();
    assert_eq!(Some(fenced_at), position_of("71000009408200001"));
    {
        let s = rig.sql.state.lock().unwrap();
        assert!(s.logins["toystore_app"], "the application login is disabled");
        assert_eq!(s.sessions, vec![(61, "dba".to_owned())], "its sessions are ended, others kept");
        assert!(s.groups[DAG].synchronous);
    }
    assert_eq!(rig.server.state().dags[DAG]["replicationMode"], "Sync");
    let positions = rig.engine.positions(&plan).await.unwrap();
    assert_eq!(positions.source, positions.target);

    rig.engine.switch(&plan, false).await.unwrap();
    assert!(rig.server.state().dags.is_empty(), "link deleted on the MI");
    assert!(rig.sql.state.lock().unwrap().groups.is_empty(), "distributed AG and AG dropped on SQL Server");
    let waits = rig.sql.state.lock().unwrap().queries.iter().filter(|q| q.sql.contains("ars.is_local")).count();
    assert!(waits >= 6, "LSNs were sampled until equal and unchanged for 10 s ({waits} samples)");
    rig.engine.switch(&plan, false).await.unwrap();
}

#[tokio::test]
async fn cutover_is_refused_while_the_lsns_differ() {
    let rig = rig().await;
    let plan = plan(&rig.server.base_url, DB, settings());
    rig.engine.create_link(&plan).await.unwrap();
    streaming(&rig, "71000009408300001", "71000009408200001");
    rig.engine.fence(&plan).await.unwrap();
    let error = rig.engine.switch(&plan, false).await.unwrap_err();
    assert_eq!((error.kind, error.code.as_str()), (ErrorKind::Transient, "not_caught_up"));
    assert!(error.message.contains("differs"), "{}", error.message);
    assert_eq!(rig.server.state().dags.len(), 1, "nothing was broken");
}

#[tokio::test]
async fn cutover_keeps_a_reverse_link_when_the_versions_allow_and_fails_back() {
    let rig = rig().await;
    let plan = plan(&rig.server.base_url, DB, Settings { keep_reverse_link: true, ..settings() });
    rig.engine.create_link(&plan).await.unwrap();
    streaming(&rig, "71000009408200001", "71000009408200001");
    rig.engine.fence(&plan).await.unwrap();
    rig.engine.switch(&plan, true).await.unwrap();
    assert_eq!(rig.sql.state.lock().unwrap().failovers, vec![DAG.to_owned()], "ALTER AVAILABILITY GROUP … FAILOVER on SQL Server");
    assert_eq!(rig.server.state().dags[DAG]["replicationMode"], "Async", "the reverse link goes back to asynchronous commit");
    rig.engine.switch(&plan, true).await.unwrap();
    assert_eq!(rig.sql.state.lock().unwrap().failovers.len(), 1, "a repeated switch does not fail over again (that would fail back)");

    rig.server.state().dags.get_mut(DAG).unwrap()["instanceLinkRole"] = json!("Primary");
    rig.engine.failback(&plan).await.unwrap();
    assert!(!rig.sql.state.lock().unwrap().logins["toystore_app"], "failback gives SQL Server its application login back");
    assert!(rig.server.state().requests.iter().any(|r| r.path.ends_with("/failover") && r.body == Some(json!({ "failoverType": "Planned" }))));
}

#[tokio::test]
async fn a_reverse_link_is_refused_when_the_update_policy_does_not_match() {
    let rig = rig().await;
    rig.server.state().database_format = "AlwaysUpToDate".into();
    let plan = plan(&rig.server.base_url, DB, settings());
    rig.engine.create_link(&plan).await.unwrap();
    assert_eq!(rig.server.state().dags[DAG]["failoverMode"], "None", "one-way link");
    streaming(&rig, "71000009408200001", "71000009408200001");
    let error = rig.engine.switch(&plan, true).await.unwrap_err();
    assert_eq!((error.kind, error.code.as_str()), (ErrorKind::Definite, "failback_impossible"));
    assert!(rig.sql.state.lock().unwrap().failovers.is_empty());
}

#[tokio::test]
async fn unfence_gives_the_logins_back_and_returns_to_asynchronous_commit() {
    let rig = rig().await;
    let plan = plan(&rig.server.base_url, DB, settings());
    rig.engine.create_link(&plan).await.unwrap();
    streaming(&rig, "71000009408200001", "71000009408200001");
    rig.engine.fence(&plan).await.unwrap();
    rig.engine.unfence(&plan).await.unwrap();
    let s = rig.sql.state.lock().unwrap();
    assert!(!s.logins["toystore_app"]);
    assert!(!s.groups[DAG].synchronous);
    assert_eq!(rig.server.state().dags[DAG]["replicationMode"], "Async");
}

#[tokio::test]
async fn cancel_removes_what_create_made_and_says_what_it_left() {
    let rig = rig().await;
    let plan = plan(&rig.server.base_url, DB, settings());
    rig.engine.create_link(&plan).await.unwrap();
    let report = rig.engine.cancel(&plan, false).await.unwrap();
    assert!(rig.server.state().dags.is_empty() && rig.server.state().trust_certificates.is_empty());
    {
        let s = rig.sql.state.lock().unwrap();
        assert!(s.groups.is_empty() && s.endpoint.is_none());
        assert!(!s.certificates.contains_key(FQDN) && !s.certificates.contains_key("milink_endpoint_cert"));
        assert!(s.master_key && s.certificates.contains_key("MicrosoftPKI"), "master key and trusted roots are left");
    }
    assert!(report.left.iter().any(|l| l.contains("database Toy]Store on the managed instance") && l.contains("RemoteDatabaseExists")), "{:#?}", report.left);
    assert!(rig.server.state().databases.contains(DB), "the MI keeps the copy unless drop_target");
    rig.engine.drop_link(&plan, true).await.unwrap();
    assert!(!rig.server.state().databases.contains(DB), "drop_target deletes it; the repeat is harmless");
}

#[tokio::test]
async fn validate_reports_prerequisites_fence_logins_and_both_network_directions() {
    let instance = FakeSqlServer::sql2022(&[]);
    instance.state.lock().unwrap().job_output = vec!["Executed as user: x. milink-tnc:False:10.0.0.4 Process Exit Code 0.".into()];
    let rig = rig_with(Some(instance)).await;
    rig.sql.state.lock().unwrap().job_output = vec!["milink-tnc:True:10.1.0.5".into(), "milink-tnc:False:".into()];
    rig.server.state().databases.insert(DB.into());
    let mut settings = settings();
    settings.fence_roles.push("reporting".into());
    let findings = rig.engine.validate(&plan(&rig.server.base_url, DB, settings)).await.unwrap();
    let find = |rule: &str| findings.iter().find(|f| f.rule == rule).unwrap_or_else(|| panic!("{rule}: {findings:#?}"));
    use milink_core::assessment::Severity::*;
    assert_eq!(find("remote_database_exists").severity, Blocker);
    assert_eq!(find("fence_login_missing").severity, Blocker);
    assert_eq!(find("network_sql_to_mi").severity, Info);
    let redirect = find("network_sql_to_mi_redirect");
    assert_eq!(redirect.severity, Blocker);
    assert!(redirect.remediation.contains("11000–11999"));
    let back = find("network_mi_to_sql");
    assert_eq!(back.severity, Blocker);
    assert!(back.remediation.contains("inbound TCP 5022"), "{}", back.remediation);
    assert!(rig.sql.state.lock().unwrap().endpoint.is_none(), "the temporary test endpoint is removed");
    assert!(rig.sql.state.lock().unwrap().jobs.is_empty() && rig.instance_sql.as_ref().unwrap().state.lock().unwrap().jobs.is_empty(), "test jobs are deleted");
    assert!(!findings.iter().any(|f| f.rule == "filestream"), "findings are for the plan's database only");
}

#[tokio::test]
async fn assess_returns_readiness_and_a_priced_recommendation() {
    let rig = rig().await;
    let assessment = rig.engine.assess(&support::source_endpoint()).await.unwrap();
    assert_eq!(assessment.databases.len(), 2);
    let recommendation = assessment.recommendation.expect("a size");
    assert!(recommendation.monthly_cost_usd.unwrap() > 0.0);
    assert!(recommendation.reasons.iter().any(|r| r.contains("ESTIMATES")));
    let prices = recommendation.price_list.expect("the cost says where its prices come from");
    assert_eq!((prices.origin, prices.as_of.as_str(), prices.currency.as_str()), (milink_core::assessment::PriceListOrigin::BuiltIn, "2026-09-13", "USD"));
    assert!(prices.estimate);
}

#[tokio::test]
async fn test_connection_reports_the_version_and_that_the_session_is_encrypted() {
    let rig = rig().await;
    let check = rig.engine.test_connection(&support::source_endpoint()).await.unwrap();
    assert_eq!((check.server_version.as_str(), check.tls), ("16.0.4135.4", Some(true)));
    assert!(rig.sql.executed().is_empty(), "a connection test only reads");
    let mut instance = support::source_endpoint();
    instance.engine = "azure-sql-mi".into();
    let refused = rig.engine.test_connection(&instance).await.unwrap_err();
    assert_eq!(refused.code, "test_connection_not_supported");
    assert!(refused.message.contains("Azure Resource Manager"), "{}", refused.message);
}

#[tokio::test]
async fn assess_lists_who_is_connected_without_system_sessions_or_milink() {
    use milink_core::assessment::{DatabaseSessions, SessionGroup};
    let rig = rig().await;
    let summary = rig.engine.assess(&support::source_endpoint()).await.unwrap().connection_summary.expect("a connection summary");
    let group = |application: &str, host: &str, login: &str, database: &str, sessions| SessionGroup { application: application.into(), host: host.into(), login: login.into(), database: database.into(), sessions };
    assert_eq!(summary.groups, vec![
        group("ToyStore.Web", "10.0.0.21", "toystore_app", "ToyStore", 2),
        group("Microsoft SQL Server Management Studio", "local", "dba", "master", 1),
        group("ToyStore.Web", "10.0.0.22", "toystore_app", "ToyStore", 1),
    ], "system sessions, milink's own and milink's others are left out; shared memory reads as local");
    assert_eq!(summary.total_sessions, 4);
    assert_eq!(summary.databases[0], DatabaseSessions { database: "ToyStore".into(), sessions: 3 });
}
