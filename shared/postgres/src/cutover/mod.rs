//! The fence (stop writes on the source), its undo, and the positions that prove the drain.
//!
//! What `fence` does, in order, all from one session on the database itself, holding an advisory lock there
//! so that two migrations of the database (fan-out to two targets) fence and unfence one at a time:
//! 1. In one transaction (`settings`): `ALTER DATABASE <db> SET default_transaction_read_only = on`, the
//!    same for every role that has its own `default_transaction_read_only` for this database or globally
//!    (`ALTER ROLE <r> IN DATABASE <db>`: a role setting beats the database's; pg_easy_replicate fenced one
//!    role, its #164), and this migration's key `milink.fence_<link>` on each entry, holding the value from
//!    before the first fence. Then the server's `clock_timestamp()` is the cutoff: every backend forked
//!    after it starts read-only.
//! 2. Disables the database's own enabled subscriptions (the source may itself subscribe to another
//!    database; apply workers ignore read-only) and waits until their workers are gone (`subscriptions`).
//! 3. Ends every session on the database that started before the cutoff, waiting for logins that were in
//!    progress at the commit to show up first, and refuses to finish while prepared transactions for the
//!    database are pending: either could commit after the fence (`sessions`). Background workers connected
//!    to the database (pg_cron, an extension's scheduler) are ended too; when they restart they read `on`.
//! 4. Writes a logical message (so the walsender has something to send past the fence) and returns its end:
//!    every change committed before the fence lies before that position.
//!
//! What it does not stop: a client that connects after the cutoff and turns read-only off itself
//! (`SET default_transaction_read_only = off`, `BEGIN READ WRITE`), superusers above all.
//! `default_transaction_read_only` is a default, not a permission. Such a client is bypassing the fence on
//! purpose; keep it out with pg_hba.conf or the connection pooler (pgbouncer PAUSE) during the cutover.
//! Superuser sessions that reconnect are named in the fence's log line, and the fence fails when one of them
//! is writing. A role given its own `default_transaction_read_only = off` after the fence is not covered
//! (the next fence covers it). It also does not touch other databases on the server, and it leaves
//! walsenders and autovacuum alone. The last unfence ends the sessions that logged in while the database
//! was fenced: they read `on` at login and would otherwise stay read-only by default until they reconnect.
//!
//! Two migrations of one database (fan-out) each keep their own key, so neither's unfence lifts the other's
//! fence: the database stays read-only while any key remains, and the unfence removing the last key restores
//! the original value and enables the subscriptions the fence disabled (see `settings` and `subscriptions`).
//! After a completed cutover nothing unfences, so the source stays read-only for applications. A database
//! fenced by an older milink (one `milink.saved_read_only` key) is still unfenced right (`settings`).
//!
//! Crash safety: each fence's and each unfence's settings change is one transaction, and so is each change
//! to the subscriptions together with its note. A crash after the settings and before the subscriptions
//! leaves a fenced database whose subscriptions were never disabled: a re-fence disables them; an unfence
//! finds no note and leaves them enabled, as they were. The last unfence enables the subscriptions (and drops
//! the note) before it restores the settings, so a crash between leaves the key that makes a re-run finish.
pub(crate) mod hold;
pub(crate) mod positions;
mod sessions;
mod settings;
mod subscriptions;

pub(crate) use positions::{fenced_at, forget, kept_sessions, positions};

use crate::connect::{Server, Session};
use crate::connect::{subscription_oid, writable};
use crate::sql::quote_ident;
use milink_core::migration::Position;
use milink_core::ports::LinkPlan;
use milink_core::EngineError;
use std::time::Instant;
use tokio_postgres::types::PgLsn;

/// A transaction that flushes the server's WAL up to its own commit record when it commits, locally,
/// never waiting for a synchronous standby. Taking an xid is not enough: PostgreSQL flushes at commit only
/// when the transaction itself wrote WAL, so `BEGIN; SELECT txid_current(); COMMIT` leaves its commit
/// record (and everything before it) to the WAL writer, up to `wal_writer_delay` (200 ms) later; measured,
/// that was the 0–200 ms the drain waited after the fence. A transactional logical message is WAL the
/// transaction wrote. Its readers: pgoutput sends messages only to a subscriber that asks (milink's never
/// do), the verification's tracking reads only its own prefix; another logical decoding consumer that
/// asks for messages sees these, prefix `milink`, during cutovers (one per drain poll at most).
/// One query string, so an implicit transaction block: `SET LOCAL` holds in it, and a failure ends it.
pub(crate) const FLUSH_WAL: &str = "SET LOCAL synchronous_commit = local; SELECT pg_logical_emit_message(true, 'milink', 'flush')";

