//! Benchmark: content verification of a pgbench database, on demand under write load and at cutover.
//!
//! Run: `cargo bench -p milink-e2e --bench pg_verify -- [--scale N] [--rounds K] [--log]` (defaults:
//! scale 10, 3 rounds of each timing; `--log` prints the engine's own step timings on stderr).
//!
//! Method: a fresh source database is filled by `pgbench -i -s N` (pgbench_history gets a primary key, as
//! milink refuses tables without one) and linked to the target by the engine itself (no binary: the
//! figures are the engine's, without polling delays). Once the link streams, `pgbench -c 4 -j 2` runs the
//! TPC-B-like write load. Under that load:
//! - the anchor: `count(*)` of every table on the source, one after the other on one session;
//! - `verify`: the full on-demand verification (both sides, every row hashed, matched positions).
//!
//! The median of the rounds of each is printed with rows/s and the ratio verify / count(*). The issue's
//! goal is a ratio ≤ 3 at scale 50. Then `verify` is timed once idle.
//!
//! Then the cutover's verification, split as the cutover splits it: `prepare_cutover` (the full
//! verification before the fence, while the source still takes writes, with the tracking slots) and
//! `finalize` after fence and drain (sequences, large objects and the comparison of what changed since:
//! all inside the write-downtime window). Three cutovers, each unfenced after finalize:
//! - "idle": the load stopped before the cutover was requested (what the cutover's confirmation asks);
//! - "writes until the fence": the load runs through `prepare_cutover` and stops just before the fence,
//!   so the window decodes and compares every row written during the full verification;
//! - "untracked": `finalize` without `prepare_cutover`, the full static comparison inside the window
//!   (what every cutover did before).
//!
//! Run at two scales (`--scale 10`, `--scale 50`) to see which window grows with the data. Figures depend
//! on the machine (both servers share it).
//!
//! Measured 2026-12-01 on a shared 2-core machine (load average ~8 from other work), 2 rounds:
//! scale 10: in the window idle 627 ms, writes until the fence 2503 ms (31216 changes, 15690 rows),
//! untracked 653 ms; scale 50: idle 317 ms, writes until the fence 1139 ms (49596 changes, 25336 rows),
//! untracked 1520 ms. Under load at scale 50: count(*) 1.63 s, on-demand verify 27.8 s (17×, the first
//! rounds after seeding), verification before the fence 12.9 s; idle 1.23 s vs 5.25 s (4.3×).
//!
//! Measured 2026-12-01 (later session, same machine), scale 50, 1 round, before and after the chunk
//! checksums' hash aggregate (`read::checksums`): under load count(*) 548 / 562 ms, on-demand verify
//! 7,037 ms (12.8×) / 3,596 ms (6.4×), verification before the fence 21.1 / 13.8 s; idle count(*) 311 /
//! 289 ms, verify 2,297 ms (7.4×) / 1,127 ms (3.9×); in the window with writes until the fence 536 / 487 ms,
//! untracked (full) 738 / 729 ms.
//!
//! Measured later that day (same machine), scale 50, 1 round, after the flushes that flush and the
//! tracking reads bounded at a flushed record (`cutover::FLUSH_WAL`, `track::flushed_end`): under load
//! count(*) 620 ms, on-demand verify 3,893 ms (6.3×), verification before the fence 5.7 s (13.8 s before);
//! idle count(*) 285 ms, verify 1,108 ms (3.9×); in the window with writes until the fence 79 ms (487 ms
//! before), untracked (full) 714 ms.
//!
//! Measured 2026-12-01 (next session, same machine), scale 50, 5 rounds, after a whole table is compared
//! by one checksum per side with the rows that moved named by a temporary copy of the link's slot
//! (`verify::moved`): under load count(*) 664 ms, on-demand verify 1,915 ms (2.9×; rounds 2.3–3.3×),
//! verification before the fence 5.1 s (3.5 s in the run before, also 2.9×); idle count(*) 289 ms, verify
//! 805 ms (2.8×); in the window with writes until the fence 79 ms, untracked (full) 784 ms. After the
//! review's fixes and matched snapshots for small tables: count(*) 536 ms, verify 1,540 ms (2.9×; rounds
//! 2.2–3.3×, every one complete), before the fence 2.8 s; idle 253 / 738 ms (2.9×); window 77 / 721 ms.
use milink_core::config::{Endpoint, Secret};
use milink_core::migration::{LinkPhase, Settings, Verification};
use milink_core::ports::{Engine, LinkPlan};
use milink_core::{ConnectionName, DatabaseName, MigrationId};
use milink_e2e::pg::{self, Side};
use milink_e2e::pgbench::pgbench;
use milink_e2e::unique;
use milink_postgres::PostgresEngine;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn endpoint(name: &str, url: &str) -> Endpoint {
    Endpoint {
        name: ConnectionName::parse(name).expect("connection name"),
        engine: "postgres".into(),
        url: url.into(),
        password: Some(Secret::new(pg::servers().password.clone())),
        replication_url: None,
        options: Default::default(),
    }
}

