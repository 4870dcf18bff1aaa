//! `finalize(plan)`: after the drain, the two things logical replication does not do by itself.
//!
//! Sequences: logical replication never carries sequence values, so every sequence on the target is set
//! from the source's `pg_sequences.last_value` (which, with caching, may be ahead of the last value handed
//! out: the target lands at or past the source, never behind). A sequence never used on the source
//! (`last_value` NULL) is reset to its start, not called, so the next value matches what the source would
//! have given. Free-standing sequences are included, unlike `setval(max(column))` approaches. All are set
//! in one statement; a sequence missing on the target is schema drift and a definite error.
//!
//! Verification: exact `count(*)` of every table in the publication on both sides, run on both servers at
//! once. Counts are exact rather than estimated because this is the independent check that the drain was
//! real (pgcopydb #1033: never trust "apply done" without one).
use crate::connect::{Server, Session};
use crate::rules::USER_RELATION;
use crate::sql::qualified;
use milink_core::migration::{TableCount, Verification};
use milink_core::ports::LinkPlan;
use milink_core::EngineError;

pub(crate) async fn finalize(plan: &LinkPlan) -> Result<Verification, EngineError> {
    let source = Server::new("source", &plan.source)?;
    let target = Server::new("target", &plan.target)?;
    let database = plan.database.as_str();
    let (src, tgt) = tokio::try_join!(source.connect(Some(database)), target.connect(Some(database)))?;
    let sequences_set = sync_sequences(&src, &tgt).await?;
    let tables = published_tables(&src, &plan.link_name()).await?;
    let (source_rows, target_rows) = tokio::try_join!(count_rows(&src, &tables), count_rows(&tgt, &tables))?;
    let tables = tables
        .iter()
        .zip(source_rows.into_iter().zip(target_rows))
        .map(|(table, (source_rows, target_rows))| TableCount::counted(format!("{}.{}", table.0, table.1), source_rows, target_rows))
        .collect();
    let verification = Verification { tables, sequences_set, complete: true, ..Verification::default() };
    tracing::info!(
        database,
        tables = verification.tables.len(),
        mismatches = verification.mismatches().len(),
        sequences = sequences_set,
        "finalized"
    );
    Ok(verification)
}

async fn sync_sequences(src: &Session, tgt: &Session) -> Result<u32, EngineError> {
    let rows = src
        .rows(
            "reading sequences on the source",
            &format!(
                "SELECT n.nspname::text, c.relname::text, s.last_value, s.start_value,
                        has_sequence_privilege(c.oid, 'SELECT')
                 FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_sequences s ON s.schemaname = n.nspname AND s.sequencename = c.relname
                 WHERE {USER_RELATION} AND c.relkind = 'S'"
            ),
            &[],
        )
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    // pg_sequences shows NULL both for "never used" and for "not allowed to read": the second must not be
    // mistaken for the first, or the target would restart the sequence behind the source.
    let unreadable: Vec<String> =
        rows.iter().filter(|r| !r.get::<_, bool>(4)).map(|r| format!("{}.{}", r.get::<_, String>(0), r.get::<_, String>(1))).collect();
    if !unreadable.is_empty() {
        return Err(EngineError::definite(
            "sequence_not_readable",
            format!("{}: milink's role cannot read sequences: {}", src.place().label(), unreadable.join(", ")),
            "GRANT SELECT ON these sequences to milink's role (or use a superuser), then finalize again.",
        ));
    }
    let mut schemas = Vec::new();
    let mut names = Vec::new();
    let mut values = Vec::new();
    let mut called = Vec::new();
    for row in &rows {
        schemas.push(row.get::<_, String>(0));
        names.push(row.get::<_, String>(1));
        let last: Option<i64> = row.get(2);
        values.push(last.unwrap_or_else(|| row.get(3)));
        called.push(last.is_some());
    }
    let missing: Vec<String> = tgt
        .rows(
            "checking the sequences exist on the target",
            "SELECT u.s || '.' || u.n FROM unnest($1::text[], $2::text[]) AS u(s, n)
             WHERE to_regclass(format('%I.%I', u.s, u.n)) IS NULL",
            &[&schemas, &names],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if !missing.is_empty() {
        return Err(EngineError::definite(
            "sequence_missing_on_target",
            format!("{}: sequences missing on the target: {}", tgt.place().label(), missing.join(", ")),
            "The target's schema has drifted from the source: create these sequences on the target, then finalize again.",
        ));
    }
    tgt.row(
        "setting sequences on the target",
        "SELECT count(setval(format('%I.%I', u.s, u.n)::regclass, u.v, u.called))
         FROM unnest($1::text[], $2::text[], $3::int8[], $4::bool[]) AS u(s, n, v, called)",
        &[&schemas, &names, &values, &called],
    )
    .await?;
    Ok(rows.len() as u32)
}

/// (schema, table, relkind) of every table in the publication.
async fn published_tables(src: &Session, publication: &str) -> Result<Vec<(String, String, String)>, EngineError> {
    let exists = src
        .maybe_row("looking for the publication", "SELECT 1 FROM pg_publication WHERE pubname = $1", &[&publication])
        .await?
        .is_some();
    if !exists {
        return Err(EngineError::definite(
            "publication_missing",
            format!("{}: publication {publication} does not exist in {}", src.place().label(), src.database()),
            "The link was removed: cancel the cutover and start the migration again.",
        ));
    }
    let rows = src
        .rows(
            "listing the published tables",
            "SELECT n.nspname::text, c.relname::text, c.relkind::text
             FROM pg_publication p JOIN pg_publication_rel pr ON pr.prpubid = p.oid
             JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE p.pubname = $1 ORDER BY 1, 2",
            &[&publication],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

async fn count_rows(session: &Session, tables: &[(String, String, String)]) -> Result<Vec<u64>, EngineError> {
    let mut counts = Vec::with_capacity(tables.len());
    for (schema, name, kind) in tables {
        // A partitioned table counts its partitions; a plain one only itself (its inheritance children,
        // if any, are published and counted on their own).
        let only = if kind == "p" { "" } else { "ONLY " };
        let sql = format!("SELECT count(*) FROM {only}{}", qualified(schema, name));
        let count: i64 = session.row("counting rows", &sql, &[]).await?.get(0);
        counts.push(count.max(0) as u64);
    }
    Ok(counts)
}
