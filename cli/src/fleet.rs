//! `milink fleet assess|apply|status|approve|cutover|cancel`: fleet plans (`/api/fleets`), waves of
//! migrations with an order and approval gates (the rules: `milink_core::fleet`). The plan is a TOML
//! file; the command sends it as JSON, so the API checks it exactly as it checks a plan sent by a script.
use crate::batch::report;
use crate::client::{CliError, Client};
use crate::commands::{finished_report, print_or};
use crate::output::{self, cell, Format};
use clap::Subcommand;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// `milink fleet ...`.
#[derive(Subcommand)]
pub(crate) enum Fleet {
    /// Assess every source connection the plan names (one assessment each, waited for).
    Assess {
        /// The plan (TOML).
        file: PathBuf,
    },
    /// Apply a plan: every migration of every wave is created; the first wave starts, later waves wait
    /// for their gate (idempotent: a database already migrating keeps its migration).
    Apply {
        /// The plan (TOML).
        file: PathBuf,
    },
    /// A plan's status (every plan without a name): counts, progress, lag, ETA, cost, and each wave.
    Status {
        /// The plan's name.
        name: Option<String>,
    },
    /// Approve a wave: it starts once the earlier waves let it, even past a failed earlier migration.
    Approve {
        /// The plan's name.
        name: String,
        /// The wave's name.
        wave: String,
    },
    /// Cut over every ReadyForCutover migration of a wave (or of the whole plan), with one confirmation.
    Cutover {
        /// The plan's name.
        name: String,
        /// Only this wave.
        #[arg(long)]
        wave: Option<String>,
        /// Confirm that application traffic to every selected source database is stopped (required).
        #[arg(long)]
        confirm_traffic_stopped: bool,
    },
    /// Cancel every unfinished migration of a wave (or of the whole plan).
    Cancel {
        /// The plan's name.
        name: String,
        /// Only this wave.
        #[arg(long)]
        wave: Option<String>,
    },
}

fn read_plan(file: &PathBuf) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(file).map_err(|e| CliError::Usage(format!("cannot read the plan {}: {e}", file.display())))?;
    toml::from_str::<Value>(&text).map_err(|e| CliError::Usage(format!("{} is not valid TOML: {e}", file.display())).into())
}

/// Runs `milink fleet ...`.
pub(crate) async fn run(client: &Client, format: Format, command: Fleet) -> anyhow::Result<()> {
    match command {
        Fleet::Assess { file } => assess(client, format, &read_plan(&file)?).await,
        Fleet::Apply { file } => {
            let answer = client.post("/api/fleets", &read_plan(&file)?).await?;
            print_or(format, &answer, || {
                let rows: Vec<Vec<String>> = list(&answer["migrations"])
                    .map(|m| vec![cell(&m["wave"]), cell(&m["database"]), cell(&m["source"]), cell(&m["target"]), cell(&m["status"]), cell(&m["id"]), if m["existing"] == true { "existing".into() } else { "new".into() }])
                    .collect();
                output::table(&["WAVE", "DATABASE", "SOURCE", "TARGET", "STATUS", "ID", ""], &rows);
                println!("\nplan {} applied; watch it with: milink fleet status {}", cell(&answer["name"]), cell(&answer["name"]));
            })
        }
        Fleet::Status { name: Some(name) } => {
            let plan = client.get(&format!("/api/fleets/{name}")).await?;
            print_or(format, &plan, || print_status(&plan, true))
        }
        Fleet::Status { name: None } => {
            let all = client.get("/api/fleets").await?;
            print_or(format, &all, || {
                for plan in list(&all["fleets"]) {
                    print_status(plan, false);
                    println!();
                }
            })
        }
        Fleet::Approve { name, wave } => {
            let answer = client.post(&format!("/api/fleets/{name}/approve"), &json!({ "wave": wave })).await?;
            report(format, &answer)
        }
        Fleet::Cutover { name, wave, confirm_traffic_stopped } => {
            let body = json!({ "wave": wave, "confirmTrafficStopped": confirm_traffic_stopped });
            report(format, &client.post(&format!("/api/fleets/{name}/cutover"), &body).await?)
        }
        Fleet::Cancel { name, wave } => report(format, &client.post(&format!("/api/fleets/{name}/cancel"), &json!({ "wave": wave })).await?),
    }
}

