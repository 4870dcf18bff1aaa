//! The migration flow as one pure function: `decide(state, event, now) -> (state, commands)`.
//!
//! Every rule of the flow lives here and nowhere else: which event moves which phase, what a cutover
//! requires, what happens when a step fails, when a stall starts and ends, what gets notified. Handlers
//! load the state, do the I/O an incoming command asks for, turn the result into an [`Event`], call
//! [`decide`], and save the new state together with the commands it returned (the outbox).
//!
//! Two properties make at-least-once delivery safe:
//! - an event that does not fit the current phase (a duplicate, a late answer to an earlier attempt,
//!   an observation older than the one we have) changes nothing and emits nothing;
//! - commands carry the cutover attempt they belong to, so a handler can tell (with [`is_current`])
//!   whether a command it received is still wanted before it touches a server.
//!
//! The cutover is safe by construction: it starts only from Ready for cutover with the confirmation that
//! traffic is stopped; Completed is reachable only through Drained (target confirmed the fence
//! position) and a clean verification; any failure before Switching unfences the source.
use crate::error::EngineError;
use crate::migration::{
    CutoverRecord, CutoverStep, LinkPhase, Migration, Observation, Phase, Position, ReverseLink, Stall, Status, Verification,
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Observations that must fail in a row before the link counts as stalled.
pub const OBSERVE_FAILURES_TO_STALL: u32 = 3;

/// How long a stalled command-driven step waits before it is tried again.
pub const STALL_RETRY_SECONDS: i64 = 30;

/// How long a step may be in flight without an answer before the watchdog presumes its message lost
/// (dead-lettered by the bus, or dropped where the outbox cannot see it) and sends it again. Longer than
/// a healthy step's whole retry chain; a step that is merely slow gets a duplicate that waits behind it
/// (one step at a time per migration) and then finds itself stale.
pub const WATCHDOG_SECONDS: i64 = 300;

/// How long past a drain's deadline the watchdog leaves the drain to answer for itself before it
/// abandons the cutover (unfence) on the drain's behalf.
pub const DRAIN_DEADLINE_GRACE_SECONDS: i64 = 10;

/// Something that happened to a migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Event {
    /// Prerequisites checked; blockers among the findings fail the migration.
    Validated {
        /// Findings of the validation.
        findings: Vec<crate::assessment::Finding>,
    },
    /// Admission control found room on both servers for a queued migration: create its link.
    Admitted,
    /// Admission control looked again and the queued migration still does not fit (the reason may differ).
    StillQueued {
        /// Why it waits.
        reason: String,
    },
    /// The link exists (publication and subscription, AG and DAG, ...).
    LinkCreated,
    /// The poll timer looked at the link.
    Observed {
        /// What it saw.
        observation: Observation,
    },
    /// The poll timer could not look at the link.
    ObserveFailed {
        /// Why.
        error: EngineError,
    },
    /// The user asked to cut over.
    CutoverRequested {
        /// The user confirmed application traffic is stopped.
        confirm_traffic_stopped: bool,
    },
    /// The source is fenced; `position` is the source's position right after the fence.
    Fenced {
        /// Cutover attempt.
        attempt: u32,
        /// When fencing began: write downtime is counted from here.
        started_at: DateTime<Utc>,
        /// Source position after the fence.
        position: Position,
    },
    /// The target confirmed everything up to the fence position.
    Drained {
        /// Cutover attempt.
        attempt: u32,
        /// Target position that proved it.
        position: Position,
    },
    /// The target did not confirm the fence position before the deadline.
    DrainTimedOut {
        /// Cutover attempt.
        attempt: u32,
        /// Where the target got to.
        reached: Option<Position>,
    },
    /// The verification before the fence proved the target differs: nothing was fenced, and the cutover
    /// does not start.
    RefusedBeforeFence {
        /// Cutover attempt.
        attempt: u32,
        /// What it found.
        verification: Verification,
    },
    /// Sequences set and counts compared.
    Finalized {
        /// Cutover attempt.
        attempt: u32,
        /// What was verified.
        verification: Verification,
    },
    /// The target is primary; the link is broken or reversed.
    Switched {
        /// Cutover attempt.
        attempt: u32,
    },
    /// The source has its writes back.
    Unfenced {
        /// Cutover attempt.
        attempt: u32,
    },
    /// The user asked to fail back to the source (only after a cutover that kept the reverse link).
    FailbackRequested {
        /// The user confirmed application traffic to the target is stopped.
        confirm_traffic_stopped: bool,
    },
    /// The user asked to remove the reverse link kept after a completed cutover (no failback after it).
    DropReverseLinkRequested,
    /// The reverse link is removed from both servers.
    ReverseLinkDropped,
    /// The source is primary again.
    FailedBack {
        /// How long each step of the failback took, as far as the engine tells them apart.
        #[serde(default)]
        steps: Vec<crate::migration::StepDuration>,
    },
    /// The user asked to cancel.
    CancelRequested,
    /// Everything the link created is removed.
    LinkDropped,
    /// A step failed in a way retrying cannot fix.
    StepFailed {
        /// The command that failed.
        command: Command,
        /// Why.
        error: EngineError,
    },
    /// A step kept failing transiently and its retries are used up.
    StepExhausted {
        /// The command that failed.
        command: Command,
        /// The last error.
        error: EngineError,
    },
    /// The timer's periodic nudge: retries stalled steps when their time comes.
    Tick,
    /// The user asked for a content verification while the link syncs.
    VerifyRequested,
    /// The user approved a wave of a fleet plan (`crate::fleet`): its migrations may start once the
    /// earlier waves let them, even past a failed earlier migration.
    WaveApproved {
        /// The plan's name.
        plan: String,
        /// The wave's name.
        wave: String,
    },
    /// The alerts raised for the migration changed (what the alert tracker stores, so a restart does not
    /// raise them again).
    AlertsChanged {
        /// Raised alerts, with since when.
        raised: std::collections::BTreeMap<crate::alerts::AlertKind, DateTime<Utc>>,
    },
    /// A verification finished.
    Verified {
        /// The request it answers.
        request: u32,
        /// What it found.
        verification: Verification,
    },
}

