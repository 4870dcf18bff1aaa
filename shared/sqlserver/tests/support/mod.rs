//! Shared test support: the ARM contract server, the spec validator, a T-SQL lexer, a FAKE SQL Server, and
//! the wiring that points the engine at them.
#![allow(dead_code, unreachable_pub)]

pub mod contract;
pub mod fake_sql;
pub mod lexer;
pub mod rig;
pub mod spec;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use milink_core::config::{Endpoint, Secret};
use milink_core::error::EngineError;
use milink_core::migration::Settings;
use milink_core::names::{ConnectionName, DatabaseName, MigrationId};
use milink_core::ports::{Clock, LinkPlan};
use milink_sqlserver::arm::auth::StaticToken;
use milink_sqlserver::arm::client::{ArmClient, Polling};
use milink_sqlserver::arm::{InstanceId, ManagedInstanceArm};
use milink_sqlserver::collector::Pause;
use milink_sqlserver::connections::{build_source, Connections, Source, Target};
use milink_sqlserver::options::{read_options, TargetOptions};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A stand-in for a certificate's SHA-1 thumbprint (no SHA-1 in the workspace): 40 hex digits derived from
/// the blob. The FAKE SQL Server reports it as `sys.certificates.thumbprint` and the contract server as
/// `properties.thumbprint`, as the real ones report the same SHA-1.
pub fn fake_thumbprint(blob: &str) -> String {
    let mut state: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::new();
    for round in 0..3u64 {
        for byte in blob.to_ascii_uppercase().bytes() {
            state = (state ^ u64::from(byte) ^ round).wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{state:016X}"));
    }
    out.truncate(40);
    out
}

/// An ARM client for the contract server, with the contract's token and no waiting between polls.
pub fn arm_client(base_url: &str) -> ArmClient {
    let mut client = ArmClient::new(reqwest::Client::new(), base_url, Arc::new(StaticToken(Secret::new(contract::TOKEN))));
    client.polling = Polling { default_interval: Duration::ZERO, max_interval: Duration::ZERO, timeout: Duration::from_secs(30) };
    client
}

/// The managed instance API against the contract server.
pub fn instance_api(base_url: &str) -> ManagedInstanceArm {
    ManagedInstanceArm::new(arm_client(base_url), InstanceId::parse(&contract::instance_id()).unwrap())
}

/// Connections for the engine: the FAKE SQL Server as the source, the contract server as the MI.
pub struct TestConnections {
    /// The fake source.
    pub sql: fake_sql::FakeSqlServer,
    /// Contract server base URL.
    pub base_url: String,
    /// A FAKE managed instance TDS endpoint, when the test configures one.
    pub instance_sql: Option<fake_sql::FakeSqlServer>,
}

impl Connections for TestConnections {
    fn source(&self, endpoint: &Endpoint) -> Result<Source, EngineError> {
        let (source, _) = build_source(endpoint, |_| unreachable!("tests use SQL authentication"))?;
        Ok(Source { connector: Arc::new(self.sql.clone()), ..source })
    }

    fn target(&self, endpoint: &Endpoint) -> Result<Target, EngineError> {
        let options: TargetOptions = read_options(endpoint)?;
        let instance = milink_sqlserver::connections::instance_id(endpoint, &options)?;
        let sql = self.instance_sql.clone().map(|fake| Arc::new(fake) as Arc<dyn milink_sqlserver::tds::SqlConnector>);
        Ok(Target { api: Arc::new(instance_api(&self.base_url)), options, instance, sql })
    }
}

/// The Tailspin source connection (SQL authentication, an IP the MI can reach).
pub fn source_endpoint() -> Endpoint {
    Endpoint {
        name: ConnectionName::parse("tailspin-src").unwrap(),
        engine: "sqlserver".into(),
        url: "sqlserver://milink@sql01.tailspin.local:1433".into(),
        password: Some(Secret::new("not-a-real-password")),
        replication_url: Some("tcp://10.0.0.4:5022".into()),
        options: toml::Table::new(),
    }
}

/// The managed instance connection, pointed at the contract server.
pub fn target_endpoint(base_url: &str) -> Endpoint {
    let mut options = toml::Table::new();
    options.insert("arm_base_url".into(), toml::Value::String(base_url.into()));
    Endpoint {
        name: ConnectionName::parse("tailspin-mi").unwrap(),
        engine: "azure-sql-mi".into(),
        url: contract::instance_id(),
        password: None,
        replication_url: None,
        options,
    }
}

/// A plan for one database.
pub fn plan(base_url: &str, database: &str, settings: Settings) -> LinkPlan {
    LinkPlan {
        migration_id: MigrationId("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into()),
        source: source_endpoint(),
        target: target_endpoint(base_url),
        database: DatabaseName::parse(database).unwrap(),
        settings,
    }
}

/// A clock tests move by hand.
#[derive(Clone)]
pub struct ManualClock(pub Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    /// Starting at a fixed instant.
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(DateTime::<Utc>::from_timestamp(1_790_000_000, 0).unwrap())))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// A pause that advances the manual clock instead of sleeping.
pub struct ClockPause(pub ManualClock);

#[async_trait]
impl Pause for ClockPause {
    async fn pause(&self, duration: Duration) {
        let mut now = self.0 .0.lock().unwrap();
        *now += chrono::Duration::from_std(duration).unwrap();
    }
}
