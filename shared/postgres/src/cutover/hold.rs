//! The synchronous hold: for the last seconds before the fence, the source's commits wait until the link
//! has applied them, so the fence finds the target caught up and the drain has (almost) nothing to wait for.
//!
//! Why: under a write load the link's apply worker runs behind the source (on this project's bench, about
//! 0.4 s of changes at pgbench scale 50 with 4 clients). A fence stops the writes, then the drain waits
//! for the worker to apply that backlog: write downtime that a faster fence cannot remove, and the hand
//! recipe (read-only + terminate, wait for the slot) pays it too. Azure SQL Managed Instance's link does
//! the same before its failover: it switches the replica to synchronous commit, then fails over once the
//! positions match. Here the application's writes are slowed, never refused, for the hold's few seconds
//! (the catch-up rounds of the verification before the fence, then the fence): clients see latency.
//!
//! How: `ALTER SYSTEM SET synchronous_standby_names = '"<link>"'` (the apply worker's walsender is named
//! after its subscription) and `synchronous_commit = 'remote_apply'` (commits wait for the subscriber's
//! reported *applied* position, which its apply worker sends after each batch; `on` would wait for the
//! subscriber's WAL flush, which an asynchronous apply worker reports only every `wal_writer_delay`),
//! then `pg_reload_conf()`, then wait until the walsender reports `sync_state = 'sync'`. The fence's own
//! statements run with `synchronous_commit = local` and the hold is released right after the fence's
//! position is written: nothing on the fenced database commits any more.
//!
//! Server-wide, so with care:
//! - Used only where milink can see and undo it exactly: the role may `ALTER SYSTEM` and read
//!   `pg_file_settings`, and `postgresql.auto.conf` sets neither setting (milink would otherwise overwrite
//!   a DBA's choice; a server with synchronous standbys of its own keeps them). Otherwise the cutover
//!   goes on without a hold (the drain waits for the backlog, as before), and the log says why.
//! - Commits in the server's other databases wait for the same walsender, which confirms their positions
//!   with a keepalive: a round trip each, for the hold's seconds.
//! - A hold must never make the application wait long: a link that stops applying (its target blocked
//!   by a lock, its walsender gone) would make every commit on the server wait. While it is engaged, a
//!   watcher in this process looks every [`WATCH_EVERY`]: once any commit on the server has waited
//!   [`MAX_COMMIT_WAIT`] for the link (`wait_event = 'SyncRep'`), or the hold has lasted [`LIMIT`], it
//!   releases the hold (the waiting commits then return at once; they were committed locally all along).
//! - A hold must never outlive its cutover. It is released by the fence, by a fence that fails (a refused
//!   pooler PAUSE included), by an unfence, by the watcher, at the start of every verification before the
//!   fence (one left by a crashed attempt), and before the switch or a removal of the link: those two fail
//!   rather than remove a walsender that a hold still names (`release_or_fail`). The setting names the
//!   link, so a restarted milink knows a hold is its own. Failback engages it on the target's server for
//!   the reverse link and releases it the same ways (`reverse`). It is not engaged when the walsender is
//!   not streaming, and released at once if it does not become synchronous within [`ENGAGE_WAIT`].
//!   Engaging and releasing on one server run one at a time (an advisory lock), so two migrations of one
//!   source cutting over at once cannot interleave their edits of `postgresql.auto.conf`.
use crate::connect::{Server, Session};
use crate::sql::quote_literal;
use milink_core::ports::LinkPlan;
use milink_core::EngineError;
use std::time::{Duration, Instant};

/// A hold left engaged this long (a step that hangs) is released by its watcher.
pub(crate) const LIMIT: Duration = Duration::from_secs(60);
/// A commit that has waited this long for the link ends the hold.
pub(crate) const MAX_COMMIT_WAIT: Duration = Duration::from_millis(1000);
/// How often the watcher looks.
const WATCH_EVERY: Duration = Duration::from_millis(50);
/// How long the walsender has to report itself synchronous after the reload.
const ENGAGE_WAIT: Duration = Duration::from_secs(2);

/// The value of `synchronous_standby_names` that names the link's walsender.
fn standby_names(link: &str) -> String {
    format!("\"{link}\"")
}

