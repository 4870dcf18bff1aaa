//! A migration: one database moving over one link, and everything the flow remembers about it.
//!
//! The stored state is small and explicit: the [`Phase`] the flow is in, the last [`Observation`] of the
//! link, an optional stall, the cutover record, and a history. The status users see ([`Status`]) is
//! *derived* from those, never stored separately, so it cannot disagree with them: "Seeding 40 %" is
//! phase Syncing plus an observation that says seeding at 40 %.
use crate::error::EngineError;
use crate::names::{ConnectionName, DatabaseName, MigrationId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::verification::{
    Difference, DifferenceKind, DifferingRange, SchemaChange, TableCount, Verification, VerifyMethod, WindowCheck, MAX_LISTED_KEYS,
};

/// Settings of one migration, chosen at start (all have defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Settings {
    /// Lag (bytes) at or below which a fully seeded link counts as ready for cutover.
    pub ready_lag_bytes: u64,
    /// How long cutover waits for the target to confirm every change before it unfences and gives up.
    pub drain_timeout_seconds: u64,
    /// How long the link's positions must stay equal before draining counts as done (the MI link rule;
    /// zero for engines whose confirmation is already final).
    pub drain_stable_seconds: u64,
    /// Keep a reverse link after cutover (failback), where the engine supports it.
    pub keep_reverse_link: bool,
    /// On cancel, also drop the database milink created on the target.
    pub drop_target_on_cancel: bool,
    /// Roles (logins) to fence at cutover in addition to every session on the database. Engines that
    /// fence by login (SQL Server) need them; PostgreSQL fences every session on the database anyway.
    pub fence_roles: Vec<String>,
    /// Seconds without any progress, while not caught up, after which the link is reported Stalled.
    pub stall_after_seconds: u64,
    /// Seed with milink's parallel copy from one snapshot (true), or with the engine's native initial sync.
    pub seed_parallel: bool,
    /// Copy workers for parallel seeding; 0 = automatic (4, fewer when the servers have few free connections).
    pub seed_workers: u32,
    /// Size of one copy chunk in MiB for parallel seeding; 0 = automatic (64 MiB).
    pub seed_chunk_mb: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ready_lag_bytes: 1024 * 1024,
            drain_timeout_seconds: 30,
            drain_stable_seconds: 0,
            keep_reverse_link: false,
            drop_target_on_cancel: false,
            fence_roles: Vec::new(),
            stall_after_seconds: 300,
            seed_parallel: true,
            seed_workers: 0,
            seed_chunk_mb: 0,
        }
    }
}

impl Settings {
    /// Checks the values, saying which one is wrong and what is allowed. Bounds keep every deadline
    /// computable and shorter than a delivery lease (15 min), so a drain is never delivered twice at once.
    pub fn validate(&self) -> Result<(), String> {
        if self.ready_lag_bytes > 1024 * 1024 * 1024 {
            return Err("readyLagBytes must be at most 1073741824 (1 GiB)".into());
        }
        if !(1..=600).contains(&self.drain_timeout_seconds) {
            return Err("drainTimeoutSeconds must be between 1 and 600".into());
        }
        if self.drain_stable_seconds >= self.drain_timeout_seconds {
            return Err("drainStableSeconds must be less than drainTimeoutSeconds".into());
        }
        if !(10..=7 * 24 * 3600).contains(&self.stall_after_seconds) {
            return Err("stallAfterSeconds must be between 10 and 604800 (7 days)".into());
        }
        if self.seed_workers > 64 {
            return Err("seedWorkers must be at most 64 (0 = automatic)".into());
        }
        if self.seed_chunk_mb > 64 * 1024 {
            return Err("seedChunkMb must be at most 65536 (0 = automatic)".into());
        }
        for role in &self.fence_roles {
            if role.is_empty() || role.chars().count() > 128 || role.chars().any(char::is_control) {
                return Err(format!("fenceRoles entry {role:?} is not a valid login name (1-128 printable characters)"));
            }
        }
        Ok(())
    }
}

/// A replication position, comparable within one engine (PostgreSQL LSN, SQL Server log block LSN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Position(pub u64);

/// Where the link is, as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkPhase {
    /// Objects are being created; nothing copied yet.
    Deploying,
    /// Initial copy in progress.
    Seeding,
    /// Copy done, streaming changes.
    Streaming,
}

/// A problem the link reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkProblem {
    /// Which known condition, where an alert names it on its own (`crate::alerts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ProblemKind>,
    /// What is wrong.
    pub reason: String,
    /// What to do.
    pub remediation: String,
}

