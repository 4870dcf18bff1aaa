//! Failback on real servers (issue 9): with `keep_reverse_link`, a cutover leaves a link from the target back
//! to the source, created before the target takes writes; failback fences the target, drains that link,
//! verifies, and makes the source primary with the link running forward again, so a second cutover works.
//! Every check queries the servers directly.
mod support;

use milink_core::ports::{Engine, LinkPlan};
use milink_core::Severity;
use milink_postgres::PostgresEngine;
use std::time::{Duration, Instant};
use support::*;
use tokio_postgres::error::SqlState;

const APP_PASSWORD: &str = "app-pw-9";

/// Fence, drain, finalize (must be clean), switch keeping the reverse link.
async fn cut_over(engine: &PostgresEngine, plan: &LinkPlan) {
    let position = engine.fence(plan).await.expect("fence");
    drain(engine, plan, position).await;
    let verification = engine.finalize(plan).await.expect("finalize");
    assert!(verification.is_clean(), "{}", verification.summary());
    engine.switch(plan, true).await.expect("switch keeping the reverse link");
}

async fn as_app(url: &str, database: &str, app: &str) -> tokio_postgres::Client {
    connect_as(url, database, Some((app, APP_PASSWORD))).await.expect("application login")
}

/// Inserts one order as the application role; the error's SQLSTATE when refused.
async fn order(url: &str, database: &str, app: &str) -> Result<i64, Option<SqlState>> {
    let client = as_app(url, database, app).await;
    client
        .query_one(
            "INSERT INTO orders (customer_id, status, ordered_at, invoice_no)
             VALUES (1, 'placed', now(), nextval('invoice_number_seq')) RETURNING order_id::bigint",
            &[],
        )
        .await
        .map(|row| row.get(0))
        .map_err(|e| e.code().cloned())
}

