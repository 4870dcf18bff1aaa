//! `milink batch cutover|cancel`: one request for many migrations, selected by source, target or ids
//! (`POST /api/batch/...`). Prints what happened to each; exits 4 when any was refused, so a script
//! notices, while the others still ran.
use crate::client::{CliError, Client};
use crate::output::{self, cell, Format};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// Which migrations.
#[derive(Args)]
pub(crate) struct Selection {
    /// Only migrations from this source connection.
    #[arg(long)]
    source: Option<String>,
    /// Only migrations to this target connection.
    #[arg(long)]
    target: Option<String>,
    /// Only these migrations (repeat).
    #[arg(long = "id")]
    ids: Vec<String>,
}

/// `milink batch ...`.
#[derive(Subcommand)]
pub(crate) enum Batch {
    /// Cut over every selected migration that is ReadyForCutover, with one confirmation. Stop
    /// application traffic to every selected source database first.
    Cutover {
        #[command(flatten)]
        selection: Selection,
        /// Confirm that application traffic to every selected source database is stopped (required).
        #[arg(long)]
        confirm_traffic_stopped: bool,
    },
    /// Cancel every selected migration that has not finished.
    Cancel {
        #[command(flatten)]
        selection: Selection,
    },
}

/// Runs `milink batch ...`.
pub(crate) async fn run(client: &Client, format: Format, command: Batch) -> anyhow::Result<()> {
    let (path, selection, confirm) = match command {
        Batch::Cutover { selection, confirm_traffic_stopped } => ("/api/batch/cutover", selection, Some(confirm_traffic_stopped)),
        Batch::Cancel { selection } => ("/api/batch/cancel", selection, None),
    };
    let mut body = json!({});
    if let Some(source) = selection.source {
        body["source"] = json!(source);
    }
    if let Some(target) = selection.target {
        body["target"] = json!(target);
    }
    if !selection.ids.is_empty() {
        body["ids"] = json!(selection.ids);
    }
    if let Some(confirm) = confirm {
        body["confirmTrafficStopped"] = json!(confirm);
    }
    report(format, &client.post(path, &body).await?)
}

/// Prints what happened to each migration of a batch answer (`results`); exits 4 when any was refused
/// (the others went ahead). Also for the fleet commands, whose answers have the same `results`.
pub(crate) fn report(format: Format, answer: &Value) -> anyhow::Result<()> {
    if matches!(format, Format::Json) {
        output::json(answer);
    } else {
        let rows: Vec<Vec<String>> = answer["results"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| vec![cell(&r["id"]), cell(&r["database"]), cell(&r["source"]), cell(&r["outcome"]), cell(&r["status"]), cell(&r["message"])])
            .collect();
        output::table(&["ID", "DATABASE", "SOURCE", "OUTCOME", "STATUS", "MESSAGE"], &rows);
    }
    let refused = answer["results"].as_array().into_iter().flatten().filter(|r| r["outcome"] == "refused").count();
    if refused > 0 {
        return Err(CliError::Refused { status: 200, code: "batch_partly_refused".into(), message: format!("{refused} of the selected migrations were refused (see above); the others went ahead") }.into());
    }
    Ok(())
}