/// Conditions of a link that alerts tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProblemKind {
    /// Nothing has used the link's replication slot on the source for a while: the slot keeps the source's
    /// WAL while no one reads it.
    SlotInactive,
}

/// One look at a link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// When it was taken (by the injected clock).
    pub at: DateTime<Utc>,
    /// Deploying, Seeding or Streaming.
    pub phase: LinkPhase,
    /// Seeding progress, 0–100.
    pub progress_percent: f64,
    /// Bytes of change the target has not confirmed.
    pub lag_bytes: Option<u64>,
    /// Seconds behind, when the engine can tell.
    pub lag_seconds: Option<f64>,
    /// A position that moves whenever the link makes progress (used to detect stalls).
    pub progress_marker: Option<Position>,
    /// What is wrong with the link, if anything.
    pub problem: Option<LinkProblem>,
    /// Changes to the source's schema since the link was made: carried ones are informative, the others
    /// block the cutover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<SchemaChange>,
    /// While seeding, when the engine can tell: bytes copied of the total, and the time left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<SeedProgress>,
}

#[cfg(test)]
impl Observation {
    /// A healthy streaming observation with `lag_bytes` of lag, taken at `at` (tests).
    pub(crate) fn streaming_for_tests(at: DateTime<Utc>, lag_bytes: u64) -> Self {
        Self {
            at,
            phase: LinkPhase::Streaming,
            progress_percent: 100.0,
            lag_bytes: Some(lag_bytes),
            lag_seconds: None,
            progress_marker: None,
            problem: None,
            drift: Vec::new(),
            seed: None,
        }
    }
}

/// How far the initial copy is, in bytes, and when it should end at the rate so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedProgress {
    /// Bytes of the source copied to the target so far (index builds count as their index bytes).
    pub copied_bytes: u64,
    /// Bytes to copy in all (tables, then their indexes).
    pub total_bytes: u64,
    /// Seconds left at the rate so far; none until there is a rate.
    pub eta_seconds: Option<f64>,
}

impl Observation {
    /// The schema changes that block a cutover (not carried by the engine).
    pub fn blocking_drift(&self) -> impl Iterator<Item = &SchemaChange> {
        self.drift.iter().filter(|c| !c.carried)
    }
}

/// The steps of a cutover, in order (Unfencing only when a cutover is abandoned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CutoverStep {
    /// Stopping writes on the source.
    Fencing,
    /// Waiting until the target holds every change committed before the fence.
    Draining,
    /// Sequences, verification.
    Finalizing,
    /// Making the target primary; breaking or reversing the link. The point of no return.
    Switching,
    /// Giving the source its writes back after an abandoned cutover.
    Unfencing,
}

/// Where the flow is. The user-facing [`Status`] is derived from this plus the last observation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "camelCase")]
pub enum Phase {
    /// Prerequisites and connection test.
    Validating,
    /// Validated; waiting until both servers have the capacity the link needs (admission control,
    /// [`crate::admission`]). Nothing exists on either server yet.
    Queued {
        /// Why it waits, in words ("waiting for a logical replication worker on dst: 4 of 4 in use").
        reason: String,
    },
    /// Creating the link.
    Deploying,
    /// Link exists: seeding, catching up or ready, per the observation.
    Syncing,
    /// Cutover in progress.
    CuttingOver {
        /// The current step.
        step: CutoverStep,
    },
    /// Cancel requested; removing the link.
    Cancelling,
    /// Done: the target is primary.
    Completed,
    /// Failback requested: making the source primary again over the reverse link.
    FailingBack,
    /// The source is primary again (after a failback).
    FailedBack,
    /// Stopped on a definite error.
    Failed,
    /// Cancelled by the user; the link is removed.
    Cancelled,
}

impl Phase {
    /// A short stable name for stores to index and filter on.
    pub fn key(&self) -> &'static str {
        match self {
            Phase::Validating => "validating",
            Phase::Queued { .. } => "queued",
            Phase::Deploying => "deploying",
            Phase::Syncing => "syncing",
            Phase::CuttingOver { .. } => "cuttingOver",
            Phase::Cancelling => "cancelling",
            Phase::Completed => "completed",
            Phase::FailingBack => "failingBack",
            Phase::FailedBack => "failedBack",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        }
    }

    /// Failed, cancelled and failed-back migrations free their database for a new migration on the same
    /// link; every other one (completed included) is the database's migration.
    pub fn frees_database(&self) -> bool {
        matches!(self, Phase::Failed | Phase::Cancelled | Phase::FailedBack)
    }

    /// No further transitions.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed | Phase::Cancelled | Phase::FailedBack)
    }
}

