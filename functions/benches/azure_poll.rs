//! Benchmark: fleet-scale sync polling on the Azure host, and store operations per migration over its life.
//!
//! `cargo bench -p milink-functions --bench azure_poll` (add `-- --links 2000` for a quicker run,
//! `-- --store sqlite` or `-- --store azurite` for one store). Azurite is started by dev/azurite.sh.
//!
//! Method:
//! 1. Poll: N links (default 10,000) in Syncing, spread over 100 source servers, observed by
//!    `ScriptedEngine` (a named test double: a healthy streaming link, each observation waiting a fixed
//!    latency that stands for the round trip to the server, default 20 ms). One tick = list the active
//!    migrations, observe every link (8 at a time per source server, 64 or 256 in total), decide, save. The
//!    tick's wall time is compared with the PollSync period (30 s) and its budget (20 s). Two ticks per
//!    setting; listing alone is timed too, since it is the part that grows with the fleet on the store side.
//! 2. Operations: one migration driven through its whole life with the real handlers (start, validate,
//!    create link, polls until ready, cutover to Completed) over a store wrapped in a counter of port calls;
//!    on Table Storage the store's own request counters give the REST requests behind them, with messages
//!    leaving as in production (published right after each commit, then their outbox rows deleted in one
//!    batch; the relay's queries are not part of a migration's cost).
//!
//! Figures go to stdout with the machine they ran on; nothing is asserted (benchmarks print figures, tests
//! assert behaviour).
#[path = "../tests/azure_support/engine.rs"]
mod engine;

use async_trait::async_trait;
use chrono::Utc;
use engine::ScriptedEngine;
use milink_azure::auth::StorageAuth;
use milink_azure::{Publisher, TableStore, TableStoreConfig};
use milink_core::assessment::AssessmentReport;
use milink_core::config::{Config, Secret};
use milink_core::flow::{self, Event};
use milink_core::message::Envelope;
use milink_core::migration::{LinkPhase, Migration, Observation, Phase, Position, Settings, Status};
use milink_core::names::{ConnectionName, DatabaseName, MigrationId};
use milink_core::ports::{AssessmentStore, Created, MigrationFilter, MigrationStore, StoreError, SystemClock};
use milink_functions::runtime::poll::{self, PollSettings};
use milink_functions::context::Context;
use milink_functions::engines::Engines;
use milink_functions::handlers;
use milink_sqlite::SqliteStore;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SOURCES: usize = 100;
const PERIOD: Duration = Duration::from_secs(30);

fn config() -> Config {
    let mut text = String::from("[server]\nmax_attempts = 5\nretry_base_ms = 10\nretry_max_ms = 100\n\n[connections.dst]\nengine = \"scripted\"\nurl = \"scripted://target\"\n");
    for s in 0..SOURCES {
        text.push_str(&format!("[connections.src-{s:03}]\nengine = \"scripted\"\nurl = \"scripted://source-{s:03}\"\n"));
    }
    Config::parse(&text, std::path::Path::new("/"), &|_| None).expect("bench config parses")
}

fn engines(engine: Arc<ScriptedEngine>) -> Engines {
    let mut engines = Engines::empty();
    engines.register("scripted", "scripted", engine);
    engines
}

async fn azurite() -> Arc<TableStore> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/azurite.sh");
    assert!(std::process::Command::new(script).arg("up").status().expect("dev/azurite.sh").success());
    let account = "devstoreaccount1";
    let key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let config = TableStoreConfig {
        endpoint: format!("http://127.0.0.1:10002/{account}"),
        account: account.into(),
        auth: StorageAuth::SharedKey { account: account.into(), key: Secret::new(key) },
        table_prefix: format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..10]),
    };
    let http = reqwest::Client::builder().pool_max_idle_per_host(128).build().unwrap();
    Arc::new(TableStore::connect(config, http).await.expect("Azurite reachable"))
}

