//! Tests of the flow: every transition, then property tests of its invariants over random event streams.
use super::*;
use crate::assessment::{Finding, Severity};
use crate::migration::{LinkPhase, LinkProblem, Settings, TableCount};
use crate::names::{ConnectionName, DatabaseName, MigrationId};
use chrono::TimeZone;
use proptest::prelude::*;

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn new_migration() -> Migration {
    Migration::new(
        MigrationId("m-1".into()),
        ConnectionName::parse("src").unwrap(),
        ConnectionName::parse("dst").unwrap(),
        DatabaseName::parse("ToyStore").unwrap(),
        Settings::default(),
        t(0),
    )
}

fn observation(at: i64, phase: LinkPhase, lag: u64) -> Observation {
    Observation {
        at: t(at),
        phase,
        progress_percent: if phase == LinkPhase::Seeding { 40.0 } else { 100.0 },
        lag_bytes: Some(lag),
        lag_seconds: None,
        progress_marker: Some(Position(at as u64)),
        problem: None,
        drift: Vec::new(),
        seed: None,
    }
}

fn step(m: &Migration, event: Event, at: i64) -> Transition {
    decide(m, &event, t(at)).expect("accepted")
}

/// A migration driven to Ready for cutover.
fn ready() -> Migration {
    let m = start(new_migration()).migration;
    let m = step(&m, Event::Validated { findings: vec![] }, 1).migration;
    let m = step(&m, Event::Admitted, 1).migration;
    let m = step(&m, Event::LinkCreated, 2).migration;
    step(&m, Event::Observed { observation: observation(3, LinkPhase::Streaming, 0) }, 3).migration
}

fn ok_verification() -> Verification {
    Verification { tables: vec![TableCount::counted("public.orders", 5, 5)], sequences_set: 1, complete: true, ..Verification::default() }
}

fn differing_verification() -> Verification {
    Verification { tables: vec![TableCount::counted("public.orders", 5, 4)], complete: true, ..Verification::default() }
}

#[test]
fn the_watchdog_resends_a_step_whose_message_was_lost() {
    let m = ready();
    let m = step(&m, Event::CutoverRequested { confirm_traffic_stopped: true }, 10).migration;
    assert_eq!(m.step_since, Some(t(10)));
    assert!(!watchdog_due(&m, t(10 + WATCHDOG_SECONDS - 1)), "a step in flight is left alone for a while");
    assert!(watchdog_due(&m, t(10 + WATCHDOG_SECONDS)));
    let tr = step(&m, Event::Tick, 10 + WATCHDOG_SECONDS);
    assert_eq!(tr.commands, vec![Command::Fence { attempt: 1 }], "the lost Fence is sent again");
    assert!(!watchdog_due(&tr.migration, t(11 + WATCHDOG_SECONDS)), "and the clock restarts");
}

#[test]
fn a_drain_past_its_deadline_is_abandoned_even_if_its_message_is_lost() {
    let m = ready();
    let m = step(&m, Event::CutoverRequested { confirm_traffic_stopped: true }, 10).migration;
    let m = step(&m, Event::Fenced { attempt: 1, started_at: t(10), position: Position(100) }, 11).migration;
    let deadline = m.cutover.drain_deadline.unwrap();
    let late = (deadline - t(0)).num_seconds() + DRAIN_DEADLINE_GRACE_SECONDS;
    assert!(!watchdog_due(&m, t(late - 1)));
    let tr = step(&m, Event::Tick, late);
    assert_eq!(tr.commands.first(), Some(&Command::Unfence { attempt: 1 }));
    let tr = step(&tr.migration, Event::Unfenced { attempt: 1 }, late + 1);
    assert_eq!(tr.migration.status(), Status::CatchingUp, "ready again once observed caught up");
    assert!(!tr.migration.cutover.fence_active);
}

#[test]
fn a_stalled_cutover_step_shows_stalled_with_the_fence_state_and_notifies() {
    let m = ready();
    let m = step(&m, Event::CutoverRequested { confirm_traffic_stopped: true }, 10).migration;
    let m = step(&m, Event::Fenced { attempt: 1, started_at: t(10), position: Position(100) }, 11).migration;
    let m = step(&m, Event::Drained { attempt: 1, position: Position(100) }, 12).migration;
    let m = step(&m, Event::Finalized { attempt: 1, verification: ok_verification() }, 13).migration;
    let error = EngineError::transient("store", "target unreachable", "check the network");
    let tr = step(&m, Event::StepExhausted { command: Command::Switch { attempt: 1, keep_reverse_link: false }, error }, 14);
    assert_eq!(tr.migration.status(), Status::Stalled);
    let reason = tr.migration.reason().unwrap();
    assert!(reason.contains("target unreachable") && reason.contains("source is fenced"), "{reason}");
    assert!(tr.commands.iter().any(|c| matches!(c, Command::Notify { status, .. } if status == "Stalled")), "{:?}", tr.commands);
}

