//! Content verification on real servers: what a row count cannot see (an updated row, a reset
//! sequence, a large object, a table the link does not carry) is found, named by key, and replication
//! lag under a live writer is never reported as a difference.
mod support;

use milink_core::migration::{DifferenceKind, TableCount, Verification, VerifyMethod};
use milink_core::ports::{Engine, LinkPlan};
use milink_postgres::PostgresEngine;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;

const SHOP: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), seen timestamptz, doc json, tags text[]);
INSERT INTO items SELECT n, 'item ' || n, n * 1.5, timestamptz '2024-01-01 00:00+02' + n * interval '1 minute',
                         json_build_object('n', n), ARRAY['a', n::text] FROM generate_series(1, 500) n;
CREATE TABLE pairs (shop int, code text, qty int, PRIMARY KEY (shop, code));
INSERT INTO pairs SELECT s, c, s * 10 FROM generate_series(1, 20) s, unnest(ARRAY['a', 'b', 'c''d']) c;
CREATE TABLE notes (body text, n int);
ALTER TABLE notes REPLICA IDENTITY FULL;
INSERT INTO notes SELECT 'note ' || n, n FROM generate_series(1, 100) n;
INSERT INTO notes VALUES ('note 1', 1);
CREATE TABLE big (id bigint PRIMARY KEY, payload text NOT NULL);
INSERT INTO big SELECT n, md5(n::text) FROM generate_series(1, 150000) n;
CREATE TABLE measures (at date NOT NULL, device int NOT NULL, value float8, PRIMARY KEY (at, device)) PARTITION BY RANGE (at);
CREATE TABLE measures_2024 PARTITION OF measures FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE measures_2025 PARTITION OF measures FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO measures SELECT date '2024-06-01' + (n % 400), n, n / 3.0 FROM generate_series(1, 1000) n;
CREATE TYPE mood AS ENUM ('sad', 'ok');
CREATE TABLE kinds (id uuid PRIMARY KEY, b bool, d date, ts timestamp, tz timestamptz, raw bytea, jb jsonb, j json,
                    f4 real, f8 float8, n numeric, iv interval, ip inet, m money, mo mood, arr int[], vc varchar(10),
                    ch char(3), pt point, i2 smallint, t time);
INSERT INTO kinds SELECT md5(n::text)::uuid, n % 2 = 0, date '2024-01-01' + n, timestamp '2024-01-01' + n * interval '1 h',
                         timestamptz '2024-01-01 00:00+05' + n * interval '1 h', decode(md5(n::text), 'hex'),
                         jsonb_build_object('n', n), json_build_object('n', n), n / 7.0, n / 3.0, n / 9.0, n * interval '1 min',
                         ('10.0.0.' || n)::inet, n * 1.25, CASE WHEN n % 2 = 0 THEN 'ok' ELSE 'sad' END::mood, ARRAY[n, NULL],
                         'v' || n, 'c', point(n, n), n, time '00:00' + n * interval '1 s'
                  FROM generate_series(1, 50) n;
INSERT INTO kinds (id) VALUES ('00000000-0000-0000-0000-000000000000');
ANALYZE;
";

async fn linked(prefix: &str, sql: &str) -> (PostgresEngine, LinkPlan) {
    let database = unique(prefix);
    create_source_database(&database, sql).await;
    let engine = PostgresEngine::new();
    let plan = plan(&database);
    engine.create_link(&plan).await.expect("create_link");
    observe_until_ready(&engine, &plan, Duration::from_secs(120)).await;
    (engine, plan)
}

fn table<'a>(verification: &'a Verification, name: &str) -> &'a TableCount {
    verification.tables.iter().find(|t| t.table == name).unwrap_or_else(|| panic!("{name} not in {verification:#?}"))
}

fn keys(count: &TableCount) -> Vec<&str> {
    count.differing.iter().flat_map(|r| r.keys.iter().map(String::as_str)).collect()
}

/// Updates random items (never the tampered ones) and appends to `big` on the source until stopped.
fn start_writer(database: &str) -> Writers {
    let sql = "UPDATE items SET price = price + 1 WHERE id = 100 + (random() * 400)::int;
               INSERT INTO big SELECT coalesce(max(id), 0) + 1, 'new' FROM big;";
    Writers::start(database, 1, sql, Some(Duration::from_millis(2)))
}