/// N migrations already syncing, spread over the source servers.
async fn seed<S: MigrationStore + ?Sized>(store: &S, links: usize) {
    let started = Instant::now();
    let now = Utc::now();
    let seeds = (0..links).map(|i| async move {
        let source = ConnectionName::parse(&format!("src-{:03}", i % SOURCES)).unwrap();
        let database = DatabaseName::parse(&format!("db{i:05}")).unwrap();
        let mut m = Migration::new(MigrationId::new_random(), source, ConnectionName::parse("dst").unwrap(), database, Settings::default(), now);
        let Created::New(stored) = store.create(&m, &[]).await.expect("create") else { panic!("existing") };
        m = stored;
        m.phase = Phase::Syncing;
        m.observation = Some(Observation {
            at: now - chrono::Duration::seconds(60),
            phase: LinkPhase::Streaming,
            progress_percent: 100.0,
            lag_bytes: Some(0),
            lag_seconds: Some(0.0),
            progress_marker: Some(Position(0)),
            problem: None,
            drift: Vec::new(),
            seed: None,
        });
        store.save(&m, &[]).await.expect("save");
    });
    futures::stream::iter(seeds).buffer_unordered(64).collect::<Vec<()>>().await;
    println!("  seeded {links} syncing links in {:.1} s", started.elapsed().as_secs_f64());
}

use futures::StreamExt;

async fn poll_bench(name: &str, store: Arc<dyn PollStore>, links: usize, latency: Duration) {
    println!("\n## sync polling: {links} links on {SOURCES} source servers, store {name}, observation latency {} ms", latency.as_millis());
    seed(store.as_migrations(), links).await;
    let engine = Arc::new(ScriptedEngine::with_latency(latency));
    let ctx = store.context(config(), engines(engine.clone()));
    let listing = Instant::now();
    let active = ctx.migrations.list(&MigrationFilter { active_only: true }).await.expect("list");
    println!("  listing the {} active migrations alone: {:.2} s", active.len(), listing.elapsed().as_secs_f64());
    for settings in [
        PollSettings { per_source: 8, total: 64, budget: Duration::from_secs(20) },
        PollSettings { per_source: 8, total: 256, budget: Duration::from_secs(20) },
    ] {
        for round in 1..=2 {
            let tick = poll::tick(&ctx, &settings).await;
            let spare = PERIOD.saturating_sub(tick.elapsed);
            println!(
                "  total {:>3}, per source {}: tick {round}: {:>6.2} s for {} listed / {} observed / {} deferred / {} conflicts; {:.0} links/s; {:.0} % of the 30 s period spare",
                settings.total,
                settings.per_source,
                tick.elapsed.as_secs_f64(),
                tick.listed,
                tick.observed,
                tick.deferred,
                tick.conflicts,
                tick.observed as f64 / tick.elapsed.as_secs_f64(),
                100.0 * spare.as_secs_f64() / PERIOD.as_secs_f64()
            );
        }
    }
}

/// The two stores behind one face, for the poll benchmark.
trait PollStore: Send + Sync {
    fn as_migrations(&self) -> &dyn MigrationStore;
    fn context(&self, config: Config, engines: Engines) -> Context;
}

impl PollStore for Arc<SqliteStore> {
    fn as_migrations(&self) -> &dyn MigrationStore {
        self.as_ref()
    }
    fn context(&self, config: Config, engines: Engines) -> Context {
        Context::new(config, self.clone(), engines, Arc::new(SystemClock))
    }
}

impl PollStore for Arc<TableStore> {
    fn as_migrations(&self) -> &dyn MigrationStore {
        self.as_ref()
    }
    fn context(&self, config: Config, engines: Engines) -> Context {
        Context::new(config, self.clone(), engines, Arc::new(SystemClock))
    }
}

/// Counts port calls.
struct Counting<S> {
    inner: Arc<S>,
    calls: [AtomicU64; 8],
}

const CALLS: [&str; 8] = ["create", "load", "save", "list", "find", "put_assessment", "get_assessment", "latest_assessment"];