#[test]
fn the_happy_path_reaches_completed_with_downtime_recorded() {
    let m = ready();
    assert_eq!(m.status(), Status::ReadyForCutover);
    let tr = step(&m, Event::CutoverRequested { confirm_traffic_stopped: true }, 10);
    assert_eq!(tr.commands, vec![Command::Fence { attempt: 1 }]);
    let tr = step(&tr.migration, Event::Fenced { attempt: 1, started_at: t(10), position: Position(100) }, 11);
    assert!(matches!(tr.commands[0], Command::Drain { attempt: 1, position: Position(100), .. }));
    assert_eq!(tr.migration.cutover.steps, vec![crate::migration::StepDuration { step: CutoverStep::Fencing, ms: 1000 }], "each step's time is kept");
    let tr = step(&tr.migration, Event::Drained { attempt: 1, position: Position(100) }, 12);
    assert_eq!(tr.commands, vec![Command::Finalize { attempt: 1 }]);
    let tr = step(&tr.migration, Event::Finalized { attempt: 1, verification: ok_verification() }, 13);
    assert_eq!(tr.commands, vec![Command::Switch { attempt: 1, keep_reverse_link: false }]);
    let tr = step(&tr.migration, Event::Switched { attempt: 1 }, 14);
    assert_eq!(tr.migration.status(), Status::Completed);
    assert_eq!(tr.migration.cutover.write_downtime_ms(), Some(4000));
    assert!(matches!(&tr.commands[..], [Command::Notify { status, .. }] if status == "Completed"));
    assert!(tr.migration.history.iter().any(|h| h.message.contains("write downtime")));
}

fn completed(keep_reverse_link: bool) -> Migration {
    let mut m = ready();
    m.settings.keep_reverse_link = keep_reverse_link;
    let m = step(&m, Event::CutoverRequested { confirm_traffic_stopped: true }, 10).migration;
    let m = step(&m, Event::Fenced { attempt: 1, started_at: t(10), position: Position(100) }, 11).migration;
    let m = step(&m, Event::Drained { attempt: 1, position: Position(100) }, 12).migration;
    let m = step(&m, Event::Finalized { attempt: 1, verification: ok_verification() }, 13).migration;
    step(&m, Event::Switched { attempt: 1 }, 14).migration
}

#[test]
fn failback_runs_only_over_a_kept_reverse_link() {
    let broken = completed(false);
    assert!(matches!(
        decide(&broken, &Event::FailbackRequested { confirm_traffic_stopped: true }, t(20)),
        Err(Rejection::CannotFailBack { .. })
    ));
    let kept = completed(true);
    assert_eq!(decide(&kept, &Event::FailbackRequested { confirm_traffic_stopped: false }, t(20)), Err(Rejection::ConfirmationRequired));
    let tr = step(&kept, Event::FailbackRequested { confirm_traffic_stopped: true }, 20);
    assert_eq!(tr.commands, vec![Command::Failback]);
    assert_eq!(tr.migration.status(), Status::FailingBack);
    assert!(!step(&tr.migration, Event::FailbackRequested { confirm_traffic_stopped: true }, 21).changed, "second click");
    let done = step(&tr.migration, Event::FailedBack { steps: Vec::new() }, 22);
    assert_eq!(done.migration.status(), Status::FailedBack);
    assert!(matches!(&done.commands[..], [Command::Notify { status, .. }] if status == "FailedBack"));
    // A failback that fails leaves the target primary, and can be asked for again.
    let error = EngineError::definite("x", "the instance refused", "retry later");
    let failed = step(&tr.migration, Event::StepFailed { command: Command::Failback, error }, 22);
    assert_eq!(failed.migration.status(), Status::Completed);
    assert!(failed.migration.history.iter().any(|h| h.message.contains("failback failed")));
    assert!(matches!(&failed.commands[..], [Command::Notify { message, .. }] if message.contains("failback failed")));
}

