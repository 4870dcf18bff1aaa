//! Observation mapping: DMV rows and the DAG JSON (Microsoft's examples) → phase, progress, lag, problems →
//! the status users see (Deploying, Seeding n %, CatchingUp, ReadyForCutover, Stalled), plus the cutover rule.
mod support;

use chrono::{DateTime, Utc};
use milink_core::migration::{LinkPhase, Migration, Observation, Phase, Position, Settings, Status};
use milink_core::names::{ConnectionName, DatabaseName, MigrationId};
use milink_sqlserver::arm::models::DistributedAvailabilityGroup;
use milink_sqlserver::drain::{DrainDecision, DrainJudge};
use milink_sqlserver::lsn::position_of;
use milink_sqlserver::observe::{observe, ReplicaRow, SeedingRow, SqlServerLinkView};
use serde_json::json;
use support::spec::read_json;

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_790_000_000, 0).unwrap()
}

fn example(name: &str) -> DistributedAvailabilityGroup {
    serde_json::from_value(read_json(&format!("examples/2025-08-01-preview/DistributedAvailabilityGroups{name}.json"))["responses"]["200"]["body"].clone()).unwrap()
}

fn row(value: serde_json::Value) -> ReplicaRow {
    serde_json::from_value(value).unwrap()
}

fn local() -> ReplicaRow {
    row(json!({ "is_local": 1, "role_desc": "PRIMARY", "connected_state_desc": "CONNECTED", "synchronization_state_desc": "SYNCHRONIZING", "last_hardened_lsn": null, "end_of_log_lsn": "71000009408100004" }))
}

fn remote(state: &str, send_kb: i64, redo_kb: i64) -> ReplicaRow {
    row(json!({
        "is_local": 0, "role_desc": "SECONDARY", "connected_state_desc": "CONNECTED", "synchronization_state_desc": state,
        "synchronization_health_desc": "HEALTHY", "log_send_queue_kb": send_kb, "redo_queue_kb": redo_kb, "secondary_lag_seconds": 3,
        "last_hardened_lsn": "71000009408100001"
    }))
}

fn status(observation: Observation) -> Status {
    let mut migration = Migration::new(
        MigrationId("m1".into()),
        ConnectionName::parse("src").unwrap(),
        ConnectionName::parse("mi").unwrap(),
        DatabaseName::parse("ToyStore").unwrap(),
        Settings::default(),
        now(),
    );
    migration.phase = Phase::Syncing;
    // Through the flow, as the poll timer does: readiness is decided there (with hysteresis).
    let at = observation.at;
    milink_core::flow::decide(&migration, &milink_core::flow::Event::Observed { observation }, at)
        .expect("an observation is never refused")
        .migration
        .status()
}

#[test]
fn no_distributed_ag_or_no_mi_side_is_deploying() {
    let observation = observe(&SqlServerLinkView::default(), None, now());
    assert_eq!((observation.phase, observation.problem.clone()), (LinkPhase::Deploying, None));
    assert_eq!(status(observation), Status::Deploying);
    let view = SqlServerLinkView { replicas: vec![local()], seeding: vec![] };
    assert_eq!(observe(&view, None, now()).phase, LinkPhase::Deploying, "the DAG exists on SQL Server but the MI has not joined");
}

#[test]
fn seeding_reports_progress_from_the_dmv_or_from_arm() {
    let view = SqlServerLinkView { replicas: vec![local(), remote("NOT SYNCHRONIZING", 0, 0)], seeding: vec![] };
    let observation = observe(&view, Some(&example("Get")), now());
    assert_eq!((observation.phase, observation.progress_percent), (LinkPhase::Seeding, 80.0), "seedingProgress \"80%\" from Microsoft's Get example");
    assert_eq!(status(observation), Status::Seeding);

    let seeding: SeedingRow = serde_json::from_value(json!({ "current_state": "TRANSFERRING", "completed": 0, "transferred_size_bytes": 25.0e9, "database_size_bytes": 100.0e9 })).unwrap();
    let view = SqlServerLinkView { replicas: vec![local(), remote("NOT SYNCHRONIZING", 0, 0)], seeding: vec![seeding] };
    let observation = observe(&view, Some(&example("Get")), now());
    assert_eq!(observation.progress_percent, 25.0, "the running seed's bytes win over ARM's rounded figure");
    assert_eq!(observation.progress_marker, Some(Position(25_000_000_000)), "seeding bytes move the stall detector");
}

