//! What milink knows about a SQL Server after reading it: plain data, no behaviour.
//!
//! The collector ([`crate::collector`]) fills these structs from the read-only queries in
//! [`crate::tsql::probe`]; the rules ([`crate::rules`]) and sizing ([`crate::sizing`]) read them. Keeping the
//! captured facts as serde data means a whole server can be written down as a JSON fixture (the Tailspin
//! lab in `tests/fixtures/`) and every rule tested on it without a server. Field names are the catalog
//! columns they come from wherever there is one.
use serde::{Deserialize, Deserializer, Serialize};

/// Accepts `true`/`false`, `0`/`1` and NULL (as false): bit columns arrive as ints from `CAST(… AS int)`.
pub fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    Ok(match value {
        Some(serde_json::Value::Bool(b)) => b,
        Some(serde_json::Value::Number(n)) => n.as_f64().unwrap_or(0.0) != 0.0,
        _ => false,
    })
}

/// Everything the assessment reads from one SQL Server instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Inventory {
    /// Instance-wide facts.
    pub instance: InstanceFacts,
    /// User databases (database_id > 4).
    pub databases: Vec<DatabaseFacts>,
    /// Trace flags enabled globally (`DBCC TRACESTATUS(-1)`, `Global = 1`).
    pub global_trace_flags: Vec<i32>,
    /// SQL Agent job steps.
    pub job_steps: Vec<JobStep>,
    /// Linked servers.
    pub linked_servers: Vec<LinkedServer>,
    /// Enabled Windows logins and groups (built-in `NT SERVICE\` and `NT AUTHORITY\` accounts excluded).
    pub windows_logins: Vec<String>,
    /// Server audits.
    pub server_audits: Vec<ServerAudit>,
    /// The database mirroring endpoint, if there is one.
    pub mirroring_endpoint: Option<MirroringEndpoint>,
    /// Certificates in `master`.
    pub certificates: Vec<CertificateFacts>,
    /// A database master key exists in `master`.
    pub has_master_key: bool,
    /// Availability groups (local and distributed).
    pub availability_groups: Vec<AvailabilityGroupFacts>,
    /// Workload samples for sizing.
    pub workload: Workload,
}

/// Instance-wide facts (`SERVERPROPERTY`, `sys.dm_os_sys_info`, `sys.dm_os_host_info`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceFacts {
    /// `@@SERVERNAME`.
    pub server_name: String,
    /// `SERVERPROPERTY('ProductVersion')`, e.g. `16.0.4125.3`.
    pub product_version: String,
    /// `SERVERPROPERTY('Edition')`, e.g. `Enterprise Edition (64-bit)`.
    pub edition: String,
    /// `SERVERPROPERTY('IsHadrEnabled')`.
    pub is_hadr_enabled: bool,
    /// `SERVERPROPERTY('IsClustered')` (failover cluster instance).
    pub is_clustered: bool,
    /// `SERVERPROPERTY('Collation')`.
    pub collation: String,
    /// `Windows` or `Linux`.
    pub host_platform: String,
    /// The OS, e.g. `Windows Server 2022 Datacenter`.
    pub host_distribution: String,
    /// Logical CPUs.
    pub cpu_count: u32,
    /// Physical memory of the host, MB.
    pub physical_memory_mb: u64,
    /// SQL Server Agent is running (`sys.dm_server_services`), when known.
    pub agent_running: Option<bool>,
}

/// One user database.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseFacts {
    /// Name.
    pub name: String,
    /// `ONLINE`, `RESTORING`, `OFFLINE`, ….
    pub state_desc: String,
    /// `FULL`, `SIMPLE`, `BULK_LOGGED`.
    pub recovery_model_desc: String,
    /// Compatibility level.
    pub compatibility_level: u32,
    /// TDE is on.
    pub is_encrypted: bool,
    /// A full, non-copy-only backup exists in `msdb.dbo.backupset`.
    pub has_full_backup: bool,
    /// `sys.database_recovery_status.last_log_backup_lsn` is set: the log chain is established (a FULL
    /// database without it behaves as SIMPLE and the link fails with error 1475).
    pub log_chain_established: bool,
    /// Number of log files.
    pub log_files: u32,
    /// Number of data files (rows and FILESTREAM/In-Memory containers included).
    pub data_files: u32,
    /// Data file size, MB.
    pub data_size_mb: f64,
    /// Log file size, MB.
    pub log_size_mb: f64,
    /// FILESTREAM filegroups (`sys.filegroups.type = 'FD'`).
    pub filestream_filegroups: u32,
    /// FileTables.
    pub filetables: u32,
    /// Memory-optimized filegroups (`'FX'`).
    pub memory_optimized_filegroups: u32,
    /// Containers in memory-optimized filegroups.
    pub memory_optimized_containers: u32,
    /// Memory-optimized tables.
    pub memory_optimized_tables: u32,
    /// The availability group the database is in, if any.
    pub availability_group: Option<String>,
    /// ADR on (2019+; `None` before).
    pub is_accelerated_database_recovery_on: Option<bool>,
    /// Service Broker enabled.
    pub is_broker_enabled: bool,
    /// Published for transactional or merge replication, or a subscriber.
    pub is_replicated: bool,
    /// Change data capture enabled.
    pub is_cdc_enabled: bool,
    /// User assemblies created from a file path.
    pub assemblies_from_file: Vec<String>,
    /// User assemblies with SAFE or EXTERNAL_ACCESS permission sets.
    pub clr_safe_or_external_assemblies: Vec<String>,
    /// Modules that start distributed transactions.
    pub distributed_transaction_modules: Vec<String>,
    /// Modules that call `xp_cmdshell`.
    pub xp_cmdshell_modules: Vec<String>,
    /// Database users mapped to Windows principals.
    pub windows_users: Vec<String>,
    /// Tables and columns named `NEXT` (`schema.table` or `schema.table.column`).
    pub next_columns: Vec<String>,
    /// Module definitions the code rules scan (only the modules the pre-filter of
    /// [`crate::tsql::probe::code_candidates`] picked).
    pub modules: Vec<ModuleText>,
    /// Name of the certificate protecting the database encryption key, when TDE is on.
    pub tde_certificate: Option<String>,
    /// Why the database's own catalog could not be read (its structure findings are then incomplete).
    pub read_error: Option<String>,
}

