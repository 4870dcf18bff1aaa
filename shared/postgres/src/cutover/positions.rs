//! The positions that prove the drain, read over sessions kept open between the drain's polls.
//!
//! Two facts each prove that the target holds every change committed on the source before the fence
//! position F (the end of the fence's own WAL record):
//! - the slot's `confirmed_flush_lsn` ≥ F: the subscriber reported F flushed. It arrives with the apply
//!   worker's feedback, on its own cadence (the walsender's keepalive, the worker's status interval);
//! - the subscription's `received_lsn` (`pg_stat_subscription` on the target, the apply worker's row) ≥ F,
//!   followed by a flush of the target's WAL. The worker handles the stream one message at a time, in
//!   order, and records a message's position before handling it; every change of a transaction committed
//!   before F comes before F in the stream. So once it records a position ≥ F (in practice the walsender's
//!   keepalive, sent as soon as it has decoded past the fence's record), it has applied and committed
//!   every such transaction. A flush of our own on the target (`FLUSH_WAL`), after that read, makes them
//!   durable on the target server (the WAL is flushed in order; the target's own standbys, if any, are not
//!   waited for). This one needs no feedback round trip.
//!
//! The target position reported is the larger of the two. A worker that restarts loses its row until it
//! receives again, which only makes the second fact arrive later.
//!
//! The walsender sends nothing for the fence's own records (a non-transactional message, an empty
//! transaction: pgoutput skips both), so the worker learns of positions past them from a keepalive, which
//! the walsender sends once it has decoded past the fence's records, which it does only once they are
//! flushed. The fence flushes them itself (`FLUSH_WAL`); as a second guard, each poll that finds the
//! target short of the fence position commits such a flush of its own in the maintenance database (never
//! waiting for a standby; another database, so the walsender decodes and skips it). On a fenced source
//! nothing else flushes WAL but the WAL writer (`wal_writer_delay`, 200 ms): measured, without a real flush
//! the drain waited 0–200 ms for it, with one the target passes the fence 6–18 ms after it. Only while the
//! target is short of the fence position this process recorded (after it, the positions must be free to
//! stay still for `drain_stable_seconds`).
//!
//! The drain asks every few milliseconds, so the two sessions (the source's maintenance database for the
//! slot, the target's database for the subscription) are kept per link and reused; a closed one is opened
//! again, and `forget` closes them when the cutover ends either way.
use crate::connect::{writable, Server, Session};
use milink_core::migration::Position;
use milink_core::ports::{LinkPlan, Positions};
use milink_core::EngineError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tokio_postgres::types::PgLsn;

/// The drain's sessions: the source's maintenance database, the target's database (writable).
pub(crate) struct Pair {
    pub(crate) source: Session,
    pub(crate) target: Session,
}

/// The fence position of each link being drained here (the nudges stop once the target reaches it).
fn fences() -> &'static Mutex<HashMap<String, u64>> {
    static FENCES: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    FENCES.get_or_init(Default::default)
}

/// Notes the fence's position for the drain's nudges (module doc).
pub(crate) fn fenced_at(plan: &LinkPlan, position: u64) {
    fences().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(plan.link_name(), position);
}

fn kept() -> &'static Mutex<HashMap<String, Arc<Pair>>> {
    static KEPT: OnceLock<Mutex<HashMap<String, Arc<Pair>>>> = OnceLock::new();
    KEPT.get_or_init(Default::default)
}

/// Closes the sessions kept for `plan`'s link and the fence session opened ahead, and forgets the fence
/// position (after the switch or the unfence).
pub(crate) fn forget(plan: &LinkPlan) {
    kept().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&plan.link_name());
    super::opened().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&plan.link_name());
    fences().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&plan.link_name());
}

/// The drain's sessions, while they are kept and open: the switch reuses them (inside the window, each
/// login it saves is a few milliseconds).
pub(crate) fn kept_sessions(plan: &LinkPlan) -> Option<Arc<Pair>> {
    let pair = kept().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&plan.link_name()).cloned();
    pair.filter(|p| !p.source.client().is_closed() && !p.target.client().is_closed())
}

