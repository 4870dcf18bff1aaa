//! The Prometheus text endpoint: a manual OpenTelemetry reader collected on each scrape, rendered in the
//! text exposition format (version 0.0.4). One set of instruments feeds both OTLP and this endpoint, so
//! the two never disagree about what was counted.
//!
//! Names follow Prometheus' conventions: counters get `_total`; histograms `_bucket` (cumulative, with
//! `le`), `_sum` and `_count`. Units are already in the instrument names.
use crate::api::ApiState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

static READER: OnceLock<Arc<ManualReader>> = OnceLock::new();

/// The reader the meter provider is built with; `/metrics` collects from the same one.
#[derive(Debug)]
pub(crate) struct ScrapeReader(Arc<ManualReader>);

/// The scrape reader (one per process: the first call makes it).
pub(crate) fn scrape_reader() -> ScrapeReader {
    ScrapeReader(READER.get_or_init(|| Arc::new(ManualReader::builder().build())).clone())
}

impl MetricReader for ScrapeReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// `GET /metrics`: refreshes the store-derived gauges, collects, renders.
pub async fn scrape(State(state): State<ApiState>) -> Response {
    super::fleet::refresh(&state.ctx).await;
    let Some(reader) = READER.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics are not set up in this process\n").into_response();
    };
    let mut collected = ResourceMetrics::default();
    if let Err(error) = reader.collect(&mut collected) {
        tracing::warn!(%error, "metrics: collecting failed");
        return (StatusCode::INTERNAL_SERVER_ERROR, "collecting metrics failed; see the log\n").into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render(&collected)).into_response()
}

/// The text exposition of everything collected.
pub(crate) fn render(collected: &ResourceMetrics) -> String {
    let mut out = String::new();
    for scope in collected.scope_metrics() {
        for metric in scope.metrics() {
            match metric.data() {
                AggregatedMetrics::F64(data) => render_metric(&mut out, metric, data, |v| v),
                AggregatedMetrics::U64(data) => render_metric(&mut out, metric, data, |v| v as f64),
                AggregatedMetrics::I64(data) => render_metric(&mut out, metric, data, |v| v as f64),
            }
        }
    }
    out
}

fn render_metric<T: Copy>(out: &mut String, metric: &Metric, data: &MetricData<T>, value: impl Fn(T) -> f64) {
    let name = metric.name();
    match data {
        MetricData::Gauge(gauge) => {
            header(out, name, metric.description(), "gauge");
            for point in gauge.data_points() {
                sample(out, name, &labels(point.attributes(), None), value(point.value()));
            }
        }
        MetricData::Sum(sum) => {
            let (name, kind) = if sum.is_monotonic() { (format!("{name}_total"), "counter") } else { (name.to_owned(), "gauge") };
            header(out, &name, metric.description(), kind);
            for point in sum.data_points() {
                sample(out, &name, &labels(point.attributes(), None), value(point.value()));
            }
        }
        MetricData::Histogram(histogram) => {
            header(out, name, metric.description(), "histogram");
            for point in histogram.data_points() {
                let mut cumulative = 0;
                for (bound, count) in point.bounds().zip(point.bucket_counts()) {
                    cumulative += count;
                    sample(out, &format!("{name}_bucket"), &labels(point.attributes(), Some(&number(bound))), cumulative as f64);
                }
                sample(out, &format!("{name}_bucket"), &labels(point.attributes(), Some("+Inf")), point.count() as f64);
                sample(out, &format!("{name}_sum"), &labels(point.attributes(), None), value(point.sum()));
                sample(out, &format!("{name}_count"), &labels(point.attributes(), None), point.count() as f64);
            }
        }
        // Not configured for any instrument of ours.
        MetricData::ExponentialHistogram(_) => {}
    }
}

fn header(out: &mut String, name: &str, description: &str, kind: &str) {
    let help = description.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: f64) {
    let _ = writeln!(out, "{name}{labels} {}", number(value));
}

fn labels<'a>(attributes: impl Iterator<Item = &'a KeyValue>, le: Option<&str>) -> String {
    let mut pairs: Vec<String> = attributes.map(|kv| format!("{}=\"{}\"", kv.key.as_str(), escape(&kv.value.as_str()))).collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}