/// Work the flow asks for. Each becomes a message to a stage handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "camelCase")]
pub enum Command {
    /// Check prerequisites and test connections.
    Validate,
    /// Create the link.
    CreateLink,
    /// Fence the source and record its position.
    Fence {
        /// Cutover attempt.
        attempt: u32,
    },
    /// Wait until the target confirms `position`, until `deadline`.
    Drain {
        /// Cutover attempt.
        attempt: u32,
        /// Position to reach.
        position: Position,
        /// When to give up.
        deadline: DateTime<Utc>,
    },
    /// Sequences and verification.
    Finalize {
        /// Cutover attempt.
        attempt: u32,
    },
    /// Make the target primary.
    Switch {
        /// Cutover attempt.
        attempt: u32,
        /// Keep a reverse link for failback.
        keep_reverse_link: bool,
    },
    /// Give the source its writes back.
    Unfence {
        /// Cutover attempt.
        attempt: u32,
    },
    /// Make the source primary again over the reverse link.
    Failback,
    /// Remove the reverse link kept after a completed cutover.
    DropReverseLink,
    /// Remove everything the link created (cancel).
    DropLink {
        /// Unfence the source first (a cutover was in progress).
        unfence: bool,
        /// Drop the target database too.
        drop_target: bool,
    },
    /// Compare source and target content while the link syncs.
    Verify {
        /// The verification request this answers.
        request: u32,
    },
    /// Tell someone.
    Notify {
        /// Status after the change.
        status: String,
        /// What happened.
        message: String,
    },
}

impl Command {
    /// The stage (queue) that handles this command: every step of a migration is one stage, so the
    /// migration's steps run one at a time; notifications have their own.
    pub fn stage(&self) -> crate::message::Stage {
        match self {
            Command::Notify { .. } => crate::message::Stage::Notify,
            _ => crate::message::Stage::Migration,
        }
    }

    /// A short name for ids and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Validate => "validate",
            Command::CreateLink => "create-link",
            Command::Fence { .. } => "fence",
            Command::Drain { .. } => "drain",
            Command::Finalize { .. } => "finalize",
            Command::Switch { .. } => "switch",
            Command::Unfence { .. } => "unfence",
            Command::Failback => "failback",
            Command::DropReverseLink => "drop-reverse-link",
            Command::DropLink { .. } => "drop-link",
            Command::Verify { .. } => "verify",
            Command::Notify { .. } => "notify",
        }
    }
}

