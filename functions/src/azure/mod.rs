//! The Azure Functions adapter: a custom handler that runs the same stage handlers and API as the embedded
//! host, fed by the Functions host instead of the SQLite queue and tokio timers.
//!
//! The host starts our binary, waits until `GET /` answers (any status counts), then POSTs each
//! invocation to `/{FunctionName}` with `{Data, Metadata}` and expects `{Outputs, Logs, ReturnValue}` as
//! `application/json` (reference/functions-host.md). Every function is listed once in [`catalog`]:
//! - **HTTP** functions run through [`crate::api::app`], so the routes, bodies and errors are the embedded
//!   host's. host.json turns on `enableProxyingHttpRequest`: the host forwards the caller's request to its
//!   own path under `/api` (any path the routes below do not take) with its body streamed, chunked or not,
//!   and returns our response as is. Without proxying the request is rebuilt from `Data.req` and the
//!   response goes back as the `res` output; that way the host drops a chunked body ([`http`]).
//! - **Queue** functions decode the envelope (double-encoded JSON string, tolerant of every shape the host
//!   uses) and call [`crate::handlers::handle`]. A transient failure is retried by sending the same
//!   envelope again with a scheduled enqueue time (backoff) instead of failing the invocation, because an
//!   abandoned message comes back at once and burns through the queue's delivery count in seconds. When the
//!   attempts run out, [`crate::handlers::exhausted`] lets the flow decide and the message is recorded as a
//!   dead letter. A message that cannot be decoded fails the invocation, so Service Bus dead-letters it after
//!   its max delivery count, where it can be inspected.
//! - **Timer** functions run the runtime's poll tick ([`crate::runtime::poll`]) and the outbox relay
//!   ([`timers`]).
//!
//! Messages leave through the store: [`milink_azure::TableStore`] commits state and outbox rows in one
//! batch, then its publisher ([`milink_azure::ServiceBusSender`], REST) sends them and the rows are
//! deleted; the relay sends what a crash left behind. Non-2xx answers mean "failed" to the host: the
//! trigger message is abandoned and redelivered, outputs are dropped.
pub mod catalog;
mod http;
pub mod payload;
mod queue;
pub mod settings;
pub mod timers;

use crate::context::Context;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use catalog::Trigger;
use milink_azure::{ServiceBusSender, TableStore};
use payload::{Invocation, InvocationResult};
use std::sync::Arc;

pub use crate::runtime::PollSettings;
pub use settings::AzureSettings;

/// Knobs of the adapter (the rest comes from the config's `[server]`: attempts and backoff).
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// Sync polling.
    pub poll: PollSettings,
    /// The relay sends outbox rows committed at least this long ago (younger ones are being sent by
    /// their committer).
    pub relay_age: std::time::Duration,
}

impl Default for HostSettings {
    fn default() -> Self {
        Self { poll: PollSettings::default(), relay_age: std::time::Duration::from_secs(30) }
    }
}

/// What every invocation needs.
#[derive(Clone)]
pub struct AzureHost {
    /// Handlers' context (its stores are the Table store).
    pub ctx: Context,
    /// The Table store itself, for the outbox and dead letters.
    pub store: Arc<TableStore>,
    /// The Service Bus sender, for retries and the relay.
    pub sender: Arc<ServiceBusSender>,
    /// Knobs.
    pub settings: HostSettings,
    poll_running: Arc<tokio::sync::Mutex<()>>,
}

impl AzureHost {
    /// Assembles a host from its parts (the binary builds them from app settings; tests from doubles).
    pub fn new(ctx: Context, store: Arc<TableStore>, sender: Arc<ServiceBusSender>, settings: HostSettings) -> Self {
        Self { ctx, store, sender, settings, poll_running: Arc::default() }
    }
}

/// The custom handler's router: the readiness probe, one POST route per function (`/{FunctionName}`), and
/// every other path for the requests the host proxies (`/api/...`).
pub fn router(host: AzureHost) -> Router {
    Router::new().route("/", get(ready)).route("/{function}", post(invoke)).fallback(proxied).with_state(host)
}

async fn proxied(State(host): State<AzureHost>, request: axum::extract::Request) -> Response {
    http::proxied(&host, request).await
}

/// Serves the custom handler on `listener` until `shutdown` resolves, then lets in-flight invocations finish.
pub async fn serve(
    host: AzureHost,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(host)).with_graceful_shutdown(shutdown).await
}

async fn ready() -> &'static str {
    "milink custom handler ready"
}