#[test]
fn a_kept_reverse_link_is_removed_once_and_then_there_is_no_failback() {
    assert!(matches!(decide(&completed(false), &Event::DropReverseLinkRequested, t(20)), Err(Rejection::NoReverseLink { .. })));
    let kept = completed(true);
    let asked = step(&kept, Event::DropReverseLinkRequested, 20);
    assert_eq!(asked.commands, vec![Command::DropReverseLink]);
    assert!(is_current(&asked.migration, &Command::DropReverseLink), "the handler and the watchdog see the step in flight");
    assert_eq!(asked.migration.status(), Status::Completed, "still completed while it is removed");
    let again = step(&asked.migration, Event::DropReverseLinkRequested, 21);
    assert_eq!(again.commands, vec![Command::DropReverseLink], "asking again sends the step again (its message may be lost)");
    // A failure puts it back, to be asked for again.
    let error = EngineError::definite("x", "the source refused", "fix it");
    let failed = step(&asked.migration, Event::StepFailed { command: Command::DropReverseLink, error }, 22).migration;
    assert_eq!(failed.cutover.reverse_link, crate::migration::ReverseLink::Dropping, "a removal half done is not a reverse link to fail back over");
    assert!(failed.history.iter().any(|h| h.message.contains("could not remove the reverse link")));
    assert!(matches!(decide(&failed, &Event::FailbackRequested { confirm_traffic_stopped: true }, t(22)), Err(Rejection::CannotFailBack { .. })));
    assert_eq!(step(&failed, Event::DropReverseLinkRequested, 22).commands, vec![Command::DropReverseLink], "asked again, it finishes");
    let dropped = step(&asked.migration, Event::ReverseLinkDropped, 23).migration;
    assert_eq!(dropped.cutover.reverse_link, crate::migration::ReverseLink::Dropped);
    assert!(!is_current(&dropped, &Command::DropReverseLink));
    assert!(matches!(decide(&dropped, &Event::DropReverseLinkRequested, t(24)), Err(Rejection::NoReverseLink { .. })));
    assert!(matches!(
        decide(&dropped, &Event::FailbackRequested { confirm_traffic_stopped: true }, t(24)),
        Err(Rejection::CannotFailBack { why, .. }) if why.contains("removed")
    ));
}

#[test]
fn a_failed_back_migration_with_a_reverse_link_can_fail_forward_again() {
    let kept = completed(true);
    let m = step(&kept, Event::FailbackRequested { confirm_traffic_stopped: true }, 20).migration;
    let m = step(&m, Event::FailedBack { steps: Vec::new() }, 21).migration;
    let again = step(&m, Event::CutoverRequested { confirm_traffic_stopped: true }, 30);
    assert_eq!(again.commands, vec![Command::Fence { attempt: 2 }]);
    let m = step(&again.migration, Event::Fenced { attempt: 2, started_at: t(30), position: Position(200) }, 31).migration;
    let m = step(&m, Event::Drained { attempt: 2, position: Position(200) }, 32).migration;
    let m = step(&m, Event::Finalized { attempt: 2, verification: ok_verification() }, 33).migration;
    let switching = step(&m, Event::Finalized { attempt: 2, verification: ok_verification() }, 33);
    assert!(!switching.changed, "a duplicate finalized changes nothing");
    let done = step(&m, Event::Switched { attempt: 2 }, 34).migration;
    assert_eq!(done.status(), Status::Completed);
    let m = step(&done, Event::FailbackRequested { confirm_traffic_stopped: true }, 40).migration;
    assert_eq!(m.status(), Status::FailingBack, "and back again");
}

#[test]
fn cutover_needs_the_confirmation_and_a_ready_link() {
    let m = ready();
    assert_eq!(decide(&m, &Event::CutoverRequested { confirm_traffic_stopped: false }, t(5)), Err(Rejection::ConfirmationRequired));
    let seeding = step(&m, Event::Observed { observation: observation(4, LinkPhase::Seeding, 0) }, 4).migration;
    assert!(matches!(
        decide(&seeding, &Event::CutoverRequested { confirm_traffic_stopped: true }, t(5)),
        Err(Rejection::NotReadyForCutover { .. })
    ));
    let lagging = step(&m, Event::Observed { observation: observation(4, LinkPhase::Streaming, 10_000_000) }, 4).migration;
    assert_eq!(lagging.status(), Status::CatchingUp);
    assert!(decide(&lagging, &Event::CutoverRequested { confirm_traffic_stopped: true }, t(5)).is_err());
}