/// Why a user's request was refused (the API turns these into 400/409).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Cutover without `confirmTrafficStopped: true`.
    #[error("cutover needs the confirmation that application traffic to the source is stopped (confirmTrafficStopped: true)")]
    ConfirmationRequired,
    /// Cutover when the link is not ready.
    #[error("migration is {status}, not ReadyForCutover: wait until it is (milink migrate watch) and try again")]
    NotReadyForCutover {
        /// The current status.
        status: String,
    },
    /// Failback of a migration that did not complete with a reverse link.
    #[error("migration is {status}: {why}")]
    CannotFailBack {
        /// The current status.
        status: String,
        /// Why not.
        why: String,
    },
    /// Verification asked for while the link is not syncing.
    #[error("migration is {status}: a verification runs only while the link syncs (the cutover verifies by itself)")]
    CannotVerify {
        /// The current status.
        status: String,
    },
    /// Removal of a reverse link that is not there.
    #[error("migration is {status}: {why}")]
    NoReverseLink {
        /// The current status.
        status: String,
        /// Why not.
        why: String,
    },
    /// Cancel after the point of no return or of a finished migration.
    #[error("migration is {status} and can no longer be cancelled")]
    CannotCancel {
        /// The current status.
        status: String,
    },
}

/// The result of [`decide`].
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The new state (the same as the old one when nothing changed).
    pub migration: Migration,
    /// Commands to emit, in order.
    pub commands: Vec<Command>,
    /// False when the event changed nothing (a duplicate or stale event): nothing to save.
    pub changed: bool,
}

/// Starts a migration: the initial state and its first command.
pub fn start(migration: Migration) -> Transition {
    Transition { migration, commands: vec![Command::Validate], changed: true }
}

/// Applies `event` to `state` at `now`.
pub fn decide(state: &Migration, event: &Event, now: DateTime<Utc>) -> Result<Transition, Rejection> {
    let mut next = state.clone();
    let mut commands = Vec::new();
    apply(&mut next, event, now, &mut commands)?;
    if next == *state {
        return Ok(Transition { migration: next, commands: Vec::new(), changed: false });
    }
    let (before, after) = (state.status(), next.status());
    if let (Phase::CuttingOver { step }, Some(since)) = (&state.phase, state.step_since) {
        if next.phase != state.phase && next.cutover.attempt == state.cutover.attempt {
            next.cutover.steps.push(crate::migration::StepDuration { step: *step, ms: (now - since).num_milliseconds() });
        }
    }
    if commands.iter().any(|c| c.stage() == crate::message::Stage::Migration) {
        next.step_since = Some(now);
    }
    if before != after {
        if let Some(notification) = notification(&next, &after) {
            commands.push(notification);
        }
        next.record(now, status_message(&next));
    }
    if next.phase.is_terminal() {
        // Its alerts end with it: nothing polls a finished migration to clear them.
        next.alerts.clear();
    }
    next.updated_at = now;
    Ok(Transition { migration: next, commands, changed: true })
}

