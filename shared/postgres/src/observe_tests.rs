//! The observation rules, driven by hand-built views and an explicit clock.
use super::*;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z").unwrap().with_timezone(&Utc)
}

fn target(states: &[&str]) -> TargetView {
    TargetView {
        subscription: true,
        enabled: true,
        apply_worker: true,
        tables: states.iter().enumerate().map(|(i, s)| (format!("public.t{i}"), s.to_string(), 0)).collect(),
        errors: Some((0, 0)),
        seconds_since_confirmed: Some(3.0),
        seed: None,
    }
}

fn slot(confirmed: u64, current: u64) -> SlotView {
    SlotView { active: true, wal_status: Some("reserved".into()), confirmed_flush: Some(confirmed), current, flush_lag_seconds: None }
}

fn look(target: &TargetView, slot: Option<&SlotView>, watch: &mut Watch, at: DateTime<Utc>) -> Observation {
    assemble("milink_abc", at, target, slot, &HashMap::new(), watch)
}

#[test]
fn all_tables_ready_is_streaming_with_lag_from_the_slot() {
    let o = look(&target(&["r", "r"]), Some(&slot(1_000, 1_500)), &mut Watch::default(), t0());
    assert_eq!(o.phase, LinkPhase::Streaming);
    assert_eq!(o.lag_bytes, Some(500));
    assert_eq!(o.progress_marker, Some(Position(1_000)));
    assert_eq!(o.lag_seconds, Some(3.0), "falls back to the time since the target last confirmed");
    assert!(o.problem.is_none());
}

#[test]
fn any_table_not_ready_is_seeding_weighted_by_size() {
    let view = TargetView {
        tables: vec![("public.big".into(), "d".into(), 50_000), ("public.small".into(), "r".into(), 0)],
        ..target(&[])
    };
    let sizes: HashMap<String, i64> = [("public.big".into(), 100_000), ("public.small".into(), 100_000)].into();
    let o = assemble("x", t0(), &view, Some(&slot(1, 1)), &sizes, &mut Watch::default());
    assert_eq!(o.phase, LinkPhase::Seeding);
    assert!((o.progress_percent - 75.0).abs() < 0.01, "{}", o.progress_percent);
    assert_eq!(o.lag_seconds, Some(0.0));
}

#[test]
fn no_subscription_is_deploying_with_a_problem() {
    let o = look(&TargetView::default(), None, &mut Watch::default(), t0());
    assert_eq!(o.phase, LinkPhase::Deploying);
    assert!(o.problem.unwrap().reason.contains("does not exist"));
}

#[test]
fn a_disabled_subscription_says_how_to_enable_it() {
    let view = TargetView { enabled: false, ..target(&["r"]) };
    let p = look(&view, Some(&slot(1, 1)), &mut Watch::default(), t0()).problem.unwrap();
    assert!(p.remediation.contains("ALTER SUBSCRIPTION \"milink_abc\" ENABLE"));
}

#[test]
fn a_missing_worker_is_a_problem_only_after_the_grace() {
    let view = TargetView { apply_worker: false, ..target(&["r"]) };
    let mut watch = Watch::default();
    assert!(look(&view, Some(&slot(1, 1)), &mut watch, t0()).problem.is_none());
    assert!(look(&view, Some(&slot(1, 1)), &mut watch, t0() + Duration::seconds(5)).problem.is_none());
    let later = look(&view, Some(&slot(1, 1)), &mut watch, t0() + Duration::seconds(GRACE_SECONDS));
    assert!(later.problem.unwrap().reason.contains("apply worker"));
    // Back again: the memory clears.
    assert!(look(&target(&["r"]), Some(&slot(1, 1)), &mut watch, t0() + Duration::seconds(20)).problem.is_none());
}

#[test]
fn rising_error_counters_are_a_problem_for_a_while() {
    let mut watch = Watch::default();
    let mut view = target(&["r"]);
    assert!(look(&view, Some(&slot(1, 1)), &mut watch, t0()).problem.is_none(), "the first look is a baseline");
    view.errors = Some((2, 0));
    let p = look(&view, Some(&slot(1, 1)), &mut watch, t0() + Duration::seconds(5)).problem.unwrap();
    assert!(p.reason.contains("2 apply errors"));
    assert!(look(&view, Some(&slot(1, 1)), &mut watch, t0() + Duration::seconds(30)).problem.is_some());
    assert!(look(&view, Some(&slot(1, 1)), &mut watch, t0() + Duration::seconds(70)).problem.is_none());
}

#[test]
fn a_lost_or_missing_slot_is_a_problem() {
    let lost = SlotView { wal_status: Some("lost".into()), ..slot(1, 9) };
    assert!(look(&target(&["r"]), Some(&lost), &mut Watch::default(), t0()).problem.unwrap().reason.contains("lost"));
    assert!(look(&target(&["r"]), None, &mut Watch::default(), t0()).problem.unwrap().reason.contains("slot"));
}

#[test]
fn no_tables_means_fully_seeded() {
    assert_eq!(seeding_progress(&[], &HashMap::new()), 100.0);
}
