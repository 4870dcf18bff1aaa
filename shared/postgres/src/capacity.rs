//! What a server has and uses of the resources a link takes, for admission control
//! ([`milink_core::admission`]).
//!
//! Source: a replication slot and a WAL sender per link (`max_replication_slots`, `max_wal_senders`),
//! plus one more of each per table-sync worker while the link seeds (each table sync streams over a
//! temporary slot of its own). Target: an apply worker per link plus table-sync workers while seeding,
//! from `max_logical_replication_workers`, and each of those is a background worker drawn from
//! `max_worker_processes`. A seeding link is counted as needing two of each (its own and one table
//! sync): enough that every admitted link can make progress, whereas admitting on the apply worker alone
//! lets apply workers take every worker and starve the table syncs (issue 10).
//!
//! In use is read from the server, so links that are not milink's count too; what milink's own links
//! use is reported per link name, so admission does not reserve twice for a link the server already
//! shows. One query per role on the maintenance database; nothing is written.
use crate::connect::Server;
use milink_core::admission::{Capacity, Pool, Role};
use milink_core::config::Endpoint;
use milink_core::EngineError;
use std::collections::BTreeMap;

/// What one seeding link takes of each resource, and one streaming link.
const SEEDING_NEED: u32 = 2;
const STREAMING_NEED: u32 = 1;

/// Processes in pg_stat_activity that are not background workers (so not drawn from max_worker_processes).
const NOT_BACKGROUND_WORKERS: &str = "'client backend','autovacuum launcher','autovacuum worker','background writer',\
     'checkpointer','archiver','startup','walreceiver','walsender','walwriter','walsummarizer','io worker',\
     'slotsync worker','standalone backend'";

pub(crate) async fn capacity(endpoint: &Endpoint, role: Role) -> Result<Capacity, EngineError> {
    let name = if role == Role::Source { "source" } else { "target" };
    let session = Server::new(name, endpoint)?.connect(None).await?;
    let (totals_sql, by_link_sql) = match role {
        Role::Source => (
            "SELECT current_setting('max_replication_slots')::int, (SELECT count(*)::int FROM pg_replication_slots),
                    current_setting('max_wal_senders')::int, (SELECT count(*)::int FROM pg_stat_replication)"
                .to_owned(),
            // A link's WAL sender is the one serving its slot.
            "SELECT slot_name::text, 1 + (active_pid IS NOT NULL)::int FROM pg_replication_slots WHERE slot_name LIKE 'milink\\_%'",
        ),
        Role::Target => (
            format!(
                "SELECT current_setting('max_logical_replication_workers')::int,
                        (SELECT count(*)::int FROM pg_stat_subscription WHERE pid IS NOT NULL),
                        current_setting('max_worker_processes')::int,
                        (SELECT count(*)::int FROM pg_stat_activity WHERE backend_type NOT IN ({NOT_BACKGROUND_WORKERS}))"
            ),
            "SELECT subname::text, count(*)::int FROM pg_stat_subscription
              WHERE pid IS NOT NULL AND subname LIKE 'milink\\_%' GROUP BY subname",
        ),
    };
    let totals = session.row("reading the replication limits and what is in use", &totals_sql, &[]).await?;
    let mut by_link = BTreeMap::new();
    for row in session.rows("reading what milink's links use", by_link_sql, &[]).await? {
        by_link.insert(row.get::<_, String>(0), row.get::<_, i32>(1).max(0) as u32);
    }
    let count = |i: usize| totals.get::<_, i32>(i).max(0) as u32;
    let pool = |what: &str, setting: &str, total: u32, in_use: u32, by_link: BTreeMap<String, u32>| Pool {
        what: what.into(),
        setting: setting.into(),
        total,
        in_use,
        by_link,
        seeding_need: SEEDING_NEED,
        streaming_need: STREAMING_NEED,
    };
    let pools = match role {
        Role::Source => {
            // A slot row's count above is 1 (the slot) + its WAL senders; split it back per pool.
            let slots = by_link.keys().map(|k| (k.clone(), 1)).collect();
            let senders = by_link.iter().map(|(k, v)| (k.clone(), v - 1)).collect();
            vec![
                pool("replication slot", "max_replication_slots", count(0), count(1), slots),
                pool("WAL sender", "max_wal_senders", count(2), count(3), senders),
            ]
        }
        Role::Target => vec![
            pool("logical replication worker", "max_logical_replication_workers", count(0), count(1), by_link.clone()),
            pool("background worker process", "max_worker_processes", count(2), count(3), by_link),
        ],
    };
    Ok(Capacity { pools })
}