#[test]
fn streaming_with_lag_is_catching_up_and_without_is_ready() {
    let catchup = example("Failover"); // replicaState "Catchup"
    let lagging = SqlServerLinkView { replicas: vec![local(), remote("SYNCHRONIZING", 900, 300)], seeding: vec![] };
    let observation = observe(&lagging, Some(&catchup), now());
    assert_eq!(observation.phase, LinkPhase::Streaming);
    assert_eq!(observation.lag_bytes, Some(1200 * 1024));
    assert_eq!(observation.lag_seconds, Some(3.0));
    assert_eq!(observation.progress_marker, position_of("71000009408100001"));
    assert_eq!(status(observation), Status::CatchingUp);

    let caught_up = SqlServerLinkView { replicas: vec![local(), remote("SYNCHRONIZING", 0, 16)], seeding: vec![] };
    assert_eq!(status(observe(&caught_up, Some(&catchup), now())), Status::ReadyForCutover);
}

#[test]
fn the_links_own_errors_become_stalled_with_a_remediation() {
    let disconnected = |number: i64, text: &str| {
        let mut remote = remote("NOT SYNCHRONIZING", 0, 0);
        remote.connected_state_desc = Some("DISCONNECTED".into());
        remote.last_connect_error_number = Some(number);
        remote.last_connect_error_description = Some(text.into());
        SqlServerLinkView { replicas: vec![local(), remote], seeding: vec![] }
    };
    for (number, needle) in [(41962, "TCP 5022"), (41973, "serverTrustCertificates"), (41974, "FQDN"), (41976, "names"), (41986, "network")] {
        let observation = observe(&disconnected(number, "connection failed"), Some(&example("Get")), now());
        let problem = observation.problem.clone().unwrap_or_else(|| panic!("{number}"));
        assert!(problem.reason.contains(&number.to_string()), "{number}: {}", problem.reason);
        assert!(problem.remediation.contains(needle), "{number}: {}", problem.remediation);
        assert_eq!(status(observation), Status::Stalled);
    }

    for number in [1408, 1412] {
        let failed: SeedingRow = serde_json::from_value(json!({ "current_state": "FAILED", "failure_state_desc": "Failed", "error_code": number, "completed": 1 })).unwrap();
        let view = SqlServerLinkView { replicas: vec![local(), remote("NOT SYNCHRONIZING", 0, 0)], seeding: vec![failed] };
        let problem = observe(&view, Some(&example("Get")), now()).problem.unwrap();
        assert!(problem.reason.contains(&number.to_string()));
        assert!(problem.remediation.contains("12381"), "{}", problem.remediation);
    }

    let exists: SeedingRow = serde_json::from_value(json!({ "current_state": "FAILED", "failure_state_desc": "Database with name already exists", "completed": 1 })).unwrap();
    let view = SqlServerLinkView { replicas: vec![local(), remote("NOT SYNCHRONIZING", 0, 0)], seeding: vec![exists] };
    assert!(observe(&view, Some(&example("Get")), now()).problem.unwrap().remediation.contains("delete it on the MI"));

    let mut arm_error = example("Get");
    arm_error.properties.databases[0].replica_state = Some("LinkInitError".into());
    arm_error.properties.databases[0].most_recent_link_error = Some("Error 41962: Operation aborted because the link wasn't initiated within 5 minutes".into());
    let view = SqlServerLinkView { replicas: vec![local(), remote("NOT SYNCHRONIZING", 0, 0)], seeding: vec![] };
    let problem = observe(&view, Some(&arm_error), now()).problem.unwrap();
    assert!(problem.reason.contains("LinkInitError"));
    assert!(problem.remediation.contains("TCP 5022"), "the number inside ARM's text maps to its remediation: {}", problem.remediation);
}