#[test]
fn a_drain_timeout_unfences_and_returns_to_ready_once_observed_caught_up() {
    let m = ready();
    let m = step(&m, Event::CutoverRequested { confirm_traffic_stopped: true }, 10).migration;
    let m = step(&m, Event::Fenced { attempt: 1, started_at: t(10), position: Position(100) }, 11).migration;
    let tr = step(&m, Event::DrainTimedOut { attempt: 1, reached: Some(Position(90)) }, 41);
    assert_eq!(tr.commands, vec![Command::Unfence { attempt: 1 }]);
    assert_eq!(tr.migration.step().as_deref(), Some("Unfencing"));
    let tr = step(&tr.migration, Event::Unfenced { attempt: 1 }, 42);
    // The target just failed to confirm the fence: not ready until an observation says the lag is small again.
    assert_eq!(tr.migration.status(), Status::CatchingUp);
    assert!(tr.migration.cutover.abandoned_reason.as_deref().unwrap().contains("did not confirm"));
    let refused = decide(&tr.migration, &Event::CutoverRequested { confirm_traffic_stopped: true }, t(42));
    assert!(matches!(refused, Err(Rejection::NotReadyForCutover { .. })), "{refused:?}");
    let tr = step(&tr.migration, Event::Observed { observation: observation(43, LinkPhase::Streaming, 0) }, 43);
    assert_eq!(tr.migration.status(), Status::ReadyForCutover);
    // A late answer from the abandoned attempt changes nothing.
    let late = step(&tr.migration, Event::Drained { attempt: 1, position: Position(100) }, 43);
    assert!(!late.changed);
    // A second attempt is numbered 2.
    let again = step(&tr.migration, Event::CutoverRequested { confirm_traffic_stopped: true }, 50);
    assert_eq!(again.commands, vec![Command::Fence { attempt: 2 }]);
}

#[test]
fn a_fence_that_failed_before_fencing_leaves_the_migration_ready() {
    // A pooler that refused to pause: nothing was fenced, the link is as it was.
    let m = ready();
    let m = step(&m, Event::CutoverRequested { confirm_traffic_stopped: true }, 10).migration;
    let error = EngineError::transient("pooler", "the pooler refused PAUSE", "check the pooler's admin password");
    let tr = step(&m, Event::StepExhausted { command: Command::Fence { attempt: 1 }, error }, 11);
    assert_eq!(tr.commands.first(), Some(&Command::Unfence { attempt: 1 }));
    let tr = step(&tr.migration, Event::Unfenced { attempt: 1 }, 12);
    assert_eq!(tr.migration.status(), Status::ReadyForCutover);
    assert!(tr.migration.cutover.abandoned_reason.as_deref().is_some_and(|r| r.contains("PAUSE")));
}

#[test]
fn a_verification_difference_unfences_and_blocks_the_next_cutover() {
    let m = ready();
    let m = step(&m, Event::CutoverRequested { confirm_traffic_stopped: true }, 10).migration;
    let m = step(&m, Event::Fenced { attempt: 1, started_at: t(10), position: Position(100) }, 11).migration;
    let m = step(&m, Event::Drained { attempt: 1, position: Position(100) }, 12).migration;
    let bad = Verification { tables: vec![TableCount::counted("t", 5, 4)], complete: true, ..Verification::default() };
    let tr = step(&m, Event::Finalized { attempt: 1, verification: bad }, 13);
    assert_eq!(tr.commands, vec![Command::Unfence { attempt: 1 }]);
    let tr = step(&tr.migration, Event::Unfenced { attempt: 1 }, 14);
    assert_eq!(tr.migration.status(), Status::Blocked, "the link still syncs, but the cutover is blocked");
    assert!(tr.migration.reason().unwrap().contains("source 5 rows, target 4"), "{:?}", tr.migration.reason());
    let again = decide(&tr.migration, &Event::CutoverRequested { confirm_traffic_stopped: true }, t(15));
    assert!(matches!(again, Err(Rejection::NotReadyForCutover { .. })), "{again:?}");
    // A clean verification afterwards unblocks it.
    let tr = step(&tr.migration, Event::VerifyRequested, 16);
    assert_eq!(tr.commands, vec![Command::Verify { request: 1 }]);
    let clean = Verification { tables: vec![TableCount::counted("t", 5, 5)], complete: true, ..Verification::default() };
    let tr = step(&tr.migration, Event::Verified { request: 1, verification: clean }, 17);
    assert_eq!(tr.migration.status(), Status::ReadyForCutover);
}

#[test]
fn a_difference_found_before_the_fence_refuses_the_cutover_without_fencing() {
    let m = ready();
    let m = step(&m, Event::CutoverRequested { confirm_traffic_stopped: true }, 10).migration;
    let tr = step(&m, Event::RefusedBeforeFence { attempt: 1, verification: differing_verification() }, 11);
    assert!(tr.commands.iter().all(|c| matches!(c, Command::Notify { .. })), "nothing to unfence: {:?}", tr.commands);
    assert!(!tr.migration.cutover.fence_active);
    assert!(tr.migration.cutover.abandoned_reason.as_deref().is_some_and(|r| r.contains("before the fence")));
    assert_eq!(tr.migration.cutover.fenced_at, None);
    // The difference blocks the next cutover until a clean verification.
    let refused = decide(&tr.migration, &Event::CutoverRequested { confirm_traffic_stopped: true }, t(12));
    assert!(refused.is_err(), "{refused:?}");
    // A stale refusal (another attempt) changes nothing.
    let stale = step(&m, Event::RefusedBeforeFence { attempt: 2, verification: differing_verification() }, 11);
    assert!(!stale.changed);
}

