//! The Azure lab for tests: the real custom handler (milink's router on a socket) with its state in
//! Azurite (started by dev/azurite.sh), a Service Bus double behind the real REST sender, and a Functions
//! host double that delivers every emitted message to the next function, fires the timers and redelivers
//! on failure. Faults: every message delivered twice; a crash between saving state and sending messages.
#![allow(dead_code, unreachable_pub)]
pub mod bus;
pub mod engine;
pub mod host;

use async_trait::async_trait;
use milink_azure::auth::{BusAuth, StorageAuth};
use milink_azure::{Publisher, ServiceBusConfig, ServiceBusSender, TableStore, TableStoreConfig};
use milink_core::config::{Config, Secret};
use milink_core::message::Envelope;
use milink_core::ports::SystemClock;
use milink_functions::azure::{self, AzureHost, HostSettings, PollSettings};
use milink_functions::context::Context;
use milink_functions::engines::Engines;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use host::{Faults, HostDouble};

const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Starts Azurite with the project's script (pinned version, idempotent) and returns the table endpoint.
/// A config with connections `src` and `dst` on the dev PostgreSQL servers (dev/pg.sh), with quick retries.
#[allow(dead_code)] // not every test binary that includes this module runs on PostgreSQL
pub fn postgres_config() -> String {
    let servers = milink_e2e::pg::servers();
    format!(
        "[server]\nmax_attempts = 5\nretry_base_ms = 100\nretry_max_ms = 2000\n\n\
         [connections.src]\nengine = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n\n\
         [connections.dst]\nengine = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n",
        servers.source_url, servers.password_file, servers.target_url, servers.password_file
    )
}

pub fn azurite_endpoint() -> String {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT
        .get_or_init(|| {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dev/azurite.sh");
            let status = std::process::Command::new(script).arg("up").status().expect("dev/azurite.sh runs");
            assert!(status.success(), "dev/azurite.sh up failed");
            let port = std::env::var("MILINK_AZURITE_TABLE_PORT").unwrap_or_else(|_| "10002".into());
            format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")
        })
        .clone()
}

/// The crash the tests inject: the first time any message would be sent after its commit, the process
/// "dies" (the handler panics, the connection drops, the host sees a failed invocation). The state and
/// outbox rows are saved; only the relay can send those messages now.
struct CrashAfterSave {
    inner: Arc<ServiceBusSender>,
    crashed: Mutex<HashSet<String>>,
    crashes: Arc<Mutex<u64>>,
}

#[async_trait]
impl Publisher for CrashAfterSave {
    async fn publish(&self, envelopes: &[Envelope]) -> Result<(), String> {
        let first_time = {
            let mut crashed = self.crashed.lock().unwrap();
            envelopes.iter().filter(|e| crashed.insert(e.envelope_id.clone())).count() > 0
        };
        if first_time {
            *self.crashes.lock().unwrap() += 1;
            panic!("simulated crash between saving state and sending its messages");
        }
        self.inner.publish(envelopes).await
    }
}

/// What a lab runs with.
pub struct LabOptions {
    /// `milink.toml` text (connections, `[server]` attempts and backoff).
    pub config: String,
    pub engines: Engines,
    pub faults: Faults,
    pub crash_after_save: bool,
    /// How often the host double fires the timers.
    pub timer_every: Duration,
}

/// A running lab.
pub struct Lab {
    pub host: HostDouble,
    pub bus: bus::BusDouble,
    pub store: Arc<TableStore>,
    pub sender: Arc<ServiceBusSender>,
    /// The handlers' context (for comparing with the embedded API).
    pub ctx: Context,
    pub crashes: Arc<Mutex<u64>>,
    pump: Option<host::Pump>,
    shutdown: tokio_util::sync::CancellationToken,
}

