//! Benchmark: seeding against the machine's copy limit, a native subscription and pgcopydb (issue 14).
//!
//! Run: `cargo bench -p milink-e2e --bench pg_seed -- [--scale N] [--workers W]` (defaults: scale 50, milink's
//! automatic workers). One pgbench database (`pgbench -i -s N`, pgbench_history given a primary key), with
//! `pgbench -c 4 -j 2` writing to it during every measurement, is seeded four ways into a fresh target
//! database of the same name, one after the other, in the same run:
//! - **copy limit**: the tables restored without indexes (`pg_dump --section=pre-data | psql`), then every
//!   table's `COPY ... TO STDOUT (FORMAT binary)` piped into `COPY ... FROM STDIN (FORMAT binary)`, one
//!   stream per table, all tables at once, then indexes and constraints (`--section=post-data`). No
//!   snapshot, no slot, no catch-up: the floor any seeding method sits on;
//! - **native**: the whole schema (pg_dump), `CREATE SUBSCRIPTION` with `copy_data = true`, until every
//!   table is `r` (PostgreSQL's table sync, the way a DBA does it by hand);
//! - **pgcopydb**: `pgcopydb clone` (snapshot, table and index jobs as given), when `pgcopydb` is installed
//!   (`dev/tools.sh pgcopydb`; skipped with a note otherwise);
//! - **milink**: the release binary, from the start request until milink first reports the link past
//!   Seeding (as `pg_cutover` measures it).
//!
//! Each figure is printed with its ratio to the copy limit. Source, target and load share the CPU: compare
//! within one run.
use milink_e2e::milink::Milink;
use milink_e2e::pg::{self, Side};
use milink_e2e::pgbench::{pg_bin, pgbench, source_port};
use milink_e2e::unique;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn target_port() -> String {
    let url = &pg::servers().target_url;
    url.rsplit(':').next().and_then(|rest| rest.split('/').next()).unwrap_or("54312").to_owned()
}

fn conninfo(port: &str, database: &str) -> String {
    format!("host=127.0.0.1 port={port} user=milink dbname={database}")
}

async fn fresh_target(database: &str) -> anyhow::Result<()> {
    let admin = pg::connect(Side::Target, "postgres").await?;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg::ident(database))).await?;
    admin.batch_execute(&format!("CREATE DATABASE {}", pg::ident(database))).await?;
    Ok(())
}

/// `pg_dump <args> | psql` from source to target (one transaction).
fn dump_restore(database: &str, args: &[&str]) -> anyhow::Result<()> {
    let password = &pg::servers().password;
    let dump = Command::new(pg_bin("pg_dump"))
        .args(args)
        .args(["--no-owner", "--no-publications", "--no-subscriptions", "-d", &conninfo(&source_port(), database)])
        .env("PGPASSWORD", password)
        .output()?;
    anyhow::ensure!(dump.status.success(), "pg_dump: {}", String::from_utf8_lossy(&dump.stderr));
    let mut restore = Command::new(pg_bin("psql"))
        .args(["-X", "-q", "--single-transaction", "-v", "ON_ERROR_STOP=1", "-d", &conninfo(&target_port(), database)])
        .env("PGPASSWORD", password)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    std::io::Write::write_all(restore.stdin.as_mut().expect("piped"), &dump.stdout)?;
    drop(restore.stdin.take());
    anyhow::ensure!(restore.wait()?.success(), "psql restore failed");
    Ok(())
}

async fn copy_table(database: String, table: String) -> anyhow::Result<()> {
    use futures::{SinkExt, StreamExt};
    let source = pg::connect(Side::Source, &database).await?;
    let target = pg::connect(Side::Target, &database).await?;
    let reading = source.copy_out(&format!("COPY {table} TO STDOUT (FORMAT binary)")).await?;
    let sink = target.copy_in(&format!("COPY {table} FROM STDIN (FORMAT binary)")).await?;
    futures::pin_mut!(reading);
    futures::pin_mut!(sink);
    while let Some(data) = reading.next().await {
        sink.feed(data?).await?;
    }
    sink.as_mut().finish().await?;
    Ok(())
}

