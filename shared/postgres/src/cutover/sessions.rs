//! Ending every session that may have started before the fence, including logins still in progress.
//!
//! A backend reads the database's and its role's settings once, while it logs in (`process_settings`, near
//! the end of `InitPostgres`). So once the fence's settings have committed, at `cutoff` (the server's
//! `clock_timestamp()` read after the commit), a backend forked later reads `on`, and only backends forked
//! earlier (`backend_start < cutoff`) can hold read-only off. Those are ended, whatever their kind, except
//! the ones that cannot write rows logical replication carries or must not be ended: walsenders (the
//! link's own), autovacuum and parallel workers (they die with their leader).
//!
//! A login in progress is invisible in `pg_stat_activity` until `InitPostgres` is nearly done, but from
//! before it reads the settings until after it becomes visible, it holds a lock on the database object
//! (taken against a concurrent DROP DATABASE; taking it also makes the backend read the catalogs afresh,
//! so it sees the fence if the fence committed first). The backends holding that lock just after the cutoff
//! are therefore the only logins that may have read the old settings: each is waited for until it is gone
//! or visible, and then ended with the rest. Polling is fast (5 ms) and bounded (3 s).
//!
//! Superusers can turn read-only off again in any session; a superuser session that reconnects after the
//! cutoff is reported in the fence's log line, and a fence that finds one writing fails with what to do.
//!
//! The unfence has the mirror problem: a session that logged in while the database was fenced read `on` and
//! keeps it as its default until it disconnects (a pooler's server connection can live for an hour). So the
//! last unfence ends, the same way, every session that started before the unfence's own cutoff, milink's
//! own sessions (they turn read-only off themselves) and replication workers (they ignore it) excepted.
use crate::connect::Session;
use milink_core::EngineError;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(5);
const PATIENCE: Duration = Duration::from_secs(3);
/// The sessions older than the cutoff, on the database, that the fence ends.
const OLDER: &str = "FROM pg_stat_activity
    WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_start < $2::text::timestamptz
      AND backend_type NOT IN ('walsender', 'autovacuum worker', 'parallel worker')";

/// The sessions that logged in while the database was fenced (so read `on`), that the last unfence ends.
const FENCED_LOGINS: &str = "FROM pg_stat_activity
    WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_start < $2::text::timestamptz
      AND backend_type NOT IN ('walsender', 'autovacuum worker', 'parallel worker', 'logical replication worker')
      AND application_name <> 'milink'";

/// What ending the sessions found, for the fence's log line.
#[derive(Debug, Default)]
pub(super) struct Ended {
    pub(super) sessions: i64,
    /// Superuser roles with sessions that started after the cutoff (they can turn read-only off).
    pub(super) superusers_reconnected: Vec<String>,
}

/// Ends every session on `database` that started before `cutoff`, logins in progress included.
pub(super) async fn end_before(admin: &Session, database: &str, database_oid: u32, cutoff: &str) -> Result<Ended, EngineError> {
    let sessions = end_matching(admin, database, database_oid, cutoff, OLDER, true).await?;
    let superusers_reconnected = superusers_after(admin, database, cutoff).await?;
    Ok(Ended { sessions, superusers_reconnected })
}

/// After the last unfence committed at `cutoff`: ends every session that logged in while the database was
/// fenced (logins in progress at the unfence included), so none keeps read-only as its default. Returns
/// how many were ended.
pub(super) async fn end_fenced_logins(admin: &Session, database: &str, database_oid: u32, cutoff: &str) -> Result<i64, EngineError> {
    end_matching(admin, database, database_oid, cutoff, FENCED_LOGINS, false).await
}