impl Lab {
    pub async fn start(options: LabOptions) -> Self {
        let http = reqwest::Client::new();
        let bus = bus::BusDouble::default();
        let namespace_url = bus.serve().await;
        let auth = BusAuth::Sas { key_name: bus::KEY_NAME.into(), key: Secret::new(bus::KEY) };
        let sender = Arc::new(ServiceBusSender::new(ServiceBusConfig { namespace_url, auth, queue_prefix: "milink-".into() }, http.clone()).unwrap());
        let crashes = Arc::new(Mutex::new(0));
        if options.crash_after_save {
            // The simulated crashes are expected; keep other panics loud.
            let default = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if !info.to_string().contains("simulated crash") {
                    default(info);
                }
            }));
        }
        let publisher: Arc<dyn Publisher> = if options.crash_after_save {
            Arc::new(CrashAfterSave { inner: sender.clone(), crashed: Mutex::default(), crashes: crashes.clone() })
        } else {
            sender.clone()
        };
        let table = TableStoreConfig {
            endpoint: azurite_endpoint(),
            account: AZURITE_ACCOUNT.into(),
            auth: StorageAuth::SharedKey { account: AZURITE_ACCOUNT.into(), key: Secret::new(AZURITE_KEY) },
            table_prefix: format!("lab{}", uuid::Uuid::new_v4().simple()).chars().take(24).collect(),
        };
        let store = Arc::new(TableStore::connect(table, http.clone()).await.unwrap().with_publisher(publisher));
        let config = Config::parse(&options.config, std::path::Path::new("/"), &|name| std::env::var(name).ok()).unwrap();
        let ctx = Context::new(config, store.clone(), options.engines, Arc::new(SystemClock));
        let settings = HostSettings {
            poll: PollSettings { per_source: 4, total: 16, budget: Duration::from_secs(5) },
            // The crash test relies on the relay; it must not wait long before sending.
            relay_age: Duration::from_millis(if options.crash_after_save { 0 } else { 500 }),
        };
        let azure_host = AzureHost::new(ctx.clone(), store.clone(), sender.clone(), settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move { azure::serve(azure_host, listener, stop.cancelled_owned()).await.unwrap() });
        let host = HostDouble::new(base);
        host.wait_ready().await;
        let pump = host::Pump::start(host.clone(), bus.clone(), options.faults, options.timer_every);
        Self { host, bus, store, sender, ctx, crashes, pump: Some(pump), shutdown }
    }

    /// Stops delivering, lets in-flight invocations finish, stops the handler.
    pub async fn stop(mut self) {
        if let Some(pump) = self.pump.take() {
            pump.stop().await;
        }
        self.shutdown.cancel();
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.host.http("GET", path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.host.http("POST", path, Some(body)).await
    }

    /// Starts one migration; a failed invocation (500, e.g. the injected crash) is retried as a user
    /// would, and must return the same migration.
    pub async fn start_migration(&self, database: &str, settings: Value) -> String {
        let body = json!({ "source": "src", "target": "dst", "databases": [database], "settings": settings });
        for _ in 0..5 {
            let (status, response) = self.post("/api/migrations", &body).await;
            if status == 500 {
                continue;
            }
            assert_eq!(status, 202, "{response}");
            return response["migrations"][0]["id"].as_str().unwrap().to_owned();
        }
        panic!("start kept failing");
    }

    /// Requests an assessment and waits until it is no longer Running. When the request fails after its
    /// commit (the injected crash: the host answers 500), the assessment still runs, because the relay sends
    /// its message; the caller does not know its id, so the newest completed report is read instead (what
    /// a start request consults).
    pub async fn assess(&self, connection: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let (status, response) = self.post("/api/assessments", &json!({ "connection": connection })).await;
        if status == 500 {
            let name = milink_core::names::ConnectionName::parse(connection).unwrap();
            loop {
                use milink_core::ports::AssessmentStore;
                if let Some(report) = self.store.latest_assessment(&name).await.unwrap() {
                    return serde_json::to_value(report).unwrap();
                }
                assert!(Instant::now() < deadline, "the crashed assessment never completed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        assert_eq!(status, 202, "{response}");
        let id = response["id"].as_str().unwrap().to_owned();
        loop {
            let report = self.get(&format!("/api/assessments/{id}")).await;
            if report["status"] != "Running" {
                return report;
            }
            assert!(Instant::now() < deadline, "assessment {id} still running after {timeout:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the migration satisfies `done`; fails on Failed/Cancelled unless that is what we wait for.
    pub async fn wait_for(&self, id: &str, what: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let migration = self.get(&format!("/api/migrations/{id}")).await;
            if done(&migration) {
                return migration;
            }
            let status = migration["status"].as_str().unwrap_or_default().to_owned();
            assert!(!matches!(status.as_str(), "Failed" | "Cancelled") || what == status, "waiting for {what}, got {migration:#}");
            assert!(Instant::now() < deadline, "{what} not reached in {timeout:?}: {migration:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        self.wait_for(id, status, timeout, |m| m["status"] == status).await
    }

    /// Waits until nothing is queued or in flight and the outbox is empty (the relay has run).
    pub async fn wait_quiet(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let pending = self.store.pending_outbox(chrono::Utc::now() + chrono::Duration::days(1)).await.unwrap();
            if self.bus.idle() && pending.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "not quiet after {timeout:?}: outbox {pending:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