fn apply(m: &mut Migration, event: &Event, now: DateTime<Utc>, out: &mut Vec<Command>) -> Result<(), Rejection> {
    match event {
        Event::Validated { findings } => on_validated(m, findings, now),
        Event::Admitted if matches!(m.phase, Phase::Queued { .. }) => {
            m.phase = Phase::Deploying;
            m.record(now, "admitted: both servers have room for the link");
            out.push(Command::CreateLink);
        }
        Event::StillQueued { reason } if matches!(m.phase, Phase::Queued { .. }) => {
            m.phase = Phase::Queued { reason: reason.clone() };
        }
        Event::LinkCreated if m.phase == Phase::Deploying => {
            m.phase = Phase::Syncing;
            m.stall = None;
            m.record(now, "link created");
        }
        Event::Observed { observation } => on_observed(m, observation, now),
        Event::ObserveFailed { error } if m.phase == Phase::Syncing => {
            m.observe_failures += 1;
            if m.observe_failures >= OBSERVE_FAILURES_TO_STALL {
                let since = m.stall.as_ref().map_or(now, |s| s.since);
                m.stall = Some(Stall { reason: error.message.clone(), remediation: error.remediation.clone(), since, retry_at: None });
            }
        }
        Event::CutoverRequested { confirm_traffic_stopped } => on_cutover_requested(m, *confirm_traffic_stopped, now, out)?,
        Event::Fenced { attempt, started_at, position } if at_step(m, *attempt, CutoverStep::Fencing) => {
            let deadline = now + Duration::seconds(m.settings.drain_timeout_seconds as i64);
            m.cutover.fenced_at = Some(*started_at);
            m.cutover.fence_position = Some(*position);
            m.cutover.drain_deadline = Some(deadline);
            m.phase = Phase::CuttingOver { step: CutoverStep::Draining };
            m.record(now, format!("source fenced at position {}", position.0));
            out.push(Command::Drain { attempt: *attempt, position: *position, deadline });
        }
        Event::Drained { attempt, position } if at_step(m, *attempt, CutoverStep::Draining) => {
            m.cutover.drained_position = Some(*position);
            m.phase = Phase::CuttingOver { step: CutoverStep::Finalizing };
            m.record(now, format!("target confirmed every change up to position {}", position.0));
            out.push(Command::Finalize { attempt: *attempt });
        }
        Event::DrainTimedOut { attempt, reached } if at_step(m, *attempt, CutoverStep::Draining) => {
            let reached = reached.map_or("unknown".to_owned(), |p| p.0.to_string());
            let reason = format!(
                "the target did not confirm every change within {} s (reached {reached}); the source is given its writes back",
                m.settings.drain_timeout_seconds
            );
            abandon(m, *attempt, reason, None, now, out);
        }
        Event::RefusedBeforeFence { attempt, verification } if at_step(m, *attempt, CutoverStep::Fencing) => {
            // Kept as the last verification: it blocks the next cutover until one comes back clean.
            m.cutover.verification = Some(verification.clone());
            m.verify.last = Some(verification.clone());
            let reason = format!("the target differs from the source (found before the fence, nothing was fenced): {}", verification.summary());
            m.cutover.abandoned_reason = Some(reason.clone());
            m.phase = Phase::Syncing;
            m.cutover.fence_active = false;
            m.stall = None;
            m.record(now, format!("cutover refused: {reason}"));
        }
        Event::Finalized { attempt, verification } if at_step(m, *attempt, CutoverStep::Finalizing) => {
            on_finalized(m, *attempt, verification, now, out)
        }
        Event::Switched { attempt } if at_step(m, *attempt, CutoverStep::Switching) => {
            m.cutover.switched_at = Some(now);
            m.phase = Phase::Completed;
            m.stall = None;
            let downtime = m.cutover.write_downtime_ms().unwrap_or_default();
            m.record(now, format!("target is primary; write downtime (fence to switch) {downtime} ms"));
        }
        Event::Unfenced { attempt } if at_step(m, *attempt, CutoverStep::Unfencing) => {
            m.stall = None;
            m.cutover.fence_active = false;
            if m.failure.is_some() {
                m.phase = Phase::Failed;
                m.record(now, "source unfenced; migration failed");
            } else {
                m.phase = Phase::Syncing;
                m.record(now, "source unfenced; cutover abandoned, link still syncing");
            }
        }
        Event::FailbackRequested { confirm_traffic_stopped } => on_failback_requested(m, *confirm_traffic_stopped, now, out)?,
        Event::DropReverseLinkRequested => on_drop_reverse_link_requested(m, now, out)?,
        Event::ReverseLinkDropped if m.phase == Phase::Completed && m.cutover.reverse_link == ReverseLink::Dropping => {
            m.cutover.reverse_link = ReverseLink::Dropped;
            m.record(now, "reverse link removed from both servers: the migration is final (no failback)");
        }
        // A removal that failed may have removed part of the link (the subscription on the source, not yet
        // the slot on the target): it stays Dropping, so failback stays refused (it would find no reverse
        // subscription and skip fencing the target), and asking again finishes it.
        Event::StepFailed { command: Command::DropReverseLink, error } | Event::StepExhausted { command: Command::DropReverseLink, error }
            if m.cutover.reverse_link == ReverseLink::Dropping =>
        {
            m.record(now, format!("could not remove the reverse link: {} ({}); ask again once fixed", error.message, error.remediation));
        }
        Event::FailedBack { steps } if m.phase == Phase::FailingBack => {
            m.phase = Phase::FailedBack;
            m.cutover.failback_steps = steps.clone();
            let took: Vec<String> = steps.iter().map(|s| format!("{:?} {} ms", s.step, s.ms)).collect();
            let took = if took.is_empty() { String::new() } else { format!(" ({})", took.join(", ")) };
            m.record(now, format!("the source is primary again; the link runs from the source to the target again{took}"));
        }
        Event::CancelRequested => on_cancel_requested(m, now, out)?,
        Event::LinkDropped if m.phase == Phase::Cancelling => {
            m.phase = Phase::Cancelled;
            m.cutover.fence_active = false;
            m.stall = None;
        }
        Event::StepFailed { command: Command::Notify { .. }, .. } | Event::StepExhausted { command: Command::Notify { .. }, .. } => {}
        Event::StepFailed { command, error } if is_current(m, command) => on_step_error(m, command, error, true, now, out),
        Event::StepExhausted { command, error } if is_current(m, command) => {
            on_step_error(m, command, error, false, now, out)
        }
        Event::Tick => on_tick(m, now, out),
        Event::AlertsChanged { raised } => m.alerts = raised.clone(),
        Event::WaveApproved { plan, wave } => {
            if let Some(membership) = m.fleet.as_mut().filter(|f| &f.plan == plan && &f.wave_name == wave && !m.phase.is_terminal()) {
                membership.approved_at = Some(now);
                m.record(now, format!("wave {wave} of plan {plan} approved"));
            }
        }
        Event::VerifyRequested => on_verify_requested(m, now, out)?,
        Event::Verified { request, verification } if m.verify.running == Some(*request) => {
            m.verify.running = None;
            m.verify.last_error = None;
            m.verify.last = Some(verification.clone());
            m.record(now, format!("verification {request}: {}", verification.summary()));
        }
        _ => {}
    }
    Ok(())
}

