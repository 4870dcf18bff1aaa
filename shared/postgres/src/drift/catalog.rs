//! What the drift check reads from each side's catalogs: one snapshot per side, and a fingerprint of it.
//!
//! The snapshot is three lists read by three queries — relations (tables, partitions, sequences),
//! columns, and the link's membership (on the source the publication's direct members and the leaves it
//! replicates, on the target the subscription's tables) — because those are exactly the facts the
//! comparison needs. The fingerprint is the md5 of the *same* queries' rows, computed by the server, so
//! a poll that finds both fingerprints unchanged skips the transfer and the comparison, and the two can
//! never disagree about what they cover.
use crate::connect::Session;
use crate::rules::USER_RELATION;
use milink_core::EngineError;
use std::collections::{BTreeMap, BTreeSet};

/// (schema, name).
pub(crate) type Name = (String, String);

/// A table, partition or sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relation {
    /// `r` table, `p` partitioned table, `S` sequence.
    pub(crate) kind: char,
    pub(crate) unlogged: bool,
    pub(crate) is_partition: bool,
    /// Whether UPDATE and DELETE can be replicated (a primary key, a replica identity index, or FULL).
    pub(crate) has_identity: bool,
    /// For a partition: its parent, and the clause that makes a table a partition of it like this one
    /// (`FOR VALUES ...`, plus `PARTITION BY ...` when it is partitioned itself).
    pub(crate) partition_of: Option<(Name, String)>,
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Column {
    pub(crate) name: String,
    /// `format_type` of type and typmod: `character varying(20)`, `numeric(10,2)`, `"My Type"`.
    pub(crate) type_name: String,
    /// `COLLATE "schema"."name"` when it is not the type's default collation, else empty.
    pub(crate) collation: String,
    pub(crate) not_null: bool,
    /// The default (or the generation expression), as the server prints it.
    pub(crate) default: Option<String>,
    /// `s` for a stored generated column, else empty.
    pub(crate) generated: String,
    /// `a`/`d` for identity columns, else empty.
    pub(crate) identity: String,
    /// The value rows that existed before the column was added read (PostgreSQL's "fast default",
    /// `attmissingval`), as text: exact even when the default was `now()`.
    pub(crate) missing_value: Option<String>,
}

/// One side's catalog, as the comparison needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) relations: BTreeMap<Name, Relation>,
    /// Per table (not sequences), its columns in attribute order.
    pub(crate) columns: BTreeMap<Name, Vec<Column>>,
    /// Source: the publication's direct members. Target: unused (empty).
    pub(crate) published: BTreeSet<Name>,
    /// Source: the tables the publication replicates (leaves of partitioned members). Target: the
    /// subscription's tables.
    pub(crate) replicated: BTreeSet<Name>,
}

fn relations_sql() -> String {
    format!(
        "SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relpersistence = 'u', c.relispartition,
                c.relkind <> 'r'
                OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
                OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident))
                OR c.relreplident = 'f',
                pn.nspname::text, p.relname::text,
                pg_get_expr(c.relpartbound, c.oid)
                || CASE WHEN c.relkind = 'p' THEN ' PARTITION BY ' || pg_get_partkeydef(c.oid) ELSE '' END
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_inherits i ON c.relispartition AND i.inhrelid = c.oid
         LEFT JOIN pg_class p ON p.oid = i.inhparent
         LEFT JOIN pg_namespace pn ON pn.oid = p.relnamespace
         WHERE {USER_RELATION} AND c.relkind IN ('r', 'p', 'S')"
    )
}

fn columns_sql() -> String {
    format!(
        "SELECT n.nspname::text, c.relname::text, a.attnum::int, a.attname::text, format_type(a.atttypid, a.atttypmod),
                CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
                     THEN 'COLLATE ' || quote_ident(cn.nspname) || '.' || quote_ident(co.collname) ELSE '' END,
                a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attgenerated::text, a.attidentity::text,
                CASE WHEN a.atthasmissing THEN (a.attmissingval::text::text[])[1] END
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         JOIN pg_type t ON t.oid = a.atttypid
         LEFT JOIN pg_collation co ON co.oid = a.attcollation
         LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE {USER_RELATION} AND c.relkind IN ('r', 'p')"
    )
}