/// Ends the sessions `filter` selects (before `cutoff`), waiting for logins in progress to show up first.
async fn end_matching(
    admin: &Session,
    database: &str,
    database_oid: u32,
    cutoff: &str,
    filter: &str,
    refuse_prepared: bool,
) -> Result<i64, EngineError> {
    let logging_in: Vec<i32> = admin
        .rows(
            "looking for logins in progress",
            "SELECT pid FROM pg_locks WHERE locktype = 'object' AND classid = 'pg_database'::regclass
               AND objid = $1 AND objsubid = 0 AND pid <> pg_backend_pid()",
            &[&database_oid],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    // Signalled without waiting: pg_terminate_backend's own wait (PostgreSQL 14+) sleeps in 100 ms steps,
    // one backend after the other; polling all of them at once is much faster.
    let terminate = format!("SELECT count(pg_terminate_backend(pid)) {filter}");
    let started = Instant::now();
    let mut ended = 0;
    loop {
        let signalled: i64 = admin.row("ending sessions on the database", &terminate, &[&database, &cutoff]).await?.get(0);
        ended = ended.max(signalled);
        if refuse_prepared {
            refuse_prepared_transactions(admin, database).await?;
        }
        let row = admin
            .row(
                "checking every older session is gone",
                &format!(
                    "SELECT (SELECT count(*) {filter}),
                            (SELECT count(*) FROM pg_locks WHERE locktype = 'object' AND classid = 'pg_database'::regclass
                               AND objid = $3 AND objsubid = 0 AND pid = ANY($4))"
                ),
                &[&database, &cutoff, &database_oid, &logging_in],
            )
            .await?;
        let (older, still_logging_in): (i64, i64) = (row.get(0), row.get(1));
        if older == 0 && still_logging_in == 0 {
            break;
        }
        if started.elapsed() > PATIENCE {
            return Err(EngineError::transient(
                "fence_incomplete",
                format!(
                    "{}: {older} session(s) on {database} started before the fence (or, unfencing, during it) are \
                     still there after being ended, and {still_logging_in} login(s) in progress then have not finished",
                    admin.place().label()
                ),
                "Stop the application (or pause its pooler) and cut over again; milink has not switched anything.",
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(ended)
}

async fn refuse_prepared_transactions(admin: &Session, database: &str) -> Result<(), EngineError> {
    let prepared: i64 = admin
        .row("looking for prepared transactions", "SELECT count(*) FROM pg_prepared_xacts WHERE database = $1", &[&database])
        .await?
        .get(0);
    if prepared == 0 {
        return Ok(());
    }
    Err(EngineError::transient(
        "prepared_transactions_pending",
        format!("{}: {prepared} prepared transaction(s) on {database} could commit after the fence", admin.place().label()),
        "COMMIT PREPARED or ROLLBACK PREPARED them (see pg_prepared_xacts), then cut over again.",
    ))
}

/// Superuser roles with client sessions that started after the cutoff (milink's own excepted). One that is
/// writing right now has turned read-only off: the fence cannot hold it, so it fails with what to do.
async fn superusers_after(admin: &Session, database: &str, cutoff: &str) -> Result<Vec<String>, EngineError> {
    let rows = admin
        .rows(
            "looking for superuser sessions",
            "SELECT r.rolname::text, a.backend_xid IS NOT NULL FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
             WHERE a.datname = $1 AND a.pid <> pg_backend_pid() AND a.backend_start >= $2::text::timestamptz
               AND a.backend_type = 'client backend' AND r.rolsuper AND a.application_name <> 'milink'",
            &[&database, &cutoff],
        )
        .await?;
    let mut roles: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    roles.sort();
    roles.dedup();
    let writing: Vec<String> = rows.iter().filter(|row| row.get::<_, bool>(1)).map(|row| row.get(0)).collect();
    if !writing.is_empty() {
        return Err(EngineError::transient(
            "fence_bypassed",
            format!(
                "{}: superuser session(s) of {} reconnected to {database} after the fence and are writing",
                admin.place().label(),
                writing.join(", ")
            ),
            "Superusers can turn default_transaction_read_only off, so the fence cannot stop them: keep those roles \
             out during the cutover (pg_hba.conf, or pause the pooler), then cut over again.",
        ));
    }
    Ok(roles)
}
