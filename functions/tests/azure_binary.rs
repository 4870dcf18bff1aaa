//! The real binary as the Functions host starts it: `milink functions` in the app root, with the port in
//! FUNCTIONS_CUSTOMHANDLER_PORT and the app settings in its environment. It must answer the readiness
//! probe, merge connections from milink.toml and the Connections table (passwords by app-setting name),
//! serve HTTP and timer invocations, and stop cleanly on SIGTERM.
mod azure_support;

use azure_support::{azurite_endpoint, bus, HostDouble};
use milink_azure::auth::StorageAuth;
use milink_azure::store::ConnectionRecord;
use milink_azure::{TableStore, TableStoreConfig};
use milink_core::config::Secret;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;

const AZURITE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread")]
async fn milink_functions_serves_the_host_with_connections_from_file_and_table() {
    let prefix: String = format!("bin{}", uuid::Uuid::new_v4().simple()).chars().take(20).collect();
    let store = TableStore::connect(
        TableStoreConfig {
            endpoint: azurite_endpoint(),
            account: "devstoreaccount1".into(),
            auth: StorageAuth::SharedKey { account: "devstoreaccount1".into(), key: Secret::new(AZURITE_KEY) },
            table_prefix: prefix.clone(),
        },
        reqwest::Client::new(),
    )
    .await
    .unwrap();
    store
        .put_connection(&ConnectionRecord {
            name: "pg-from-table".into(),
            engine: "postgres".into(),
            url: "postgresql://milink@127.0.0.1:1/postgres".into(),
            replication_url: None,
            password_setting: Some("PG_FROM_TABLE_PASSWORD".into()),
            options: Default::default(),
        })
        .await
        .unwrap();
    let app_root = tempfile::tempdir().unwrap();
    std::fs::write(
        app_root.path().join("milink.toml"),
        "[connections.pg-from-file]\nengine = \"postgres\"\nurl = \"postgresql://milink@127.0.0.1:1/postgres\"\n",
    )
    .unwrap();
    let bus = bus::BusDouble::default();
    let namespace = bus.serve().await;
    let port = free_port();
    let mut child = Command::new(milink_e2e::milink::binary())
        .arg("functions")
        .current_dir(app_root.path())
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("FUNCTIONS_APP_ROOT_PATH", app_root.path())
        .env("MILINK_STORAGE_ACCOUNT", "devstoreaccount1")
        .env("MILINK_STORAGE_KEY", AZURITE_KEY)
        .env("MILINK_TABLE_ENDPOINT", azurite_endpoint())
        .env("MILINK_TABLE_PREFIX", &prefix)
        .env("MILINK_SERVICEBUS_URL", &namespace)
        .env("MILINK_SERVICEBUS_KEY_NAME", bus::KEY_NAME)
        .env("MILINK_SERVICEBUS_KEY", bus::KEY)
        .env("PG_FROM_TABLE_PASSWORD", "from-key-vault")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the milink binary starts");
    let host = HostDouble::new(format!("http://127.0.0.1:{port}"));
    host.wait_ready().await;

    let (status, health) = host.http("GET", "/api/health", None).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    for connection in ["pg-from-file", "pg-from-table"] {
        let (status, body) = host.http("POST", "/api/assessments", Some(&json!({ "connection": connection }))).await;
        assert_eq!(status, 202, "{connection}: {body}");
    }
    let (status, body) = host.http("POST", "/api/assessments", Some(&json!({ "connection": "nowhere" }))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("unknown_connection")));
    assert!(body["error"]["message"].as_str().unwrap().contains("pg-from-table"), "known connections are listed: {body}");
    assert!(matches!(host.fire("Relay").await, azure_support::host::Outcome::Succeeded(_)));
    assert!(matches!(host.fire("PollSync").await, azure_support::host::Outcome::Succeeded(_)));
    // The two assessments' messages went to the assess queue through the REST contract.
    let (accepted, _, rejected) = bus.stats();
    assert_eq!((accepted, rejected.len()), (2, 0), "{rejected:?}");

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "milink functions did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(!log.contains("from-key-vault"), "the password must never be logged");
}

