//! Database, schema, table and column names with quotes, spaces and non-ASCII go through the whole link.
mod support;

use milink_core::migration::LinkPhase;
use milink_core::ports::Engine;
use milink_postgres::PostgresEngine;
use std::time::Duration;
use support::*;

async fn round_trip(prefix: &str) {
    let database = unique(prefix);
    let schema = r#"Sch"e m'a"#;
    let table = "Tab\"le 商店";
    let sql = format!(
        "CREATE SCHEMA {s};
         CREATE TABLE {s}.{t} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \"Va'l ue\" text NOT NULL);
         INSERT INTO {s}.{t} (\"Va'l ue\") SELECT 'row ' || n FROM generate_series(1, 500) AS n;",
        s = quote(schema),
        t = quote(table)
    );
    create_source_database(&database, &sql).await;
    let engine = PostgresEngine::new();
    let plan = plan(&database);

    let findings = engine.validate(&plan).await.expect("validate");
    assert!(findings.iter().all(|f| f.severity != milink_core::Severity::Blocker), "{findings:?}");
    engine.create_link(&plan).await.expect("create_link");
    engine.create_link(&plan).await.expect("create_link again");
    let seen = observe_until_ready(&engine, &plan, Duration::from_secs(60)).await;
    assert_eq!(seen.last().unwrap().phase, LinkPhase::Streaming);

    let source = connect(&servers().source_url, &database).await;
    let insert = format!("INSERT INTO {}.{} (\"Va'l ue\") VALUES ('after seeding')", quote(schema), quote(table));
    source.batch_execute(&insert).await.unwrap();

    let position = engine.fence(&plan).await.expect("fence");
    drain(&engine, &plan, position).await;
    let verification = engine.finalize(&plan).await.expect("finalize");
    assert_eq!(verification.tables.len(), 1);
    assert_eq!(verification.tables[0].table, format!("{schema}.{table}"));
    assert_eq!((verification.tables[0].source_rows, verification.tables[0].target_rows), (501, 501));
    assert_eq!(verification.sequences_set, 1);
    engine.switch(&plan, false).await.expect("switch");

    let target = connect(&servers().target_url, &database).await;
    target.batch_execute(&insert).await.expect("the target takes writes with the next identity value");
    cleanup(&engine, &plan).await;
}

#[tokio::test]
async fn a_double_quote_in_the_database_name() {
    round_trip("Toy\"Store_").await;
}

#[tokio::test]
async fn a_space_in_the_database_name() {
    round_trip("Toy Store_").await;
}

#[tokio::test]
async fn a_single_quote_and_unicode_in_the_database_name() {
    round_trip("Tøy'商店_").await;
}
