//! Telemetry: tracing to stderr always; OpenTelemetry (OTLP over HTTP) when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set; and the W3C trace context carried in every message envelope, so one migration's steps form one
//! trace across queue hops (and across processes, in the Azure host).
//!
//! Every step runs in a `step` span carrying the migration id (see `handlers::handle`). Spans and logs never
//! carry secrets: endpoints are logged by name, errors by their safe message.
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Keeps the exporter alive; flushes spans when dropped.
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the subscriber: `MILINK_LOG` filters (default `info`); OTLP export when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the exporter reads the standard OTEL_* variables itself).
pub fn init(service_name: &'static str) -> Telemetry {
    let filter = quiet_drivers(EnvFilter::try_from_env("MILINK_LOG").unwrap_or_else(|_| EnvFilter::new("info")));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.is_empty());
    let Some(endpoint) = endpoint else {
        let _ = tracing_subscriber::registry().with(filter).with(fmt).try_init();
        return Telemetry { provider: None };
    };
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
        Ok(exporter) => exporter,
        Err(error) => {
            let _ = tracing_subscriber::registry().with(filter).with(fmt).try_init();
            tracing::error!(%error, %endpoint, "OTLP exporter not started; continuing with logs only");
            return Telemetry { provider: None };
        }
    };
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service_name).build();
    let provider =
        opentelemetry_sdk::trace::SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name));
    let _ = tracing_subscriber::registry().with(filter).with(fmt).with(layer).try_init();
    tracing::info!(%endpoint, "exporting traces over OTLP");
    Telemetry { provider: Some(provider) }
}

/// Database drivers log the statements they run at debug level, and some statements carry a password
/// (PostgreSQL's `CREATE SUBSCRIPTION ... CONNECTION`): whatever `MILINK_LOG` asks for, drivers log at info
/// at most. Added after the user's directives, so these win.
fn quiet_drivers(filter: EnvFilter) -> EnvFilter {
    ["tokio_postgres=info", "tiberius=info", "postgres_protocol=info"]
        .into_iter()
        .fold(filter, |filter, directive| filter.add_directive(directive.parse().expect("static directive parses")))
}

/// The W3C `traceparent` of the current span, when tracing exports spans.
pub fn current_trace_parent() -> Option<String> {
    let context = tracing::Span::current().context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the step that emitted the message.
pub fn continue_trace(span: &tracing::Span, trace_parent: Option<&str>) {
    let Some(trace_parent) = trace_parent else { return };
    let carrier: HashMap<String, String> = HashMap::from([("traceparent".to_owned(), trace_parent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(context);
}
