//! `finalize(plan)`: after the fence and the drain, what logical replication does not carry, then the
//! proof that the target holds the source's content.
//!
//! Sequences: logical replication never carries sequence values. Each sequence's `last_value` and
//! `is_called` are read from the sequence relation itself, as pg_dump does (`pg_sequences` hides
//! `is_called`, so a `setval(s, 100, false)` on the source would come out as 101 on the target), and set
//! on the target with `setval(seq, last_value, is_called)`; the target is then read back and any sequence
//! whose next value would differ is a `Sequence` difference. Free-standing sequences are included. A
//! sequence missing on the target is schema drift and a definite error.
//!
//! Large objects: not carried by logical replication, so carried here: every large object of the source
//! (`pg_largeobject_metadata`) whose content the target lacks or holds differently is (re)created on the
//! target with the same OID and content (`lo_from_bytea`). Afterwards both sides are compared by md5; any
//! object still missing or different, or present on the target only, is a `LargeObjects` difference, so
//! a verification is never clean with OIDs pointing at nothing. Objects over 1 GB cannot go through a
//! single bytea and are reported, not carried. Owners and privileges of large objects are not copied.
//!
//! Then the content (`verify::compare_static`), exact because both sides are static: only what changed
//! since the full verification made before the fence (`verify::before_fence`, tracked by logical slots),
//! or every table when that verification was not tracked. All of it lies inside the cutover's write
//! downtime; see the `verify` module doc for its cost.
use crate::connect::{Server, Session};
use crate::rules::USER_RELATION;
use crate::sql::{qualified, quote_literal};
use crate::verify;
use milink_core::migration::{Difference, DifferenceKind, Verification};
use milink_core::ports::LinkPlan;
use milink_core::EngineError;
use std::collections::BTreeMap;

/// Sequences read or set per statement.
const SEQUENCES_PER_STATEMENT: usize = 500;
/// Large objects over this size are not carried (one bytea holds at most 1 GB).
const MAX_LARGE_OBJECT: i64 = 1 << 30;

pub(crate) async fn finalize(plan: &LinkPlan) -> Result<Verification, EngineError> {
    let source = Server::new("source", &plan.source)?;
    let target = Server::new("target", &plan.target)?;
    let database = plan.database.as_str();
    // Sequences and large objects, and the tables' comparison, at once: both sides are static, and they
    // touch different things.
    let carried = async {
        let (src, tgt) = tokio::try_join!(source.connect(Some(database)), target.connect(Some(database)))?;
        // The target may be fenced: the source, when failing back over a reverse link (`reverse`).
        crate::connect::writable(&tgt).await?;
        let (sequences_set, mut differences) = sync_sequences(&src, &tgt).await?;
        differences.extend(carry_large_objects(&src, &tgt).await?);
        Ok::<_, EngineError>((sequences_set, differences))
    };
    let (carried, verification) = tokio::join!(carried, verify::compare_static(plan));
    let ((sequences_set, differences), mut verification) = (carried?, verification?);
    verification.sequences_set = sequences_set;
    verification.differences.extend(differences);
    tracing::info!(
        database,
        tables = verification.tables.len(),
        mismatches = verification.mismatches().len(),
        differences = verification.differences.len(),
        sequences = sequences_set,
        "finalized"
    );
    Ok(verification)
}

/// (schema, name) → (last_value, is_called, increment).
type SequenceStates = BTreeMap<(String, String), (i64, bool, i64)>;

/// Reads every named sequence's state from the sequence relation itself.
async fn sequence_states(session: &Session, names: &[(String, String)]) -> Result<SequenceStates, EngineError> {
    let mut states = SequenceStates::new();
    for batch in names.chunks(SEQUENCES_PER_STATEMENT) {
        let parts: Vec<String> = batch
            .iter()
            .enumerate()
            .map(|(n, (schema, name))| {
                let relation = qualified(schema, name);
                format!(
                    "SELECT {n}, last_value, is_called,
                            (SELECT seqincrement FROM pg_sequence WHERE seqrelid = {}::regclass) FROM {relation}",
                    quote_literal(&relation)
                )
            })
            .collect();
        for row in session.rows("reading sequence values", &parts.join(" UNION ALL "), &[]).await? {
            let n: i32 = row.get(0);
            states.insert(batch[n as usize].clone(), (row.get(1), row.get(2), row.get(3)));
        }
    }
    Ok(states)
}