/// A stall: the flow cannot make progress for a reason that may go away by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stall {
    /// Why.
    pub reason: String,
    /// What the user can do.
    pub remediation: String,
    /// Since when.
    pub since: DateTime<Utc>,
    /// When the stalled step is tried again (steps driven by commands only).
    pub retry_at: Option<DateTime<Utc>>,
}

/// What the flow remembers of the current (or last) cutover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CutoverRecord {
    /// 1 for the first cutover request, +1 for each retry after an abandoned one.
    pub attempt: u32,
    /// When the user asked.
    pub requested_at: Option<DateTime<Utc>>,
    /// The source may be fenced: set when fencing is asked for, cleared only once the source has its
    /// writes back (unfenced, or cancelled with unfence). Stays set after a completed cutover, on purpose.
    #[serde(default)]
    pub fence_active: bool,
    /// When the source was fenced.
    pub fenced_at: Option<DateTime<Utc>>,
    /// The source position right after the fence: the target must reach it.
    pub fence_position: Option<Position>,
    /// When draining must give up.
    pub drain_deadline: Option<DateTime<Utc>>,
    /// The target position that proved catch-up.
    pub drained_position: Option<Position>,
    /// Finalize's verification.
    pub verification: Option<Verification>,
    /// When the target became primary.
    pub switched_at: Option<DateTime<Utc>>,
    /// Why the last attempt was abandoned, if it was.
    pub abandoned_reason: Option<String>,
    /// How long each step of this attempt took, from its message being sent to its answer being recorded
    /// (queue time included: it is part of the write downtime).
    #[serde(default)]
    pub steps: Vec<StepDuration>,
    /// How long each step of the failback took, when the migration failed back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failback_steps: Vec<StepDuration>,
    /// The reverse link kept by a completed cutover (`keepReverseLink`): kept until the user removes it.
    #[serde(default)]
    pub reverse_link: ReverseLink,
}

/// Where the reverse link of a completed cutover is (meaningful only with `keepReverseLink`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReverseLink {
    /// In place (failback possible).
    #[default]
    Kept,
    /// Being removed.
    Dropping,
    /// Removed from both servers: no failback.
    Dropped,
}

/// One cutover step's duration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepDuration {
    /// The step.
    pub step: CutoverStep,
    /// Milliseconds from its command to its answer.
    pub ms: i64,
}

impl CutoverRecord {
    /// Write downtime: from fence to switch.
    pub fn write_downtime_ms(&self) -> Option<i64> {
        Some((self.switched_at? - self.fenced_at?).num_milliseconds())
    }
}

/// On-demand verification while the link syncs: the request in flight and the last result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct VerifyRecord {
    /// Requests made so far; the newest request's number.
    pub requests: u32,
    /// The request being verified, if one is.
    pub running: Option<u32>,
    /// When the running request was made.
    pub requested_at: Option<DateTime<Utc>>,
    /// The newest finished verification (on demand or the last cutover's).
    pub last: Option<Verification>,
    /// Why the newest request could not verify, if it could not.
    pub last_error: Option<String>,
}

impl VerifyRecord {
    /// The last verification found differences (not merely incomplete): the cutover is blocked until a
    /// later one is clean.
    pub fn found_differences(&self) -> Option<&Verification> {
        self.last.as_ref().filter(|v| !v.mismatches().is_empty() || !v.differences.is_empty())
    }
}

/// One line of a migration's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// The status after the change (API string).
    pub status: String,
    /// What happened.
    pub message: String,
}

/// What a user can do about a queued migration.
pub const QUEUED_REMEDIATION: &str = "nothing is needed: it starts by itself, in start order, when capacity frees (another migration completes or is cancelled); to start sooner raise the setting named in the reason on that server, or lower milink's [admission] caps";

/// History lines kept per migration.
pub const MAX_HISTORY: usize = 200;
const KEPT_FIRST_HISTORY: usize = 10;