fn at_step(m: &Migration, attempt: u32, step: CutoverStep) -> bool {
    m.phase == (Phase::CuttingOver { step }) && m.cutover.attempt == attempt
}

fn on_validated(m: &mut Migration, findings: &[crate::assessment::Finding], now: DateTime<Utc>) {
    if m.phase != Phase::Validating {
        return;
    }
    m.stall = None;
    let blockers: Vec<_> = findings.iter().filter(|f| f.severity == crate::assessment::Severity::Blocker).collect();
    if blockers.is_empty() {
        // Admission control ([`crate::admission`]) moves it on with `Admitted` when both servers have room.
        m.phase = Phase::Queued { reason: "waiting for admission: checking the capacity of both servers".into() };
        let warnings = findings.iter().filter(|f| f.severity == crate::assessment::Severity::Warning).count();
        m.record(now, format!("validation passed ({warnings} warnings)"));
    } else {
        let message = blockers.iter().map(|f| f.message.as_str()).collect::<Vec<_>>().join("; ");
        let remediation = blockers.iter().map(|f| f.remediation.as_str()).collect::<Vec<_>>().join("; ");
        m.failure = Some(EngineError::definite("validation_failed", message, remediation));
        m.phase = Phase::Failed;
    }
}

fn on_observed(m: &mut Migration, observation: &Observation, now: DateTime<Utc>) {
    if m.phase.is_terminal() || m.phase == Phase::Validating || m.phase == Phase::Deploying {
        return;
    }
    if m.observation.as_ref().is_some_and(|o| o.at >= observation.at) {
        return; // stale or duplicate
    }
    let moved = match (&m.observation, observation.progress_marker) {
        (Some(previous), Some(marker)) => previous.progress_marker != Some(marker),
        _ => true,
    };
    if moved || m.last_progress_at.is_none() {
        m.last_progress_at = Some(observation.at);
    }
    m.observation = Some(observation.clone());
    if m.phase != Phase::Syncing {
        return; // during cutover and cancel the observation is informative only
    }
    m.stall = None;
    m.observe_failures = 0;
    let threshold = m.settings.ready_lag_bytes;
    m.ready_latched = match (observation.phase, &observation.problem, observation.lag_bytes) {
        (LinkPhase::Streaming, None, Some(lag)) if lag <= threshold => true,
        (LinkPhase::Streaming, None, Some(lag)) if lag <= threshold.saturating_mul(2) => m.ready_latched,
        _ => false,
    };
    let waiting = matches!(m.status(), Status::Seeding | Status::CatchingUp);
    let idle_for = m.last_progress_at.map_or(0, |at| (now - at).num_seconds());
    if waiting && idle_for > m.settings.stall_after_seconds as i64 {
        let since = m.last_progress_at.unwrap_or(now);
        m.stall = Some(Stall {
            reason: format!("no replication progress for {idle_for} s"),
            remediation: "check that the link's apply process on the target runs and that the target can reach the source (milink migrate show has the link's last problem)".into(),
            since,
            retry_at: None,
        });
    }
}

fn on_cutover_requested(m: &mut Migration, confirmed: bool, now: DateTime<Utc>, out: &mut Vec<Command>) -> Result<(), Rejection> {
    if !confirmed {
        return Err(Rejection::ConfirmationRequired);
    }
    if matches!(m.phase, Phase::CuttingOver { .. }) {
        return Ok(()); // a second click: the cutover already runs
    }
    let status = m.status();
    // A failback over a kept reverse link leaves the link running forward again, so failing forward is an
    // ordinary cutover; nothing observes a failed-back link, and the drain proves catch-up anyway.
    let again = m.phase == Phase::FailedBack && m.settings.keep_reverse_link;
    if status != Status::ReadyForCutover && !again {
        return Err(Rejection::NotReadyForCutover { status: status.as_str().to_owned() });
    }
    let attempt = m.cutover.attempt + 1;
    // A verification still running is superseded: the cutover verifies after the drain anyway.
    m.verify.running = None;
    m.cutover = CutoverRecord { attempt, requested_at: Some(now), fence_active: true, ..CutoverRecord::default() };
    m.phase = Phase::CuttingOver { step: CutoverStep::Fencing };
    out.push(Command::Fence { attempt });
    Ok(())
}

