//! Telemetry: logs to stderr always (text, or JSON with `MILINK_LOG_FORMAT=json`); traces and metrics over
//! OpenTelemetry (OTLP over HTTP) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; metrics also as Prometheus text
//! ([`metrics`], served at `/metrics`); and the W3C trace context carried in every message envelope, so one
//! migration's steps form one trace across queue hops (and across processes, in the Azure host).
//!
//! The trace tree of a migration: the HTTP request that started it ([`http`]), then one `step` span per
//! message, each a child of the step (or request) that sent it, and inside a step one `engine` span per
//! engine operation ([`spans`]). Assessments are traced the same way. The tracer is installed even without
//! an exporter, so trace ids still link envelopes and log lines when nothing is exported.
//!
//! Spans, metrics and logs never carry secrets: connections are named, never given as URLs; errors by
//! their safe message; no value read from a database is recorded.
pub mod fleet;
pub mod http;
pub mod metrics;
mod prometheus;
pub mod spans;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Keeps the exporters alive; flushes spans and metrics when dropped.
pub struct Telemetry {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.meter.shutdown();
        let _ = self.tracer.shutdown();
    }
}

/// Installs the subscriber: `MILINK_LOG` filters (default `info`), `MILINK_LOG_FORMAT=json` writes one JSON
/// object per line; OTLP export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the exporters read the standard
/// OTEL_* variables themselves, e.g. `OTEL_METRIC_EXPORT_INTERVAL`).
pub fn init(service_name: &'static str) -> Telemetry {
    let filter = quiet_drivers(EnvFilter::try_from_env("MILINK_LOG").unwrap_or_else(|_| EnvFilter::new("info")));
    let json = std::env::var("MILINK_LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json"));
    let text_logs = (!json).then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let json_logs = json.then(|| {
        // The span list carries the step's migration id and trace id into every line logged inside it.
        tracing_subscriber::fmt::layer().json().with_current_span(false).with_span_list(true).flatten_event(true).with_writer(std::io::stderr)
    });
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.is_empty());
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service_name).build();
    let mut problems = Vec::new();
    let mut tracer = SdkTracerProvider::builder().with_resource(resource.clone());
    let mut meter = SdkMeterProvider::builder().with_resource(resource).with_reader(metrics::scrape_reader());
    let mut exporting = false;
    if endpoint.is_some() {
        match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
            Ok(exporter) => tracer = tracer.with_batch_exporter(exporter),
            Err(error) => problems.push(format!("OTLP span exporter not started: {error}")),
        }
        match opentelemetry_otlp::MetricExporter::builder().with_http().build() {
            Ok(exporter) => {
                meter = meter.with_periodic_exporter(exporter);
                exporting = true;
            }
            Err(error) => problems.push(format!("OTLP metric exporter not started: {error}")),
        }
    }
    let (tracer, meter) = (tracer.build(), meter.build());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_meter_provider(meter.clone());
    metrics::install(exporting);
    let layer = tracing_opentelemetry::layer().with_tracer(tracer.tracer(service_name));
    let _ = tracing_subscriber::registry().with(filter).with(text_logs).with(json_logs).with(layer).try_init();
    for problem in problems {
        tracing::error!(endpoint = endpoint.as_deref().unwrap_or_default(), "{problem}; continuing without it");
    }
    if let Some(endpoint) = &endpoint {
        tracing::info!(%endpoint, "exporting traces and metrics over OTLP");
    }
    Telemetry { tracer, meter }
}

/// Database drivers log the statements they run at debug level, and some statements carry a password
/// (PostgreSQL's `CREATE SUBSCRIPTION ... CONNECTION`): whatever `MILINK_LOG` asks for, drivers log at info
/// at most. Added after the user's directives, so these win.
fn quiet_drivers(filter: EnvFilter) -> EnvFilter {
    ["tokio_postgres=info", "tiberius=info", "postgres_protocol=info"]
        .into_iter()
        .fold(filter, |filter, directive| filter.add_directive(directive.parse().expect("static directive parses")))
}

/// The W3C `traceparent` of the current span, when tracing is installed.
pub fn current_trace_parent() -> Option<String> {
    let context = tracing::Span::current().context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the step (or request) that emitted the message, and records the trace id on
/// it for the logs (when the span declares a `trace_id` field).
pub fn continue_trace(span: &tracing::Span, trace_parent: Option<&str>) {
    if let Some(trace_parent) = trace_parent {
        let carrier: HashMap<String, String> = HashMap::from([("traceparent".to_owned(), trace_parent.to_owned())]);
        let context = TraceContextPropagator::new().extract(&carrier);
        let _ = span.set_parent(context);
    }
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}
