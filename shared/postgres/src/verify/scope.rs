//! What a verification covers: the link's publication against every user table of the source, the
//! target's tables, and per table the columns (by name, with their types) and the key the chunks follow.
//!
//! The scope check exists because the publication is a list fixed when the link was made: a table created
//! on the source afterwards is simply not replicated, and a row comparison limited to the publication
//! would call the copy clean. So every permanent user table of the source must be in the publication and
//! on the target with the same columns, and the target must hold no table the source lacks; each
//! violation is a [`Difference`], never a silent skip. Unlogged tables are outside the scope: logical
//! replication does not carry their rows, by design, and the assessment says so before the link exists.
use crate::connect::Session;
use crate::rules::USER_RELATION;
use milink_core::migration::{Difference, DifferenceKind};
use milink_core::EngineError;
use std::collections::{BTreeMap, BTreeSet};

/// One column as the hash reads it.
#[derive(Debug, Clone)]
pub(super) struct Column {
    pub(super) name: String,
    /// `format_type` output, e.g. `character varying(20)`; from the catalog, safe to put in SQL.
    pub(super) type_sql: String,
    /// The extended hash function of its type's default hash opclass (e.g. `hashint4extended`), from the
    /// catalog; None when the type has none declared on the type itself (then its text form is hashed).
    pub(super) hash_function: Option<String>,
    /// Numeric category: shown bare in key text (`(42)`), others quoted (`('a')`).
    pub(super) numeric: bool,
}

/// A table in scope, as both sides will read it.
#[derive(Debug, Clone)]
pub(super) struct TableSpec {
    pub(super) schema: String,
    pub(super) name: String,
    /// A partitioned table is read through its parent (without ONLY): its partitions are not published
    /// on their own, and the parent's key ranges cover every partition.
    pub(super) partitioned: bool,
    /// Every column, sorted by name: a different physical column order on the target does not matter.
    pub(super) columns: Vec<Column>,
    /// The primary key, else the replica identity index; empty for a REPLICA IDENTITY FULL table.
    pub(super) key: Vec<Column>,
    /// Rows the planner expects (for the number of chunks; never trusted for the comparison).
    pub(super) estimated_rows: f64,
}

impl TableSpec {
    pub(super) fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// The scope: tables to compare, and the differences found before reading a row.
pub(super) struct Scope {
    pub(super) tables: Vec<TableSpec>,
    pub(super) differences: Vec<Difference>,
}

/// (schema, table) → `name type, ...` sorted by name, for every permanent user table (partitions excluded:
/// their parent stands for them).
type Shapes = BTreeMap<(String, String), String>;

async fn shapes(session: &Session) -> Result<Shapes, EngineError> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text,
                coalesce(string_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod), ', '
                                    ORDER BY a.attname), '')
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE {USER_RELATION} AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p'
         GROUP BY 1, 2"
    );
    let rows = session.rows("reading table definitions for the verification", &sql, &[]).await?;
    Ok(rows.iter().map(|row| ((row.get(0), row.get(1)), row.get(2))).collect())
}

async fn published(src: &Session, publication: &str) -> Result<BTreeSet<(String, String)>, EngineError> {
    let exists = src
        .maybe_row("looking for the publication", "SELECT 1 FROM pg_publication WHERE pubname = $1", &[&publication])
        .await?
        .is_some();
    if !exists {
        return Err(EngineError::definite(
            "publication_missing",
            format!("{}: publication {publication} does not exist in {}", src.place().label(), src.database()),
            "The link was removed: cancel the migration and start it again.",
        ));
    }
    let rows = src
        .rows(
            "listing the published tables",
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1
             UNION
             SELECT n.nspname::text, c.relname::text
             FROM pg_publication p JOIN pg_publication_rel pr ON pr.prpubid = p.oid
             JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE p.pubname = $1",
            &[&publication],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

fn difference(kind: DifferenceKind, object: String, detail: &str, remediation: &str) -> Difference {
    Difference { kind, object, detail: detail.into(), remediation: remediation.into() }
}

/// What decides the scope: both sides' tables with their columns, the link's publication, and each
/// source table's kind and key (what [`of`] reads besides the column types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Catalog {
    source: Shapes,
    target: Shapes,
    in_link: BTreeSet<(String, String)>,
    keys: Shapes,
}

/// Reads both catalogs' part of the scope (four statements, at once).
pub(super) async fn catalog(src: &Session, tgt: &Session, publication: &str) -> Result<Catalog, EngineError> {
    let (source, target, in_link, keys) = tokio::try_join!(shapes(src), shapes(tgt), published(src, publication), keys(src))?;
    Ok(Catalog { source, target, in_link, keys })
}

/// (schema, table) → its kind and key columns (primary key, else replica identity index), in key order.
async fn keys(session: &Session) -> Result<Shapes, EngineError> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text,
                c.relkind::text || ' ' || coalesce((
                  SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY u.position)
                  FROM (SELECT i.indkey FROM pg_index i WHERE i.indrelid = c.oid AND (i.indisprimary OR i.indisreplident)
                        ORDER BY i.indisprimary DESC LIMIT 1) k,
                       unnest(k.indkey) WITH ORDINALITY AS u(attnum, position)
                  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = u.attnum), '')
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE {USER_RELATION} AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p'"
    );
    let rows = session.rows("reading table keys for the verification", &sql, &[]).await?;
    Ok(rows.iter().map(|row| ((row.get(0), row.get(1)), row.get(2))).collect())
}

