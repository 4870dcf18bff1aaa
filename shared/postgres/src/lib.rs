//! milink-postgres: the PostgreSQL → PostgreSQL engine, built on native logical replication.
//!
//! A link is three objects named after the migration (`milink_<id>`, never user input): a publication
//! on the source listing the database's tables, a subscription on the target (`copy_data = true`) that
//! seeds then streams, and the replication slot the subscription creates on the source. Before the link,
//! the schema is copied with pg_dump/psql, because logical replication carries rows, not DDL. At cutover
//! the source is fenced (every session on the database ended and new ones read-only), the target is
//! proven to hold everything up to the source's WAL position after the fence (the slot's
//! `confirmed_flush_lsn`), sequences are set and row counts compared, and the subscription is dropped.
//!
//! One file per concern, each readable on its own: [`sql`] quoting, `connect` and `errors` (reaching a
//! server, classifying what goes wrong), `assess` + `rules` + `sizing`, `validate`, `link` (create, switch,
//! drop) with `schema` (the pg_dump copy), `observe`, `cutover` (fence, unfence, positions) and
//! `finalize`. The engine itself holds no state a crash could lose: every step re-reads the catalogs and
//! acts only on what is missing. The one exception is `observe`'s memory of error counters and of how
//! long a worker has been missing, used only to word problems, and rebuilt from scratch after a restart.
#![warn(missing_docs)]

mod assess;
mod capacity;
mod connect;
mod cutover;
pub mod doctor;
mod drift;
mod errors;
mod finalize;
mod link;
mod observe;
mod pooler;
mod reverse;
mod reach;
mod rules;
mod schema;
mod seed;
mod sizing;
mod sql;
mod tls;
mod validate;
mod verify;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use milink_core::assessment::Assessment;
use milink_core::config::{Endpoint, Secret};
use milink_core::migration::{Observation, Position, Verification};
use milink_core::ports::{ConnectionCheck, Engine, LinkPlan, Positions};
use milink_core::{EngineError, Finding};

/// The PostgreSQL engine. Cheap to build; share one per process (it remembers recent error counters
/// of the links it observes, to tell a new apply error from an old one).
#[derive(Default)]
pub struct PostgresEngine {
    watches: observe::Watches,
}

impl PostgresEngine {
    /// A new engine.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Passwords a plan holds, for scrubbing whatever goes back to the caller.
fn secrets(plan: &LinkPlan) -> Vec<&Secret> {
    plan.source.password.iter().chain(plan.target.password.iter()).collect()
}

fn scrubbed<T>(plan: &LinkPlan, result: Result<T, EngineError>) -> Result<T, EngineError> {
    result.map_err(|error| errors::redact(error, &secrets(plan)))
}

#[async_trait]
impl Engine for PostgresEngine {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn assess(&self, source: &Endpoint) -> Result<Assessment, EngineError> {
        let secrets: Vec<&Secret> = source.password.iter().collect();
        match assess::assess(source).await {
            Ok(mut assessment) => {
                for db in &mut assessment.databases {
                    db.findings = db.findings.drain(..).map(|f| errors::redact_finding(f, &secrets)).collect();
                }
                Ok(assessment)
            }
            Err(error) => Err(errors::redact(error, &secrets)),
        }
    }

    async fn test_connection(&self, endpoint: &Endpoint) -> Result<ConnectionCheck, EngineError> {
        let secrets: Vec<&Secret> = endpoint.password.iter().collect();
        reach::test_connection(endpoint).await.map_err(|error| errors::redact(error, &secrets))
    }

    async fn validate(&self, plan: &LinkPlan) -> Result<Vec<Finding>, EngineError> {
        let findings = scrubbed(plan, validate::validate(plan).await)?;
        Ok(findings.into_iter().map(|f| errors::redact_finding(f, &secrets(plan))).collect())
    }

    async fn create_link(&self, plan: &LinkPlan) -> Result<(), EngineError> {
        scrubbed(plan, link::create(plan, &self.watches.seeders).await)
    }

    async fn observe(&self, plan: &LinkPlan, now: DateTime<Utc>) -> Result<Observation, EngineError> {
        scrubbed(plan, observe::observe(plan, now, &self.watches).await)
    }

    async fn prepare_cutover(&self, plan: &LinkPlan) -> Result<Option<Verification>, EngineError> {
        // Never in the cutover's way: without it, finalize compares everything (slower, as safe).
        let prepared = match scrubbed(plan, verify::before_fence(plan).await) {
            Ok(verification) => Some(verification),
            Err(error) => {
                tracing::warn!(error = %error.message, "no verification before the fence: finalize compares every row");
                None
            }
        };
        if !prepared.as_ref().is_some_and(|v| v.proves_a_difference()) {
            cutover::open_fence_session(plan).await;
        }
        Ok(prepared)
    }