impl DatabaseFacts {
    /// Data plus log, GB (MI counts both against its storage).
    pub fn size_gb(&self) -> f64 {
        (self.data_size_mb + self.log_size_mb) / 1024.0
    }
}

/// A module's definition (`sys.sql_modules.definition`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModuleText {
    /// `schema.name`.
    pub name: String,
    /// Its T-SQL.
    pub definition: String,
}

/// One SQL Agent job step (`msdb.dbo.sysjobsteps`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobStep {
    /// Job name.
    pub job_name: String,
    /// Step name.
    pub step_name: String,
    /// `TSQL`, `PowerShell`, `CmdExec`, ….
    pub subsystem: String,
    /// The step's command (first 4,000 characters).
    pub command: String,
}

/// One linked server (`sys.servers`, `is_linked = 1`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkedServer {
    /// Name.
    pub name: String,
    /// Product.
    pub product: String,
    /// OLE DB provider.
    pub provider: String,
}

/// One server audit (`sys.server_audits`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerAudit {
    /// Name.
    pub name: String,
    /// `FILE`, `SECURITY LOG`, `APPLICATION LOG`, `URL`.
    pub type_desc: String,
}

/// The database mirroring endpoint (`sys.database_mirroring_endpoints`, `sys.tcp_endpoints`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MirroringEndpoint {
    /// Name.
    pub name: String,
    /// `STARTED`, `STOPPED`, `DISABLED`.
    pub state_desc: String,
    /// `ALL`, `PARTNER`, `WITNESS`.
    pub role_desc: String,
    /// E.g. `CERTIFICATE`, `NEGOTIATE`, `NEGOTIATE, CERTIFICATE`.
    pub connection_auth_desc: String,
    /// Encryption enabled.
    pub is_encryption_enabled: bool,
    /// E.g. `AES`, `RC4`, `AES, RC4`, `NONE`.
    pub encryption_algorithm_desc: String,
    /// The certificate it authenticates with, if any.
    pub certificate_name: Option<String>,
    /// TCP port.
    pub port: u16,
}

impl MirroringEndpoint {
    /// Usable by the link as it is: started, certificate authentication, AES encryption.
    pub fn is_link_ready(&self) -> bool {
        self.state_desc.eq_ignore_ascii_case("STARTED")
            && self.connection_auth_desc.to_ascii_uppercase().contains("CERTIFICATE")
            && self.certificate_name.is_some()
            && self.is_encryption_enabled
            && self.encryption_algorithm_desc.to_ascii_uppercase().contains("AES")
            && matches!(self.role_desc.to_ascii_uppercase().as_str(), "ALL" | "PARTNER")
    }
}

/// A certificate in `master`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CertificateFacts {
    /// Name.
    pub name: String,
    /// Expiry, ISO 8601.
    pub expiry_date: String,
}

/// An availability group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AvailabilityGroupFacts {
    /// Name.
    pub name: String,
    /// Distributed AG.
    pub is_distributed: bool,
    /// Databases it holds.
    pub database_count: u32,
}

/// Workload samples for sizing, as collected (see [`crate::sizing`] for how they are used).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Workload {
    /// SQL Server process CPU %, one point per minute (scheduler monitor ring buffer, newest first).
    pub cpu_percent: Vec<f64>,
    /// Points the CPU window could have held (256 for the ring buffer).
    pub cpu_points_expected: u32,
    /// Memory in use by SQL Server, MB.
    pub memory_mb: Vec<f64>,
    /// Data + log IOPS.
    pub iops: Vec<f64>,
    /// Log bytes written, MB/s.
    pub log_mb_per_second: Vec<f64>,
    /// Size of every database file, MB (General Purpose IOPS depend on file size).
    pub file_sizes_mb: Vec<f64>,
}