/// A migration's whole state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Migration {
    /// Id.
    pub id: MigrationId,
    /// Source connection.
    pub source: ConnectionName,
    /// Target connection.
    pub target: ConnectionName,
    /// Database being migrated.
    pub database: DatabaseName,
    /// Settings chosen at start.
    pub settings: Settings,
    /// Where the flow is.
    pub phase: Phase,
    /// The last observation of the link.
    pub observation: Option<Observation>,
    /// When the link's progress marker last moved (stall detection).
    pub last_progress_at: Option<DateTime<Utc>>,
    /// Set while the flow cannot make progress.
    pub stall: Option<Stall>,
    /// Ready for cutover, with hysteresis: set when lag falls to the threshold, cleared only when it
    /// exceeds twice the threshold, so a lag hovering at the threshold does not flap the status.
    #[serde(default)]
    pub ready_latched: bool,
    /// Observations that failed in a row (a single blip is not a stall).
    #[serde(default)]
    pub observe_failures: u32,
    /// Set when the migration failed.
    pub failure: Option<EngineError>,
    /// The current or last cutover.
    pub cutover: CutoverRecord,
    /// On-demand verification.
    #[serde(default)]
    pub verify: VerifyRecord,
    /// Its plan and wave, when a fleet plan started it ([`crate::fleet`]).
    #[serde(default)]
    pub fleet: Option<crate::fleet::Membership>,
    /// The alerts raised for it and not yet cleared, with since when ([`crate::alerts`]).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub alerts: std::collections::BTreeMap<crate::alerts::AlertKind, DateTime<Utc>>,
    /// When the step now in flight was last sent (the watchdog re-sends it when no answer comes).
    #[serde(default)]
    pub step_since: Option<DateTime<Utc>>,
    /// What happened, oldest first.
    pub history: Vec<HistoryEntry>,
    /// Optimistic concurrency: +1 on every save.
    pub version: u64,
    /// When it was started.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// The status users see, derived from the state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Status {
    /// Prerequisites and connection test.
    Validating,
    /// Waiting for capacity on the source or the target; see the reason. Starts by itself.
    Queued,
    /// Creating the link.
    Deploying,
    /// Initial copy.
    Seeding,
    /// Streaming, lag above the threshold.
    CatchingUp,
    /// Streaming, lag at or below the threshold, healthy.
    ReadyForCutover,
    /// Not progressing; see the reason.
    Stalled,
    /// Caught up, but the cutover is blocked (schema drift not carried, or a verification found
    /// differences); see the reason.
    Blocked,
    /// Cutover in progress; see the step.
    CuttingOver,
    /// Cancel requested; removing the link.
    Cancelling,
    /// Done.
    Completed,
    /// Failing back to the source over the reverse link.
    FailingBack,
    /// The source is primary again.
    FailedBack,
    /// Failed; see the error and remediation.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl Status {
    /// The API string.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Validating => "Validating",
            Status::Queued => "Queued",
            Status::Deploying => "Deploying",
            Status::Seeding => "Seeding",
            Status::CatchingUp => "CatchingUp",
            Status::ReadyForCutover => "ReadyForCutover",
            Status::Stalled => "Stalled",
            Status::Blocked => "Blocked",
            Status::CuttingOver => "CuttingOver",
            Status::Cancelling => "Cancelling",
            Status::Completed => "Completed",
            Status::FailingBack => "FailingBack",
            Status::FailedBack => "FailedBack",
            Status::Failed => "Failed",
            Status::Cancelled => "Cancelled",
        }
    }
}

impl Migration {
    /// A new migration in Validating.
    pub fn new(
        id: MigrationId,
        source: ConnectionName,
        target: ConnectionName,
        database: DatabaseName,
        settings: Settings,
        now: DateTime<Utc>,
    ) -> Self {
        let mut migration = Self {
            id,
            source,
            target,
            database,
            settings,
            phase: Phase::Validating,
            observation: None,
            last_progress_at: None,
            stall: None,
            ready_latched: false,
            observe_failures: 0,
            failure: None,
            cutover: CutoverRecord::default(),
            verify: VerifyRecord::default(),
            fleet: None,
            alerts: Default::default(),
            step_since: None,
            history: Vec::new(),
            version: 0,
            created_at: now,
            updated_at: now,
        };
        migration.record(now, "migration started");
        migration
    }