fn link_plan(database: &str) -> LinkPlan {
    LinkPlan {
        migration_id: MigrationId::new_random(),
        source: endpoint("src", &pg::servers().source_url),
        target: endpoint("dst", &pg::servers().target_url),
        database: DatabaseName::parse(database).expect("database name"),
        settings: Settings::default(),
    }
}

async fn until_streaming(engine: &PostgresEngine, plan: &LinkPlan) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let o = engine.observe(plan, chrono::Utc::now()).await?;
        if o.phase == LinkPhase::Streaming && o.lag_bytes.is_some_and(|lag| lag <= plan.settings.ready_lag_bytes) {
            return Ok(started.elapsed());
        }
        // A problem reported while the initial copy runs on a busy machine can clear; the time limit decides.
        if let Some(problem) = &o.problem {
            eprintln!("link problem (still waiting): {}", problem.reason);
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(1800), "not streaming after 30 min");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn count_everything(database: &str) -> anyhow::Result<(Duration, i64)> {
    let client = pg::connect(Side::Source, database).await?;
    let tables: Vec<String> = client
        .query("SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let started = Instant::now();
    let mut rows = 0;
    for table in tables {
        rows += client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await?.get::<_, i64>(0);
    }
    Ok((started.elapsed(), rows))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 0 => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        n => values[n / 2],
    }
}

fn describe(v: &Verification) -> String {
    let chunks: u32 = v.tables.iter().map(|t| t.chunks).sum();
    format!(
        "{} rows, {chunks} chunks, complete {}, clean {}{}",
        v.rows_compared,
        v.complete,
        v.is_clean(),
        v.incomplete_reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
    )
}

async fn timed_verify(engine: &PostgresEngine, plan: &LinkPlan) -> anyhow::Result<(Duration, Verification)> {
    let started = Instant::now();
    let v = engine.verify(plan).await?;
    Ok((started.elapsed(), v))
}

async fn timed<T>(work: impl std::future::Future<Output = Result<T, milink_core::EngineError>>) -> anyhow::Result<(Duration, T)> {
    let started = Instant::now();
    let value = work.await?;
    Ok((started.elapsed(), value))
}

