//! Parallel seeding: copy every table from one consistent snapshot with several workers, then stream from
//! exactly that snapshot's position.
//!
//! 1. `link::create` restores the schema's *pre-data* section (tables without indexes or constraints) and,
//!    in the same transaction, this module's record on the target (`plan`), then creates the publication.
//! 2. The seeder (a task of the engine, [`Seeders`]) creates the link's slot on a replication connection
//!    with an exported snapshot (`holder`), splits the tables into block ranges and records the plan, and
//!    copies the chunks with N workers, each in a transaction that imports the snapshot (`copy`).
//! 3. The *post-data* section (indexes, constraints, triggers) is built once the rows are there: building
//!    an index once is far cheaper than maintaining it for every copied row.
//! 4. The holder ends (releasing the slot) and the subscription is created on that slot with
//!    `copy_data = false, create_slot = false`, in one transaction with dropping the record.
//!    The slot's consistent point is the snapshot's position, so every change after the snapshot is
//!    streamed and none before it: no row lost, none applied twice.
//!
//! Resuming (milink killed, or a worker failed): the record says which chunks are done, committed with
//! their rows. The snapshot outlives milink because its holder is a detached process (see `holder`); a
//! restarted seeder finds it alive and copies only the chunks that were not done — a SIGKILL loses the
//! chunks in flight. When the snapshot is gone too (the source restarted, the holder was killed, 24 h
//! passed), rows copied under it can no longer be matched to a stream position: the seeder truncates the
//! copied tables, drops the slot and starts over with a new one. Correct first, fast second.
//!
//! Native table sync (`copy_data = true`) stays the path when the user sets `seedParallel: false`, when
//! the target's tables existed before milink (their rows are not milink's to truncate), and when the
//! source is older than PostgreSQL 14 (no TID range scans; every chunk would read the whole table).
mod copy;
pub(crate) mod holder;
pub(crate) mod plan;

use crate::connect::{Server, Session};
use crate::{rules, schema};
use milink_core::ports::LinkPlan;
use milink_core::EngineError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Chunk size when the settings do not say.
pub(crate) const DEFAULT_CHUNK_BYTES: u64 = 64 * 1024 * 1024;
/// Workers when the settings do not say (bounded further by what the servers can give).
const DEFAULT_WORKERS: usize = 4;
/// How long a failed seeder waits before it is started again.
const RETRY_AFTER: Duration = Duration::from_secs(3);

/// The seeders running in this process, one per link, and the last error of each.
#[derive(Default)]
pub(crate) struct Seeders {
    links: Mutex<HashMap<String, Arc<Mutex<Run>>>>,
}

#[derive(Default)]
struct Run {
    running: bool,
    /// The link is being removed: no seeder starts again (until `forget`).
    stopped: bool,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Failures in a row, and the last one with when it happened.
    failures: u32,
    failed: Option<(EngineError, Instant)>,
}

/// Failures in a row before the link shows the problem (a single one is retried silently).
const FAILURES_TO_REPORT: u32 = 3;

impl Seeders {
    /// Starts the link's seeder unless it runs (or failed a moment ago).
    pub(crate) fn ensure_running(&self, plan: &LinkPlan) {
        let name = plan.link_name();
        let run = self.links.lock().unwrap_or_else(|p| p.into_inner()).entry(name.clone()).or_default().clone();
        {
            let mut state = run.lock().unwrap_or_else(|p| p.into_inner());
            if state.running || state.stopped || state.failed.as_ref().is_some_and(|(_, at)| at.elapsed() < RETRY_AFTER) {
                return;
            }
            state.running = true;
        }
        let plan = plan.clone();
        let task_run = run.clone();
        let task = tokio::spawn(async move {
            let result = seed(&plan).await;
            let run = task_run;
            let mut state = run.lock().unwrap_or_else(|p| p.into_inner());
            state.running = false;
            match result {
                Ok(()) => (state.failures, state.failed) = (0, None),
                Err(error) => {
                    tracing::warn!(link = %plan.link_name(), code = %error.code, error = %error.message, "seeding failed; it resumes");
                    state.failures += 1;
                    state.failed = Some((error, Instant::now()));
                }
            }
        });
        run.lock().unwrap_or_else(|p| p.into_inner()).task = Some(task);
    }

