//! The embedded host (`milink up`): one process, SQLite state and queue, the axum API, a dispatcher
//! with bounded concurrency and retries, the sync-polling timer, graceful shutdown. The API and the web UI
//! answer behind [`crate::ui::auth`]'s access rule (a token, when one is configured).
//!
//! On start it releases the leases a killed predecessor left behind, so every in-flight step runs again
//! at once; steps are idempotent, so that resumes each migration where it was.
pub mod dispatcher;

use crate::api::{self, ApiState};
use crate::context::Context;
use crate::runtime::poll::{self, PollSettings};
use milink_sqlite::SqliteStore;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Runs the embedded host until `shutdown` is cancelled, then drains in-flight steps.
pub async fn run(
    ctx: Context,
    store: Arc<SqliteStore>,
    listener: tokio::net::TcpListener,
    access: crate::ui::auth::Access,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let released = store.release_leases().await.map_err(std::io::Error::other)?;
    if released > 0 {
        tracing::info!(released, "resuming steps that were in flight when milink last stopped");
    }
    let server = ctx.config.server.clone();
    let router = crate::ui::auth::protect(api::app(ApiState { ctx: ctx.clone(), dead_letters: Some(store.clone()) }), access);
    let dispatcher = tokio::spawn(dispatcher::run(ctx.clone(), store.clone(), shutdown.clone()));
    let poller = tokio::spawn(poll_loop(ctx, Duration::from_millis(server.poll_interval_ms.max(10)), server.max_concurrency, shutdown.clone()));
    let api_shutdown = shutdown.clone();
    axum::serve(listener, router).with_graceful_shutdown(async move { api_shutdown.cancelled().await }).await?;
    let _ = poller.await;
    let _ = dispatcher.await;
    tracing::info!("stopped");
    Ok(())
}

/// Polls every link each `interval`; a tick never starts before the previous one ended.
async fn poll_loop(ctx: Context, interval: Duration, concurrency: usize, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let settings = PollSettings { total: concurrency * 2, ..PollSettings::default() };
        let summary = poll::tick(&ctx, &settings).await;
        if summary.observed + summary.failed + summary.nudged > 0 {
            tracing::trace!(?summary, "poll tick");
        }
    }
}