    async fn fence(&self, plan: &LinkPlan) -> Result<Position, EngineError> {
        // With a pooler, its PAUSE comes first so no transaction is in flight when the fence ends sessions;
        // a failed fence lifts it at once (pooler module doc: the traffic is held one attempt at most).
        let paused = match pooler::scrubbed(plan, pooler::pause(plan).await) {
            Ok(paused) => paused,
            Err(error) => {
                cutover::hold::release(plan).await;
                cutover::close_fence_session(plan);
                return Err(error);
            }
        };
        let fenced = scrubbed(plan, cutover::fence(plan).await);
        if let (Err(_), Some(pooler)) = (&fenced, &paused) {
            pooler::resume_quietly(pooler, plan.database.as_str()).await;
        }
        match fenced.is_ok() {
            true => {
                // While the drain waits for the target: the window's comparison finds it read.
                verify::take_during_drain(plan);
                // Nothing commits on the fenced database: the hold's work is done. Outside the window
                // (the switch releases it too, should this process die before).
                let plan = plan.clone();
                tokio::spawn(async move { cutover::hold::release(&plan).await });
            }
            false => {
                cutover::hold::release(plan).await;
            }
        }
        fenced
    }

    async fn unfence(&self, plan: &LinkPlan) -> Result<(), EngineError> {
        cutover::hold::release(plan).await;
        scrubbed(plan, cutover::unfence(plan).await)?;
        // The abandoned cutover's tracking slots would hold the source's WAL until the next cutover.
        if let Err(error) = scrubbed(plan, verify::stop_tracking(plan).await) {
            tracing::warn!(error = %error.message, "the verification's tracking slots stay until the next cutover or cancel");
        }
        // Only once the source takes writes again: clients released earlier would meet a read-only source.
        pooler::scrubbed(plan, pooler::resume(plan).await)
    }

    async fn positions(&self, plan: &LinkPlan) -> Result<Positions, EngineError> {
        scrubbed(plan, cutover::positions(plan).await)
    }

    async fn finalize(&self, plan: &LinkPlan) -> Result<Verification, EngineError> {
        scrubbed(plan, finalize::finalize(plan).await)
    }

    async fn verify(&self, plan: &LinkPlan) -> Result<Verification, EngineError> {
        scrubbed(plan, verify::verify(plan).await)
    }

    async fn switch(&self, plan: &LinkPlan, keep_reverse_link: bool) -> Result<(), EngineError> {
        if keep_reverse_link {
            // The target may be fenced (a cutover after a failback): dropped from a writable session.
            scrubbed(plan, reverse::drop_subscription(plan).await)?;
        }
        // A hold left by a fence whose process died before releasing it: without the link's walsender,
        // every commit on the source server would wait. Released (or the switch fails) before it goes.
        scrubbed(plan, cutover::hold::release_or_fail(plan).await)?;
        scrubbed(plan, link::switch(plan, &self.watches.seeders).await)?;
        if keep_reverse_link {
            // Before the pooler releases the clients to the target: its writes must all be in the slot.
            scrubbed(plan, reverse::keep_reverse_link(plan).await)?;
        }
        self.watches.forget(&plan.link_name());
        cutover::forget(plan);
        verify::forget_taken(&plan.link_name());
        // The pooler follows the primary: repoint its entry, RELOAD, RESUME (each safe to repeat).
        pooler::scrubbed(plan, pooler::repoint(plan).await)
    }

    async fn capacity(
        &self,
        server: &Endpoint,
        role: milink_core::admission::Role,
    ) -> Result<Option<milink_core::admission::Capacity>, EngineError> {
        let secrets: Vec<&Secret> = server.password.iter().collect();
        capacity::capacity(server, role).await.map(Some).map_err(|error| errors::redact(error, &secrets))
    }

    async fn failback(&self, plan: &LinkPlan) -> Result<Vec<milink_core::migration::StepDuration>, EngineError> {
        pooler::scrubbed(plan, reverse::failback(plan).await)
    }

    async fn drop_reverse_link(&self, plan: &LinkPlan) -> Result<(), EngineError> {
        scrubbed(plan, reverse::drop_reverse_link(plan).await)
    }

    async fn drop_link(&self, plan: &LinkPlan, drop_target: bool) -> Result<(), EngineError> {
        scrubbed(plan, cutover::hold::release_or_fail(plan).await)?;
        // Best effort: the source may be gone; a slot left there holds its WAL, so say so.
        if let Err(error) = scrubbed(plan, verify::stop_tracking(plan).await) {
            tracing::warn!(error = %error.message, "could not drop the verification's tracking slots ({link}_vt on each server): drop them by hand", link = plan.link_name());
        }
        scrubbed(plan, link::drop_link(plan, drop_target, &self.watches.seeders).await)?;
        self.watches.forget(&plan.link_name());
        cutover::forget(plan); // a fence session opened ahead of a cutover that never fenced
        verify::forget_taken(&plan.link_name());
        Ok(())
    }
}