    /// Stops the link's seeder in this process, if one runs, and waits until it has stopped: the link is
    /// being removed, and a seeder left running could create the slot after the removal dropped it. Its
    /// snapshot holder, if it was being started, is killed with it (`holder::start`).
    pub(crate) async fn stop(&self, link: &str) {
        let run = self.links.lock().unwrap_or_else(|p| p.into_inner()).entry(link.to_owned()).or_default().clone();
        let task = {
            let mut state = run.lock().unwrap_or_else(|p| p.into_inner());
            state.stopped = true;
            state.task.take()
        };
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// The last failure of the link's seeder, while it has not succeeded since.
    pub(crate) fn failure(&self, link: &str) -> Option<EngineError> {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let run = links.get(link)?.lock().unwrap_or_else(|p| p.into_inner());
        run.failed.as_ref().filter(|_| run.failures >= FAILURES_TO_REPORT).map(|(error, _)| error.clone())
    }

    /// Forgets a link.
    pub(crate) fn forget(&self, link: &str) {
        self.links.lock().unwrap_or_else(|p| p.into_inner()).remove(link);
    }
}

/// Whether this link seeds in parallel: asked for, and a source with TID range scans.
pub(crate) async fn wanted(plan: &LinkPlan, src: &Session) -> Result<bool, EngineError> {
    Ok(plan.settings.seed_parallel && src.version_num().await? >= 140_000)
}

/// The whole seeding, resumable at any point (module doc).
async fn seed(plan: &LinkPlan) -> Result<(), EngineError> {
    let source = Server::new("source", &plan.source)?;
    let target = Server::new("target", &plan.target)?;
    let name = plan.link_name();
    let database = plan.database.as_str();
    let tgt = target.connect(Some(database)).await?;
    // One seeder per link, whichever host runs it; the lock goes with this session.
    let locked: bool = tgt.row("taking the seeding lock", "SELECT pg_try_advisory_lock(hashtext($1))", &[&name]).await?.get(0);
    if !locked {
        return Ok(());
    }
    let Some(state) = plan::state(&tgt, &name).await? else { return Ok(()) };
    let src = source.connect(Some(database)).await?;
    let admin = source.connect(None).await?;
    crate::connect::writable(&tgt).await?;
    let majors = (src.version_num().await? / 10_000, tgt.version_num().await? / 10_000);
    if !state.indexed {
        let snapshot = snapshot_for(plan, &source, &admin, &src, &tgt, &state, majors.0).await?;
        let pending = plan::pending(&tgt).await?;
        if !pending.is_empty() {
            let workers = workers(plan, &src, &tgt).await?;
            tracing::info!(link = %name, chunks = pending.len(), workers, "copying");
            copy::run(&source, &target, database, &name, &snapshot, pending, workers).await?;
        }
        let mark = format!("UPDATE {}.state SET indexed = true WHERE link = {};\n", plan::SCHEMA, crate::sql::quote_literal(&name));
        schema::copy_section(&source, &target, database, majors, "post-data", &mark).await?;
        tracing::info!(link = %name, "indexes and constraints built");
    }
    // Planner statistics now, as pg_restore users run `vacuumdb --analyze-only` and pgcopydb does after
    // its copy: otherwise the target answers with plans made without them until autovacuum gets to each
    // table, and a cutover can come before that. A sample per table: seconds even for a large database.
    let analyzed = Instant::now();
    let tables: Vec<String> = rules::tables(&tgt).await?.iter().filter(|t| t.is_published()).map(|t| t.sql_name()).collect();
    if !tables.is_empty() {
        tgt.run("gathering planner statistics on the target", &format!("ANALYZE {}", tables.join(", "))).await?;
    }
    tracing::info!(link = %name, ms = analyzed.elapsed().as_millis() as u64, "planner statistics gathered on the target");
    holder::stop(&admin, &name).await?;
    crate::link::subscribe_to_seeded_slot(plan, &tgt, &name).await?;
    tracing::info!(link = %name, "seeding done; streaming from the snapshot's position");
    Ok(())
}

/// The snapshot the pending chunks are copied under: the recorded one while its holder lives, else a new
/// slot and plan (after discarding what the lost snapshot copied).
async fn snapshot_for(
    plan: &LinkPlan,
    source: &Server,
    admin: &Session,
    src: &Session,
    tgt: &Session,
    state: &plan::State,
    source_major: i32,
) -> Result<String, EngineError> {
    let name = plan.link_name();
    if let (Some(slot), Some(snapshot)) = (&state.slot, &state.snapshot) {
        if plan::pending(tgt).await?.is_empty() || holder::alive(admin, src, slot, snapshot).await? {
            return Ok(snapshot.clone());
        }
        tracing::warn!(link = %name, "the seeding snapshot is gone: copying again from a new one");
        plan::discard(tgt, &name).await?;
    }
    holder::stop(admin, &name).await?;
    crate::link::drop_slot(source, &name).await?;
    let exported = holder::start(source, plan.database.as_str(), &name, source_major).await?;
    let tables = rules::tables(src).await?;
    let copied = plan::copied(&tables);
    let chunk_bytes = match plan.settings.seed_chunk_mb {
        0 => DEFAULT_CHUNK_BYTES,
        mb => mb * 1024 * 1024,
    };
    plan::record(src, tgt, &name, &copied, chunk_bytes, &name, &exported).await?;
    Ok(exported.snapshot)
}

/// Workers: the setting (or the default), at most what both servers have free in connections, keeping a
/// margin for applications and superusers.
async fn workers(plan: &LinkPlan, src: &Session, tgt: &Session) -> Result<usize, EngineError> {
    let wanted = match plan.settings.seed_workers {
        0 => DEFAULT_WORKERS,
        n => n as usize,
    };
    let free_sql = "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
                    - (SELECT count(*) FROM pg_stat_activity)::int";
    let free = |row: tokio_postgres::Row| row.get::<_, i32>(0).max(0) as usize;
    let source_free = free(src.row("counting free connections", free_sql, &[]).await?);
    let target_free = free(tgt.row("counting free connections", free_sql, &[]).await?);
    // Leave a quarter of what is free (at least 2) to everyone else.
    let bound = |n: usize| n.saturating_sub((n / 4).max(2));
    Ok(wanted.min(bound(source_free)).min(bound(target_free)).max(1))
}

/// What observe reports while seeding: bytes copied (done chunks, and how far the running ones are), the
/// total, and seconds since the plan was made; plus the index bytes, counted as work after the copy.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Progress {
    pub(crate) copied_bytes: i64,
    pub(crate) total_bytes: i64,
    pub(crate) index_bytes: i64,
    pub(crate) indexed: bool,
    pub(crate) elapsed_seconds: f64,
    /// Blocks and tuples done by the index builds running now (moves while the bytes cannot).
    pub(crate) index_work: i64,
    /// Seconds the copy took, once every chunk is done (from the plan to the last chunk).
    pub(crate) copy_seconds: Option<f64>,
}

