//! The dispatcher: takes messages from the SQLite queue and runs them through the runtime
//! ([`crate::runtime::deliver`]: handler, retry with backoff, give up into the flow and a dead letter), at
//! most `max_concurrency` at once. Only the transport is the embedded host's own: settling a message is
//! updating its row in the queue.
use crate::context::Context;
use crate::runtime::{self, Transport, TransportError};
use chrono::{DateTime, Utc};
use milink_core::message::Envelope;
use milink_core::ports::DeadLetter;
use milink_sqlite::{Delivery, SqliteStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a delivery is leased before it must be renewed (the dispatcher renews it while the step runs).
const LEASE_MS: i64 = 15 * 60 * 1000;
/// How long to wait when the queue is empty, unless a commit that enqueued messages wakes the dispatcher
/// first (`SqliteStore::enqueued`): the wait only matters for retries scheduled for later.
const IDLE: Duration = Duration::from_millis(200);

/// Runs until `shutdown`, then waits for in-flight handlers to finish.
pub async fn run(ctx: Context, store: Arc<SqliteStore>, shutdown: CancellationToken) {
    // The queue's depth and age are gauges (`/metrics`, OTLP): the dispatcher owns the queue, so it says where.
    crate::telemetry::fleet::watch_queue(store.clone());
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
                    _ = store.enqueued() => {}
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
    let transport = SqliteTransport { store: store.clone() };
    let id = delivery.envelope.envelope_id.clone();
    let delivered = runtime::deliver(&ctx, &delivery.envelope, delivery.delivery_count, &transport);
    // A lease that ran out while the step still runs would let the queue hand the same message out again,
    // beside the running one: renew it every third of a lease for as long as the handler runs.
    let renew = async {
        let mut ticker = tokio::time::interval(Duration::from_millis(LEASE_MS as u64 / 3));
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let until = ctx.clock.now() + chrono::Duration::milliseconds(LEASE_MS);
            if let Err(error) = store.renew_lease(&id, until).await {
                tracing::warn!(%error, message = id, "dispatcher: could not renew a lease");
            }
        }
    };
    let outcome = tokio::select! {
        outcome = delivered => outcome,
        () = renew => unreachable!("the renewal loop never ends"),
    };
    if let Err(error) = outcome {
        // The message stays leased and is delivered again when the lease expires or at the next start:
        // handlers are idempotent.
        tracing::error!(%error, message = id, "dispatcher: could not settle a message");
    }
}

/// The SQLite queue as the runtime's transport: settling is updating the message's row.
struct SqliteTransport {
    store: Arc<SqliteStore>,
}

fn transport_error(error: milink_core::ports::StoreError) -> TransportError {
    TransportError(error.to_string())
}

#[async_trait::async_trait]
impl Transport for SqliteTransport {
    async fn complete(&self, envelope: &Envelope) -> Result<(), TransportError> {
        self.store.complete(&envelope.envelope_id).await.map_err(transport_error)
    }

    async fn retry(&self, envelope: &Envelope, _attempt: u32, at: DateTime<Utc>, error: &str) -> Result<(), TransportError> {
        // The queue counts deliveries itself: the next claim is the next attempt.
        self.store.retry(&envelope.envelope_id, at, error).await.map_err(transport_error)
    }

    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), TransportError> {
        let error = letter.last_error.unwrap_or_default();
        self.store.dead_letter(&letter.id, &error, letter.dead_at).await.map_err(transport_error)
    }
}