    /// The status users see.
    pub fn status(&self) -> Status {
        match &self.phase {
            Phase::Validating if self.stall.is_some() => Status::Stalled,
            Phase::Validating => Status::Validating,
            Phase::Queued { .. } => Status::Queued,
            Phase::Deploying if self.stall.is_some() => Status::Stalled,
            Phase::Deploying => Status::Deploying,
            Phase::Syncing => self.sync_status(),
            // A cutover or cancel step that keeps failing is a stall the user must see (the reason says
            // whether the source is still fenced), not a cutover quietly "in progress".
            Phase::CuttingOver { .. } | Phase::Cancelling | Phase::FailingBack if self.stall.is_some() => Status::Stalled,
            Phase::CuttingOver { .. } => Status::CuttingOver,
            Phase::Cancelling => Status::Cancelling,
            Phase::Completed => Status::Completed,
            Phase::FailingBack => Status::FailingBack,
            Phase::FailedBack => Status::FailedBack,
            Phase::Failed => Status::Failed,
            Phase::Cancelled => Status::Cancelled,
        }
    }

    fn sync_status(&self) -> Status {
        if self.stall.is_some() {
            return Status::Stalled;
        }
        match &self.observation {
            None => Status::Deploying,
            Some(o) if o.problem.is_some() => Status::Stalled,
            Some(o) => match o.phase {
                LinkPhase::Deploying => Status::Deploying,
                LinkPhase::Seeding => Status::Seeding,
                LinkPhase::Streaming if self.blocker().is_some() => Status::Blocked,
                LinkPhase::Streaming if self.ready_latched => Status::ReadyForCutover,
                LinkPhase::Streaming => Status::CatchingUp,
            },
        }
    }

    /// The cutover step, while cutting over.
    pub fn step(&self) -> Option<String> {
        match &self.phase {
            Phase::CuttingOver { step } => Some(format!("{step:?}")),
            _ => None,
        }
    }

    /// Why the migration is stalled or failed, in words.
    pub fn reason(&self) -> Option<String> {
        match self.explanation() {
            Some((reason, _)) if self.stall.is_some() && self.failure.is_none() && self.cutover.fence_active && !self.phase.is_terminal() => {
                Some(format!("{reason} (the source is fenced: its writes are stopped until this step finishes)"))
            }
            Some((reason, _)) => Some(reason.to_owned()),
            None => self.blocker().filter(|_| self.phase == Phase::Syncing).map(|(reason, _)| reason),
        }
    }

    /// What the user can do about the reason.
    pub fn remediation(&self) -> Option<String> {
        match self.explanation() {
            Some((_, remediation)) => Some(remediation.to_owned()),
            None => self.blocker().filter(|_| self.phase == Phase::Syncing).map(|(_, remediation)| remediation),
        }
    }

    /// The most pressing (reason, remediation): a failure, else a stall, else the link's own problem.
    fn explanation(&self) -> Option<(&str, &str)> {
        if let Some(failure) = &self.failure {
            return Some((&failure.message, &failure.remediation));
        }
        if let Some(stall) = &self.stall {
            return Some((&stall.reason, &stall.remediation));
        }
        if let Phase::Queued { reason } = &self.phase {
            if self.fleet.is_some() && crate::fleet::is_gate_reason(reason) {
                return Some((reason, crate::fleet::GATE_REMEDIATION));
            }
            return Some((reason, QUEUED_REMEDIATION));
        }
        if let Some(problem) = self.observation.as_ref().and_then(|o| o.problem.as_ref()) {
            return Some((&problem.reason, &problem.remediation));
        }
        None
    }

    /// Why the cutover is blocked while the link streams, with what to do: a schema change the engine
    /// did not carry, or differences found by the last verification.
    pub fn blocker(&self) -> Option<(String, String)> {
        if let Some(change) = self.observation.as_ref().and_then(|o| o.blocking_drift().next()) {
            let more = self.observation.as_ref().map_or(0, |o| o.blocking_drift().count()) - 1;
            let more = if more > 0 { format!(" (and {more} more schema changes)") } else { String::new() };
            return Some((format!("schema changed on the source: {} {}{more}", change.object, change.change), change.remediation.clone()));
        }
        let found = self.verify.found_differences()?;
        Some((
            format!("the last verification found differences: {}", found.summary()),
            "find what wrote to the target (or what the link does not carry), repair those rows or objects, then verify again (milink migrate verify); a clean verification unblocks the cutover".into(),
        ))
    }

    /// Appends a history line stamped with the current status.
    pub fn record(&mut self, at: DateTime<Utc>, message: impl Into<String>) {
        let status = self.status().as_str().to_owned();
        self.history.push(HistoryEntry { at, status, message: message.into() });
        // The state is rewritten on every save: keep the first lines (how it started) and the newest.
        if self.history.len() > MAX_HISTORY {
            self.history.remove(KEPT_FIRST_HISTORY);
        }
    }
}
