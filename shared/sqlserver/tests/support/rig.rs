//! The test rig for whole-engine tests: the ARM contract server, a FAKE SQL Server (and optionally a FAKE
//! managed instance TDS endpoint), a manual clock, and the engine wired to them.
use super::contract::ContractServer;
use super::fake_sql::FakeSqlServer;
use super::{ClockPause, ManualClock, TestConnections};
use milink_core::migration::Settings;
use milink_sqlserver::SqlServerEngine;
use serde_json::json;
use std::sync::Arc;

/// The database the tests link (a hostile name).
pub const DB: &str = "Toy]Store";
/// The link's distributed AG (from the plan's migration id).
pub const DAG: &str = "milink_0f1e2d3c4b5a";

/// Everything one test runs against.
pub struct Rig {
    /// The ARM contract server.
    pub server: ContractServer,
    /// The FAKE SQL Server.
    pub sql: FakeSqlServer,
    /// The FAKE managed instance TDS endpoint, when configured.
    pub instance_sql: Option<FakeSqlServer>,
    /// The engine under test.
    pub engine: SqlServerEngine,
}

/// A rig, with a FAKE MI TDS endpoint when given.
pub async fn rig_with(instance_sql: Option<FakeSqlServer>) -> Rig {
    let server = ContractServer::start().await;
    let sql = FakeSqlServer::sql2022(&[DB, "Customer360"]);
    let clock = ManualClock::new();
    let connections = TestConnections { sql: sql.clone(), base_url: server.base_url.clone(), instance_sql: instance_sql.clone() };
    let engine = SqlServerEngine::with_parts(Arc::new(connections), Arc::new(clock.clone()), Arc::new(ClockPause(clock)), Arc::new(|_: &str| None));
    Rig { server, sql, instance_sql, engine }
}

/// A rig without an MI TDS endpoint.
pub async fn rig() -> Rig {
    rig_with(None).await
}

/// Settings with a fenced application login and a short drain.
pub fn settings() -> Settings {
    Settings { fence_roles: vec!["toystore_app".into()], drain_stable_seconds: 10, drain_timeout_seconds: 60, ..Settings::default() }
}

/// SQL Server and ARM both report the link streaming with these hardened LSNs.
pub fn streaming(rig: &Rig, source_lsn: &str, target_lsn: &str) {
    rig.sql.state.lock().unwrap().replicas = vec![
        json!({ "is_local": 1, "role_desc": "PRIMARY", "connected_state_desc": "CONNECTED", "synchronization_state_desc": "SYNCHRONIZED", "last_hardened_lsn": source_lsn, "end_of_log_lsn": source_lsn }),
        json!({ "is_local": 0, "role_desc": "SECONDARY", "connected_state_desc": "CONNECTED", "synchronization_state_desc": "SYNCHRONIZED", "synchronization_health_desc": "HEALTHY",
                "log_send_queue_kb": 0, "redo_queue_kb": 0, "secondary_lag_seconds": 0, "last_hardened_lsn": target_lsn }),
    ];
    rig.server.state().link_database_overrides = json!({ "replicaState": "Catchup", "lastHardenedLsn": target_lsn, "seedingProgress": null });
}
