//! What a real server would refuse (issue 15): each test pins one place where the doubles used to accept
//! what SQL Server, the managed instance or ARM refuse — a bare-hex trust certificate, a second copy of one,
//! an unpaged list, a one-sided commit mode, a certificate before a master key, a password `QUOTENAME`
//! cannot quote, a seed read under the wrong id, equal LSNs without synchronous commit, a fabric node name
//! used as a host. The doubles now model the real behaviour; each test fails on the code before its fix.
mod support;

use milink_core::error::ErrorKind;
use milink_core::migration::Settings;
use milink_core::ports::Engine;
use milink_sqlserver::SqlServerEngine;
use serde_json::json;
use std::sync::Arc;
use support::contract::{ContractServer, FQDN};
use support::fake_sql::FakeSqlServer;
use support::rig::{rig, rig_with, settings, streaming, DAG, DB};
use support::{plan, ClockPause, ManualClock, TestConnections};

/// Issue 15, item 1: the endpoint certificate went to the MI as bare hex (every Microsoft client sends `0x…`),
/// and a certificate already on the MI under another name was uploaded again (the MI keeps one copy).
#[tokio::test]
async fn the_endpoint_certificate_goes_to_the_mi_as_0x_hex_and_once_whatever_its_name_there() {
    let rig = rig().await;
    let plan = plan(&rig.server.base_url, DB, settings());
    rig.engine.create_link(&plan).await.unwrap();
    let key = rig.sql.state.lock().unwrap().certificates["milink_endpoint_cert"].clone();
    let put = |server: &ContractServer| server.state().requests.iter().filter(|r| r.method == "PUT" && r.path.contains("/serverTrustCertificates/")).map(|r| r.body.clone()).collect::<Vec<_>>();
    assert_eq!(put(&rig.server), vec![Some(json!({ "properties": { "publicBlob": format!("0x{key}") } }))]);

    // The same certificate now sits on the MI under the name SSMS gave it: nothing is uploaded again.
    {
        let mut state = rig.server.state();
        let blob = state.trust_certificates.remove("SQL01_milink_endpoint_cert").unwrap();
        state.trust_certificates.insert("SQL01_uploaded_by_ssms".into(), blob);
    }
    rig.engine.create_link(&plan).await.unwrap();
    assert_eq!(put(&rig.server).len(), 1, "matched by key, not by name");
    assert_eq!(rig.server.state().trust_certificates.keys().collect::<Vec<_>>(), ["SQL01_uploaded_by_ssms"]);
}

/// Issue 15, item 6: `links()` read only the first page of the list, so cancel could delete the trust
/// certificate another link from this SQL Server still needs (and the link limit could be undercounted).
#[tokio::test]
async fn cancel_keeps_the_trust_certificate_while_a_link_on_a_later_page_still_uses_it() {
    let rig = rig().await;
    let plan = plan(&rig.server.base_url, DB, settings());
    rig.engine.create_link(&plan).await.unwrap();
    {
        let mut state = rig.server.state();
        assert_eq!(state.page_size, 2, "the contract server pages its lists");
        let other = |endpoint: &str, database: &str| json!({ "partnerEndpoint": endpoint, "partnerAvailabilityGroupName": "other_ag", "databases": [{ "databaseName": database }] });
        state.dags.insert("aa_elsewhere_1".into(), other("TCP://10.9.0.1:5022", "Sales"));
        state.dags.insert("aa_elsewhere_2".into(), other("TCP://10.9.0.2:5022", "Hr"));
        state.dags.insert("zz_same_sql_server".into(), other("TCP://10.0.0.4:5022", "Customer360"));
    }
    // Other AGs on SQL Server are gone (a second server-side AG would keep everything anyway).
    let report = rig.engine.cancel(&plan, false).await.unwrap();
    assert!(rig.server.state().trust_certificates.contains_key("SQL01_milink_endpoint_cert"), "{report:#?}");
    assert!(report.left.iter().any(|l| l.contains("SQL01_milink_endpoint_cert") && l.contains("other links")), "{:#?}", report.left);
}

/// Issue 15, item 7: after a failover that keeps the link only the MI went back to asynchronous commit;
/// SQL Server's distributed AG stayed synchronous, so the two members disagreed.
#[tokio::test]
async fn after_a_failover_keeping_the_link_both_sides_are_asynchronous() {
    let rig = rig().await;
    let plan = plan(&rig.server.base_url, DB, Settings { keep_reverse_link: true, ..settings() });
    rig.engine.create_link(&plan).await.unwrap();
    streaming(&rig, "71000009408200001", "71000009408200001");
    rig.engine.fence(&plan).await.unwrap();
    assert!(rig.sql.state.lock().unwrap().groups[DAG].synchronous);
    rig.engine.switch(&plan, true).await.unwrap();
    assert_eq!(rig.server.state().dags[DAG]["replicationMode"], "Async", "the MI side");
    assert!(!rig.sql.state.lock().unwrap().groups[DAG].synchronous, "SQL Server's side agrees");
    let last = rig.sql.executed().into_iter().rev().find(|s| s.contains("MODIFY AVAILABILITY GROUP ON")).unwrap();
    assert_eq!(last.matches("ASYNCHRONOUS_COMMIT").count(), 2, "both members: {last}");
}