/// A session on the fenced database itself: ALTER SUBSCRIPTION only finds the subscriptions of the
/// session's database, and an advisory lock taken there excludes every milink fencing that database,
/// whatever maintenance database its url names.
async fn admin_session(plan: &LinkPlan) -> Result<Session, EngineError> {
    let source = Server::new("source", &plan.source)?;
    let admin = source.connect(Some(plan.database.as_str())).await?;
    // The database may be fenced already; milink's own statements must still run. Its commits must not
    // wait for the link (`hold`): the fence's settings would otherwise wait for the link's backlog.
    writable(&admin).await?;
    admin.run("making the fence's commits local", "SET synchronous_commit = local").await?;
    Ok(admin)
}

/// Fence sessions opened ahead, per link (see [`open_fence_session`]).
fn opened() -> &'static std::sync::Mutex<std::collections::HashMap<String, Session>> {
    static OPENED: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, Session>>> = std::sync::OnceLock::new();
    OPENED.get_or_init(Default::default)
}

/// Opens the fence's session ahead of the fence (after the verification before the fence, outside the
/// window): a login under load took ~20 ms of a 50 ms fence. The fence uses it if it is still open, and
/// never ends it (it spares its own session). Never an error: the fence then logs in itself.
pub(crate) async fn open_fence_session(plan: &LinkPlan) {
    if let Ok(admin) = admin_session(plan).await {
        opened().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(plan.link_name(), admin);
    }
}

/// Closes the fence session opened ahead, if the fence did not take it (a failed pooler pause).
pub(crate) fn close_fence_session(plan: &LinkPlan) {
    opened().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&plan.link_name());
}

async fn database_oid(admin: &Session, database: &str) -> Result<u32, EngineError> {
    let row = admin
        .maybe_row("looking for the source database", "SELECT oid FROM pg_database WHERE datname = $1", &[&database])
        .await?;
    row.map(|r| r.get(0)).ok_or_else(|| {
        EngineError::definite(
            "database_not_found",
            format!("{}: database {database} does not exist", admin.place().label()),
            "Check the database name of the migration.",
        )
    })
}

/// Fences and unfences of one database, by any migration, run one at a time (released when the session
/// ends, a crash included).
async fn lock_fences(admin: &Session, database_oid: u32) -> Result<(), EngineError> {
    // "mlnk" in the high half keeps clear of other applications' small lock keys.
    let key = (0x6d6c_6e6b_i64 << 32) | i64::from(database_oid);
    admin.row("waiting for other fences of the database", "SELECT pg_advisory_lock($1)", &[&key]).await?;
    Ok(())
}

pub(crate) async fn fence(plan: &LinkPlan) -> Result<Position, EngineError> {
    // The drain's sessions are opened meanwhile, so its first poll does not pay two logins. The apply
    // worker keeps committing asynchronously: the drain reads the position it has handled and flushes the
    // target's WAL once itself (`positions`), so synchronous commits of the backlog would only slow it.
    let (fenced, _) = tokio::join!(fence_source(plan), positions::warm(plan));
    fenced
}

/// Sets the apply worker's `synchronous_commit`. The fence no longer turns it on (the drain does not wait
/// on the worker's feedback any more, and synchronous commits slowed the backlog's apply); unfence still
/// puts the default back for a subscription an older milink left with `on`. Never fatal: logged.
async fn apply_commits(plan: &LinkPlan, value: &'static str) {
    let result = async {
        let target = Server::new("target", &plan.target)?;
        let session = target.connect(Some(plan.database.as_str())).await?;
        // The subscriber may itself be fenced (the source, subscribing over a reverse link).
        writable(&session).await?;
        if subscription_oid(&session, &plan.link_name()).await?.is_none() {
            return Ok(());
        }
        let sql = format!("ALTER SUBSCRIPTION {} SET (synchronous_commit = '{value}')", quote_ident(&plan.link_name()));
        session.run("setting how the link's apply worker commits", &sql).await
    }
    .await;
    if let Err(error) = result {
        tracing::warn!(error = %error.message, value, "could not set the apply worker's synchronous_commit; the drain may take longer");
    }
}