/// What building an index costs against copying the same bytes (sorting the keys, then writing the
/// index), per byte. Measured on the dev machine at pgbench scale 200 under load: the copy limit's
/// primary keys (428 MiB) took 7.3 s against 28.3 s for the tables' 2.5 GiB by binary COPY (1.6×); in
/// milink's own seeding the index phase took about 2.4× the copy's time per byte (the ETA with 2.0
/// came out 15–30 % short in the second half).
const INDEX_COST: f64 = 2.5;
/// Starting the subscription on the seeded slot, after the indexes.
const SUBSCRIBE_SECONDS: f64 = 1.0;

impl Progress {
    /// A number that grows with every piece of work done (the stall detector's marker).
    pub(crate) fn work_marker(&self) -> u64 {
        (self.copied_bytes + if self.indexed { self.index_bytes } else { 0 } + self.index_work).max(0) as u64
    }

    /// Bytes done: copied, plus the index bytes once they are built.
    pub(crate) fn done_bytes(&self) -> i64 {
        self.copied_bytes + if self.indexed { self.index_bytes } else { 0 }
    }

    /// 0–100 over copy and index build, by bytes.
    pub(crate) fn percent(&self) -> f64 {
        let total = (self.total_bytes + self.index_bytes).max(1) as f64;
        (100.0 * self.done_bytes() as f64 / total).clamp(0.0, 100.0)
    }

    /// Seconds left: the bytes still to copy at the copy's rate so far, then the indexes at
    /// [`INDEX_COST`] times that rate per byte, then the subscription's start. Once the copy is done, the
    /// index estimate less the time already spent building. None until there is a rate.
    pub(crate) fn eta_seconds(&self) -> Option<f64> {
        if self.indexed {
            return Some(SUBSCRIBE_SECONDS);
        }
        let (copy_seconds, copied) = match self.copy_seconds {
            Some(seconds) => (seconds, self.total_bytes),
            None => (self.elapsed_seconds, self.copied_bytes),
        };
        if copied <= 0 || copy_seconds <= 0.0 {
            return None;
        }
        let rate = copied as f64 / copy_seconds;
        let index_seconds = INDEX_COST * self.index_bytes as f64 / rate;
        let left = match self.copy_seconds {
            Some(seconds) => (index_seconds - (self.elapsed_seconds - seconds)).max(1.0),
            None => (self.total_bytes - self.copied_bytes).max(0) as f64 / rate + index_seconds,
        };
        Some(left + SUBSCRIBE_SECONDS)
    }
}