#[test]
fn an_incomplete_verification_never_completes_a_cutover() {
    let m = ready();
    let m = step(&m, Event::CutoverRequested { confirm_traffic_stopped: true }, 10).migration;
    let m = step(&m, Event::Fenced { attempt: 1, started_at: t(10), position: Position(100) }, 11).migration;
    let m = step(&m, Event::Drained { attempt: 1, position: Position(100) }, 12).migration;
    let partial = Verification { tables: vec![TableCount::counted("t", 5, 5)], complete: false, ..Verification::default() };
    let tr = step(&m, Event::Finalized { attempt: 1, verification: partial }, 13);
    assert_eq!(tr.commands, vec![Command::Unfence { attempt: 1 }]);
    let tr = step(&tr.migration, Event::Unfenced { attempt: 1 }, 14);
    assert_eq!(tr.migration.status(), Status::ReadyForCutover, "nothing differs, so nothing blocks a retry");
}

#[test]
fn verification_runs_only_while_syncing_and_once_at_a_time() {
    let m = ready();
    let tr = step(&m, Event::VerifyRequested, 10);
    assert_eq!(tr.commands, vec![Command::Verify { request: 1 }]);
    let twice = decide(&tr.migration, &Event::VerifyRequested, t(11)).unwrap();
    assert!(!twice.changed, "a second click while one runs changes nothing");
    // A late answer to a superseded request is ignored.
    let cut = step(&tr.migration, Event::CutoverRequested { confirm_traffic_stopped: true }, 12).migration;
    let late = Verification { tables: vec![TableCount::counted("t", 1, 0)], complete: true, ..Verification::default() };
    assert!(!decide(&cut, &Event::Verified { request: 1, verification: late }, t(13)).unwrap().changed);
    assert!(matches!(decide(&cut, &Event::VerifyRequested, t(14)), Err(Rejection::CannotVerify { .. })));
}

#[test]
fn blocking_schema_drift_holds_a_caught_up_link_out_of_ready() {
    let m = ready();
    let mut o = observation(20, LinkPhase::Streaming, 0);
    o.drift.push(crate::verification::SchemaChange {
        object: "public.orders".into(),
        change: "column type changed".into(),
        carried: false,
        remediation: "change it on the target too".into(),
    });
    let tr = step(&m, Event::Observed { observation: o }, 20);
    assert_eq!(tr.migration.status(), Status::Blocked);
    assert!(tr.migration.reason().unwrap().contains("public.orders"));
    assert!(decide(&tr.migration, &Event::CutoverRequested { confirm_traffic_stopped: true }, t(21)).is_err());
}

#[test]
fn blockers_fail_validation_with_every_reason() {
    let m = start(new_migration()).migration;
    let findings = vec![
        Finding::new("a", Severity::Blocker, "no key on t1", "add a key"),
        Finding::new("b", Severity::Blocker, "wal_level", "set logical"),
        Finding::new("c", Severity::Warning, "w", "x"),
    ];
    let tr = step(&m, Event::Validated { findings }, 1);
    assert_eq!(tr.migration.status(), Status::Failed);
    let reason = tr.migration.reason().unwrap();
    assert!(reason.contains("no key on t1") && reason.contains("wal_level"), "{reason}");
    assert!(tr.migration.remediation().unwrap().contains("add a key"));
}

#[test]
fn exhausted_steps_stall_and_are_retried_by_the_timer_then_recover() {
    let m = start(new_migration()).migration;
    let m = step(&m, Event::Validated { findings: vec![] }, 1).migration;
    let m = step(&m, Event::Admitted, 1).migration;
    let error = EngineError::transient("unreachable", "cannot reach target:5432", "start the target");
    let tr = step(&m, Event::StepExhausted { command: Command::CreateLink, error }, 2);
    assert_eq!(tr.migration.status(), Status::Stalled);
    assert!(tr.migration.reason().unwrap().contains("cannot reach"));
    let early = step(&tr.migration, Event::Tick, 3);
    assert!(early.commands.is_empty(), "not before the retry time");
    let due = step(&tr.migration, Event::Tick, 2 + STALL_RETRY_SECONDS);
    assert_eq!(due.commands, vec![Command::CreateLink]);
    let recovered = step(&due.migration, Event::LinkCreated, 40);
    assert_eq!(recovered.migration.status(), Status::Deploying);
    assert!(recovered.migration.stall.is_none());
}

