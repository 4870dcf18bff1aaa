//! Cutover on the MI link (mi-link.md §3): fence, synchronous commit, the equal-and-stable LSN rule, then
//! fail over keeping a reverse link or break the link; plus unfence (abort) and failback.
//!
//! Fence disables the application logins named in the settings and ends their sessions, then switches both
//! sides to synchronous commit so `last_hardened_lsn` is reported and comparable; its position is SQL Server's
//! hardened LSN. Unfence reverses both. `switch` re-checks the documented rule with [`DrainJudge`] (equal and
//! unchanged for `drain_stable_seconds`) as a last guard before the point of no return, with time and waiting
//! injected. Keeping a reverse link needs SQL Server 2022 CU13+ / 2025 with the matching update policy;
//! otherwise the link is broken: ARM DELETE, then DROP AVAILABILITY GROUP on SQL Server.
use crate::collector::{self, Pause};
use crate::arm::models::DistributedAvailabilityGroup;
use crate::drain::{synchronous_problem, DrainDecision, DrainJudge};
use crate::errors;
use crate::lsn::position_of;
use crate::observe::{ReplicaRow, SeedingRow, SqlServerLinkView};
use crate::names::LinkNames;
use crate::plan::Link;
use crate::tds::{rows_as, SqlSession};
use crate::tsql::{cutover as sql, link as link_sql, probe, Statement};
use crate::versions::{failback, Build, UpdatePolicy};
use milink_core::error::EngineError;
use milink_core::migration::{Position, TableCount, Verification};
use milink_core::verification::VerifyMethod;
use milink_core::ports::{Clock, Positions};
use serde::Deserialize;
use std::time::Duration;

/// Reads the link as SQL Server sees it.
pub async fn link_view(session: &mut dyn SqlSession, names: &LinkNames) -> Result<SqlServerLinkView, EngineError> {
    let replicas: Vec<ReplicaRow> = rows_as(session.query(&probe::link_replicas(&names.distributed_ag)).await?, "link replicas")?;
    let seeding: Vec<SeedingRow> = if replicas.is_empty() {
        Vec::new()
    } else {
        rows_as(session.query(&probe::seeding(&names.distributed_ag, &names.local_ag)).await?, "seeding")?
    };
    Ok(SqlServerLinkView { replicas, seeding })
}

/// Disables the fenced logins, ends their sessions, switches both sides to synchronous commit, and
/// returns SQL Server's hardened position.
pub async fn fence(link: &Link, session: &mut dyn SqlSession) -> Result<Position, EngineError> {
    #[derive(Deserialize)]
    struct SessionRow {
        session_id: i64,
    }
    for login in &link.settings.fence_roles {
        session.execute(&sql::disable_login(login)).await?;
        let sessions: Vec<SessionRow> = rows_as(session.query(&sql::sessions_of_login(login)).await?, "sessions")?;
        for row in sessions {
            if let Some(kill) = sql::kill_session(row.session_id) {
                // A session that ended by itself in between is fine.
                if let Err(error) = session.execute(&kill).await {
                    tracing::debug!(code = %error.code, "session already gone while fencing");
                }
            }
        }
    }
    set_commit_mode(link, session, true).await?;
    let view = link_view(session, &link.names).await?;
    source_position(&view).ok_or_else(|| {
        EngineError::transient("not_synchronous_yet", "SQL Server does not report a hardened LSN yet (switching to synchronous commit)", "none: milink retries")
    })
}

/// Gives the fenced logins back and returns the link to asynchronous commit.
pub async fn unfence(link: &Link, session: &mut dyn SqlSession) -> Result<(), EngineError> {
    for login in &link.settings.fence_roles {
        session.execute(&sql::enable_login(login)).await?;
    }
    if !link_view(session, &link.names).await?.replicas.is_empty() {
        set_commit_mode(link, session, false).await?;
    }
    Ok(())
}

async fn set_commit_mode(link: &Link, session: &mut dyn SqlSession, synchronous: bool) -> Result<(), EngineError> {
    let names = &link.names;
    session.execute(&sql::set_commit_mode(&names.distributed_ag, &names.local_ag, &names.instance_ag, synchronous)).await?;
    link.target.api.set_replication_mode(&names.distributed_ag, synchronous).await
}