/// Waits until `order_id` is on the server at `url`.
async fn arrives(url: &str, database: &str, order_id: i64) {
    let client = connect(url, database).await;
    let started = Instant::now();
    loop {
        let found: i64 = client.query_one("SELECT count(*) FROM orders WHERE order_id = $1", &[&order_id]).await.unwrap().get(0);
        if found == 1 {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "order {order_id} never reached {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What is left of the reverse link: the subscription on the source, the slot and the publication on the
/// target (they have the forward link's names on the other servers).
async fn reverse_link_objects(plan: &LinkPlan) -> Vec<String> {
    let name = plan.link_name();
    let source = connect(&servers().source_url, plan.database.as_str()).await;
    let target = connect(&servers().target_url, plan.database.as_str()).await;
    let mut left = Vec::new();
    for (client, what, sql) in [
        (&source, "subscription on the source", "SELECT count(*) FROM pg_subscription WHERE subname = $1"),
        (&target, "slot on the target", "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1"),
        (&target, "publication on the target", "SELECT count(*) FROM pg_publication WHERE pubname = $1"),
    ] {
        let n: i64 = client.query_one(sql, &[&name]).await.unwrap().get(0);
        if n > 0 {
            left.push(what.to_owned());
        }
    }
    left
}

#[tokio::test]
async fn a_reverse_link_carries_the_targets_writes_back_and_failing_forward_again_works() {
    let database = unique("toystore_back_");
    create_source_database(&database, &sample("toystore.sql")).await;
    let app = unique("app_");
    let (src, tgt) = (servers().source_url.clone(), servers().target_url.clone());
    let grant = format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {app}; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {app};");
    for url in [&src, &tgt] {
        connect(url, "postgres").await.batch_execute(&format!("CREATE ROLE {app} LOGIN PASSWORD '{APP_PASSWORD}'")).await.unwrap();
    }
    connect(&src, &database).await.batch_execute(&grant).await.unwrap();
    let engine = PostgresEngine::new();
    let mut plan = plan(&database);
    plan.settings.keep_reverse_link = true;
    let findings = engine.validate(&plan).await.expect("validate");
    assert!(findings.iter().all(|f| f.severity != Severity::Blocker), "{findings:?}");
    engine.create_link(&plan).await.expect("create_link");
    observe_until_ready(&engine, &plan, Duration::from_secs(120)).await;
    connect(&tgt, &database).await.batch_execute(&grant).await.unwrap();
    let before = order(&src, &database, &app).await.expect("the source takes writes before the cutover");

    cut_over(&engine, &plan).await;
    // The target is primary; the source is read-only for the application, yet its subscription applies.
    assert_eq!(order(&src, &database, &app).await.unwrap_err(), Some(SqlState::READ_ONLY_SQL_TRANSACTION));
    let on_target = order(&tgt, &database, &app).await.expect("the target takes writes after the cutover");
    arrives(&src, &database, on_target).await;

    // A row changed on the (fenced) source behind the reverse link's back: the failback is refused before
    // anything is fenced, the target stays primary; repaired, it goes ahead.
    let source_admin = connect(&src, &database).await;
    // Separate statements: the SET counts from the next transaction on.
    source_admin.batch_execute("SET default_transaction_read_only = off").await.unwrap();
    source_admin.batch_execute("UPDATE products SET name = 'tampered' WHERE product_id = 3").await.unwrap();
    let refused = engine.failback(&plan).await.expect_err("a difference refuses the failback");
    assert!(refused.code == "failback_not_equal" && refused.message.contains("before the fence") && refused.message.contains("(3)"), "{refused:?}");
    order(&tgt, &database, &app).await.expect("the target was never fenced");
    let name: String = connect(&tgt, &database).await.query_one("SELECT name FROM products WHERE product_id = 3", &[]).await.unwrap().get(0);
    source_admin.execute("UPDATE products SET name = $1 WHERE product_id = 3", &[&name]).await.unwrap();

    let started = Instant::now();
    let steps = engine.failback(&plan).await.expect("failback");
    let took = started.elapsed();
    let named: Vec<_> = steps.iter().map(|s| s.step).collect();
    use milink_core::migration::CutoverStep::*;
    assert_eq!(named, [Fencing, Draining, Finalizing, Switching], "every step of the failback is timed: {steps:?}");
    assert!(steps.iter().map(|s| s.ms).sum::<i64>() <= took.as_millis() as i64 + 1, "{steps:?} within {took:?}");
    eprintln!("failback (pause, fence, drain, verify, switch back) took {took:?}");
    assert!(took < Duration::from_secs(60), "failback took {took:?}");
    // The source is primary with every row the target had, sequences included; the target is fenced.
    let mut seen: Vec<i64> = Vec::new();
    for row in connect(&src, &database).await.query("SELECT order_id::bigint FROM orders WHERE order_id = ANY($1)", &[&vec![before, on_target]]).await.unwrap() {
        seen.push(row.get(0));
    }
    assert_eq!(seen.len(), 2, "the source lacks rows after the failback: {seen:?}");
    let on_source = order(&src, &database, &app).await.expect("the source takes writes after the failback");
    assert!(on_source > on_target, "the source's sequence was carried back: {on_source} after {on_target}");
    assert_eq!(order(&tgt, &database, &app).await.unwrap_err(), Some(SqlState::READ_ONLY_SQL_TRANSACTION));
    arrives(&tgt, &database, on_source).await; // the link runs forward again
    engine.failback(&plan).await.expect("a repeated failback (a redelivered message) changes nothing");

    cut_over(&engine, &plan).await;
    let again = order(&tgt, &database, &app).await.expect("the target takes writes after failing forward again");
    arrives(&src, &database, again).await;

    // The migration is final: the reverse link goes, the target keeps its writes, the source its fence.
    assert_eq!(reverse_link_objects(&plan).await.len(), 3, "the cutover kept a reverse link");
    engine.drop_reverse_link(&plan).await.expect("drop the reverse link");
    assert_eq!(reverse_link_objects(&plan).await, Vec::<String>::new());
    engine.drop_reverse_link(&plan).await.expect("a repeated removal (a redelivered message) changes nothing");
    order(&tgt, &database, &app).await.expect("the target still takes writes");
    assert_eq!(order(&src, &database, &app).await.unwrap_err(), Some(SqlState::READ_ONLY_SQL_TRANSACTION), "the source stays fenced");
    let _ = engine.unfence(&plan).await;
    cleanup(&engine, &plan).await;
    for url in [&src, &tgt] {
        let admin = connect(url, "postgres").await;
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(&database))).await.unwrap();
        admin.batch_execute(&format!("DROP ROLE IF EXISTS {app}")).await.unwrap();
    }
}
