//! The dispatcher: takes messages from the SQLite queue and runs their handlers, at most
//! `max_concurrency` at once; retries transient failures with exponential backoff and jitter; after
//! `max_attempts` deliveries it tells the flow (which stalls or abandons the step) and dead-letters the
//! message, where `GET /api/deadletters` shows it.
use crate::context::Context;
use crate::handlers;
use futures::FutureExt;
use milink_core::error::EngineError;
use milink_sqlite::{Delivery, SqliteStore};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a delivery is leased; longer than any step (drain is bounded by its own deadline).
const LEASE_MS: i64 = 15 * 60 * 1000;
/// How long to wait when the queue is empty.
const IDLE: Duration = Duration::from_millis(25);

/// Runs until `shutdown`, then waits for in-flight handlers to finish.
pub async fn run(ctx: Context, store: Arc<SqliteStore>, shutdown: CancellationToken) {
    let limit = ctx.config.server.max_concurrency.max(1);
    let mut running = JoinSet::new();
    loop {
        while running.try_join_next().is_some() {}
        if shutdown.is_cancelled() {
            break;
        }
        if running.len() >= limit {
            tokio::select! {
                _ = running.join_next() => {}
                _ = shutdown.cancelled() => {}
            }
            continue;
        }
        match store.claim(ctx.clock.now(), LEASE_MS).await {
            Ok(Some(delivery)) => {
                running.spawn(deliver(ctx.clone(), store.clone(), delivery));
            }
            Ok(None) => {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            Err(error) => {
                tracing::error!(%error, "dispatcher: cannot read the queue");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    if !running.is_empty() {
        tracing::info!(in_flight = running.len(), "waiting for in-flight steps to finish");
    }
    while running.join_next().await.is_some() {}
}

async fn deliver(ctx: Context, store: Arc<SqliteStore>, delivery: Delivery) {
    let envelope = &delivery.envelope;
    let id = envelope.envelope_id.as_str();
    // A panic in a handler is a failed delivery like any other: retried, then dead-lettered and shown,
    // never a message stuck under its lease.
    let outcome = std::panic::AssertUnwindSafe(handlers::handle(&ctx, envelope)).catch_unwind().await.unwrap_or_else(|_| {
        Err(handlers::Retry(EngineError::transient("handler_panicked", "the step's handler panicked (a bug)", "see the log; report it")))
    });
    let settled = match outcome {
        Ok(()) => store.complete(id).await,
        Err(handlers::Retry(error)) => settle_failure(&ctx, &store, &delivery, error).await,
    };
    if let Err(error) = settled {
        // The message stays leased and is delivered again when the lease expires or at the next start:
        // handlers are idempotent.
        tracing::error!(%error, message = id, "dispatcher: could not settle a message");
    }
}

async fn settle_failure(
    ctx: &Context,
    store: &SqliteStore,
    delivery: &Delivery,
    error: EngineError,
) -> Result<(), milink_core::ports::StoreError> {
    let server = &ctx.config.server;
    let id = delivery.envelope.envelope_id.as_str();
    if delivery.delivery_count >= server.max_attempts {
        let text = format!("{}: {}", error.code, error.message);
        if let Err(handlers::Retry(e)) = handlers::exhausted(ctx, &delivery.envelope, error).await {
            tracing::error!(error = %e.message, message = id, "could not record exhausted retries; retrying later");
            return store.retry(id, ctx.clock.now() + chrono::Duration::seconds(5), &e.message).await;
        }
        return store.dead_letter(id, &text, ctx.clock.now()).await;
    }
    let delay = backoff(server.retry_base_ms, server.retry_max_ms, delivery.delivery_count);
    tracing::info!(message = id, attempt = delivery.delivery_count, delay_ms = delay.as_millis() as u64, error = %error.message, "retrying");
    let not_before = ctx.clock.now() + chrono::Duration::from_std(delay).unwrap_or_default();
    store.retry(id, not_before, &error.message).await
}

/// Exponential backoff with jitter: base·2^(attempt−1), capped, then a random 50–100 % of it so that
/// many migrations failing together do not retry in lockstep.
pub fn backoff(base_ms: u64, max_ms: u64, attempt: u32) -> Duration {
    let exponential = base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(20)).min(max_ms);
    let jittered = rand::thread_rng().gen_range(exponential / 2..=exponential.max(1));
    Duration::from_millis(jittered)
}

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        for attempt in 1..=12 {
            let expected = (500u64 << (attempt - 1)).min(30_000);
            let delay = backoff(500, 30_000, attempt).as_millis() as u64;
            assert!(delay >= expected / 2 && delay <= expected, "attempt {attempt}: {delay} not in {}..={expected}", expected / 2);
        }
    }
}
