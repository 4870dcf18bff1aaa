//! The schema copy: logical replication carries rows, so the tables must exist on the target first.
//!
//! pg_dump is the only tool that reproduces a PostgreSQL schema faithfully (types, defaults, identity,
//! constraints, partitions, extensions), so we run it rather than rebuild DDL from the catalogs. Its
//! version must be at least the source's, so the binaries of the server's own major version are preferred
//! (`/usr/lib/postgresql/<major>/bin`, the Debian layout) with PATH as the fallback — the mismatch is
//! pg_easy_replicate's #138. The dump is restored with psql in a single transaction with ON_ERROR_STOP, so
//! a failed copy leaves nothing behind and a retry starts clean. Connection strings are quoted by
//! `ConnInfo`; the password travels in `PGPASSWORD` only, never on a command line.
//!
//! "Already there" is decided by comparing table shapes (columns and types of every user table): an empty
//! target gets the copy, a matching one is used as is (a resumed or pre-created target), and anything else
//! is refused, because subscribing into a different schema fails table by table later and less clearly.
use crate::connect::{Server, Session};
use crate::rules::USER_RELATION;
use milink_core::EngineError;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// (schema, table) → its columns (`name type`, sorted: replication matches columns by name).
pub(crate) type Shapes = BTreeMap<(String, String), String>;

pub(crate) async fn shapes(session: &Session) -> Result<Shapes, EngineError> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text,
                coalesce(string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', '
                                    ORDER BY a.attname), '')
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE {USER_RELATION} AND c.relkind IN ('r', 'p')
         GROUP BY 1, 2"
    );
    let rows = session.rows("reading table definitions", &sql, &[]).await?;
    Ok(rows.iter().map(|row| ((row.get(0), row.get(1)), row.get(2))).collect())
}

/// Differences between two schemas, worded for a person (at most a few).
pub(crate) fn differences(source: &Shapes, target: &Shapes) -> Vec<String> {
    let name = |(schema, table): &(String, String)| format!("{schema}.{table}");
    let mut out = Vec::new();
    for (key, columns) in source {
        let table = name(key);
        match target.get(key) {
            None => out.push(format!("{table} is missing on the target")),
            Some(other) if other != columns => out.push(format!("{table} has different columns on the target")),
            Some(_) => {}
        }
    }
    out.extend(target.keys().filter(|t| !source.contains_key(*t)).map(|t| format!("{} exists only on the target", name(t))));
    out
}

/// A PostgreSQL client program of `major`'s version when installed, else the one on PATH.
pub(crate) fn program(name: &str, major: i32) -> PathBuf {
    let versioned = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin/{name}"));
    if versioned.is_file() {
        versioned
    } else {
        PathBuf::from(name)
    }
}

pub(crate) fn command(program: PathBuf, server: &Server) -> Command {
    let mut command = Command::new(program);
    // Our connection string decides where to go; nothing from milink's environment may redirect it.
    for var in ["PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGPASSFILE", "PGSERVICE", "PGOPTIONS"] {
        command.env_remove(var);
    }
    if let Some(password) = server.password() {
        command.env("PGPASSWORD", password.expose());
    }
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    command
}

fn tool_error(code: &str, what: &str, server: &Server, detail: &str, remediation: String) -> EngineError {
    // The last lines of a tool's stderr say why; the first ones are often notices.
    let tail: Vec<&str> = detail.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = tail[tail.len().saturating_sub(4)..].join(" / ");
    EngineError::definite(code, format!("{}: {what}: {tail}", server.place().label()), remediation)
}

/// Copies the schema of `database` from source to target (whose database exists and has no tables).
pub(crate) async fn copy(
    source: &Server,
    target: &Server,
    database: &str,
    source_major: i32,
    target_major: i32,
) -> Result<(), EngineError> {
    copy_tables(source, target, database, (source_major, target_major), &[]).await
}

