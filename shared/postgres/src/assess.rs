//! `assess(source)`: read-only facts about a source server, its databases and a size for the target.
//!
//! One session on the maintenance database reads the instance (version, wal_level, slots, walsenders,
//! privileges, activity); then each database gets its own short session for the rules in
//! [`crate::rules`], a few databases at a time so a server with hundreds of them is assessed in
//! reasonable time without flooding it with connections. A database dropped while we look is skipped; one
//! milink cannot enter is reported, not fatal. Nothing here writes to the server.
use crate::connect::{Server, Session};
use crate::rules;
use crate::sizing::{self, Activity};
use futures::stream::{self, StreamExt};
use milink_core::assessment::{readiness, Assessment, ConnectionSummary, DatabaseAssessment, SessionGroup};
use milink_core::config::Endpoint;
use milink_core::{EngineError, Finding, Severity};

/// Databases looked at in parallel.
const PARALLEL_DATABASES: usize = 4;
/// Oldest source release milink supports (pg_replication_slots.wal_status, DROP DATABASE ... FORCE).
pub(crate) const MIN_VERSION_NUM: i32 = 130_000;

/// Databases that are never migrated: the maintenance database and managed services' own.
const SYSTEM_DATABASES: [&str; 6] = ["postgres", "azure_maintenance", "azure_sys", "rdsadmin", "cloudsqladmin", "alloydbadmin"];

/// Instance facts read from the maintenance database.
pub(crate) struct Instance {
    pub(crate) version: String,
    pub(crate) version_num: i32,
    pub(crate) wal_level: String,
    pub(crate) free_slots: i64,
    pub(crate) free_senders: i64,
    pub(crate) superuser: bool,
    pub(crate) replication: bool,
    transactions: i64,
    window_seconds: f64,
    connections: i64,
    max_connections: i64,
}

