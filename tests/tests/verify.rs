//! On-demand content verification through the real binary: a verification requested while the link
//! syncs reports every table equal; a row changed on the target behind the link's back (counts unchanged)
//! blocks the migration with its key in the reason, and the cutover is refused until it is repaired.
use milink_e2e::milink::Milink;
use milink_e2e::pg::{self, Side};
use milink_e2e::unique;
use serde_json::{json, Value};
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Requests a verification and waits for its report (request number `request`).
async fn verify(milink: &Milink, id: &str, request: u64) -> anyhow::Result<Value> {
    let (status, body) = milink.post(&format!("/api/migrations/{id}/verify"), &json!({})).await?;
    assert_eq!(status, 202, "{body}");
    let done = |m: &Value| {
        m["verification"]["running"] == false
            && m["history"].as_array().is_some_and(|h| {
                h.iter().any(|e| e["message"].as_str().is_some_and(|s| s.starts_with(&format!("verification {request}:"))))
            })
    };
    milink.wait_for(id, "the verification's report", Duration::from_secs(120), done).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_changed_on_the_target_blocks_the_cutover_with_its_key() -> anyhow::Result<()> {
    let toystore = unique("ToyStoreVerify");
    pg::load_sample(&toystore, "toystore.sql").await?;
    let milink = Milink::start("").await?;
    let id = milink.start_migration(&toystore, json!({})).await?;
    milink.wait_status(&id, "ReadyForCutover", READY_TIMEOUT).await?;

    let clean = verify(&milink, &id, 1).await?;
    let last = &clean["verification"]["last"];
    assert_eq!(last["method"], "checksum", "{clean:#}");
    assert_eq!(last["complete"], true, "{clean:#}");
    assert!(last["differences"].as_array().is_some_and(Vec::is_empty), "{clean:#}");
    let tables = last["tables"].as_array().unwrap();
    assert!(tables.iter().any(|t| t["table"] == "public.products" && t["chunks"].as_u64() >= Some(1)), "{clean:#}");
    assert!(tables.iter().all(|t| t["sourceRows"] == t["targetRows"] && t["differing"].as_array().is_some_and(Vec::is_empty)));
    assert_eq!(clean["status"], "ReadyForCutover", "a clean verification blocks nothing");

    // Someone writes to the target behind the link's back: the row counts stay equal.
    pg::connect(Side::Target, &toystore).await?.execute("UPDATE products SET name = 'tampered' WHERE product_id = 7", &[]).await?;
    let found = verify(&milink, &id, 2).await?;
    let blocked = milink.wait_status(&id, "Blocked", Duration::from_secs(30)).await?;
    let reason = blocked["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("public.products") && reason.contains("(7)"), "the reason names the key: {reason}\n{found:#}");
    let (status, body) = milink.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await?;
    assert_eq!(status, 409, "a blocked migration does not cut over: {body}");

    // Repaired from the source's row, a new verification unblocks it.
    let source = pg::connect(Side::Source, &toystore).await?;
    let name: String = source.query_one("SELECT name FROM products WHERE product_id = 7", &[]).await?.get(0);
    pg::connect(Side::Target, &toystore).await?.execute("UPDATE products SET name = $1 WHERE product_id = 7", &[&name]).await?;
    verify(&milink, &id, 3).await?;
    milink.wait_status(&id, "ReadyForCutover", Duration::from_secs(30)).await?;

    let (status, _) = milink.post(&format!("/api/migrations/{id}/cancel"), &json!({})).await?;
    assert_eq!(status, 202);
    milink.wait_status(&id, "Cancelled", Duration::from_secs(60)).await?;
    pg::drop_everywhere(&toystore).await;
    Ok(())
}

/// A difference the verification before the fence proves refuses the cutover there: the source is never
/// fenced (no write downtime for a cutover that could not complete), the reason names the key, and the
/// migration is Blocked until a clean verification.
#[tokio::test(flavor = "multi_thread")]
async fn a_difference_found_before_the_fence_refuses_the_cutover_without_fencing_the_source() -> anyhow::Result<()> {
    let toystore = unique("ToyStoreEarly");
    pg::load_sample(&toystore, "toystore.sql").await?;
    let milink = Milink::start("").await?;
    let id = milink.start_migration(&toystore, json!({})).await?;
    milink.wait_status(&id, "ReadyForCutover", READY_TIMEOUT).await?;
    pg::connect(Side::Target, &toystore).await?.execute("UPDATE products SET name = 'tampered' WHERE product_id = 9", &[]).await?;

    let (status, body) = milink.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await?;
    assert_eq!(status, 202, "{body}");
    let refused = milink
        .wait_for(&id, "the cutover refused before the fence", Duration::from_secs(120), |m| m["cutover"]["abandonedReason"].is_string())
        .await?;
    let reason = refused["cutover"]["abandonedReason"].as_str().unwrap_or_default();
    assert!(reason.contains("before the fence") && reason.contains("(9)"), "{refused:#}\nlog:\n{}", milink.logs());
    assert!(refused["cutover"]["fencedAt"].is_null(), "the source was never fenced: {refused:#}");
    let blocked = milink.wait_status(&id, "Blocked", Duration::from_secs(30)).await?;
    assert!(blocked["reason"].as_str().is_some_and(|r| r.contains("(9)")), "{blocked:#}");
    assert!(milink_e2e::holds::source_writable(&toystore).await?);
    let slots: i64 = pg::connect(Side::Source, "postgres")
        .await?
        .query_one("SELECT count(*) FROM pg_replication_slots WHERE database = $1 AND plugin = 'test_decoding'", &[&toystore])
        .await?
        .get(0);
    assert_eq!(slots, 0, "no tracking slot is left holding the source's WAL");

    let (status, _) = milink.post(&format!("/api/migrations/{id}/cancel"), &json!({})).await?;
    assert_eq!(status, 202);
    milink.wait_status(&id, "Cancelled", Duration::from_secs(60)).await?;
    pg::drop_everywhere(&toystore).await;
    Ok(())
}
