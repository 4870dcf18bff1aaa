//! One step at a time per migration on the Azure host, and the watchdog, for real: PostgreSQL servers
//! (dev/pg.sh), state in Azurite, the handler driven as the Functions host drives it over the Service Bus
//! double. Each scenario holds a step mid-way (a lock, as a busy server would) and sends what used to race
//! it when every stage had its own queue.
//! - A cancel delivered while CreateLink is held: the cancel waits behind it, then removes everything
//!   (a publication, slot or subscription left behind would retain WAL until the source's disk fills).
//! - A cancel delivered while Fence is held: the source ends writable.
//! - A Drain message the bus dead-letters by itself: the poll's watchdog abandons the cutover at the
//!   drain's deadline and the source ends writable; a second cutover then completes.
mod azure_support;

use azure_support::{Faults, Lab, LabOptions};
use milink_e2e::holds;
use milink_e2e::pg;
use milink_e2e::unique;
use milink_functions::engines::Engines;
use serde_json::json;
use std::time::Duration;

async fn lab(faults: Faults) -> Lab {
    Lab::start(LabOptions { config: azure_support::postgres_config(), engines: Engines::default(), faults, crash_after_save: false, timer_every: Duration::from_millis(250) }).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_during_create_link_waits_for_it_and_leaves_no_replication_objects() {
    let database = unique("OrderCreate");
    pg::load_sample(&database, "toystore.sql").await.unwrap();
    let lab = lab(Faults::default()).await;
    let held = holds::hold_schema_copy(&database, "products").await.unwrap();
    let id = lab.start_migration(&database, json!({})).await;
    lab.wait_status(&id, "Deploying", Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // CreateLink is now waiting on the lock
    let (status, body) = lab.post(&format!("/api/migrations/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 202, "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    held.release().await.unwrap();
    lab.wait_status(&id, "Cancelled", Duration::from_secs(120)).await;
    lab.wait_quiet(Duration::from_secs(30)).await;
    assert_eq!(holds::replication_objects_left(&database).await.unwrap(), Vec::<String>::new());
    lab.stop().await;
    pg::drop_everywhere(&database).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_during_fence_leaves_the_source_writable() {
    let database = unique("OrderFence");
    pg::load_sample(&database, "toystore.sql").await.unwrap();
    let lab = lab(Faults::default()).await;
    let id = lab.start_migration(&database, json!({})).await;
    lab.wait_status(&id, "ReadyForCutover", Duration::from_secs(180)).await;
    let held = holds::hold_fence(&database).await.unwrap();
    let (status, body) = lab.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await;
    assert_eq!(status, 202, "{body}");
    tokio::time::sleep(Duration::from_secs(1)).await; // Fence is now waiting on the settings row
    let (status, body) = lab.post(&format!("/api/migrations/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 202, "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    held.release().await.unwrap();
    lab.wait_status(&id, "Cancelled", Duration::from_secs(120)).await;
    assert!(holds::source_writable(&database).await.unwrap(), "the cancelled migration left its source fenced");
    assert_eq!(holds::replication_objects_left(&database).await.unwrap(), Vec::<String>::new());
    lab.stop().await;
    pg::drop_everywhere(&database).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_lost_by_the_bus_is_abandoned_at_its_deadline_and_the_source_gets_its_writes_back() {
    let database = unique("OrderDrain");
    pg::load_sample(&database, "toystore.sql").await.unwrap();
    let lab = lab(Faults { lose: Some("\"command\":\"drain\""), ..Faults::default() }).await;
    let id = lab.start_migration(&database, json!({ "drainTimeoutSeconds": 3 })).await;
    lab.wait_status(&id, "ReadyForCutover", Duration::from_secs(180)).await;
    let (status, body) = lab.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await;
    assert_eq!(status, 202, "{body}");
    // Deadline (3 s) + the watchdog's grace (10 s) + a few poll ticks.
    let back = lab
        .wait_for(&id, "abandoned cutover", Duration::from_secs(60), |m| m["cutover"]["abandonedReason"].is_string() && m["status"] == "ReadyForCutover")
        .await;
    assert!(back["cutover"]["abandonedReason"].as_str().unwrap().contains("did not answer by its deadline"), "{back:#}");
    assert!(holds::source_writable(&database).await.unwrap(), "the lost drain left the source fenced");
    assert!(lab.bus.dead_letters().iter().any(|(m, _)| m.body.contains("\"command\":\"drain\"")), "the drain was not lost");
    // Only that drain was lost: a second cutover completes.
    lab.wait_status(&id, "ReadyForCutover", Duration::from_secs(60)).await;
    let (status, body) = lab.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await;
    assert_eq!(status, 202, "{body}");
    let done = lab.wait_status(&id, "Completed", Duration::from_secs(120)).await;
    assert_eq!(done["cutover"]["attempt"], 2, "{done:#}");
    lab.stop().await;
    pg::drop_everywhere(&database).await;
}