/// Issue 15, Azure item 2: on a first deploy storage refuses the identity for minutes while role assignments
/// propagate. The handler must answer the host's readiness probe at once (any answer counts for the host),
/// say what it waits for, and keep trying, instead of exiting before it binds (a crash loop).
#[tokio::test(flavor = "multi_thread")]
async fn milink_functions_answers_the_probe_while_storage_is_unreachable() {
    let app_root = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(milink_e2e::milink::binary())
        .arg("functions")
        .current_dir(app_root.path())
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("FUNCTIONS_APP_ROOT_PATH", app_root.path())
        .env("MILINK_STORAGE_ACCOUNT", "devstoreaccount1")
        .env("MILINK_STORAGE_KEY", AZURITE_KEY)
        .env("MILINK_TABLE_ENDPOINT", "http://127.0.0.1:1/devstoreaccount1")
        .env("MILINK_SERVICEBUS_URL", "http://127.0.0.1:1")
        .env("MILINK_SERVICEBUS_KEY_NAME", bus::KEY_NAME)
        .env("MILINK_SERVICEBUS_KEY", bus::KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the milink binary starts");
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let probe = loop {
        if let Ok(response) = http.get(format!("http://127.0.0.1:{port}/")).send().await {
            break response;
        }
        assert!(child.try_wait().unwrap().is_none(), "milink functions exited instead of waiting for storage");
        assert!(std::time::Instant::now() < deadline, "no answer to the readiness probe within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(probe.status(), 503);
    let text = probe.text().await.unwrap();
    assert!(text.contains("starting"), "{text}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(child.try_wait().unwrap().is_none(), "still running, still retrying");
    let _ = child.kill();
    let _ = child.wait();
}

/// Issue 15, Azure item 6: an API request sent chunked (`Transfer-Encoding: chunked`, no Content-Length)
/// must reach the API with its body. In the Data/Metadata protocol the host leaves such a body out of
/// `Data.req` (it copies one only when Content-Length > 0), so host.json proxies HTTP functions
/// (`enableProxyingHttpRequest`) and the real binary answers the proxied request at its own path; a request
/// that still comes as `Data.req` without its chunked body is refused with 411 instead of running on nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_api_request_reaches_the_api_with_its_body() {
    let prefix: String = format!("chk{}", uuid::Uuid::new_v4().simple()).chars().take(20).collect();
    let app_root = tempfile::tempdir().unwrap();
    std::fs::write(
        app_root.path().join("milink.toml"),
        "[connections.pg-from-file]\nengine = \"postgres\"\nurl = \"postgresql://milink@127.0.0.1:1/postgres\"\n",
    )
    .unwrap();
    let bus = bus::BusDouble::default();
    let namespace = bus.serve().await;
    let port = free_port();
    let mut child = Command::new(milink_e2e::milink::binary())
        .arg("functions")
        .current_dir(app_root.path())
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("FUNCTIONS_APP_ROOT_PATH", app_root.path())
        .env("MILINK_STORAGE_ACCOUNT", "devstoreaccount1")
        .env("MILINK_STORAGE_KEY", AZURITE_KEY)
        .env("MILINK_TABLE_ENDPOINT", azurite_endpoint())
        .env("MILINK_TABLE_PREFIX", &prefix)
        .env("MILINK_SERVICEBUS_URL", &namespace)
        .env("MILINK_SERVICEBUS_KEY_NAME", bus::KEY_NAME)
        .env("MILINK_SERVICEBUS_KEY", bus::KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the milink binary starts");
    let host = HostDouble::new(format!("http://127.0.0.1:{port}"));
    host.wait_ready().await;

    // The body is read: the API names the unknown connection, and a known one is accepted.
    let (status, body) = host.http_chunked("POST", "/api/assessments", &json!({ "connection": "nowhere" })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("unknown_connection")), "{body}");
    let (status, body) = host.http_chunked("POST", "/api/assessments", &json!({ "connection": "pg-from-file" })).await;
    assert_eq!(status, 202, "{body}");
    let (accepted, _, rejected) = bus.stats();
    assert_eq!((accepted, rejected.len()), (1, 0), "{rejected:?}");

    // The same request in the `req` shape, as a host without proxying sends it: no Body, the caller's
    // Transfer-Encoding among the headers. 411, not a route run on an empty body.
    let headers = json!({ "Content-Type": ["application/json"], "Transfer-Encoding": ["chunked"], "Host": ["localhost:7071"] });
    let request = json!({
        "Url": "http://localhost:7071/api/assessments", "Method": "POST", "Query": {}, "Headers": headers, "Identities": [],
    });
    let payload = json!({ "Data": { "req": request }, "Metadata": { "Query": {}, "Headers": headers } });
    match host.invoke("Assessments", &payload).await {
        azure_support::host::Outcome::Succeeded(result) => {
            let res = &result["Outputs"]["res"];
            assert_eq!(res["statusCode"], "411", "{result}");
            assert!(res["body"].as_str().unwrap().contains("Content-Length"), "{result}");
        }
        azure_support::host::Outcome::Failed(reason) => panic!("the Assessments function failed: {reason}"),
    }
    let _ = child.kill();
    let _ = child.wait();
}