/// (direct member?, schema, table) of the link's publication on the source. `$1` is the link's name.
const SOURCE_MEMBERSHIP: &str = "SELECT true, n.nspname::text, c.relname::text
     FROM pg_publication p JOIN pg_publication_rel pr ON pr.prpubid = p.oid
     JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE p.pubname = $1
     UNION ALL
     SELECT false, schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1";

/// The same shape on the target: the subscription's tables (never direct members).
const TARGET_MEMBERSHIP: &str = "SELECT false, n.nspname::text, c.relname::text
     FROM pg_subscription s JOIN pg_subscription_rel sr ON sr.srsubid = s.oid
     JOIN pg_class c ON c.oid = sr.srrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE s.subname = $1 AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())";

/// Which side a snapshot is read from: the membership query differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Source,
    Target,
}

fn membership_sql(side: Side) -> &'static str {
    match side {
        Side::Source => SOURCE_MEMBERSHIP,
        Side::Target => TARGET_MEMBERSHIP,
    }
}

/// One md5 over everything [`read`] would return, computed on the server.
pub(crate) async fn fingerprint(session: &Session, side: Side, link: &str) -> Result<String, EngineError> {
    let digest = |sql: &str| format!("(SELECT coalesce(md5(string_agg(q::text, E'\\n' ORDER BY q::text)), '') FROM ({sql}) q)");
    let sql = format!(
        "SELECT {} || {} || {}",
        digest(&relations_sql()),
        digest(&columns_sql()),
        digest(membership_sql(side))
    );
    Ok(session.row("fingerprinting the schema", &sql, &[&link]).await?.get(0))
}

/// The snapshot of one side.
pub(crate) async fn read(session: &Session, side: Side, link: &str) -> Result<Snapshot, EngineError> {
    let mut snapshot = Snapshot::default();
    for row in session.rows("reading tables and sequences", &relations_sql(), &[]).await? {
        let kind = row.get::<_, String>(2).chars().next().unwrap_or('r');
        let partition_of = match (row.get::<_, Option<String>>(6), row.get::<_, Option<String>>(7), row.get(8)) {
            (Some(schema), Some(parent), Some(bound)) => Some(((schema, parent), bound)),
            _ => None,
        };
        let is_partition = row.get(4);
        let relation = Relation { kind, unlogged: row.get(3), is_partition, has_identity: row.get(5), partition_of };
        snapshot.relations.insert((row.get(0), row.get(1)), relation);
    }
    let mut rows = session.rows("reading columns", &columns_sql(), &[]).await?;
    rows.sort_by_key(|row| (row.get::<_, String>(0), row.get::<_, String>(1), row.get::<_, i32>(2)));
    for row in rows {
        let column = Column {
            name: row.get(3),
            type_name: row.get(4),
            collation: row.get(5),
            not_null: row.get(6),
            default: row.get(7),
            generated: row.get(8),
            identity: row.get(9),
            missing_value: row.get(10),
        };
        snapshot.columns.entry((row.get(0), row.get(1))).or_default().push(column);
    }
    for row in session.rows("reading the link's tables", membership_sql(side), &[&link]).await? {
        let name: Name = (row.get(1), row.get(2));
        match row.get::<_, bool>(0) {
            true => snapshot.published.insert(name),
            false => snapshot.replicated.insert(name),
        };
    }
    Ok(snapshot)
}

/// The parameters of a sequence, for creating it on the target.
pub(crate) async fn sequence_definition(session: &Session, name: &Name) -> Result<Option<String>, EngineError> {
    let row = session
        .maybe_row(
            "reading a sequence's definition",
            "SELECT format('AS %s INCREMENT BY %s MINVALUE %s MAXVALUE %s START WITH %s CACHE %s %s',
                           format_type(s.seqtypid, NULL), s.seqincrement, s.seqmin, s.seqmax, s.seqstart, s.seqcache,
                           CASE WHEN s.seqcycle THEN 'CYCLE' ELSE 'NO CYCLE' END)
             FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&name.0, &name.1],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}
