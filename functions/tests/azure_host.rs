//! The custom-handler contract, with engine steps from a test double (`ScriptedEngine`) so failures can be
//! scripted: readiness, the HTTP functions answering exactly what the embedded API answers, transient
//! failures retried by scheduled resends and finally recorded as a stall and a dead letter, undecodable
//! messages failed until Service Bus dead-letters them.
mod azure_support;

use azure_support::engine::ScriptedEngine;
use azure_support::{Faults, Lab, LabOptions};
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use milink_azure::BusMessage;
use milink_functions::api::{self, ApiState};
use milink_functions::engines::Engines;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const CONFIG: &str = "[server]\nmax_attempts = 3\nretry_base_ms = 50\nretry_max_ms = 200\n\n\
    [connections.src]\nengine = \"scripted\"\nurl = \"scripted://source\"\n\n\
    [connections.dst]\nengine = \"scripted\"\nurl = \"scripted://target\"\n";

async fn lab(engine: ScriptedEngine) -> Lab {
    let mut engines = Engines::empty();
    engines.register("scripted", "scripted", Arc::new(engine));
    Lab::start(LabOptions {
        config: CONFIG.into(),
        engines,
        faults: Faults::default(),
        crash_after_save: false,
        timer_every: Duration::from_millis(100),
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readiness_probe_and_unknown_functions_are_answered_in_json() {
    let lab = lab(ScriptedEngine::default()).await;
    // The host only needs *a* response to GET / ; the double already waited for it. An unknown function
    // is a failed invocation with a JSON body the host can read.
    match lab.host.invoke("NoSuchFunction", &json!({ "Data": {}, "Metadata": {} })).await {
        azure_support::host::Outcome::Failed(reason) => assert!(reason.contains("404") && reason.contains("NoSuchFunction"), "{reason}"),
        azure_support::host::Outcome::Succeeded(body) => panic!("{body}"),
    }
    lab.stop().await;
}

/// The same request through the embedded host's router, for comparison.
async fn embedded(lab: &Lab, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let router = api::app(ApiState { ctx: lab.ctx.clone(), dead_letters: None });
    let mut request = Request::builder().method(method).uri(path);
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string()))).unwrap();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn http_functions_answer_exactly_what_the_embedded_api_answers() {
    let lab = lab(ScriptedEngine::default()).await;
    let id = lab.start_migration("ToyStore", json!({})).await;
    lab.wait_status(&id, "ReadyForCutover", Duration::from_secs(30)).await;
    let requests: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/api/health".into(), None),
        ("GET", "/api/openapi.json".into(), None),
        ("GET", "/api/migrations/does-not-exist".into(), None),
        ("POST", "/api/migrations".into(), Some(json!({ "source": "src" }))),
        ("POST", "/api/migrations".into(), Some(json!({ "source": "nope", "target": "dst", "databases": ["x"] }))),
        ("POST", "/api/migrations".into(), Some(json!({ "source": "src", "target": "dst", "databases": [] }))),
        ("POST", "/api/migrations".into(), Some(json!({ "source": "src", "target": "dst", "databases": ["ToyStore"] }))),
        ("POST", format!("/api/migrations/{id}/cutover"), Some(json!({}))),
        ("POST", "/api/migrations/does-not-exist/cancel".into(), Some(json!({}))),
        ("POST", format!("/api/migrations/{id}/failback"), Some(json!({}))),
        ("POST", "/api/assessments".into(), Some(json!({ "connection": "nope" }))),
        ("GET", "/api/assessments/does-not-exist".into(), None),
    ];
    for (method, path, body) in &requests {
        let through_functions = lab.host.http(method, path, body.as_ref()).await;
        let direct = embedded(&lab, method, path, body.as_ref()).await;
        assert_eq!(through_functions, direct, "{method} {path}");
    }
    let detail = lab.host.http("GET", &format!("/api/migrations/{id}"), None).await;
    assert_eq!(detail, embedded(&lab, "GET", &format!("/api/migrations/{id}"), None).await);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_are_rescheduled_then_exhausted_into_a_stall_and_a_dead_letter() {
    let lab = lab(ScriptedEngine::failing_create_link(u32::MAX)).await;
    let id = lab.start_migration("ToyStore", json!({})).await;
    let stalled = lab.wait_status(&id, "Stalled", Duration::from_secs(30)).await;
    assert!(stalled["reason"].as_str().unwrap().contains("create-link keeps failing"), "{stalled:#}");
    let letters = lab.get("/api/deadletters").await;
    let letter = &letters["deadLetters"][0];
    assert_eq!(letter["stage"], "migration", "{letters:#}");
    assert_eq!(letter["deliveries"], 3, "max_attempts = 3");
    assert!(letter["lastError"].as_str().unwrap().contains("unreachable"));
    // The retries were resends scheduled in the future, not abandons: the bus dead-lettered nothing.
    assert!(lab.bus.dead_letters().is_empty());
    let (_, _, rejected) = lab.bus.stats();
    assert!(rejected.is_empty(), "{rejected:?}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_that_fails_twice_succeeds_on_its_third_attempt() {
    let lab = lab(ScriptedEngine::failing_create_link(2)).await;
    let id = lab.start_migration("ToyStore", json!({})).await;
    lab.wait_status(&id, "ReadyForCutover", Duration::from_secs(30)).await;
    let (status, _) = lab.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await;
    assert_eq!(status, 202);
    lab.wait_status(&id, "Completed", Duration::from_secs(30)).await;
    assert_eq!(lab.get("/api/deadletters").await["deadLetters"], json!([]));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undecodable_message_fails_until_service_bus_dead_letters_it() {
    let lab = lab(ScriptedEngine::default()).await;
    let garbage = BusMessage {
        queue: "milink-migration".into(),
        body: "{\"not\":\"an envelope\"}".into(),
        message_id: "garbage-1".into(),
        session_id: Some("garbage".into()),
        scheduled_enqueue_time: None,
        properties: Default::default(),
    };
    lab.sender.send(&garbage).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while lab.bus.dead_letters().is_empty() {
        assert!(std::time::Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (message, reason) = lab.bus.dead_letters()[0].clone();
    assert_eq!((message.message_id.as_str(), message.delivery_count), ("garbage-1", azure_support::bus::MAX_DELIVERY_COUNT));
    assert!(reason.contains("not a milink envelope"), "{reason}");
    lab.stop().await;
}

/// A fleet plan on the Azure host: applied through the HTTP function, fanned out as each migration's first
/// message through the Service Bus queues, gated by the PollSync timer's admission round: the second wave
/// waits for the first to be cut over, then for its approval, and then starts.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_plan_runs_its_waves_through_the_queues() {
    let lab = lab(ScriptedEngine::default()).await;
    let plan = json!({ "name": "azure-plan", "waves": [
        { "name": "pilot", "links": [{ "source": "src", "target": "dst", "databases": ["ToyStore"] }] },
        { "name": "main", "approval": true, "links": [{ "source": "src", "target": "dst", "databases": ["Customer360"] }] },
    ] });
    let (status, applied) = lab.post("/api/fleets", &plan).await;
    assert_eq!(status, 202, "{applied}");
    let ids: Vec<String> = applied["migrations"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    lab.wait_status(&ids[0], "ReadyForCutover", Duration::from_secs(30)).await;
    lab.wait_for(&ids[1], "the main wave waiting for the pilot", Duration::from_secs(30), |m| {
        m["status"] == "Queued" && m["reason"].as_str().is_some_and(|r| r.contains("waiting for wave \"pilot\""))
    })
    .await;
    let (status, cut) = lab.post("/api/fleets/azure-plan/cutover", &json!({ "wave": "pilot", "confirmTrafficStopped": true })).await;
    assert_eq!((status, cut["counts"]["accepted"].as_u64()), (200, Some(1)), "{cut}");
    lab.wait_status(&ids[0], "Completed", Duration::from_secs(30)).await;
    lab.wait_for(&ids[1], "the main wave waiting for its approval", Duration::from_secs(30), |m| {
        m["reason"].as_str().is_some_and(|r| r.contains("waiting for approval"))
    })
    .await;
    let (status, approved) = lab.post("/api/fleets/azure-plan/approve", &json!({ "wave": "main" })).await;
    assert_eq!(status, 200, "{approved}");
    lab.wait_status(&ids[1], "ReadyForCutover", Duration::from_secs(30)).await;
    let fleet = lab.get("/api/fleets/azure-plan").await;
    assert_eq!((fleet["counts"]["Completed"].as_u64(), fleet["counts"]["ReadyForCutover"].as_u64()), (Some(1), Some(1)), "{fleet:#}");
    lab.stop().await;
}
