//! The source database's own subscriptions (the source is itself a subscriber of another database).
//!
//! Their apply workers write rows without SQL, so `default_transaction_read_only` does not stop them: the
//! fence disables every enabled subscription of the database, ends their workers (a transaction they were
//! applying is rolled back, and replayed from the publisher when they come back) and waits until
//! `pg_stat_subscription` shows none. Which ones milink disabled is kept durably on the database's settings
//! entry, `milink.disabled_subscriptions` (oids), written in the same transaction as the DISABLEs, so a crash
//! never leaves a subscription disabled without the note that brings it back. The note is shared by every
//! migration fencing the database: the unfence that lifts the last fence enables exactly those again (the
//! ones that still exist) and removes the note in one transaction; subscriptions someone else disabled stay
//! disabled.
use super::settings::DISABLED_SUBSCRIPTIONS;
use crate::connect::Session;
use crate::sql::{quote_ident, quote_literal};
use milink_core::EngineError;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(10);
const PATIENCE: Duration = Duration::from_secs(5);

fn parse_oids(note: Option<&str>) -> Vec<u32> {
    note.unwrap_or_default().split(',').filter_map(|oid| oid.trim().parse().ok()).collect()
}

/// Disables the database's enabled subscriptions and waits until no worker of its subscriptions is left.
/// Returns how many it disabled.
pub(super) async fn disable(
    admin: &Session,
    database: &str,
    database_oid: u32,
    note: Option<&str>,
) -> Result<usize, EngineError> {
    let enabled = admin
        .rows(
            "looking for the source database's own subscriptions",
            "SELECT oid, subname::text FROM pg_subscription WHERE subdbid = $1 AND subenabled ORDER BY oid",
            &[&database_oid],
        )
        .await?;
    if !enabled.is_empty() {
        let mut oids = parse_oids(note);
        let mut statements = Vec::new();
        for row in &enabled {
            oids.push(row.get(0));
            statements.push(format!("ALTER SUBSCRIPTION {} DISABLE", quote_ident(&row.get::<_, String>(1))));
        }
        oids.sort_unstable();
        oids.dedup();
        let list = oids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        statements.insert(0, format!("ALTER DATABASE {} SET {DISABLED_SUBSCRIPTIONS} = {}", quote_ident(database), quote_literal(&list)));
        // `admin` is on the database: ALTER SUBSCRIPTION finds a subscription by name in the session's own.
        super::settings::apply(admin, "disabling the source database's subscriptions", &statements).await?;
    }
    wait_for_workers(admin, database, database_oid).await?;
    Ok(enabled.len())
}

/// Ends the workers of the database's disabled subscriptions and waits until they are gone.
async fn wait_for_workers(admin: &Session, database: &str, database_oid: u32) -> Result<(), EngineError> {
    let started = Instant::now();
    loop {
        let workers: i64 = admin
            .row(
                "ending the workers of disabled subscriptions",
                "SELECT count(pg_terminate_backend(w.pid)) FROM pg_stat_subscription w
                 JOIN pg_subscription s ON s.oid = w.subid
                 WHERE s.subdbid = $1 AND NOT s.subenabled AND w.pid IS NOT NULL",
                &[&database_oid],
            )
            .await?
            .get(0);
        if workers == 0 {
            return Ok(());
        }
        if started.elapsed() > PATIENCE {
            return Err(EngineError::transient(
                "fence_incomplete",
                format!("{}: workers of {database}'s own subscriptions keep running after they were disabled", admin.place().label()),
                "milink retries the fence; if it persists, look at the source's pg_stat_subscription.",
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Enables again the subscriptions the fence disabled, and forgets the note. Returns how many.
pub(super) async fn enable(admin: &Session, database: &str, note: Option<&str>) -> Result<usize, EngineError> {
    let Some(note) = note else { return Ok(0) };
    let oids = parse_oids(Some(note));
    let names: Vec<String> = admin
        .rows(
            "looking for the subscriptions the fence disabled",
            "SELECT subname::text FROM pg_subscription
             WHERE oid = ANY($1) AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY oid",
            &[&oids],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut statements: Vec<String> = names.iter().map(|name| format!("ALTER SUBSCRIPTION {} ENABLE", quote_ident(name))).collect();
    statements.push(format!("ALTER DATABASE {} RESET {DISABLED_SUBSCRIPTIONS}", quote_ident(database)));
    super::settings::apply(admin, "enabling the source database's subscriptions again", &statements).await?;
    Ok(names.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_note_is_a_list_of_oids() {
        assert_eq!(parse_oids(Some("16384,16390")), [16384, 16390]);
        assert!(parse_oids(None).is_empty());
        assert!(parse_oids(Some("")).is_empty());
    }
}
