//! `POST /api/connections/{name}/test`: the wizard's "Test connection".
//!
//! The engine opens a session the way the migration will (same url, credentials, TLS mode) and runs one
//! read-only query. A failed test is an answer, not an API error: the body says how far it got
//! (`reachable`, `authenticated`) and carries the engine's classified error (code, message, remediation)
//! with every secret already scrubbed by the engine. Only an unknown connection or a name that does not
//! parse is an API error. The test takes at most the connection's connect timeout plus [`QUERY_BUDGET`].
use super::error::{ApiError, ErrorCode};
use super::ApiState;
use axum::extract::{Path, State};
use axum::Json;
use milink_core::names::ConnectionName;
use milink_core::EngineError;
use serde_json::{json, Value};
use std::time::Duration;

/// How long the test may take in all before it is reported as unreachable.
pub const QUERY_BUDGET: Duration = Duration::from_secs(20);

/// Engine error codes that mean nothing answered at the address (as opposed to a server that answered
/// and refused).
const UNREACHABLE: [&str; 4] = ["unreachable", "invalid_url", "driver_error", "timeout"];

/// `POST /api/connections/{name}/test`.
pub async fn test(State(state): State<ApiState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let connection = ConnectionName::parse(&name).map_err(|e| ApiError::bad_request(ErrorCode::InvalidName, e.to_string()))?;
    let endpoint = state.ctx.config.endpoint(&connection)?;
    let engine = state.ctx.engines.for_connection(endpoint)?;
    let tested_at = state.ctx.clock.now();
    let outcome = match tokio::time::timeout(QUERY_BUDGET, engine.test_connection(endpoint)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(EngineError::transient(
            "timeout",
            format!("connection '{connection}' did not answer within {} s", QUERY_BUDGET.as_secs()),
            "check that the server is up and that this machine can reach its address and port (firewall, DNS)",
        )),
    };
    let mut body = json!({ "connection": connection.as_str(), "engine": endpoint.engine, "testedAt": tested_at });
    match outcome {
        Ok(check) => {
            body["ok"] = json!(true);
            body["reachable"] = json!(true);
            body["authenticated"] = json!(true);
            body["serverVersion"] = json!(check.server_version);
            body["tls"] = json!(check.tls);
            body["tlsProtocol"] = json!(check.tls_protocol);
            body["connectMs"] = json!(round(check.connect_ms));
            body["roundTripMs"] = json!(round(check.round_trip_ms));
        }
        Err(error) => {
            body["ok"] = json!(false);
            body["reachable"] = json!(!UNREACHABLE.contains(&error.code.as_str()) && error.code != "test_connection_not_supported");
            body["authenticated"] = json!(false);
            body["error"] = json!({ "code": error.code, "message": error.message, "remediation": error.remediation });
        }
    }
    Ok(Json(body))
}

fn round(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}
