//! The real ARM client (reqwest, LRO polling, error classification) against the contract server, which answers
//! with Microsoft's example bodies and the documented long-running-operation headers and error bodies.
mod support;

use milink_core::error::ErrorKind;
use milink_sqlserver::arm::models::LinkResourceSpec;
use milink_sqlserver::arm::ManagedInstanceApi;
use support::contract::{ContractServer, FQDN};
use support::instance_api;

fn spec(database: &str) -> LinkResourceSpec {
    LinkResourceSpec {
        partner_availability_group: "milink_0f1e2d3c4b5a_ag".into(),
        partner_endpoint: "TCP://10.0.0.4:5022".into(),
        instance_availability_group: "milink_0f1e2d3c4b5a_mi".into(),
        database: database.into(),
        failover_manual: true,
    }
}

#[tokio::test]
async fn create_follows_the_async_operation_then_reads_the_link() {
    let server = ContractServer::start().await;
    let api = instance_api(&server.base_url);
    assert!(api.link("milink_0f1e2d3c4b5a").await.unwrap().is_none(), "404 reads as absent");
    api.create_link("milink_0f1e2d3c4b5a", &spec("Toy]Store")).await.unwrap();
    let link = api.link("milink_0f1e2d3c4b5a").await.unwrap().expect("created");
    assert_eq!(link.properties.partner_availability_group_name.as_deref(), Some("milink_0f1e2d3c4b5a_ag"));
    assert_eq!(link.properties.databases[0].database_name.as_deref(), Some("Toy]Store"));
    assert_eq!(link.properties.databases[0].replica_state.as_deref(), Some("Seeding"));
    let state = server.state();
    assert!(state.invalid_bodies.is_empty(), "{:?}", state.invalid_bodies);
    assert!(state.requests.iter().all(|r| r.authorized && r.query == "api-version=2025-01-01"));
    let trail: Vec<String> = state.requests.iter().map(|r| format!("{} {}", r.method, r.path.rsplit('/').nth(1).unwrap_or(""))).collect();
    assert_eq!(
        trail,
        [
            "GET distributedAvailabilityGroups",
            "PUT distributedAvailabilityGroups",
            "GET distributedAvailabilityGroupsAzureAsyncOperation",
            "GET distributedAvailabilityGroupsAzureAsyncOperation",
            "GET distributedAvailabilityGroups",
            "GET distributedAvailabilityGroups",
        ],
        "PUT, poll Azure-AsyncOperation until Succeeded, GET the resource"
    );
}

#[tokio::test]
async fn an_existing_database_on_the_instance_is_a_clear_definite_error() {
    let server = ContractServer::start().await;
    server.state().databases.insert("ToyStore".into());
    let error = instance_api(&server.base_url).create_link("milink_x", &spec("ToyStore")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Definite);
    assert_eq!(error.code, "remote_database_exists");
    assert!(error.message.contains("409") && error.message.contains("The destination database name already exists on the destination server."), "{}", error.message);
    assert!(error.remediation.contains("delete it on the MI"), "{}", error.remediation);
}

#[tokio::test]
async fn a_failed_operation_reports_azures_error() {
    let server = ContractServer::start().await;
    server.state().fail_next_operation = Some(("UnableToResolveRemoteServer".into(), "The remote partner server name could not be resolved due to an invalid server name or DNS connectivity issues.".into()));
    let error = instance_api(&server.base_url).create_link("milink_x", &spec("ToyStore")).await.unwrap_err();
    assert_eq!(error.code, "partner_unresolvable");
    assert_eq!(error.kind, ErrorKind::Definite);
    assert!(error.message.contains("could not be resolved"));
}

#[tokio::test]
async fn planned_failover_while_secondary_is_refused_with_the_documented_error() {
    let server = ContractServer::start().await;
    let api = instance_api(&server.base_url);
    api.create_link("milink_x", &spec("ToyStore")).await.unwrap();
    let error = api.failover("milink_x", true).await.unwrap_err();
    assert_eq!(error.code, "failover_wrong_role");
    assert_eq!(error.kind, ErrorKind::Definite);
    assert!(error.message.contains("InvalidDistributedAvailabilityGroupFailoverInstanceRole"));
    assert!(error.message.contains("Planned failover can be executed on a link in the primary role only"));
    assert!(error.remediation.contains("primary"));
}

#[tokio::test]
async fn set_role_then_failover_follow_their_location_headers() {
    let server = ContractServer::start().await;
    let api = instance_api(&server.base_url);
    api.create_link("milink_x", &spec("ToyStore")).await.unwrap();
    api.set_role("milink_x", true, false).await.unwrap();
    assert_eq!(api.link("milink_x").await.unwrap().unwrap().properties.instance_link_role.as_deref(), Some("Primary"));
    api.failover("milink_x", true).await.unwrap();
    api.set_replication_mode("milink_x", true).await.unwrap();
    assert_eq!(api.link("milink_x").await.unwrap().unwrap().properties.replication_mode.as_deref(), Some("Sync"));
    let state = server.state();
    assert!(state.invalid_bodies.is_empty(), "{:?}", state.invalid_bodies);
    let polls = state.requests.iter().filter(|r| r.path.contains("OperationResults")).count();
    assert!(polls >= 6, "each of setRole, failover and PATCH polled its Location until done ({polls})");
    let bodies: Vec<_> = state.requests.iter().filter(|r| r.method == "POST").map(|r| r.body.clone().unwrap()).collect();
    assert_eq!(bodies[0], serde_json::json!({ "instanceRole": "Primary", "roleChangeType": "Planned" }));
    assert_eq!(bodies[1], serde_json::json!({ "failoverType": "Planned" }));
}

