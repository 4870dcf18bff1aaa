//! Telemetry as a user would see it, end to end: the real `milink up` migrating between the two local
//! PostgreSQL servers, exporting OTLP/HTTP to a receiver in this test (protobuf decoded with
//! opentelemetry-proto), with `/metrics` parsed by a Prometheus text-format parser. Checked: the trace
//! tree (HTTP request → steps → engine operations, continuing the caller's `traceparent`), metric values
//! against what the API says, `/metrics` behind the token, and no secret anywhere in what is exported.
mod telemetry_support;

use milink_e2e::{pg, unique};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{json, Value};
use std::collections::HashMap;
use telemetry_support::host::{Host, TOKEN};
use telemetry_support::receiver::{attribute, histogram, points, Receiver, Received};

/// A fresh W3C traceparent: (trace id, parent span id, header).
fn traceparent() -> (Vec<u8>, Vec<u8>, String) {
    let (trace, span): ([u8; 16], [u8; 8]) = (rand::random(), rand::random());
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let header = format!("00-{}-{}-01", hex(&trace), hex(&span));
    (trace.to_vec(), span.to_vec(), header)
}

/// The one span named `name` in trace `trace`.
fn span<'a>(received: &'a Received, trace: &[u8], name: &str) -> &'a Span {
    let found: Vec<&Span> = received.spans.iter().filter(|s| s.trace_id == trace && s.name == name).collect();
    assert_eq!(found.len(), 1, "one span {name:?} in the trace; spans: {:?}", received.spans.iter().map(|s| &s.name).collect::<Vec<_>>());
    found[0]
}

/// `step` is a step span of migration `id`, child of `parent`, with one engine span for `operation` under it.
fn assert_step(received: &Received, trace: &[u8], parent: &Span, step: &str, operation: &str, id: &str, database: &str) {
    let step_span = span(received, trace, &format!("step {step}"));
    assert_eq!(step_span.parent_span_id, parent.span_id, "step {step} is a child of {}", parent.name);
    assert_eq!(attribute(&step_span.attributes, "migration").as_deref(), Some(id));
    let engine = span(received, trace, &format!("engine {operation}"));
    assert_eq!(engine.parent_span_id, step_span.span_id, "engine {operation} runs inside step {step}");
    for (key, value) in [("operation", operation), ("engine", "postgres"), ("source_connection", "src"), ("target_connection", "dst"), ("database", database)] {
        assert_eq!(attribute(&engine.attributes, key).as_deref(), Some(value), "engine {operation} span's {key}");
    }
}

fn assert_http(received: &Received, trace: &[u8], caller: &[u8], name: &str, route: &str) -> Span {
    let http = span(received, trace, name).clone();
    assert_eq!(http.parent_span_id, caller, "{name} continues the caller's traceparent");
    assert_eq!(http.kind, SpanKind::Server as i32);
    assert_eq!(attribute(&http.attributes, "http.route").as_deref(), Some(route));
    assert_eq!(attribute(&http.attributes, "http.response.status_code").as_deref(), Some("202"));
    http
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_is_traced_from_request_to_engine_and_its_metrics_match_the_api() {
    let (receiver, endpoint) = Receiver::start().await;
    let host = Host::start(&endpoint).await;
    let database = unique("TelemetryToys");
    pg::load_sample(&database, "toystore.sql").await.unwrap();

    // Without the token: refused (401), or sent to the login page (303), never the metrics.
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let anonymous = no_redirects.get(format!("{}/metrics", host.base)).send().await.unwrap();
    assert!(matches!(anonymous.status().as_u16(), 401 | 303), "/metrics is behind the API's token: {}", anonymous.status());
    assert!(!anonymous.text().await.unwrap().contains("milink_"));

    let (start_trace, start_caller, start_header) = traceparent();
    let body = json!({ "source": "src", "target": "dst", "databases": [database] });
    let started = host.post("/api/migrations", &body, Some(&start_header)).await;
    let id = started["migrations"][0]["id"].as_str().unwrap().to_owned();
    host.wait_status(&id, "ReadyForCutover").await;
    prometheus_matches_api(&host).await;

    let (cutover_trace, cutover_caller, cutover_header) = traceparent();
    host.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true }), Some(&cutover_header)).await;
    let done = host.wait_status(&id, "Completed").await;
    // The step span ends after its answer is saved (and the migration shows Completed), so it can reach the
    // receiver in a later export batch than its engine span: wait for the step itself.
    receiver.wait_for("the switch step's span", |r| r.spans.iter().any(|s| s.name == "step switch")).await;

    receiver.with(|received| {
        let start = assert_http(received, &start_trace, &start_caller, "POST /api/migrations", "/api/migrations");
        assert_step(received, &start_trace, &start, "validate", "validate", &id, &database);
        let validate = span(received, &start_trace, "step validate").clone();
        assert_step(received, &start_trace, &validate, "create-link", "create_link", &id, &database);

        let route = "/api/migrations/{id}/cutover";
        let cutover = assert_http(received, &cutover_trace, &cutover_caller, &format!("POST {route}"), route);
        let mut parent = cutover;
        for step in ["fence", "drain", "finalize", "switch"] {
            assert_step(received, &cutover_trace, &parent, step, step, &id, &database);
            parent = span(received, &cutover_trace, &format!("step {step}")).clone();
        }
        // Inside an engine operation, each statement is a span: its kind and server, never its text.
        let fence = span(received, &cutover_trace, "engine fence");
        let statements: Vec<&Span> = received.spans.iter().filter(|s| s.trace_id == cutover_trace && s.parent_span_id == fence.span_id).collect();
        assert!(
            statements.iter().any(|s| s.name == "postgres BEGIN" && attribute(&s.attributes, "server").as_deref() == Some("source")),
            "the fence's transaction on the source is a child span: {:?}",
            statements.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        for statement in &statements {
            let operation = attribute(&statement.attributes, "db.operation").unwrap_or_default();
            assert_eq!(statement.name, format!("postgres {operation}"));
            assert!(statement.attributes.iter().all(|a| !format!("{:?}", a.value).contains("default_transaction_read_only")), "no SQL text: {statement:?}");
        }
    });

    // The store-derived gauges are refreshed by a scrape (and every 10 s by the sync timer when exporting).
    host.metrics_text().await;
    receiver
        .wait_for("write downtime and the Completed migration over OTLP", |r| {
            r.metrics.contains_key("milink_cutover_write_downtime_seconds")
                && r.metrics.get("milink_migrations").is_some_and(|m| {
                    points(m).iter().any(|(labels, v)| attribute(labels, "status").as_deref() == Some("Completed") && *v == 1.0)
                })
        })
        .await;
    receiver.with(|received| otlp_metrics_match(received, &done));
    no_secret_anywhere(&host, &receiver).await;
    let logs = host.logs();
    let step_line = logs.lines().find(|line| line.contains(&format!("\"migration\":\"{id}\"")) && line.contains("\"trace_id\""));
    assert!(step_line.is_some_and(|line| serde_json::from_str::<Value>(line).is_ok()), "JSON log lines carry the migration and trace ids");
    pg::drop_everywhere(&database).await;
}

