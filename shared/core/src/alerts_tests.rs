use super::*;
use crate::migration::{Observation, Phase, Settings, Stall};
use crate::names::{ConnectionName, DatabaseName};
use chrono::TimeZone;

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
}

fn syncing(at: i64, lag: u64) -> Migration {
    let mut m = Migration::new(
        MigrationId("00000000-0000-0000-0000-000000000001".into()),
        ConnectionName::parse("src").unwrap(),
        ConnectionName::parse("dst").unwrap(),
        DatabaseName::parse("shop").unwrap(),
        Settings::default(),
        t(0),
    );
    m.phase = Phase::Syncing;
    m.observation = Some(Observation::streaming_for_tests(t(at), lag));
    m
}

/// One poll tick as the runtime runs it: check, then store what is raised on the migration.
fn tick(tracker: &mut Tracker, m: &mut Migration, at: i64, settings: &AlertSettings) -> Vec<Alert> {
    let alerts = tracker.check(std::slice::from_ref(m), t(at), settings);
    m.alerts = tracker.raised_for(&m.id);
    alerts
}

#[test]
fn a_stall_is_raised_once_and_cleared_once() {
    let mut tracker = Tracker::default();
    let settings = AlertSettings::default();
    let mut m = syncing(1, 0);
    assert!(tracker.check(&[m.clone()], t(1), &settings).is_empty());
    m.stall = Some(Stall { reason: "subscription disabled".into(), remediation: "enable it".into(), since: t(2), retry_at: None });
    let raised = tick(&mut tracker, &mut m, 3, &settings);
    assert_eq!(raised.len(), 1);
    assert!(raised[0].raised && raised[0].alert == AlertKind::LinkStalled && raised[0].message.contains("subscription disabled"), "{raised:?}");
    assert!(tick(&mut tracker, &mut m, 4, &settings).is_empty(), "deduplicated");
    m.stall = None;
    let cleared = tick(&mut tracker, &mut m, 5, &settings);
    assert_eq!((cleared.len(), cleared[0].raised), (1, false));
}

#[test]
fn lag_growing_needs_the_whole_window_and_any_shrink_resets_it() {
    let mut tracker = Tracker::default();
    let settings = AlertSettings { lag_growing_minutes: 2, ..AlertSettings::default() };
    let mut alerts = Vec::new();
    let mut stored = BTreeMap::new();
    for (i, lag) in [100, 200, 300, 250, 400, 500, 600, 700].into_iter().enumerate() {
        let at = i as i64 * 60;
        let mut m = syncing(at, lag);
        m.alerts = stored;
        alerts.extend(tick(&mut tracker, &mut m, at, &settings).into_iter().map(|a| (at, a.alert)));
        stored = m.alerts;
    }
    // Growing from 60 s to 180 s would be 2 minutes, but the shrink at 180 s resets; growing again from
    // 240 s, the alert comes at 360 s.
    assert_eq!(alerts, [(360, AlertKind::LagGrowing)]);
}

#[test]
fn wal_retained_above_the_threshold_is_raised() {
    let mut tracker = Tracker::default();
    let settings = AlertSettings { wal_retained_bytes: 1000, ..AlertSettings::default() };
    assert!(tracker.check(&[syncing(1, 1000)], t(1), &settings).is_empty());
    let raised = tracker.check(&[syncing(2, 1001)], t(2), &settings);
    assert_eq!(raised.iter().map(|a| a.alert).collect::<Vec<_>>(), [AlertKind::WalRetained]);
}

#[test]
fn an_inactive_slot_is_its_own_alert_raised_from_the_observation() {
    let mut tracker = Tracker::default();
    let settings = AlertSettings::default();
    let mut m = syncing(1, 0);
    let problem = crate::migration::LinkProblem {
        kind: Some(ProblemKind::SlotInactive),
        reason: "nothing has used replication slot milink_x on the source for 15s or more".into(),
        remediation: "Check that the target can still reach the source".into(),
    };
    m.observation.as_mut().unwrap().problem = Some(problem.clone());
    let raised = tick(&mut tracker, &mut m, 2, &settings);
    assert!(raised.iter().any(|a| a.alert == AlertKind::SlotInactive && a.raised && a.message.contains("reach the source")), "{raised:?}");
    assert!(tick(&mut tracker, &mut m, 3, &settings).iter().all(|a| a.alert != AlertKind::SlotInactive), "deduplicated");
    // Another problem is not an inactive slot.
    m.observation.as_mut().unwrap().problem = Some(crate::migration::LinkProblem { kind: None, ..problem });
    let cleared = tick(&mut tracker, &mut m, 4, &settings);
    assert!(cleared.iter().any(|a| a.alert == AlertKind::SlotInactive && !a.raised), "{cleared:?}");
}

#[test]
fn what_is_raised_is_what_the_migration_says_across_restarts_and_instances() {
    let settings = AlertSettings::default();
    let mut m = syncing(1, 0);
    m.stall = Some(Stall { reason: "subscription disabled".into(), remediation: "enable it".into(), since: t(2), retry_at: None });
    let (mut a, mut b) = (Tracker::default(), Tracker::default());
    assert_eq!(tick(&mut a, &mut m, 3, &settings).len(), 1);
    assert_eq!(m.alerts.get(&AlertKind::LinkStalled), Some(&t(2)), "what the runtime stores");
    // A restart, or the timer on another instance: the condition still holds, nothing is sent again.
    assert!(tick(&mut b, &mut m, 4, &settings).is_empty(), "not raised twice");
    m.stall = None;
    let cleared = tick(&mut b, &mut m, 5, &settings);
    assert_eq!(cleared.iter().map(|x| (x.alert, x.raised)).collect::<Vec<_>>(), [(AlertKind::LinkStalled, false)]);
    // Back on the first instance: it does not clear again what the other one cleared.
    assert!(tick(&mut a, &mut m, 6, &settings).is_empty(), "cleared once, whichever instance ticks");
}
