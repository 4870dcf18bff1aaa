//! From what SQL Server's DMVs and ARM say about a link to the core's `Observation` (mi-link.md §4).
//!
//! Two views are combined because neither is complete: SQL Server's DMVs (the distributed AG's replica and
//! database states, automatic seeding) know connection errors, queues and LSNs; ARM's `databases[]` knows
//! the MI's `replicaState`, `seedingProgress` and `mostRecentLinkError`. The mapping is a pure function of
//! rows (deserialized from the queries in [`crate::tsql::probe`]) and the DAG JSON, so every phase and every
//! documented error can be tested from captured data. The link's own errors (41962, 41973, 1408/1412, …)
//! become a [`LinkProblem`] with the remediation of [`crate::errors`]; the core turns a problem into Stalled.
use crate::arm::models::{parse_seeding_progress, DagDatabase, DistributedAvailabilityGroup};
use crate::errors::known_sql_error;
use crate::lsn::position_of;
use chrono::{DateTime, Utc};
use milink_core::migration::{LinkPhase, LinkProblem, Observation, Position, SeedProgress};
use crate::inventory::flag;
use serde::Deserialize;

/// One row of [`crate::tsql::probe::link_replicas`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ReplicaRow {
    /// The replica is this SQL Server (as opposed to the MI).
    #[serde(deserialize_with = "flag")]
    pub is_local: bool,
    /// `PRIMARY` / `SECONDARY`.
    pub role_desc: Option<String>,
    /// `CONNECTED` / `DISCONNECTED`.
    pub connected_state_desc: Option<String>,
    /// The replica's health.
    pub replica_health_desc: Option<String>,
    /// Last connection error number.
    pub last_connect_error_number: Option<i64>,
    /// Last connection error text.
    pub last_connect_error_description: Option<String>,
    /// `SYNCHRONOUS_COMMIT` / `ASYNCHRONOUS_COMMIT`.
    pub availability_mode_desc: Option<String>,
    /// `SYNCHRONIZING`, `SYNCHRONIZED`, `NOT SYNCHRONIZING`, ….
    pub synchronization_state_desc: Option<String>,
    /// The database's health on this replica.
    pub synchronization_health_desc: Option<String>,
    /// `ONLINE`, `RESTORING`, ….
    pub database_state_desc: Option<String>,
    /// Data movement suspended.
    #[serde(deserialize_with = "flag")]
    pub is_suspended: bool,
    /// Why.
    pub suspend_reason_desc: Option<String>,
    /// Log not yet sent, KB.
    pub log_send_queue_kb: Option<i64>,
    /// Log not yet redone on the secondary, KB.
    pub redo_queue_kb: Option<i64>,
    /// Seconds the secondary is behind.
    pub secondary_lag_seconds: Option<i64>,
    /// Decimal LSN.
    pub last_hardened_lsn: Option<String>,
    /// Decimal LSN.
    pub end_of_log_lsn: Option<String>,
}

/// One row of [`crate::tsql::probe::seeding`] (newest attempt first).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SeedingRow {
    /// `PENDING`, `CHECK_IF_SEEDING_NEEDED`, `SEEDING`, `COMPLETED`, `FAILED`, …: what decides failure.
    pub current_state: Option<String>,
    /// E.g. `Seeding check message timeout`: the reason, read only when `current_state` is `FAILED`.
    pub failure_state_desc: Option<String>,
    /// Error number of a failed attempt.
    pub error_code: Option<i64>,
    /// Attempts so far.
    pub number_of_attempts: Option<i64>,
    /// The attempt has a completion time.
    #[serde(deserialize_with = "flag")]
    pub completed: bool,
    /// Bytes transferred (running seeds).
    pub transferred_size_bytes: Option<f64>,
    /// Database size (running seeds).
    pub database_size_bytes: Option<f64>,
}

impl SeedingRow {
    /// This attempt failed. Decided by `current_state`, as Microsoft's scripts do: `failure_state_desc` is not
    /// a failure flag (its code 0 reads "Internal Error", and a completed attempt can carry the description of
    /// a hiccup it recovered from).
    pub fn failed(&self) -> bool {
        self.current_state.as_deref().is_some_and(|state| state.trim().eq_ignore_ascii_case("FAILED"))
    }