/// What `postgresql.auto.conf` sets now (read from the file, not from this session's settings: a setting
/// written but not yet reloaded counts).
async fn auto_conf(source: &Session) -> Result<(Option<String>, Option<String>), EngineError> {
    let rows = source
        .rows(
            "reading the source's ALTER SYSTEM settings",
            "SELECT name, setting FROM pg_file_settings
             WHERE sourcefile LIKE '%postgresql.auto.conf' AND name IN ('synchronous_standby_names', 'synchronous_commit')
             ORDER BY seqno",
            &[],
        )
        .await?;
    let (mut names, mut commit) = (None, None);
    for row in rows {
        let (name, setting): (String, Option<String>) = (row.get(0), row.get(1));
        match name.as_str() {
            "synchronous_standby_names" => names = setting,
            _ => commit = setting,
        }
    }
    Ok((names, commit))
}

/// Engages the hold for `plan`'s link; true when the source's commits now wait for the link. Never an
/// error: without a hold the cutover is as safe, only its drain waits longer (the log says why).
pub(crate) async fn engage(plan: &LinkPlan) -> bool {
    let link = plan.link_name();
    let started = Instant::now();
    match try_engage(plan, &link).await {
        Ok(Ok(())) => {
            tracing::info!(ms = started.elapsed().as_millis() as u64, "synchronous hold engaged: the source's commits wait for the link until the fence");
            let plan = plan.clone();
            tokio::spawn(async move { watch(&plan).await });
            true
        }
        Ok(Err(why)) => {
            tracing::info!(why, "no synchronous hold before the fence: the drain waits for the link's backlog");
            release(plan).await; // one of ours left by a crash, found but not engaged again
            false
        }
        Err(error) => {
            tracing::warn!(error = %error.message, "no synchronous hold before the fence: the drain waits for the link's backlog");
            release(plan).await;
            false
        }
    }
}

