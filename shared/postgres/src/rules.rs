//! What logical replication cannot carry, found in one database: the assessment rules.
//!
//! The same rules serve three callers. `assess` reports them for every database; `validate` repeats them
//! for the database being linked, so a blocker found since the last assessment still stops the start; and
//! `create_link` uses the table list to build the publication, refusing any table whose UPDATEs and DELETEs
//! could not be replicated, so no such table is ever published silently. The facts come from the
//! catalogs in a couple of queries per database, which keeps a fleet-wide assessment cheap.
//!
//! The rules follow the PostgreSQL documentation's restrictions of logical replication: replica identity
//! (UPDATE/DELETE need a primary key, a unique index chosen as identity, or FULL with column types that
//! have an equality operator), unlogged tables and materialized views (cannot be published), foreign tables
//! (not replicated), large objects (never replicated, no workaround), sequences (synced at cutover) and
//! extensions (must exist on the target; checked by validate).
use crate::connect::Session;
use crate::sql::qualified;
use milink_core::{Finding, Severity};

/// One relation of the database that the rules look at.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub(crate) schema: String,
    pub(crate) name: String,
    /// `r` table, `p` partitioned table, `m` materialized view, `f` foreign table.
    pub(crate) kind: char,
    pub(crate) unlogged: bool,
    pub(crate) is_partition: bool,
    /// `key`, `index`, `full` or `none`: what UPDATE and DELETE can be matched by on the target.
    pub(crate) identity: String,
    /// Whether milink's role owns it (CREATE PUBLICATION ... FOR TABLE needs ownership).
    pub(crate) owned: bool,
}

impl Table {
    /// `"schema"."name"`, quoted, for SQL.
    pub(crate) fn sql_name(&self) -> String {
        qualified(&self.schema, &self.name)
    }

    /// `schema.name`, for people.
    pub(crate) fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Tables whose rows logical replication carries.
    fn holds_replicated_rows(&self) -> bool {
        matches!(self.kind, 'r' | 'p') && !self.unlogged
    }

    /// Goes into the publication: permanent tables and partition roots (a root brings its partitions).
    pub(crate) fn is_published(&self) -> bool {
        self.holds_replicated_rows() && !self.is_partition
    }
}

/// The relations milink looks at, as a predicate on `pg_class c` joined to `pg_namespace n`: user
/// schemas only, no temporary relations, and no extension members (PostGIS's spatial_ref_sys, ...), which
/// arrive with CREATE EXTENSION on the target; nor parallel seeding's record on the target (`milink_seed`).
pub(crate) const USER_RELATION: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'milink_seed')
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
      AND c.relpersistence <> 't'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')";

/// Every table, partition, materialized view and foreign table of the session's database.
pub(crate) async fn tables(session: &Session) -> Result<Vec<Table>, milink_core::EngineError> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relpersistence = 'u', c.relispartition,
                CASE
                  WHEN c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index i
                                                        WHERE i.indrelid = c.oid AND i.indisprimary) THEN 'key'
                  WHEN c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_index i
                                                        WHERE i.indrelid = c.oid AND i.indisreplident) THEN 'index'
                  WHEN c.relreplident = 'f' THEN 'full'
                  ELSE 'none'
                END,
                pg_has_role(c.relowner, 'USAGE')
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE {USER_RELATION} AND c.relkind IN ('r', 'p', 'm', 'f')
         ORDER BY 1, 2"
    );
    let rows = session.rows("listing tables", &sql, &[]).await?;
    Ok(rows
        .iter()
        .map(|row| Table {
            schema: row.get(0),
            name: row.get(1),
            kind: row.get::<_, String>(2).chars().next().unwrap_or('r'),
            unlogged: row.get(3),
            is_partition: row.get(4),
            identity: row.get(5),
            owned: row.get(6),
        })
        .collect())
}

