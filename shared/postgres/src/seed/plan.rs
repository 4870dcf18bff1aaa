//! The seeding record on the target and the chunk plan.
//!
//! The record lives in the target database itself, in schema `milink_seed` (left out of every table list
//! milink compares, and dropped in the transaction that creates the subscription). It must be there, not
//! in milink's store: a chunk's rows and the mark that the chunk is done commit in one target transaction,
//! so a crash can never leave rows without their mark (copied twice on resume) or a mark without its rows.
//!
//! A table is split by physical position (`ctid` block ranges), which every table has, keyed or not, and
//! which PostgreSQL 14+ scans as a TID range without reading the rest of the table. Under one snapshot the
//! ranges partition the visible rows exactly: a row version never moves. The last range of a table is open
//! ended, so rows in blocks added after the plan (invisible to the snapshot anyway) cannot be missed.
use crate::connect::Session;
use crate::rules::Table;
use crate::sql::{quote_ident, quote_literal};
use milink_core::EngineError;

/// The schema of the record on the target.
pub(crate) const SCHEMA: &str = "milink_seed";

/// DDL of the record, run in the transaction that restores the tables (see `link`), with the link's row.
pub(crate) fn record_sql(link: &str) -> String {
    format!(
        "CREATE SCHEMA {SCHEMA};
         CREATE TABLE {SCHEMA}.state (link text PRIMARY KEY, slot text, snapshot text, consistent_point text,
             started_at timestamptz, index_bytes bigint NOT NULL DEFAULT 0, indexed boolean NOT NULL DEFAULT false);
         CREATE TABLE {SCHEMA}.chunks (id serial PRIMARY KEY, relation text NOT NULL, chunk int NOT NULL,
             first_block bigint NOT NULL, end_block bigint, bytes bigint NOT NULL, tuples float8 NOT NULL,
             columns text NOT NULL, binary_format boolean NOT NULL, done_at timestamptz, UNIQUE (relation, chunk));
         INSERT INTO {SCHEMA}.state (link) VALUES ({});\n",
        quote_literal(link)
    )
}

/// The record's row for a link.
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub(crate) slot: Option<String>,
    pub(crate) snapshot: Option<String>,
    pub(crate) indexed: bool,
}

/// The link's seeding record, when parallel seeding owns this target and is not finished.
pub(crate) async fn state(tgt: &Session, link: &str) -> Result<Option<State>, EngineError> {
    let exists = tgt
        .maybe_row("looking for the seeding record", "SELECT to_regclass($1)::text", &[&format!("{SCHEMA}.state")])
        .await?
        .and_then(|row| row.get::<_, Option<String>>(0))
        .is_some();
    if !exists {
        return Ok(None);
    }
    let sql = format!("SELECT slot, snapshot, indexed FROM {SCHEMA}.state WHERE link = $1");
    let row = tgt.maybe_row("reading the seeding record", &sql, &[&link]).await?;
    Ok(row.map(|r| State { slot: r.get(0), snapshot: r.get(1), indexed: r.get(2) }))
}

/// One range of one table.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub(crate) id: i32,
    pub(crate) relation: String,
    pub(crate) first_block: i64,
    pub(crate) end_block: Option<i64>,
    pub(crate) columns: String,
    pub(crate) binary: bool,
}

/// Chunks not copied yet, largest tables first so the tail of the copy is short chunks.
pub(crate) async fn pending(tgt: &Session) -> Result<Vec<Chunk>, EngineError> {
    let sql = format!(
        "SELECT id, relation, first_block, end_block, columns, binary_format FROM {SCHEMA}.chunks
         WHERE done_at IS NULL ORDER BY bytes DESC, id"
    );
    let rows = tgt.rows("reading the chunks left to copy", &sql, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| Chunk { id: r.get(0), relation: r.get(1), first_block: r.get(2), end_block: r.get(3), columns: r.get(4), binary: r.get(5) })
        .collect())
}

/// The tables whose rows are copied: permanent tables and partitions (a partitioned root holds no rows).
pub(crate) fn copied(tables: &[Table]) -> Vec<&Table> {
    tables.iter().filter(|t| t.kind == 'r' && !t.unlogged).collect()
}