async fn sessions(plan: &LinkPlan) -> Result<Arc<Pair>, EngineError> {
    let link = plan.link_name();
    let existing = kept().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&link).cloned();
    if let Some(pair) = existing.filter(|p| !p.source.client().is_closed() && !p.target.client().is_closed()) {
        return Ok(pair);
    }
    let source = Server::new("source", &plan.source)?;
    let target = Server::new("target", &plan.target)?;
    let (source, target) = tokio::try_join!(source.connect(None), target.connect(Some(plan.database.as_str())))?;
    // Its nudges (module doc) must not wait for the link while the synchronous hold is being released.
    source.run("making the drain's source commits local", "SET synchronous_commit = local; SET default_transaction_read_only = off").await?;
    // The target may be fenced (the source, subscribing over a reverse link); its flush must commit.
    writable(&target).await?;
    let pair = Arc::new(Pair { source, target });
    kept().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(link, pair.clone());
    Ok(pair)
}

/// Opens the sessions ahead of the drain (during the fence); a failure here is the drain's to report.
pub(super) async fn warm(plan: &LinkPlan) {
    let _ = sessions(plan).await;
}

pub(crate) async fn positions(plan: &LinkPlan) -> Result<Positions, EngineError> {
    let pair = sessions(plan).await?;
    let result = read(&pair, plan).await;
    if result.is_err() {
        // A broken session is opened again at the next poll (the fence position stays noted).
        kept().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&plan.link_name());
    }
    result
}

/// The last position the link's apply worker recorded before handling a message (module doc: every
/// transaction committed before it is applied), on a session in the target's database; None without one.
pub(crate) async fn received(target: &Session, subscription: &str) -> Result<Option<u64>, EngineError> {
    let row = target
        .maybe_row(
            "reading what the link's apply worker has handled",
            "SELECT s.received_lsn FROM pg_stat_subscription s JOIN pg_subscription p ON p.oid = s.subid
             WHERE p.subname = $1 AND p.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND s.relid IS NULL AND s.received_lsn IS NOT NULL",
            &[&subscription],
        )
        .await?;
    Ok(row.map(|row| u64::from(row.get::<_, PgLsn>(0))))
}

async fn read(pair: &Pair, plan: &LinkPlan) -> Result<Positions, EngineError> {
    let name = plan.link_name();
    let applied = received(&pair.target, &name).await?;
    let row = pair
        .source
        .maybe_row(
            "reading positions",
            "SELECT pg_current_wal_lsn(), confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await?
        .ok_or_else(|| {
            EngineError::definite(
                "slot_missing",
                format!("{}: replication slot {name} does not exist", pair.source.place().label()),
                "The link is gone: cancel the cutover (the source is unfenced) and start the migration again.",
            )
        })?;
    let current = u64::from(row.get::<_, PgLsn>(0));
    let confirmed = row.get::<_, Option<PgLsn>>(1).map(u64::from).unwrap_or(0);
    let mut target = confirmed;
    let fence = fences().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&name).copied();
    if fence.is_some_and(|fence| applied.unwrap_or(0).max(confirmed) < fence) {
        // Wakes the walsender (module doc); the maintenance database is never fenced.
        // Never fatal: without it the drain waits for the WAL writer, as before.
        let _ = pair.source.try_run(super::FLUSH_WAL).await;
    }
    if let Some(applied) = applied.filter(|applied| *applied > confirmed) {
        // Durable before it counts: flushes the target's WAL up to here. Without that flush (a role that
        // may not call pg_logical_emit_message), only the slot's confirmed position counts.
        match pair.target.try_run(super::FLUSH_WAL).await {
            Ok(()) => target = applied,
            Err(error) => {
                tracing::debug!(error = %error, "could not flush the target's WAL; the drain waits for the slot's confirmed position");
            }
        }
    }
    Ok(Positions { source: Position(current), target: Position(target) })
}