/// Raw binary COPY of every table into unindexed tables, then the indexes: (copy, index build).
async fn copy_limit(database: &str) -> anyhow::Result<(Duration, Duration)> {
    fresh_target(database).await?;
    dump_restore(database, &["--section=pre-data"])?;
    let source = pg::connect(Side::Source, database).await?;
    let tables: Vec<String> = source
        .query("SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = 'public'", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let started = Instant::now();
    let copies = tables.into_iter().map(|t| tokio::spawn(copy_table(database.to_owned(), t)));
    for copy in futures::future::join_all(copies).await {
        copy??;
    }
    let copied = started.elapsed();
    let indexing = Instant::now();
    dump_restore(database, &["--section=post-data"])?;
    Ok((copied, indexing.elapsed()))
}

/// A native subscription with copy_data = true, until every table is synchronized.
async fn native(database: &str) -> anyhow::Result<Duration> {
    fresh_target(database).await?;
    let source = pg::connect(Side::Source, database).await?;
    source.batch_execute("DROP PUBLICATION IF EXISTS bench_native; CREATE PUBLICATION bench_native FOR ALL TABLES").await?;
    let started = Instant::now();
    dump_restore(database, &["--schema-only"])?;
    let target = pg::connect(Side::Target, database).await?;
    let conninfo = format!("{} password={}", conninfo(&source_port(), database), pg::servers().password);
    target.batch_execute("SET log_min_error_statement = panic; SET log_statement = none").await?;
    target.batch_execute(&format!("CREATE SUBSCRIPTION bench_native CONNECTION '{conninfo}' PUBLICATION bench_native")).await?;
    loop {
        let waiting: i64 = target.query_one("SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'", &[]).await?.get(0);
        if waiting == 0 {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(3600), "native sync never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    target.batch_execute("DROP SUBSCRIPTION bench_native").await?;
    source.batch_execute("DROP PUBLICATION bench_native").await?;
    Ok(elapsed)
}

/// `pgcopydb clone`, when installed.
async fn pgcopydb(database: &str, jobs: u64) -> anyhow::Result<Option<Duration>> {
    if Command::new("pgcopydb").arg("--version").output().is_err() {
        return Ok(None);
    }
    fresh_target(database).await?;
    let dir = tempfile::tempdir()?;
    let password = &pg::servers().password;
    let uri = |port: String| format!("postgres://milink:{}@127.0.0.1:{port}/{database}", password);
    let started = Instant::now();
    let output = Command::new("pgcopydb")
        .args(["clone", "--no-owner", "--no-acl", "--skip-extensions", "--dir"])
        .arg(dir.path())
        .args(["--table-jobs", &jobs.to_string(), "--index-jobs", &jobs.to_string()])
        .args(["--source", &uri(source_port()), "--target", &uri(target_port())])
        .output()?;
    let elapsed = started.elapsed();
    anyhow::ensure!(output.status.success(), "pgcopydb clone: {}", String::from_utf8_lossy(&output.stderr).lines().rev().take(5).collect::<Vec<_>>().join(" / "));
    Ok(Some(elapsed))
}

/// milink from the start request until past Seeding.
async fn milink_seeding(milink: &Milink, database: &str, workers: u64) -> anyhow::Result<Duration> {
    let admin = pg::connect(Side::Target, "postgres").await?;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg::ident(database))).await?;
    let started = Instant::now();
    let id = milink.start_migration(database, json!({ "seedWorkers": workers })).await?;
    let mut eta_samples: Vec<(f64, f64, f64)> = Vec::new();
    loop {
        let m = milink.get(&format!("/api/migrations/{id}")).await?;
        let status = m["status"].as_str().unwrap_or_default().to_owned();
        if matches!(status.as_str(), "CatchingUp" | "ReadyForCutover") {
            let seeding = started.elapsed();
            for (at, progress, eta) in eta_samples.iter().copied() {
                let real_left = seeding.as_secs_f64() - at;
                let error: f64 = (eta - real_left) / real_left.max(0.001) * 100.0;
                println!("  milink at {at:>6.1} s: {progress:>5.1} %, ETA {eta:>6.1} s, real {real_left:>6.1} s ({error:+.0} %)");
            }
            let (status, _) = milink.post(&format!("/api/migrations/{id}/cancel"), &json!({})).await?;
            anyhow::ensure!(status == 202, "cancel answered {status}");
            milink.wait_status(&id, "Cancelled", Duration::from_secs(120)).await?;
            return Ok(seeding);
        }
        if let (Some(progress), Some(eta)) = (m["progress"].as_f64(), m["seed"]["etaSeconds"].as_f64()) {
            if eta_samples.last().is_none_or(|(at, _, _)| started.elapsed().as_secs_f64() - at >= 2.0) {
                eta_samples.push((started.elapsed().as_secs_f64(), progress, eta));
            }
        }
        anyhow::ensure!(!matches!(status.as_str(), "Failed" | "Cancelled" | "Stalled"), "migration {status}: {m}");
        anyhow::ensure!(started.elapsed() < Duration::from_secs(3600), "not seeded after an hour");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scale = arg("--scale", 50);
    let workers = arg("--workers", 0);
    if std::env::var_os("MILINK_BIN").is_none() {
        let root = milink_e2e::workspace_root();
        let built = Command::new(env!("CARGO")).args(["build", "-q", "--release", "-p", "milink"]).current_dir(&root).status()?;
        anyhow::ensure!(built.success(), "cargo build --release -p milink failed");
        std::env::set_var("MILINK_BIN", root.join("target/release/milink"));
    }
    let database = unique("seedbench");
    pg::drop_everywhere(&database).await;
    pg::connect(Side::Source, "postgres").await?.batch_execute(&format!("CREATE DATABASE {}", pg::ident(&database))).await?;
    let init = pgbench(&database, &["-i", "-q", "-s", &scale.to_string()]).output()?;
    anyhow::ensure!(init.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    let source = pg::connect(Side::Source, &database).await?;
    source.batch_execute("ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY").await?;
    let bytes: i64 = source.query_one("SELECT pg_database_size(current_database())", &[]).await?.get(0);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!("pg_seed: pgbench scale {scale} ({:.0} MiB), 4 writer clients during every measurement, {cores} cores", bytes as f64 / 1048576.0);
    let milink = Milink::start_with_poll(1000).await?;
    let writers = pgbench(&database, &["-n", "-c", "4", "-j", "2", "-T", "7200"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;

    let (copy, index) = copy_limit(&database).await?;
    let limit = copy + index;
    println!("copy limit: {:.2} s (binary COPY of every table {:.2} s + indexes {:.2} s)", limit.as_secs_f64(), copy.as_secs_f64(), index.as_secs_f64());
    let ratio = |d: Duration| d.as_secs_f64() / limit.as_secs_f64();
    let native = native(&database).await?;
    println!("native subscription: {:.2} s ({:.2}× the copy limit)", native.as_secs_f64(), ratio(native));
    let jobs = if workers == 0 { 4 } else { workers };
    match pgcopydb(&database, jobs).await? {
        Some(d) => println!("pgcopydb clone ({jobs} table jobs): {:.2} s ({:.2}× the copy limit)", d.as_secs_f64(), ratio(d)),
        None => println!("pgcopydb clone: not installed (dev/tools.sh pgcopydb), skipped"),
    }
    let seeding = milink_seeding(&milink, &database, workers).await?;
    println!(
        "milink seeding: {:.2} s ({:.2}× the copy limit, {:.2}× native)",
        seeding.as_secs_f64(),
        ratio(seeding),
        seeding.as_secs_f64() / native.as_secs_f64()
    );
    let mut writers = writers;
    let _ = writers.kill();
    let _ = writers.wait();
    pg::drop_everywhere(&database).await;
    Ok(())
}