/// Reads both catalogs and returns the tables to compare plus every scope difference.
pub(super) async fn scope(src: &Session, tgt: &Session, publication: &str) -> Result<Scope, EngineError> {
    of(src, &catalog(src, tgt, publication).await?).await
}

/// The scope a [`Catalog`] makes (each comparable table's key and hash functions read from the source).
pub(super) async fn of(src: &Session, catalog: &Catalog) -> Result<Scope, EngineError> {
    let Catalog { source: source_shapes, target: target_shapes, in_link, .. } = catalog;
    let mut differences = Vec::new();
    let mut comparable = Vec::new();
    for (key, columns) in source_shapes {
        let object = format!("{}.{}", key.0, key.1);
        if !in_link.contains(key) {
            differences.push(difference(
                DifferenceKind::MissingTable,
                object,
                "not replicated: the table is not in the link's publication (created after the link?)",
                "Create the table on the target and add it to the link (or drop it on the source), then verify again.",
            ));
            continue;
        }
        match target_shapes.get(key) {
            None => differences.push(difference(
                DifferenceKind::MissingTable,
                object,
                "missing on the target",
                "Create the table on the target with the source's definition, then verify again.",
            )),
            Some(other) if other != columns => differences.push(Difference {
                kind: DifferenceKind::Columns,
                object,
                detail: format!("columns differ: source ({columns}), target ({other})"),
                remediation: "Make the target's columns match the source's (names and types), then verify again.".into(),
            }),
            Some(_) => comparable.push(key.clone()),
        }
    }
    for key in target_shapes.keys().filter(|k| !source_shapes.contains_key(*k)) {
        differences.push(difference(
            DifferenceKind::ExtraTable,
            format!("{}.{}", key.0, key.1),
            "exists on the target only",
            "Drop it on the target if it is not meant to be there, then verify again.",
        ));
    }
    // Pipelined on the one session: a round trip per table would add up inside the cutover's window.
    let tables = futures::future::try_join_all(comparable.iter().map(|(schema, name)| table_spec(src, schema, name))).await?;
    Ok(Scope { tables, differences })
}

const COLUMN_FACTS: &str = "format_type(a.atttypid, a.atttypmod),
    (SELECT ap.amproc::regproc::text
     FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod
     JOIN pg_amproc ap ON ap.amprocfamily = oc.opcfamily AND ap.amprocnum = 2
                      AND ap.amproclefttype = oc.opcintype AND ap.amprocrighttype = oc.opcintype
     JOIN pg_proc p ON p.oid = ap.amproc
     WHERE am.amname = 'hash' AND oc.opcdefault
       AND oc.opcintype = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
       -- callable on the value as it is (timestamptz's is declared on timestamp, bytea's on internal)
       AND p.proargtypes[0] = oc.opcintype
     LIMIT 1),
    t.typcategory = 'N'";

async fn table_spec(src: &Session, schema: &str, name: &str) -> Result<TableSpec, EngineError> {
    let relation = crate::sql::qualified(schema, name);
    let head = src
        .row(
            "reading a table's size and kind",
            "SELECT c.relkind = 'p',
                    (SELECT coalesce(sum(CASE WHEN l.reltuples > 0 THEN l.reltuples
                                              ELSE pg_relation_size(l.oid) / 100.0 END), 0)::float8
                     FROM pg_class l
                     WHERE l.relkind = 'r'
                       AND (l.oid = c.oid OR l.oid IN (SELECT relid FROM pg_partition_tree(c.oid) WHERE isleaf)))
             FROM pg_class c WHERE c.oid = $1::text::regclass",
            &[&relation],
        )
        .await?;
    let columns_sql = format!(
        "SELECT a.attname::text, {COLUMN_FACTS}
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
         WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attname"
    );
    let columns = src.rows("reading a table's columns", &columns_sql, &[&relation]).await?.iter().map(column).collect();
    // The primary key first, else the replica identity index: both are unique, NOT NULL and btree, so
    // key ranges and row comparisons on them are well defined and use the index.
    let key_sql = format!(
        "SELECT a.attname::text, {COLUMN_FACTS}
         FROM (SELECT i.indkey FROM pg_index i WHERE i.indrelid = $1::text::regclass
                 AND (i.indisprimary OR i.indisreplident)
               ORDER BY i.indisprimary DESC LIMIT 1) k,
              unnest(k.indkey) WITH ORDINALITY AS u(attnum, position)
         JOIN pg_attribute a ON a.attrelid = $1::text::regclass AND a.attnum = u.attnum
         JOIN pg_type t ON t.oid = a.atttypid
         ORDER BY u.position"
    );
    let key = src.rows("reading a table's key", &key_sql, &[&relation]).await?.iter().map(column).collect();
    Ok(TableSpec {
        schema: schema.to_owned(),
        name: name.to_owned(),
        partitioned: head.get(0),
        columns,
        key,
        estimated_rows: head.get(1),
    })
}

fn column(row: &tokio_postgres::Row) -> Column {
    Column { name: row.get(0), type_sql: row.get(1), hash_function: row.get(2), numeric: row.get(3) }
}
