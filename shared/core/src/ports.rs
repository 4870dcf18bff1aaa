//! Ports: the traits hosts and engines implement, kept narrow so a handler asks only for what it uses.
//!
//! - [`Engine`]: one per kind of database (PostgreSQL, SQL Server → MI). Every method is idempotent and
//!   safe to repeat after a crash: it checks what exists before it acts.
//! - [`MigrationStore`], [`AssessmentStore`]: state, with optimistic concurrency (a version per
//!   migration) and the outbox written in the same transaction as the state.
//! - [`Clock`]: time is injected so polling, deadlines and stall detection are testable without sleeps.
use crate::assessment::{Assessment, AssessmentReport, Finding};
use crate::config::Endpoint;
use crate::error::EngineError;
use crate::message::Envelope;
use crate::migration::{Migration, Observation, Position, Settings, Verification};
use crate::names::{ConnectionName, DatabaseName, MigrationId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// Everything an engine needs to act on one link. Built from a migration and the config each time it is
/// needed; never stored (the endpoints carry secrets in memory).
#[derive(Debug, Clone)]
pub struct LinkPlan {
    /// The migration this link belongs to.
    pub migration_id: MigrationId,
    /// Source server.
    pub source: Endpoint,
    /// Target server.
    pub target: Endpoint,
    /// The database (same name on both sides).
    pub database: DatabaseName,
    /// The migration's settings.
    pub settings: Settings,
}

impl LinkPlan {
    /// The name milink gives the objects it creates for this link (publication, subscription, slot,
    /// availability group): derived from the migration id so it never contains user input.
    pub fn link_name(&self) -> String {
        crate::admission::link_name(&self.migration_id)
    }
}

/// Source and target positions, compared to prove catch-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Positions {
    /// The source's current position.
    pub source: Position,
    /// What the target has confirmed.
    pub target: Position,
}

/// One kind of source → target migration.
#[async_trait]
pub trait Engine: Send + Sync {
    /// The engine's name in the config (`postgres`, `sqlserver`).
    fn name(&self) -> &'static str;

    /// The least time, in seconds, the target's position must stay at or past the fence position before
    /// draining counts as done, whatever the migration's settings say. Zero for engines whose confirmation
    /// is final (PostgreSQL's confirmed_flush_lsn); the MI link's documented rule asks for a stable period.
    fn min_drain_stable_seconds(&self) -> u64 {
        0
    }

    /// Read-only assessment of a source server: findings, per-database readiness, sizing.
    async fn assess(&self, source: &Endpoint) -> Result<Assessment, EngineError>;

    /// Prerequisites and the connection test, both directions. Blockers fail the migration.
    async fn validate(&self, plan: &LinkPlan) -> Result<Vec<Finding>, EngineError>;

    /// Creates the link; each step checks what exists first, so a repeat resumes.
    async fn create_link(&self, plan: &LinkPlan) -> Result<(), EngineError>;

    /// Looks at the link: phase, progress, lag, problems.
    async fn observe(&self, plan: &LinkPlan, now: DateTime<Utc>) -> Result<Observation, EngineError>;

    /// Before the fence, while the source still takes writes: what keeps `finalize`'s part of the
    /// write-downtime window from growing with the data (the PostgreSQL engine verifies every table in
    /// full and tracks what changes after, so `finalize` compares only that). Informative: `finalize`
    /// decides, and compares everything when this did not happen.
    async fn prepare_cutover(&self, plan: &LinkPlan) -> Result<Option<Verification>, EngineError> {
        let _ = plan;
        Ok(None)
    }

    /// Stops writes on the source and returns the source position after the fence.
    async fn fence(&self, plan: &LinkPlan) -> Result<Position, EngineError>;

    /// Gives the source its writes back.
    async fn unfence(&self, plan: &LinkPlan) -> Result<(), EngineError>;

    /// The source's current position and what the target has confirmed.
    async fn positions(&self, plan: &LinkPlan) -> Result<Positions, EngineError>;

    /// Sequences and verification, after the target has every change. The verification must cover every
    /// table in scope (`complete`) for the cutover to complete.
    async fn finalize(&self, plan: &LinkPlan) -> Result<Verification, EngineError>;

    /// Compares the content of source and target while the link syncs (on demand), at matched positions
    /// so replication lag is not reported as a difference. Engines that cannot refuse with a definite error.
    async fn verify(&self, plan: &LinkPlan) -> Result<Verification, EngineError> {
        let _ = plan;
        Err(EngineError::definite(
            "verify_not_supported",
            format!("the {} engine cannot compare content while the link syncs", self.name()),
            "the cutover still verifies; nothing to do",
        ))
    }

    /// Makes the target primary; breaks the link, or reverses it when `keep_reverse_link`.
    async fn switch(&self, plan: &LinkPlan, keep_reverse_link: bool) -> Result<(), EngineError>;

    /// Fails back to the source over the reverse link kept at cutover (`keep_reverse_link`): the source
    /// becomes primary again. Returns how long each of its steps took (fence, drain, finalize, switch), as
    /// far as the engine can tell them apart. Engines without a reverse link refuse with a definite error.
    async fn failback(&self, plan: &LinkPlan) -> Result<Vec<crate::migration::StepDuration>, EngineError> {
        let _ = plan;
        Err(EngineError::definite(
            "failback_not_supported",
            format!("the {} engine keeps no reverse link, so it cannot fail back", self.name()),
            "migrate back with a new migration from the target to the source",
        ))
    }