fn on_finalized(m: &mut Migration, attempt: u32, verification: &Verification, now: DateTime<Utc>, out: &mut Vec<Command>) {
    m.cutover.verification = Some(verification.clone());
    if verification.is_clean() {
        m.phase = Phase::CuttingOver { step: CutoverStep::Switching };
        m.record(
            now,
            format!("verified: {}; set {} sequences", verification.summary(), verification.sequences_set),
        );
        out.push(Command::Switch { attempt, keep_reverse_link: m.settings.keep_reverse_link });
        return;
    }
    // Not proven equal: the source gets its writes back and the link keeps syncing. Differences are kept
    // as the last verification, which blocks the next cutover until a verification comes back clean;
    // the link itself is fine, so the migration does not fail (the user repairs and verifies again).
    if !verification.mismatches().is_empty() || !verification.differences.is_empty() {
        m.verify.last = Some(verification.clone());
    }
    let reason = match verification.complete {
        true => format!("the target differs from the source: {}", verification.summary()),
        false => format!("the verification did not cover every table: {}", verification.summary()),
    };
    abandon(m, attempt, reason, None, now, out);
}

fn on_verify_requested(m: &mut Migration, now: DateTime<Utc>, out: &mut Vec<Command>) -> Result<(), Rejection> {
    if m.phase != Phase::Syncing {
        return Err(Rejection::CannotVerify { status: m.status().as_str().to_owned() });
    }
    if m.verify.running.is_some() {
        return Ok(()); // a second click: one runs already
    }
    let request = m.verify.requests + 1;
    m.verify.requests = request;
    m.verify.running = Some(request);
    m.verify.requested_at = Some(now);
    m.record(now, format!("verification {request} requested"));
    out.push(Command::Verify { request });
    Ok(())
}

/// Gives up the current cutover attempt: unfence, then back to syncing (or to Failed when `failure`).
fn abandon(m: &mut Migration, attempt: u32, reason: String, failure: Option<EngineError>, now: DateTime<Utc>, out: &mut Vec<Command>) {
    m.cutover.abandoned_reason = Some(reason.clone());
    m.failure = failure;
    if m.cutover.fenced_at.is_some() && m.cutover.drained_position.is_none() {
        // The target did not confirm the fence position: ready again only once an observation after the
        // unfence says its lag is small, not on the strength of the one from before the cutover. (A
        // cutover abandoned before its fence, a pooler that refused to pause, left the link as it was.)
        m.ready_latched = false;
    }
    m.phase = Phase::CuttingOver { step: CutoverStep::Unfencing };
    m.record(now, format!("cutover abandoned: {reason}"));
    out.push(Command::Unfence { attempt });
}

fn on_failback_requested(m: &mut Migration, confirmed: bool, now: DateTime<Utc>, out: &mut Vec<Command>) -> Result<(), Rejection> {
    if !confirmed {
        return Err(Rejection::ConfirmationRequired);
    }
    match m.phase {
        Phase::FailingBack => Ok(()), // a second click
        Phase::Completed if m.settings.keep_reverse_link && m.cutover.reverse_link != ReverseLink::Kept => Err(Rejection::CannotFailBack {
            status: m.status().as_str().to_owned(),
            why: "the reverse link was removed after the cutover, so there is nothing to fail back over".into(),
        }),
        Phase::Completed if m.settings.keep_reverse_link => {
            m.phase = Phase::FailingBack;
            m.record(now, "failback requested");
            out.push(Command::Failback);
            Ok(())
        }
        Phase::Completed => Err(Rejection::CannotFailBack {
            status: m.status().as_str().to_owned(),
            why: "the cutover broke the link (keepReverseLink was false), so there is no reverse link to fail back over".into(),
        }),
        _ => Err(Rejection::CannotFailBack {
            status: m.status().as_str().to_owned(),
            why: "failback is possible only after a completed cutover".into(),
        }),
    }
}