/// Columns of REPLICA IDENTITY FULL tables whose type has no equality operator: the target cannot find
/// the row to update, so apply stops (e.g. `point`, `box`, `json`).
async fn full_identity_columns_without_equality(session: &Session) -> Result<Vec<String>, milink_core::EngineError> {
    let sql = format!(
        "WITH cols AS (
           SELECT n.nspname::text AS schema, c.relname::text AS tbl, a.attname::text AS col,
                  format_type(a.atttypid, a.atttypmod) AS type_name,
                  CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END AS base
           FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           JOIN pg_type t ON t.oid = a.atttypid
           WHERE {USER_RELATION} AND c.relkind = 'r' AND c.relreplident = 'f')
         SELECT schema || '.' || tbl || '.' || col || ' (' || type_name || ')'
         FROM cols JOIN pg_type b ON b.oid = cols.base
         WHERE NOT EXISTS (
           SELECT 1 FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod
           WHERE am.amname IN ('btree', 'hash') AND oc.opcdefault
             AND (oc.opcintype = b.oid
                  OR (b.typcategory = 'A' AND oc.opcintype = 'anyarray'::regtype)
                  OR (b.typtype = 'e' AND oc.opcintype = 'anyenum'::regtype)
                  OR (b.typtype = 'r' AND oc.opcintype = 'anyrange'::regtype)
                  OR (b.typtype = 'm' AND oc.opcintype = to_regtype('anymultirange'))
                  OR (b.typtype = 'c' AND oc.opcintype = 'record'::regtype)
                  OR EXISTS (SELECT 1 FROM pg_cast pc WHERE pc.castsource = b.oid
                             AND pc.casttarget = oc.opcintype AND pc.castmethod = 'b')))
         ORDER BY 1"
    );
    let rows = session.rows("checking REPLICA IDENTITY FULL column types", &sql, &[]).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Findings for the session's database, plus the facts callers reuse.
pub(crate) struct DatabaseFacts {
    pub(crate) findings: Vec<Finding>,
    pub(crate) size_bytes: u64,
}