    /// Removes the reverse link a completed cutover kept (`keep_reverse_link`) from both servers: after it
    /// no failback is possible. Safe to repeat. Engines without a reverse link refuse with a definite error.
    async fn drop_reverse_link(&self, plan: &LinkPlan) -> Result<(), EngineError> {
        let _ = plan;
        Err(EngineError::definite(
            "reverse_link_not_supported",
            format!("the {} engine keeps no reverse link that milink could remove", self.name()),
            "nothing to remove",
        ))
    }

    /// What `server` has and uses of the resources a link takes in `role` (admission control,
    /// [`crate::admission`]). `None`: the engine cannot tell, and only the user's caps apply.
    async fn capacity(&self, server: &Endpoint, role: crate::admission::Role) -> Result<Option<crate::admission::Capacity>, EngineError> {
        let _ = (server, role);
        Ok(None)
    }

    /// Removes everything `create_link` made; drops the target database only when `drop_target`.
    async fn drop_link(&self, plan: &LinkPlan, drop_target: bool) -> Result<(), EngineError>;

    /// Connects to one configured server the way milink will (its url, credentials and TLS settings), runs
    /// one read-only query and says what answered: the wizard's "Test connection". Engines that cannot
    /// refuse with a definite error.
    async fn test_connection(&self, endpoint: &Endpoint) -> Result<ConnectionCheck, EngineError> {
        Err(EngineError::definite(
            "test_connection_not_supported",
            format!("the {} engine cannot test connection '{}' on its own", self.name(), endpoint.name),
            "start the migration: its validation step tests both connections",
        ))
    }
}

/// What answered a connection test: the server let milink in and ran a query.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionCheck {
    /// The server's version, as it reports it.
    pub server_version: String,
    /// Whether the session is encrypted; `None` when the engine cannot tell.
    pub tls: Option<bool>,
    /// The TLS protocol in use (`TLSv1.3`), when encrypted and reported.
    pub tls_protocol: Option<String>,
    /// Time to open the session (network, TLS handshake, authentication), in milliseconds.
    pub connect_ms: f64,
    /// One query's round trip on the open session, in milliseconds.
    pub round_trip_ms: f64,
}

/// Errors of a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone saved a newer version first: re-read and re-decide.
    #[error("version conflict on {0}: re-read and retry")]
    Conflict(String),
    /// The store itself failed.
    #[error("store: {0}")]
    Backend(String),
}

/// The outcome of [`MigrationStore::create`].
#[derive(Debug, Clone)]
pub enum Created {
    /// A new migration was stored.
    New(Migration),
    /// A migration for the same source, target and database already exists (not cancelled or failed):
    /// it is returned instead, and nothing was written.
    Existing(Migration),
}

/// Which migrations to list.
#[derive(Debug, Clone, Default)]
pub struct MigrationFilter {
    /// Only those not in a terminal phase.
    pub active_only: bool,
}

/// Migration state with its outbox.
#[async_trait]
pub trait MigrationStore: Send + Sync {
    /// Stores a new migration and its first messages, unless one for the same (source, target, database)
    /// is active or completed: then that one is returned. Atomic, so concurrent starts make one migration.
    async fn create(&self, migration: &Migration, outbox: &[Envelope]) -> Result<Created, StoreError>;

    /// Loads one migration.
    async fn load(&self, id: &MigrationId) -> Result<Option<Migration>, StoreError>;

    /// Saves `migration` (whose `version` is the one that was loaded) and its messages in one
    /// transaction; fails with [`StoreError::Conflict`] if the stored version moved. Increments the version.
    async fn save(&self, migration: &Migration, outbox: &[Envelope]) -> Result<Migration, StoreError>;

    /// Lists migrations, newest first.
    async fn list(&self, filter: &MigrationFilter) -> Result<Vec<Migration>, StoreError>;

    /// The migration for this database on this link, if one is active or completed.
    async fn find(
        &self,
        source: &ConnectionName,
        target: &ConnectionName,
        database: &DatabaseName,
    ) -> Result<Option<Migration>, StoreError>;
}

/// Assessment reports.
#[async_trait]
pub trait AssessmentStore: Send + Sync {
    /// Inserts or replaces a report (with messages to send, in the same transaction).
    async fn put_assessment(&self, report: &AssessmentReport, outbox: &[Envelope]) -> Result<(), StoreError>;

    /// Loads one report.
    async fn get_assessment(&self, id: &str) -> Result<Option<AssessmentReport>, StoreError>;

    /// The newest completed report for a connection.
    async fn latest_assessment(&self, connection: &ConnectionName) -> Result<Option<AssessmentReport>, StoreError>;
}

/// A message whose attempts ran out, as both hosts keep it (`GET /api/deadletters`). The flow has already
/// been told (the step stalled or its cutover was abandoned); this is what an operator inspects.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Message id.
    pub id: String,
    /// Stage it was for.
    pub stage: crate::message::Stage,
    /// The message.
    pub envelope: serde_json::Value,
    /// Deliveries made.
    pub deliveries: u32,
    /// The last error.
    pub last_error: Option<String>,
    /// When it was given up.
    pub dead_at: DateTime<Utc>,
}

/// Where a host keeps its dead letters (the SQLite queue's table, a Table Storage table).
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Dead letters, newest first.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError>;
}

/// Where time comes from.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
