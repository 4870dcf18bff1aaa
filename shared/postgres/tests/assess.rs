//! Assessment of the Tailspin sample on a real server: ToyStore is ready, Customer360 is not, and says why.
mod support;

use milink_core::assessment::{Readiness, Severity};
use milink_core::ports::Engine;
use milink_postgres::PostgresEngine;
use support::*;

#[tokio::test]
async fn tailspin_toystore_is_ready_and_customer360_names_the_table_without_a_key() {
    let toystore = unique("ToyStore_");
    let customer360 = unique("Customer360_");
    create_source_database(&toystore, &sample("toystore.sql")).await;
    create_source_database(&customer360, &sample("customer360.sql")).await;
    let engine = PostgresEngine::new();

    let assessment = engine.assess(&source()).await.expect("assess");

    assert!(assessment.server_version.starts_with(char::is_numeric), "{}", assessment.server_version);
    assert!(
        assessment.instance_findings.iter().all(|f| f.severity != Severity::Blocker),
        "the dev source has wal_level=logical and a superuser: {:?}",
        assessment.instance_findings
    );
    let toy = assessment.databases.iter().find(|d| d.name == toystore).expect("ToyStore assessed");
    assert_eq!(toy.readiness, Readiness::Ready, "{:?}", toy.findings);
    assert!(toy.size_bytes.unwrap() > 0);
    assert!(toy.findings.iter().any(|f| f.rule == "sequences" && f.severity == Severity::Info));

    let c360 = assessment.databases.iter().find(|d| d.name == customer360).expect("Customer360 assessed");
    assert_eq!(c360.readiness, Readiness::NotReady);
    let blocker = c360.findings.iter().find(|f| f.severity == Severity::Blocker).expect("a blocker");
    assert_eq!(blocker.rule, "table_without_replica_identity");
    assert_eq!(blocker.objects, vec!["public.interaction_events".to_owned()]);
    assert!(blocker.remediation.contains("PRIMARY KEY"));
    for rule in ["large_objects", "unlogged_table", "materialized_view"] {
        let finding = c360.findings.iter().find(|f| f.rule == rule).unwrap_or_else(|| panic!("{rule}: {:?}", c360.findings));
        assert_eq!(finding.severity, Severity::Warning, "{rule}");
        assert!(!finding.objects.is_empty(), "{rule} names its objects");
    }

    let recommendation = assessment.recommendation.expect("a size recommendation");
    assert!(recommendation.vcores >= 2 && recommendation.storage_gib >= 32);
    assert_eq!(recommendation.monthly_cost_usd, None);
    assert!(!recommendation.reasons.is_empty());

    let admin = connect(&servers().source_url, "postgres").await;
    for db in [&toystore, &customer360] {
        admin.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", quote(db))).await.unwrap();
    }
}

#[tokio::test]
async fn the_connection_summary_names_the_applications_connected_and_leaves_milink_out() {
    let toystore = unique("ToyStore_");
    create_source_database(&toystore, &sample("toystore.sql")).await;
    let mut config: tokio_postgres::Config = servers().source_url.parse().unwrap();
    config.dbname(&toystore).password(&servers().password).application_name("ToyStore.Web");
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        clients.push(client);
    }
    // An idle session is still a session to stop at cutover.
    clients[0].simple_query("SELECT 1").await.unwrap();

    let summary = PostgresEngine::new().assess(&source()).await.expect("assess").connection_summary.expect("a summary");

    let web: Vec<_> = summary.groups.iter().filter(|g| g.database == toystore).collect();
    assert_eq!(web.len(), 1, "{:?}", summary.groups);
    assert_eq!((web[0].application.as_str(), web[0].host.as_str(), web[0].sessions), ("ToyStore.Web", "127.0.0.1", 3));
    assert!(!web[0].login.is_empty());
    assert_eq!(summary.sessions_on(&toystore), 3);
    assert!(summary.groups.iter().all(|g| g.application != "milink"), "milink's own sessions are left out: {:?}", summary.groups);
    assert!(summary.total_sessions >= 3);
    drop(clients);
    let admin = connect(&servers().source_url, "postgres").await;
    admin.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", quote(&toystore))).await.unwrap();
}

