//! A target that only accepts TLS (like a managed service): milink's connections, pg_dump/psql and the
//! link all work when the url says sslmode=require, and the refusal is clear when it says disable.
//!
//! The target here is the `replica` cluster of dev/pg.sh: wal_level=replica does not matter for a target,
//! and its pg_hba.conf lets role `milink_tls_only` in over TLS only.
mod support;

use milink_core::ports::Engine;
use milink_core::Severity;
use milink_postgres::PostgresEngine;
use std::time::Duration;
use support::*;

async fn tls_only_target(sslmode: &str) -> milink_core::config::Endpoint {
    let replica = replica_url();
    let admin = connect(&replica, "postgres").await;
    let password = servers().password.replace('\'', "''");
    let create = format!(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'milink_tls_only') THEN
             CREATE ROLE milink_tls_only SUPERUSER LOGIN PASSWORD '{password}';
           END IF;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
         END $$"
    );
    admin.batch_execute(&create).await.unwrap();
    let port = replica.rsplit(':').next().unwrap().split('/').next().unwrap().to_owned();
    let url = format!("postgresql://milink_tls_only@127.0.0.1:{port}/postgres?sslmode={sslmode}");
    endpoint("tls-tgt", &url, Some(&servers().password))
}

#[tokio::test]
async fn a_tls_only_target_works_with_sslmode_require_and_refuses_disable() {
    let database = unique("toystore_tls_");
    create_source_database(&database, &sample("toystore.sql")).await;
    let engine = PostgresEngine::new();

    let mut plan = plan(&database);
    plan.target = tls_only_target("disable").await;
    let findings = engine.validate(&plan).await.unwrap();
    let blocker = findings.iter().find(|f| f.severity == Severity::Blocker).expect("refused without TLS");
    assert_eq!(blocker.rule, "authentication_failed", "{findings:?}");
    assert!(blocker.message.contains("no encryption"), "{}", blocker.message);

    plan.target = tls_only_target("require").await;
    let findings = engine.validate(&plan).await.unwrap();
    assert!(findings.iter().all(|f| f.severity != Severity::Blocker), "{findings:?}");
    engine.create_link(&plan).await.expect("create_link over TLS (pg_dump and psql too)");
    observe_until_ready(&engine, &plan, Duration::from_secs(60)).await;
    let position = engine.fence(&plan).await.unwrap();
    drain(&engine, &plan, position).await;
    let verification = engine.finalize(&plan).await.unwrap();
    assert!(verification.mismatches().is_empty() && verification.tables.len() == 4, "{verification:?}");
    engine.switch(&plan, false).await.unwrap();
    cleanup(&engine, &plan).await;
}
