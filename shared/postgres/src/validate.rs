//! `validate(plan)`: everything that would make `create_link` or the cutover fail, found before anything
//! is created, each as a finding with what to do.
//!
//! Three connections are tested, because each can fail on its own: milink → source, milink → target, and
//! target → source, the path the subscription will use (the source's `replication_url` when set). The last
//! one cannot be tested from milink: a NAT, a firewall or a pg_hba line can let milink in and keep the
//! target out. So the target itself is asked to connect, with a throw-away subscription created with
//! `connect = true, create_slot = false, enabled = false, slot_name = NONE` on a publication that never
//! exists: CREATE SUBSCRIPTION then logs in to the source over the replication protocol exactly as the real
//! one will (same host, user, password, database, pg_hba line), creates nothing there, and the probe is
//! dropped at once without touching the source. `connect = false` would test nothing, and dblink would
//! need an extension on the target and test a different (non-replication) login. The probe's statement
//! carries the source's password and fails whenever the path is broken, so it runs only in a session whose
//! statement logging is verified off; when milink's role cannot turn it off, a warning says so instead.
//!
//! Connection failures that retrying cannot fix (wrong password, unreachable host, missing database) are
//! blocker findings; a server that is merely busy or starting up is a transient error, retried.
use crate::assess::{instance_findings, read_instance};
use crate::connect::{quiet_logging, subscription_oid, Server, Session};
use crate::errors::{as_finding, classify_publisher_connect};
use crate::rules;
use crate::schema;
use crate::sql::{quote_ident, quote_literal};
use milink_core::ports::LinkPlan;
use milink_core::{EngineError, ErrorKind, Finding, Severity};

/// PostgreSQL truncates longer identifiers silently; a database name must fit.
const MAX_IDENTIFIER_BYTES: usize = 63;

pub(crate) async fn validate(plan: &LinkPlan) -> Result<Vec<Finding>, EngineError> {
    let mut findings = Vec::new();
    let database = plan.database.as_str();
    findings.extend(crate::pooler::validate(plan));
    if database.len() > MAX_IDENTIFIER_BYTES {
        findings.push(Finding::new(
            "database_name_too_long",
            Severity::Blocker,
            format!("the database name is {} bytes; PostgreSQL names hold at most 63", database.len()),
            "Pick a database whose name is at most 63 bytes long.",
        ));
        return Ok(findings);
    }
    let source = Server::new("source", &plan.source)?;
    let target = Server::new("target", &plan.target)?;
    let source_admin = reached(source.connect(None).await, &mut findings)?;
    let target_admin = reached(target.connect(None).await, &mut findings)?;

    let mut extensions = Vec::new();
    let mut source_shapes = None;
    if let Some(admin) = &source_admin {
        let instance = read_instance(admin).await?;
        findings.extend(instance_findings(&instance, &source.place().address));
        if let Some(src) = reached(source.connect(Some(database)).await, &mut findings)? {
            findings.extend(rules::inspect(&src, instance.superuser).await?.findings);
            extensions = source_extensions(&src).await?;
            source_shapes = Some(schema::shapes(&src).await?);
        }
    }
    if let Some(admin) = &target_admin {
        findings.extend(target_findings(plan, &target, admin, &extensions, source_shapes.as_ref()).await?);
        if plan.settings.keep_reverse_link {
            findings.extend(crate::reverse::validate(admin).await?);
        }
    }
    // When milink itself cannot log in to the source, the target (same credentials) cannot either: one
    // finding says it, a second would only repeat it.
    if let (Some(admin), Some(_)) = (&target_admin, &source_admin) {
        if !quiet_logging(admin).await? {
            // The probe's statement carries the password and fails on purpose when the path is broken.
            findings.push(password_logging_finding(&target));
        } else if let Err(error) = probe(plan, admin).await {
            if error.code == "source_replication_full" {
                // The path could not be tried, but nothing says it is broken: admission waits for a WAL sender,
                // and creating the link tries the path for real.
                let message = format!("{} The path from the target to the source is tried when the link is created.", error.message);
                findings.push(Finding::new(&error.code, Severity::Warning, message, error.remediation.clone()));
            } else if error.kind == ErrorKind::Transient && error.code != "unreachable" {
                return Err(error);
            } else {
                findings.push(as_finding(&error));
            }
        }
    }
    Ok(findings)
}