/// Over OTLP: the cutover's write downtime and step durations are the migration's own record.
fn otlp_metrics_match(received: &Received, migration: &Value) {
    let downtime = histogram(&received.metrics["milink_cutover_write_downtime_seconds"]);
    let expected = migration["cutover"]["writeDowntimeMs"].as_f64().unwrap() / 1000.0;
    assert_eq!(downtime.len(), 1);
    assert_eq!(downtime[0].1, 1, "one cutover");
    assert!((downtime[0].2 - expected).abs() < 1e-9, "write downtime {} s, API says {expected} s", downtime[0].2);

    let steps = histogram(&received.metrics["milink_cutover_step_duration_seconds"]);
    for step in migration["cutover"]["steps"].as_array().unwrap() {
        let name = step["step"].as_str().unwrap().to_ascii_lowercase();
        let ms = step["ms"].as_f64().unwrap();
        let point = steps.iter().find(|(labels, _, _)| attribute(labels, "step").as_deref() == Some(name.as_str()));
        let (_, count, sum) = point.unwrap_or_else(|| panic!("no cutover step series for {name}"));
        assert_eq!(*count, 1, "{name}");
        assert!((sum - ms / 1000.0).abs() < 1e-9, "{name}: {sum} s, API says {ms} ms");
    }

    let deliveries = &received.metrics["milink_step_deliveries"];
    for step in ["validate", "create-link", "fence", "drain", "finalize", "switch"] {
        let done = points(deliveries).iter().any(|(labels, v)| {
            attribute(labels, "step").as_deref() == Some(step) && attribute(labels, "outcome").as_deref() == Some("done") && *v >= 1.0
        });
        assert!(done, "a done delivery of {step} is counted");
    }
}

/// `/metrics`, parsed as Prometheus text: per-migration gauges and the fleet by status equal what
/// `GET /api/migrations` says at the same moment (read before and after the scrape; retried until equal).
async fn prometheus_matches_api(host: &Host) {
    let relevant = |list: &Value| -> Vec<Value> {
        let migrations = list["migrations"].as_array().unwrap();
        migrations.iter().map(|m| json!([m["id"], m["status"], m["lagBytes"], m["lagSeconds"], m["progress"]])).collect()
    };
    for _ in 0..50 {
        let before = host.get("/api/migrations").await;
        let text = host.metrics_text().await;
        let after = host.get("/api/migrations").await;
        if relevant(&before) != relevant(&after) {
            continue; // the timer moved something between the reads
        }
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("valid Prometheus text");
        let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
            let sample = scrape.samples.iter().find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))?;
            match sample.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            }
        };
        let mut by_status: HashMap<String, f64> = HashMap::new();
        for m in after["migrations"].as_array().unwrap() {
            let status = m["status"].as_str().unwrap();
            *by_status.entry(status.to_owned()).or_default() += 1.0;
            let labels = [("source", m["source"].as_str().unwrap()), ("target", m["target"].as_str().unwrap()), ("database", m["database"].as_str().unwrap()), ("status", status)];
            assert_eq!(value("milink_migration_lag_bytes", &labels), m["lagBytes"].as_f64(), "lag bytes of {m}\n{text}");
            assert_eq!(value("milink_migration_lag_seconds", &labels), m["lagSeconds"].as_f64(), "lag seconds of {m}");
            let progress = value("milink_migration_seeding_progress_percent", &labels).unwrap();
            assert!((progress - m["progress"].as_f64().unwrap()).abs() <= 0.05, "progress of {m}: {progress}");
        }
        for (status, count) in by_status {
            assert_eq!(value("milink_migrations", &[("status", &status)]), Some(count), "migrations {status}");
        }
        assert!(value("milink_queue_depth", &[]).is_some() && value("milink_dead_letters_stored", &[]) == Some(0.0), "{text}");
        return;
    }
    panic!("the API never held still long enough to compare with /metrics");
}