/// Issue 15, item 8: a master key password over 128 characters made `QUOTENAME` return NULL, so `EXEC` did
/// nothing and the link failed later with an unrelated error. Now validation blocks and create_link refuses,
/// both saying what to do, before anything is created.
#[tokio::test]
async fn a_master_key_password_over_128_characters_is_refused_with_what_to_do() {
    let server = ContractServer::start().await;
    let sql = FakeSqlServer::sql2022(&[DB]);
    let clock = ManualClock::new();
    let connections = TestConnections { sql: sql.clone(), base_url: server.base_url.clone(), instance_sql: None };
    let long = "Aa1-".repeat(33);
    let engine = SqlServerEngine::with_parts(Arc::new(connections), Arc::new(clock.clone()), Arc::new(ClockPause(clock)), Arc::new(move |var: &str| (var == "TAILSPIN_MK").then(|| long.clone())));
    let mut plan = plan(&server.base_url, DB, settings());
    plan.source.options.insert("master_key_password_env".into(), toml::Value::String("TAILSPIN_MK".into()));

    let findings = engine.validate(&plan).await.unwrap();
    let finding = findings.iter().find(|f| f.rule == "master_key_password_invalid").unwrap_or_else(|| panic!("{findings:#?}"));
    assert_eq!(finding.severity, milink_core::assessment::Severity::Blocker);
    let error = engine.create_link(&plan).await.unwrap_err();
    assert_eq!((error.kind, error.code.as_str()), (ErrorKind::Definite, "master_key_password_invalid"));
    assert!(error.message.contains("132 characters") && error.remediation.contains("TAILSPIN_MK") && error.remediation.contains("128"), "{error:?}");
    assert!(!error.message.contains("Aa1-"), "the password itself is never shown");
    assert!(!sql.state.lock().unwrap().master_key && !sql.executed().iter().any(|s| s.contains("CREATE MASTER KEY") || s.contains("CREATE CERTIFICATE")));
}

/// Issue 15, item 4: on a fresh SQL Server (no master key) the MI → SQL Server test created its certificate
/// first, which SQL Server refuses (15581), so the test never ran there.
#[tokio::test]
async fn the_mi_to_sql_server_test_runs_on_a_fresh_server_and_leaves_no_master_key_behind() {
    let instance = FakeSqlServer::sql2022(&[]);
    instance.state.lock().unwrap().job_output = vec!["milink-tnc:True:10.0.0.4".into()];
    let rig = rig_with(Some(instance)).await;
    assert!(!rig.sql.state.lock().unwrap().master_key, "a fresh server");
    rig.sql.state.lock().unwrap().job_output = vec!["milink-tnc:True:10.1.0.5".into(), "milink-tnc:True:10.1.0.6".into()];
    let findings = rig.engine.validate(&plan(&rig.server.base_url, DB, settings())).await.unwrap();
    assert!(!findings.iter().any(|f| f.rule == "network_mi_to_sql_not_run"), "{findings:#?}");
    let back = findings.iter().find(|f| f.rule == "network_mi_to_sql").unwrap_or_else(|| panic!("{findings:#?}"));
    assert_eq!(back.severity, milink_core::assessment::Severity::Info);
    let executed = rig.sql.executed();
    let position = |needle: &str| executed.iter().position(|s| s.contains(needle)).unwrap_or_else(|| panic!("{needle}: {executed:#?}"));
    assert!(position("CREATE MASTER KEY") < position("CREATE CERTIFICATE [milink_test_certificate]"));
    assert!(position("DROP CERTIFICATE [milink_test_certificate]") < position("DROP MASTER KEY"));
    let s = rig.sql.state.lock().unwrap();
    assert!(!s.master_key && s.endpoint.is_none() && !s.certificates.contains_key("milink_test_certificate"), "the server is left as found");
}

/// Issue 15, item 3: the seeding query only looked under the distributed AG's id; which id the global
/// primary records for a distributed AG's seed is not documented, so a failure under the local AG's id was
/// never seen.
#[tokio::test]
async fn a_failed_seed_is_seen_under_either_availability_groups_id() {
    let rig = rig().await;
    let plan = plan(&rig.server.base_url, DB, settings());
    rig.engine.create_link(&plan).await.unwrap();
    rig.sql.state.lock().unwrap().replicas = vec![json!({ "is_local": 1, "role_desc": "PRIMARY" }), json!({ "is_local": 0, "connected_state_desc": "CONNECTED", "synchronization_state_desc": "NOT SYNCHRONIZING" })];
    for ag in [DAG, "milink_0f1e2d3c4b5a_ag"] {
        rig.sql.state.lock().unwrap().seeding = vec![json!({ "ag_name": ag, "current_state": "FAILED", "failure_state_desc": "Transport", "error_code": 1408, "completed": 1 })];
        let observation = rig.engine.observe(&plan, chrono::Utc::now()).await.unwrap();
        let problem = observation.problem.unwrap_or_else(|| panic!("a failed seed under {ag} is seen"));
        assert!(problem.reason.contains("1408") && problem.remediation.contains("12381"), "{problem:?}");
    }
}

