//! The Tailspin flow on the Azure host, for real: two PostgreSQL servers (dev/pg.sh), state in Azurite
//! (dev/azurite.sh), the custom handler driven exactly as the Functions host drives it, every emitted message
//! delivered to the next function through the Service Bus REST contract, timers fired, failures redelivered.
//! The same data checks as the embedded flow (tests/tests/tailspin.rs): every acknowledged write is on the
//! target, every table is identical row for row, the source stays fenced.
//!
//! Run three ways, to the same end state: as is; with every message delivered twice; with a crash between
//! saving state and sending its messages (every message then reaches the bus only through the relay).
mod azure_support;

use azure_support::{Faults, Lab, LabOptions};
use milink_e2e::pg::{self, Side};
use milink_e2e::unique;
use milink_e2e::writer::{self, Writer};
use milink_functions::engines::Engines;
use serde_json::json;
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(180);

fn database<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["databases"].as_array().and_then(|dbs| dbs.iter().find(|d| d["name"] == name)).unwrap_or_else(|| panic!("{name} not in {report:#}"))
}

async fn tailspin(faults: Faults, crash_after_save: bool) {
    let toystore = unique("ToyStoreAz");
    let customer360 = unique("Customer360Az");
    pg::load_sample(&toystore, "toystore.sql").await.unwrap();
    pg::load_sample(&customer360, "customer360.sql").await.unwrap();
    let lab = Lab::start(LabOptions {
        config: azure_support::postgres_config(),
        engines: Engines::default(),
        faults,
        crash_after_save,
        timer_every: Duration::from_millis(250),
    })
    .await;

    // Assess: ToyStore is ready, Customer360 is not, and says why.
    let report = lab.assess("src", Duration::from_secs(120)).await;
    assert_eq!(report["status"], "Completed", "{report:#}");
    assert_ne!(database(&report, &toystore)["readiness"], "NotReady");
    let c360 = database(&report, &customer360);
    assert_eq!(c360["readiness"], "NotReady");
    assert!(c360["findings"].as_array().unwrap().iter().any(|f| f["severity"] == "Blocker" && f["remediation"].as_str().is_some_and(|r| !r.is_empty())));

    // A not-ready database is refused with its blockers, with the embedded host's body.
    let (status, refused) = lab.post("/api/migrations", &json!({ "source": "src", "target": "dst", "databases": [customer360] })).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "database_not_ready");
    assert!(refused["error"]["details"][0]["blockers"].as_array().is_some_and(|b| !b.is_empty()));

    // Link ToyStore while the application writes; starting again returns the same migration.
    let writer = Writer::start(&toystore);
    let id = lab.start_migration(&toystore, json!({})).await;
    assert_eq!(lab.start_migration(&toystore, json!({})).await, id);
    let concurrent = futures::future::join_all((0..4).map(|_| lab.start_migration(&toystore, json!({})))).await;
    assert!(concurrent.iter().all(|other| *other == id), "{concurrent:?} vs {id}");
    let listed = lab.get("/api/migrations").await;
    assert_eq!(listed["migrations"].as_array().unwrap().iter().filter(|m| m["database"] == toystore.as_str()).count(), 1);

    let ready = lab.wait_status(&id, "ReadyForCutover", READY_TIMEOUT).await;
    assert!(ready["lagBytes"].as_u64().is_some());

    // Cutover needs the confirmation; then fence, drain, finalize, switch.
    let (status, body) = lab.post(&format!("/api/migrations/{id}/cutover"), &json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("confirmation_required")), "{body}");
    let (status, body) = loop {
        let (status, body) = lab.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await;
        if status != 500 {
            break (status, body);
        }
    };
    assert_eq!(status, 202, "{body}");
    let written = writer.until_fenced().await;
    let done = lab.wait_status(&id, "Completed", Duration::from_secs(120)).await;
    assert!(done["cutover"]["writeDowntimeMs"].as_i64().is_some(), "{done:#}");
    assert!(written.orders.len() > 10, "the writer wrote during sync: {} ({:?})", written.orders.len(), written.stopped_by);

    writer::assert_acknowledged_on_target(&toystore, &written).await.unwrap();
    pg::assert_target_matches_source(&toystore).await.unwrap();
    let source = pg::connect(Side::Source, &toystore).await.unwrap();
    assert!(source.execute("UPDATE products SET stock = stock WHERE product_id = 1", &[]).await.is_err(), "the source stays fenced");
    let (status, _) = lab.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await;
    assert_eq!(status, 409, "a completed migration cannot be cut over again");

    // Quiet end: nothing queued or in flight, the outbox empty, nothing dead-lettered by the bus or by us,
    // and every send the double accepted passed its contract checks.
    lab.wait_quiet(Duration::from_secs(30)).await;
    let (accepted, duplicates, rejected) = lab.bus.stats();
    assert!(rejected.is_empty(), "sends refused by the Service Bus double: {rejected:?}");
    assert!(lab.bus.dead_letters().is_empty(), "{:?}", lab.bus.dead_letters());
    assert_eq!(lab.get("/api/deadletters").await["deadLetters"], json!([]));
    let history: Vec<String> = done["history"].as_array().unwrap().iter().map(|h| h["status"].as_str().unwrap().to_owned()).collect();
    println!(
        "faults {faults:?}, crash_after_save {crash_after_save}: {} invocations, {accepted} messages sent, {duplicates} duplicate sends dropped, \
         {} crashes, {} orders acknowledged, history {history:?}",
        lab.host.invocations(),
        lab.crashes.lock().unwrap(),
        written.orders.len()
    );
    if crash_after_save {
        assert!(*lab.crashes.lock().unwrap() > 5, "the crash was injected");
    }
    lab.stop().await;
    pg::drop_everywhere(&toystore).await;
    pg::drop_everywhere(&customer360).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tailspin_on_the_azure_host_to_completed() {
    tailspin(Faults::default(), false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tailspin_with_every_message_delivered_twice() {
    tailspin(Faults { deliver_twice: true, ..Faults::default() }, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tailspin_with_a_crash_between_state_save_and_send() {
    tailspin(Faults::default(), true).await;
}