/// A session, or a blocker finding when the failure is one retrying cannot fix.
fn reached(result: Result<Session, EngineError>, findings: &mut Vec<Finding>) -> Result<Option<Session>, EngineError> {
    match result {
        Ok(session) => Ok(Some(session)),
        Err(error) if error.kind == ErrorKind::Definite || error.code == "unreachable" => {
            findings.push(as_finding(&error));
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

async fn source_extensions(src: &Session) -> Result<Vec<String>, EngineError> {
    let rows = src
        .rows("listing extensions", "SELECT extname::text FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1", &[])
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

async fn target_findings(
    plan: &LinkPlan,
    target: &Server,
    admin: &Session,
    extensions: &[String],
    source_shapes: Option<&schema::Shapes>,
) -> Result<Vec<Finding>, EngineError> {
    let mut findings = Vec::new();
    let address = &target.place().address;
    let row = admin
        .row(
            "reading the target's settings",
            "SELECT current_setting('server_version_num')::int,
                    current_setting('max_logical_replication_workers')::int
                        - (SELECT count(*) FROM pg_stat_subscription WHERE pid IS NOT NULL)::int,
                    ARRAY(SELECT name::text FROM pg_available_extensions WHERE name = ANY($1))",
            &[&extensions],
        )
        .await?;
    let (version_num, free_workers, available): (i32, i32, Vec<String>) = (row.get(0), row.get(1), row.get(2));
    if version_num < crate::assess::MIN_VERSION_NUM {
        findings.push(Finding::new(
            "unsupported_target_version",
            Severity::Blocker,
            "the target runs a PostgreSQL release older than 13",
            "Use a target running PostgreSQL 13 or later.",
        ));
    }
    if free_workers < 1 {
        findings.push(Finding::new(
            "no_free_logical_replication_workers",
            Severity::Blocker,
            "the target has no free logical replication worker for a new subscription",
            format!("Raise max_logical_replication_workers (and max_worker_processes) on {address}; restart needed."),
        ));
    }
    let missing: Vec<String> = extensions.iter().filter(|e| !available.contains(e)).cloned().collect();
    if !missing.is_empty() {
        findings.push(
            Finding::new(
                "extension_missing_on_target",
                Severity::Blocker,
                "extensions used by the database are not available on the target, so the schema copy would fail",
                format!("Install (or allow-list, on a managed service) these extensions on {address}."),
            )
            .with_objects(missing),
        );
    }
    let database = plan.database.as_str();
    let exists = admin
        .maybe_row("looking for the target database", "SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await?
        .is_some();
    if exists {
        let tgt = target.connect(Some(database)).await?;
        findings.extend(existing_target_findings(plan, &tgt, source_shapes).await?);
    }
    Ok(findings)
}

/// A target database that already exists must be empty, or match the source and hold no rows yet
/// (unless the rows are our own subscription's, on a re-run).
async fn existing_target_findings(
    plan: &LinkPlan,
    tgt: &Session,
    source_shapes: Option<&schema::Shapes>,
) -> Result<Vec<Finding>, EngineError> {
    let shapes = schema::shapes(tgt).await?;
    let Some(source_shapes) = source_shapes else { return Ok(Vec::new()) };
    if shapes.is_empty() {
        return Ok(Vec::new());
    }
    let differences = schema::differences(source_shapes, &shapes);
    if !differences.is_empty() {
        return Ok(vec![Finding::new(
            "target_schema_differs",
            Severity::Blocker,
            "the target database already has tables that differ from the source",
            "Drop the target database (or its tables) so milink copies the schema, or make it match the source.",
        )
        .with_objects(differences)]);
    }
    if subscription_oid(tgt, &plan.link_name()).await?.is_some() {
        return Ok(Vec::new());
    }
    let mut with_rows = Vec::new();
    for (schema_name, name) in shapes.keys() {
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", crate::sql::qualified(schema_name, name));
        if tgt.row("checking the target tables are empty", &sql, &[]).await?.get::<_, bool>(0) {
            with_rows.push(format!("{schema_name}.{name}"));
        }
    }
    if with_rows.is_empty() {
        return Ok(vec![Finding::new(
            "target_schema_present",
            Severity::Info,
            "the target database already holds the source's tables (empty); milink uses them as they are",
            "Nothing to do.",
        )]);
    }
    Ok(vec![Finding::new(
        "target_not_empty",
        Severity::Blocker,
        "tables in the target database already hold rows: the initial copy would collide with them",
        "Empty these tables or drop the target database, then start again.",
    )
    .with_objects(with_rows)])
}

/// The name of the throw-away subscription that tests the target → source path.
fn probe_name(link_name: &str) -> String {
    format!("{link_name}_probe")
}

/// The target would write a failing CREATE SUBSCRIPTION, password included, into its log, and milink's role
/// cannot turn that off for its session.
fn password_logging_finding(target: &Server) -> Finding {
    let place = target.place();
    let user = quote_ident(&place.user);
    Finding::new(
        "password_may_reach_target_log",
        Severity::Warning,
        format!(
            "role '{}' on the target ({}) cannot turn statement logging off: should CREATE SUBSCRIPTION fail, the \
             target's server log would hold the statement with the source's password, so the target → source \
             connection was not tested",
            place.user, place.address
        ),
        format!(
            "Connect milink to the target as a superuser, or have a superuser run on the target: ALTER ROLE {user} \
             SET log_min_error_statement = panic; ALTER ROLE {user} SET log_statement = 'none'; ALTER ROLE {user} \
             SET log_min_duration_statement = -1. Otherwise keep the target's log private and change the source \
             password after the migration."
        ),
    )
}

/// Asks the target to log in to the source the way the subscription will (its session's logging is quiet).
async fn probe(plan: &LinkPlan, target_admin: &Session) -> Result<(), EngineError> {
    let link = Server::as_seen_by_target(&plan.source)?;
    let name = probe_name(&plan.link_name());
    drop_probe(target_admin, &plan.link_name()).await?;
    let sql = format!(
        "CREATE SUBSCRIPTION {sub} CONNECTION {conninfo} PUBLICATION {publication}
         WITH (connect = true, create_slot = false, enabled = false, slot_name = NONE, copy_data = false)",
        sub = quote_ident(&name),
        conninfo = quote_literal(&link.conninfo(plan.database.as_str(), &name)),
        publication = quote_ident(&format!("{name}_never_exists")),
    );
    let doing = "the target connecting to the source (the subscription's path)";
    let created = target_admin.try_run(&sql).await;
    drop_probe(target_admin, &plan.link_name()).await?;
    created.map_err(|e| match e.as_db_error() {
        Some(db) if db.code().code().starts_with("08") => classify_publisher_connect(db.message(), link.place(), doing),
        _ => crate::errors::classify(&e, target_admin.place(), "creating a test subscription"),
    })
}

/// Drops a probe left by this or an earlier validation (it has no slot, so this never reaches the source).
pub(crate) async fn drop_probe(target_admin: &Session, link_name: &str) -> Result<(), EngineError> {
    let sql = format!("DROP SUBSCRIPTION IF EXISTS {}", quote_ident(&probe_name(link_name)));
    target_admin.run("dropping the test subscription", &sql).await
}
