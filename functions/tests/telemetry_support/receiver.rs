//! An OTLP/HTTP receiver: what a collector would get from milink, decoded, plus the raw bytes (a secret
//! must not appear anywhere in them, attribute or not).
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, Metric};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Everything received so far.
#[derive(Default)]
pub struct Received {
    pub spans: Vec<Span>,
    /// Metrics by name, from the newest export that had them (cumulative temporality: the newest is whole).
    pub metrics: HashMap<String, Metric>,
    pub raw: Vec<u8>,
}

#[derive(Clone, Default)]
pub struct Receiver(Arc<Mutex<Received>>);

impl Receiver {
    /// Listens on a free port; returns the receiver and its endpoint (`http://127.0.0.1:port`).
    pub async fn start() -> (Self, String) {
        let receiver = Receiver::default();
        let router = Router::new()
            .route("/v1/traces", post(traces))
            .route("/v1/metrics", post(metrics))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the receiver");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (receiver, endpoint)
    }

    pub fn with<T>(&self, read: impl FnOnce(&Received) -> T) -> T {
        read(&self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Waits until `ready` holds (exports are batched), or panics with `what`.
    pub async fn wait_for(&self, what: &str, ready: impl Fn(&Received) -> bool) {
        for _ in 0..300 {
            if self.with(&ready) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let names: Vec<String> = self.with(|r| r.spans.iter().map(|s| s.name.clone()).collect());
        let metrics: Vec<String> = self.with(|r| r.metrics.keys().cloned().collect());
        panic!("timed out waiting for {what}; spans: {names:?}; metrics: {metrics:?}");
    }
}

async fn traces(State(receiver): State<Receiver>, body: Bytes) -> impl IntoResponse {
    let request = ExportTraceServiceRequest::decode(body.as_ref()).expect("milink sends OTLP protobuf traces");
    let mut received = receiver.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    received.raw.extend_from_slice(&body);
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            received.spans.extend(scope.spans);
        }
    }
    protobuf(ExportTraceServiceResponse::default().encode_to_vec())
}

async fn metrics(State(receiver): State<Receiver>, body: Bytes) -> impl IntoResponse {
    let request = ExportMetricsServiceRequest::decode(body.as_ref()).expect("milink sends OTLP protobuf metrics");
    let mut received = receiver.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    received.raw.extend_from_slice(&body);
    for resource in request.resource_metrics {
        for scope in resource.scope_metrics {
            for metric in scope.metrics {
                received.metrics.insert(metric.name.clone(), metric);
            }
        }
    }
    protobuf(ExportMetricsServiceResponse::default().encode_to_vec())
}

fn protobuf(body: Vec<u8>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/x-protobuf")], body)
}

/// An attribute as text (strings, numbers and booleans).
pub fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match value {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

/// The data points of a gauge or sum: (attributes, value).
pub fn points(metric: &Metric) -> Vec<(&[KeyValue], f64)> {
    let points = match &metric.data {
        Some(metric::Data::Gauge(gauge)) => &gauge.data_points,
        Some(metric::Data::Sum(sum)) => &sum.data_points,
        _ => return Vec::new(),
    };
    points
        .iter()
        .map(|p| {
            let value = match p.value {
                Some(number_data_point::Value::AsDouble(d)) => d,
                Some(number_data_point::Value::AsInt(i)) => i as f64,
                None => f64::NAN,
            };
            (p.attributes.as_slice(), value)
        })
        .collect()
}

/// A histogram's (attributes, count, sum) per data point.
pub fn histogram(metric: &Metric) -> Vec<(&[KeyValue], u64, f64)> {
    match &metric.data {
        Some(metric::Data::Histogram(h)) => h.data_points.iter().map(|p| (p.attributes.as_slice(), p.count, p.sum.unwrap_or(f64::NAN))).collect(),
        _ => Vec::new(),
    }
}