/// SQL Server's position: its hardened LSN on the link (NULL while asynchronous), else the end of its log.
pub fn source_position(view: &SqlServerLinkView) -> Option<Position> {
    let local = view.local()?;
    local.last_hardened_lsn.as_deref().and_then(position_of).or_else(|| local.end_of_log_lsn.as_deref().and_then(position_of))
}

/// The source's position and what the MI has hardened (ARM's `lastHardenedLsn`, else the DMV's remote row).
pub async fn positions(link: &Link, session: &mut dyn SqlSession) -> Result<Positions, EngineError> {
    let view = link_view(session, &link.names).await?;
    let source = source_position(&view).ok_or_else(|| EngineError::transient("no_source_position", "SQL Server reports no LSN for the link", "none: milink retries"))?;
    let target = target_position(link, &view).await?.unwrap_or(Position(0));
    Ok(Positions { source, target })
}

async fn target_position(link: &Link, view: &SqlServerLinkView) -> Result<Option<Position>, EngineError> {
    let dag = link.target.api.link(&link.names.distributed_ag).await?;
    Ok(target_position_of(dag.as_ref(), view))
}

fn target_position_of(dag: Option<&DistributedAvailabilityGroup>, view: &SqlServerLinkView) -> Option<Position> {
    let from_arm = dag.and_then(|d| d.properties.databases.first()).and_then(|d| d.last_hardened_lsn.as_deref()).and_then(position_of);
    from_arm.or_else(|| view.remote().and_then(|r| r.last_hardened_lsn.as_deref()).and_then(position_of))
}

/// Waits until both sides are in synchronous commit, connected and synchronized, and their hardened LSNs are
/// equal and unchanged for `drain_stable_seconds`.
pub async fn wait_caught_up(link: &Link, session: &mut dyn SqlSession, clock: &dyn Clock, pause: &dyn Pause) -> Result<Position, EngineError> {
    let mut judge = DrainJudge::new(link.settings.drain_stable_seconds);
    let started = clock.now();
    let limit = chrono::Duration::seconds(i64::try_from(link.settings.drain_timeout_seconds.max(link.settings.drain_stable_seconds + 5)).unwrap_or(i64::MAX / 1000));
    loop {
        let view = link_view(session, &link.names).await?;
        let dag = link.target.api.link(&link.names.distributed_ag).await?;
        let now = clock.now();
        let decision = match synchronous_problem(&view, dag.as_ref()) {
            Some(problem) => judge.not_ready(problem),
            None => {
                let source = view.local().and_then(|l| l.last_hardened_lsn.as_deref()).and_then(position_of);
                judge.observe(source, target_position_of(dag.as_ref(), &view), now)
            }
        };
        match decision {
            DrainDecision::CaughtUp(position) => return Ok(position),
            DrainDecision::Wait(reason) if now - started >= limit => {
                return Err(EngineError::transient("not_caught_up", format!("the managed instance has not caught up: {reason}"), "wait until the workload is stopped and lag is zero, then cut over again"));
            }
            DrainDecision::Wait(_) => pause.pause(Duration::from_secs(2)).await,
        }
    }
}

/// Makes the MI primary: fail over keeping the link (reverse link for failback) or break the link.
pub async fn switch(link: &Link, session: &mut dyn SqlSession, keep_reverse_link: bool, clock: &dyn Clock, pause: &dyn Pause) -> Result<(), EngineError> {
    let names = &link.names;
    let resource = link.target.api.link(&names.distributed_ag).await?;
    let view = link_view(session, names).await?;
    if resource.is_none() && view.replicas.is_empty() {
        // Already broken by an earlier attempt: nothing left to switch.
        return Ok(());
    }
    let sql_server_is_secondary = view.local().and_then(|l| l.role_desc.as_deref()) == Some("SECONDARY");
    let instance_is_primary = resource.as_ref().and_then(|r| r.properties.instance_link_role.as_deref()) == Some("Primary");
    if keep_reverse_link && (sql_server_is_secondary || instance_is_primary) {
        // Already failed over by an earlier attempt; failing over again would fail back. That attempt may have
        // stopped before both sides were back in asynchronous commit: finish it (idempotent).
        return set_commit_mode(link, session, false).await;
    }
    if keep_reverse_link {
        // Checked before waiting: no point draining towards a failover that cannot happen.
        let (instance, _) = collector::instance_facts(session).await?;
        let build = Build::parse(&instance.product_version).unwrap_or(Build(0, 0, 0, 0));
        let mi = link.target.api.instance().await?;
        let verdict = failback(build, mi.properties.database_format.as_deref().and_then(UpdatePolicy::from_database_format));
        if !verdict.possible {
            return Err(errors::config("failback_impossible", format!("cannot keep a reverse link: {}", verdict.reason), "cut over with keep_reverse_link = false (the link is broken)"));
        }
    }
    wait_caught_up(link, session, clock, pause).await?;
    if keep_reverse_link {
        session.execute(&sql::failover(&names.distributed_ag)).await?;
        // The reverse link goes back to asynchronous commit on *both* sides, as SSMS's failover does: the MI's
        // commits must not wait for SQL Server, and the two members must agree on the mode (a distributed AG's
        // mode is set on the global primary and on the forwarder). A failure here is returned; the retried
        // switch sees the roles already reversed and only repeats this step.
        return set_commit_mode(link, session, false).await;
    }
    link.target.api.delete_link(&names.distributed_ag).await?;
    session.execute(&link_sql::drop_availability_group(&names.distributed_ag)).await?;
    session.execute(&link_sql::drop_availability_group(&names.local_ag)).await?;
    Ok(())
}

