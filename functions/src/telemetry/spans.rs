//! Child spans for engine operations, made by the handlers around each call into an engine: what ran
//! (`operation`), on which engine, between which connections, for which database, and how long it took.
//!
//! Connections are given by their name in milink.toml, never by URL: a URL can carry a user name, a host
//! a reader should not learn, or a password. No value read from a database is ever recorded.
use milink_core::config::Endpoint;
use milink_core::error::EngineError;
use milink_core::ports::LinkPlan;
use std::future::Future;
use tracing::Instrument;

/// Runs `work` inside `span`; a failure marks the span as an error with the error's code (a code from
/// the engine's classification table, never a driver message: those can quote SQL or a connection string).
pub async fn traced<T>(span: tracing::Span, work: impl Future<Output = Result<T, EngineError>>) -> Result<T, EngineError> {
    let result = work.instrument(span.clone()).await;
    if let Err(error) = &result {
        span.record("otel.status_code", "ERROR");
        span.record("error.code", tracing::field::display(&error.code));
        span.record("error.transient", error.is_transient());
    }
    result
}

/// The span of one engine operation on a migration's link.
pub fn engine(operation: &'static str, engine: &str, plan: &LinkPlan) -> tracing::Span {
    tracing::info_span!(
        "engine",
        otel.name = format!("engine {operation}"),
        operation,
        engine,
        // Not `target`: the tracing bridge already exports the log target under that key.
        source_connection = %plan.source.name,
        target_connection = %plan.target.name,
        database = %plan.database,
        otel.status_code = tracing::field::Empty,
        error.code = tracing::field::Empty,
        error.transient = tracing::field::Empty,
    )
}

/// The span of one engine operation on a single connection (assessments).
pub fn engine_on(operation: &'static str, endpoint: &Endpoint) -> tracing::Span {
    tracing::info_span!(
        "engine",
        otel.name = format!("engine {operation}"),
        operation,
        engine = %endpoint.engine,
        connection = %endpoint.name,
        otel.status_code = tracing::field::Empty,
        error.code = tracing::field::Empty,
        error.transient = tracing::field::Empty,
    )
}
