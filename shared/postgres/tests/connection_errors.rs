//! A wrong password, an unreachable port and a source without wal_level=logical each give one clear
//! finding or error with a remediation, and never the password.
mod support;

use milink_core::ports::{Engine, LinkPlan};
use milink_core::{ErrorKind, Finding, Severity};
use milink_postgres::PostgresEngine;
use support::*;

const WRONG_PASSWORD: &str = "not-the-password-'\\";

fn blockers(findings: &[Finding]) -> Vec<&Finding> {
    findings.iter().filter(|f| f.severity == Severity::Blocker).collect()
}

fn assert_clean(texts: &[&str]) {
    for text in texts {
        assert_no_secret(text);
        assert!(!text.contains(WRONG_PASSWORD), "the wrong password leaked into: {text}");
    }
}

#[tokio::test]
async fn a_wrong_password_names_the_connection_and_where_the_password_comes_from() {
    let engine = PostgresEngine::new();
    let mut plan: LinkPlan = plan("postgres");
    plan.source = endpoint("toystore-src", &servers().source_url, Some(WRONG_PASSWORD));

    let findings = engine.validate(&plan).await.expect("validation reports, it does not fail");
    let blockers = blockers(&findings);
    assert_eq!(blockers.len(), 1, "{findings:?}");
    let finding = blockers[0];
    assert_eq!(finding.rule, "authentication_failed");
    assert!(finding.message.contains("toystore-src"), "{}", finding.message);
    assert!(finding.remediation.contains("'toystore-src'") && finding.remediation.contains("password_env"));
    assert_clean(&[&finding.message, &finding.remediation]);

    let error = engine.assess(&plan.source).await.unwrap_err();
    assert_eq!((error.code.as_str(), error.kind), ("authentication_failed", ErrorKind::Definite));
    assert_clean(&[&error.message, &error.remediation]);
}

#[tokio::test]
async fn an_unreachable_port_names_host_and_port() {
    let engine = PostgresEngine::new();
    let mut plan = plan("postgres");
    plan.target = endpoint("toystore-tgt", "postgresql://milink@127.0.0.1:1/postgres", Some(&servers().password));

    let findings = engine.validate(&plan).await.expect("validation reports, it does not fail");
    let unreachable: Vec<_> = findings.iter().filter(|f| f.rule == "unreachable").collect();
    assert_eq!(unreachable.len(), 1, "{findings:?}");
    assert_eq!(unreachable[0].severity, Severity::Blocker);
    assert!(unreachable[0].message.contains("127.0.0.1:1"), "{}", unreachable[0].message);
    assert!(unreachable[0].remediation.contains("127.0.0.1:1"));
    assert_clean(&[&unreachable[0].message, &unreachable[0].remediation]);

    let error = engine.observe(&plan, chrono::Utc::now()).await.unwrap_err();
    assert_eq!((error.code.as_str(), error.kind), ("unreachable", ErrorKind::Transient), "a poll retries");
}

#[tokio::test]
async fn the_target_cannot_reach_the_source_through_the_replication_url() {
    let database = unique("toystore_path_");
    create_source_database(&database, &sample("toystore.sql")).await;
    let engine = PostgresEngine::new();
    let mut plan = plan(&database);
    // milink reaches the source, but the address the target is told to use leads nowhere.
    plan.source.replication_url = Some("postgresql://milink@127.0.0.1:2/postgres".into());

    let findings = engine.validate(&plan).await.unwrap();
    let blockers = blockers(&findings);
    assert_eq!(blockers.len(), 1, "{findings:?}");
    assert_eq!(blockers[0].rule, "unreachable");
    assert!(blockers[0].message.contains("the target connecting to the source"), "{}", blockers[0].message);
    assert!(blockers[0].message.contains("127.0.0.1:2"));
    assert_clean(&[&blockers[0].message, &blockers[0].remediation]);

    plan.source.replication_url = None;
    plan.source.password = Some(milink_core::config::Secret::new(WRONG_PASSWORD));
    let error = engine.create_link(&plan).await.unwrap_err();
    assert_eq!(error.code, "authentication_failed");
    assert_clean(&[&error.message, &error.remediation]);
    plan.source.password = Some(milink_core::config::Secret::new(&servers().password));
    cleanup(&engine, &plan).await;
}

#[tokio::test]
async fn a_source_with_wal_level_replica_says_exactly_how_to_fix_it() {
    let replica = replica_url();
    let database = unique("toystore_replica_");
    let admin = connect(&replica, "postgres").await;
    admin.batch_execute(&format!("CREATE DATABASE {}", quote(&database))).await.unwrap();
    let client = connect(&replica, &database).await;
    client.batch_execute(&sample("toystore.sql")).await.unwrap();
    let engine = PostgresEngine::new();
    // The native path, whose create_link makes the slot at once (the parallel path makes it in the seeder,
    // after validation has already blocked this source).
    let mut plan = native_plan(&database);
    plan.source = endpoint("replica-src", &replica, Some(&servers().password));

    let findings = engine.validate(&plan).await.unwrap();
    let blockers = blockers(&findings);
    assert_eq!(blockers.len(), 1, "{findings:?}");
    assert_eq!(blockers[0].rule, "wal_level_not_logical");
    assert!(blockers[0].remediation.contains("ALTER SYSTEM SET wal_level = logical"));
    assert!(blockers[0].remediation.contains("restart"));
    assert_clean(&[&blockers[0].message, &blockers[0].remediation]);

    let assessment = engine.assess(&plan.source).await.unwrap();
    assert!(assessment.instance_findings.iter().any(|f| f.rule == "wal_level_not_logical" && f.severity == Severity::Blocker));
    let db = assessment.databases.iter().find(|d| d.name == database).unwrap();
    assert_eq!(db.readiness, milink_core::Readiness::NotReady, "an instance blocker blocks every database");

    let error = engine.create_link(&plan).await.unwrap_err();
    assert_eq!(error.code, "wal_level_not_logical", "{error:?}");
    assert!(!error.is_transient());
    engine.drop_link(&plan, true).await.unwrap();
    admin.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", quote(&database))).await.unwrap();
}