#[test]
fn a_link_problem_stalls_and_clears_by_itself() {
    let m = ready();
    let mut broken = observation(10, LinkPhase::Streaming, 0);
    broken.problem = Some(LinkProblem { kind: None, reason: "apply worker not running".into(), remediation: "enable".into() });
    let m = step(&m, Event::Observed { observation: broken }, 10).migration;
    assert_eq!(m.status(), Status::Stalled);
    let m = step(&m, Event::Observed { observation: observation(11, LinkPhase::Streaming, 0) }, 11).migration;
    assert_eq!(m.status(), Status::ReadyForCutover);
}

#[test]
fn no_progress_for_too_long_is_a_stall() {
    let m = ready();
    let mut stuck = observation(20, LinkPhase::Streaming, 10_000_000);
    stuck.progress_marker = Some(Position(7));
    let m = step(&m, Event::Observed { observation: stuck.clone() }, 20).migration;
    assert_eq!(m.status(), Status::CatchingUp);
    stuck.at = t(20 + 301);
    let m = step(&m, Event::Observed { observation: stuck.clone() }, 20 + 301).migration;
    assert_eq!(m.status(), Status::Stalled);
    assert!(m.reason().unwrap().contains("no replication progress"));
}

#[test]
fn stale_observations_are_ignored() {
    let m = ready();
    let newer = step(&m, Event::Observed { observation: observation(20, LinkPhase::Streaming, 5) }, 20).migration;
    let stale = step(&newer, Event::Observed { observation: observation(15, LinkPhase::Seeding, 0) }, 21);
    assert!(!stale.changed);
}

#[test]
fn a_stalled_cancel_during_a_cutover_shows_stalled_with_the_fence_state_and_notifies() {
    let m = ready();
    let m = step(&m, Event::CutoverRequested { confirm_traffic_stopped: true }, 10).migration;
    let m = step(&m, Event::Fenced { attempt: 1, started_at: t(10), position: Position(100) }, 11).migration;
    let m = step(&m, Event::CancelRequested, 12).migration;
    let error = EngineError::transient("unreachable", "source unreachable", "check the network");
    let tr = step(&m, Event::StepExhausted { command: Command::DropLink { unfence: true, drop_target: false }, error }, 13);
    assert_eq!(tr.migration.status(), Status::Stalled);
    let reason = tr.migration.reason().unwrap();
    assert!(reason.contains("source unreachable") && reason.contains("source is fenced"), "{reason}");
    assert!(tr.commands.iter().any(|c| matches!(c, Command::Notify { status, .. } if status == "Stalled")), "{:?}", tr.commands);
    // The timer sends the cancel again; once it lands the migration is Cancelled.
    let again = step(&tr.migration, Event::Tick, 200);
    assert!(again.commands.iter().any(|c| matches!(c, Command::DropLink { unfence: true, .. })), "{:?}", again.commands);
    assert_eq!(step(&again.migration, Event::LinkDropped, 201).migration.status(), Status::Cancelled);
}

#[test]
fn cancel_unfences_during_a_cutover_and_is_refused_past_the_point_of_no_return() {
    let m = ready();
    let m = step(&m, Event::CutoverRequested { confirm_traffic_stopped: true }, 10).migration;
    let m = step(&m, Event::Fenced { attempt: 1, started_at: t(10), position: Position(100) }, 11).migration;
    let tr = step(&m, Event::CancelRequested, 12);
    assert_eq!(tr.commands, vec![Command::DropLink { unfence: true, drop_target: false }]);
    let done = step(&tr.migration, Event::LinkDropped, 13);
    assert_eq!(done.migration.status(), Status::Cancelled);

    let m = step(&m, Event::Drained { attempt: 1, position: Position(100) }, 12).migration;
    let m = step(&m, Event::Finalized { attempt: 1, verification: ok_verification() }, 13).migration;
    assert!(matches!(decide(&m, &Event::CancelRequested, t(14)), Err(Rejection::CannotCancel { .. })));
}

#[test]
fn handlers_can_tell_stale_commands() {
    let m = ready();
    let m = step(&m, Event::CutoverRequested { confirm_traffic_stopped: true }, 10).migration;
    assert!(is_current(&m, &Command::Fence { attempt: 1 }));
    assert!(!is_current(&m, &Command::Fence { attempt: 0 }));
    assert!(!is_current(&m, &Command::Unfence { attempt: 1 }), "never unfence a source the flow did not abandon");
    assert!(!is_current(&m, &Command::CreateLink));
}

// ---- properties over random event streams ----