impl<S> Counting<S> {
    fn count(&self, i: usize) {
        self.calls[i].fetch_add(1, Ordering::Relaxed);
    }
    fn snapshot(&self) -> Vec<u64> {
        self.calls.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

#[async_trait]
impl<S: MigrationStore + 'static> MigrationStore for Counting<S> {
    async fn create(&self, m: &Migration, o: &[Envelope]) -> Result<Created, StoreError> {
        self.count(0);
        self.inner.create(m, o).await
    }
    async fn load(&self, id: &MigrationId) -> Result<Option<Migration>, StoreError> {
        self.count(1);
        self.inner.load(id).await
    }
    async fn save(&self, m: &Migration, o: &[Envelope]) -> Result<Migration, StoreError> {
        self.count(2);
        self.inner.save(m, o).await
    }
    async fn list(&self, f: &MigrationFilter) -> Result<Vec<Migration>, StoreError> {
        self.count(3);
        self.inner.list(f).await
    }
    async fn find(&self, s: &ConnectionName, t: &ConnectionName, d: &DatabaseName) -> Result<Option<Migration>, StoreError> {
        self.count(4);
        self.inner.find(s, t, d).await
    }
}

#[async_trait]
impl<S: AssessmentStore + 'static> AssessmentStore for Counting<S> {
    async fn put_assessment(&self, r: &AssessmentReport, o: &[Envelope]) -> Result<(), StoreError> {
        self.count(5);
        self.inner.put_assessment(r, o).await
    }
    async fn get_assessment(&self, id: &str) -> Result<Option<AssessmentReport>, StoreError> {
        self.count(6);
        self.inner.get_assessment(id).await
    }
    async fn latest_assessment(&self, c: &ConnectionName) -> Result<Option<AssessmentReport>, StoreError> {
        self.count(7);
        self.inner.latest_assessment(c).await
    }
}

/// Where messages come from in the life benchmark: the SQLite queue, or the Table outbox.
#[async_trait]
trait Outbox: Send + Sync {
    async fn take(&self) -> Vec<Envelope>;
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn take(&self) -> Vec<Envelope> {
        let mut out = Vec::new();
        while let Some(d) = self.claim(Utc::now(), 60_000).await.unwrap() {
            self.complete(&d.envelope.envelope_id).await.unwrap();
            out.push(d.envelope);
        }
        out
    }
}

/// The Table store as production runs it: each commit's messages go to its publisher right away (here a
/// local queue standing in for Service Bus) and their outbox rows are deleted in one batch.
struct Published {
    store: TableStore,
    sent: Arc<Mutex<Vec<Envelope>>>,
}

struct Capture(Arc<Mutex<Vec<Envelope>>>);

#[async_trait]
impl Publisher for Capture {
    async fn publish(&self, envelopes: &[Envelope]) -> Result<(), String> {
        self.0.lock().unwrap().extend_from_slice(envelopes);
        Ok(())
    }
}