/// Failback over a kept link: a planned failover from the MI side (the MI is primary), then the fenced
/// logins are enabled on SQL Server again.
pub async fn failback_to_sql_server(link: &Link, session: &mut dyn SqlSession) -> Result<(), EngineError> {
    link.target.api.failover(&link.names.distributed_ag, true).await?;
    for login in &link.settings.fence_roles {
        session.execute(&sql::enable_login(login)).await?;
    }
    Ok(())
}

/// Per-table row counts (metadata counts from `sys.partitions`) of one database. Columns: `table_name`,
/// `row_count`.
pub fn row_counts(database: &str) -> Statement {
    let db = crate::names::quote_ident(database);
    Statement::new(format!(
        "SELECT s.name + N'.' + t.name AS table_name, CAST(SUM(p.rows) AS bigint) AS row_count\n\
         FROM {db}.sys.tables AS t JOIN {db}.sys.schemas AS s ON s.schema_id = t.schema_id\n\
         JOIN {db}.sys.partitions AS p ON p.object_id = t.object_id AND p.index_id IN (0, 1)\n\
         WHERE t.is_ms_shipped = 0 GROUP BY s.name, t.name ORDER BY 1"
    ))
}

/// Verification: the link copies the database physically (sequences travel in the log, so none are set),
/// and equal hardened LSNs prove catch-up. When the MI's TDS endpoint is configured, per-table row counts are
/// compared too, after the MI has redone everything.
pub async fn finalize(link: &Link, session: &mut dyn SqlSession, instance_session: Option<&mut dyn SqlSession>, pause: &dyn Pause) -> Result<Verification, EngineError> {
    let Some(instance_session) = instance_session else {
        return Ok(physical(Vec::new()));
    };
    for attempt in 0.. {
        let view = link_view(session, &link.names).await?;
        let redo = view.remote().and_then(|r| r.redo_queue_kb).unwrap_or(0);
        if redo == 0 {
            break;
        }
        if attempt >= link.settings.drain_timeout_seconds / 2 {
            return Err(EngineError::transient("redo_pending", format!("the managed instance still has {redo} KB to redo"), "none: milink retries"));
        }
        pause.pause(Duration::from_secs(2)).await;
    }
    #[derive(Deserialize)]
    struct CountRow {
        table_name: String,
        row_count: Option<i64>,
    }
    let statement = row_counts(&link.database);
    let source: Vec<CountRow> = rows_as(session.query(&statement).await?, "row counts")?;
    let target: Vec<CountRow> = rows_as(instance_session.query(&statement).await?, "row counts on the managed instance")?;
    let tables = source
        .iter()
        .map(|s| {
            let target_rows = target.iter().find(|t| t.table_name == s.table_name).and_then(|t| t.row_count).unwrap_or(0).max(0) as u64;
            TableCount::counted(s.table_name.clone(), s.row_count.unwrap_or(0).max(0) as u64, target_rows)
        })
        .collect();
    Ok(physical(tables))
}

/// The MI is a physical replica of the whole database (every page, sequences and schema included), so
/// the drain's equal hardened LSNs cover every table: the verification is complete by construction, and
/// row counts, when the MI can be queried, are a cross-check on top.
fn physical(tables: Vec<TableCount>) -> Verification {
    Verification { method: VerifyMethod::PhysicalReplica, complete: true, tables, ..Verification::default() }
}