/// Splits the copied tables into chunks of about `chunk_bytes` (sizes and columns read on the source) and
/// records them, with the slot and snapshot, in one target transaction.
pub(crate) async fn record(
    src: &Session,
    tgt: &Session,
    link: &str,
    tables: &[&Table],
    chunk_bytes: u64,
    slot: &str,
    exported: &super::holder::Exported,
) -> Result<(), EngineError> {
    let mut inserts = Vec::new();
    let mut index_bytes: i64 = 0;
    for table in tables {
        let row = src
            .row(
                "measuring a table to split it",
                "SELECT pg_relation_size(c.oid) / current_setting('block_size')::bigint, pg_table_size(c.oid),
                        greatest(c.reltuples, 0)::float8, pg_indexes_size(c.oid),
                        string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum),
                        bool_and(t.typsend <> 0 AND t.typreceive <> 0)
                 FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                      AND a.attgenerated = ''
                 JOIN pg_type t ON t.oid = a.atttypid
                 WHERE c.oid = $1::text::regclass GROUP BY c.oid",
                &[&table.sql_name()],
            )
            .await?;
        let (blocks, bytes, tuples): (i64, i64, f64) = (row.get(0), row.get(1), row.get(2));
        index_bytes += row.get::<_, i64>(3);
        let (columns, binary): (String, bool) = (row.get(4), row.get(5));
        let chunks = ((bytes as u64).div_ceil(chunk_bytes.max(8192))).max(1) as i64;
        let step = (blocks / chunks).max(1);
        let count = chunks.min(blocks.max(1));
        for n in 0..count {
            let first = n * step;
            let end = if n + 1 == count { "NULL".to_owned() } else { ((n + 1) * step).to_string() };
            inserts.push(format!(
                "({}, {n}, {first}, {end}, {}, {}, {}, {binary})",
                quote_literal(&table.sql_name()),
                bytes / count,
                tuples / count as f64,
                quote_literal(&columns),
            ));
        }
    }
    let mut sql = format!(
        "BEGIN; UPDATE {SCHEMA}.state SET slot = {}, snapshot = {}, consistent_point = {}, started_at = now(),
             index_bytes = {index_bytes} WHERE link = {};
         DELETE FROM {SCHEMA}.chunks;\n",
        quote_literal(slot),
        quote_literal(&exported.snapshot),
        quote_literal(&exported.consistent_point),
        quote_literal(link)
    );
    if !inserts.is_empty() {
        sql.push_str(&format!(
            "INSERT INTO {SCHEMA}.chunks (relation, chunk, first_block, end_block, bytes, tuples, columns, binary_format) VALUES {};\n",
            inserts.join(", ")
        ));
    }
    sql.push_str("COMMIT;");
    tgt.run("recording the chunk plan", &sql).await?;
    tracing::info!(link, chunks = inserts.len(), tables = tables.len(), "seeding planned");
    Ok(())
}

/// Forgets a plan whose snapshot is lost: the copied rows of every table go (they belong to that
/// snapshot), and the slot of that snapshot must be dropped by the caller before a new one is made.
pub(crate) async fn discard(tgt: &Session, link: &str) -> Result<(), EngineError> {
    let rows = tgt.rows("reading the planned tables", &format!("SELECT DISTINCT relation FROM {SCHEMA}.chunks"), &[]).await?;
    let relations: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let mut sql = String::from("BEGIN;");
    if !relations.is_empty() {
        sql.push_str(&format!("TRUNCATE {};", relations.join(", ")));
    }
    sql.push_str(&format!(
        "DELETE FROM {SCHEMA}.chunks; UPDATE {SCHEMA}.state SET slot = NULL, snapshot = NULL WHERE link = {}; COMMIT;",
        quote_literal(link)
    ));
    tgt.run("discarding rows copied under a lost snapshot", &sql).await
}

/// Drops the record (seeding finished or abandoned).
pub(crate) fn drop_sql() -> String {
    format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(SCHEMA))
}