/// Removing the reverse link: only after a completed cutover that kept one; asking again while it is being
/// removed sends the step again (a completed migration gets no watchdog ticks, and its message may have
/// been lost; the step is safe to repeat), and once removed it is refused.
fn on_drop_reverse_link_requested(m: &mut Migration, now: DateTime<Utc>, out: &mut Vec<Command>) -> Result<(), Rejection> {
    let refuse = |why: &str| Err(Rejection::NoReverseLink { status: m.status().as_str().to_owned(), why: why.to_owned() });
    if m.phase != Phase::Completed {
        return refuse("a reverse link exists only after a completed cutover");
    }
    if !m.settings.keep_reverse_link {
        return refuse("the cutover broke the link (keepReverseLink was false): there is no reverse link to remove");
    }
    match m.cutover.reverse_link {
        ReverseLink::Dropped => refuse("the reverse link is already removed"),
        ReverseLink::Dropping => {
            m.record(now, "removal of the reverse link requested again");
            out.push(Command::DropReverseLink);
            Ok(())
        }
        ReverseLink::Kept => {
            m.cutover.reverse_link = ReverseLink::Dropping;
            m.record(now, "removal of the reverse link requested");
            out.push(Command::DropReverseLink);
            Ok(())
        }
    }
}

fn on_cancel_requested(m: &mut Migration, now: DateTime<Utc>, out: &mut Vec<Command>) -> Result<(), Rejection> {
    match m.phase {
        Phase::Cancelling => return Ok(()),
        Phase::Completed
        | Phase::Cancelled
        | Phase::FailingBack
        | Phase::FailedBack
        | Phase::CuttingOver { step: CutoverStep::Switching } => {
            return Err(Rejection::CannotCancel { status: m.status().as_str().to_owned() })
        }
        _ => {}
    }
    if matches!(m.phase, Phase::Queued { .. }) {
        // Nothing exists on either server yet: nothing to drop.
        m.phase = Phase::Cancelled;
        m.record(now, "cancelled while queued");
        return Ok(());
    }
    let unfence = m.cutover.fence_active;
    m.verify.running = None;
    m.phase = Phase::Cancelling;
    m.stall = None;
    m.record(now, "cancel requested");
    out.push(Command::DropLink { unfence, drop_target: m.settings.drop_target_on_cancel });
    Ok(())
}

/// A step failed: `definite` when retrying cannot help, otherwise its retries are used up.
///
/// Steps that must finish once begun never end the migration: giving the source its writes back
/// (Unfence), the point of no return (Switch) and removing the link (DropLink) stall and are retried,
/// so a fixed cause lets them complete; no failure can leave a migration terminal with the source fenced.
fn on_step_error(m: &mut Migration, command: &Command, error: &EngineError, definite: bool, now: DateTime<Utc>, out: &mut Vec<Command>) {
    match command {
        Command::Failback => failback_failed(m, error, now),
        Command::Verify { request } => {
            m.verify.running = None;
            m.verify.last_error = Some(format!("{} ({})", error.message, error.remediation));
            m.record(now, format!("verification {request} could not run: {}", error.message));
        }
        Command::Fence { attempt } | Command::Drain { attempt, .. } | Command::Finalize { attempt } => {
            abandon(m, *attempt, error.message.clone(), definite.then(|| error.clone()), now, out);
        }
        Command::Validate | Command::CreateLink if definite => {
            m.failure = Some(error.clone());
            m.stall = None;
            m.phase = Phase::Failed;
            m.record(now, format!("{} failed: {}", command.name(), error.message));
        }
        _ => {
            let since = m.stall.as_ref().map_or(now, |s| s.since);
            let verb = if definite { "failed" } else { "keeps failing" };
            m.stall = Some(Stall {
                reason: format!("{} {verb}: {}", command.name(), error.message),
                remediation: error.remediation.clone(),
                since,
                retry_at: Some(now + Duration::seconds(STALL_RETRY_SECONDS)),
            });
        }
    }
}

/// A failback that did not happen leaves the cutover's result in place: the target stays primary.
fn failback_failed(m: &mut Migration, error: &EngineError, now: DateTime<Utc>) {
    m.phase = Phase::Completed;
    m.record(now, format!("failback failed, the target is still primary: {} ({})", error.message, error.remediation));
}

fn on_tick(m: &mut Migration, now: DateTime<Utc>, out: &mut Vec<Command>) {
    if drain_overdue(m, now) {
        let reason = format!(
            "the drain did not answer by its deadline (+{DRAIN_DEADLINE_GRACE_SECONDS} s; its message may have been lost); the source is given its writes back"
        );
        abandon(m, m.cutover.attempt, reason, None, now, out);
        return;
    }
    if !watchdog_due(m, now) {
        return;
    }
    if let Some(command) = pending_command(m) {
        if let Some(stall) = m.stall.as_mut() {
            stall.retry_at = Some(now + Duration::seconds(STALL_RETRY_SECONDS));
        } else {
            m.record(now, format!("{} sent again: no answer for {} s", command.name(), WATCHDOG_SECONDS));
        }
        out.push(command);
    }
}