/// The same copy restricted to `tables` (pg_dump `--table` patterns: quote each part so it matches one
/// name exactly), or the whole schema when `tables` is empty. The drift check uses it for tables created
/// on the source after the link.
pub(crate) async fn copy_tables(
    source: &Server,
    target: &Server,
    database: &str,
    (source_major, target_major): (i32, i32),
    tables: &[String],
) -> Result<(), EngineError> {
    let patterns: Vec<String> = tables.iter().map(|table| format!("--table={table}")).collect();
    dump_and_restore(source, target, database, (source_major, target_major), &patterns, "").await
}

/// One section of the schema (`pre-data`: tables, types, functions; `post-data`: indexes, constraints,
/// triggers), restored with `trailer` (SQL) in the same transaction: seeding copies the rows between the
/// two, and records what it did atomically with the DDL.
pub(crate) async fn copy_section(
    source: &Server,
    target: &Server,
    database: &str,
    majors: (i32, i32),
    section: &str,
    trailer: &str,
) -> Result<(), EngineError> {
    dump_and_restore(source, target, database, majors, &[format!("--section={section}")], trailer).await
}

async fn dump_and_restore(
    source: &Server,
    target: &Server,
    database: &str,
    (source_major, target_major): (i32, i32),
    dump_args: &[String],
    trailer: &str,
) -> Result<(), EngineError> {
    let pg_dump = program("pg_dump", source_major);
    let mut dump = command(pg_dump.clone(), source);
    dump.args([
        "--schema-only",
        "--no-owner",
        "--no-privileges",
        "--no-publications",
        "--no-subscriptions",
        "--no-tablespaces",
        "--no-security-labels",
    ])
    .args(dump_args)
    .arg(format!("--dbname={}", source.conninfo_for_tools(database)));
    let missing = |e: std::io::Error, name: &str| {
        EngineError::definite(
            "client_tools_missing",
            format!("cannot run {name}: {e}"),
            format!(
                "Install the PostgreSQL {source_major} client tools on the machine running milink \
                 (Debian/Ubuntu: apt-get install postgresql-client-{source_major}); pg_dump must be at least as \
                 new as the source."
            ),
        )
    };
    let output = dump.output().await.map_err(|e| missing(e, &pg_dump.display().to_string()))?;
    if !output.status.success() {
        return Err(tool_error(
            "schema_copy_failed",
            "pg_dump --schema-only failed",
            source,
            &String::from_utf8_lossy(&output.stderr),
            format!(
                "Fix what pg_dump reports; a version mismatch needs the PostgreSQL {source_major} client tools \
                 (postgresql-client-{source_major})."
            ),
        ));
    }

    let psql = program("psql", target_major);
    let mut restore = command(psql.clone(), target);
    restore
        .args(["-X", "--quiet", "--single-transaction", "-v", "ON_ERROR_STOP=1", "--file=-"])
        .arg(format!("--dbname={}", target.conninfo_for_tools(database)))
        .stdin(Stdio::piped());
    let mut child = restore.spawn().map_err(|e| missing(e, &psql.display().to_string()))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut script = output.stdout;
    script.extend_from_slice(trailer.as_bytes());
    // Write and wait concurrently: psql's stderr could fill its pipe while we are still writing.
    let writer = async move {
        let result = stdin.write_all(&script).await;
        drop(stdin);
        result
    };
    let (written, finished) = tokio::join!(writer, child.wait_with_output());
    let finished = finished.map_err(|e| missing(e, "psql"))?;
    if !finished.status.success() || written.is_err() {
        return Err(tool_error(
            "schema_copy_failed",
            "restoring the schema with psql failed (nothing was kept: it ran in one transaction)",
            target,
            &String::from_utf8_lossy(&finished.stderr),
            "Fix what psql reports on the target (a missing extension or role, an older target version), then \
             start the link again."
                .into(),
        ));
    }
    tracing::info!(database, "schema copied from source to target");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_missing_changed_and_extra_tables() {
        let key = |t: &str| ("public".to_owned(), t.to_owned());
        let source: Shapes = [(key("a"), "id bigint".into()), (key("b"), "id int".into())].into();
        let target: Shapes = [(key("a"), "id integer".into()), (key("c"), "x text".into())].into();
        let diff = differences(&source, &target);
        assert_eq!(diff.len(), 3, "{diff:?}");
        assert!(differences(&source, &source).is_empty());
    }
}
