//! The web UI on the Azure host: the `Ui` HTTP function answers `/api/ui/...` with the same embedded files
//! the embedded host serves at `/` (HTML, scripts, the strict CSP), and the dashboard's read models
//! (`Overview`, `Connections`) answer through their functions as the API does.
mod azure_support;

use azure_support::engine::ScriptedEngine;
use azure_support::host::Outcome;
use azure_support::{Faults, Lab, LabOptions};
use milink_functions::engines::Engines;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const CONFIG: &str = "[connections.src]\nengine = \"scripted\"\nurl = \"scripted://source\"\n\n\
    [connections.dst]\nengine = \"scripted\"\nurl = \"scripted://target\"\n";

async fn lab() -> Lab {
    let mut engines = Engines::empty();
    engines.register("scripted", "scripted", Arc::new(ScriptedEngine::default()));
    let options = LabOptions { config: CONFIG.into(), engines, faults: Faults::default(), crash_after_save: false, timer_every: Duration::from_millis(100) };
    Lab::start(options).await
}

/// Invokes `Ui` as the Functions host does for `GET {path}`; returns status, headers and body text.
async fn ui(lab: &Lab, path: &str, file: &str) -> (String, Value, String) {
    let headers = json!({ "Accept": ["text/html"], "Host": ["localhost:7071"] });
    let request = json!({
        "Url": format!("http://localhost:7071{path}"), "Method": "GET", "Query": {}, "Headers": headers,
        "Params": { "path": file }, "Identities": [],
    });
    let metadata = json!({ "Query": {}, "Headers": headers, "path": format!("\"{file}\"") });
    match lab.host.invoke("Ui", &json!({ "Data": { "req": request }, "Metadata": metadata })).await {
        Outcome::Succeeded(result) => {
            let res = &result["Outputs"]["res"];
            (res["statusCode"].as_str().unwrap_or_default().to_owned(), res["headers"].clone(), res["body"].as_str().unwrap_or_default().to_owned())
        }
        Outcome::Failed(reason) => panic!("the Ui function failed: {reason}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ui_function_serves_the_embedded_pages_under_api_ui() {
    let lab = lab().await;
    let (status, headers, body) = ui(&lab, "/api/ui/", "").await;
    assert_eq!(status, "200");
    assert!(headers["content-type"].as_str().unwrap().starts_with("text/html"), "{headers}");
    assert!(headers["content-security-policy"].as_str().unwrap().contains("script-src 'self'"));
    // Relative file URLs: the same index works at / (embedded) and at /api/ui/ (Azure).
    assert!(body.contains("src=\"app.js\"") && body.contains("href=\"style.css\""), "{body}");
    let (status, headers, body) = ui(&lab, "/api/ui/app.js", "app.js").await;
    assert_eq!(status, "200");
    assert!(headers["content-type"].as_str().unwrap().starts_with("text/javascript"));
    assert!(body.contains("import { overviewPage } from './overview.js';"));
    let (status, _, _) = ui(&lab, "/api/ui/secrets.txt", "secrets.txt").await;
    assert_eq!(status, "404");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_read_models_answer_through_their_functions() {
    let lab = lab().await;
    let (status, connections) = lab.host.http("GET", "/api/connections", None).await;
    assert_eq!(status, 200);
    assert_eq!(connections, json!({ "connections": [{ "name": "dst", "engine": "scripted" }, { "name": "src", "engine": "scripted" }] }));
    let (status, overview) = lab.host.http("GET", "/api/overview", None).await;
    assert_eq!(status, 200);
    assert_eq!(overview["steps"].as_array().map(Vec::len), Some(4));
    assert_eq!(overview["nextActions"][0]["kind"], "assess", "{overview:#}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wizards_connection_test_answers_through_its_function() {
    let lab = lab().await;
    // The scripted engine has no connection test of its own: the answer says so, as a result, not an error.
    let (status, tested) = lab.host.http("POST", "/api/connections/src/test", Some(&json!({}))).await;
    assert_eq!(status, 200, "{tested}");
    assert_eq!((tested["connection"].as_str(), tested["ok"].as_bool()), (Some("src"), Some(false)), "{tested}");
    assert_eq!(tested["error"]["code"], "test_connection_not_supported", "{tested}");
    let (status, unknown) = lab.host.http("POST", "/api/connections/nosuch/test", Some(&json!({}))).await;
    assert_eq!((status, unknown["error"]["code"].as_str()), (400, Some("unknown_connection")), "{unknown}");
    lab.stop().await;
}