    /// This attempt is still going (`PENDING`, `CHECK_IF_SEEDING_NEEDED`, `LIMIT_CONCURRENT_BACKUPS`,
    /// `SEEDING`, …): not completed and not failed.
    pub fn running(&self) -> bool {
        let completed = self.completed || self.current_state.as_deref().is_some_and(|state| state.trim().eq_ignore_ascii_case("COMPLETED"));
        !completed && !self.failed()
    }
}

/// The link as SQL Server sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SqlServerLinkView {
    /// Replica rows of the distributed AG; empty when it does not exist.
    pub replicas: Vec<ReplicaRow>,
    /// Seeding attempts, newest first.
    pub seeding: Vec<SeedingRow>,
}

impl SqlServerLinkView {
    /// This SQL Server's row.
    pub fn local(&self) -> Option<&ReplicaRow> {
        self.replicas.iter().find(|r| r.is_local)
    }

    /// The managed instance's row.
    pub fn remote(&self) -> Option<&ReplicaRow> {
        self.replicas.iter().find(|r| !r.is_local)
    }
}

const SEEDING_STATES: &[&str] = &["Seeding", "CreatingLink"];
const STREAMING_STATES: &[&str] = &["Catchup", "Connected", "LinkSynchronizing", "Synchronizing", "Synchronized"];

/// Maps both views to an observation taken at `now`.
pub fn observe(sql: &SqlServerLinkView, dag: Option<&DistributedAvailabilityGroup>, now: DateTime<Utc>) -> Observation {
    let database = dag.and_then(|d| d.properties.databases.first());
    let problem = problem(sql, database);
    let base = Observation { at: now, phase: LinkPhase::Deploying, progress_percent: 0.0, lag_bytes: None, lag_seconds: None, progress_marker: None, problem, drift: Vec::new(), seed: None };
    if sql.replicas.is_empty() || dag.is_none() {
        // The distributed AG is not created on SQL Server yet, or the MI has not joined it.
        return base;
    }
    let remote = sql.remote();
    let arm_state = database.and_then(|d| d.replica_state.as_deref()).unwrap_or("");
    let running_seed = sql.seeding.first().filter(|s| s.running());
    let remote_streaming = remote.and_then(|r| r.synchronization_state_desc.as_deref()).is_some_and(|s| s == "SYNCHRONIZING" || s == "SYNCHRONIZED");
    let arm_seeding = SEEDING_STATES.iter().any(|s| s.eq_ignore_ascii_case(arm_state));
    let arm_streaming = STREAMING_STATES.iter().any(|s| s.eq_ignore_ascii_case(arm_state));
    if arm_seeding || running_seed.is_some() || (!remote_streaming && !arm_streaming && !sql.seeding.is_empty()) {
        let progress = seeding_progress(running_seed, database);
        let marker = running_seed.and_then(|s| s.transferred_size_bytes).map(|b| Position(b.max(0.0) as u64));
        // Bytes from the seeding DMV when it has them; the time left is not read (ARM and the DMV's estimate
        // are not modelled here).
        let seed = running_seed.and_then(|s| match (s.transferred_size_bytes, s.database_size_bytes) {
            (Some(done), Some(total)) if total > 0.0 => {
                Some(SeedProgress { copied_bytes: done.max(0.0) as u64, total_bytes: total as u64, eta_seconds: None })
            }
            _ => None,
        });
        return Observation { phase: LinkPhase::Seeding, progress_percent: progress, progress_marker: marker, seed, ..base };
    }
    if remote_streaming || arm_streaming {
        let lag_bytes = remote.and_then(|r| match (r.log_send_queue_kb, r.redo_queue_kb) {
            (None, None) => None,
            (send, redo) => Some((send.unwrap_or(0).max(0) + redo.unwrap_or(0).max(0)) as u64 * 1024),
        });
        let lag_seconds = remote.and_then(|r| r.secondary_lag_seconds).map(|s| s.max(0) as f64);
        let marker = remote
            .and_then(|r| r.last_hardened_lsn.as_deref())
            .and_then(position_of)
            .or_else(|| database.and_then(|d| d.last_hardened_lsn.as_deref()).and_then(position_of));
        return Observation { phase: LinkPhase::Streaming, progress_percent: 100.0, lag_bytes, lag_seconds, progress_marker: marker, ..base };
    }
    base
}

fn seeding_progress(running: Option<&SeedingRow>, database: Option<&DagDatabase>) -> f64 {
    let from_dmv = running.and_then(|s| match (s.transferred_size_bytes, s.database_size_bytes) {
        (Some(done), Some(total)) if total > 0.0 => Some((done / total * 100.0).clamp(0.0, 100.0)),
        _ => None,
    });
    from_dmv
        .or_else(|| database.and_then(|d| d.seeding_progress.as_deref()).and_then(parse_seeding_progress))
        .unwrap_or(0.0)
}

