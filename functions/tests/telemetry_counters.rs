//! The runtime's counters, in process: the embedded dispatcher with a FAKE engine whose create_link fails
//! transiently until its retries run out (the engine cannot be made to fail on cue for real; the
//! counting under test is the runtime's, not the engine's). `/metrics` is read through the API router and
//! parsed as Prometheus text: retries, the dead letter and the stall are counted once each, and the
//! store-derived gauges say what `GET /api/migrations` and `GET /api/deadletters` say.
//!
//! Its own test binary: it installs the process-wide telemetry ([`milink_functions::telemetry::init`]).
mod telemetry_support;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use milink_core::config::Config;
use milink_core::flow;
use milink_core::message::Envelope;
use milink_core::migration::{Migration, Settings, Status};
use milink_core::names::{ConnectionName, DatabaseName, MigrationId};
use milink_core::ports::{Created, MigrationStore, SystemClock};
use milink_functions::api::{self, ApiState};
use milink_functions::context::Context;
use milink_functions::engines::Engines;
use milink_sqlite::SqliteStore;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use telemetry_support::fake::FakeEngine;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

async fn get(router: &axum::Router, path: &str) -> String {
    let response = router.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let sample = scrape.samples.iter().find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))?;
    match sample.value {
        prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => Some(v),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_a_dead_letter_and_a_stall_are_counted_once_and_gauges_match_the_api() {
    let _telemetry = milink_functions::telemetry::init("milink-test");
    let text = "[server]\nmax_attempts = 3\nretry_base_ms = 10\nretry_max_ms = 40\n\
                [connections.a]\nengine = \"fake\"\nurl = \"fake://a\"\n[connections.b]\nengine = \"fake\"\nurl = \"fake://b\"\n";
    let config = Config::parse(text, std::path::Path::new("/"), &|_| None).unwrap();
    let engine = Arc::new(FakeEngine::default());
    engine.broken.store(true, Ordering::SeqCst);
    let mut engines = Engines::empty();
    engines.register("fake", "fake", engine.clone());
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let ctx = Context::new(config, store.clone(), engines, Arc::new(SystemClock));
    let migration = Migration::new(
        MigrationId::new_random(),
        ConnectionName::parse("a").unwrap(),
        ConnectionName::parse("b").unwrap(),
        DatabaseName::parse("db").unwrap(),
        Settings::default(),
        chrono::Utc::now(),
    );
    let transition = flow::start(migration);
    let outbox = Envelope::for_commands(&transition.migration.id, 1, transition.commands);
    let Created::New(migration) = store.create(&transition.migration, &outbox).await.unwrap() else { panic!("created") };

    let shutdown = CancellationToken::new();
    let dispatcher = tokio::spawn(milink_functions::embedded::dispatcher::run(ctx.clone(), store.clone(), shutdown.clone()));
    // The flow learns of the give-up first (Stalled), then the message becomes a dead letter: wait for both.
    for _ in 0..400 {
        let stalled = store.load(&migration.id).await.unwrap().unwrap().status() == Status::Stalled;
        if stalled && !store.dead_letters().await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    shutdown.cancel();
    dispatcher.await.unwrap();

    let router = api::app(ApiState { ctx: ctx.clone(), dead_letters: Some(store.clone()) });
    let text = get(&router, "/metrics").await;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("valid Prometheus text");
    let step = ("step", "create-link");
    assert_eq!(value(&scrape, "milink_step_retries_total", &[step]), Some(2.0), "max_attempts 3: two retries\n{text}");
    assert_eq!(value(&scrape, "milink_dead_letters_total", &[step]), Some(1.0));
    assert_eq!(value(&scrape, "milink_stalls_total", &[step]), Some(1.0));
    assert_eq!(value(&scrape, "milink_step_deliveries_total", &[step, ("outcome", "retry")]), Some(2.0));
    assert_eq!(value(&scrape, "milink_step_deliveries_total", &[step, ("outcome", "dead_letter")]), Some(1.0));
    assert_eq!(value(&scrape, "milink_step_deliveries_total", &[("step", "validate"), ("outcome", "done")]), Some(1.0));
    assert_eq!(value(&scrape, "milink_step_duration_seconds_count", &[step, ("outcome", "retry")]), Some(2.0));

    let letters: Value = serde_json::from_str(&get(&router, "/api/deadletters").await).unwrap();
    let stored = letters["deadLetters"].as_array().unwrap().len() as f64;
    assert_eq!(value(&scrape, "milink_dead_letters_stored", &[]), Some(stored));
    // What is left queued (the stall's notification, when the dispatcher stopped before sending it).
    assert_eq!(value(&scrape, "milink_queue_depth", &[]), Some(store.depth().await.unwrap() as f64));
    let list: Value = serde_json::from_str(&get(&router, "/api/migrations").await).unwrap();
    assert_eq!(list["migrations"][0]["status"], "Stalled");
    assert_eq!(value(&scrape, "milink_migrations", &[("status", "Stalled")]), Some(1.0));
    let labels = [("source", "a"), ("target", "b"), ("database", "db"), ("status", "Stalled")];
    assert_eq!(value(&scrape, "milink_migration_seeding_progress_percent", &labels), None, "never observed: no value, not a made-up 0");
}