fn any_command() -> impl Strategy<Value = Command> {
    let attempt = 0u32..3;
    prop_oneof![
        Just(Command::Validate),
        Just(Command::CreateLink),
        attempt.clone().prop_map(|attempt| Command::Fence { attempt }),
        attempt.clone().prop_map(|attempt| Command::Drain { attempt, position: Position(100), deadline: t(0) }),
        attempt.clone().prop_map(|attempt| Command::Finalize { attempt }),
        attempt.clone().prop_map(|attempt| Command::Switch { attempt, keep_reverse_link: false }),
        attempt.prop_map(|attempt| Command::Unfence { attempt }),
        any::<bool>().prop_map(|unfence| Command::DropLink { unfence, drop_target: false }),
        (1u32..3).prop_map(|request| Command::Verify { request }),
    ]
}

fn any_event() -> impl Strategy<Value = Event> {
    let position = (0u64..5).prop_map(|p| Position(p * 50));
    let attempt = 0u32..3;
    prop_oneof![
        Just(Event::Validated { findings: vec![] }),
        Just(Event::Admitted),
        Just(Event::Validated { findings: vec![Finding::new("r", Severity::Blocker, "b", "f")] }),
        Just(Event::LinkCreated),
        (0i64..200, prop_oneof![Just(LinkPhase::Seeding), Just(LinkPhase::Streaming)], 0u64..200_000)
            .prop_map(|(at, phase, lag)| Event::Observed { observation: observation(at, phase, lag) }),
        any::<bool>().prop_map(|confirm| Event::CutoverRequested { confirm_traffic_stopped: confirm }),
        (attempt.clone(), position.clone()).prop_map(|(attempt, position)| Event::Fenced { attempt, started_at: t(0), position }),
        (attempt.clone(), position).prop_map(|(attempt, position)| Event::Drained { attempt, position }),
        attempt.clone().prop_map(|attempt| Event::DrainTimedOut { attempt, reached: None }),
        attempt.clone().prop_map(|attempt| Event::Finalized { attempt, verification: ok_verification() }),
        attempt.clone().prop_map(|attempt| Event::Finalized { attempt, verification: differing_verification() }),
        Just(Event::VerifyRequested),
        (1u32..3, any::<bool>()).prop_map(|(request, clean)| Event::Verified {
            request,
            verification: if clean { ok_verification() } else { differing_verification() }
        }),
        attempt.clone().prop_map(|attempt| Event::Switched { attempt }),
        attempt.prop_map(|attempt| Event::Unfenced { attempt }),
        Just(Event::CancelRequested),
        Just(Event::LinkDropped),
        (any_command(), any::<bool>()).prop_map(|(command, definite)| {
            let error = EngineError::transient("x", "y", "z");
            if definite { Event::StepFailed { command, error } } else { Event::StepExhausted { command, error } }
        }),
        Just(Event::Tick),
    ]
}