/// Ok(Err(why)) when the hold is not for this server; Err when a statement failed.
async fn try_engage(plan: &LinkPlan, link: &str) -> Result<Result<(), &'static str>, EngineError> {
    let source = Server::new("source", &plan.source)?.connect(None).await?;
    serialize(&source).await?;
    let (names, commit) = match auto_conf(&source).await {
        Ok(settings) => settings,
        Err(_) => return Ok(Err("the source role cannot read pg_file_settings (superuser or a grant on it is needed)")),
    };
    let ours = standby_names(link);
    match (names.as_deref(), commit.as_deref()) {
        (None, None) => {}
        (Some(names), _) if names == ours => {} // a hold of ours left by a restart: engaged again below
        _ => return Ok(Err("ALTER SYSTEM already sets synchronous_standby_names or synchronous_commit on the source")),
    }
    let configured: String = source.row("reading the source's standbys", "SELECT current_setting('synchronous_standby_names')", &[]).await?.get(0);
    if !configured.is_empty() && configured != ours {
        return Ok(Err("the source already has synchronous standbys of its own"));
    }
    if !streaming(&source, link).await? {
        return Ok(Err("the link's walsender is not streaming"));
    }
    let set = [
        format!("ALTER SYSTEM SET synchronous_standby_names = {}", quote_literal(&ours)),
        "ALTER SYSTEM SET synchronous_commit = 'remote_apply'".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ];
    for statement in &set {
        if let Err(error) = source.try_run(statement).await {
            tracing::debug!(error = %error, "ALTER SYSTEM refused");
            let _ = reset(&source).await; // in this session: another would wait for this one's lock
            return Ok(Err("the source role may not ALTER SYSTEM"));
        }
    }
    let deadline = Instant::now() + ENGAGE_WAIT;
    loop {
        let sync = source
            .maybe_row(
                "waiting for the link to become synchronous",
                "SELECT 1 FROM pg_stat_replication WHERE application_name = $1 AND sync_state = 'sync'",
                &[&link],
            )
            .await?;
        if sync.is_some() {
            return Ok(Ok(()));
        }
        if Instant::now() >= deadline {
            reset(&source).await?;
            return Ok(Err("the link's walsender did not become synchronous in time"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Releases the hold once a commit has waited too long for the link or the hold has lasted too long; ends
/// when the hold is gone (released by the fence or anyone else).
async fn watch(plan: &LinkPlan) {
    let started = Instant::now();
    let ours = standby_names(&plan.link_name());
    let session = match Server::new("source", &plan.source) {
        Ok(server) => server.connect(None).await,
        Err(error) => Err(error),
    };
    let Ok(session) = session else {
        tracing::warn!("cannot watch the synchronous hold: released");
        release(plan).await;
        return;
    };
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let row = session
            .row(
                "watching the synchronous hold",
                "SELECT current_setting('synchronous_standby_names'),
                        coalesce(extract(epoch FROM max(clock_timestamp() - query_start) FILTER (WHERE wait_event = 'SyncRep')), 0)::float8
                 FROM pg_stat_activity",
                &[],
            )
            .await;
        let (names, waited) = match row {
            Ok(row) => (row.get::<_, String>(0), Duration::from_secs_f64(row.get::<_, f64>(1).max(0.0))),
            Err(error) => {
                tracing::warn!(error = %error.message, "cannot watch the synchronous hold: released");
                release(plan).await;
                return;
            }
        };
        if names != ours {
            return; // released
        }
        if waited >= MAX_COMMIT_WAIT {
            if release(plan).await {
                tracing::warn!(waited_ms = waited.as_millis() as u64, "synchronous hold released: a commit on the source waited too long for the link (is the target blocked?)");
            }
            return;
        }
        if started.elapsed() >= LIMIT {
            if release(plan).await {
                tracing::warn!(limit_s = LIMIT.as_secs(), "synchronous hold released by its time limit: the cutover's fence did not come");
            }
            return;
        }
    }
}

async fn streaming(source: &Session, link: &str) -> Result<bool, EngineError> {
    let row = source
        .maybe_row(
            "looking for the link's walsender",
            "SELECT 1 FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'",
            &[&link],
        )
        .await?;
    Ok(row.is_some())
}

/// Takes both settings back out of `postgresql.auto.conf` and reloads (the caller knows the hold is ours).
async fn reset(source: &Session) -> Result<(), EngineError> {
    for statement in ["ALTER SYSTEM RESET synchronous_standby_names", "ALTER SYSTEM RESET synchronous_commit", "SELECT pg_reload_conf()"] {
        source.run("releasing the synchronous hold", statement).await?;
    }
    Ok(())
}

/// Engages and releases on one server run one at a time (two migrations of one source cutting over at
/// once would otherwise interleave their reads and writes of `postgresql.auto.conf`). Released with the
/// session.
async fn serialize(source: &Session) -> Result<(), EngineError> {
    // "mlnkhold"
    source.row("waiting for other synchronous holds", "SELECT pg_advisory_lock($1)", &[&0x6d6c_6e6b_686f_6c64_i64]).await?;
    Ok(())
}

/// Releases `plan`'s hold if the source has one, or fails: for the steps that remove the link's walsender
/// (the switch, removing the link), which must not run while a hold names it.
pub(crate) async fn release_or_fail(plan: &LinkPlan) -> Result<(), EngineError> {
    try_release(plan).await.map(|_| ())
}

/// Releases `plan`'s hold if the source has one (safe to repeat, and to call when there is none); true
/// when it released one. Never an error: a hold that cannot be released is logged loudly, with the fix.
pub(crate) async fn release(plan: &LinkPlan) -> bool {
    let link = plan.link_name();
    match try_release(plan).await {
        Ok(released) => {
            if released {
                tracing::info!("synchronous hold released");
            }
            released
        }
        Err(error) => {
            tracing::error!(
                error = %error.message, link,
                "could not release the synchronous hold: the source's commits wait for the link; run ALTER SYSTEM RESET synchronous_standby_names; ALTER SYSTEM RESET synchronous_commit; SELECT pg_reload_conf(); on the source"
            );
            false
        }
    }
}

async fn try_release(plan: &LinkPlan) -> Result<bool, EngineError> {
    let link = plan.link_name();
    let result = async {
        let source = Server::new("source", &plan.source)?.connect(None).await?;
        serialize(&source).await?;
        let (names, _) = match auto_conf(&source).await {
            Ok(settings) => settings,
            Err(_) => return Ok(false), // not readable: never engaged by milink either
        };
        if names.as_deref() != Some(standby_names(&link).as_str()) {
            return Ok(false);
        }
        reset(&source).await?;
        Ok::<bool, EngineError>(true)
    }
    .await;
    result
}