/// What is wrong with the link, if anything, from the most specific source to the least.
pub fn problem(sql: &SqlServerLinkView, database: Option<&DagDatabase>) -> Option<LinkProblem> {
    if let Some(seed) = sql.seeding.first().filter(|s| s.failed()) {
        return Some(seeding_failure(seed, seed.error_code.filter(|c| *c != 0)));
    }
    if let Some(db) = database {
        let state = db.replica_state.as_deref().unwrap_or("");
        if state.contains("Error") {
            let detail = db.most_recent_link_error.as_deref().unwrap_or("no detail given");
            return Some(from_text(&format!("the managed instance reports {state}: {detail}"), detail));
        }
    }
    if let Some(remote) = sql.remote() {
        let disconnected = remote.connected_state_desc.as_deref() == Some("DISCONNECTED");
        if disconnected {
            if let Some(number) = remote.last_connect_error_number.filter(|n| *n != 0) {
                let text = remote.last_connect_error_description.as_deref().unwrap_or("");
                return Some(from_number(number, text));
            }
        }
        if remote.is_suspended {
            let reason = remote.suspend_reason_desc.as_deref().unwrap_or("unknown reason");
            return Some(LinkProblem { kind: None,
                reason: format!("data movement to the managed instance is suspended ({reason})"),
                remediation: "resume it on SQL Server: ALTER DATABASE <database> SET HADR RESUME; if it was suspended by a forced failover, resolve the split brain first (mi-link.md §3.2)".into(),
            });
        }
        let streaming = matches!(remote.synchronization_state_desc.as_deref(), Some("SYNCHRONIZING" | "SYNCHRONIZED"));
        if streaming && (disconnected || remote.synchronization_health_desc.as_deref() == Some("NOT_HEALTHY")) {
            return Some(LinkProblem { kind: None,
                reason: "the link to the managed instance is disconnected or not healthy".into(),
                remediation: "check the network between SQL Server and the MI subnet (TCP 5022 both ways, 11000–11999 from SQL Server) and both endpoints' certificates; the link resumes by itself when they are reachable".into(),
            });
        }
    }
    None
}

fn seeding_failure(seed: &SeedingRow, code: Option<i64>) -> LinkProblem {
    let what = seed.failure_state_desc.as_deref().unwrap_or("seeding failed");
    if let Some(known) = code.and_then(known_sql_error) {
        return LinkProblem { kind: None, reason: format!("seeding failed: {what}; error {}: {}", known.number, known.meaning), remediation: known.remediation.into() };
    }
    if what.to_ascii_lowercase().contains("already exists") {
        return LinkProblem { kind: None,
            reason: format!("seeding failed: {what}"),
            remediation: "a database with this name exists on the managed instance (often left by a cancelled link): delete it on the MI, then cancel and start the migration again".into(),
        };
    }
    let code_text = code.map(|c| format!(" (error {c})")).unwrap_or_default();
    LinkProblem { kind: None,
        reason: format!("seeding failed: {what}{code_text}"),
        remediation: "check network throughput and the health of both sides; seeding restarts after a failure and is cancelled after 6 days".into(),
    }
}

fn from_number(number: i64, text: &str) -> LinkProblem {
    match known_sql_error(number) {
        Some(known) => LinkProblem { kind: None, reason: format!("link error {number}: {} ({})", known.meaning, text.trim()), remediation: known.remediation.into() },
        None => LinkProblem { kind: None,
            reason: format!("link error {number}: {}", text.trim()),
            remediation: "look the error number up in the MI link troubleshooting guide; check names, certificates and the network".into(),
        },
    }
}

/// Finds a known error number (five digits, or 1408/1412) in a message and maps it.
fn from_text(reason: &str, detail: &str) -> LinkProblem {
    let number = detail
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|digits| digits.parse::<i64>().ok())
        .find(|n| known_sql_error(*n).is_some());
    match number.and_then(known_sql_error) {
        Some(known) => LinkProblem { kind: None, reason: reason.to_owned(), remediation: known.remediation.into() },
        None => LinkProblem { kind: None,
            reason: reason.to_owned(),
            remediation: "read the error; check names, both certificates and the network (TCP 5022 both ways), then cancel and start again".into(),
        },
    }
}