/// Fence, drain, finalize (timed: the verification's part of the write-downtime window), unfence.
async fn cutover_window(engine: &PostgresEngine, plan: &LinkPlan) -> anyhow::Result<(Duration, Verification)> {
    let position = engine.fence(plan).await?;
    let drained = Instant::now();
    while engine.positions(plan).await?.target < position {
        anyhow::ensure!(drained.elapsed() < Duration::from_secs(120), "drain did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let finalized = timed(engine.finalize(plan)).await?;
    engine.unfence(plan).await?;
    Ok(finalized)
}

fn stop(mut load: Child) {
    let _ = load.kill();
    let _ = load.wait();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--log") {
        // The engine's own step timings (`verified content`, `compared a table whole`), on stderr.
        tracing_subscriber::fmt().with_env_filter("milink_postgres=debug").with_writer(std::io::stderr).init();
    }
    let scale = arg("--scale", 10);
    let rounds = arg("--rounds", 3).max(1);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!("pg_verify: pgbench scale {scale}, 4 writer clients, {rounds} rounds, {cores} cores (both servers on this machine)");
    let database = unique("verifybench");
    pg::drop_everywhere(&database).await;
    pg::connect(Side::Source, "postgres").await?.batch_execute(&format!("CREATE DATABASE {}", pg::ident(&database))).await?;
    let init = pgbench(&database, &["-i", "-q", "-s", &scale.to_string()]).stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    anyhow::ensure!(init.success(), "pgbench -i failed");
    pg::connect(Side::Source, &database).await?.batch_execute("ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY; ANALYZE").await?;

    let engine = PostgresEngine::new();
    let plan = link_plan(&database);
    engine.create_link(&plan).await?;
    let seeded = until_streaming(&engine, &plan).await?;
    println!("linked and streaming after {:.1} s", seeded.as_secs_f64());

    let load = pgbench(&database, &["-n", "-c", "4", "-j", "2", "-T", "3600"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (mut counts, mut verifies) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (count_time, rows) = count_everything(&database).await?;
        let (verify_time, v) = timed_verify(&engine, &plan).await?;
        println!(
            "round {round}: count(*) {rows} rows in {:.0} ms; verify {:.0} ms ({:.0} rows/s, {:.1}× count): {}",
            count_time.as_secs_f64() * 1e3,
            verify_time.as_secs_f64() * 1e3,
            v.rows_compared as f64 / verify_time.as_secs_f64(),
            verify_time.as_secs_f64() / count_time.as_secs_f64(),
            describe(&v)
        );
        anyhow::ensure!(v.mismatches().is_empty() && v.differences.is_empty(), "lag reported as a difference: {}", v.summary());
        counts.push(count_time.as_secs_f64());
        verifies.push(verify_time.as_secs_f64());
    }
    let (count, verify) = (median(counts), median(verifies));
    println!("under load, median: count(*) {:.0} ms, verify {:.0} ms, ratio {:.1}×", count * 1e3, verify * 1e3, verify / count);

    // The cutover's verification, writes running until just before the fence.
    let (prepare_time, prepared) = timed(engine.prepare_cutover(&plan)).await?;
    stop(load);
    let prepared = prepared.ok_or_else(|| anyhow::anyhow!("no verification before the fence"))?;
    println!("before the fence, under load: {:.0} ms ({:.0} rows/s): {}", prepare_time.as_secs_f64() * 1e3, prepared.rows_compared as f64 / prepare_time.as_secs_f64(), describe(&prepared));
    let writes_until_fence = cutover_window(&engine, &plan).await?;
    until_streaming(&engine, &plan).await?;
    let (count_time, _) = count_everything(&database).await?;
    let (idle_time, idle) = timed_verify(&engine, &plan).await?;
    println!(
        "idle: count(*) {:.0} ms, verify {:.0} ms ({:.1}×): {}",
        count_time.as_secs_f64() * 1e3,
        idle_time.as_secs_f64() * 1e3,
        idle_time.as_secs_f64() / count_time.as_secs_f64(),
        describe(&idle)
    );
    let (prepare_time, _) = timed(engine.prepare_cutover(&plan)).await?;
    println!("before the fence, idle: {:.0} ms", prepare_time.as_secs_f64() * 1e3);
    let idle_window = cutover_window(&engine, &plan).await?;
    let untracked = cutover_window(&engine, &plan).await?;
    for (name, (time, v)) in [("idle", &idle_window), ("writes until the fence", &writes_until_fence), ("untracked (full)", &untracked)] {
        let window = v.window.clone().unwrap_or_default();
        println!(
            "in the window, {name}: finalize {:.0} ms ({:.1}× the idle count(*)); {} changes decoded, {} rows compared{}{}: {}",
            time.as_secs_f64() * 1e3,
            time.as_secs_f64() / count_time.as_secs_f64(),
            window.changes,
            window.rows_compared,
            window.full_reason.map(|r| format!(", full because: {r}")).unwrap_or_default(),
            if window.whole_tables.is_empty() { String::new() } else { format!(", whole: {}", window.whole_tables.join(", ")) },
            describe(v)
        );
        anyhow::ensure!(v.is_clean(), "finalize ({name}): {}", v.summary());
    }
    engine.drop_link(&plan, true).await?;
    pg::drop_everywhere(&database).await;
    Ok(())
}