/// Source writers running `sql` in a loop, `pause` between statements (none: flat out), until `stop`.
struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
}

impl Writers {
    fn start(database: &str, count: usize, sql: &'static str, pause: Option<Duration>) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..count)
            .map(|_| {
                let (stopped, database) = (stop.clone(), database.to_owned());
                tokio::spawn(async move {
                    let client = connect(&servers().source_url, &database).await;
                    let mut writes = 0u64;
                    while !stopped.load(Ordering::Relaxed) {
                        client.batch_execute(sql).await.expect("writer");
                        writes += 1;
                        if let Some(pause) = pause {
                            tokio::time::sleep(pause).await;
                        }
                    }
                    writes
                })
            })
            .collect();
        Writers { stop, tasks }
    }

    /// Stops them; the writes each made.
    async fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let mut writes = Vec::new();
        for task in self.tasks {
            writes.push(task.await.unwrap());
        }
        writes
    }
}

/// Disables the link's subscription and waits for its apply worker to exit (a moment after DISABLE).
async fn pause_link(target: &tokio_postgres::Client, link: &str) {
    target.batch_execute(&format!("ALTER SUBSCRIPTION {link} DISABLE")).await.unwrap();
    let mut running = -1;
    for _ in 0..100 {
        let sql = "SELECT count(*) FROM pg_stat_subscription WHERE subname = $1 AND pid IS NOT NULL";
        running = target.query_one(sql, &[&link]).await.unwrap().get::<_, i64>(0);
        if running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(running, 0, "the link's apply worker did not stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn verification_names_rows_changed_on_the_target_and_ignores_lag() {
    let (engine, plan) = linked("verify_shop_", SHOP).await;
    let database = plan.database.as_str().to_owned();

    // A faithful copy verifies clean and complete, every table in scope, partitions through their parent.
    let clean = engine.verify(&plan).await.expect("verify");
    assert!(clean.is_clean(), "{clean:#?}");
    assert_eq!(clean.method, VerifyMethod::Checksum);
    let names: Vec<&str> = clean.tables.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(names, ["public.big", "public.items", "public.kinds", "public.measures", "public.notes", "public.pairs"]);
    // Equal, so compared whole: one checksum per side (it is cut into chunks only where it differs, below).
    assert_eq!(table(&clean, "public.big").chunks, 1, "{clean:#?}");
    assert_eq!(table(&clean, "public.measures").source_rows, 1000);
    assert_eq!(clean.rows_compared, 150000 + 500 + 51 + 1000 + 101 + 60);
    assert!(clean.source_position.is_some() && clean.target_position.is_some());

    // Rows changed behind the link's back on the target; counts stay equal for most of them.
    let target = connect(&servers().target_url, &database).await;
    target
        .batch_execute(
            "UPDATE items SET name = 'tampered' WHERE id = 42;
             DELETE FROM pairs WHERE shop = 3 AND code = 'c''d';
             UPDATE big SET payload = 'tampered' WHERE id = 75000;
             UPDATE notes SET body = 'changed' WHERE n = 7;
             UPDATE kinds SET tz = tz + interval '1 us' WHERE id = md5('5')::uuid;
             UPDATE kinds SET arr = ARRAY[1] WHERE id = '00000000-0000-0000-0000-000000000000';",
        )
        .await
        .unwrap();
    // Meanwhile the application keeps writing to the same tables on the source.
    let writer = start_writer(&database);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let found = engine.verify(&plan).await.expect("verify under writes");
    assert!(writer.stop().await[0] > 10, "the writer wrote during the verification");

    let items = table(&found, "public.items");
    assert_eq!(items.source_rows, items.target_rows, "an update keeps the counts equal: {items:?}");
    assert_eq!(keys(items), ["(42)"], "only the tampered row, never a lagging one: {found:#?}");
    let pairs = table(&found, "public.pairs");
    assert_eq!((pairs.source_rows, pairs.target_rows), (60, 59));
    assert_eq!(keys(pairs), ["(3,'c''d')"]);
    let big = table(&found, "public.big");
    assert_eq!(keys(big), ["(75000)"], "bisection finds the row in the middle: {big:?}");
    assert!(big.chunks >= 3);
    let notes = table(&found, "public.notes");
    assert!(notes.differs() && keys(notes).is_empty(), "a keyless table differs as a whole: {notes:?}");
    assert!(!table(&found, "public.measures").differs());
    let kinds = keys(table(&found, "public.kinds"));
    assert_eq!(kinds.len(), 2, "a microsecond and a NULL made an array: {kinds:?}");
    assert!(kinds.contains(&"('00000000-0000-0000-0000-000000000000')"), "{kinds:?}");
    assert!(found.complete, "{:?}", found.incomplete_reason);
    assert!(found.summary().contains("(42)"), "{}", found.summary());

    // The cutover's verification sees the same, exactly.
    let position = engine.fence(&plan).await.expect("fence");
    drain(&engine, &plan, position).await;
    let finalized = engine.finalize(&plan).await.expect("finalize");
    assert!(!finalized.is_clean());
    assert_eq!(keys(table(&finalized, "public.items")), ["(42)"]);
    assert_eq!(keys(table(&finalized, "public.big")), ["(75000)"]);
    assert_eq!(keys(table(&finalized, "public.pairs")), ["(3,'c''d')"]);
    assert!(table(&finalized, "public.notes").differs());
    assert!(finalized.complete);
    cleanup(&engine, &plan).await;
}

/// 120,000 rows: over the size under which a table compared whole takes matched snapshots, and 24
/// chunks when cut.
const HOT: &str = "CREATE TABLE hot (id int PRIMARY KEY, v int NOT NULL);
                   INSERT INTO hot SELECT n, 0 FROM generate_series(1, 120000) n;
                   ANALYZE;";

/// Under busy writers, rows change between the verification's two snapshots (taken at once, the target's
/// wherever the link is). Those rows are named by the verification's temporary copy of the link's slot
/// and compared by key, so a table that differs only there is equal as a whole (one checksum per side,
/// never cut into chunks), and a named row that really differs is still found, by key.
#[tokio::test(flavor = "multi_thread")]
async fn rows_moving_between_the_snapshots_leave_a_busy_table_compared_whole() {
    let (engine, plan) = linked("verify_moved_", HOT).await;
    let database = plan.database.as_str().to_owned();
    // Busy, not flooding: the keys named stay well under the limit past which the table is cut into
    // chunks (the link's lag on a loaded CI machine adds to them).
    let sql = "UPDATE hot SET v = v + 1 WHERE id = 1 + (random() * 119999)::int";
    let writers = Writers::start(&database, 2, sql, Some(Duration::from_millis(1)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 0..3 {
        let found = engine.verify(&plan).await.expect("verify under writes");
        let hot = table(&found, "public.hot");
        assert!(found.is_clean() && found.complete, "round {round}: {found:#?}");
        // Cut into chunks it would be 24 of them (120,000 rows of a single integer key in ~5,000-row
        // chunks). Over 100,000 rows, so its snapshots are taken at once, not matched.
        assert_eq!(hot.chunks, 1, "round {round}: compared whole: {found:#?}");
    }
    for writes in writers.stop().await {
        assert!(writes > 50, "each writer wrote during the verifications");
    }

    // A row deleted on the target, then updated on the source while the link was paused (the apply skips
    // an update of a missing row): the stream names it, it differs, and it is reported by key, the rest
    // of the table still compared whole.
    let (source, target) = (connect(&servers().source_url, &database).await, connect(&servers().target_url, &database).await);
    let subscription = plan.link_name();
    // The update must find the apply worker gone, never applied.
    pause_link(&target, &subscription).await;
    target.batch_execute("DELETE FROM hot WHERE id = 7").await.unwrap();
    source.batch_execute("UPDATE hot SET v = v + 1 WHERE id = 7").await.unwrap();
    target.batch_execute(&format!("ALTER SUBSCRIPTION {subscription} ENABLE")).await.unwrap();
    let found = engine.verify(&plan).await.expect("verify");
    let hot = table(&found, "public.hot");
    assert_eq!(keys(hot), ["(7)"], "{found:#?}");
    assert_eq!((hot.chunks, hot.source_rows, hot.target_rows), (1, 120000, 119999), "{found:#?}");

    // The temporary slots are gone with their sessions (a backend exits just after its client closes).
    let mut left = -1;
    for _ in 0..50 {
        let sql = "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'milink\\_moved\\_%' AND database = current_database()";
        left = source.query_one(sql, &[]).await.unwrap().get::<_, i64>(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0);
    cleanup(&engine, &plan).await;
}

/// Where the link's slot is far behind its restart point, a copy would decode all of it: a slot of the
/// verification's own is created instead. Its stream names only what changed after its creation, so the
/// comparison waits for the target to pass that point; a difference made before it is not named, and the
/// table is then cut into chunks that find it. Equal, the table is compared whole under writes.
#[tokio::test(flavor = "multi_thread")]
async fn a_link_slot_far_behind_gets_a_slot_of_its_own_that_names_the_rows_moving_under_writes() {
    let (engine, plan) = linked("verify_created_", HOT).await;
    let database = plan.database.as_str().to_owned();
    let (source, target) = (connect(&servers().source_url, &database).await, connect(&servers().target_url, &database).await);
    let link = plan.link_name();
    // With the link paused its slot cannot move: 66 MB of WAL (messages, no table's) put its restart point
    // past the 64 MB a copy may decode. The verification starts then (the copy is refused at its start);
    // the link resumes a moment later, under a writer, so the comparison has a point to wait for and
    // rows that move between its snapshots.
    let verify_far_behind = || async {
        source
            .batch_execute("SELECT count(pg_logical_emit_message(false, 'milink-test', repeat('x', 1024 * 1024))) FROM generate_series(1, 66)")
            .await
            .unwrap();
        let sql = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::float8 FROM pg_replication_slots WHERE slot_name = $1";
        let behind: f64 = source.query_one(sql, &[&link]).await.unwrap().get(0);
        assert!(behind > 64.0 * 1024.0 * 1024.0, "the link's slot is {behind} bytes behind its restart point");
        let sql = "UPDATE hot SET v = v + 1 WHERE id = 100 + (random() * 119000)::int";
        let writer = Writers::start(&database, 1, sql, Some(Duration::from_millis(2)));
        let resume = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            target.batch_execute(&format!("ALTER SUBSCRIPTION {link} ENABLE")).await.unwrap();
        };
        let (found, ()) = tokio::join!(engine.verify(&plan), resume);
        assert!(writer.stop().await[0] > 10, "the writer wrote during the verification");
        found.expect("verify")
    };

    // A row deleted on the target and updated on the source while paused (the apply skips an update of
    // a missing row), before the slot exists: not named, so the rest differs and the chunks find it.
    pause_link(&target, &link).await;
    target.batch_execute("DELETE FROM hot WHERE id = 7").await.unwrap();
    source.batch_execute("UPDATE hot SET v = v + 1 WHERE id = 7").await.unwrap();
    let found = verify_far_behind().await;
    let hot = table(&found, "public.hot");
    assert!(found.complete, "{found:#?}");
    assert_eq!(keys(hot), ["(7)"], "{found:#?}");
    // 120,000 rows of a single integer key in ~5,000-row chunks.
    assert_eq!((hot.chunks, hot.source_rows, hot.target_rows), (24, 120000, 119999), "{found:#?}");

    // Repaired, the table is compared whole: one checksum per side, the rows the writer moved named.
    let v: i32 = source.query_one("SELECT v FROM hot WHERE id = 7", &[]).await.unwrap().get(0);
    target.execute("INSERT INTO hot VALUES (7, $1)", &[&v]).await.unwrap();
    pause_link(&target, &link).await;
    let found = verify_far_behind().await;
    let hot = table(&found, "public.hot");
    assert!(found.is_clean() && found.complete, "{found:#?}");
    assert_eq!(hot.chunks, 1, "compared whole: {found:#?}");
    cleanup(&engine, &plan).await;
}

/// A row updated without pause (a counter) changes between every pair of reads, so settling it by
/// reading both sides again never ends; the last resort holds the source's row with a share lock while
/// the target catches up, and compares it at that point. The verification is complete, and a hot row
/// that really differs is named.
#[tokio::test(flavor = "multi_thread")]
async fn a_row_updated_without_pause_is_settled_exactly() {
    let sql = "CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL, note text NOT NULL DEFAULT '');
               INSERT INTO counters SELECT n, 0 FROM generate_series(1, 3) n;
               ANALYZE;";
    let (engine, plan) = linked("verify_counter_", sql).await;
    let database = plan.database.as_str().to_owned();
    let writers = Writers::start(&database, 2, "UPDATE counters SET n = n + 1 WHERE id = 1", None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Up to three tries for a complete verification: the lock or the link may not be had in time on a
    // loaded machine (other tests' WAL slows every walsender); without the locked settle none completes.
    let complete = || async {
        let mut found = engine.verify(&plan).await.expect("verify under writes");
        for _ in 1..3 {
            if found.complete {
                break;
            }
            found = engine.verify(&plan).await.expect("verify under writes");
        }
        found
    };
    for round in 0..3 {
        let found = complete().await;
        assert!(found.is_clean() && found.complete, "round {round}: {found:#?}");
    }
    for writes in writers.stop().await {
        assert!(writes > 100, "each writer wrote during the verifications");
    }

    // A hot row that differs: on the target, a trigger the link's apply fires changes every version of
    // row 2 it applies, so the two sides never hold the same row 2, whichever moment is compared.
    let target = connect(&servers().target_url, &database).await;
    target
        .batch_execute(
            "CREATE FUNCTION tamper() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN IF NEW.id = 2 THEN NEW.note := 'tampered'; END IF; RETURN NEW; END $$;
             CREATE TRIGGER tamper BEFORE UPDATE ON counters FOR EACH ROW EXECUTE FUNCTION tamper();
             ALTER TABLE counters ENABLE ALWAYS TRIGGER tamper;",
        )
        .await
        .unwrap();
    // Row 1 then row 2, in that order in every writer (one statement over both could lock them in either
    // order, and the writers would deadlock each other).
    let sql = "UPDATE counters SET n = n + 1 WHERE id = 1; UPDATE counters SET n = n + 1 WHERE id = 2";
    let writers = Writers::start(&database, 2, sql, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let found = complete().await;
    writers.stop().await;
    assert!(found.complete, "{found:#?}");
    assert_eq!(keys(table(&found, "public.counters")), ["(2)"], "{found:#?}");
    cleanup(&engine, &plan).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn finalize_sets_sequences_exactly_and_carries_large_objects() {
    let sql = "CREATE SEQUENCE reset_seq;
               SELECT nextval('reset_seq') FROM generate_series(1, 500);
               SELECT setval('reset_seq', 100, false);
               CREATE SEQUENCE used_seq INCREMENT 5;
               SELECT nextval('used_seq') FROM generate_series(1, 3);
               CREATE SEQUENCE fresh_seq START 7;
               CREATE TABLE documents (id int PRIMARY KEY, body oid);
               INSERT INTO documents VALUES (1, lo_from_bytea(0, 'hello large object')),
                                            (2, lo_from_bytea(0, decode(repeat('ab', 300000), 'hex')));";
    let (engine, plan) = linked("verify_seq_", sql).await;
    let database = plan.database.as_str().to_owned();
    let position = engine.fence(&plan).await.expect("fence");
    drain(&engine, &plan, position).await;
    let verification = engine.finalize(&plan).await.expect("finalize");
    assert!(verification.is_clean(), "{verification:#?}");
    assert_eq!(verification.sequences_set, 3);

    let target = connect(&servers().target_url, &database).await;
    let next = |name: &'static str| {
        let target = &target;
        async move { target.query_one(&format!("SELECT nextval('{name}')"), &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(next("reset_seq").await, 100, "setval(s, 100, false) on the source hands out 100 next");
    assert_eq!(next("used_seq").await, 16);
    assert_eq!(next("fresh_seq").await, 7);
    let objects = target
        .query("SELECT d.id, lo_get(d.body) FROM documents d ORDER BY d.id", &[])
        .await
        .expect("every large object the rows point at exists on the target");
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0].get::<_, Vec<u8>>(1), b"hello large object");
    assert_eq!(objects[1].get::<_, Vec<u8>>(1).len(), 300000);
    cleanup(&engine, &plan).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_the_link_does_not_carry_is_a_difference() {
    let (engine, plan) = linked("verify_scope_", "CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept VALUES (1);").await;
    let database = plan.database.as_str().to_owned();
    let source = connect(&servers().source_url, &database).await;
    source.batch_execute("CREATE TABLE late (id int PRIMARY KEY); INSERT INTO late VALUES (1);").await.unwrap();
    let target = connect(&servers().target_url, &database).await;
    target.batch_execute("CREATE TABLE stray (id int PRIMARY KEY); ALTER TABLE kept ADD COLUMN extra text;").await.unwrap();

    let verification = engine.verify(&plan).await.expect("verify");
    assert!(!verification.is_clean());
    let kind_of = |object: &str| verification.differences.iter().find(|d| d.object == object).map(|d| d.kind);
    assert_eq!(kind_of("public.late"), Some(DifferenceKind::MissingTable), "{verification:#?}");
    assert_eq!(kind_of("public.stray"), Some(DifferenceKind::ExtraTable));
    assert_eq!(kind_of("public.kept"), Some(DifferenceKind::Columns));
    assert!(verification.summary().contains("public.late"), "{}", verification.summary());
    cleanup(&engine, &plan).await;
}

/// The cutover's window compares only what changed after the full verification before the fence: a row
/// updated on the source since is compared (and equal), rows written on the target behind the link's back
/// since are found and named, and nothing else is read again.
#[tokio::test(flavor = "multi_thread")]
async fn the_window_compares_only_what_changed_since_the_verification_before_the_fence() {
    let (engine, plan) = linked("verify_window_", SHOP).await;
    let database = plan.database.as_str().to_owned();
    let before = engine.prepare_cutover(&plan).await.expect("prepare").expect("a verification before the fence");
    assert!(before.is_clean(), "{before:#?}");

    let source = connect(&servers().source_url, &database).await;
    source
        .batch_execute(
            "UPDATE items SET price = price + 1 WHERE id IN (3, 4);
             UPDATE pairs SET code = 'z' WHERE shop = 1 AND code = 'a';
             INSERT INTO big VALUES (150001, 'new');
             UPDATE measures SET value = 0 WHERE device = 10;
             UPDATE kinds SET tz = tz + interval '1 s' WHERE id = md5('7')::uuid;",
        )
        .await
        .unwrap();
    let target = connect(&servers().target_url, &database).await;
    target
        .batch_execute(
            "UPDATE items SET name = 'tampered' WHERE id = 42;
             DELETE FROM big WHERE id = 75000;",
        )
        .await
        .unwrap();
    let position = engine.fence(&plan).await.expect("fence");
    drain(&engine, &plan, position).await;
    let finalized = engine.finalize(&plan).await.expect("finalize");
    let window = finalized.window.clone().expect("a window report");
    assert_eq!(window.full_reason, None, "{finalized:#?}");
    assert!(window.whole_tables.is_empty(), "{window:?}");
    assert!(window.changes >= 8, "source and target changes decoded: {window:?}");
    assert!(finalized.rows_compared <= 10, "only the changed keys were read again: {finalized:#?}");
    assert!(!finalized.is_clean());
    assert_eq!(keys(table(&finalized, "public.items")), ["(42)"], "{finalized:#?}");
    let big = table(&finalized, "public.big");
    assert_eq!(keys(big), ["(75000)"]);
    assert_eq!((big.source_rows, big.target_rows), (150000, 149999), "rows as verified before the fence, moved by the difference");
    for name in ["public.pairs", "public.measures", "public.kinds", "public.notes"] {
        assert!(!table(&finalized, name).differs(), "{name}: {finalized:#?}");
    }
    assert!(finalized.complete);
    // The fence ended the sessions that were open.
    let slots: i64 = connect(&servers().source_url, &database)
        .await
        .query_one("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", &[&format!("{}_vt", plan.link_name())])
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0, "the tracking slot is dropped after the cutover's comparison");

    // Without a verification before the fence (here: its slots gone), the window compares everything.
    let full = engine.finalize(&plan).await.expect("finalize again");
    assert!(full.window.as_ref().is_some_and(|w| w.full_reason.is_some()), "{full:#?}");
    assert_eq!(keys(table(&full, "public.items")), ["(42)"]);
    assert!(full.rows_compared > 150000);
    cleanup(&engine, &plan).await;
}

/// The window's scope is read again after the drain: a column added on the target while the drain waits
/// (after the scope the window prepares during the drain was read) is a difference, never missed.
#[tokio::test(flavor = "multi_thread")]
async fn ddl_on_the_target_during_the_drain_is_a_difference() {
    let (engine, plan) = linked("verify_drain_ddl_", SHOP).await;
    let database = plan.database.as_str().to_owned();
    let before = engine.prepare_cutover(&plan).await.expect("prepare").expect("a verification before the fence");
    assert!(before.is_clean(), "{before:#?}");
    let position = engine.fence(&plan).await.expect("fence");
    // The fence started preparing the window (its scope included); let that finish first.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let target = connect(&servers().target_url, &database).await;
    target.batch_execute("ALTER TABLE notes ADD COLUMN added_during_the_drain int DEFAULT 7").await.unwrap();
    drain(&engine, &plan, position).await;
    let finalized = engine.finalize(&plan).await.expect("finalize");
    assert!(!finalized.is_clean(), "{finalized:#?}");
    assert!(
        finalized.differences.iter().any(|d| d.object.contains("notes") && d.detail.contains("added_during_the_drain")),
        "{finalized:#?}"
    );
    cleanup(&engine, &plan).await;
}

/// A linked SHOP database whose verification before the fence ran under the live writer (stopped after
/// it, the writes it made returned), proving no difference.
async fn prepared_under_writes(prefix: &str) -> (PostgresEngine, LinkPlan, u64) {
    let (engine, plan) = linked(prefix, SHOP).await;
    let writer = start_writer(plan.database.as_str());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = engine.prepare_cutover(&plan).await.expect("prepare").expect("a verification before the fence");
    assert!(!before.proves_a_difference(), "{before:#?}");
    let writes = writer.stop().await[0];
    (engine, plan, writes)
}

/// Under a live writer, the catch-up rounds before the fence compare what changed during the full
/// verification, so the window decodes only the last writes; what was written on the target after the
/// rounds is still found there.
#[tokio::test(flavor = "multi_thread")]
async fn catch_up_rounds_leave_the_window_only_the_last_writes() {
    let (engine, plan, writes) = prepared_under_writes("verify_catchup_").await;
    let database = plan.database.as_str().to_owned();
    // Each write changes two rows (an update and an insert).
    assert!(writes > 100, "the writer wrote during the verification before the fence: {writes}");

    let target = connect(&servers().target_url, &database).await;
    target.batch_execute("UPDATE items SET name = 'tampered' WHERE id = 42").await.unwrap();
    let position = engine.fence(&plan).await.expect("fence");
    drain(&engine, &plan, position).await;
    let finalized = engine.finalize(&plan).await.expect("finalize");
    let window = finalized.window.clone().expect("a window report");
    assert_eq!(window.full_reason, None, "{finalized:#?}");
    eprintln!("window decoded {} changes; {} were written during the verification before the fence", window.changes, 2 * writes);
    // Without the rounds the window decodes every one of them (and what came after); with them, the last
    // round's share (about a quarter here, on a quiet machine).
    assert!(window.changes * 4 < 2 * writes * 3, "the rounds took most changes out of the window: {} of {} decoded there", window.changes, 2 * writes);
    assert_eq!(keys(table(&finalized, "public.items")), ["(42)"], "{finalized:#?}");
    for name in ["public.big", "public.pairs", "public.measures", "public.kinds", "public.notes"] {
        assert!(!table(&finalized, name).differs(), "{name}: {finalized:#?}");
    }
    assert!(finalized.complete);
    cleanup(&engine, &plan).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_kept_before_the_fence_are_trusted_only_while_the_slots_are_where_they_left_them() {
    let (engine, plan, _) = prepared_under_writes("verify_kept_").await;
    let database = plan.database.as_str().to_owned();
    // Someone else reads (consumes) the source's tracking stream after milink kept its part of it: what
    // milink kept is no longer the stream's whole past, so the window must not trust it.
    let source = connect(&servers().source_url, &database).await;
    let slot = format!("{}_vt", plan.link_name());
    source.query("SELECT count(*) FROM pg_logical_slot_get_changes($1, NULL, NULL)", &[&slot]).await.unwrap();
    let target = connect(&servers().target_url, &database).await;
    target.batch_execute("UPDATE items SET name = 'tampered' WHERE id = 43").await.unwrap();
    let position = engine.fence(&plan).await.expect("fence");
    drain(&engine, &plan, position).await;
    let finalized = engine.finalize(&plan).await.expect("finalize");
    let window = finalized.window.clone().expect("a window report");
    assert!(window.full_reason.as_deref().is_some_and(|r| r.contains("do not match the tracking slots")), "{finalized:#?}");
    assert_eq!(keys(table(&finalized, "public.items")), ["(43)"], "{finalized:#?}");
    cleanup(&engine, &plan).await;
}