/// Runs events through decide (rejections leave the state as it was), checking invariants on the way.
fn run(events: &[Event]) -> Migration {
    let mut m = start(new_migration()).migration;
    for (i, event) in events.iter().enumerate() {
        let now = t(1000 + i as i64);
        let before = m.clone();
        let Ok(tr) = decide(&m, event, now) else { continue };
        // Invariant: Completed only via Switched, from Switching, after a drain proved catch-up.
        if tr.migration.phase == Phase::Completed && before.phase != Phase::Completed {
            assert!(matches!(event, Event::Switched { .. }));
            let c = &tr.migration.cutover;
            assert!(c.drained_position.is_some() && c.drained_position >= c.fence_position, "{c:?}");
            assert!(c.verification.as_ref().is_some_and(|v| v.mismatches().is_empty()));
            assert!(c.requested_at.is_some());
        }
        // Invariant: no failure leaves a migration failed or cancelled with the source fenced.
        if matches!(tr.migration.phase, Phase::Failed | Phase::Cancelled) {
            assert!(!tr.migration.cutover.fence_active, "{:?} with the source fenced after {event:?}", tr.migration.phase);
        }
        // Invariant: a terminal migration never changes.
        if before.phase.is_terminal() && !(before.phase == Phase::Failed && matches!(event, Event::CancelRequested)) {
            assert!(!tr.changed, "terminal {:?} changed on {event:?}", before.phase);
        }
        // Invariant: decide is deterministic, and applying the same event again right away changes
        // nothing it has not already changed (duplicates are harmless).
        assert_eq!(decide(&m, event, now).unwrap(), tr);
        if let Ok(again) = decide(&tr.migration, event, now) {
            assert!(
                !again.changed || matches!(event, Event::Tick | Event::StepExhausted { .. }),
                "duplicate {event:?} changed the state again"
            );
            assert!(again.commands.iter().all(|c| matches!(c, Command::Notify { .. })) || matches!(event, Event::Tick),
                "duplicate {event:?} emitted {:?}", again.commands);
        }
        m = tr.migration;
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn invariants_hold_for_any_event_stream(events in proptest::collection::vec(any_event(), 0..40)) {
        run(&events);
    }

    #[test]
    fn every_live_state_can_be_cancelled_or_is_past_the_point_of_no_return(events in proptest::collection::vec(any_event(), 0..40)) {
        let m = run(&events);
        match decide(&m, &Event::CancelRequested, t(5000)) {
            Ok(tr) => {
                // A queued migration has nothing on either server: it is cancelled at once.
                if m.phase != Phase::Cancelling && !matches!(m.phase, Phase::Queued { .. }) {
                    let drops = tr.commands.iter().any(|c| matches!(c, Command::DropLink { .. }));
                    prop_assert!(drops);
                }
                let done = decide(&tr.migration, &Event::LinkDropped, t(5001)).unwrap();
                prop_assert_eq!(done.migration.status(), Status::Cancelled);
            }
            Err(Rejection::CannotCancel { .. }) => {
                let final_or_switching = matches!(
                    m.phase,
                    Phase::Completed | Phase::Cancelled | Phase::CuttingOver { step: CutoverStep::Switching }
                );
                prop_assert!(final_or_switching);
            }
            Err(other) => prop_assert!(false, "unexpected rejection {other:?}"),
        }
    }

    #[test]
    fn a_cancel_during_a_cutover_always_unfences(events in proptest::collection::vec(any_event(), 0..40)) {
        let m = run(&events);
        if let Phase::CuttingOver { step } = m.phase {
            if step != CutoverStep::Switching {
                let tr = decide(&m, &Event::CancelRequested, t(5000)).unwrap();
                let unfences = matches!(tr.commands.first(), Some(Command::DropLink { unfence: true, .. }));
                prop_assert!(unfences);
            }
        }
    }
}

#[test]
fn readiness_has_hysteresis_so_a_hovering_lag_does_not_flap() {
    let mib = 1024 * 1024;
    let mut m = ready();
    let mut statuses = Vec::new();
    for (i, lag) in [3 * mib / 2, 3 * mib, 3 * mib / 2, mib / 2].into_iter().enumerate() {
        let at = 10 + i as i64;
        m = step(&m, Event::Observed { observation: observation(at, LinkPhase::Streaming, lag) }, at).migration;
        statuses.push(m.status());
    }
    assert_eq!(statuses, vec![Status::ReadyForCutover, Status::CatchingUp, Status::CatchingUp, Status::ReadyForCutover]);
}

#[test]
fn one_failed_observation_is_not_a_stall_three_are() {
    let mut m = ready();
    let error = EngineError::transient("unreachable", "cannot reach source:5432", "start it");
    for n in 1..=OBSERVE_FAILURES_TO_STALL {
        m = step(&m, Event::ObserveFailed { error: error.clone() }, 10 + n as i64).migration;
        assert_eq!(m.status() == Status::Stalled, n == OBSERVE_FAILURES_TO_STALL, "after {n} failures");
    }
    let m = step(&m, Event::Observed { observation: observation(20, LinkPhase::Streaming, 0) }, 20).migration;
    assert_eq!(m.status(), Status::ReadyForCutover);
}

#[test]
fn a_validated_migration_waits_queued_until_admitted_and_a_queued_one_cancels_without_touching_servers() {
    let m = start(new_migration()).migration;
    let queued = step(&m, Event::Validated { findings: vec![] }, 1);
    assert_eq!(queued.migration.status(), Status::Queued);
    assert!(queued.commands.iter().all(|c| !matches!(c, Command::CreateLink)), "no link before admission");
    let why = "waiting for a logical replication worker on dst: 4 of 4 in use";
    let waiting = step(&queued.migration, Event::StillQueued { reason: why.into() }, 2);
    assert_eq!(waiting.migration.reason().as_deref(), Some(why));
    let same = step(&waiting.migration, Event::StillQueued { reason: why.into() }, 3);
    assert!(!same.changed, "the same reason again writes nothing");
    let admitted = step(&waiting.migration, Event::Admitted, 4);
    assert_eq!(admitted.migration.status(), Status::Deploying);
    assert!(admitted.commands.contains(&Command::CreateLink));
    let cancelled = step(&waiting.migration, Event::CancelRequested, 5);
    assert_eq!(cancelled.migration.status(), Status::Cancelled);
    assert!(cancelled.commands.iter().all(|c| !matches!(c, Command::DropLink { .. })));
}
