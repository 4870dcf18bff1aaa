//! create_link converges whatever state a crash left, and drop_link removes everything it made.
mod support;

use milink_core::ports::{Engine, LinkPlan};
use milink_postgres::PostgresEngine;
use std::time::Duration;
use support::*;

/// Everything the link consists of, read straight from the catalogs of both servers.
#[derive(Debug, PartialEq)]
struct LinkObjects {
    published: Vec<String>,
    slots: Vec<String>,
    subscription: Option<(bool, String, Vec<String>)>,
    target_tables: Vec<String>,
    target_database: bool,
}

async fn link_objects(plan: &LinkPlan) -> LinkObjects {
    let name = plan.link_name();
    let database = plan.database.as_str();
    let source = connect(&servers().source_url, database).await;
    let published = source
        .query("SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1", &[&name])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let slots = source
        .query("SELECT slot_name::text FROM pg_replication_slots WHERE slot_name LIKE $1 ORDER BY 1", &[&format!("{name}%")])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let target_admin = connect(&servers().target_url, "postgres").await;
    let target_database = target_admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await
        .unwrap()
        .is_some();
    let (mut subscription, mut target_tables) = (None, Vec::new());
    if target_database {
        let target = connect(&servers().target_url, database).await;
        subscription = target
            .query_opt(
                "SELECT subenabled, subslotname::text, subpublications::text[] FROM pg_subscription WHERE subname = $1",
                &[&name],
            )
            .await
            .unwrap()
            .map(|r| (r.get(0), r.get(1), r.get(2)));
        target_tables = target
            .query("SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    }
    LinkObjects { published, slots, subscription, target_tables, target_database }
}

#[tokio::test]
async fn create_link_twice_reaches_the_same_state_and_drop_link_removes_it_all() {
    let database = unique("toystore_link_");
    create_source_database(&database, &sample("toystore.sql")).await;
    let engine = PostgresEngine::new();
    let plan = native_plan(&database);

    engine.create_link(&plan).await.expect("first create_link");
    let first = link_objects(&plan).await;
    engine.create_link(&plan).await.expect("second create_link");
    let second = link_objects(&plan).await;
    assert_eq!(first, second);
    let tables = vec!["public.customers", "public.order_items", "public.orders", "public.products"];
    assert_eq!(first.published, tables);
    assert_eq!(first.target_tables, tables);
    assert_eq!(first.slots, vec![plan.link_name()]);
    assert_eq!(first.subscription, Some((true, plan.link_name(), vec![plan.link_name()])));
    observe_until_ready(&engine, &plan, Duration::from_secs(60)).await;

    engine.drop_link(&plan, false).await.expect("drop_link");
    let dropped = link_objects(&plan).await;
    assert!(dropped.published.is_empty() && dropped.slots.is_empty() && dropped.subscription.is_none(), "{dropped:?}");
    assert!(dropped.target_database, "the target database stays unless asked");
    engine.drop_link(&plan, true).await.expect("drop_link again, with the target");
    assert!(!link_objects(&plan).await.target_database);
    let source = connect(&servers().source_url, &database).await;
    let publications: i64 = source.query_one("SELECT count(*) FROM pg_publication", &[]).await.unwrap().get(0);
    assert_eq!(publications, 0);
    cleanup(&engine, &plan).await;
}

#[tokio::test]
async fn create_link_converges_after_crashes_between_steps() {
    let database = unique("toystore_crash_");
    create_source_database(&database, &sample("toystore.sql")).await;
    let engine = PostgresEngine::new();
    let plan = native_plan(&database);
    let name = plan.link_name();

    // As if an earlier run died after creating the target database and the publication (with one table
    // only), and after CREATE SUBSCRIPTION had made its slot on the source but before it committed.
    let target_admin = connect(&servers().target_url, "postgres").await;
    target_admin.batch_execute(&format!("CREATE DATABASE {}", quote(&database))).await.unwrap();
    let source = connect(&servers().source_url, &database).await;
    source.batch_execute(&format!("CREATE PUBLICATION {name} FOR TABLE customers")).await.unwrap();
    source.query_one("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&name]).await.unwrap();

    engine.create_link(&plan).await.expect("create_link resumes");
    let objects = link_objects(&plan).await;
    assert_eq!(objects.published.len(), 4, "{objects:?}");
    assert_eq!(objects.slots, vec![name.clone()]);
    assert!(objects.subscription.is_some());
    observe_until_ready(&engine, &plan, Duration::from_secs(60)).await;
    let verification = engine.finalize(&plan).await.expect("finalize");
    assert!(verification.mismatches().is_empty(), "{verification:?}");
    cleanup(&engine, &plan).await;
}

#[tokio::test]
async fn a_target_with_different_tables_is_refused() {
    let database = unique("toystore_differs_");
    create_source_database(&database, &sample("toystore.sql")).await;
    let target_admin = connect(&servers().target_url, "postgres").await;
    target_admin.batch_execute(&format!("CREATE DATABASE {}", quote(&database))).await.unwrap();
    let target = connect(&servers().target_url, &database).await;
    target.batch_execute("CREATE TABLE customers (id int PRIMARY KEY)").await.unwrap();
    let engine = PostgresEngine::new();
    let plan = plan(&database);

    let findings = engine.validate(&plan).await.unwrap();
    assert!(findings.iter().any(|f| f.rule == "target_schema_differs"), "{findings:?}");
    let error = engine.create_link(&plan).await.unwrap_err();
    assert_eq!(error.code, "target_schema_differs");
    assert!(!error.is_transient());
    cleanup(&engine, &plan).await;
}

/// Observes until `check` holds, or fails after `seconds`.
async fn observe_until(
    engine: &PostgresEngine,
    plan: &LinkPlan,
    seconds: u64,
    check: impl Fn(&milink_core::migration::Observation) -> bool,
) -> milink_core::migration::Observation {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let observation = engine.observe(plan, chrono::Utc::now()).await.expect("observe");
        if check(&observation) {
            return observation;
        }
        assert!(std::time::Instant::now() < deadline, "never saw it; last: {observation:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_disabled_subscription_and_failing_apply_are_reported_with_what_to_do() {
    let database = unique("toystore_problems_");
    create_source_database(&database, &sample("toystore.sql")).await;
    let engine = PostgresEngine::new();
    let plan = plan(&database);
    engine.create_link(&plan).await.unwrap();
    observe_until_ready(&engine, &plan, Duration::from_secs(60)).await;
    let target = connect(&servers().target_url, &database).await;
    let name = plan.link_name();

    target.batch_execute(&format!("ALTER SUBSCRIPTION {name} DISABLE")).await.unwrap();
    let disabled = observe_until(&engine, &plan, 10, |o| o.problem.is_some()).await.problem.unwrap();
    assert!(disabled.reason.contains("disabled"), "{disabled:?}");
    assert!(disabled.remediation.contains(&format!("ALTER SUBSCRIPTION \"{name}\" ENABLE")));
    target.batch_execute(&format!("ALTER SUBSCRIPTION {name} ENABLE")).await.unwrap();
    observe_until(&engine, &plan, 30, |o| o.problem.is_none()).await;

    // A row written on the target behind the link's back makes the same row from the source collide.
    target.batch_execute("INSERT INTO products (product_id, sku, name, category, price) VALUES (9001, 'X', 'x', 'y', 1)").await.unwrap();
    let source = connect(&servers().source_url, &database).await;
    source.batch_execute("INSERT INTO products (product_id, sku, name, category, price) VALUES (9001, 'X', 'x', 'y', 1)").await.unwrap();
    let failing = observe_until(&engine, &plan, 30, |o| o.problem.is_some()).await.problem.unwrap();
    assert!(failing.reason.contains("failing to apply"), "{failing:?}");
    assert!(failing.remediation.contains("log"));

    // A failing transaction is small, so lag in bytes stays under the ready threshold: the problem is what
    // keeps the link from being ready. Fixed on the target, the link catches up by itself, to the position.
    target.batch_execute("DELETE FROM products WHERE product_id = 9001").await.unwrap();
    let position = engine.positions(&plan).await.unwrap().source;
    drain(&engine, &plan, position).await;
    let verification = engine.finalize(&plan).await.unwrap();
    assert!(verification.mismatches().is_empty(), "{verification:?}");
    cleanup(&engine, &plan).await;
}

/// A link removed while its parallel seeding is starting (the seeder creating its slot on a replication
/// connection) leaves no slot behind, whatever the moment: a slot nobody drops holds the source's WAL until
/// its disk fills. Removal at several delays after create_link covers the seeder's steps, from before its
/// snapshot holder connects to while the copy runs.
#[tokio::test]
async fn a_link_removed_while_its_seeding_starts_leaves_no_slot() {
    let database = unique("toystore_seedcancel_");
    create_source_database(&database, &sample("toystore.sql")).await;
    let engine = PostgresEngine::new();
    let plan = plan(&database);
    for delay_ms in [0u64, 10, 25, 50, 100, 200, 400] {
        engine.create_link(&plan).await.expect("create_link");
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        engine.drop_link(&plan, true).await.expect("drop_link");
        // Long enough for a holder still connecting to have created its slot.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let left = link_objects(&plan).await;
        assert!(left.slots.is_empty() && left.published.is_empty() && !left.target_database, "after {delay_ms} ms: {left:?}");
        let holders: i64 = connect(&servers().source_url, "postgres")
            .await
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", &[&format!("{}_snapshot", plan.link_name())])
            .await
            .unwrap()
            .get(0);
        assert_eq!(holders, 0, "after {delay_ms} ms the snapshot holder still runs");
    }
    cleanup(&engine, &plan).await;
}