#[tokio::test]
async fn delete_polls_until_gone_and_repeats_harmlessly() {
    let server = ContractServer::start().await;
    let api = instance_api(&server.base_url);
    api.create_link("milink_x", &spec("ToyStore")).await.unwrap();
    assert_eq!(api.links().await.unwrap().len(), 1);
    api.delete_link("milink_x").await.unwrap();
    assert!(api.link("milink_x").await.unwrap().is_none());
    api.delete_link("milink_x").await.unwrap();
    assert!(api.links().await.unwrap().is_empty());
}

#[tokio::test]
async fn certificates_and_the_instance_are_read_and_written() {
    let server = ContractServer::start().await;
    let api = instance_api(&server.base_url);
    let instance = api.instance().await.unwrap();
    assert_eq!(instance.properties.fully_qualified_domain_name.as_deref(), Some(FQDN));
    assert_eq!(instance.properties.database_format.as_deref(), Some("SQLServer2022"));
    let endpoint = api.endpoint_certificate().await.unwrap();
    assert_eq!(endpoint.properties.public_blob.as_deref(), Some("0x308203B23082021AA003020102021034C597BA"));
    assert!(api.server_trust_certificate("SQL01_milink_endpoint_cert").await.unwrap().is_none());
    api.put_server_trust_certificate("SQL01_milink_endpoint_cert", "3082abcd").await.unwrap();
    let sent = server.state().requests.iter().rev().find(|r| r.method == "PUT").and_then(|r| r.body.clone()).unwrap();
    assert_eq!(sent["properties"]["publicBlob"], "0x3082abcd", "sent as 0x + hex, as Az.Sql sends it");
    let trust = api.server_trust_certificate("SQL01_milink_endpoint_cert").await.unwrap().unwrap();
    assert_eq!(trust.properties.public_blob.as_deref(), Some("3082ABCD"));
    api.delete_server_trust_certificate("SQL01_milink_endpoint_cert").await.unwrap();
    assert!(server.state().trust_certificates.is_empty());
    assert!(server.state().invalid_bodies.is_empty());
}

#[tokio::test]
async fn database_names_are_percent_encoded_in_paths() {
    let server = ContractServer::start().await;
    server.state().databases.insert("Toy]Store ø".into());
    let api = instance_api(&server.base_url);
    assert!(api.database_exists("Toy]Store ø").await.unwrap());
    api.delete_database("Toy]Store ø").await.unwrap();
    assert!(!api.database_exists("Toy]Store ø").await.unwrap());
    assert!(server.state().requests.iter().any(|r| r.path.ends_with("/databases/Toy%5DStore%20%C3%B8")));
}

#[tokio::test]
async fn a_wrong_token_is_a_definite_authentication_error() {
    let server = ContractServer::start().await;
    let client = milink_sqlserver::arm::client::ArmClient::new(
        reqwest::Client::new(),
        &server.base_url,
        std::sync::Arc::new(milink_sqlserver::arm::auth::StaticToken(milink_core::config::Secret::new("wrong-token"))),
    );
    let api = milink_sqlserver::arm::ManagedInstanceArm::new(client, milink_sqlserver::arm::InstanceId::parse(&support::contract::instance_id()).unwrap());
    let error = api.instance().await.unwrap_err();
    assert_eq!(error.code, "arm_authentication_failed");
    assert_eq!(error.kind, ErrorKind::Definite);
    assert!(!error.message.contains("wrong-token"), "the token never reaches a message");
}

#[tokio::test]
async fn a_polling_url_off_the_configured_endpoint_is_refused() {
    let server = ContractServer::start().await;
    let client = support::arm_client(&server.base_url);
    let error = client.send(reqwest::Method::GET, "https://attacker.example/steal", None).await.unwrap_err();
    assert_eq!(error.code, "arm_foreign_url");
    assert!(server.state().requests.is_empty());
}

#[tokio::test]
async fn lists_follow_next_link_to_the_last_page() {
    let server = ContractServer::start().await;
    let api = instance_api(&server.base_url);
    for i in 0..5 {
        api.create_link(&format!("milink_{i}"), &spec(&format!("db{i}"))).await.unwrap();
    }
    assert_eq!(api.links().await.unwrap().len(), 5, "three pages of two");
    let pages = server.state().requests.iter().filter(|r| r.method == "GET" && r.path.ends_with("/distributedAvailabilityGroups")).count();
    assert_eq!(pages, 3);
}
