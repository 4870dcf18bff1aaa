//! One step at a time per migration on the embedded host, and the watchdog, with the real binary and
//! real PostgreSQL: the same scenarios as the Azure host's (functions/tests/azure_ordering.rs).
//! - A cancel sent while CreateLink is held waits behind it, then removes everything.
//! - A cancel sent while Fence is held leaves the source writable.
//! - A drain whose message is lost (milink killed mid-drain and the message removed from its queue, as a
//!   corrupted or hand-edited queue would lose it) is abandoned at its deadline by the watchdog: the
//!   source gets its writes back.
use milink_e2e::holds;
use milink_e2e::milink::Milink;
use milink_e2e::pg::{self, Side};
use milink_e2e::unique;
use milink_e2e::writer::Writer;
use serde_json::json;
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_during_create_link_waits_for_it_and_leaves_no_replication_objects() -> anyhow::Result<()> {
    let database = unique("EmbOrderCreate");
    pg::load_sample(&database, "toystore.sql").await?;
    let milink = Milink::start("").await?;
    let held = holds::hold_schema_copy(&database, "products").await?;
    let id = milink.start_migration(&database, json!({})).await?;
    milink.wait_status(&id, "Deploying", Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = milink.post(&format!("/api/migrations/{id}/cancel"), &json!({})).await?;
    assert_eq!(status, 202, "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    held.release().await?;
    milink.wait_status(&id, "Cancelled", Duration::from_secs(120)).await?;
    assert_eq!(holds::replication_objects_left(&database).await?, Vec::<String>::new());
    pg::drop_everywhere(&database).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_during_fence_leaves_the_source_writable() -> anyhow::Result<()> {
    let database = unique("EmbOrderFence");
    pg::load_sample(&database, "toystore.sql").await?;
    let milink = Milink::start("").await?;
    let id = milink.start_migration(&database, json!({})).await?;
    milink.wait_status(&id, "ReadyForCutover", READY_TIMEOUT).await?;
    let held = holds::hold_fence(&database).await?;
    let (status, body) = milink.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await?;
    assert_eq!(status, 202, "{body}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = milink.post(&format!("/api/migrations/{id}/cancel"), &json!({})).await?;
    assert_eq!(status, 202, "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    held.release().await?;
    milink.wait_status(&id, "Cancelled", Duration::from_secs(120)).await?;
    assert!(holds::source_writable(&database).await?, "the cancelled migration left its source fenced");
    assert_eq!(holds::replication_objects_left(&database).await?, Vec::<String>::new());
    pg::drop_everywhere(&database).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_drain_is_abandoned_at_its_deadline_and_the_source_gets_its_writes_back() -> anyhow::Result<()> {
    let database = unique("EmbOrderDrain");
    pg::load_sample(&database, "toystore.sql").await?;
    let mut milink = Milink::start("").await?;
    let writer = Writer::start(&database);
    let id = milink.start_migration(&database, json!({ "drainTimeoutSeconds": 5 })).await?;
    milink.wait_status(&id, "ReadyForCutover", READY_TIMEOUT).await?;
    // Hold the drain: a lock on the target keeps the apply worker from applying changes to products.
    let mut blocker = pg::connect(Side::Target, &database).await?;
    let lock = blocker.transaction().await?;
    lock.batch_execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE").await?;
    let (status, body) = milink.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await?;
    assert_eq!(status, 202, "{body}");
    // A link that cannot apply holds the cutover up to 30 s before the fence (the verification there waits
    // for it, then gives up): two minutes leave room for a busy CI.
    milink.wait_for(&id, "Draining", Duration::from_secs(120), |m| m["step"] == "Draining").await?;
    let _ = writer.until_fenced().await;
    milink.kill();
    // Lose the drain's message: take it from the queue as a handler would, then drop it (other messages
    // taken on the way are released by the restart).
    let store = milink_sqlite::SqliteStore::open(&milink.state_file())?;
    let far = chrono::Utc::now() + chrono::Duration::days(1);
    loop {
        let taken = store.claim(far, 60_000).await?.expect("the drain's message is queued");
        if taken.envelope.envelope_id.contains(":drain:") {
            store.complete(&taken.envelope.envelope_id).await?;
            break;
        }
    }
    drop(store);
    milink.restart().await?;
    let back = milink
        .wait_for(&id, "abandoned cutover", Duration::from_secs(90), |m| {
            m["cutover"]["abandonedReason"].as_str().is_some_and(|r| r.contains("did not answer by its deadline"))
                && m["status"] != "CuttingOver"
        })
        .await?;
    lock.rollback().await?;
    assert!(holds::source_writable(&database).await?, "the lost drain left the source fenced: {back:#}");
    pg::drop_everywhere(&database).await;
    Ok(())
}
