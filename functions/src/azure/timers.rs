//! Timer-triggered functions: the fleet poll and the outbox relay.
//!
//! The relay heals the one gap of the outbox: a process that died after committing state and messages but
//! before sending them. It sends every outbox row older than the relay age (younger rows are being sent by
//! the committer right now), then deletes the rows. A row sent by both is one message on the queue, because
//! its id is deterministic and the queue detects duplicates.
use super::catalog::TimerJob;
use super::payload::InvocationResult;
use super::AzureHost;
use crate::runtime::poll;
use axum::http::StatusCode;
use milink_azure::BusMessage;
use milink_core::ports::{DeadLetters, StoreError};
use std::sync::Arc;

/// What one relay run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelaySummary {
    /// Rows found.
    pub pending: usize,
    /// Sent and removed.
    pub sent: usize,
    /// Left for the next run.
    pub failed: usize,
}

/// Runs a timer function.
pub(super) async fn run(host: &AzureHost, job: TimerJob) -> (StatusCode, InvocationResult) {
    match job {
        TimerJob::PollSync => {
            let summary = poll::tick_once(&host.ctx, &host.settings.poll, &host.poll_running).await;
            tracing::info!(?summary, "poll tick");
            (StatusCode::OK, InvocationResult::log(format!("{summary:?}")))
        }
        TimerJob::Relay => match relay(host).await {
            Ok(summary) => (StatusCode::OK, InvocationResult::log(format!("{summary:?}"))),
            Err(error) => (StatusCode::SERVICE_UNAVAILABLE, InvocationResult::log(format!("relay: {error}"))),
        },
    }
}

/// Sends what the outbox still holds.
pub async fn relay(host: &AzureHost) -> Result<RelaySummary, StoreError> {
    let age = chrono::Duration::from_std(host.settings.relay_age).unwrap_or_default();
    let pending = host.store.pending_outbox(host.ctx.clock.now() - age).await?;
    let mut summary = RelaySummary { pending: pending.len(), ..RelaySummary::default() };
    let mut sent = Vec::new();
    for entry in pending {
        match host.sender.send(&BusMessage::for_envelope(&entry.envelope, host.sender.queue_prefix())).await {
            Ok(()) => sent.push(entry),
            Err(error) => {
                summary.failed += 1;
                tracing::warn!(message = %entry.envelope.envelope_id, %error, "relay: send failed; next run retries");
            }
        }
    }
    summary.sent = sent.len();
    host.store.mark_sent(&sent).await?;
    if summary.pending > 0 {
        tracing::info!(?summary, "relay sent messages a committer did not");
    }
    Ok(summary)
}

impl AzureHost {
    pub(super) fn store_dead_letters(&self) -> Arc<dyn DeadLetters> {
        self.store.clone()
    }
}
