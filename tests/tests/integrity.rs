//! What "Completed" proves, through the real binary, in the ordinary situations that used to pass unseen
//! (issue 8): a sequence reset with `setval(s, N, false)` (the "max + 1" idiom) and a large object written
//! after the link. The cutover completes and the target hands out the source's next value and holds the
//! object under the same OID, checked with plain SQL on both sides.
use milink_e2e::milink::Milink;
use milink_e2e::pg::{self, Side};
use milink_e2e::unique;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_sequence_reset_with_setval_false_and_a_large_object_arrive_exactly() -> anyhow::Result<()> {
    let database = unique("ToyStoreExact");
    pg::load_sample(&database, "toystore.sql").await?;
    let milink = Milink::start("").await?;
    let id = milink.start_migration(&database, json!({})).await?;
    milink.wait_status(&id, "ReadyForCutover", Duration::from_secs(180)).await?;

    let source = pg::connect(Side::Source, &database).await?;
    // The next invoice must be 500000: is_called = false means "not handed out yet".
    source.batch_execute("SELECT setval('invoice_number_seq', 500000, false)").await?;
    let oid: u32 = source.query_one("SELECT lo_from_bytea(0, convert_to(repeat('toy', 1000), 'UTF8'))", &[]).await?.get(0);

    let (status, body) = milink.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await?;
    assert_eq!(status, 202, "{body}");
    let done = milink.wait_status(&id, "Completed", Duration::from_secs(180)).await?;
    let verification = &done["cutover"]["verification"];
    assert_eq!(verification["complete"], true, "{done:#}");
    assert!(verification["differences"].as_array().is_some_and(Vec::is_empty), "{done:#}");

    let target = pg::connect(Side::Target, &database).await?;
    let next: i64 = target.query_one("SELECT nextval('invoice_number_seq')", &[]).await?.get(0);
    assert_eq!(next, 500000, "the target must hand out the source's next value, not one past it");
    let content: String = target.query_one("SELECT convert_from(lo_get($1), 'UTF8')", &[&oid]).await?.get(0);
    assert_eq!(content, "toy".repeat(1000), "the large object is on the target under the same OID");
    pg::drop_everywhere(&database).await;
    Ok(())
}
