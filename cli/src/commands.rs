//! The client commands: `assess`, `migrate start|list|show|watch|cutover|verify|failback|cancel`, `dead-letters`.
//! Verbs follow `az sql mi link` where they can; waits show a progress bar on a terminal.
use crate::client::{CliError, Client};
use crate::output::{self, bytes, cell, Format};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// `milink assess`.
#[derive(Args)]
pub(crate) struct AssessArgs {
    /// The source connection (a name from milink.toml).
    connection: String,
    /// Return at once with the assessment id instead of waiting for the report.
    #[arg(long)]
    no_wait: bool,
}

/// `milink migrate ...`.
#[derive(Subcommand)]
pub(crate) enum Migrate {
    /// Start migrating databases from a source to a target (idempotent: a database already migrating on
    /// this link returns its migration).
    Start {
        /// Source connection name.
        #[arg(long)]
        source: String,
        /// Target connection name.
        #[arg(long)]
        target: String,
        /// Database to migrate; repeat for several.
        #[arg(long = "database", short = 'd', required = true)]
        databases: Vec<String>,
        /// A migration setting as key=value (readyLagBytes, drainTimeoutSeconds, drainStableSeconds,
        /// keepReverseLink, dropTargetOnCancel, fenceRoles=a,b, stallAfterSeconds).
        #[arg(long = "setting", value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// List migrations.
    List,
    /// Show one migration with its history.
    Show {
        /// Migration id.
        id: String,
    },
    /// Follow a migration until it reaches a status.
    Watch {
        /// Migration id.
        id: String,
        /// Stop when the migration is ready for cutover, or only when it is completed.
        #[arg(long, value_enum, default_value = "ready")]
        until: Until,
        /// Give up after this many seconds (exit code 6).
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// Cut over: fence the source, prove the target has every change, switch. Stop application
    /// traffic to the source first.
    Cutover {
        /// Migration id.
        id: String,
        /// Confirm that application traffic to the source is stopped (required).
        #[arg(long)]
        confirm_traffic_stopped: bool,
        /// Wait until the cutover completes (or is abandoned).
        #[arg(long)]
        wait: bool,
    },
    /// Fail back to the source over the reverse link kept at cutover (migrations started with
    /// keepReverseLink=true). Stop application traffic to the target first.
    Failback {
        /// Migration id.
        id: String,
        /// Confirm that application traffic to the target is stopped (required).
        #[arg(long)]
        confirm_traffic_stopped: bool,
        /// Wait until the source is primary again.
        #[arg(long)]
        wait: bool,
    },
    /// Remove the reverse link a completed cutover kept (keepReverseLink=true): the migration becomes
    /// final, the target stops keeping WAL for the source, and failback is no longer possible.
    DropReverseLink {
        /// Migration id.
        id: String,
        /// Wait until it is removed from both servers.
        #[arg(long)]
        wait: bool,
    },
    /// Verify: compare source and target content while the link syncs (checksums over key-ordered chunks,
    /// differing chunks narrowed to their keys). A difference blocks the cutover until a later verification
    /// is clean. Exit code 7 when differences are found.
    Verify {
        /// Migration id.
        id: String,
        /// Start it and return at once instead of waiting for the report.
        #[arg(long)]
        no_wait: bool,
    },
    /// Cancel: give the source its writes back if fenced, remove the link. The target database stays
    /// unless the migration was started with dropTargetOnCancel=true.
    Cancel {
        /// Migration id.
        id: String,
        /// Wait until the link is removed.
        #[arg(long)]
        wait: bool,
    },
}

/// What `watch` waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Until {
    /// ReadyForCutover (or anything past it).
    Ready,
    /// Completed.
    Completed,
    /// Cancelled.
    Cancelled,
    /// FailedBack.
    FailedBack,
}

/// Runs `milink assess`.
pub(crate) async fn assess(client: &Client, format: Format, args: AssessArgs) -> anyhow::Result<()> {
    let started = client.post("/api/assessments", &json!({ "connection": args.connection })).await?;
    let id = cell(&started["id"]);
    if args.no_wait {
        return print_or(format, &started, || println!("assessment {id} started"));
    }
    let spinner = spinner(&format!("assessing {}", args.connection), format);
    let report = finished_report(client, &id).await?;
    spinner.finish_and_clear();
    if format == Format::Json {
        output::json(&report);
    } else {
        print_report(&report);
    }
    if report["status"] == "Failed" {
        return Err(CliError::Ended(format!("assessment failed: {}", cell(&report["error"]["message"]))).into());
    }
    Ok(())
}

fn print_report(report: &Value) {
    println!("Assessment {} of {} (server {})", cell(&report["id"]), cell(&report["connection"]), cell(&report["instance"]["version"]));
    let rows: Vec<Vec<String>> = report["databases"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|db| {
            let findings = db["findings"].as_array().cloned().unwrap_or_default();
            let count = |s: &str| findings.iter().filter(|f| f["severity"] == s).count().to_string();
            vec![cell(&db["name"]), cell(&db["readiness"]), bytes(&db["sizeBytes"]), count("Blocker"), count("Warning"), count("Info")]
        })
        .collect();
    println!();
    output::table(&["DATABASE", "READINESS", "SIZE", "BLOCKERS", "WARNINGS", "INFO"], &rows);
    let instance = report["instance"]["findings"].as_array().cloned().unwrap_or_default();
    let databases = report["databases"].as_array().cloned().unwrap_or_default();
    let mut notes = Vec::new();
    for finding in &instance {
        notes.push(("instance".to_owned(), finding.clone()));
    }
    for db in &databases {
        for finding in db["findings"].as_array().into_iter().flatten() {
            if finding["severity"] != "Info" {
                notes.push((cell(&db["name"]), finding.clone()));
            }
        }
    }
    if !notes.is_empty() {
        println!("\nFindings:");
        for (scope, f) in notes {
            println!("  [{}] {}: {} {}", cell(&f["severity"]), scope, cell(&f["message"]), output::objects(&f["objects"]));
            println!("      fix: {}", cell(&f["remediation"]));
        }
    }
    let r = &report["recommendation"];
    if !r.is_null() {
        println!("\nRecommended target: {} ({} vCores, {} GiB memory, {} GiB storage, confidence {})", cell(&r["sku"]), cell(&r["vcores"]), cell(&r["memoryGib"]), cell(&r["storageGib"]), cell(&r["confidence"]));
        if let Some(cost) = r["monthlyCostUsd"].as_f64() {
            println!("  estimated monthly cost: ${cost:.2}");
        }
        for reason in r["reasons"].as_array().into_iter().flatten() {
            println!("  - {}", cell(reason));
        }
    }
}

/// Runs `milink migrate ...`.
pub(crate) async fn migrate(client: &Client, format: Format, command: Migrate) -> anyhow::Result<()> {
    match command {
        Migrate::Start { source, target, databases, settings } => {
            let body = json!({ "source": source, "target": target, "databases": databases, "settings": parse_settings(&settings)? });
            let started = client.post("/api/migrations", &body).await?;
            print_or(format, &started, || {
                let rows: Vec<Vec<String>> = started["migrations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| vec![cell(&m["id"]), cell(&m["database"]), cell(&m["status"]), if m["existing"] == true { "already started".into() } else { "started".into() }])
                    .collect();
                output::table(&["ID", "DATABASE", "STATUS", ""], &rows);
            })
        }
        Migrate::List => {
            let list = client.get("/api/migrations").await?;
            print_or(format, &list, || {
                let rows: Vec<Vec<String>> = list["migrations"].as_array().into_iter().flatten().map(row).collect();
                output::table(&["ID", "DATABASE", "SOURCE", "TARGET", "STATUS", "PROGRESS", "LAG", "REASON"], &rows);
            })
        }
        Migrate::Show { id } => {
            let m = client.get(&format!("/api/migrations/{id}")).await?;
            print_or(format, &m, || print_migration(&m))
        }
        Migrate::Watch { id, until, timeout } => watch(client, format, &id, until, Duration::from_secs(timeout)).await,
        Migrate::Cutover { id, confirm_traffic_stopped, wait } => {
            let m = client.post(&format!("/api/migrations/{id}/cutover"), &json!({ "confirmTrafficStopped": confirm_traffic_stopped })).await?;
            if !wait {
                return print_or(format, &m, || println!("cutover of {} started: {}", cell(&m["database"]), status_line(&m)));
            }
            watch(client, format, &id, Until::Completed, Duration::from_secs(3600)).await
        }
        Migrate::Failback { id, confirm_traffic_stopped, wait } => {
            let m = client.post(&format!("/api/migrations/{id}/failback"), &json!({ "confirmTrafficStopped": confirm_traffic_stopped })).await?;
            if !wait {
                return print_or(format, &m, || println!("failback of {} started: {}", cell(&m["database"]), status_line(&m)));
            }
            watch(client, format, &id, Until::FailedBack, Duration::from_secs(3600)).await
        }
        Migrate::DropReverseLink { id, wait } => {
            let mut m = client.post(&format!("/api/migrations/{id}/drop-reverse-link"), &json!({})).await?;
            let deadline = std::time::Instant::now() + Duration::from_secs(600);
            if wait {
                loop {
                    m = client.get(&format!("/api/migrations/{id}")).await?;
                    match m["cutover"]["reverseLink"].as_str() {
                        Some("dropped") => break,
                        Some("kept") => return Err(CliError::Ended(format!("the reverse link of {id} could not be removed; see `milink migrate show {id}`")).into()),
                        _ if std::time::Instant::now() > deadline => return Err(CliError::TimedOut(format!("the reverse link of {id} is still being removed")).into()),
                        _ => tokio::time::sleep(Duration::from_millis(250)).await,
                    }
                }
            }
            let state = if wait { "removed" } else { "removal requested (see `milink migrate show`)" };
            print_or(format, &m, || println!("reverse link of {}: {state}", cell(&m["database"])))
        }
        Migrate::Verify { id, no_wait } => verify(client, format, &id, no_wait).await,
        Migrate::Cancel { id, wait } => {
            let m = client.post(&format!("/api/migrations/{id}/cancel"), &json!({})).await?;
            if !wait {
                return print_or(format, &m, || println!("cancel of {} requested: {}", cell(&m["database"]), status_line(&m)));
            }
            watch(client, format, &id, Until::Cancelled, Duration::from_secs(3600)).await
        }
    }
}

fn parse_settings(pairs: &[String]) -> anyhow::Result<Value> {
    let mut settings = serde_json::Map::new();
    for pair in pairs {
        let (key, value) = pair.split_once('=').ok_or_else(|| CliError::Usage(format!("--setting {pair:?} is not KEY=VALUE")))?;
        let value = if key == "fenceRoles" {
            json!(value.split(',').filter(|s| !s.is_empty()).collect::<Vec<_>>())
        } else {
            serde_json::from_str(value).unwrap_or_else(|_| json!(value))
        };
        settings.insert(key.to_owned(), value);
    }
    Ok(Value::Object(settings))
}

fn row(m: &Value) -> Vec<String> {
    let progress = m["progress"].as_f64().map_or("-".into(), |p| format!("{p:.0} %"));
    vec![cell(&m["id"]), cell(&m["database"]), cell(&m["source"]), cell(&m["target"]), status_of(m), progress, bytes(&m["lagBytes"]), cell(&m["reason"])]
}

fn status_of(m: &Value) -> String {
    match m["step"].as_str() {
        Some(step) => format!("{} ({step})", cell(&m["status"])),
        None => cell(&m["status"]),
    }
}

fn status_line(m: &Value) -> String {
    let mut line = status_of(m);
    if let Some(p) = m["progress"].as_f64() {
        if m["status"] == "Seeding" {
            line.push_str(&format!(" {p:.0} %"));
            line.push_str(&seed_text(&m["seed"]));
        }
    }
    let live = matches!(m["status"].as_str(), Some("CatchingUp" | "ReadyForCutover" | "Stalled" | "Blocked"));
    if live && !m["lagBytes"].is_null() {
        line.push_str(&format!(", lag {}", bytes(&m["lagBytes"])));
    }
    if let Some(reason) = m["reason"].as_str() {
        line.push_str(&format!(": {reason}"));
    }
    line
}

/// ", 312.4 MiB of 755.0 MiB, about 1 min 20 s left" while seeding, from the API's `seed`.
fn seed_text(seed: &Value) -> String {
    if seed.is_null() {
        return String::new();
    }
    let mut text = format!(", {} of {}", bytes(&seed["copiedBytes"]), bytes(&seed["totalBytes"]));
    if let Some(eta) = seed["etaSeconds"].as_f64() {
        text.push_str(&format!(", about {} left", duration_text(eta)));
    }
    text
}

/// Seconds as a person reads a wait: "45 s", "3 min 5 s", "2 h 10 min".
fn duration_text(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

fn print_migration(m: &Value) {
    println!("Migration {} — {} from {} to {}", cell(&m["id"]), cell(&m["database"]), cell(&m["source"]), cell(&m["target"]));
    println!("Status: {}", status_line(m));
    if let Some(fix) = m["remediation"].as_str() {
        println!("Fix:    {fix}");
    }
    if let Some(ms) = m["cutover"]["writeDowntimeMs"].as_i64() {
        println!("Write downtime (fence to switch): {ms} ms");
    }
    for (field, label) in [("steps", "Cutover steps"), ("failbackSteps", "Failback steps")] {
        let steps: Vec<String> = m["cutover"][field]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| format!("{} {} ms", cell(&s["step"]).to_lowercase(), cell(&s["ms"])))
            .collect();
        if !steps.is_empty() {
            println!("{label}: {}", steps.join(", "));
        }
    }
    match m["cutover"]["reverseLink"].as_str() {
        Some("kept") if m["status"] == "Completed" => {
            println!("Reverse link: kept (failback possible; the target keeps WAL for the source until `milink migrate drop-reverse-link`)")
        }
        Some("dropping") => println!("Reverse link: being removed"),
        Some("dropped") => println!("Reverse link: removed (no failback)"),
        _ => {}
    }
    if m["cutover"]["verification"].is_object() {
        println!("Cutover verification: {}", verification_line(&m["cutover"]["verification"]));
    }
    if m["verification"]["last"].is_object() {
        println!("Last verification: {}", verification_line(&m["verification"]["last"]));
    }
    for change in m["schemaChanges"].as_array().into_iter().flatten() {
        let how = if change["carried"] == true { "carried" } else { "BLOCKS the cutover" };
        println!("Schema change: {} {} ({how})", cell(&change["object"]), cell(&change["change"]));
    }
    println!("\nHistory:");
    for entry in m["history"].as_array().into_iter().flatten() {
        println!("  {}  {:<16} {}", cell(&entry["at"]), cell(&entry["status"]), cell(&entry["message"]));
    }
}

/// One line for a verification report: method, coverage, what differs.
fn verification_line(v: &Value) -> String {
    let tables = v["tables"].as_array().map_or(0, Vec::len);
    let differing: Vec<String> = v["tables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["sourceRows"] != t["targetRows"] || t["differing"].as_array().is_some_and(|d| !d.is_empty()))
        .map(|t| {
            let keys: Vec<String> = t["differing"].as_array().into_iter().flatten().flat_map(|r| r["keys"].as_array().cloned().unwrap_or_default()).take(5).map(|k| cell(&k)).collect();
            format!("{} (source {} rows, target {}{})", cell(&t["table"]), cell(&t["sourceRows"]), cell(&t["targetRows"]), if keys.is_empty() { String::new() } else { format!("; keys {}", keys.join(", ")) })
        })
        .chain(v["differences"].as_array().into_iter().flatten().map(|d| format!("{}: {}", cell(&d["object"]), cell(&d["detail"]))))
        .collect();
    let coverage = if v["complete"] == true { "complete".to_owned() } else { format!("INCOMPLETE: {}", cell(&v["incompleteReason"])) };
    let verdict = if differing.is_empty() { format!("{tables} tables equal") } else { format!("DIFFERS: {}", differing.join("; ")) };
    format!("{} ({coverage}, {} rows compared): {verdict}", cell(&v["method"]), cell(&v["rowsCompared"]))
}

/// Runs `milink migrate verify`: requests a verification and, unless told not to wait, prints its report.
async fn verify(client: &Client, format: Format, id: &str, no_wait: bool) -> anyhow::Result<()> {
    let before = client.get(&format!("/api/migrations/{id}")).await?;
    let previous = before["verification"]["last"]["finishedAt"].clone();
    let m = client.post(&format!("/api/migrations/{id}/verify"), &json!({})).await?;
    if no_wait {
        return print_or(format, &m, || println!("verification of {} started", cell(&m["database"])));
    }
    let spinner = spinner(&format!("verifying {}", cell(&m["database"])), format);
    let m = loop {
        let m = client.get(&format!("/api/migrations/{id}")).await?;
        if m["verification"]["running"] != true {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    spinner.finish_and_clear();
    let report = &m["verification"]["last"];
    if report["finishedAt"] == previous {
        let why = m["verification"]["lastError"].as_str().map(str::to_owned).unwrap_or_else(|| status_line(&m));
        return Err(CliError::Ended(format!("verification of {id} did not finish: {why}")).into());
    }
    print_or(format, report, || println!("{}: {}", cell(&m["database"]), verification_line(report)))?;
    let clean = report["complete"] == true
        && report["differences"].as_array().is_none_or(Vec::is_empty)
        && report["tables"].as_array().into_iter().flatten().all(|t| t["sourceRows"] == t["targetRows"] && t["differing"].as_array().is_none_or(Vec::is_empty));
    if !clean && verification_line(report).contains("DIFFERS") {
        return Err(CliError::Differs(format!("the target differs from the source; {}", m["remediation"].as_str().unwrap_or("see milink migrate show"))).into());
    }
    Ok(())
}

async fn watch(client: &Client, format: Format, id: &str, until: Until, timeout: Duration) -> anyhow::Result<()> {
    let bar = ProgressBar::new(100);
    if format == Format::Table {
        bar.set_style(ProgressStyle::with_template("{spinner} [{bar:30}] {pos:>3}% {msg}").expect("static template").progress_chars("=> "));
        bar.enable_steady_tick(Duration::from_millis(120));
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = Instant::now();
    let mut saw_cutover = false;
    loop {
        let m = client.get(&format!("/api/migrations/{id}")).await?;
        let status = m["status"].as_str().unwrap_or_default().to_owned();
        saw_cutover |= status == "CuttingOver";
        let progress = match status.as_str() {
            "Seeding" => m["progress"].as_f64().unwrap_or(0.0),
            "Validating" | "Deploying" => 0.0,
            _ => 100.0,
        };
        bar.set_position(progress as u64);
        bar.set_message(status_line(&m));
        let done = match until {
            Until::Ready => matches!(status.as_str(), "ReadyForCutover" | "CuttingOver" | "Completed"),
            Until::Completed => status == "Completed",
            Until::Cancelled => status == "Cancelled",
            Until::FailedBack => status == "FailedBack",
        };
        // A failback that fails returns to Completed, which then ends a wait for FailedBack; a cutover
        // that was abandoned (drain timeout) leaves CuttingOver for another status, which ends a wait
        // for Completed.
        // A stalled cutover step still has its step: it is retried, not abandoned.
        // A cutover refused before the fence may never show CuttingOver to a poll: its reason says it ended
        // (a new cutover request clears the last one's reason).
        let refused = m["cutover"]["abandonedReason"].is_string();
        let abandoned = until == Until::Completed && (saw_cutover || refused) && status != "CuttingOver" && m["step"].is_null() && !done;
        let ended = (matches!(status.as_str(), "Failed" | "Cancelled" | "Completed" | "FailedBack") && !done) || abandoned;
        if done || ended {
            bar.finish_and_clear();
            print_or(format, &m, || println!("{}: {}", cell(&m["database"]), status_line(&m)))?;
            if abandoned {
                let why = cell(&m["cutover"]["abandonedReason"]);
                return Err(CliError::Ended(format!("cutover of {id} abandoned, now {status}: {why}")).into());
            }
            if ended {
                let fix = m["remediation"].as_str().map(|f| format!("\nfix: {f}")).unwrap_or_default();
                return Err(CliError::Ended(format!("migration {id} is {status}{fix}")).into());
            }
            return Ok(());
        }
        if started.elapsed() > timeout {
            bar.finish_and_clear();
            return Err(CliError::TimedOut(format!("migration {id} still {} after {} s", status_line(&m), timeout.as_secs())).into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `milink dead-letters`.
pub(crate) async fn dead_letters(client: &Client, format: Format) -> anyhow::Result<()> {
    let letters = client.get("/api/deadletters").await?;
    print_or(format, &letters, || {
        let rows: Vec<Vec<String>> = letters["deadLetters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| vec![cell(&l["id"]), cell(&l["stage"]), cell(&l["deliveries"]), cell(&l["lastError"]), cell(&l["deadAt"])])
            .collect();
        output::table(&["ID", "STAGE", "DELIVERIES", "LAST ERROR", "DEAD AT"], &rows);
    })
}

/// Polls an assessment until it is no longer Running; returns its report.
pub(crate) async fn finished_report(client: &Client, id: &str) -> anyhow::Result<Value> {
    loop {
        let report = client.get(&format!("/api/assessments/{id}")).await?;
        if report["status"] != "Running" {
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) fn print_or(format: Format, value: &Value, table: impl FnOnce()) -> anyhow::Result<()> {
    match format {
        Format::Json => output::json(value),
        Format::Table => table(),
    }
    Ok(())
}

fn spinner(message: &str, format: Format) -> ProgressBar {
    if format == Format::Json {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(message.to_owned());
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}
