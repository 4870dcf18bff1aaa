use super::*;
use crate::admission::{decide, Capacity, Caps, Pool, Role, Verdict};
use crate::migration::{Migration, Observation};
use crate::names::MigrationId;
use chrono::{TimeZone, Utc};
use std::collections::BTreeMap;

const PLAN: &str = r#"
name = "tailspin-q1"

[[waves]]
name = "pilot"
[[waves.links]]
source = "src"
target = "dst"
databases = ["ToyStore"]

[[waves]]
name = "main"
approval = true
start_after = "ready"
[[waves.links]]
source = "src"
target = "dst"
databases = ["Customer360", "Wingtip"]
settings = { keepReverseLink = true }
"#;

fn member(n: i64, wave: u32, phase: Phase) -> Migration {
    let mut m = Migration::new(
        MigrationId(format!("00000000-0000-0000-0000-{n:012}")),
        ConnectionName::parse("src").unwrap(),
        ConnectionName::parse("dst").unwrap(),
        DatabaseName::parse(&format!("db{n}")).unwrap(),
        Settings::default(),
        Utc.timestamp_opt(1_700_000_000 + n, 0).unwrap(),
    );
    m.phase = phase;
    m.fleet = Some(Membership {
        plan: "p".into(),
        wave,
        wave_name: format!("w{wave}"),
        approval: false,
        start_after: StartAfter::Completed,
        approved_at: None,
    });
    m
}

fn queued() -> Phase {
    Phase::Queued { reason: "new".into() }
}

fn ready(mut m: Migration) -> Migration {
    m.phase = Phase::Syncing;
    m.ready_latched = true;
    m.observation = Some(Observation::streaming_for_tests(m.created_at, 0));
    m
}

#[test]
fn a_plan_reads_from_toml_and_lists_its_migrations_in_wave_order() {
    let plan = Plan::from_toml(PLAN).unwrap();
    let planned = plan.migrations().unwrap();
    let names: Vec<(String, u32)> = planned.iter().map(|p| (p.database.to_string(), p.membership.wave)).collect();
    assert_eq!(names, [("ToyStore".into(), 1), ("Customer360".into(), 2), ("Wingtip".into(), 2)]);
    let main = &planned[1].membership;
    assert!(main.approval && main.approved_at.is_none());
    assert_eq!(main.start_after, StartAfter::Ready);
    assert!(planned[1].settings.keep_reverse_link && !planned[0].settings.keep_reverse_link);
}

#[test]
fn every_problem_of_a_plan_is_named_at_once() {
    let plan = Plan::from_toml(
        r#"
name = "bad name"
[[waves]]
name = "a"
[[waves.links]]
source = "src"
target = "dst"
databases = ["x", "x"]
[[waves]]
name = "a"
[[waves.links]]
source = "src"
target = "dst"
databases = []
"#,
    )
    .unwrap();
    let problems = plan.migrations().unwrap_err();
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert!(problems.iter().any(|p| p.contains("plan name")));
    assert!(problems.iter().any(|p| p.contains("appears twice in the plan")));
    assert!(problems.iter().any(|p| p.contains("\"a\" appears twice")));
    assert!(problems.iter().any(|p| p.contains("no databases")));
    assert!(Plan::from_toml("name = \"p\"\nwaves = []\nextra = 1").unwrap_err().contains("extra"));
}

#[test]
fn a_wave_starts_only_when_every_earlier_migration_is_done() {
    let first = member(1, 1, Phase::Syncing);
    let second = member(2, 1, Phase::Completed);
    let later = member(3, 2, queued());
    let reason = gate(&later, &[&first, &second, &later]).unwrap();
    assert!(reason.contains("wave \"w1\"") && reason.contains("1 earlier migration(s) not completed") && reason.contains("db1"), "{reason}");
    let first = member(1, 1, Phase::Cancelled);
    assert_eq!(gate(&later, &[&first, &second, &later]), None, "Completed and Cancelled are done");
    assert_eq!(gate(&first, &[&first, &second, &later]), None, "the first wave has no gate");
    let outside = {
        let mut m = member(4, 1, Phase::Syncing);
        m.fleet = None;
        m
    };
    assert_eq!(gate(&later, &[&outside, &second, &later]), None, "migrations outside the plan do not count");
}

