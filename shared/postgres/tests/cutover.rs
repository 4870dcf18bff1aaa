//! The whole link on real servers under a live writer: seed, stream, fence, unfence, fence, drain,
//! finalize, switch. Every check is made by querying the servers directly, not by trusting the engine.
mod support;

use milink_core::migration::LinkPhase;
use milink_core::ports::{Engine, LinkPlan};
use milink_core::Severity;
use milink_postgres::PostgresEngine;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio_postgres::error::SqlState;

const APP_PASSWORD: &str = "app-pw-1";

/// Inserts orders as `role` until stopped, reconnecting after every error (as an application would).
struct Writer {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(database: String, role: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let (stop2, committed2) = (stop.clone(), committed.clone());
        let task = tokio::spawn(async move {
            while !stop2.load(Ordering::Relaxed) {
                let Ok(client) = connect_as(&servers().source_url, &database, Some((&role, APP_PASSWORD))).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                while !stop2.load(Ordering::Relaxed) {
                    let insert = "INSERT INTO orders (customer_id, status, ordered_at, invoice_no)
                                  VALUES (1 + (random() * 499)::int, 'placed', now(), nextval('invoice_number_seq'))";
                    if client.execute(insert, &[]).await.is_err() {
                        break;
                    }
                    committed2.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self { stop, committed, task }
    }

    fn committed(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
    }
}

async fn insert_as(database: &str, role: &str) -> Result<u64, tokio_postgres::Error> {
    let client = connect_as(&servers().source_url, database, Some((role, APP_PASSWORD))).await?;
    client.execute("INSERT INTO products (sku, name, category, price) VALUES (gen_random_uuid()::text, 'x', 'y', 1)", &[]).await
}

fn assert_read_only(result: Result<u64, tokio_postgres::Error>, who: &str) {
    let error = result.expect_err(&format!("{who} could write through the fence"));
    assert_eq!(error.code(), Some(&SqlState::READ_ONLY_SQL_TRANSACTION), "{who}: {error:?}");
}

async fn setup(database: &str, app: &str, boss: &str) {
    let big = "CREATE TABLE events_archive (id bigint PRIMARY KEY, payload text NOT NULL);
               INSERT INTO events_archive SELECT n, repeat(md5(n::text), 4) FROM generate_series(1, 200000) AS n;";
    create_source_database(database, &format!("{}\n{big}", sample("toystore.sql"))).await;
    let admin = connect(&servers().source_url, database).await;
    // `boss` has its own default_transaction_read_only = off, which beats a database setting: the fence must
    // still stop it (pg_easy_replicate #164 fenced one role only).
    admin
        .batch_execute(&format!(
            "CREATE ROLE {app} LOGIN PASSWORD '{APP_PASSWORD}';
             CREATE ROLE {boss} LOGIN PASSWORD '{APP_PASSWORD}';
             ALTER ROLE {boss} SET default_transaction_read_only = off;
             GRANT ALL ON ALL TABLES IN SCHEMA public TO {app}, {boss};
             GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {app}, {boss};"
        ))
        .await
        .unwrap();
}

async fn sequence_values(url: &str, database: &str) -> Vec<(String, i64)> {
    let client = connect(url, database).await;
    let rows = client
        .query(
            "SELECT sequencename::text, coalesce(last_value, 0) FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

async fn fenced_settings(database: &str) -> i64 {
    let admin = connect(&servers().source_url, "postgres").await;
    admin
        .query_one(
            "SELECT count(*) FROM pg_db_role_setting s, unnest(s.setconfig) AS item
             WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = $1)
               AND (item LIKE 'default_transaction_read_only=%' OR item LIKE 'milink.%')",
            &[&database],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_live_database_moves_with_every_row_and_sequence() {
    let database = unique("toystore_cutover_");
    let (app, boss) = (unique("app_"), unique("boss_"));
    setup(&database, &app, &boss).await;
    let engine = PostgresEngine::new();
    let plan: LinkPlan = plan(&database);

    let findings = engine.validate(&plan).await.expect("validate");
    assert!(findings.iter().all(|f| f.severity != Severity::Blocker), "{findings:?}");
    engine.create_link(&plan).await.expect("create_link");
    let writer = Writer::start(database.clone(), app.clone());

    let seen = observe_until_ready(&engine, &plan, Duration::from_secs(120)).await;
    let seeding: Vec<_> = seen.iter().filter(|o| o.phase == LinkPhase::Seeding).collect();
    assert!(!seeding.is_empty(), "the 30 MB table takes a while to copy: {seen:?}");
    assert!(seeding.iter().all(|o| (0.0..100.0).contains(&o.progress_percent)));
    assert!(seen.iter().all(|o| o.problem.is_none()), "{seen:?}");
    let last = seen.last().unwrap();
    assert_eq!(last.phase, LinkPhase::Streaming);
    assert!(last.progress_marker.is_some());
    assert!(writer.committed() > 0, "the writer was writing while the link caught up");

    // Fence: the writer, a fresh session and a role with its own read-only override all stop writing.
    engine.fence(&plan).await.expect("fence");
    let at_fence = writer.committed();
    assert_read_only(insert_as(&database, &app).await, "a fresh session");
    assert_read_only(insert_as(&database, &boss).await, "a role with its own override");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(writer.committed(), at_fence, "the writer committed after the fence");
    engine.fence(&plan).await.expect("fencing twice is harmless");

    // Unfence restores exactly what was there, and writes come back.
    engine.unfence(&plan).await.expect("unfence");
    assert_eq!(fenced_settings(&database).await, 0, "no setting of the fence is left behind");
    insert_as(&database, &app).await.expect("app writes again");
    insert_as(&database, &boss).await.expect("boss writes again");
    engine.unfence(&plan).await.expect("unfencing twice is harmless");
    let resumed = writer.committed();
    for _ in 0..100 {
        if writer.committed() > resumed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(writer.committed() > resumed, "the writer resumed");

    // The cutover.
    let fence_position = engine.fence(&plan).await.expect("fence");
    writer.stop().await;
    drain(&engine, &plan, fence_position).await;
    let verification = engine.finalize(&plan).await.expect("finalize");
    assert_eq!(verification.tables.len(), 5, "{verification:?}");
    assert!(verification.mismatches().is_empty(), "{verification:?}");
    let orders = verification.tables.iter().find(|t| t.table == "public.orders").unwrap();
    assert!(orders.source_rows > 1500, "the writer's rows are there: {orders:?}");
    assert_eq!(verification.sequences_set, 4);
    let (source_seqs, target_seqs) =
        (sequence_values(&servers().source_url, &database).await, sequence_values(&servers().target_url, &database).await);
    assert_eq!(source_seqs.len(), 4);
    for ((name, source_value), (_, target_value)) in source_seqs.iter().zip(&target_seqs) {
        assert!(target_value >= source_value, "{name}: target {target_value} < source {source_value}");
    }

    engine.switch(&plan, false).await.expect("switch");
    engine.switch(&plan, false).await.expect("switching twice is harmless");
    let target = connect(&servers().target_url, &database).await;
    let subscriptions: i64 = target
        .query_one("SELECT count(*) FROM pg_subscription WHERE subname = $1", &[&plan.link_name()])
        .await
        .unwrap()
        .get(0);
    assert_eq!(subscriptions, 0);
    let source_admin = connect(&servers().source_url, "postgres").await;
    let slots: i64 = source_admin
        .query_one("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE $1", &[&format!("{}%", plan.link_name())])
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0);
    // The target takes writes, and its keys continue after the source's (no duplicate key).
    target
        .execute(
            "INSERT INTO orders (customer_id, status, ordered_at, invoice_no)
             VALUES (1, 'placed', now(), nextval('invoice_number_seq'))",
            &[],
        )
        .await
        .expect("the target takes new orders after cutover");
    assert_read_only(insert_as(&database, &app).await, "the source after cutover");

    cleanup(&engine, &plan).await;
    for role in [&app, &boss] {
        source_admin.batch_execute(&format!("DROP ROLE IF EXISTS {role}")).await.unwrap();
    }
}