#[tokio::test]
async fn validate_refuses_customer360_and_accepts_toystore() {
    let toystore = unique("ToyStore_");
    let customer360 = unique("Customer360_");
    create_source_database(&toystore, &sample("toystore.sql")).await;
    create_source_database(&customer360, &sample("customer360.sql")).await;
    let engine = PostgresEngine::new();

    let ready = engine.validate(&plan(&toystore)).await.expect("validate ToyStore");
    assert!(ready.iter().all(|f| f.severity != Severity::Blocker), "{ready:?}");

    let not_ready = engine.validate(&plan(&customer360)).await.expect("validate Customer360");
    let blocker = not_ready.iter().find(|f| f.severity == Severity::Blocker).expect("a blocker");
    assert_eq!(blocker.objects, vec!["public.interaction_events".to_owned()]);

    // create_link refuses it too, without publishing anything.
    let plan = plan(&customer360);
    let error = engine.create_link(&plan).await.unwrap_err();
    assert_eq!(error.code, "table_without_replica_identity");
    assert!(error.message.contains("public.interaction_events"));

    let admin = connect(&servers().source_url, "postgres").await;
    for db in [&toystore, &customer360] {
        admin.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", quote(db))).await.unwrap();
    }
}

#[tokio::test]
async fn replica_identity_rules_follow_what_the_target_can_apply() {
    let database = unique("identity_rules_");
    let sql = "
        CREATE TABLE full_with_point (id int, spot point) ;
        ALTER TABLE full_with_point REPLICA IDENTITY FULL;
        CREATE TABLE full_ok (id int, tags text[], doc jsonb);
        ALTER TABLE full_ok REPLICA IDENTITY FULL;
        CREATE TABLE by_index (code text NOT NULL);
        CREATE UNIQUE INDEX by_index_code ON by_index (code);
        ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_code;
        CREATE TABLE nothing (id int PRIMARY KEY);
        ALTER TABLE nothing REPLICA IDENTITY NOTHING;
        CREATE TABLE measurements (id bigint, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
        CREATE TABLE measurements_2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
        CREATE EXTENSION postgres_fdw;
        CREATE SERVER elsewhere FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'localhost', dbname 'x');
        CREATE FOREIGN TABLE remote_things (id int) SERVER elsewhere;";
    create_source_database(&database, sql).await;
    let engine = PostgresEngine::new();

    let findings = engine.validate(&plan(&database)).await.unwrap();
    let rule = |name: &str| findings.iter().find(|f| f.rule == name).unwrap_or_else(|| panic!("{name}: {findings:?}"));
    assert_eq!(rule("replica_identity_full_unsupported_type").objects, vec!["public.full_with_point.spot (point)".to_owned()]);
    assert_eq!(rule("table_without_replica_identity").objects, vec!["public.nothing".to_owned()]);
    let full = rule("replica_identity_full");
    assert_eq!((full.severity, full.objects.len()), (Severity::Warning, 2), "{full:?}");
    assert_eq!(rule("foreign_table").objects, vec!["public.remote_things".to_owned()]);
    assert!(rule("extensions").objects[0].starts_with("postgres_fdw"));
    assert!(findings.iter().all(|f| f.rule != "extension_missing_on_target"), "contrib is on the target too");
    let flagged: Vec<&String> = findings.iter().flat_map(|f| &f.objects).collect();
    assert!(!flagged.iter().any(|o| o.contains("by_index") || o.contains("measurements")), "{flagged:?}");

    let admin = connect(&servers().source_url, "postgres").await;
    admin.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", quote(&database))).await.unwrap();
}