#[test]
fn start_after_ready_opens_when_the_earlier_wave_is_ready_for_cutover() {
    let mut later = member(3, 2, queued());
    later.fleet.as_mut().unwrap().start_after = StartAfter::Ready;
    let seeding = member(1, 1, Phase::Syncing);
    assert!(gate(&later, &[&seeding, &later]).unwrap().contains("not ready for cutover yet"));
    let ready = ready(member(1, 1, Phase::Syncing));
    assert_eq!(ready.status(), Status::ReadyForCutover);
    assert_eq!(gate(&later, &[&ready, &later]), None);
}

#[test]
fn a_failed_earlier_migration_holds_the_next_wave_until_it_is_approved() {
    let failed = member(1, 1, Phase::Failed);
    let mut later = member(3, 2, queued());
    let reason = gate(&later, &[&failed, &later]).unwrap();
    assert!(reason.contains("ended Failed") && reason.contains("approve wave \"w2\""), "{reason}");
    // An approval given before the failure does not cover it; one given after does.
    later.fleet.as_mut().unwrap().approved_at = Some(failed.updated_at - chrono::Duration::seconds(1));
    assert!(gate(&later, &[&failed, &later]).unwrap().starts_with("held: "));
    later.fleet.as_mut().unwrap().approved_at = Some(failed.updated_at + chrono::Duration::seconds(1));
    assert_eq!(gate(&later, &[&failed, &later]), None);
    // A failed migration retried by re-applying the plan no longer holds the wave: its retry does.
    let mut retry = member(4, 1, Phase::Syncing);
    retry.database = failed.database.clone();
    later.fleet.as_mut().unwrap().approved_at = None;
    let reason = gate(&later, &[&failed, &retry, &later]).unwrap();
    assert!(reason.contains("not completed") && reason.contains(failed.database.as_str()), "{reason}");
    retry.phase = Phase::Completed;
    assert_eq!(gate(&later, &[&failed, &retry, &later]), None);
}

#[test]
fn an_approval_gate_waits_for_its_approval_after_the_earlier_waves() {
    let done = member(1, 1, Phase::Completed);
    let mut later = member(3, 2, queued());
    later.fleet.as_mut().unwrap().approval = true;
    let reason = gate(&later, &[&done, &later]).unwrap();
    assert!(reason.contains("waiting for approval of wave \"w2\"") && is_gate_reason(&reason), "{reason}");
    let mut waiting = later.clone();
    waiting.phase = Phase::Queued { reason };
    assert_eq!(waiting.remediation(), Some(GATE_REMEDIATION.to_owned()), "the gate's remedy, not capacity's");
    assert!(!is_gate_reason("waiting for a logical replication worker on dst: 4 of 4 in use"));
    let event = crate::flow::Event::WaveApproved { plan: "p".into(), wave: "w2".into() };
    let approved = crate::flow::decide(&later, &event, later.created_at).unwrap();
    assert!(approved.changed && approved.commands.is_empty());
    assert_eq!(gate(&approved.migration, &[&done, &approved.migration]), None);
    // Approval does not jump the order: an earlier wave still running holds it.
    let running = member(1, 1, Phase::Syncing);
    assert!(gate(&approved.migration, &[&running, &approved.migration]).unwrap().contains("not completed"));
    let other = crate::flow::Event::WaveApproved { plan: "p".into(), wave: "w9".into() };
    assert!(!crate::flow::decide(&later, &other, later.created_at).unwrap().changed, "another wave's approval changes nothing");
}

#[test]
fn a_gated_migration_does_not_hold_its_place_on_its_servers() {
    let running = member(1, 1, Phase::Syncing);
    let gated = member(2, 2, queued());
    let mut unplanned = member(3, 1, queued());
    unplanned.fleet = None;
    let pool = Pool {
        what: "logical replication worker".into(),
        setting: "max_logical_replication_workers".into(),
        total: 4,
        in_use: 1,
        by_link: BTreeMap::from([(crate::admission::link_name(&running.id), 1)]),
        seeding_need: 2,
        streaming_need: 1,
    };
    let capacities = BTreeMap::from([((ConnectionName::parse("dst").unwrap(), Role::Target), Ok(Capacity { pools: vec![pool] }))]);
    let verdicts = decide(&[&gated, &unplanned], &[&running], &[&running, &gated], &capacities, &Caps::default());
    assert!(matches!(&verdicts[0].1, Verdict::Wait(r) if r.contains("waiting for wave")), "{verdicts:?}");
    assert_eq!(verdicts[1], (unplanned.id.clone(), Verdict::Admit), "the younger migration goes ahead");
}