/// The database password and the access token appear nowhere: not in any exported span, attribute or
/// metric (the raw OTLP bytes are searched), not in `/metrics`, not in the JSON logs at debug level.
/// Connection URLs are not exported either: connections are named.
async fn no_secret_anywhere(host: &Host, receiver: &Receiver) {
    let password = pg::servers().password.clone();
    assert!(password.len() >= 8, "the dev password is long enough that a match would mean a leak");
    let url_host = pg::servers().source_url.split('@').nth(1).unwrap().split('/').next().unwrap().to_owned();
    let metrics = host.metrics_text().await;
    let logs = host.logs();
    receiver.with(|received| {
        let raw = String::from_utf8_lossy(&received.raw);
        for (what, text) in [("OTLP export", raw.as_ref()), ("/metrics", metrics.as_str()), ("the log", logs.as_str())] {
            assert!(!text.contains(&password), "the database password leaked into {what}");
            assert!(!text.contains(TOKEN), "the access token leaked into {what}");
        }
        assert!(!raw.contains(&url_host) && !raw.contains("postgresql://"), "a connection URL was exported ({url_host})");
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn an_assessment_is_traced_from_request_to_engine() {
    let (receiver, endpoint) = Receiver::start().await;
    let host = Host::start(&endpoint).await;
    let (trace, caller, header) = traceparent();
    let accepted = host.post("/api/assessments", &json!({ "connection": "src" }), Some(&header)).await;
    let id = accepted["id"].as_str().unwrap().to_owned();
    // A parent span ends after its children and can come in a later export batch: wait for both.
    receiver
        .wait_for("the assessment's spans", |r| {
            ["engine assess", "assess"].iter().all(|name| r.spans.iter().any(|s| s.trace_id == trace && s.name == *name))
        })
        .await;
    receiver.with(|received| {
        let http = assert_http(received, &trace, &caller, "POST /api/assessments", "/api/assessments");
        let assess = span(received, &trace, "assess");
        assert_eq!(assess.parent_span_id, http.span_id);
        assert_eq!(attribute(&assess.attributes, "assessment").as_deref(), Some(id.as_str()));
        let engine = span(received, &trace, "engine assess");
        assert_eq!(engine.parent_span_id, assess.span_id);
        assert_eq!(attribute(&engine.attributes, "connection").as_deref(), Some("src"));
        assert_eq!(attribute(&engine.attributes, "engine").as_deref(), Some("postgres"));
    });
    no_secret_anywhere(&host, &receiver).await;
}

/// docs/observability.md lists every metric milink makes, and the Grafana dashboard queries only metrics
/// the docs list: names are read from the instruments' source, the docs' tables and the dashboard.
#[test]
fn the_docs_and_the_dashboard_name_the_metrics_milink_makes() {
    let root = milink_e2e::workspace_root();
    let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap();
    let names = |text: &str| -> std::collections::BTreeSet<String> {
        let mut found = std::collections::BTreeSet::new();
        for (start, _) in text.match_indices("milink_") {
            let name: String = text[start..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            let base = ["_bucket", "_sum", "_count", "_total"].iter().fold(name.clone(), |n, suffix| n.strip_suffix(suffix).map_or(n.clone(), str::to_owned));
            found.insert(base);
        }
        found
    };
    let source: String = ["metrics.rs", "fleet.rs"].iter().map(|file| read(&format!("functions/src/telemetry/{file}"))).collect();
    let made: std::collections::BTreeSet<String> = names(&source).into_iter().filter(|n| source.contains(&format!("\"{n}\""))).collect();
    let docs = read("docs/observability.md");
    let documented: std::collections::BTreeSet<String> =
        docs.lines().filter(|line| line.starts_with("| `milink_")).flat_map(|line| names(line.split('|').nth(1).unwrap())).collect();
    assert!(made.len() >= 15, "the instruments were found in the source: {made:?}");
    assert_eq!(made, documented, "every instrument documented, nothing documented that is not made");
    let dashboard: Value = serde_json::from_str(&read("docs/grafana-milink.json")).expect("the dashboard is JSON");
    for name in names(&dashboard.to_string()) {
        assert!(documented.contains(&name), "the dashboard queries {name}, which the docs do not list");
    }
}
