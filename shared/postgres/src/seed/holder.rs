//! The snapshot holder: the replication connection that creates the link's slot with an exported snapshot
//! and keeps that snapshot alive while the chunks are copied.
//!
//! An exported snapshot lives only as long as the session that exported it stays idle: the next command on
//! that connection, or its end, and the snapshot is gone. tokio-postgres cannot open a replication-mode
//! connection (no `replication=database` startup parameter), and a connection owned by milink dies with
//! milink. So the holder is `psql` on a `replication=database` connection, fed by a shell loop that keeps
//! its input open while a flag file exists, in its own process group: a SIGKILL of milink leaves it (and
//! the snapshot) alive, and a restarted milink finds it by its `application_name` and carries on with the
//! chunks that are left. It lives at most [`HOLD_SECONDS`]; [`stop`] ends it from the server side (so any
//! milink host can) and removes the flag file (so the local processes exit too).
//!
//! The password reaches psql through `PGPASSWORD` only; the script it runs holds no secret.
use crate::connect::{Server, Session};
use crate::schema;
use milink_core::EngineError;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// The longest a holder keeps a snapshot (and the source's xmin horizon with it) without milink.
const HOLD_SECONDS: u64 = 24 * 3600;
/// Creating a logical slot waits for the transactions running at that moment to end.
const CREATE_TIMEOUT: Duration = Duration::from_secs(600);

/// The slot's start and the exported snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Exported {
    pub(crate) consistent_point: String,
    pub(crate) snapshot: String,
}

/// The `application_name` of a link's holder, how a restarted milink finds it on the source.
pub(crate) fn application_name(slot: &str) -> String {
    format!("{slot}_snapshot")
}

fn flag_file(slot: &str) -> PathBuf {
    std::env::temp_dir().join(format!("milink-seed-{slot}.hold"))
}

/// Creates `slot` (pgoutput) on the source with an exported snapshot, held by a detached psql.
pub(crate) async fn start(source: &Server, database: &str, slot: &str, major: i32) -> Result<Exported, EngineError> {
    let flag = flag_file(slot);
    std::fs::write(&flag, b"").map_err(|e| {
        EngineError::transient("seed_holder_failed", format!("cannot write {}: {e}", flag.display()), "check the temporary directory")
    })?;
    let conninfo = format!("{} replication=database application_name={}", source.conninfo_for_tools(database), application_name(slot));
    // `\o |cat` then `\o`: psql's own stdout is block-buffered on a pipe; closing the \o pipe flushes the one
    // result line without sending the server anything, so the snapshot stays exported.
    let script = format!("\\o |cat\nCREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput (SNAPSHOT 'export');\n\\o\n");
    let feeder = format!(
        "{{ printf '%s' \"$MILINK_SEED_SCRIPT\"; i=0; while [ -e \"$MILINK_SEED_FLAG\" ] && [ $i -lt {HOLD_SECONDS} ]; do sleep 1; i=$((i+1)); done; }} \
         | exec \"$MILINK_SEED_PSQL\" -X -q -At -v ON_ERROR_STOP=1 --dbname=\"$MILINK_SEED_DSN\""
    );
    let mut command = schema::command(PathBuf::from("sh"), source);
    command
        .arg("-c")
        .arg(feeder)
        .env("MILINK_SEED_SCRIPT", script)
        .env("MILINK_SEED_FLAG", &flag)
        .env("MILINK_SEED_PSQL", schema::program("psql", major))
        .env("MILINK_SEED_DSN", conninfo)
        .kill_on_drop(false)
        .process_group(0);
    let mut child = command.spawn().map_err(|e| {
        EngineError::definite(
            "client_tools_missing",
            format!("cannot run psql for the seeding snapshot: {e}"),
            "Install the PostgreSQL client tools on the machine running milink, or set seedParallel to false.",
        )
    })?;
    let mut unfinished = Unfinished { group: child.id(), flag: flag.clone() };
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let mut line = String::new();
    let read = tokio::time::timeout(CREATE_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
    let fields: Vec<&str> = line.trim().split('|').collect();
    if let (Ok(Ok(_)), [_, lsn, snapshot, _]) = (&read, fields.as_slice()) {
        tracing::info!(slot, consistent_point = lsn, "seeding slot created with an exported snapshot");
        // Reap it in the background when it ends; nothing of it is read any more.
        let exported = Exported { consistent_point: (*lsn).to_owned(), snapshot: (*snapshot).to_owned() };
        tokio::spawn(async move { drop(child.wait().await) });
        unfinished.group = None;
        return Ok(exported);
    }
    let _ = std::fs::remove_file(&flag);
    let _ = child.start_kill();
    let mut detail = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stderr.read_to_string(&mut detail)).await;
    let detail = detail.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no answer").to_owned();
    Err(EngineError::transient(
        "seed_snapshot_failed",
        format!("{}: creating the seeding slot {slot} with an exported snapshot: {detail}", source.place().label()),
        "Give milink's role REPLICATION and a pg_hba.conf entry for replication connections from milink's host, \
         with a free WAL sender and slot on the source; or set seedParallel to false to seed with native table sync.",
    ))
}

/// The holder's process group while `start` has not returned it: killed if `start` fails or is dropped
/// (its seeder stopped because the link is being removed), so no psql goes on to create the slot after
/// the removal dropped it.
struct Unfinished {
    group: Option<u32>,
    flag: PathBuf,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        let Some(group) = self.group else { return };
        let _ = std::fs::remove_file(&self.flag);
        // `kill` rather than a signal call: the workspace forbids unsafe code, and this runs rarely.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Whether the holder of `slot` still holds `snapshot`: its walsender is connected and the snapshot imports.
pub(crate) async fn alive(admin: &Session, source_db: &Session, slot: &str, snapshot: &str) -> Result<bool, EngineError> {
    let holder = admin
        .maybe_row(
            "looking for the seeding snapshot's holder",
            "SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND backend_type = 'walsender'",
            &[&application_name(slot)],
        )
        .await?;
    if holder.is_none() {
        return Ok(false);
    }
    let probe = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}; ROLLBACK",
        crate::sql::quote_literal(snapshot)
    );
    match source_db.try_run(&probe).await {
        Ok(()) => Ok(true),
        Err(_) => {
            let _ = source_db.try_run("ROLLBACK").await;
            Ok(false)
        }
    }
}

/// Ends the holder of `slot`: its walsender (on whichever host it runs) and, on this host, its processes.
pub(crate) async fn stop(admin: &Session, slot: &str) -> Result<(), EngineError> {
    let _ = std::fs::remove_file(flag_file(slot));
    let name = application_name(slot);
    for _ in 0..50 {
        let rows = admin
            .rows(
                "ending the seeding snapshot's holder",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND backend_type = 'walsender'",
                &[&name],
            )
            .await?;
        if rows.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(EngineError::transient(
        "seed_holder_busy",
        format!("{}: the seeding snapshot's holder {name} does not end", admin.place().label()),
        "milink retries; if it persists, end that walsender with pg_terminate_backend.",
    ))
}
