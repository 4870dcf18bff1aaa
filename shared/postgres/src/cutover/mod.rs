//! The fence (stop writes on the source), its undo, and the positions that prove the drain.
//!
//! What `fence` does, in order, all from a session on the maintenance database:
//! 1. `ALTER DATABASE <db> SET default_transaction_read_only = on`, so every new session on the database
//!    starts read-only, whatever its role (pg_easy_replicate fences one role; its #164).
//! 2. The same `ALTER ROLE <r> IN DATABASE <db> SET ...` for every role that has its own
//!    `default_transaction_read_only` (for this database or globally): a role setting beats the database's.
//! 3. Ends every client session on the database except milink's own (replication walsenders, autovacuum
//!    and other background processes are not client sessions and are left alone).
//! 4. Confirms no session on the database still holds a transaction id (a write in flight), ending any
//!    that does, and refuses to finish while prepared transactions for the database are pending: either
//!    could commit after the fence.
//! 5. Writes a logical message (so the walsender has something to send past the fence) and returns
//!    `pg_current_wal_lsn()`: every change committed before the fence lies before that position.
//!
//! What it does not stop: a client that connects after step 3 and turns read-only off itself
//! (`SET default_transaction_read_only = off`, `BEGIN READ WRITE`), or a superuser session doing the same.
//! `default_transaction_read_only` is a default, not a permission. Such a client is bypassing the fence on
//! purpose; keep it out with pg_hba.conf or the connection pooler (pgbouncer PAUSE) during the cutover. It
//! also does not touch other databases on the server.
//!
//! The previous values are kept next to the settings they replace, as a `milink.saved_read_only` setting
//! on the same database or role-in-database entry, so `unfence` restores exactly what was there (not just
//! RESET), a second `fence` does not overwrite the saved value with its own `on`, and a crash between
//! any two statements leaves a state both a re-fence and an unfence finish correctly.
use crate::connect::{Server, Session};
use crate::link::writable;
use crate::sql::{quote_ident, quote_literal};
use milink_core::migration::Position;
use milink_core::ports::{LinkPlan, Positions};
use milink_core::EngineError;
use std::time::Duration;
use tokio_postgres::types::PgLsn;

const SETTING: &str = "default_transaction_read_only";
/// Where the value in force before the fence is kept (`unset` when there was none).
const SAVED: &str = "milink.saved_read_only";
const UNSET: &str = "unset";

/// One `pg_db_role_setting` entry touched by the fence: the database's own (`role` None) or a role's in it.
struct Entry {
    role: Option<String>,
    current: Option<String>,
    saved: Option<String>,
}

impl Entry {
    fn target(&self, database: &str) -> String {
        match &self.role {
            None => format!("DATABASE {}", quote_ident(database)),
            Some(role) => format!("ROLE {} IN DATABASE {}", quote_ident(role), quote_ident(database)),
        }
    }
}

fn value_in(config: &[String], name: &str) -> Option<String> {
    config.iter().find_map(|item| item.strip_prefix(&format!("{name}=")).map(str::to_owned))
}

async fn admin_session(plan: &LinkPlan) -> Result<(Server, Session), EngineError> {
    let source = Server::new("source", &plan.source)?;
    let admin = source.connect(None).await?;
    // The maintenance database may be the fenced one; milink's own statements must still run.
    writable(&admin).await?;
    Ok((source, admin))
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

/// The database's entry and every role entry that could override it for this database.
async fn entries(admin: &Session, database_oid: u32) -> Result<Vec<Entry>, EngineError> {
    let rows = admin
        .rows(
            "reading database and role settings",
            "SELECT NULL::text, coalesce((SELECT setconfig FROM pg_db_role_setting
                                          WHERE setdatabase = $1 AND setrole = 0), '{}')
             UNION ALL
             SELECT r.rolname::text, coalesce((SELECT s.setconfig FROM pg_db_role_setting s
                                               WHERE s.setdatabase = $1 AND s.setrole = r.oid), '{}')
             FROM pg_roles r
             WHERE EXISTS (SELECT 1 FROM pg_db_role_setting s, unnest(s.setconfig) AS item
                           WHERE s.setrole = r.oid AND s.setdatabase IN (0, $1)
                             AND (item LIKE 'default\\_transaction\\_read\\_only=%'
                                  OR item LIKE 'milink.saved\\_read\\_only=%'))",
            &[&database_oid],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let config: Vec<String> = row.get(1);
            Entry { role: row.get(0), current: value_in(&config, SETTING), saved: value_in(&config, SAVED) }
        })
        .collect())
}

