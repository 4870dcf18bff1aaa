use super::*;
use crate::migration::{Observation, Settings};
use crate::names::DatabaseName;
use chrono::{TimeZone, Utc};

fn migration(n: i64, source: &str, target: &str, phase: Phase) -> Migration {
    let at = Utc.timestamp_opt(1_700_000_000 + n, 0).unwrap();
    let mut m = Migration::new(
        MigrationId(format!("00000000-0000-0000-0000-{n:012}")),
        ConnectionName::parse(source).unwrap(),
        ConnectionName::parse(target).unwrap(),
        DatabaseName::parse(&format!("db{n}")).unwrap(),
        Settings::default(),
        at,
    );
    m.phase = phase;
    m
}

fn queued(n: i64, target: &str) -> Migration {
    migration(n, "src", target, Phase::Queued { reason: "new".into() })
}

fn streaming(mut m: Migration) -> Migration {
    m.observation = Some(Observation::streaming_for_tests(m.created_at, 0));
    m
}

fn workers(total: u32, in_use: u32, by_link: &[(&Migration, u32)]) -> Capacity {
    Capacity {
        pools: vec![Pool {
            what: "logical replication worker".into(),
            setting: "max_logical_replication_workers".into(),
            total,
            in_use,
            by_link: by_link.iter().map(|(m, n)| (link_name(&m.id), *n)).collect(),
            seeding_need: 2,
            streaming_need: 1,
        }],
    }
}

fn target(name: &str, capacity: Capacity) -> BTreeMap<(ConnectionName, Role), Result<Capacity, String>> {
    BTreeMap::from([((ConnectionName::parse(name).unwrap(), Role::Target), Ok(capacity))])
}

fn admitted(verdicts: &[(MigrationId, Verdict)]) -> Vec<String> {
    verdicts.iter().filter(|(_, v)| *v == Verdict::Admit).map(|(id, _)| id.0[24..].trim_start_matches('0').to_owned()).collect()
}

#[test]
fn only_what_fits_is_admitted_oldest_first_and_the_rest_say_why() {
    let q: Vec<Migration> = (1..=4).rev().map(|n| queued(n, "dst")).collect();
    let refs: Vec<&Migration> = q.iter().collect();
    let verdicts = decide(&refs, &[], &[], &target("dst", workers(4, 0, &[])), &Caps::default());
    assert_eq!(admitted(&verdicts), ["1", "2"]);
    let (_, third) = verdicts.iter().find(|(id, _)| id.0.ends_with('3')).unwrap();
    assert_eq!(
        *third,
        Verdict::Wait("waiting for a logical replication worker on dst: 4 of 4 in use (max_logical_replication_workers; a starting link needs 2)".into())
    );
}

#[test]
fn an_admitted_link_not_yet_visible_is_reserved_and_a_visible_one_is_not_counted_twice() {
    let deploying = migration(1, "src", "dst", Phase::Deploying);
    let q = queued(2, "dst");
    // The server shows nothing yet: the deploying link still reserves its 2 of 3.
    let verdicts = decide(&[&q], &[&deploying], &[], &target("dst", workers(3, 0, &[])), &Caps::default());
    assert!(admitted(&verdicts).is_empty(), "{verdicts:?}");
    // Now it streams and the server shows its apply worker: 1 of 3 used, 2 free.
    let live = streaming(migration(1, "src", "dst", Phase::Syncing));
    let verdicts = decide(&[&q], &[&live], &[], &target("dst", workers(3, 1, &[(&live, 1)])), &Caps::default());
    assert_eq!(admitted(&verdicts), ["2"]);
}

#[test]
fn others_links_count_and_younger_migrations_never_overtake_on_the_same_server() {
    let (a, b, c) = (queued(1, "dst"), queued(2, "dst"), queued(3, "other"));
    let capacities = {
        let mut map = target("dst", workers(4, 3, &[]));
        map.extend(target("other", workers(4, 0, &[])));
        map
    };
    let verdicts = decide(&[&c, &b, &a], &[], &[], &capacities, &Caps::default());
    assert_eq!(admitted(&verdicts), ["3"], "another target's migration goes ahead: {verdicts:?}");
    assert!(matches!(&verdicts[1].1, Verdict::Wait(r) if r.contains("behind older queued")), "{verdicts:?}");
}

#[test]
fn user_caps_hold_globally_per_source_and_per_target() {
    let active = migration(1, "src", "dst", Phase::Syncing);
    let q = [queued(2, "dst"), queued(3, "other")];
    let refs: Vec<&Migration> = q.iter().collect();
    let per_target = Caps { max_active_per_target: Some(1), ..Caps::default() };
    assert_eq!(admitted(&decide(&refs, &[&active], &[], &BTreeMap::new(), &per_target)), ["3"]);
    let global = Caps { max_active: Some(2), ..Caps::default() };
    assert_eq!(admitted(&decide(&refs, &[&active], &[], &BTreeMap::new(), &global)), ["2"]);
    let per_source = Caps { max_active_per_source: Some(1), ..Caps::default() };
    let verdicts = decide(&refs, &[&active], &[], &BTreeMap::new(), &per_source);
    assert!(admitted(&verdicts).is_empty());
    assert!(matches!(&verdicts[0].1, Verdict::Wait(r) if r.contains("max_active_per_source")), "{verdicts:?}");
}

#[test]
fn finished_migrations_hold_nothing_and_a_too_small_server_never_fits() {
    let done = migration(1, "src", "dst", Phase::Completed);
    let q = queued(2, "dst");
    assert_eq!(admitted(&decide(&[&q], &[&done], &[], &target("dst", workers(2, 0, &[])), &Caps::default())), ["2"]);
    let dst = ConnectionName::parse("dst").unwrap();
    assert!(never_fits(&dst, &workers(2, 0, &[])).is_empty());
    let why = never_fits(&dst, &workers(0, 0, &[]));
    assert_eq!(why, ["dst has max_logical_replication_workers = 0, but a starting link needs 2 logical replication workers: the migration could never start"]);
}

#[test]
fn an_unreadable_server_keeps_its_migrations_queued_with_the_reason() {
    let q = queued(1, "dst");
    let capacities = BTreeMap::from([((ConnectionName::parse("dst").unwrap(), Role::Target), Err("connection refused".to_owned()))]);
    let verdicts = decide(&[&q], &[], &[], &capacities, &Caps::default());
    assert_eq!(verdicts[0].1, Verdict::Wait("waiting: cannot read the capacity of dst: connection refused".into()));
}

#[test]
fn an_older_migration_still_validating_keeps_its_place_in_line() {
    let older = migration(1, "src", "dst", Phase::Validating);
    let younger = queued(2, "dst");
    let verdicts = decide(&[&younger], &[&older], &[], &target("dst", workers(64, 0, &[])), &Caps::default());
    assert!(matches!(&verdicts[0].1, Verdict::Wait(r) if r.contains("behind older")), "{verdicts:?}");
    let newer = migration(3, "src", "dst", Phase::Validating);
    assert_eq!(admitted(&decide(&[&younger], &[&newer], &[], &target("dst", workers(64, 0, &[])), &Caps::default())), ["2"]);
}
