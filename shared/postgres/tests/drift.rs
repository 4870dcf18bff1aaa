//! Schema drift while the link syncs: DDL on the source after the link is carried to the target when it
//! can be reproduced exactly, and reported as blocking with what to do when it cannot.
mod support;

use milink_core::migration::{Observation, SchemaChange};
use milink_core::ports::{Engine, LinkPlan};
use milink_postgres::PostgresEngine;
use std::time::{Duration, Instant};
use support::*;

const BASE: &str = "CREATE TABLE base (id int PRIMARY KEY, v text NOT NULL);
                    INSERT INTO base SELECT g, 'row ' || g FROM generate_series(1, 20) g;";

/// A source database with `sql`, linked and streaming.
async fn linked(prefix: &str, sql: &str) -> (PostgresEngine, LinkPlan) {
    let database = unique(prefix);
    create_source_database(&database, sql).await;
    let engine = PostgresEngine::new();
    let plan = plan(&database);
    engine.create_link(&plan).await.expect("create_link");
    observe_until_ready(&engine, &plan, Duration::from_secs(60)).await;
    (engine, plan)
}

/// Observes until `check` holds, or fails after `seconds`.
async fn observe_until(engine: &PostgresEngine, plan: &LinkPlan, seconds: u64, check: impl Fn(&Observation) -> bool) -> Observation {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let observation = engine.observe(plan, chrono::Utc::now()).await.expect("observe");
        if check(&observation) {
            return observation;
        }
        assert!(Instant::now() < deadline, "never saw it; last: {observation:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn change<'a>(observation: &'a Observation, object: &str) -> Option<&'a SchemaChange> {
    observation.drift.iter().find(|c| c.object == object)
}

/// Every row of `table` as text, in order, on one side.
async fn rows(url: &str, database: &str, table: &str) -> Vec<String> {
    let client = connect(url, database).await;
    let sql = format!("SELECT t::text FROM {table} t ORDER BY 1");
    client.query(&sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).iter().map(|r| r.get(0)).collect()
}

/// Waits until `table` holds the same rows on both sides.
async fn until_same_rows(plan: &LinkPlan, table: &str) -> Vec<String> {
    let database = plan.database.as_str();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let source = rows(&servers().source_url, database, table).await;
        let target = rows(&servers().target_url, database, table).await;
        if source == target {
            return target;
        }
        assert!(Instant::now() < deadline, "{table} differs:\nsource {source:?}\ntarget {target:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn new_tables_with_hostile_names_are_created_linked_and_copied() {
    let (engine, plan) = linked("drift_Toy\"Store'商店_", BASE).await;
    let source = connect(&servers().source_url, plan.database.as_str()).await;
    source
        .batch_execute(
            "CREATE TABLE \"Toy\"\"Store\" (id int PRIMARY KEY, name text DEFAULT 'x');
             INSERT INTO \"Toy\"\"Store\" SELECT g, 'toy ' || g FROM generate_series(1, 5) g;
             CREATE SCHEMA \"Nÿ schema\";
             CREATE TABLE \"Nÿ schema\".\"Tøy'商店\" (id bigserial PRIMARY KEY, note text);
             INSERT INTO \"Nÿ schema\".\"Tøy'商店\" (note) VALUES ('før'), ('after ''quote''');
             CREATE SEQUENCE \"Nÿ schema\".\"seq\"\"1'\" INCREMENT BY 5 START 1000;",
        )
        .await
        .unwrap();
    let carried = |o: &Observation| {
        ["public.Toy\"Store", "Nÿ schema.Tøy'商店", "Nÿ schema.seq\"1'"].iter().all(|t| change(o, t).is_some_and(|c| c.carried))
    };
    let observation = observe_until(&engine, &plan, 30, carried).await;
    assert_eq!(observation.blocking_drift().count(), 0, "{:#?}", observation.drift);

    // Rows written after the carry arrive by replication, those before by the subscription's copy.
    source
        .batch_execute(
            "INSERT INTO \"Toy\"\"Store\" VALUES (6, 'late'); UPDATE \"Toy\"\"Store\" SET name = 'changed' WHERE id = 1;
             INSERT INTO \"Nÿ schema\".\"Tøy'商店\" (note) VALUES ('late');",
        )
        .await
        .unwrap();
    observe_until_ready(&engine, &plan, Duration::from_secs(60)).await;
    assert_eq!(until_same_rows(&plan, "\"Toy\"\"Store\"").await.len(), 6);
    assert_eq!(until_same_rows(&plan, "\"Nÿ schema\".\"Tøy'商店\"").await.len(), 3);
    let target = connect(&servers().target_url, plan.database.as_str()).await;
    let keys: i64 = target
        .query_one("SELECT count(*) FROM pg_index WHERE indisprimary AND indrelid = '\"Toy\"\"Store\"'::regclass", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, 1, "the new table's primary key came with it");
    let increment: i64 = target
        .query_one("SELECT increment_by FROM pg_sequences WHERE schemaname = 'Nÿ schema' AND sequencename = 'seq\"1'''", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(increment, 5, "the new sequence has the source's parameters");
    let set = engine.finalize(&plan).await.expect("finalize sets every sequence, the new ones included").sequences_set;
    assert_eq!(set, 2, "the new table's own sequence and the new free-standing one");
    cleanup(&engine, &plan).await;
}

#[tokio::test]
async fn new_columns_get_the_sources_values_for_old_rows() {
    let (engine, plan) = linked("drift_column_", BASE).await;
    let source = connect(&servers().source_url, plan.database.as_str()).await;
    source
        .batch_execute(
            "ALTER TABLE base ADD COLUMN note text NOT NULL DEFAULT 'it''s new';
             ALTER TABLE base ADD COLUMN added_at timestamptz DEFAULT now();
             ALTER TABLE base ADD COLUMN spare int;",
        )
        .await
        .unwrap();
    let done = |o: &Observation| ["note", "added_at", "spare"].iter().all(|c| change(o, &format!("public.base.{c}")).is_some_and(|c| c.carried));
    let observation = observe_until(&engine, &plan, 30, done).await;
    assert_eq!(observation.blocking_drift().count(), 0, "{:#?}", observation.drift);
    // No write on the source since: the target's old rows read exactly what the source's read, now() included.
    let target_rows = until_same_rows(&plan, "base").await;
    assert!(target_rows[0].contains("it's new"), "{target_rows:?}");
    cleanup(&engine, &plan).await;
}

#[tokio::test]
async fn a_volatile_default_a_type_change_and_a_table_without_key_block() {
    let (engine, plan) = linked("drift_blocked_", &format!("{BASE} CREATE TABLE other (id int PRIMARY KEY);")).await;
    let source = connect(&servers().source_url, plan.database.as_str()).await;
    source
        .batch_execute(
            "ALTER TABLE base ALTER COLUMN v TYPE varchar(40);
             ALTER TABLE other ADD COLUMN r float8 DEFAULT random();
             CREATE TABLE keyless (line text);",
        )
        .await
        .unwrap();
    let seen = |o: &Observation| ["public.base.v", "public.other.r", "public.keyless"].iter().all(|t| change(o, t).is_some());
    let observation = observe_until(&engine, &plan, 30, seen).await;
    let blocked = |object: &str| change(&observation, object).filter(|c| !c.carried).unwrap_or_else(|| panic!("{object} not blocking"));
    assert!(blocked("public.base.v").remediation.contains("ALTER COLUMN \"v\" TYPE character varying(40)"), "{:#?}", observation.drift);
    assert!(blocked("public.other.r").remediation.contains("random()"));
    assert!(blocked("public.keyless").remediation.contains("PRIMARY KEY"));
    assert!(observation.problem.is_none() || observation.problem.as_ref().is_some_and(|p| p.reason.contains("schema")));

    // Fixed on the target (and the key added on the source), the type change and the new table stop blocking.
    let target = connect(&servers().target_url, plan.database.as_str()).await;
    target.batch_execute("ALTER TABLE base ALTER COLUMN v TYPE varchar(40)").await.unwrap();
    source.batch_execute("ALTER TABLE keyless ADD COLUMN id serial PRIMARY KEY").await.unwrap();
    let observation = observe_until(&engine, &plan, 30, |o| change(o, "public.keyless").is_some_and(|c| c.carried)).await;
    assert!(change(&observation, "public.base.v").is_none(), "{:#?}", observation.drift);
    cleanup(&engine, &plan).await;
}

#[tokio::test]
async fn a_dropped_table_blocks_until_dropped_on_the_target() {
    let (engine, plan) = linked("drift_dropped_", &format!("{BASE} CREATE TABLE doomed (id int PRIMARY KEY);")).await;
    let source = connect(&servers().source_url, plan.database.as_str()).await;
    source.batch_execute("DROP TABLE doomed").await.unwrap();
    let observation = observe_until(&engine, &plan, 30, |o| change(o, "public.doomed").is_some()).await;
    let dropped = change(&observation, "public.doomed").unwrap();
    assert!(!dropped.carried && dropped.remediation.contains("DROP TABLE \"public\".\"doomed\""), "{dropped:?}");
    let target = connect(&servers().target_url, plan.database.as_str()).await;
    target.batch_execute("DROP TABLE doomed").await.unwrap();
    observe_until(&engine, &plan, 30, |o| o.blocking_drift().count() == 0).await;
    cleanup(&engine, &plan).await;
}

/// Everything a real schema has, linked: no drift may be reported where nothing changed (a false
/// "blocked" would stop every cutover).
const RICH: &str = "CREATE TYPE mood AS ENUM ('ok', 'sad');
    CREATE TABLE events (id int, at date NOT NULL, m mood DEFAULT 'ok', PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
    CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
    CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY);
    CREATE TABLE shaped (id int PRIMARY KEY, name text COLLATE \"C\", up text GENERATED ALWAYS AS (upper(name)) STORED,
                         n numeric(10,2) DEFAULT -1.5, tags text[] DEFAULT '{a,\"b c\"}');
    CREATE VIEW shaped_names AS SELECT name FROM shaped;
    CREATE MATERIALIZED VIEW shaped_count AS SELECT count(*) FROM shaped;
    INSERT INTO events VALUES (1, '2025-03-01');";

#[tokio::test]
async fn an_unchanged_schema_reports_no_drift_and_a_new_partition_is_carried() {
    let (engine, plan) = linked("drift_none_", &format!("{}\n{RICH}", sample("toystore.sql"))).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(7) {
        let observation = engine.observe(&plan, chrono::Utc::now()).await.unwrap();
        assert!(observation.drift.is_empty(), "{:#?}", observation.drift);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let source = connect(&servers().source_url, plan.database.as_str()).await;
    source
        .batch_execute(
            "CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
             INSERT INTO events VALUES (2, '2026-03-01'), (3, '2025-04-01');",
        )
        .await
        .unwrap();
    let observation = observe_until(&engine, &plan, 30, |o| change(o, "public.events_2026").is_some_and(|c| c.carried)).await;
    assert_eq!(observation.blocking_drift().count(), 0, "{:#?}", observation.drift);
    source.batch_execute("INSERT INTO events VALUES (4, '2026-05-01')").await.unwrap();
    observe_until_ready(&engine, &plan, Duration::from_secs(60)).await;
    assert_eq!(until_same_rows(&plan, "events").await.len(), 4);
    cleanup(&engine, &plan).await;
}

#[tokio::test]
async fn apply_errors_from_a_column_milink_cannot_carry_name_the_change_and_its_remedy() {
    let (engine, plan) = linked("drift_apply_", BASE).await;
    // A baseline of the error counters, before anything fails.
    observe_until(&engine, &plan, 10, |o| o.problem.is_none()).await;
    let source = connect(&servers().source_url, plan.database.as_str()).await;
    source
        .batch_execute("ALTER TABLE base ADD COLUMN r float8 DEFAULT random(); INSERT INTO base (id, v) VALUES (100, 'new')")
        .await
        .unwrap();
    // The apply worker fails on "logical replication target relation ... is missing replicated column";
    // within a drift check's interval the failure is worded with the change that causes it.
    let worded = |o: &Observation| o.problem.as_ref().is_some_and(|p| p.reason.contains("schema changed"));
    let observation = observe_until(&engine, &plan, 60, worded).await;
    let problem = observation.problem.unwrap();
    assert!(problem.reason.contains("schema changed on the source: public.base.r"), "{problem:?}");
    assert!(problem.remediation.contains("ADD COLUMN \"r\""), "{problem:?}");

    // Added on the target by hand, the link resumes and the row arrives.
    let target = connect(&servers().target_url, plan.database.as_str()).await;
    target.batch_execute("ALTER TABLE base ADD COLUMN r float8 DEFAULT random()").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while target.query_opt("SELECT 1 FROM base WHERE id = 100", &[]).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the row never arrived");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    cleanup(&engine, &plan).await;
}

#[tokio::test]
async fn a_renamed_table_blocks_until_renamed_on_the_target() {
    let (engine, plan) = linked("drift_renamed_", BASE).await;
    let source = connect(&servers().source_url, plan.database.as_str()).await;
    source.batch_execute("ALTER TABLE base RENAME TO \"Básë\"; INSERT INTO \"Básë\" VALUES (21, 'after the rename')").await.unwrap();
    let observation = observe_until(&engine, &plan, 30, |o| change(o, "public.Básë").is_some()).await;
    let renamed = change(&observation, "public.Básë").unwrap();
    assert!(!renamed.carried && renamed.change.contains("from public.base"), "{renamed:?}");
    assert!(renamed.remediation.contains("ALTER TABLE \"public\".\"base\" RENAME TO \"Básë\""), "{renamed:?}");

    let target = connect(&servers().target_url, plan.database.as_str()).await;
    target.batch_execute("ALTER TABLE base RENAME TO \"Básë\"").await.unwrap();
    observe_until(&engine, &plan, 30, |o| o.drift.is_empty()).await;
    assert_eq!(until_same_rows(&plan, "\"Básë\"").await.len(), 21);
    cleanup(&engine, &plan).await;
}