fn drain_overdue(m: &Migration, now: DateTime<Utc>) -> bool {
    m.phase == (Phase::CuttingOver { step: CutoverStep::Draining })
        && m.cutover.drain_deadline.is_some_and(|deadline| now >= deadline + Duration::seconds(DRAIN_DEADLINE_GRACE_SECONDS))
}

/// Whether the timer's [`Event::Tick`] would do something now: a stalled step whose retry time has come,
/// a step in flight with no answer for [`WATCHDOG_SECONDS`], or a drain past its deadline. Pure, so the
/// poll asks it of every listed migration and writes only for those that are due.
pub fn watchdog_due(m: &Migration, now: DateTime<Utc>) -> bool {
    if drain_overdue(m, now) {
        return true;
    }
    if pending_command(m).is_none() {
        return false;
    }
    match &m.stall {
        Some(stall) => stall.retry_at.is_some_and(|at| at <= now),
        None => m.step_since.is_some_and(|since| now - since >= Duration::seconds(WATCHDOG_SECONDS)),
    }
}

/// The command a command-driven phase is waiting on (what to resend when it stalled).
pub fn pending_command(m: &Migration) -> Option<Command> {
    let attempt = m.cutover.attempt;
    match m.phase {
        Phase::Validating => Some(Command::Validate),
        Phase::Queued { .. } => None,
        Phase::Deploying => Some(Command::CreateLink),
        Phase::CuttingOver { step: CutoverStep::Fencing } => Some(Command::Fence { attempt }),
        Phase::CuttingOver { step: CutoverStep::Draining } => Some(Command::Drain {
            attempt,
            position: m.cutover.fence_position?,
            deadline: m.cutover.drain_deadline?,
        }),
        Phase::CuttingOver { step: CutoverStep::Finalizing } => Some(Command::Finalize { attempt }),
        Phase::CuttingOver { step: CutoverStep::Switching } => {
            Some(Command::Switch { attempt, keep_reverse_link: m.settings.keep_reverse_link })
        }
        Phase::CuttingOver { step: CutoverStep::Unfencing } => Some(Command::Unfence { attempt }),
        Phase::Cancelling => {
            Some(Command::DropLink { unfence: m.cutover.fence_active, drop_target: m.settings.drop_target_on_cancel })
        }
        Phase::FailingBack => Some(Command::Failback),
        Phase::Completed if m.cutover.reverse_link == ReverseLink::Dropping => Some(Command::DropReverseLink),
        Phase::Syncing => m.verify.running.map(|request| Command::Verify { request }),
        Phase::Completed | Phase::Failed | Phase::Cancelled | Phase::FailedBack => None,
    }
}

/// Is `command` still wanted by `m`? Handlers ask before touching a server, so a duplicate or late
/// message (a Fence from an abandoned attempt, an Unfence after completion) does nothing.
pub fn is_current(m: &Migration, command: &Command) -> bool {
    match (command, pending_command(m)) {
        (Command::Notify { .. }, _) => true,
        (Command::DropLink { .. }, Some(Command::DropLink { .. })) => true,
        (Command::Drain { attempt, .. }, Some(Command::Drain { attempt: current, .. })) => attempt == &current,
        (command, Some(pending)) => *command == pending,
        (_, None) => false,
    }
}

fn status_message(m: &Migration) -> String {
    match m.reason() {
        Some(reason) => format!("status {}: {reason}", m.status().as_str()),
        None => format!("status {}", m.status().as_str()),
    }
}

fn notification(m: &Migration, status: &Status) -> Option<Command> {
    let message = match status {
        Status::ReadyForCutover => format!("{} is ready for cutover", m.database),
        Status::Stalled => format!("{} is stalled: {}", m.database, m.reason().unwrap_or_default()),
        Status::Blocked => format!("{}: cutover blocked: {}", m.database, m.reason().unwrap_or_default()),
        Status::Completed => match m.history.last() {
            Some(last) if last.message.starts_with("failback failed") => format!("{}: {}", m.database, last.message),
            _ => format!(
                "{} cutover completed; write downtime {} ms",
                m.database,
                m.cutover.write_downtime_ms().unwrap_or_default()
            ),
        },
        Status::Failed => format!("{} failed: {}", m.database, m.reason().unwrap_or_default()),
        Status::Cancelled => format!("{} migration cancelled", m.database),
        Status::FailedBack => format!("{} failed back: the source is primary again", m.database),
        _ => return None,
    };
    Some(Command::Notify { status: status.as_str().to_owned(), message })
}

#[cfg(test)]
#[path = "flow_tests.rs"]
mod tests;