/// Runs every rule on the session's database. `superuser` relaxes the ownership rule.
pub(crate) async fn inspect(session: &Session, superuser: bool) -> Result<DatabaseFacts, milink_core::EngineError> {
    let tables = tables(session).await?;
    let unequal = if tables.iter().any(|t| t.identity == "full") {
        full_identity_columns_without_equality(session).await?
    } else {
        Vec::new()
    };
    let counts = session
        .row(
            "counting large objects, sequences and the database size",
            &format!(
                "SELECT (SELECT count(*) FROM pg_largeobject_metadata),
                        (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE {USER_RELATION} AND c.relkind = 'S'),
                        pg_database_size(current_database())"
            ),
            &[],
        )
        .await?;
    let (large_objects, sequences, size): (i64, i64, i64) = (counts.get(0), counts.get(1), counts.get(2));
    let lo_columns = session
        .rows(
            "finding large object columns",
            &format!(
                "SELECT n.nspname || '.' || c.relname || '.' || a.attname
                 FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                 JOIN pg_type t ON t.oid = a.atttypid
                 WHERE {USER_RELATION} AND c.relkind = 'r' AND t.typname IN ('oid', 'lo')
                 ORDER BY 1"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect::<Vec<_>>();
    let extensions = session
        .rows(
            "listing extensions",
            "SELECT extname || ' ' || extversion FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect::<Vec<_>>();

    let mut findings = table_findings(&tables, &unequal, superuser);
    if large_objects > 0 {
        findings.push(
            Finding::new(
                "large_objects",
                Severity::Warning,
                format!("{large_objects} large object(s): logical replication never carries large objects"),
                "Move them yourself after cutover (pg_dump --large-objects --data-only of this database restored \
                 into the target), or store the content in bytea columns before migrating.",
            )
            .with_objects(lo_columns),
        );
    }
    if !extensions.is_empty() {
        findings.push(
            Finding::new(
                "extensions",
                Severity::Info,
                format!("{} extension(s) in use; the schema copy creates them on the target", extensions.len()),
                "Make sure the target can install each of them (validation checks this before the link starts).",
            )
            .with_objects(extensions),
        );
    }
    if sequences > 0 {
        findings.push(Finding::new(
            "sequences",
            Severity::Info,
            format!("{sequences} sequence(s): logical replication does not carry sequence values"),
            "Nothing to do: milink sets every sequence on the target from the source at cutover.",
        ));
    }
    Ok(DatabaseFacts { findings, size_bytes: size.max(0) as u64 })
}

/// The rules that look only at the table list (pure, so they are tested without a server).
pub(crate) fn table_findings(tables: &[Table], unequal_full_columns: &[String], superuser: bool) -> Vec<Finding> {
    let names = |keep: &dyn Fn(&Table) -> bool| -> Vec<String> {
        tables.iter().filter(|t| keep(t)).map(Table::display_name).collect()
    };
    let mut findings = Vec::new();
    let without_identity = names(&|t| t.holds_replicated_rows() && t.kind == 'r' && t.identity == "none");
    if !without_identity.is_empty() {
        findings.push(
            Finding::new(
                "table_without_replica_identity",
                Severity::Blocker,
                format!(
                    "{} table(s) have no primary key and no usable replica identity: once published, every UPDATE \
                     and DELETE on them fails on the source, and the target could not apply them",
                    without_identity.len()
                ),
                "Add a primary key (ALTER TABLE ... ADD PRIMARY KEY (...)), or make a unique index on NOT NULL \
                 columns the identity (ALTER TABLE ... REPLICA IDENTITY USING INDEX ...), or, last resort, ALTER \
                 TABLE ... REPLICA IDENTITY FULL (every UPDATE/DELETE then scans the table on the target).",
            )
            .with_objects(without_identity),
        );
    }
    if !unequal_full_columns.is_empty() {
        findings.push(
            Finding::new(
                "replica_identity_full_unsupported_type",
                Severity::Blocker,
                "REPLICA IDENTITY FULL tables have columns without an equality operator: the target cannot find \
                 the rows to update or delete",
                "Give these tables a primary key or a unique identity index instead of REPLICA IDENTITY FULL.",
            )
            .with_objects(unequal_full_columns.to_vec()),
        );
    }
    let full = names(&|t| t.holds_replicated_rows() && t.kind == 'r' && t.identity == "full");
    if !full.is_empty() {
        findings.push(
            Finding::new(
                "replica_identity_full",
                Severity::Warning,
                "tables replicate with REPLICA IDENTITY FULL: each UPDATE or DELETE scans the table on the target, \
                 so lag grows with table size",
                "Add a primary key or a unique identity index where you can.",
            )
            .with_objects(full),
        );
    }
    let unlogged = names(&|t| matches!(t.kind, 'r' | 'p') && t.unlogged);
    if !unlogged.is_empty() {
        findings.push(
            Finding::new(
                "unlogged_table",
                Severity::Warning,
                "unlogged tables cannot be published: their definition is copied, their rows are not",
                "Accept that they start empty on the target (caches usually can), or ALTER TABLE ... SET LOGGED \
                 before migrating.",
            )
            .with_objects(unlogged),
        );
    }
    let views = names(&|t| t.kind == 'm');
    if !views.is_empty() {
        findings.push(
            Finding::new(
                "materialized_view",
                Severity::Warning,
                "materialized views are not replicated: the target gets their definition without rows",
                "Run REFRESH MATERIALIZED VIEW on the target after cutover.",
            )
            .with_objects(views),
        );
    }
    let foreign = names(&|t| t.kind == 'f');
    if !foreign.is_empty() {
        findings.push(
            Finding::new(
                "foreign_table",
                Severity::Warning,
                "foreign tables are not replicated: their data lives on another server",
                "Create the foreign server and user mappings on the target and check the target can reach it.",
            )
            .with_objects(foreign),
        );
    }
    let not_owned = names(&|t| t.is_published() && !t.owned);
    if !superuser && !not_owned.is_empty() {
        findings.push(
            Finding::new(
                "tables_not_owned",
                Severity::Blocker,
                "milink's role does not own these tables, and CREATE PUBLICATION ... FOR TABLE needs ownership",
                "Use a superuser, or grant milink's role membership in the owning role(s).",
            )
            .with_objects(not_owned),
        );
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, kind: char, identity: &str) -> Table {
        Table {
            schema: "public".into(),
            name: name.into(),
            kind,
            unlogged: false,
            is_partition: false,
            identity: identity.into(),
            owned: true,
        }
    }

    #[test]
    fn a_table_without_key_is_a_blocker_that_names_it() {
        let findings = table_findings(&[table("orders", 'r', "key"), table("events", 'r', "none")], &[], true);
        let blocker = findings.iter().find(|f| f.severity == Severity::Blocker).unwrap();
        assert_eq!(blocker.rule, "table_without_replica_identity");
        assert_eq!(blocker.objects, vec!["public.events".to_owned()]);
    }

    #[test]
    fn unlogged_matviews_and_foreign_tables_are_warnings_and_never_published() {
        let mut cache = table("cache", 'r', "key");
        cache.unlogged = true;
        let tables = [cache, table("summary", 'm', "none"), table("remote", 'f', "none")];
        let findings = table_findings(&tables, &[], true);
        assert!(findings.iter().all(|f| f.severity == Severity::Warning), "{findings:?}");
        assert_eq!(findings.len(), 3);
        assert!(tables.iter().all(|t| !t.is_published()));
    }

    #[test]
    fn partitions_are_published_through_their_root() {
        let mut leaf = table("m_2024", 'r', "key");
        leaf.is_partition = true;
        assert!(!leaf.is_published());
        assert!(table("m", 'p', "none").is_published());
        assert!(table_findings(&[table("m", 'p', "none"), leaf], &[], true).is_empty());
    }

    #[test]
    fn ownership_matters_only_without_superuser() {
        let mut foreign_owned = table("t", 'r', "key");
        foreign_owned.owned = false;
        assert!(table_findings(std::slice::from_ref(&foreign_owned), &[], true).is_empty());
        assert_eq!(table_findings(&[foreign_owned], &[], false)[0].rule, "tables_not_owned");
    }
}
