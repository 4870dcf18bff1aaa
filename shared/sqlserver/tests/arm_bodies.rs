//! Every ARM request body milink builds, validated against Microsoft's OpenAPI definitions (api-version
//! 2025-01-01, the version milink sends), and every response milink reads, parsed from Microsoft's examples.
mod support;

use milink_sqlserver::arm::models::*;
use serde_json::json;
use support::spec::{read_json, Mode, Spec};

fn dag_spec() -> Spec {
    Spec::load("DistributedAvailabilityGroups.2025-01-01.definitions-excerpt.json")
}

fn link_spec(database: &str, manual: bool) -> LinkResourceSpec {
    LinkResourceSpec {
        partner_availability_group: "milink_0f1e2d3c4b5a_ag".into(),
        partner_endpoint: "TCP://10.0.0.4:5022".into(),
        instance_availability_group: "milink_0f1e2d3c4b5a_mi".into(),
        database: database.into(),
        failover_manual: manual,
    }
}

#[test]
fn every_request_body_matches_the_2025_01_01_definitions() {
    let dags = dag_spec();
    for manual in [false, true] {
        for database in ["ToyStore", "Toy]Store", "O'Brien's \"db\"", "Tøy商店", &"x".repeat(128)] {
            let body = create_link_body(&link_spec(database, manual));
            dags.validate("DistributedAvailabilityGroup", &body, Mode::Request).unwrap_or_else(|e| panic!("{body}: {e:?}"));
            assert_eq!(body["properties"]["databases"][0]["databaseName"], database, "names travel in JSON unchanged");
        }
    }
    for synchronous in [false, true] {
        dags.validate("DistributedAvailabilityGroup", &replication_mode_body(synchronous), Mode::Request).unwrap();
    }
    for planned in [false, true] {
        dags.validate("DistributedAvailabilityGroupsFailoverRequest", &failover_body(planned), Mode::Request).unwrap();
    }
    for (primary, forced) in [(true, true), (true, false), (false, true), (false, false)] {
        dags.validate("DistributedAvailabilityGroupSetRole", &set_role_body(primary, forced), Mode::Request).unwrap();
    }
    Spec::load("ServerTrustCertificates.2025-01-01.definitions-excerpt.json")
        .validate("ServerTrustCertificate", &server_trust_certificate_body("308203AE30820296A0030201020210"), Mode::Request)
        .unwrap();
}

#[test]
fn the_create_body_says_what_the_link_needs() {
    let body = create_link_body(&link_spec("ToyStore", false));
    assert_eq!(
        body,
        json!({ "properties": {
            "partnerAvailabilityGroupName": "milink_0f1e2d3c4b5a_ag",
            "partnerEndpoint": "TCP://10.0.0.4:5022",
            "instanceAvailabilityGroupName": "milink_0f1e2d3c4b5a_mi",
            "instanceLinkRole": "Secondary",
            "failoverMode": "None",
            "seedingMode": "Automatic",
            "databases": [ { "databaseName": "ToyStore" } ]
        }})
    );
    assert_eq!(create_link_body(&link_spec("ToyStore", true))["properties"]["failoverMode"], "Manual");
}

#[test]
fn the_validator_refuses_what_azure_would_refuse() {
    let dags = dag_spec();
    let bad = [
        json!({ "properties": { "failoverMode": "Automatic" } }),
        json!({ "properties": { "PartnerEndpoint": "TCP://x:5022" } }),
        json!({ "properties": { "partnerLinkRole": "Primary" } }),
        json!({ "properties": { "databases": [ { "databaseName": "x", "replicaState": "Seeding" } ] } }),
    ];
    for body in bad {
        assert!(dags.validate("DistributedAvailabilityGroup", &body, Mode::Request).is_err(), "{body}");
    }
    assert!(dags.validate("DistributedAvailabilityGroupsFailoverRequest", &json!({}), Mode::Request).is_err());
    assert!(dags.validate("DistributedAvailabilityGroupSetRole", &json!({ "instanceRole": "Primary" }), Mode::Request).is_err());
}

#[test]
fn microsofts_examples_pass_the_validator() {
    let preview = Spec::load("DistributedAvailabilityGroups.2025-08-01-preview.definitions-excerpt.json");
    for name in ["CreateMin", "CreateMax"] {
        let example = read_json(&format!("examples/2025-08-01-preview/DistributedAvailabilityGroups{name}.json"));
        preview.validate("DistributedAvailabilityGroup", &example["parameters"]["parameters"], Mode::Request).unwrap();
        preview.validate("DistributedAvailabilityGroup", &example["responses"]["200"]["body"], Mode::Response).unwrap();
    }
    for name in ["Get", "Failover", "SetRole"] {
        let example = read_json(&format!("examples/2025-08-01-preview/DistributedAvailabilityGroups{name}.json"));
        preview.validate("DistributedAvailabilityGroup", &example["responses"]["200"]["body"], Mode::Response).unwrap();
    }
}

#[test]
fn responses_are_read_from_microsofts_examples() {
    let get: DistributedAvailabilityGroup =
        serde_json::from_value(read_json("examples/2025-08-01-preview/DistributedAvailabilityGroupsGet.json")["responses"]["200"]["body"].clone()).unwrap();
    let database = &get.properties.databases[0];
    assert_eq!(database.replica_state.as_deref(), Some("Seeding"));
    assert_eq!(database.seeding_progress.as_deref().and_then(parse_seeding_progress), Some(80.0));
    assert_eq!(database.last_hardened_lsn.as_deref(), Some("71000009408100001"));
    assert_eq!(get.properties.instance_link_role.as_deref(), Some("Primary"));

    let endpoint: EndpointCertificate =
        serde_json::from_value(read_json("examples/2025-08-01-preview/EndpointCertificatesGet.json")["responses"]["200"]["body"].clone()).unwrap();
    assert_eq!(milink_sqlserver::tsql::normalize_hex_blob(endpoint.properties.public_blob.as_deref().unwrap()).as_deref(), Some("308203B23082021AA003020102021034C597BA"));

    let trust: ServerTrustCertificate =
        serde_json::from_value(read_json("examples/2025-08-01-preview/ServerTrustCertificatesGet.json")["responses"]["200"]["body"].clone()).unwrap();
    assert_eq!(trust.properties.thumbprint.as_deref(), Some("57CFA9CF16F2FB2775AF059A95C6D5B897DA2C05"));
}

#[test]
fn the_shipped_root_certificates_are_the_shared_ones() {
    let shared = std::fs::read_to_string(support::spec::specs_dir().join("azure-trusted-root-certs.txt")).unwrap();
    assert_eq!(milink_sqlserver::roots::ROOTS_FILE, shared);
}