#[async_trait]
impl Outbox for Published {
    async fn take(&self) -> Vec<Envelope> {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

#[async_trait]
impl MigrationStore for Published {
    async fn create(&self, m: &Migration, o: &[Envelope]) -> Result<Created, StoreError> {
        self.store.create(m, o).await
    }
    async fn load(&self, id: &MigrationId) -> Result<Option<Migration>, StoreError> {
        self.store.load(id).await
    }
    async fn save(&self, m: &Migration, o: &[Envelope]) -> Result<Migration, StoreError> {
        self.store.save(m, o).await
    }
    async fn list(&self, f: &MigrationFilter) -> Result<Vec<Migration>, StoreError> {
        self.store.list(f).await
    }
    async fn find(&self, s: &ConnectionName, t: &ConnectionName, d: &DatabaseName) -> Result<Option<Migration>, StoreError> {
        self.store.find(s, t, d).await
    }
}

#[async_trait]
impl AssessmentStore for Published {
    async fn put_assessment(&self, r: &AssessmentReport, o: &[Envelope]) -> Result<(), StoreError> {
        self.store.put_assessment(r, o).await
    }
    async fn get_assessment(&self, id: &str) -> Result<Option<AssessmentReport>, StoreError> {
        self.store.get_assessment(id).await
    }
    async fn latest_assessment(&self, c: &ConnectionName) -> Result<Option<AssessmentReport>, StoreError> {
        self.store.latest_assessment(c).await
    }
}

fn delta(after: &[u64], before: &[u64]) -> String {
    CALLS
        .iter()
        .zip(after.iter().zip(before))
        .filter(|(_, (a, b))| a > b)
        .map(|(name, (a, b))| format!("{name} {}", a - b))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn life_bench<S>(name: &str, store: Arc<S>, requests: impl Fn() -> Option<(u64, u64, u64, u64)>)
where
    S: MigrationStore + AssessmentStore + Outbox + 'static,
{
    println!("\n## store operations over one migration's life, store {name}");
    let counting = Arc::new(Counting { inner: store.clone(), calls: Default::default() });
    let ctx = Context::new(config(), counting.clone(), engines(Arc::new(ScriptedEngine::default())), Arc::new(SystemClock));
    let mut phase_start = counting.snapshot();
    let mut requests_start = requests();
    let mut report = |label: &str, counting: &Counting<S>| {
        let now = counting.snapshot();
        let reqs = requests();
        let rest = match (reqs, requests_start) {
            (Some((r, w, b, q)), Some((r0, w0, b0, q0))) => {
                format!("; Table requests: {} point reads, {} single writes, {} batches, {} queries", r - r0, w - w0, b - b0, q - q0)
            }
            _ => String::new(),
        };
        println!("  {label:<34} {}{rest}", delta(&now, &phase_start));
        phase_start = now;
        requests_start = reqs;
    };
    let source = ConnectionName::parse("src-000").unwrap();
    let m = Migration::new(MigrationId::new_random(), source, ConnectionName::parse("dst").unwrap(), DatabaseName::parse("ToyStore").unwrap(), Settings::default(), Utc::now());
    let id = m.id.clone();
    let transition = flow::start(m);
    let outbox = Envelope::for_commands(&id, 1, transition.commands);
    counting.create(&transition.migration, &outbox).await.unwrap();
    report("start (API)", &counting);
    let drain = |ctx: Context, store: Arc<S>| async move {
        loop {
            let batch = store.take().await;
            if batch.is_empty() {
                break;
            }
            for envelope in batch {
                handlers::handle(&ctx, &envelope).await.expect("step");
            }
        }
    };
    drain(ctx.clone(), store.clone()).await;
    report("validate + create link", &counting);
    let settings = PollSettings::default();
    poll::tick(&ctx, &settings).await;
    report("first poll tick (to ready)", &counting);
    drain(ctx.clone(), store.clone()).await;
    report("ready notification", &counting);
    poll::tick(&ctx, &settings).await;
    report("each further poll tick", &counting);
    handlers::apply(&ctx, &id, &Event::CutoverRequested { confirm_traffic_stopped: true }).await.unwrap();
    report("cutover request (API)", &counting);
    drain(ctx.clone(), store.clone()).await;
    report("fence, drain, finalize, switch", &counting);
    let done = counting.load(&id).await.unwrap().unwrap();
    assert_eq!(done.status(), Status::Completed);
    let total: u64 = counting.snapshot().iter().sum::<u64>() - 1; // the final load above
    println!("  total port calls to Completed with one steady-state poll tick: {total} (plus one save per further tick)");
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let links: usize = arg("--links").and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let latency = Duration::from_millis(arg("--latency-ms").and_then(|v| v.parse().ok()).unwrap_or(20));
    let only = arg("--store");
    println!("# azure_poll: {} cores, {}", std::thread::available_parallelism().map_or(0, |n| n.get()), machine());
    if only.as_deref() != Some("azurite") {
        poll_bench("SQLite (in memory)", Arc::new(Arc::new(SqliteStore::in_memory().unwrap())), links, latency).await;
    }
    if only.as_deref() != Some("sqlite") {
        poll_bench("Table Storage on Azurite 3.35", Arc::new(azurite().await), links, latency).await;
    }
    if only.as_deref() != Some("azurite") {
        life_bench("SQLite", Arc::new(SqliteStore::in_memory().unwrap()), || None).await;
    }
    if only.as_deref() != Some("sqlite") {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let table = Arc::try_unwrap(azurite().await).ok().expect("one owner").with_publisher(Arc::new(Capture(sent.clone())));
        let published = Arc::new(Published { store: table.clone(), sent });
        life_bench("Table Storage on Azurite", published, move || Some(table.counters().snapshot())).await;
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!("{cpu}; load average at start {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}
