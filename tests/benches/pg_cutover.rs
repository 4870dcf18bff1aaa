//! Benchmark: seeding time, ready-detection latency and cutover write downtime on real PostgreSQL.
//!
//! Run: `cargo bench -p milink-e2e --bench pg_cutover -- [--scale N] [--rounds K] [--poll-ms MS]`
//! (defaults: scale 10, 3 rounds, milink's default 1000 ms poll).
//! After the rounds, one round runs through PgBouncer (`--no-pooler` skips it, `--pooler-seconds S` sets its
//! pgbench run, default 20): failed transactions and the p100 latency during the cutover (see the section at
//! the end of this file).
//!
//! Method, per round: a fresh database is filled by `pgbench -i -s N` (pgbench_history gets a primary key,
//! as milink refuses tables without one); `pgbench -c 4 -j 2` then runs the TPC-B-like write load against it
//! for the whole round. milink (the real binary, `milink up`) links it to the target:
//! - seeding time: from the start request until milink first reports the link past Seeding;
//! - ready-detection latency: the bench polls the source itself every 10 ms (every table `r` on the target
//!   and slot lag ≤ readyLagBytes); the figure is the time from the first such sample to the first API
//!   answer that says ReadyForCutover;
//! - write downtime: cutover is requested while the writers run; milink records fence → switch in the
//!   migration (`writeDowntimeMs`); the bench also prints request → Completed as seen from the API.
//! - what the application paid before the fence (the verification before it, then the synchronous hold,
//!   when the source's commits wait for the link): from pgbench's per-transaction logs (`-l`), the
//!   transactions per second and the longest transaction that ended in the 10 s before the request, from the
//!   request to the fence, and in the last 2 s before the fence (about the hold's span).
//!
//! After the rounds, the hand recipe (see `hand_recipe`) runs on the same servers under the same load, and its
//! write downtime is printed with milink's median and their ratio.
//! The binary measured is the release build (`MILINK_BIN` overrides). Medians are over the rounds. Figures depend on the machine: print them with its description.
use milink_e2e::milink::Milink;
use milink_e2e::pg::{self, Side};
use milink_e2e::pgbench::{pg_bin, pgbench, pooler_pause, source_port};
use milink_e2e::unique;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Round {
    rows: i64,
    size_mb: f64,
    seeding: Duration,
    ready_detection: Option<Duration>,
    downtime_ms: i64,
    request_to_completed: Duration,
    transactions: u64,
    /// Milliseconds spent verifying before the fence (outside the window), then in fence, drain, finalize,
    /// switch (from the migration's history).
    steps: [i64; 5],
    /// The application's transactions: (per second, longest ms) before the request, request → fence, and
    /// the last 2 s before the fence.
    application: [(f64, f64); 3],
}