async fn sync_sequences(src: &Session, tgt: &Session) -> Result<(u32, Vec<Difference>), EngineError> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, has_sequence_privilege(c.oid, 'SELECT')
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE {USER_RELATION} AND c.relkind = 'S' ORDER BY 1, 2"
    );
    let rows = src.rows("listing sequences on the source", &sql, &[]).await?;
    if rows.is_empty() {
        return Ok((0, Vec::new()));
    }
    let unreadable: Vec<String> =
        rows.iter().filter(|r| !r.get::<_, bool>(2)).map(|r| format!("{}.{}", r.get::<_, String>(0), r.get::<_, String>(1))).collect();
    if !unreadable.is_empty() {
        return Err(EngineError::definite(
            "sequence_not_readable",
            format!("{}: milink's role cannot read sequences: {}", src.place().label(), unreadable.join(", ")),
            "GRANT SELECT ON these sequences to milink's role (or use a superuser), then finalize again.",
        ));
    }
    let names: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let (schemas, relnames): (Vec<String>, Vec<String>) = names.iter().cloned().unzip();
    let missing: Vec<String> = tgt
        .rows(
            "checking the sequences exist on the target",
            "SELECT u.s || '.' || u.n FROM unnest($1::text[], $2::text[]) AS u(s, n)
             WHERE to_regclass(format('%I.%I', u.s, u.n)) IS NULL",
            &[&schemas, &relnames],
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
    let source_states = sequence_states(src, &names).await?;
    let values: Vec<i64> = names.iter().map(|k| source_states[k].0).collect();
    let called: Vec<bool> = names.iter().map(|k| source_states[k].1).collect();
    tgt.row(
        "setting sequences on the target",
        "SELECT count(setval(format('%I.%I', u.s, u.n)::regclass, u.v, u.called))
         FROM unnest($1::text[], $2::text[], $3::int8[], $4::bool[]) AS u(s, n, v, called)",
        &[&schemas, &relnames, &values, &called],
    )
    .await?;
    let target_states = sequence_states(tgt, &names).await?;
    let differences = names
        .iter()
        .filter_map(|key| {
            let (source_next, target_next) = (next_value(source_states[key]), target_states.get(key).copied().map(next_value));
            (Some(source_next) != target_next).then(|| Difference {
                kind: DifferenceKind::Sequence,
                object: format!("{}.{}", key.0, key.1),
                detail: format!(
                    "the next value would be {} on the target, {source_next} on the source",
                    target_next.map_or("unknown".into(), |v| v.to_string())
                ),
                remediation: "Make the sequence's definition (increment, bounds) on the target match the source's, then cut over again.".into(),
            })
        })
        .collect();
    Ok((names.len() as u32, differences))
}

/// The value nextval would hand out next (ignoring bounds and cycling).
fn next_value((last, called, increment): (i64, bool, i64)) -> i64 {
    if called {
        last.saturating_add(increment)
    } else {
        last
    }
}

/// oid → (size, md5) of every large object of the session's database.
async fn large_objects(session: &Session) -> Result<BTreeMap<u32, (i64, String)>, EngineError> {
    let rows = session
        .rows(
            "reading large objects",
            "SELECT m.oid, coalesce(sum(length(p.data)), 0)::int8, md5(coalesce(string_agg(p.data, ''::bytea ORDER BY p.pageno), ''::bytea))
             FROM pg_largeobject_metadata m LEFT JOIN pg_largeobject p ON p.loid = m.oid
             GROUP BY m.oid",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect())
}

async fn carry_large_objects(src: &Session, tgt: &Session) -> Result<Vec<Difference>, EngineError> {
    let source = large_objects(src).await?;
    let target = large_objects(tgt).await?;
    if source.is_empty() && target.is_empty() {
        return Ok(Vec::new());
    }
    let mut carried = 0;
    for (oid, (size, md5)) in &source {
        if target.get(oid).is_some_and(|(_, other)| other == md5) || *size > MAX_LARGE_OBJECT {
            continue;
        }
        let data: Vec<u8> = src.row("reading a large object", "SELECT lo_get($1)", &[oid]).await?.get(0);
        if target.contains_key(oid) {
            tgt.row("removing a differing large object", "SELECT lo_unlink($1)", &[oid]).await?;
        }
        tgt.row("creating a large object", "SELECT lo_from_bytea($1, $2)", &[oid, &data]).await?;
        carried += 1;
    }
    let after = large_objects(tgt).await?;
    let mut problems: Vec<String> = source
        .iter()
        .filter(|(oid, (_, md5))| after.get(oid).map(|(_, other)| other) != Some(md5))
        .map(|(oid, (size, _))| format!("{oid} ({size} bytes) missing or different on the target"))
        .collect();
    problems.extend(after.keys().filter(|oid| !source.contains_key(oid)).map(|oid| format!("{oid} exists on the target only")));
    tracing::info!(carried, total = source.len(), "large objects carried");
    if problems.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![Difference {
        kind: DifferenceKind::LargeObjects,
        object: "large objects".into(),
        detail: format!("{} large object(s) differ: {}", problems.len(), problems.into_iter().take(10).collect::<Vec<_>>().join(", ")),
        remediation: "Copy these large objects to the target by hand (lo_export / lo_import with the same OID) or remove them, then cut over again.".into(),
    }])
}
