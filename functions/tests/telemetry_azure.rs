//! The Azure Functions host's HTTP requests are traced like the embedded host's: the custom handler
//! rebuilds the request from `Data.req`, and the caller's `traceparent` among its headers is continued by
//! the API's server span instead of being dropped. The custom handler runs in this process (the Azure lab,
//! with Azurite and a scripted engine: no step runs here), exporting OTLP to a receiver in this test.
//!
//! Its own test binary: it installs the process-wide telemetry.
mod azure_support;
mod telemetry_support;

use azure_support::engine::ScriptedEngine;
use azure_support::host::Outcome;
use azure_support::{Faults, Lab, LabOptions};
use milink_functions::engines::Engines;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use telemetry_support::receiver::{attribute, Receiver};

#[tokio::test(flavor = "multi_thread")]
async fn an_http_function_continues_the_callers_trace() {
    let (receiver, endpoint) = Receiver::start().await;
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    let _telemetry = milink_functions::telemetry::init("milink-functions-test");
    let mut engines = Engines::empty();
    engines.register("scripted", "scripted", Arc::new(ScriptedEngine::default()));
    let config = "[connections.src]\nengine = \"scripted\"\nurl = \"scripted://source\"\n";
    let lab = Lab::start(LabOptions { config: config.into(), engines, faults: Faults::default(), crash_after_save: false, timer_every: Duration::from_millis(100) }).await;

    let (trace, caller) = (rand::random::<[u8; 16]>(), rand::random::<[u8; 8]>());
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let traceparent = format!("00-{}-{}-01", hex(&trace), hex(&caller));
    let request = json!({
        "Url": "http://localhost:7071/api/migrations",
        "Method": "GET",
        "Query": {},
        "Headers": { "Accept": ["application/json"], "traceparent": [traceparent] },
        "Params": {},
    });
    match lab.host.invoke("Migrations", &json!({ "Data": { "req": request }, "Metadata": {} })).await {
        Outcome::Succeeded(result) => assert_eq!(result["Outputs"]["res"]["statusCode"], "200", "{result}"),
        Outcome::Failed(reason) => panic!("{reason}"),
    }
    receiver.wait_for("the API's server span", |r| r.spans.iter().any(|s| s.trace_id == trace && s.name == "GET /api/migrations")).await;
    receiver.with(|received| {
        let span = received.spans.iter().find(|s| s.trace_id == trace && s.name == "GET /api/migrations").unwrap();
        assert_eq!(span.parent_span_id, caller.to_vec(), "a child of the caller's span");
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(attribute(&span.attributes, "http.response.status_code").as_deref(), Some("200"));
    });
    lab.stop().await;
}
