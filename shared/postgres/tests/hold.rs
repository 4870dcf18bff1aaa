//! The synchronous hold before the fence (`cutover::hold`) on real servers: from the verification before
//! the fence until the fence, a commit on the source returns only once the link has applied it; the fence
//! releases it; a target that stops applying ends it within about a second, so the application never
//! waits long; removing the link releases a hold left behind. Checked on the servers' own views.
//!
//! The hold is server-wide and the suite shares one source server: a test first waits until no other
//! link holds it (another test's cutover), and tries again if one engaged in between.
mod support;

use milink_core::ports::{Engine, LinkPlan};
use milink_postgres::PostgresEngine;
use std::time::{Duration, Instant};
use support::*;

const SHOP: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2));
INSERT INTO items SELECT n, 'item ' || n, n * 1.5 FROM generate_series(1, 1000) n;
";

async fn linked(prefix: &str) -> (PostgresEngine, LinkPlan) {
    let database = unique(prefix);
    create_source_database(&database, SHOP).await;
    let engine = PostgresEngine::new();
    let plan = plan(&database);
    engine.create_link(&plan).await.expect("create_link");
    observe_until_ready(&engine, &plan, Duration::from_secs(120)).await;
    (engine, plan)
}

/// The `synchronous_standby_names` that `postgresql.auto.conf` on the source holds now (read from the file).
async fn held_by() -> Option<String> {
    let admin = connect(&servers().source_url, "postgres").await;
    let row = admin
        .query_opt(
            "SELECT setting FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'
             AND name = 'synchronous_standby_names' ORDER BY seqno DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    row.map(|r| r.get(0))
}

async fn synchronous(link: &str) -> bool {
    let admin = connect(&servers().source_url, "postgres").await;
    let sql = "SELECT 1 FROM pg_stat_replication WHERE application_name = $1 AND sync_state = 'sync'";
    admin.query_opt(sql, &[&link]).await.unwrap().is_some()
}

/// Runs the verification before the fence until this link's hold is engaged (another test's cutover may
/// hold the server's one hold meanwhile).
async fn prepared_with_hold(engine: &PostgresEngine, plan: &LinkPlan) {
    let ours = format!("\"{}\"", plan.link_name());
    let started = Instant::now();
    loop {
        while held_by().await.is_some_and(|other| other != ours) {
            assert!(started.elapsed() < Duration::from_secs(180), "another link held the source's hold for minutes");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let before = engine.prepare_cutover(plan).await.expect("prepare").expect("a verification before the fence");
        assert!(!before.proves_a_difference(), "{before:#?}");
        if held_by().await.as_deref() == Some(ours.as_str()) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(180), "the hold never engaged for {ours}");
    }
}

async fn wait_released(plan: &LinkPlan, within: Duration) {
    let ours = format!("\"{}\"", plan.link_name());
    let started = Instant::now();
    while held_by().await.as_deref() == Some(ours.as_str()) {
        assert!(started.elapsed() < within, "the hold was not released within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn commits_wait_for_the_link_from_the_verification_before_the_fence_until_the_fence() {
    let (engine, plan) = linked("hold_fence_").await;
    let database = plan.database.as_str().to_owned();
    prepared_with_hold(&engine, &plan).await;
    assert!(synchronous(&plan.link_name()).await, "the link's walsender is not synchronous during the hold");

    // A commit returns only once the link applied it: the row is on the target at once, every time.
    let source = connect(&servers().source_url, &database).await;
    let target = connect(&servers().target_url, &database).await;
    for n in 0..20 {
        source.execute("UPDATE items SET name = $1 WHERE id = 7", &[&format!("held {n}")]).await.unwrap();
        let name: String = target.query_one("SELECT name FROM items WHERE id = 7", &[]).await.unwrap().get(0);
        assert_eq!(name, format!("held {n}"), "a commit returned before the link applied it");
    }

    let position = engine.fence(&plan).await.expect("fence");
    wait_released(&plan, Duration::from_secs(5)).await;
    drain(&engine, &plan, position).await;
    let finalized = engine.finalize(&plan).await.expect("finalize");
    assert!(finalized.complete && !finalized.proves_a_difference(), "{finalized:#?}");
    engine.switch(&plan, false).await.expect("switch");
    assert_eq!(held_by().await.filter(|h| h.contains(&plan.link_name())), None);
    cleanup(&engine, &plan).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_stops_applying_ends_the_hold_within_about_a_second() {
    let (engine, plan) = linked("hold_blocked_").await;
    let database = plan.database.as_str().to_owned();
    prepared_with_hold(&engine, &plan).await;

    // The target's table is locked: the link cannot apply, and the source's commit waits for it.
    let mut blocker = connect(&servers().target_url, &database).await;
    let lock = blocker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let source = connect(&servers().source_url, &database).await;
    let started = Instant::now();
    source.execute("UPDATE items SET name = 'while blocked' WHERE id = 8", &[]).await.unwrap();
    let waited = started.elapsed();
    eprintln!("the commit returned after {waited:?}");
    assert!(waited >= Duration::from_millis(900), "the commit did not wait for the link: {waited:?}");
    assert!(waited < Duration::from_secs(5), "the hold kept the commit waiting: {waited:?}");
    wait_released(&plan, Duration::from_secs(2)).await;
    // Without the hold, commits no longer wait for the blocked link.
    let started = Instant::now();
    source.execute("UPDATE items SET name = 'after' WHERE id = 9", &[]).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(500), "a commit still waited: {:?}", started.elapsed());
    lock.rollback().await.unwrap();
    cleanup(&engine, &plan).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_the_link_releases_a_hold_left_behind() {
    let (engine, plan) = linked("hold_cancel_").await;
    prepared_with_hold(&engine, &plan).await;
    // A cutover cancelled before its fence: the link is removed with the hold still engaged.
    engine.drop_link(&plan, true).await.expect("drop_link");
    wait_released(&plan, Duration::from_secs(1)).await;
    assert!(!synchronous(&plan.link_name()).await);
    cleanup(&engine, &plan).await;
}