/// Issue 15, item 5: the guard compared hardened LSNs only. Equal LSNs prove nothing while the MI is
/// disconnected, not SYNCHRONIZED, or the switch to synchronous commit has not taken effect (a synchronous
/// primary's hardened LSN is the minimum over its synchronous secondaries).
#[tokio::test]
async fn cutover_needs_synchronous_connected_and_synchronized_replicas_not_just_equal_lsns() {
    for (case, breaks) in [
        ("disconnected", json!({ "connected_state_desc": "DISCONNECTED" })),
        ("not synchronized", json!({ "synchronization_state_desc": "SYNCHRONIZING" })),
        ("switch not taken effect", json!({ "availability_mode_desc": "ASYNCHRONOUS_COMMIT" })),
    ] {
        let rig = rig().await;
        let plan = plan(&rig.server.base_url, DB, settings());
        rig.engine.create_link(&plan).await.unwrap();
        streaming(&rig, "71000009408200001", "71000009408200001");
        rig.engine.fence(&plan).await.unwrap();
        for (key, value) in breaks.as_object().unwrap() {
            rig.sql.state.lock().unwrap().replicas[1][key] = value.clone();
        }
        let error = rig.engine.switch(&plan, false).await.unwrap_err();
        assert_eq!((error.kind, error.code.as_str()), (ErrorKind::Transient, "not_caught_up"), "{case}");
        assert!(error.message.contains(breaks.as_object().unwrap().values().next().unwrap().as_str().unwrap()), "{case}: {}", error.message);
        assert_eq!(rig.server.state().dags.len(), 1, "{case}: nothing was broken");
    }
    // ARM still in asynchronous mode (its PATCH did not land) is refused too.
    let rig = rig().await;
    let plan = plan(&rig.server.base_url, DB, settings());
    rig.engine.create_link(&plan).await.unwrap();
    streaming(&rig, "71000009408200001", "71000009408200001");
    rig.engine.fence(&plan).await.unwrap();
    rig.server.state().dags.get_mut(DAG).unwrap()["replicationMode"] = json!("Async");
    let error = rig.engine.switch(&plan, false).await.unwrap_err();
    assert!(error.message.contains("replicationMode Async"), "{}", error.message);
    // ARM seeing the MI's replica disconnected is refused too.
    rig.server.state().dags.get_mut(DAG).unwrap()["replicationMode"] = json!("Sync");
    rig.server.state().link_database_overrides["connectedState"] = json!("DISCONNECTED");
    let error = rig.engine.switch(&plan, false).await.unwrap_err();
    assert!(error.message.contains("reports its replica DISCONNECTED"), "{}", error.message);
}

/// Issue 15, item 2: the redirect probe took its host from `fr.node_name` with `TOP (1)` and no instance
/// filter — on a virtual cluster with several instances that is another instance's node, and a fabric node
/// name is not a DNS name — so a healthy link was reported as a Blocker. Microsoft's script derives the host
/// from `replica_address` and keeps only this instance's service.
#[tokio::test]
async fn the_redirect_probe_tests_this_instances_node_as_microsofts_script_finds_it() {
    let instance = FakeSqlServer::sql2022(&[]);
    instance.state.lock().unwrap().job_output = vec!["milink-tnc:True:10.0.0.4".into()];
    let rig = rig_with(Some(instance)).await;
    rig.sql.state.lock().unwrap().network = Some(
        [(format!("{FQDN}:5022"), "10.1.0.5".to_owned()), ("DB8C2.tr123.westus1-a.worker.database.windows.net:11002".to_owned(), "10.1.0.6".to_owned())].into_iter().collect(),
    );
    let findings = rig.engine.validate(&plan(&rig.server.base_url, DB, settings())).await.unwrap();
    let redirect = findings.iter().find(|f| f.rule == "network_sql_to_mi_redirect").unwrap_or_else(|| panic!("{findings:#?}"));
    assert_eq!(redirect.severity, milink_core::assessment::Severity::Info, "{redirect:?}");
    assert!(redirect.message.contains("DB8C2.tr123.westus1-a.worker.database.windows.net:11002"), "{}", redirect.message);
    assert_eq!(findings.iter().find(|f| f.rule == "network_sql_to_mi").unwrap().severity, milink_core::assessment::Severity::Info);
}