pub(crate) async fn fence(plan: &LinkPlan) -> Result<Position, EngineError> {
    let (_, admin) = admin_session(plan).await?;
    let database = plan.database.as_str();
    let oid = database_oid(&admin, database).await?;
    for entry in entries(&admin, oid).await? {
        let target = entry.target(database);
        if entry.saved.is_none() {
            let before = entry.current.clone().unwrap_or_else(|| UNSET.into());
            let sql = format!("ALTER {target} SET {SAVED} = {}", quote_literal(&before));
            admin.run("remembering the read-only setting", &sql).await?;
        }
        admin.run("making the database read-only", &format!("ALTER {target} SET {SETTING} = on")).await?;
    }
    end_sessions(&admin, database).await?;
    // The position is the end of a WAL record written after the fence, not pg_current_wal_lsn(): that is
    // the write pointer, and with synchronous_commit = off a commit already acknowledged to a client can
    // still sit in WAL buffers past it. Every record inserted before ours ends before this LSN, and the
    // slot can only confirm it once the WAL up to it has been flushed, sent and applied.
    let row = admin
        .row("recording the fence position", "SELECT pg_logical_emit_message(false, 'milink', 'fence')", &[])
        .await?;
    let position = u64::from(row.get::<_, PgLsn>(0));
    tracing::info!(database, position, "source fenced");
    Ok(Position(position))
}

/// Ends every client session on the database, then checks that none holds a transaction id.
async fn end_sessions(admin: &Session, database: &str) -> Result<(), EngineError> {
    let others = "FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'";
    // From PostgreSQL 14 the terminate call waits (up to 3 s) until the backend has exited.
    let terminate = match admin.version_num().await? >= 140_000 {
        true => format!("SELECT count(pg_terminate_backend(pid, 3000)) {others}"),
        false => format!("SELECT count(pg_terminate_backend(pid)) {others}"),
    };
    for _ in 0..25 {
        admin.row("ending sessions on the database", &terminate, &[&database]).await?;
        let prepared: i64 = admin
            .row(
                "looking for prepared transactions",
                "SELECT count(*) FROM pg_prepared_xacts WHERE database = $1",
                &[&database],
            )
            .await?
            .get(0);
        if prepared > 0 {
            return Err(EngineError::transient(
                "prepared_transactions_pending",
                format!("{}: {prepared} prepared transaction(s) on {database} could commit after the fence", admin.place().label()),
                "COMMIT PREPARED or ROLLBACK PREPARED them (see pg_prepared_xacts), then cut over again.",
            ));
        }
        let writers: i64 = admin
            .row(
                "checking no session still holds a transaction",
                &format!("SELECT count(*) {others} AND backend_xid IS NOT NULL"),
                &[&database],
            )
            .await?
            .get(0);
        if writers == 0 {
            return Ok(());
        }
        // A backend ended without waiting takes a moment to exit; look again.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(EngineError::transient(
        "fence_incomplete",
        format!("{}: sessions on {database} keep holding transactions after being ended", admin.place().label()),
        "Stop the application (or pause its pooler) and cut over again; milink has not switched anything.",
    ))
}

pub(crate) async fn unfence(plan: &LinkPlan) -> Result<(), EngineError> {
    let (_, admin) = admin_session(plan).await?;
    let database = plan.database.as_str();
    let oid = database_oid(&admin, database).await?;
    for entry in entries(&admin, oid).await? {
        // Only what the fence changed is restored; an entry without a saved value was not ours.
        let Some(saved) = &entry.saved else { continue };
        let target = entry.target(database);
        let restore = match saved.as_str() {
            UNSET => format!("ALTER {target} RESET {SETTING}"),
            value => format!("ALTER {target} SET {SETTING} = {}", quote_literal(value)),
        };
        admin.run("restoring the read-only setting", &restore).await?;
        admin.run("forgetting the saved setting", &format!("ALTER {target} RESET {SAVED}")).await?;
    }
    tracing::info!(database, "source unfenced");
    Ok(())
}

pub(crate) async fn positions(plan: &LinkPlan) -> Result<Positions, EngineError> {
    let source = Server::new("source", &plan.source)?;
    let admin = source.connect(None).await?;
    let name = plan.link_name();
    let row = admin
        .maybe_row(
            "reading positions",
            "SELECT pg_current_wal_lsn(), confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await?
        .ok_or_else(|| {
            EngineError::definite(
                "slot_missing",
                format!("{}: replication slot {name} does not exist", source.place().label()),
                "The link is gone: cancel the cutover (the source is unfenced) and start the migration again.",
            )
        })?;
    let current = u64::from(row.get::<_, PgLsn>(0));
    let confirmed = row.get::<_, Option<PgLsn>>(1).map(u64::from).unwrap_or(0);
    Ok(Positions { source: Position(current), target: Position(confirmed) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_from_setconfig_items() {
        let config = vec!["search_path=app".to_owned(), "default_transaction_read_only=off".to_owned()];
        assert_eq!(value_in(&config, SETTING).as_deref(), Some("off"));
        assert_eq!(value_in(&config, SAVED), None);
    }

    #[test]
    fn entries_name_the_database_or_the_role_in_it_quoted() {
        let db = Entry { role: None, current: None, saved: None };
        assert_eq!(db.target("Toy\"Store"), "DATABASE \"Toy\"\"Store\"");
        let role = Entry { role: Some("app user".into()), current: None, saved: None };
        assert_eq!(role.target("db"), "ROLE \"app user\" IN DATABASE \"db\"");
    }
}