async fn fence_source(plan: &LinkPlan) -> Result<Position, EngineError> {
    let started = Instant::now();
    let ahead = opened().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&plan.link_name());
    // The session opened ahead may have been ended since (another migration's fence of this database).
    let admin = match ahead {
        Some(admin) if admin.try_run("SELECT 1").await.is_ok() => admin,
        _ => admin_session(plan).await?,
    };
    let database = plan.database.as_str();
    let oid = database_oid(&admin, database).await?;
    lock_fences(&admin, oid).await?;
    let entries = settings::entries(&admin, oid).await?;
    let statements = settings::fence_statements(&entries, database, &settings::key_of(&plan.link_name()));
    settings::apply(&admin, "making the database read-only", &statements).await?;
    let cutoff: String = admin.row("noting the fence's time", "SELECT clock_timestamp()::text", &[]).await?.get(0);
    let note = entries.iter().find(|e| e.role.is_none()).and_then(|e| e.value(settings::DISABLED_SUBSCRIPTIONS));
    let subscriptions = subscriptions::disable(&admin, database, oid, note).await?;
    let ended = sessions::end_before(&admin, database, oid, &cutoff).await?;
    // The position is the end of a WAL record written after the fence, not pg_current_wal_lsn(): that is
    // the write pointer, and with synchronous_commit = off a commit already acknowledged to a client can
    // still sit in WAL buffers past it. Every record inserted before ours ends before this LSN, and the
    // slot can only confirm it once the WAL up to it has been flushed, sent and applied.
    let row = admin
        .row("recording the fence position", "SELECT pg_logical_emit_message(false, 'milink', 'fence')", &[])
        .await?;
    let position = u64::from(row.get::<_, PgLsn>(0));
    fenced_at(plan, position);
    // The walsender decodes only flushed WAL, and once the source is fenced nothing commits: the message
    // would wait for the WAL writer (`wal_writer_delay`, 200 ms by default) before the link could pass it.
    // A commit of our own (flushed locally, not waiting for the link) flushes it now.
    admin.run("flushing the fence's record", FLUSH_WAL).await?;
    let took_ms = started.elapsed().as_millis() as u64;
    match ended.superusers_reconnected.is_empty() {
        true => tracing::info!(database, position, sessions_ended = ended.sessions, subscriptions_disabled = subscriptions, took_ms, "source fenced"),
        false => tracing::warn!(
            database, position, sessions_ended = ended.sessions, subscriptions_disabled = subscriptions, took_ms,
            superusers = %ended.superusers_reconnected.join(", "),
            "source fenced, but superuser sessions reconnected: superusers can turn read-only off, keep them out until the cutover ends"
        ),
    }
    Ok(Position(position))
}

pub(crate) async fn unfence(plan: &LinkPlan) -> Result<(), EngineError> {
    let admin = admin_session(plan).await?;
    let database = plan.database.as_str();
    let oid = database_oid(&admin, database).await?;
    lock_fences(&admin, oid).await?;
    let entries = settings::entries(&admin, oid).await?;
    let unfence = settings::unfence_statements(&entries, database, &settings::key_of(&plan.link_name()));
    let mut enabled = 0;
    if unfence.last {
        // Before the settings: their key is what tells a re-run after a crash that this is still to do.
        let note = entries.iter().find(|e| e.role.is_none()).and_then(|e| e.value(settings::DISABLED_SUBSCRIPTIONS));
        enabled = subscriptions::enable(&admin, database, note).await?;
    }
    settings::apply(&admin, "restoring the read-only setting", &unfence.statements).await?;
    let mut fenced_logins = 0;
    if unfence.last {
        // Sessions that logged in while fenced keep read-only as their default until they reconnect: end
        // them (a repeat finds none), so the application, or its pooler, reconnects writable.
        let cutoff: String = admin.row("noting the unfence's time", "SELECT clock_timestamp()::text", &[]).await?.get(0);
        fenced_logins = sessions::end_fenced_logins(&admin, database, oid, &cutoff).await?;
    }
    tracing::info!(database, last = unfence.last, subscriptions_enabled = enabled, fenced_logins, "source unfenced");
    forget(plan);
    crate::verify::forget_taken(&plan.link_name());
    apply_commits(plan, "off").await;
    Ok(())
}