#[test]
fn a_suspended_or_unhealthy_stream_is_stalled() {
    let mut suspended = remote("SYNCHRONIZING", 0, 0);
    suspended.is_suspended = true;
    suspended.suspend_reason_desc = Some("SUSPEND_FROM_PARTNER".into());
    let view = SqlServerLinkView { replicas: vec![local(), suspended], seeding: vec![] };
    let problem = observe(&view, Some(&example("Failover")), now()).problem.unwrap();
    assert!(problem.reason.contains("SUSPEND_FROM_PARTNER"));
    assert!(problem.remediation.contains("SET HADR RESUME"));

    let mut unhealthy = remote("SYNCHRONIZING", 0, 0);
    unhealthy.synchronization_health_desc = Some("NOT_HEALTHY".into());
    let view = SqlServerLinkView { replicas: vec![local(), unhealthy], seeding: vec![] };
    assert_eq!(status(observe(&view, Some(&example("Failover")), now())), Status::Stalled);
}

#[test]
fn cutover_needs_equal_lsns_that_stay_unchanged() {
    let at = |s: i64| now() + chrono::Duration::seconds(s);
    let lsn = |text: &str| position_of(text);
    let mut judge = DrainJudge::new(10);
    // SQL Server has hardened one block more than the MI: not yet.
    assert!(matches!(judge.observe(lsn("71000009408200001"), lsn("71000009408100001"), at(0)), DrainDecision::Wait(_)));
    // Equal, but only for 5 s of the 10 s rule.
    assert!(matches!(judge.observe(lsn("71000009408200001"), lsn("71000009408200001"), at(1)), DrainDecision::Wait(_)));
    assert!(matches!(judge.observe(lsn("71000009408200001"), lsn("71000009408200001"), at(6)), DrainDecision::Wait(_)));
    // Equal and unchanged for 10 s: the documented rule holds.
    assert_eq!(judge.observe(lsn("71000009408200001"), lsn("71000009408200001"), at(11)), DrainDecision::CaughtUp(lsn("71000009408200001").unwrap()));
}

/// Issue 15, item 3: any non-NULL `failure_state_desc` was read as a failed seed. Failure is
/// `current_state = 'FAILED'`, as Microsoft's scripts read it; the description only explains it.
#[test]
fn seeding_fails_only_when_its_current_state_says_so() {
    let seed = |value: serde_json::Value| -> SeedingRow { serde_json::from_value(value).unwrap() };
    let running = seed(json!({ "current_state": "SEEDING", "failure_state_desc": "Seeding check message timeout", "completed": 0,
                               "transferred_size_bytes": 50.0e9, "database_size_bytes": 100.0e9 }));
    let view = SqlServerLinkView { replicas: vec![local(), remote("NOT SYNCHRONIZING", 0, 0)], seeding: vec![running] };
    let observation = observe(&view, Some(&example("Get")), now());
    assert_eq!((observation.phase, observation.problem.clone(), observation.progress_percent), (LinkPhase::Seeding, None, 50.0));

    let recovered = seed(json!({ "current_state": "COMPLETED", "failure_state": 0, "failure_state_desc": "Internal Error", "completed": 1 }));
    let view = SqlServerLinkView { replicas: vec![local(), remote("SYNCHRONIZING", 0, 0)], seeding: vec![recovered] };
    let mut caught_up = example("Get");
    caught_up.properties.databases[0].replica_state = Some("Catchup".into());
    let observation = observe(&view, Some(&caught_up), now());
    assert_eq!((observation.phase, observation.problem), (LinkPhase::Streaming, None));

    let failed = seed(json!({ "current_state": "FAILED", "failure_state_desc": "Secondary catchup timeout", "completed": 1 }));
    let view = SqlServerLinkView { replicas: vec![local(), remote("NOT SYNCHRONIZING", 0, 0)], seeding: vec![failed] };
    assert!(observe(&view, Some(&example("Get")), now()).problem.unwrap().reason.contains("Secondary catchup timeout"));
}
