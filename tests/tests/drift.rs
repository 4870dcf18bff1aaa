//! Schema drift with the real binary: DDL on the source while the link syncs is carried to the target
//! (new table, new column) and the cutover completes with the target equal to the source; a change milink
//! cannot carry (a column type) blocks the cutover with the reason until it is fixed on the target.
use milink_e2e::milink::Milink;
use milink_e2e::pg::{self, Side};
use milink_e2e::unique;
use serde_json::{json, Value};
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// The schema change reported for `object`, if any.
fn schema_change<'a>(migration: &'a Value, object: &str) -> Option<&'a Value> {
    migration["schemaChanges"].as_array()?.iter().find(|c| c["object"] == object)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_and_a_column_added_while_syncing_reach_the_target_at_cutover() -> anyhow::Result<()> {
    let toystore = unique("ToyStoreDrift");
    pg::load_sample(&toystore, "toystore.sql").await?;
    let milink = Milink::start("").await?;
    let id = milink.start_migration(&toystore, json!({})).await?;
    milink.wait_status(&id, "ReadyForCutover", READY_TIMEOUT).await?;

    let source = pg::connect(Side::Source, &toystore).await?;
    source
        .batch_execute(
            "CREATE TABLE \"Gift \"\"Cards\"\"\" (card_id serial PRIMARY KEY, customer_id bigint, amount numeric(10,2) NOT NULL);
             INSERT INTO \"Gift \"\"Cards\"\"\" (customer_id, amount) SELECT customer_id, 25 FROM customers LIMIT 10;
             ALTER TABLE products ADD COLUMN discontinued boolean NOT NULL DEFAULT false;",
        )
        .await?;
    // The drift check runs every few seconds: wait until it has carried both, then for the link to be ready again.
    let carried = milink
        .wait_for(&id, "the schema changes carried", Duration::from_secs(60), |m| {
            ["public.Gift \"Cards\"", "public.products.discontinued"]
                .iter()
                .all(|o| schema_change(m, o).is_some_and(|c| c["carried"] == true))
        })
        .await?;
    assert_ne!(carried["status"], "Blocked", "{carried:#}");
    source.batch_execute("INSERT INTO \"Gift \"\"Cards\"\"\" (customer_id, amount) VALUES (1, 50)").await?;
    source.batch_execute("UPDATE products SET discontinued = true WHERE product_id = 1").await?;
    milink.wait_status(&id, "ReadyForCutover", READY_TIMEOUT).await?;

    let (status, body) = milink.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await?;
    assert_eq!(status, 202, "{body}");
    milink.wait_status(&id, "Completed", Duration::from_secs(120)).await?;
    pg::assert_target_matches_source(&toystore).await?;
    let target = pg::connect(Side::Target, &toystore).await?;
    let cards: i64 = target.query_one("SELECT count(*) FROM \"Gift \"\"Cards\"\"\"", &[]).await?.get(0);
    assert_eq!(cards, 11);
    let discontinued: i64 = target.query_one("SELECT count(*) FROM products WHERE discontinued", &[]).await?.get(0);
    assert_eq!(discontinued, 1);
    pg::drop_everywhere(&toystore).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_column_type_change_blocks_the_cutover_until_the_target_matches() -> anyhow::Result<()> {
    let toystore = unique("ToyStoreTyped");
    pg::load_sample(&toystore, "toystore.sql").await?;
    let milink = Milink::start("").await?;
    let id = milink.start_migration(&toystore, json!({})).await?;
    milink.wait_status(&id, "ReadyForCutover", READY_TIMEOUT).await?;

    let source = pg::connect(Side::Source, &toystore).await?;
    source.batch_execute("ALTER TABLE products ALTER COLUMN stock TYPE bigint").await?;
    let blocked = milink.wait_status(&id, "Blocked", Duration::from_secs(60)).await?;
    let reason = blocked["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("public.products.stock") && reason.contains("type changed"), "{blocked:#}");
    assert!(blocked["remediation"].as_str().unwrap_or_default().contains("ALTER COLUMN \"stock\" TYPE bigint"), "{blocked:#}");
    let (status, body) = milink.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await?;
    assert_eq!(status, 409, "{body}");

    // Done on the target too, the change stops blocking and the cutover completes.
    pg::connect(Side::Target, &toystore).await?.batch_execute("ALTER TABLE products ALTER COLUMN stock TYPE bigint").await?;
    milink.wait_status(&id, "ReadyForCutover", READY_TIMEOUT).await?;
    let (status, body) = milink.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await?;
    assert_eq!(status, 202, "{body}");
    milink.wait_status(&id, "Completed", Duration::from_secs(120)).await?;
    pg::assert_target_matches_source(&toystore).await?;
    pg::drop_everywhere(&toystore).await;
    Ok(())
}