fn list(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

fn counts(value: &Value) -> String {
    value.as_object().map(|c| c.iter().map(|(s, n)| format!("{s} {n}")).collect::<Vec<_>>().join(", ")).unwrap_or_default()
}

fn print_status(plan: &Value, with_migrations: bool) {
    println!("plan {}: {} migrations ({}), progress {} %", cell(&plan["name"]), cell(&plan["total"]), counts(&plan["counts"]), cell(&plan["progressPercent"]));
    let eta = plan["seedingEtaSeconds"].as_f64().map_or("-".into(), |s| format!("{s:.0} s"));
    let cost = plan["estimatedCost"]["monthlyCostUsd"].as_f64().map_or("unknown (assess every source)".into(), |c| format!("{c:.0} USD/month"));
    println!("lag {} bytes (max {} s), seeding ETA {eta}, estimated cost {cost}", cell(&plan["lagBytes"]), cell(&plan["maxLagSeconds"]));
    let rows: Vec<Vec<String>> = list(&plan["waves"])
        .map(|w| {
            let gate = match (w["needsApproval"] == true, w["approval"] == true, w["approved"] == true) {
                (true, _, _) => "needs approval",
                (false, true, true) => "approved",
                (false, true, false) => "approval",
                (false, false, _) => "-",
            };
            vec![cell(&w["number"]), cell(&w["name"]), cell(&w["state"]), gate.into(), counts(&w["counts"]), cell(&w["progressPercent"]), cell(&w["reason"])]
        })
        .collect();
    output::table(&["#", "WAVE", "STATE", "GATE", "STATUS", "PROGRESS %", "WHY IT WAITS"], &rows);
    if with_migrations {
        println!();
        let rows: Vec<Vec<String>> = list(&plan["migrations"])
            .map(|m| vec![cell(&m["database"]), cell(&m["source"]), cell(&m["target"]), cell(&m["status"]), cell(&m["progress"]), cell(&m["lagBytes"]), cell(&m["reason"])])
            .collect();
        output::table(&["DATABASE", "SOURCE", "TARGET", "STATUS", "PROGRESS %", "LAG BYTES", "REASON"], &rows);
    }
}

/// Assesses each source the plan names, one after the other, and prints one line per source.
async fn assess(client: &Client, format: Format, plan: &Value) -> anyhow::Result<()> {
    let sources: BTreeSet<String> =
        list(&plan["waves"]).flat_map(|w| list(&w["links"])).filter_map(|l| l["source"].as_str().map(str::to_owned)).collect();
    if sources.is_empty() {
        return Err(CliError::Usage("the plan names no source: add [[waves.links]] with a source".into()).into());
    }
    let mut reports = Vec::new();
    for source in &sources {
        let started = client.post("/api/assessments", &json!({ "connection": source })).await?;
        reports.push(finished_report(client, &cell(&started["id"])).await?);
    }
    print_or(format, &json!({ "assessments": reports }), || {
        let rows: Vec<Vec<String>> = reports
            .iter()
            .map(|r| {
                let dbs: Vec<&Value> = list(&r["databases"]).collect();
                let not_ready = dbs.iter().filter(|d| d["readiness"] == "NotReady").map(|d| cell(&d["name"])).collect::<Vec<_>>();
                vec![cell(&r["connection"]), cell(&r["status"]), cell(&r["id"]), dbs.len().to_string(), if not_ready.is_empty() { "-".into() } else { not_ready.join(", ") }]
            })
            .collect();
        output::table(&["SOURCE", "STATUS", "ASSESSMENT", "DATABASES", "NOT READY"], &rows);
    })?;
    if let Some(failed) = reports.iter().find(|r| r["status"] == "Failed") {
        return Err(CliError::Ended(format!("assessment of {} failed: {}", cell(&failed["connection"]), cell(&failed["error"]["message"]))).into());
    }
    Ok(())
}
