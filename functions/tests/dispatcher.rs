//! The embedded dispatcher's retry path, with a test fake engine (this test is about the host, not an
//! engine): transient failures are retried with backoff, then dead-lettered and shown as Stalled with the
//! reason; once the cause goes, the timer's nudge retries the step and the migration recovers.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use milink_core::assessment::{Assessment, Finding};
use milink_core::config::{Config, Endpoint};
use milink_core::error::EngineError;
use milink_core::flow;
use milink_core::message::Envelope;
use milink_core::migration::{LinkPhase, Migration, Observation, Position, Settings, Status, Verification};
use milink_core::names::{ConnectionName, DatabaseName, MigrationId};
use milink_core::ports::{Clock, Created, Engine, LinkPlan, MigrationStore, Positions};
use milink_functions::context::Context;
use milink_functions::engines::Engines;
use milink_functions::runtime::poll::{self, PollSettings};
use milink_sqlite::SqliteStore;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A clock the test moves by hand.
struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    fn advance(&self, seconds: i64) {
        let mut now = self.0.lock().unwrap();
        *now += chrono::Duration::seconds(seconds);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// FAKE engine for host tests: create_link fails while `broken`, everything else succeeds at once.
#[derive(Default)]
struct FakeEngine {
    broken: AtomicBool,
    create_calls: AtomicU32,
}

#[async_trait]
impl Engine for FakeEngine {
    fn name(&self) -> &'static str {
        "fake"
    }
    async fn assess(&self, _: &Endpoint) -> Result<Assessment, EngineError> {
        unreachable!("not used")
    }
    async fn validate(&self, _: &LinkPlan) -> Result<Vec<Finding>, EngineError> {
        Ok(vec![])
    }
    async fn create_link(&self, _: &LinkPlan) -> Result<(), EngineError> {
        self.create_calls.fetch_add(1, Ordering::SeqCst);
        if self.broken.load(Ordering::SeqCst) {
            return Err(EngineError::transient("unreachable", "cannot reach fake-target:5432", "start the target"));
        }
        Ok(())
    }
    async fn observe(&self, _: &LinkPlan, now: DateTime<Utc>) -> Result<Observation, EngineError> {
        Ok(Observation {
            at: now,
            phase: LinkPhase::Streaming,
            progress_percent: 100.0,
            lag_bytes: Some(0),
            lag_seconds: Some(0.0),
            progress_marker: Some(Position(1)),
            problem: None,
            drift: Vec::new(),
            seed: None,
        })
    }
    async fn fence(&self, _: &LinkPlan) -> Result<Position, EngineError> {
        Ok(Position(1))
    }
    async fn unfence(&self, _: &LinkPlan) -> Result<(), EngineError> {
        Ok(())
    }
    async fn positions(&self, _: &LinkPlan) -> Result<Positions, EngineError> {
        Ok(Positions { source: Position(1), target: Position(1) })
    }
    async fn finalize(&self, _: &LinkPlan) -> Result<Verification, EngineError> {
        Ok(Verification::default())
    }
    async fn switch(&self, _: &LinkPlan, _: bool) -> Result<(), EngineError> {
        Ok(())
    }
    async fn drop_link(&self, _: &LinkPlan, _: bool) -> Result<(), EngineError> {
        Ok(())
    }
}

async fn wait_until(store: &SqliteStore, id: &MigrationId, what: &str, check: impl Fn(&Migration) -> bool) -> Migration {
    for _ in 0..400 {
        let m = store.load(id).await.unwrap().unwrap();
        if check(&m) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}: {:?}", store.load(id).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_retry_dead_letter_stall_and_recover() {
    let text = "[server]\nmax_attempts = 3\nretry_base_ms = 10\nretry_max_ms = 40\n\
                [connections.a]\nengine = \"fake\"\nurl = \"fake://a\"\n[connections.b]\nengine = \"fake\"\nurl = \"fake://b\"\n";
    let config = Config::parse(text, std::path::Path::new("/"), &|_| None).unwrap();
    let engine = Arc::new(FakeEngine::default());
    engine.broken.store(true, Ordering::SeqCst);
    let mut engines = Engines::empty();
    engines.register("fake", "fake", engine.clone());
    let clock = Arc::new(ManualClock(Mutex::new(Utc::now())));
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let ctx = Context::new(config, store.clone(), engines, clock.clone());

    let m = Migration::new(
        MigrationId::new_random(),
        ConnectionName::parse("a").unwrap(),
        ConnectionName::parse("b").unwrap(),
        DatabaseName::parse("db").unwrap(),
        Settings::default(),
        clock.now(),
    );
    let t = flow::start(m);
    let outbox = Envelope::for_commands(&t.migration.id, 1, t.commands);
    let Created::New(m) = store.create(&t.migration, &outbox).await.unwrap() else { panic!() };

    let shutdown = CancellationToken::new();
    let dispatcher = tokio::spawn(milink_functions::embedded::dispatcher::run(ctx.clone(), store.clone(), shutdown.clone()));
    // Retries wait on the (manual) clock: move it along while the dispatcher works.
    let ticker = {
        let clock = clock.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            while !shutdown.is_cancelled() {
                clock.advance(1);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let stalled = wait_until(&store, &m.id, "Stalled", |m| m.status() == Status::Stalled).await;
    assert!(stalled.reason().unwrap().contains("cannot reach fake-target"), "{:?}", stalled.reason());
    assert_eq!(engine.create_calls.load(Ordering::SeqCst), 3, "max_attempts deliveries");
    // The flow learns first, then the message moves to the dead letters: wait for both.
    let mut letters = Vec::new();
    for _ in 0..200 {
        letters = store.dead_letters().await.unwrap();
        if !letters.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(letters.len(), 1);
    assert!(letters[0].last_error.as_deref().unwrap().contains("unreachable"));

    // The cause goes away; the timer's nudge retries the step after the stall retry delay.
    engine.broken.store(false, Ordering::SeqCst);
    clock.advance(flow::STALL_RETRY_SECONDS + 1);
    poll::tick(&ctx, &PollSettings::default()).await;
    let recovered = wait_until(&store, &m.id, "link created", |m| m.phase == milink_core::migration::Phase::Syncing).await;
    assert!(recovered.stall.is_none());
    poll::tick(&ctx, &PollSettings::default()).await;
    let ready = store.load(&m.id).await.unwrap().unwrap();
    assert_eq!(ready.status(), Status::ReadyForCutover);
    shutdown.cancel();
    dispatcher.await.unwrap();
    ticker.await.unwrap();
}
