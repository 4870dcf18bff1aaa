//! The copy workers: each takes the next chunk, reads it on the source inside a transaction that imports
//! the exported snapshot, and pipes the bytes of `COPY ... TO STDOUT (FORMAT binary)` into
//! `COPY ... FROM STDIN (FORMAT binary)` on the target, untouched (no parsing, no text conversion; text
//! format only for a table with a column type that has no binary I/O). The chunk's done mark commits in
//! the same target transaction as its rows.
//!
//! The target sessions commit asynchronously (`synchronous_commit = off`): a target crash may lose the last
//! chunks, but their marks go with them, so they are copied again; nothing else depends on them.
use super::plan::{Chunk, SCHEMA};
use crate::connect::{Server, Session};
use crate::errors::classify;
use crate::sql::quote_literal;
use futures::{SinkExt, StreamExt};
use milink_core::EngineError;
use std::sync::{Arc, Mutex};

/// Copies `chunks` with `workers` sessions on each side.
pub(crate) async fn run(
    source: &Server,
    target: &Server,
    database: &str,
    link: &str,
    snapshot: &str,
    chunks: Vec<Chunk>,
    workers: usize,
) -> Result<(), EngineError> {
    let queue = Arc::new(Mutex::new(chunks.into_iter().rev().collect::<Vec<_>>()));
    let tasks = (0..workers.max(1)).map(|_| worker(source, target, database, link, snapshot, queue.clone()));
    let results = futures::future::join_all(tasks).await;
    results.into_iter().collect::<Result<Vec<()>, _>>().map(drop)
}

async fn worker(
    source: &Server,
    target: &Server,
    database: &str,
    link: &str,
    snapshot: &str,
    queue: Arc<Mutex<Vec<Chunk>>>,
) -> Result<(), EngineError> {
    let src = source.connect(Some(database)).await?;
    let tgt = target.connect(Some(database)).await?;
    tgt.run("preparing a copy session", "SET synchronous_commit = off; SET default_transaction_read_only = off").await?;
    loop {
        let next = queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let Some(chunk) = next else { return Ok(()) };
        if let Err(error) = copy_chunk(&src, &tgt, link, snapshot, &chunk).await {
            let _ = tgt.try_run("ROLLBACK").await;
            let _ = src.try_run("ROLLBACK").await;
            // The other workers stop taking chunks; the ones they are copying finish.
            queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
            return Err(error);
        }
    }
}

async fn copy_chunk(src: &Session, tgt: &Session, link: &str, snapshot: &str, chunk: &Chunk) -> Result<(), EngineError> {
    let range = match chunk.end_block {
        Some(end) => format!("ctid >= '({},0)'::tid AND ctid < '({end},0)'::tid", chunk.first_block),
        None => format!("ctid >= '({},0)'::tid", chunk.first_block),
    };
    let format = if chunk.binary { "(FORMAT binary)" } else { "" };
    let read = format!("COPY (SELECT {} FROM ONLY {} WHERE {range}) TO STDOUT {format}", chunk.columns, chunk.relation);
    let write = format!("COPY {} ({}) FROM STDIN {format}", chunk.relation, chunk.columns);
    src.run(
        "opening the seeding snapshot",
        &format!("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}", quote_literal(snapshot)),
    )
    .await?;
    // Named so that progress can see how far this chunk is (pg_stat_progress_copy on the target).
    tgt.run("starting a chunk", &format!("SET application_name = {}; BEGIN", quote_literal(&format!("{link}_c{}", chunk.id))))
        .await?;
    let reading = src.client().copy_out(&read).await.map_err(|e| classify(&e, src.place(), "reading a chunk"))?;
    let sink = tgt.client().copy_in(&write).await.map_err(|e| classify(&e, tgt.place(), "writing a chunk"))?;
    futures::pin_mut!(reading);
    futures::pin_mut!(sink);
    while let Some(data) = reading.next().await {
        let data = data.map_err(|e| classify(&e, src.place(), "reading a chunk"))?;
        sink.feed(data).await.map_err(|e| classify(&e, tgt.place(), "writing a chunk"))?;
    }
    let rows = sink.as_mut().finish().await.map_err(|e| classify(&e, tgt.place(), "writing a chunk"))?;
    let done = format!("UPDATE {SCHEMA}.chunks SET done_at = clock_timestamp() WHERE id = {}; COMMIT", chunk.id);
    tgt.run("recording a copied chunk", &done).await?;
    src.run("closing the seeding snapshot", "COMMIT").await?;
    tracing::debug!(relation = %chunk.relation, chunk = chunk.id, rows, "chunk copied");
    Ok(())
}