fn epoch_seconds(at: std::time::SystemTime) -> f64 {
    at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Transactions per second and the longest latency (ms) of those that ended in [from, to).
fn application_between(transactions: &[(f64, f64)], from: f64, to: f64) -> (f64, f64) {
    let ended: Vec<f64> = transactions.iter().filter(|(_, end)| *end >= from && *end < to).map(|(latency, _)| *latency).collect();
    let per_second = if to > from { ended.len() as f64 / (to - from) } else { 0.0 };
    (per_second, ended.iter().copied().fold(0.0, f64::max))
}

/// Step durations from the history: request → fence begins (after the verification before it) → fenced →
/// drained → verified → primary. Each includes the hop to the next step's message (the embedded queue).
fn step_durations(m: &serde_json::Value) -> [i64; 5] {
    let at = |needle: &str| {
        m["history"].as_array().and_then(|h| {
            h.iter().find(|e| e["message"].as_str().is_some_and(|s| s.contains(needle))).and_then(|e| e["at"].as_str())
        })
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    let time = |field: &str| m["cutover"][field].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let marks = [time("requestedAt"), time("fencedAt"), at("source fenced"), at("target confirmed"), at("verified"), at("target is primary")];
    let mut out = [0; 5];
    for i in 0..5 {
        if let (Some(a), Some(b)) = (marks[i], marks[i + 1]) {
            out[i] = (b - a).num_milliseconds();
        }
    }
    out
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn lag_ok(database: &str, threshold: i64) -> bool {
    let Ok(target) = pg::connect(Side::Target, database).await else { return false };
    let Ok(source) = pg::connect(Side::Source, database).await else { return false };
    let not_ready: i64 = match target
        .query_one("SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid WHERE r.srsubstate <> 'r'", &[])
        .await
    {
        Ok(row) => row.get(0),
        Err(_) => return false,
    };
    let any: i64 = target.query_one("SELECT count(*) FROM pg_subscription_rel", &[]).await.map(|r| r.get(0)).unwrap_or(0);
    let lag: Option<i64> = source
        .query_one(
            "SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn))::bigint FROM pg_replication_slots \
             WHERE database = current_database() AND slot_name LIKE 'milink%'",
            &[],
        )
        .await
        .ok()
        .and_then(|r| r.get(0));
    any > 0 && not_ready == 0 && lag.is_some_and(|l| l <= threshold)
}

async fn round(milink: &Milink, scale: u64) -> anyhow::Result<Round> {
    let database = unique("bench");
    pg::drop_everywhere(&database).await;
    pg::connect(Side::Source, "postgres").await?.batch_execute(&format!("CREATE DATABASE {}", pg::ident(&database))).await?;
    let init = pgbench(&database, &["-i", "-q", "-s", &scale.to_string()]).output()?;
    anyhow::ensure!(init.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    let source = pg::connect(Side::Source, &database).await?;
    source.batch_execute("ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY").await?;
    let rows: i64 = source.query_one("SELECT count(*) FROM pgbench_accounts", &[]).await?.get(0);
    let bytes: i64 = source.query_one("SELECT pg_database_size(current_database())", &[]).await?.get(0);

    let logs = std::env::temp_dir().join(format!("{database}-transactions"));
    std::fs::create_dir_all(&logs)?;
    let prefix = format!("--log-prefix={}/tx", logs.display());
    let writers = pgbench(&database, &["-n", "-c", "4", "-j", "2", "-T", "3600", "-l", &prefix]).spawn()?;
    let started = Instant::now();
    let id = milink.start_migration(&database, json!({})).await?;
    let mut seeding = None;
    let mut lag_seen = None;
    let ready_at = loop {
        let m = milink.get(&format!("/api/migrations/{id}")).await?;
        let status = m["status"].as_str().unwrap_or_default().to_owned();
        if seeding.is_none() && matches!(status.as_str(), "CatchingUp" | "ReadyForCutover") {
            seeding = Some(started.elapsed());
        }
        if lag_seen.is_none() && lag_ok(&database, 1024 * 1024).await {
            lag_seen = Some(Instant::now());
        }
        if status == "ReadyForCutover" {
            break Instant::now();
        }
        anyhow::ensure!(!matches!(status.as_str(), "Failed" | "Cancelled" | "Stalled"), "migration {status}: {m}");
        anyhow::ensure!(started.elapsed() < Duration::from_secs(1800), "not ready after 30 min");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let requested = Instant::now();
    let requested_at = epoch_seconds(std::time::SystemTime::now());
    let (status, body) = milink.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await?;
    anyhow::ensure!(status == 202, "cutover: {body}");
    let done = milink.wait_status(&id, "Completed", Duration::from_secs(300)).await?;
    let request_to_completed = requested.elapsed();
    let output = writers.wait_with_output()?;
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    let transactions = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next()?.trim().parse().ok())
        .unwrap_or(0);
    pg::assert_target_matches_source(&database).await?;
    pg::drop_everywhere(&database).await;
    let fenced_at = done["cutover"]["fencedAt"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(requested_at, |t| t.timestamp_micros() as f64 / 1e6);
    let (transactions_logged, _) = read_transaction_logs(&logs)?;
    let _ = std::fs::remove_dir_all(&logs);
    let application = [
        application_between(&transactions_logged, requested_at - 10.0, requested_at),
        application_between(&transactions_logged, requested_at, fenced_at),
        application_between(&transactions_logged, (fenced_at - 2.0).max(requested_at), fenced_at),
    ];
    Ok(Round {
        rows,
        size_mb: bytes as f64 / 1048576.0,
        seeding: seeding.unwrap_or_default(),
        ready_detection: lag_seen.map(|seen| ready_at.saturating_duration_since(seen)),
        downtime_ms: done["cutover"]["writeDowntimeMs"].as_i64().unwrap_or(-1),
        request_to_completed,
        transactions,
        steps: step_durations(&done),
        application,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    if values.is_empty() { return f64::NAN; }
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) { (values[mid - 1] + values[mid]) / 2.0 } else { values[mid] }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scale = arg("--scale", 10);
    let rounds = arg("--rounds", 3);
    let poll = arg("--poll-ms", 1000);
    if std::env::var_os("MILINK_BIN").is_none() {
        // Measure the optimized binary, as users run it.
        let root = milink_e2e::workspace_root();
        let built = std::process::Command::new(env!("CARGO")).args(["build", "-q", "--release", "-p", "milink"]).current_dir(&root).status()?;
        anyhow::ensure!(built.success(), "cargo build --release -p milink failed");
        std::env::set_var("MILINK_BIN", root.join("target/release/milink"));
    }
    let milink = Milink::start_with_poll(poll).await?;
    println!("pg_cutover: pgbench scale {scale}, 4 writer clients, {rounds} rounds, poll every {poll} ms, {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!("{:>5} {:>10} {:>9} {:>11} {:>15} {:>13} {:>14} {:>9}  verify-before-fence/fence/drain/finalize/switch ms", "round", "accounts", "size MiB", "seeding s", "ready-detect ms", "downtime ms", "req→done ms", "writes");
    let mut results = Vec::new();
    for n in 1..=rounds {
        let r = round(&milink, scale).await?;
        // What milink logged about the window's work, for the profile.
        for line in milink.logs().lines().filter(|l| l.contains("caught up before the fence") || l.contains("tracking streams read") || l.contains("during the drain") || l.contains("synchronous hold") || l.contains("verified content") || l.contains("source fenced") || l.contains("finalized")) {
            println!("  log: {}", line.split_whitespace().skip(2).collect::<Vec<_>>().join(" "));
        }
        println!(
            "{n:>5} {:>10} {:>9.1} {:>11.2} {:>15} {:>13} {:>14} {:>9}  {:?}",
            r.rows,
            r.size_mb,
            r.seeding.as_secs_f64(),
            r.ready_detection.map_or("-".into(), |d| d.as_millis().to_string()),
            r.downtime_ms,
            r.request_to_completed.as_millis(),
            r.transactions,
            r.steps
        );
        let [before, to_fence, last] = r.application;
        println!(
            "      application: {:.0} tx/s (longest {:.0} ms) in the 10 s before the request; {:.0} tx/s (longest {:.0} ms) \
             from the request to the fence; {:.0} tx/s (longest {:.0} ms) in the last 2 s before the fence",
            before.0, before.1, to_fence.0, to_fence.1, last.0, last.1
        );
        results.push(r);
    }
    println!(
        "median: seeding {:.2} s, ready-detection {:.0} ms, write downtime {:.0} ms, request→completed {:.0} ms",
        median(results.iter().map(|r| r.seeding.as_secs_f64()).collect()),
        median(results.iter().filter_map(|r| r.ready_detection).map(|d| d.as_millis() as f64).collect()),
        median(results.iter().map(|r| r.downtime_ms as f64).collect()),
        median(results.iter().map(|r| r.request_to_completed.as_millis() as f64).collect()),
    );
    let step = |i: usize| median(results.iter().map(|r| r.steps[i] as f64).collect());
    println!(
        "median steps: verify before the fence {:.0} ms (outside the window); fence {:.0}, drain {:.0}, finalize {:.0}, switch {:.0} ms",
        step(0), step(1), step(2), step(3), step(4)
    );
    let hand = hand_recipe(scale).await?;
    let milink_downtime = median(results.iter().map(|r| r.downtime_ms as f64).collect());
    println!(
        "hand recipe: write downtime {} ms (fence {} ms, wait for confirmed_flush_lsn {} ms, DROP SUBSCRIPTION {} ms); \
         milink/hand-recipe ratio {:.2}",
        hand.total_ms,
        hand.fence_ms,
        hand.wait_ms,
        hand.drop_ms,
        milink_downtime / hand.total_ms.max(1) as f64
    );
    if !std::env::args().any(|a| a == "--no-pooler") {
        let r = pooler_round(scale, arg("--pooler-seconds", 20)).await?;
        println!(
            "pooler: {} transactions through PgBouncer, {} failed ({} clients aborted), p100 latency during the cutover {:.0} ms, \
             pause {} ms, request→completed {} ms, fence/drain/finalize/switch ms {}",
            r.transactions,
            r.failed,
            r.aborted_clients,
            r.p100_ms,
            r.pause_ms.map_or("-".into(), |p| p.to_string()),
            r.request_to_completed.as_millis(),
            r.steps
        );
    }
    Ok(())
}

// The hand recipe: what a DBA does with a shell and psql on the same servers, under the same load, as the
// anchor milink's write downtime is compared with. A native publication and subscription (schema copied with
// pg_dump), pgbench writing, then, timed: ALTER DATABASE ... SET default_transaction_read_only = on and
// terminate the database's sessions; note pg_current_wal_lsn(); poll the slot every 10 ms until its
// confirmed_flush_lsn reaches it; DROP SUBSCRIPTION on the target. No sequences, no verification: the
// recipe proves less than milink does, which is what makes it the floor.

struct HandRecipe {
    fence_ms: u128,
    wait_ms: u128,
    drop_ms: u128,
    total_ms: u128,
}

async fn hand_recipe(scale: u64) -> anyhow::Result<HandRecipe> {
    let database = unique("hand");
    pg::drop_everywhere(&database).await;
    for side in [Side::Source, Side::Target] {
        pg::connect(side, "postgres").await?.batch_execute(&format!("CREATE DATABASE {}", pg::ident(&database))).await?;
    }
    let init = pgbench(&database, &["-i", "-q", "-s", &scale.to_string()]).output()?;
    anyhow::ensure!(init.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    let source = pg::connect(Side::Source, &database).await?;
    source.batch_execute("ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY; CREATE PUBLICATION hand FOR ALL TABLES").await?;
    let schema = Command::new(pg_bin("pg_dump"))
        .args(["--schema-only", "--no-publications", "--no-subscriptions", "-h", "127.0.0.1", "-p", &source_port(), "-U", "milink", &database])
        .env("PGPASSWORD", &pg::servers().password)
        .output()?;
    anyhow::ensure!(schema.status.success(), "pg_dump: {}", String::from_utf8_lossy(&schema.stderr));
    let target = pg::connect(Side::Target, &database).await?;
    // psql meta-commands (`\restrict` in newer pg_dump output) are psql's, not the server's.
    let ddl: String = String::from_utf8_lossy(&schema.stdout).lines().filter(|l| !l.starts_with('\\')).map(|l| format!("{l}\n")).collect();
    target.batch_execute(&ddl).await?;
    let conninfo = format!("host=127.0.0.1 port={} user=milink dbname={} password={}", source_port(), database, pg::servers().password);
    // The password is in the statement: keep it out of the target's log should it fail.
    target.batch_execute("SET log_min_error_statement = panic; SET log_statement = none").await?;
    target.batch_execute(&format!("CREATE SUBSCRIPTION hand CONNECTION '{conninfo}' PUBLICATION hand")).await?;
    let writers = pgbench(&database, &["-n", "-c", "4", "-j", "2", "-T", "3600"]).spawn()?;
    let started = Instant::now();
    loop {
        let waiting: i64 = target.query_one("SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'", &[]).await?.get(0);
        let lag: Option<i64> = source
            .query_one("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = 'hand'", &[])
            .await?
            .get(0);
        if waiting == 0 && lag.is_some_and(|l| l <= 1024 * 1024) {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(1800), "the hand-made subscription never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = pg::connect(Side::Source, "postgres").await?;
    let fence = Instant::now();
    admin.batch_execute(&format!("ALTER DATABASE {} SET default_transaction_read_only = on", pg::ident(&database))).await?;
    admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
            &[&database],
        )
        .await?;
    let fence_position: String = admin.query_one("SELECT pg_current_wal_lsn()::text", &[]).await?.get(0);
    let fence_ms = fence.elapsed().as_millis();
    let wait = Instant::now();
    loop {
        let caught_up: bool = admin
            .query_one("SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = 'hand'", &[&fence_position])
            .await?
            .get(0);
        if caught_up {
            break;
        }
        anyhow::ensure!(wait.elapsed() < Duration::from_secs(120), "the hand-made subscription never confirmed the fence");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wait_ms = wait.elapsed().as_millis();
    let drop = Instant::now();
    target.batch_execute("DROP SUBSCRIPTION hand").await?;
    let drop_ms = drop.elapsed().as_millis();
    let total_ms = fence.elapsed().as_millis();
    let _ = writers.wait_with_output();
    pg::drop_everywhere(&database).await;
    Ok(HandRecipe { fence_ms, wait_ms, drop_ms, total_ms })
}

// Through the pooler. One more round in which pgbench connects THROUGH PgBouncer (`dev/pgbouncer.sh`:
// transaction pooling; pgbench's default simple protocol) and milink holds the traffic itself: PAUSE, fence,
// drain, finalize, switch, repoint the pooler's entry, RELOAD, RESUME. pgbench runs a fixed time
// (`--pooler-seconds`, default 20) that spans the cutover and logs every transaction (`-l`). Figures: failed
// transactions (pgbench's count plus one per aborted client) and the longest transaction that ended between
// the cutover request and 1 s after Completed (p100), plus the pause, PAUSE→RESUME in milink's log. This
// milink polls every 200 ms (`Milink::start`, the only constructor that takes extra config).

struct PoolerRound {
    transactions: u64,
    failed: u64,
    aborted_clients: u64,
    p100_ms: f64,
    pause_ms: Option<i64>,
    request_to_completed: Duration,
    steps: serde_json::Value,
}

fn pgbouncer_vars() -> anyhow::Result<std::collections::HashMap<String, String>> {
    let script = milink_e2e::workspace_root().join("dev/pgbouncer.sh");
    let up = Command::new("bash").arg(&script).arg("up").output()?;
    anyhow::ensure!(up.status.success(), "dev/pgbouncer.sh up: {}", String::from_utf8_lossy(&up.stderr));
    let env = Command::new("bash").arg(&script).arg("env").output()?;
    Ok(String::from_utf8_lossy(&env.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// Adds or removes the database's entry in the pooler's file the way milink rewrites it (lock, rename).
fn set_pooler_entry(file: &str, database: &str, present: bool) -> anyhow::Result<()> {
    let file = std::path::PathBuf::from(file);
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(file.with_extension("ini.lock"))?;
    lock.lock()?;
    let text = std::fs::read_to_string(&file)?;
    let mut lines: Vec<String> = text.lines().filter(|l| !l.starts_with(&format!("{database} ="))).map(str::to_owned).collect();
    if present {
        lines.push(format!("{database} = host=127.0.0.1 port={} dbname={database}", source_port()));
    }
    let temporary = file.with_extension("ini.bench-new");
    std::fs::write(&temporary, lines.join("\n") + "\n")?;
    std::fs::set_permissions(&temporary, std::fs::metadata(&file)?.permissions())?;
    std::fs::rename(&temporary, &file)?;
    Ok(())
}

/// pgbench's per-transaction logs: (latency ms, end as seconds since the epoch) per transaction, plus
/// the number of failed ones.
fn read_transaction_logs(dir: &std::path::Path) -> anyhow::Result<(Vec<(f64, f64)>, u64)> {
    let (mut done, mut failed) = (Vec::new(), 0);
    for entry in std::fs::read_dir(dir)? {
        for line in std::fs::read_to_string(entry?.path())?.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(latency), Some(epoch), Some(micros)) = (fields.get(2), fields.get(4), fields.get(5)) else { continue };
            match (latency.parse::<f64>(), epoch.parse::<f64>(), micros.parse::<f64>()) {
                (Ok(us), Ok(s), Ok(u)) => done.push((us / 1000.0, s + u / 1e6)),
                _ => failed += 1,
            }
        }
    }
    Ok((done, failed))
}


async fn pooler_round(scale: u64, seconds: u64) -> anyhow::Result<PoolerRound> {
    let vars = pgbouncer_vars()?;
    let database = unique("bench_pooler");
    pg::drop_everywhere(&database).await;
    pg::connect(Side::Source, "postgres").await?.batch_execute(&format!("CREATE DATABASE {}", pg::ident(&database))).await?;
    let init = pgbench(&database, &["-i", "-q", "-s", &scale.to_string()]).output()?;
    anyhow::ensure!(init.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    pg::connect(Side::Source, &database).await?.batch_execute("ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY").await?;
    set_pooler_entry(&vars["MILINK_PGBOUNCER_DATABASES_FILE"], &database, true)?;
    let options = format!(
        "[connections.src.options]\npooler_admin_url = \"{}\"\npooler_password_file = \"{}\"\npooler_databases_file = \"{}\"\n",
        vars["MILINK_PGBOUNCER_ADMIN_URL"], vars["MILINK_PGBOUNCER_ADMIN_PASSWORD_FILE"], vars["MILINK_PGBOUNCER_DATABASES_FILE"]
    );
    let milink = Milink::start(&options).await?;
    let id = milink.start_migration(&database, json!({})).await?;
    milink.wait_status(&id, "ReadyForCutover", Duration::from_secs(1800)).await?;

    let logs = tempfile::tempdir()?;
    let prefix = logs.path().join("tx").display().to_string();
    let pooler_port = vars["MILINK_PGBOUNCER_URL"].rsplit(':').next().and_then(|r| r.split('/').next()).unwrap_or("6432").to_owned();
    let writers = Command::new(pg_bin("pgbench"))
        .args(["-n", "-c", "4", "-j", "2", "-M", "simple", "-T", &seconds.to_string(), "-l", "--log-prefix", &prefix])
        .args(["-h", "127.0.0.1", "-p", &pooler_port, "-U", "milink", &database])
        .env("PGPASSWORD", &pg::servers().password)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (requested, requested_epoch) = (Instant::now(), chrono::Utc::now().timestamp_micros() as f64 / 1e6);
    let (status, body) = milink.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": true })).await?;
    anyhow::ensure!(status == 202, "cutover: {body}");
    let done = milink.wait_status(&id, "Completed", Duration::from_secs(300)).await?;
    let request_to_completed = requested.elapsed();
    let window_end = chrono::Utc::now().timestamp_micros() as f64 / 1e6 + 1.0;
    let output = writers.wait_with_output()?;
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    let reported_failed: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let aborted_clients = text.lines().filter(|l| l.contains("aborted")).count() as u64;
    let (transactions, logged_failed) = read_transaction_logs(logs.path())?;
    let p100_ms = transactions
        .iter()
        .filter(|(_, end)| *end >= requested_epoch && *end <= window_end)
        .map(|(latency, _)| *latency)
        .fold(0.0, f64::max);
    set_pooler_entry(&vars["MILINK_PGBOUNCER_DATABASES_FILE"], &database, false)?;
    pg::drop_everywhere(&database).await;
    Ok(PoolerRound {
        transactions: transactions.len() as u64,
        failed: reported_failed.max(logged_failed) + aborted_clients,
        aborted_clients,
        p100_ms,
        pause_ms: pooler_pause(&milink.logs()).map(|d| d.as_millis() as i64),
        request_to_completed,
        steps: done["cutover"]["steps"].clone(),
    })
}