pub(crate) async fn read_instance(session: &Session) -> Result<Instance, EngineError> {
    let row = session
        .row(
            "reading server settings",
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int,
                    current_setting('wal_level'),
                    current_setting('max_replication_slots')::bigint - (SELECT count(*) FROM pg_replication_slots),
                    current_setting('max_wal_senders')::bigint
                        - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'),
                    r.rolsuper, r.rolreplication,
                    (SELECT coalesce(sum(xact_commit + xact_rollback), 0)::bigint FROM pg_stat_database),
                    extract(epoch FROM now() - coalesce((SELECT min(stats_reset) FROM pg_stat_database),
                                                        pg_postmaster_start_time()))::float8,
                    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
                    current_setting('max_connections')::bigint
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await?;
    Ok(Instance {
        version: row.get(0),
        version_num: row.get(1),
        wal_level: row.get(2),
        free_slots: row.get(3),
        free_senders: row.get(4),
        superuser: row.get(5),
        replication: row.get(6),
        transactions: row.get(7),
        window_seconds: row.get(8),
        connections: row.get(9),
        max_connections: row.get(10),
    })
}

/// Instance-level findings: what blocks or endangers every database on this server.
pub(crate) fn instance_findings(instance: &Instance, address: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    if instance.version_num < MIN_VERSION_NUM {
        findings.push(Finding::new(
            "unsupported_version",
            Severity::Blocker,
            format!("PostgreSQL {} is older than 13, the oldest release milink migrates from", instance.version),
            "Upgrade the source to PostgreSQL 13 or later (all older releases are out of support).",
        ));
    }
    if instance.wal_level != "logical" {
        findings.push(Finding::new(
            "wal_level_not_logical",
            Severity::Blocker,
            format!("wal_level is {}; logical replication needs wal_level = logical", instance.wal_level),
            crate::errors::wal_level_remediation(address),
        ));
    }
    // Each link holds one slot and one walsender for its lifetime, plus up to two more while tables seed.
    for (free, what, rule) in [
        (instance.free_slots, "replication slots (max_replication_slots)", "replication_slots"),
        (instance.free_senders, "WAL senders (max_wal_senders)", "wal_senders"),
    ] {
        if free < 1 {
            findings.push(Finding::new(
                &format!("no_free_{rule}"),
                Severity::Blocker,
                format!("no free {what}: a link needs one for as long as it exists"),
                format!("Raise the setting on {address} (restart needed) or drop unused slots and subscriptions."),
            ));
        } else if free < 3 {
            findings.push(Finding::new(
                &format!("few_free_{rule}"),
                Severity::Warning,
                format!("only {free} free {what}: each link needs one, and up to three while seeding"),
                format!("Raise the setting on {address} (restart needed) before migrating several databases at once."),
            ));
        }
    }
    if !instance.superuser && !instance.replication {
        findings.push(Finding::new(
            "missing_replication_privilege",
            Severity::Blocker,
            "milink's role is neither superuser nor has REPLICATION: it cannot create a replication slot",
            "ALTER ROLE <milink's role> REPLICATION; and make it own the tables to publish, or use a superuser.",
        ));
    } else if !instance.superuser {
        findings.push(Finding::new(
            "not_superuser",
            Severity::Warning,
            "milink's role is not superuser: the cutover fence must end other roles' sessions and change \
             database settings",
            "Grant pg_signal_backend and make the role own the databases, or use a superuser for the cutover.",
        ));
    }
    findings
}

pub(crate) async fn assess(source: &Endpoint) -> Result<Assessment, EngineError> {
    let server = Server::new("source", source)?;
    let session = server.connect(None).await?;
    let instance = read_instance(&session).await?;
    let instance_findings = instance_findings(&instance, &server.place().address);
    let connection_summary = connection_summary(&session).await?;
    let names: Vec<String> = session
        .rows(
            "listing databases",
            "SELECT datname::text FROM pg_database
             WHERE NOT datistemplate AND datallowconn AND datname <> ALL($1) ORDER BY 1",
            &[&SYSTEM_DATABASES.as_slice()],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    drop(session);

    let instance_blockers: Vec<Finding> =
        instance_findings.iter().filter(|f| f.severity == Severity::Blocker).cloned().collect();
    let databases: Vec<DatabaseAssessment> = stream::iter(names)
        .map(|name| assess_database(&server, name, instance.superuser))
        .buffered(PARALLEL_DATABASES)
        .filter_map(|db| async move { db })
        .map(|mut db| {
            db.readiness = readiness(db.findings.iter().chain(instance_blockers.iter()));
            db
        })
        .collect()
        .await;

    let activity = Activity {
        data_bytes: databases.iter().filter_map(|d| d.size_bytes).sum(),
        transactions: instance.transactions.max(0) as u64,
        window_seconds: instance.window_seconds,
        connections: instance.connections.max(0) as u64,
        max_connections: instance.max_connections.max(0) as u64,
    };
    Ok(Assessment {
        server_version: instance.version,
        instance_findings,
        databases,
        recommendation: Some(sizing::recommend(&activity)),
        connection_summary: Some(connection_summary),
    })
}

/// Who is connected now (the sessions the DBA must stop at cutover): client backends only (no
/// walsender, autovacuum or other background process), neither this session nor any other of milink's
/// (they announce `application_name = 'milink'`), grouped by application, client address, role and
/// database. Without superuser or `pg_read_all_stats` the server hides other roles' client addresses;
/// those read as `hidden` rather than being mistaken for local sockets (`client_port = -1`).
pub(crate) async fn connection_summary(session: &Session) -> Result<ConnectionSummary, EngineError> {
    let rows = session
        .rows(
            "listing who is connected",
            "SELECT coalesce(application_name, ''),
                    CASE WHEN client_addr IS NOT NULL THEN host(client_addr)
                         WHEN client_port = -1 THEN 'local'
                         ELSE 'hidden' END,
                    coalesce(usename::text, ''), coalesce(datname::text, ''), count(*)
             FROM pg_stat_activity
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
               AND coalesce(application_name, '') <> 'milink'
             GROUP BY 1, 2, 3, 4",
            &[],
        )
        .await?;
    Ok(ConnectionSummary::from_groups(rows.iter().map(|row| SessionGroup {
        application: row.get(0),
        host: row.get(1),
        login: row.get(2),
        database: row.get(3),
        sessions: row.get::<_, i64>(4).max(0) as u64,
    })))
}

/// One database; `None` when it was dropped while we looked.
async fn assess_database(server: &Server, name: String, superuser: bool) -> Option<DatabaseAssessment> {
    let outcome = match server.connect(Some(&name)).await {
        Ok(session) => rules::inspect(&session, superuser).await,
        Err(error) => Err(error),
    };
    match outcome {
        Ok(facts) => Some(DatabaseAssessment {
            readiness: readiness(&facts.findings),
            name,
            findings: facts.findings,
            size_bytes: Some(facts.size_bytes),
        }),
        Err(error) if error.code == "database_not_found" => None,
        Err(error) => Some(DatabaseAssessment {
            name,
            readiness: milink_core::Readiness::NotReady,
            findings: vec![Finding::new(
                "cannot_inspect",
                Severity::Blocker,
                format!("milink could not inspect this database: {}", error.message),
                error.remediation,
            )],
            size_bytes: None,
        }),
    }
}
