//! Reads a SQL Server into an [`Inventory`] with the read-only queries of [`crate::tsql::probe`].
//!
//! This is the thin I/O layer of assessment: run a query, deserialize its rows, fill a struct. It decides
//! nothing (the rules do). Version-dependent queries are chosen from the version read first. A database whose
//! own catalog cannot be read is recorded (`read_error`) rather than failing the whole assessment. Workload
//! sampling takes two I/O snapshots `sample` apart; the pause is injected so tests do not sleep.
use crate::inventory::*;
use crate::tds::{rows_as, SqlSession};
use crate::tsql::probe;
use crate::versions::Build;
use async_trait::async_trait;
use milink_core::assessment::{ConnectionSummary, SessionGroup};
use milink_core::error::EngineError;
use serde::Deserialize;
use std::time::Duration;

/// Waits (injected so tests and the network test's polling do not sleep).
#[async_trait]
pub trait Pause: Send + Sync {
    /// Waits `duration`.
    async fn pause(&self, duration: Duration);
}

/// Real waiting.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioPause;

#[async_trait]
impl Pause for TokioPause {
    async fn pause(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

#[derive(Deserialize)]
struct VersionRow {
    product_version: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct InstanceRow {
    server_name: Option<String>,
    product_version: Option<String>,
    edition: Option<String>,
    #[serde(deserialize_with = "flag")]
    is_hadr_enabled: bool,
    #[serde(deserialize_with = "flag")]
    is_clustered: bool,
    collation: Option<String>,
    host_platform: Option<String>,
    host_distribution: Option<String>,
    cpu_count: Option<u32>,
    physical_memory_mb: Option<u64>,
    master_keys: Option<i64>,
    agent_running: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DatabaseRow {
    name: String,
    state_desc: Option<String>,
    recovery_model_desc: Option<String>,
    compatibility_level: Option<u32>,
    #[serde(deserialize_with = "flag")]
    is_encrypted: bool,
    #[serde(deserialize_with = "flag")]
    is_broker_enabled: bool,
    #[serde(deserialize_with = "flag")]
    is_replicated: bool,
    #[serde(deserialize_with = "flag")]
    is_cdc_enabled: bool,
    is_accelerated_database_recovery_on: Option<i64>,
    full_backups: Option<i64>,
    #[serde(deserialize_with = "flag")]
    log_chain_established: bool,
    log_files: Option<u32>,
    data_files: Option<u32>,
    data_size_mb: Option<f64>,
    log_size_mb: Option<f64>,
    availability_group: Option<String>,
    tde_certificate: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StructureRow {
    filestream_filegroups: u32,
    filetables: u32,
    memory_optimized_filegroups: u32,
    memory_optimized_containers: u32,
    memory_optimized_tables: u32,
}

#[derive(Deserialize)]
struct ObjectRow {
    kind: String,
    object_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TraceFlagRow {
    trace_flag: i32,
    #[serde(deserialize_with = "flag")]
    global: bool,
}

#[derive(Deserialize)]
struct NameRow {
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct IoRow {
    io_count: Option<f64>,
    log_bytes_written: Option<f64>,
    uptime_seconds: Option<f64>,
    memory_in_use_mb: Option<f64>,
}

#[derive(Deserialize)]
struct ValueRow<T> {
    #[serde(alias = "cpu_percent", alias = "size_mb")]
    value: Option<T>,
}

/// Reads the whole inventory, workload samples included.
pub async fn collect(session: &mut dyn SqlSession, pause: &dyn Pause, sample: Duration) -> Result<Inventory, EngineError> {
    let mut inventory = collect_facts(session).await?;
    inventory.workload = workload(session, pause, sample).await?;
    Ok(inventory)
}

/// Reads everything but the workload samples (validation needs no sizing).
pub async fn collect_facts(session: &mut dyn SqlSession) -> Result<Inventory, EngineError> {
    let version: Vec<VersionRow> = rows_as(session.query(&probe::product_version()).await?, "version")?;
    let build = version.first().and_then(|v| v.product_version.as_deref()).and_then(Build::parse).unwrap_or(Build(0, 0, 0, 0));
    let mut inventory = Inventory::default();
    let (instance, has_master_key) = instance(session, build.major()).await?;
    inventory.instance = instance;
    inventory.has_master_key = has_master_key;
    inventory.databases = databases(session, build.major()).await?;
    let flags: Vec<TraceFlagRow> = rows_as(session.query(&probe::trace_flags()).await?, "trace flags")?;
    inventory.global_trace_flags = flags.into_iter().filter(|f| f.global).map(|f| f.trace_flag).collect();
    inventory.job_steps = rows_as(session.query(&probe::job_steps()).await?, "job steps")?;
    inventory.linked_servers = rows_as(session.query(&probe::linked_servers()).await?, "linked servers")?;
    let logins: Vec<NameRow> = rows_as(session.query(&probe::windows_logins()).await?, "logins")?;
    inventory.windows_logins = logins.into_iter().map(|l| l.name).collect();
    inventory.server_audits = rows_as(session.query(&probe::server_audits()).await?, "audits")?;
    inventory.mirroring_endpoint = mirroring_endpoint(session).await?;
    inventory.certificates = rows_as(session.query(&probe::certificates()).await?, "certificates")?;
    inventory.availability_groups = availability_groups(session).await?;
    Ok(inventory)
}

/// Reads the version, then the instance facts and whether a master key exists.
pub async fn instance_facts(session: &mut dyn SqlSession) -> Result<(InstanceFacts, bool), EngineError> {
    let version: Vec<VersionRow> = rows_as(session.query(&probe::product_version()).await?, "version")?;
    let major = version.first().and_then(|v| v.product_version.as_deref()).and_then(Build::parse).map_or(0, |b| b.major());
    instance(session, major).await
}

async fn instance(session: &mut dyn SqlSession, major: u32) -> Result<(InstanceFacts, bool), EngineError> {
    let rows: Vec<InstanceRow> = rows_as(session.query(&probe::instance_facts(major)).await?, "instance")?;
    let row = rows.into_iter().next().unwrap_or_default();
    let facts = InstanceFacts {
        server_name: row.server_name.unwrap_or_default(),
        product_version: row.product_version.unwrap_or_default(),
        edition: row.edition.unwrap_or_default(),
        is_hadr_enabled: row.is_hadr_enabled,
        is_clustered: row.is_clustered,
        collation: row.collation.unwrap_or_default(),
        host_platform: row.host_platform.unwrap_or_default(),
        host_distribution: row.host_distribution.unwrap_or_default(),
        cpu_count: row.cpu_count.unwrap_or(0),
        physical_memory_mb: row.physical_memory_mb.unwrap_or(0),
        agent_running: row.agent_running.map(|v| v != 0),
    };
    Ok((facts, row.master_keys.unwrap_or(0) > 0))
}

/// Reads the databases, then each online one's own catalog.
pub async fn databases(session: &mut dyn SqlSession, major: u32) -> Result<Vec<DatabaseFacts>, EngineError> {
    let rows: Vec<DatabaseRow> = rows_as(session.query(&probe::databases(major)).await?, "databases")?;
    let mut databases = Vec::with_capacity(rows.len());
    for row in rows {
        let mut db = DatabaseFacts {
            state_desc: row.state_desc.unwrap_or_default(),
            recovery_model_desc: row.recovery_model_desc.unwrap_or_default(),
            compatibility_level: row.compatibility_level.unwrap_or(0),
            is_encrypted: row.is_encrypted,
            has_full_backup: row.full_backups.unwrap_or(0) > 0,
            log_chain_established: row.log_chain_established,
            log_files: row.log_files.unwrap_or(0),
            data_files: row.data_files.unwrap_or(0),
            data_size_mb: row.data_size_mb.unwrap_or(0.0),
            log_size_mb: row.log_size_mb.unwrap_or(0.0),
            availability_group: row.availability_group,
            is_accelerated_database_recovery_on: row.is_accelerated_database_recovery_on.map(|v| v != 0),
            is_broker_enabled: row.is_broker_enabled,
            is_replicated: row.is_replicated,
            is_cdc_enabled: row.is_cdc_enabled,
            tde_certificate: row.tde_certificate,
            name: row.name,
            ..DatabaseFacts::default()
        };
        if db.state_desc.eq_ignore_ascii_case("ONLINE") {
            if let Err(error) = database_details(session, &mut db).await {
                db.read_error = Some(error.message);
            }
        }
        databases.push(db);
    }
    Ok(databases)
}

async fn database_details(session: &mut dyn SqlSession, db: &mut DatabaseFacts) -> Result<(), EngineError> {
    let structure: Vec<StructureRow> = rows_as(session.query(&probe::database_structure(&db.name)).await?, "database structure")?;
    let structure = structure.into_iter().next().unwrap_or_default();
    db.filestream_filegroups = structure.filestream_filegroups;
    db.filetables = structure.filetables;
    db.memory_optimized_filegroups = structure.memory_optimized_filegroups;
    db.memory_optimized_containers = structure.memory_optimized_containers;
    db.memory_optimized_tables = structure.memory_optimized_tables;
    let objects: Vec<ObjectRow> = rows_as(session.query(&probe::database_objects(&db.name)).await?, "database objects")?;
    for object in objects {
        let name = object.object_name.unwrap_or_default();
        match object.kind.as_str() {
            "assembly_from_file" => db.assemblies_from_file.push(name),
            "clr_safe_or_external" => db.clr_safe_or_external_assemblies.push(name),
            "distributed_transaction" => db.distributed_transaction_modules.push(name),
            "xp_cmdshell" => db.xp_cmdshell_modules.push(name),
            "windows_user" => db.windows_users.push(name),
            "next_column" => db.next_columns.push(name),
            _ => {}
        }
    }
    #[derive(Deserialize)]
    struct ModuleRow {
        object_name: Option<String>,
        definition: Option<String>,
    }
    let modules: Vec<ModuleRow> = rows_as(session.query(&probe::code_candidates(&db.name)).await?, "module definitions")?;
    db.modules = modules
        .into_iter()
        .filter_map(|m| Some(ModuleText { name: m.object_name.unwrap_or_default(), definition: m.definition? }))
        .collect();
    Ok(())
}

/// Reads the mirroring endpoint, if there is one.
pub async fn mirroring_endpoint(session: &mut dyn SqlSession) -> Result<Option<MirroringEndpoint>, EngineError> {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Row {
        name: String,
        state_desc: Option<String>,
        role_desc: Option<String>,
        connection_auth_desc: Option<String>,
        #[serde(deserialize_with = "flag")]
        is_encryption_enabled: bool,
        encryption_algorithm_desc: Option<String>,
        certificate_name: Option<String>,
        port: Option<u16>,
    }
    let rows: Vec<Row> = rows_as(session.query(&probe::mirroring_endpoint()).await?, "mirroring endpoint")?;
    Ok(rows.into_iter().next().map(|r| MirroringEndpoint {
        name: r.name,
        state_desc: r.state_desc.unwrap_or_default(),
        role_desc: r.role_desc.unwrap_or_default(),
        connection_auth_desc: r.connection_auth_desc.unwrap_or_default(),
        is_encryption_enabled: r.is_encryption_enabled,
        encryption_algorithm_desc: r.encryption_algorithm_desc.unwrap_or_default(),
        certificate_name: r.certificate_name,
        port: r.port.unwrap_or(5022),
    }))
}

/// Reads the availability groups.
pub async fn availability_groups(session: &mut dyn SqlSession) -> Result<Vec<AvailabilityGroupFacts>, EngineError> {
    #[derive(Deserialize)]
    struct Row {
        name: String,
        #[serde(deserialize_with = "flag")]
        is_distributed: bool,
        database_count: Option<u32>,
    }
    let rows: Vec<Row> = rows_as(session.query(&probe::availability_groups()).await?, "availability groups")?;
    Ok(rows.into_iter().map(|r| AvailabilityGroupFacts { name: r.name, is_distributed: r.is_distributed, database_count: r.database_count.unwrap_or(0) }).collect())
}

async fn workload(session: &mut dyn SqlSession, pause: &dyn Pause, sample: Duration) -> Result<Workload, EngineError> {
    let cpu: Vec<ValueRow<f64>> = rows_as(session.query(&probe::cpu_history()).await?, "CPU history")?;
    let files: Vec<ValueRow<f64>> = rows_as(session.query(&probe::file_sizes()).await?, "file sizes")?;
    let first = io_snapshot(session).await?;
    pause.pause(sample).await;
    let second = io_snapshot(session).await?;
    let mut workload = Workload {
        cpu_percent: cpu.into_iter().filter_map(|r| r.value).collect(),
        cpu_points_expected: 256,
        file_sizes_mb: files.into_iter().filter_map(|r| r.value).collect(),
        ..Workload::default()
    };
    for snapshot in [&first, &second] {
        if let Some(memory) = snapshot.memory_in_use_mb {
            workload.memory_mb.push(memory);
        }
    }
    // Average since start, then the rate over the sample window.
    if let (Some(io), Some(log), Some(uptime)) = (first.io_count, first.log_bytes_written, first.uptime_seconds) {
        if uptime > 0.0 {
            workload.iops.push(io / uptime);
            workload.log_mb_per_second.push(log / uptime / 1_048_576.0);
        }
    }
    let seconds = sample.as_secs_f64();
    if let (Some(a), Some(b), Some(la), Some(lb)) = (first.io_count, second.io_count, first.log_bytes_written, second.log_bytes_written) {
        if seconds > 0.0 {
            workload.iops.push(((b - a) / seconds).max(0.0));
            workload.log_mb_per_second.push(((lb - la) / seconds / 1_048_576.0).max(0.0));
        }
    }
    Ok(workload)
}

/// Who is connected now (the assessment's connection summary), grouped as [`probe::client_sessions`] says.
pub async fn connection_summary(session: &mut dyn SqlSession) -> Result<ConnectionSummary, EngineError> {
    #[derive(Deserialize)]
    struct Row {
        application: Option<String>,
        host: Option<String>,
        login: Option<String>,
        database_name: Option<String>,
        sessions: i64,
    }
    let rows: Vec<Row> = rows_as(session.query(&probe::client_sessions()).await?, "client sessions")?;
    Ok(ConnectionSummary::from_groups(rows.into_iter().map(|r| SessionGroup {
        application: r.application.unwrap_or_default(),
        host: match r.host.unwrap_or_default() {
            host if host == "<local machine>" => "local".to_owned(),
            host => host,
        },
        login: r.login.unwrap_or_default(),
        database: r.database_name.unwrap_or_default(),
        sessions: r.sessions.max(0) as u64,
    })))
}

/// Runs [`probe::connection_test`] on an open session: version and whether it is encrypted.
pub async fn connection_test(session: &mut dyn SqlSession) -> Result<(String, Option<bool>), EngineError> {
    #[derive(Deserialize)]
    struct Row {
        product_version: Option<String>,
        encrypt_option: Option<String>,
    }
    let rows: Vec<Row> = rows_as(session.query(&probe::connection_test()).await?, "connection test")?;
    let row = rows.into_iter().next();
    let version = row.as_ref().and_then(|r| r.product_version.clone()).unwrap_or_default();
    Ok((version, row.and_then(|r| r.encrypt_option).map(|e| e.eq_ignore_ascii_case("TRUE"))))
}

async fn io_snapshot(session: &mut dyn SqlSession) -> Result<IoRow, EngineError> {
    let rows: Vec<IoRow> = rows_as(session.query(&probe::io_snapshot()).await?, "I/O snapshot")?;
    Ok(rows.into_iter().next().unwrap_or_default())
}