/// How long an invocation that arrives before storage answers waits for it before failing. Failing at
/// once would make Service Bus redeliver at once, and ten quick failures dead-letter a message.
const STARTING_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves on `listener` at once, while `connect` (token, tables, connections: slow, and refused with 403
/// while a first deploy's role assignments propagate) runs in the background and is retried until it
/// succeeds. Meanwhile `GET /` answers 503 with what it waits for (the Functions host counts any answer as
/// started, so it does not restart the worker), and each invocation waits up to a minute for the host to be
/// ready, then fails with that reason (the host redelivers it).
pub async fn serve_when_ready<F, Fut>(
    connect: F,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<AzureHost, String>> + Send,
{
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(Starting::Waiting("connecting to storage".into()));
    tokio::spawn(async move {
        let mut delay = std::time::Duration::from_secs(1);
        loop {
            match connect().await {
                Ok(host) => {
                    tracing::info!(connections = host.ctx.config.connections.len(), "milink custom handler ready");
                    let _ = ready_tx.send(Starting::Ready(Box::new(host)));
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in_s = delay.as_secs(), "storage or Service Bus not ready yet; retrying");
                    let _ = ready_tx.send(Starting::Waiting(error));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(30));
                }
            }
        }
    });
    let router = Router::new()
        .route("/", get(probe_starting))
        .route("/{function}", post(invoke_starting))
        .fallback(proxied_starting)
        .with_state(ready_rx);
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

/// The host while it connects.
#[derive(Clone)]
enum Starting {
    Waiting(String),
    Ready(Box<AzureHost>),
}

async fn probe_starting(State(state): State<tokio::sync::watch::Receiver<Starting>>) -> Response {
    let waiting = match &*state.borrow() {
        Starting::Ready(_) => None,
        Starting::Waiting(why) => Some(why.clone()),
    };
    match waiting {
        None => ready().await.into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("milink custom handler starting: {why}")).into_response(),
    }
}

/// The host once it is ready, waiting up to [`STARTING_WAIT`]; otherwise what it still waits for.
async fn wait_ready(mut state: tokio::sync::watch::Receiver<Starting>) -> Result<AzureHost, String> {
    let host = match tokio::time::timeout(STARTING_WAIT, state.wait_for(|s| matches!(s, Starting::Ready(_)))).await {
        Ok(Ok(ready)) => match &*ready {
            Starting::Ready(host) => Some((**host).clone()),
            Starting::Waiting(_) => None,
        },
        _ => None,
    };
    host.ok_or_else(|| match &*state.borrow() {
        Starting::Waiting(why) => why.clone(),
        Starting::Ready(_) => "stopping".into(),
    })
}

async fn invoke_starting(
    State(state): State<tokio::sync::watch::Receiver<Starting>>,
    Path(function): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match wait_ready(state).await {
        Ok(host) => invoke(State(host), Path(function), headers, body).await,
        Err(why) => answer(StatusCode::SERVICE_UNAVAILABLE, InvocationResult::log(format!("milink is starting: {why}"))),
    }
}

/// A proxied API request before storage answers: waits like an invocation, then 503 in the API's error shape
/// (the host passes it to the caller as is).
async fn proxied_starting(State(state): State<tokio::sync::watch::Receiver<Starting>>, request: axum::extract::Request) -> Response {
    match wait_ready(state).await {
        Ok(host) => http::proxied(&host, request).await,
        Err(why) => crate::api::error::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            crate::api::error::ErrorCode::StoreUnavailable,
            format!("milink is starting: {why}; retry shortly"),
        )
        .into_response(),
    }
}

async fn invoke(State(host): State<AzureHost>, Path(function): Path<String>, headers: axum::http::HeaderMap, body: axum::body::Bytes) -> Response {
    let Some(function) = catalog::find(&function) else {
        return answer(StatusCode::NOT_FOUND, InvocationResult::log(format!("no function named {function}")));
    };
    let invocation: Invocation = match serde_json::from_slice(&body) {
        Ok(invocation) => invocation,
        Err(error) => {
            tracing::error!(function = function.name, %error, "invocation body is not the host's JSON");
            return answer(StatusCode::BAD_REQUEST, InvocationResult::log(format!("unreadable invocation: {error}")));
        }
    };
    let trigger = payload::get(&invocation.data, catalog::binding_name(&function.trigger)).cloned();
    let (status, result) = match function.trigger {
        Trigger::Http { .. } => http::run(&host, trigger.as_ref(), headers.get("traceparent")).await,
        Trigger::Queue { stage } => queue::run(&host, stage, trigger.as_ref(), &invocation.metadata).await,
        Trigger::Timer { job, .. } => timers::run(&host, job).await,
    };
    answer(status, result)
}

/// Every answer is JSON: the host cannot read any other media type (azure-functions-host #6462).
fn answer(status: StatusCode, result: InvocationResult) -> Response {
    (status, Json(result)).into_response()
}