/// The seeding progress read from the target's record, or None once seeding is over (or not parallel).
pub(crate) async fn progress(tgt: &Session, link: &str) -> Result<Option<Progress>, EngineError> {
    let Some(state) = plan::state(tgt, link).await? else { return Ok(None) };
    if state.slot.is_none() {
        return Ok(Some(Progress {
            copied_bytes: 0,
            total_bytes: 0,
            index_bytes: 0,
            indexed: false,
            elapsed_seconds: 0.0,
            index_work: 0,
            copy_seconds: None,
        }));
    }
    let sql = format!(
        "SELECT coalesce((SELECT sum(bytes) FROM {s}.chunks WHERE done_at IS NOT NULL), 0)::bigint
              + coalesce((SELECT sum(c.bytes * least(1.0, p.tuples_processed / greatest(c.tuples, 1.0)))
                          FROM pg_stat_progress_copy p JOIN pg_stat_activity a ON a.pid = p.pid
                          JOIN {s}.chunks c ON a.application_name = $1 || '_c' || c.id
                          WHERE c.done_at IS NULL), 0)::bigint,
                coalesce((SELECT sum(bytes) FROM {s}.chunks), 0)::bigint,
                st.index_bytes, st.indexed,
                coalesce(extract(epoch FROM clock_timestamp() - st.started_at)::float8, 0),
                (SELECT coalesce(sum(blocks_done + tuples_done), 0)::bigint FROM pg_stat_progress_create_index
                 WHERE datname = current_database()),
                (SELECT extract(epoch FROM max(done_at) - st.started_at)::float8 FROM {s}.chunks
                 HAVING count(*) > 0 AND bool_and(done_at IS NOT NULL))
         FROM {s}.state st WHERE st.link = $1",
        s = plan::SCHEMA
    );
    let row = tgt.maybe_row("reading seeding progress", &sql, &[&link]).await?;
    Ok(row.map(|r| Progress {
        copied_bytes: r.get(0),
        total_bytes: r.get(1),
        index_bytes: r.get(2),
        indexed: r.get(3),
        elapsed_seconds: r.get(4),
        index_work: r.get(5),
        copy_seconds: r.get(6),
    }))
}

/// Waits (a few seconds at most) until no seeder holds the link's seeding lock on the target; a seeder
/// that still runs (on another host) is an error milink retries, so the slot is not dropped under it.
pub(crate) async fn wait_until_stopped(tgt: &Session, link: &str) -> Result<(), EngineError> {
    for _ in 0..50 {
        let free: bool = tgt.row("taking the seeding lock", "SELECT pg_try_advisory_lock(hashtext($1))", &[&link]).await?.get(0);
        if free {
            tgt.row("releasing the seeding lock", "SELECT pg_advisory_unlock(hashtext($1))", &[&link]).await?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(EngineError::transient(
        "seeding_still_running",
        format!("{}: the seeding of {link} is still stopping", tgt.place().label()),
        "milink retries until the seeder has ended; nothing needs doing.",
    ))
}

/// Ends a seeding that is abandoned (the link is removed): its snapshot holder goes; the slot and the
/// target's record go with the link's other objects.
pub(crate) async fn abandon(admin: &Session, link: &str) -> Result<(), EngineError> {
    holder::stop(admin, link).await
}

#[cfg(test)]
mod tests {
    use super::Progress;

    #[test]
    fn eta_is_the_copy_left_at_its_rate_then_the_indexes_at_their_cost_per_byte() {
        let half = Progress {
            copied_bytes: 400,
            total_bytes: 800,
            index_bytes: 200,
            indexed: false,
            elapsed_seconds: 10.0,
            index_work: 0,
            copy_seconds: None,
        };
        assert_eq!(half.percent(), 40.0);
        // 400 bytes left at 40 B/s, then 200 index bytes at 16 B/s, then the subscription.
        assert_eq!(half.eta_seconds(), Some(10.0 + 12.5 + 1.0));
        let started = Progress { copied_bytes: 0, ..half.clone() };
        assert_eq!(started.eta_seconds(), None, "no rate yet, no guess");
        // The copy took 20 s (40 B/s): the indexes take about 12.5 s, 4 of which have passed.
        let building = Progress { copied_bytes: 800, elapsed_seconds: 24.0, copy_seconds: Some(20.0), ..half.clone() };
        assert_eq!(building.eta_seconds(), Some(8.5 + 1.0));
        let late = Progress { elapsed_seconds: 40.0, ..building.clone() };
        assert_eq!(late.eta_seconds(), Some(1.0 + 1.0), "an index that takes longer than thought: a second, not a negative");
        let built = Progress { indexed: true, ..building };
        assert_eq!((built.percent(), built.eta_seconds()), (100.0, Some(1.0)));
    }
}
