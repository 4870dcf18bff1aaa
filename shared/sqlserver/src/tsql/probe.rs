//! The read-only queries: what each assessment rule, validation check and observation reads.
//!
//! Every query here only SELECTs from catalog views and DMVs (or runs `DBCC TRACESTATUS`), so an assessment
//! can run against production with `VIEW SERVER STATE` + `VIEW ANY DEFINITION` (assessment.md §1.3). Column
//! aliases are the field names of [`crate::inventory`] and [`crate::observe`], so the collector maps rows by
//! name. Version-dependent columns are only asked for on versions that have them (`major_version`).
//! docs/sqlserver.md lists, for every rule, the query below that feeds it.
use super::Statement;
use crate::names::quote_ident;

/// Version only, asked first so later queries can depend on it. Column: `product_version`.
pub fn product_version() -> Statement {
    Statement::new("SELECT CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)) AS product_version")
}

/// Instance facts: version/edition (build and edition rules), HADR, FCI, collation, host OS (client
/// Windows cannot host an AG), CPUs and memory (sizing), master key, Agent (network test).
/// `sys.dm_os_host_info` exists from 2017 (major 14); 2016 is Windows-only.
pub fn instance_facts(major_version: u32) -> Statement {
    let host = if major_version >= 14 {
        "(SELECT TOP (1) host_platform FROM sys.dm_os_host_info) AS host_platform,\n\
         \x20   (SELECT TOP (1) host_distribution FROM sys.dm_os_host_info) AS host_distribution,"
    } else {
        "CAST(N'Windows' AS nvarchar(256)) AS host_platform,\n\
         \x20   CAST(@@VERSION AS nvarchar(256)) AS host_distribution,"
    };
    Statement::new(format!(
        "SELECT CAST(@@SERVERNAME AS nvarchar(256)) AS server_name,\n\
         \x20   CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)) AS product_version,\n\
         \x20   CAST(SERVERPROPERTY('Edition') AS nvarchar(128)) AS edition,\n\
         \x20   CAST(ISNULL(SERVERPROPERTY('IsHadrEnabled'), 0) AS int) AS is_hadr_enabled,\n\
         \x20   CAST(ISNULL(SERVERPROPERTY('IsClustered'), 0) AS int) AS is_clustered,\n\
         \x20   CAST(SERVERPROPERTY('Collation') AS nvarchar(128)) AS collation,\n\
         \x20   {host}\n\
         \x20   (SELECT CAST(cpu_count AS int) FROM sys.dm_os_sys_info) AS cpu_count,\n\
         \x20   (SELECT CAST(physical_memory_kb / 1024 AS bigint) FROM sys.dm_os_sys_info) AS physical_memory_mb,\n\
         \x20   (SELECT COUNT(*) FROM master.sys.symmetric_keys WHERE symmetric_key_id = 101) AS master_keys,\n\
         \x20   (SELECT TOP (1) CASE WHEN status_desc = N'Running' THEN 1 ELSE 0 END FROM sys.dm_server_services\n\
         \x20       WHERE servicename LIKE N'SQL Server Agent%') AS agent_running"
    ))
}

/// User databases: state, recovery model and log chain (error 1475), files and sizes (multiple log files,
/// size rules, sizing), TDE, AG membership, ADR (2019+), broker, replication and CDC.
pub fn databases(major_version: u32) -> Statement {
    let adr = if major_version >= 15 {
        "CAST(d.is_accelerated_database_recovery_on AS int)"
    } else {
        "CAST(NULL AS int)"
    };
    Statement::new(format!(
        "SELECT d.name, d.state_desc, d.recovery_model_desc, CAST(d.compatibility_level AS int) AS compatibility_level,\n\
         \x20   CAST(d.is_encrypted AS int) AS is_encrypted, CAST(d.is_broker_enabled AS int) AS is_broker_enabled,\n\
         \x20   CAST(CASE WHEN d.is_published = 1 OR d.is_merge_published = 1 OR d.is_subscribed = 1 THEN 1 ELSE 0 END AS int) AS is_replicated,\n\
         \x20   CAST(d.is_cdc_enabled AS int) AS is_cdc_enabled,\n\
         \x20   {adr} AS is_accelerated_database_recovery_on,\n\
         \x20   (SELECT COUNT(*) FROM msdb.dbo.backupset AS b WHERE b.database_name = d.name AND b.type = 'D' AND b.is_copy_only = 0) AS full_backups,\n\
         \x20   CAST(CASE WHEN rs.last_log_backup_lsn IS NULL THEN 0 ELSE 1 END AS int) AS log_chain_established,\n\
         \x20   (SELECT COUNT(*) FROM sys.master_files AS f WHERE f.database_id = d.database_id AND f.type = 1) AS log_files,\n\
         \x20   (SELECT COUNT(*) FROM sys.master_files AS f WHERE f.database_id = d.database_id AND f.type <> 1) AS data_files,\n\
         \x20   (SELECT CAST(ISNULL(SUM(CAST(f.size AS bigint)), 0) * 8 / 1024.0 AS float) FROM sys.master_files AS f WHERE f.database_id = d.database_id AND f.type <> 1) AS data_size_mb,\n\
         \x20   (SELECT CAST(ISNULL(SUM(CAST(f.size AS bigint)), 0) * 8 / 1024.0 AS float) FROM sys.master_files AS f WHERE f.database_id = d.database_id AND f.type = 1) AS log_size_mb,\n\
         \x20   (SELECT TOP (1) ag.name FROM sys.availability_databases_cluster AS adc\n\
         \x20       JOIN sys.availability_groups AS ag ON ag.group_id = adc.group_id WHERE adc.database_name = d.name) AS availability_group,\n\
         \x20   (SELECT TOP (1) c.name FROM sys.dm_database_encryption_keys AS k\n\
         \x20       JOIN master.sys.certificates AS c ON c.thumbprint = k.encryptor_thumbprint WHERE k.database_id = d.database_id) AS tde_certificate\n\
         FROM sys.databases AS d\n\
         LEFT JOIN sys.database_recovery_status AS rs ON rs.database_id = d.database_id\n\
         WHERE d.database_id > 4\n\
         ORDER BY d.name"
    ))
}

/// Per-database structure counts (FILESTREAM/FileTable, In-Memory OLTP), read inside the database.
pub fn database_structure(database: &str) -> Statement {
    let db = quote_ident(database);
    Statement::new(format!(
        "SELECT (SELECT COUNT(*) FROM {db}.sys.filegroups WHERE type = 'FD') AS filestream_filegroups,\n\
         \x20   (SELECT COUNT(*) FROM {db}.sys.tables WHERE is_filetable = 1) AS filetables,\n\
         \x20   (SELECT COUNT(*) FROM {db}.sys.filegroups WHERE type = 'FX') AS memory_optimized_filegroups,\n\
         \x20   (SELECT COUNT(*) FROM {db}.sys.database_files AS df JOIN {db}.sys.filegroups AS fg\n\
         \x20       ON fg.data_space_id = df.data_space_id WHERE fg.type = 'FX') AS memory_optimized_containers,\n\
         \x20   (SELECT COUNT(*) FROM {db}.sys.tables WHERE is_memory_optimized = 1) AS memory_optimized_tables"
    ))
}

/// Per-database objects the compatibility rules name: assemblies from files (AssemblyFromFile), SAFE /
/// EXTERNAL_ACCESS assemblies (ClrStrictSecurity), modules with distributed transactions (MSDTC) or
/// `xp_cmdshell` (XpCmdshell), Windows users (WindowsAuthentication). Columns: `kind`, `object_name`.
pub fn database_objects(database: &str) -> Statement {
    let db = quote_ident(database);
    Statement::new(format!(
        "SELECT N'assembly_from_file' AS kind, a.name AS object_name FROM {db}.sys.assemblies AS a\n\
         \x20   JOIN {db}.sys.assembly_files AS f ON f.assembly_id = a.assembly_id\n\
         \x20   WHERE a.is_user_defined = 1 AND f.file_id = 1 AND (f.name LIKE N'%\\%' OR f.name LIKE N'%/%' OR f.name LIKE N'%.dll')\n\
         UNION ALL SELECT N'clr_safe_or_external', name FROM {db}.sys.assemblies\n\
         \x20   WHERE is_user_defined = 1 AND permission_set_desc <> N'UNSAFE_ACCESS'\n\
         UNION ALL SELECT N'distributed_transaction', s.name + N'.' + o.name FROM {db}.sys.sql_modules AS m\n\
         \x20   JOIN {db}.sys.objects AS o ON o.object_id = m.object_id JOIN {db}.sys.schemas AS s ON s.schema_id = o.schema_id\n\
         \x20   WHERE m.definition LIKE N'%BEGIN%DISTRIBUTED%TRAN%'\n\
         UNION ALL SELECT N'xp_cmdshell', s.name + N'.' + o.name FROM {db}.sys.sql_modules AS m\n\
         \x20   JOIN {db}.sys.objects AS o ON o.object_id = m.object_id JOIN {db}.sys.schemas AS s ON s.schema_id = o.schema_id\n\
         \x20   WHERE m.definition LIKE N'%xp[_]cmdshell%'\n\
         UNION ALL SELECT N'windows_user', name FROM {db}.sys.database_principals WHERE type IN ('U', 'G')\n\
         UNION ALL SELECT N'next_column', s.name + N'.' + t.name FROM {db}.sys.tables AS t\n\
         \x20   JOIN {db}.sys.schemas AS s ON s.schema_id = t.schema_id WHERE t.name = N'NEXT'\n\
         UNION ALL SELECT N'next_column', s.name + N'.' + t.name + N'.' + c.name FROM {db}.sys.columns AS c\n\
         \x20   JOIN {db}.sys.tables AS t ON t.object_id = c.object_id JOIN {db}.sys.schemas AS s ON s.schema_id = t.schema_id\n\
         \x20   WHERE c.name = N'NEXT'"
    ))
}

/// Most module definitions [`code_candidates`] returns per database.
pub const CODE_CANDIDATES_MAX: u32 = 2000;

/// Module definitions that may break a code rule of [`crate::rules::code`], picked by a cheap `LIKE`
/// pre-filter so only candidates travel (the rules then tokenize them; text in comments or strings is
/// dropped there). Legacy RAISERROR is pre-filtered as `RAISERROR` + one blank + a digit or `@`, which misses
/// unusual spacing; COMPUTE as `COMPUTE` + one blank. Columns: `object_name`, `definition`.
pub fn code_candidates(database: &str) -> Statement {
    let db = quote_ident(database);
    let blank = "[ ' + CHAR(9) + CHAR(10) + CHAR(13) + N']";
    let patterns = [
        "%BULK%INSERT%".to_owned(),
        format!("%COMPUTE{blank}%"),
        "%CRYPTOGRAPHIC%PROVIDER%".to_owned(),
        "%DISABLE[_]DEF[_]CNST[_]CHK%".to_owned(),
        "%FASTFIRSTROW%".to_owned(),
        "%*=%".to_owned(),
        "%=*%".to_owned(),
        "%OPENROWSET%".to_owned(),
        format!("%RAISERROR{blank}[0-9@]%"),
        "%RAISERROR[0-9@]%".to_owned(),
        "%xp[_]%mail%".to_owned(),
        "%sp[_]processmail%".to_owned(),
        "%xp[_]findnextmsg%".to_owned(),
        "%sp[_]dboption%".to_owned(),
        "%sp[_]addserver%".to_owned(),
        "%sp[_]dropalias%".to_owned(),
        "%sp[_]activedirectory[_]%".to_owned(),
        "%sp[_]addalias%".to_owned(),
        "%database[_]principal[_]aliases%".to_owned(),
    ];
    let conditions: Vec<String> = patterns.iter().map(|p| format!("m.definition LIKE N'{p}'")).collect();
    Statement::new(format!(
        "SELECT TOP ({CODE_CANDIDATES_MAX}) s.name + N'.' + o.name AS object_name, m.definition\n\
         FROM {db}.sys.sql_modules AS m\n\
         JOIN {db}.sys.objects AS o ON o.object_id = m.object_id JOIN {db}.sys.schemas AS s ON s.schema_id = o.schema_id\n\
         WHERE o.is_ms_shipped = 0 AND ({})\n\
         ORDER BY s.name, o.name",
        conditions.join("\n    OR ")
    ))
}

/// Global trace flags (TraceFlags rule; 1800/9567 for the link). Columns: `TraceFlag`, `Status`,
/// `Global`, `Session`.
pub fn trace_flags() -> Statement {
    Statement::new("DBCC TRACESTATUS(-1) WITH NO_INFOMSGS")
}

/// Agent job steps (AnalysisCommandJob, AnalysisQueryJob, MergeJob, PowerShellJob, QueueReaderJob,
/// TransactSqlJob, CmdExec/ActiveScripting).
pub fn job_steps() -> Statement {
    Statement::new(
        "SELECT j.name AS job_name, s.step_name, s.subsystem, CAST(ISNULL(LEFT(s.command, 4000), N'') AS nvarchar(4000)) AS command\n\
         FROM msdb.dbo.sysjobs AS j JOIN msdb.dbo.sysjobsteps AS s ON s.job_id = j.job_id",
    )
}

/// Linked servers (LinkedServerWithNonSQLProvider).
pub fn linked_servers() -> Statement {
    Statement::new("SELECT name, ISNULL(product, N'') AS product, ISNULL(provider, N'') AS provider FROM sys.servers WHERE is_linked = 1")
}

/// Enabled Windows logins and groups (WindowsAuthentication), built-in service accounts excluded.
pub fn windows_logins() -> Statement {
    Statement::new(
        "SELECT name FROM sys.server_principals\n\
         WHERE type IN ('U', 'G') AND is_disabled = 0 AND name NOT LIKE N'NT SERVICE\\%' AND name NOT LIKE N'NT AUTHORITY\\%'",
    )
}

/// Server audits (audits to FILE or the Windows logs are not supported on MI).
pub fn server_audits() -> Statement {
    Statement::new("SELECT name, type_desc FROM sys.server_audits")
}

/// The database mirroring endpoint and its certificate (endpoint readiness; create-link step 9).
pub fn mirroring_endpoint() -> Statement {
    Statement::new(
        "SELECT e.name, e.state_desc, e.role_desc, e.connection_auth_desc, CAST(e.is_encryption_enabled AS int) AS is_encryption_enabled,\n\
         \x20   e.encryption_algorithm_desc, c.name AS certificate_name, CAST(t.port AS int) AS port\n\
         FROM sys.database_mirroring_endpoints AS e\n\
         LEFT JOIN master.sys.certificates AS c ON c.certificate_id = e.certificate_id\n\
         LEFT JOIN sys.tcp_endpoints AS t ON t.endpoint_id = e.endpoint_id",
    )
}

/// Certificates in `master` (trusted roots, the MI's certificate, the endpoint certificate's expiry).
pub fn certificates() -> Statement {
    Statement::new(
        "SELECT name, ISNULL(CONVERT(varchar(33), expiry_date, 126), '') AS expiry_date FROM master.sys.certificates",
    )
}

/// Availability groups and how many databases each holds (existing AG membership; cancel).
pub fn availability_groups() -> Statement {
    Statement::new(
        "SELECT ag.name, CAST(ag.is_distributed AS int) AS is_distributed,\n\
         \x20   (SELECT COUNT(*) FROM sys.availability_databases_cluster AS adc WHERE adc.group_id = ag.group_id) AS database_count\n\
         FROM sys.availability_groups AS ag",
    )
}

/// SQL Server process CPU %, one point per minute for up to 256 minutes (sizing, CPU).
pub fn cpu_history() -> Statement {
    Statement::new(
        "SELECT TOP (256) CAST(rb.record.value('(./Record/SchedulerMonitorEvent/SystemHealth/ProcessUtilization)[1]', 'int') AS float) AS cpu_percent\n\
         FROM (SELECT CONVERT(xml, record) AS record, [timestamp] FROM sys.dm_os_ring_buffers\n\
         \x20     WHERE ring_buffer_type = N'RING_BUFFER_SCHEDULER_MONITOR' AND record LIKE N'%<SystemHealth>%') AS rb\n\
         ORDER BY rb.[timestamp] DESC",
    )
}

/// Cumulative I/O and log counters since start, plus memory in use (sizing; two snapshots give a rate).
pub fn io_snapshot() -> Statement {
    Statement::new(
        "SELECT CAST(SUM(v.num_of_reads + v.num_of_writes) AS float) AS io_count,\n\
         \x20   CAST(SUM(CASE WHEN f.type = 1 THEN v.num_of_bytes_written ELSE 0 END) AS float) AS log_bytes_written,\n\
         \x20   (SELECT CAST(DATEDIFF(second, sqlserver_start_time, SYSDATETIME()) AS float) FROM sys.dm_os_sys_info) AS uptime_seconds,\n\
         \x20   (SELECT CAST(physical_memory_in_use_kb / 1024.0 AS float) FROM sys.dm_os_process_memory) AS memory_in_use_mb\n\
         FROM sys.dm_io_virtual_file_stats(NULL, NULL) AS v\n\
         JOIN sys.master_files AS f ON f.database_id = v.database_id AND f.file_id = v.file_id",
    )
}

/// Size of every file of every database, MB (General Purpose IOPS depend on file size).
pub fn file_sizes() -> Statement {
    Statement::new("SELECT CAST(CAST(size AS bigint) * 8 / 1024.0 AS float) AS size_mb FROM sys.master_files WHERE database_id > 4")
}

/// The link as SQL Server sees it (observation, positions): one row per replica of the distributed AG with
/// its connection state and last connect error, and the database's replica state on that replica.
pub fn link_replicas(distributed_ag: &str) -> Statement {
    Statement::new(
        "SELECT CAST(ars.is_local AS int) AS is_local, ars.role_desc, ars.connected_state_desc,\n\
         \x20   ars.synchronization_health_desc AS replica_health_desc, ars.last_connect_error_number,\n\
         \x20   ars.last_connect_error_description, ar.availability_mode_desc,\n\
         \x20   drs.synchronization_state_desc, drs.synchronization_health_desc, drs.database_state_desc,\n\
         \x20   CAST(drs.is_suspended AS int) AS is_suspended, drs.suspend_reason_desc,\n\
         \x20   drs.log_send_queue_size AS log_send_queue_kb, drs.redo_queue_size AS redo_queue_kb,\n\
         \x20   CAST(drs.secondary_lag_seconds AS bigint) AS secondary_lag_seconds,\n\
         \x20   CONVERT(varchar(40), drs.last_hardened_lsn) AS last_hardened_lsn,\n\
         \x20   CONVERT(varchar(40), drs.end_of_log_lsn) AS end_of_log_lsn\n\
         FROM sys.availability_groups AS ag\n\
         JOIN sys.availability_replicas AS ar ON ar.group_id = ag.group_id\n\
         LEFT JOIN sys.dm_hadr_availability_replica_states AS ars ON ars.replica_id = ar.replica_id\n\
         LEFT JOIN sys.dm_hadr_database_replica_states AS drs ON drs.replica_id = ar.replica_id\n\
         WHERE ag.is_distributed = 1 AND ag.name = @P1",
    )
    .text(distributed_ag)
}

/// Automatic seeding of the link's database, newest attempt first, joined to the running seed's progress
/// (mi-link.md §4.2). Columns: `current_state`, `failure_state_desc`, `error_code`, `number_of_attempts`,
/// `completed`, `transferred_size_bytes`, `database_size_bytes`.
///
/// Rows are taken under the distributed AG's id *and* the local AG's: which of the two ids the global primary
/// records for a distributed AG's seed is not documented, and Microsoft's own monitoring queries join
/// `sys.dm_hadr_automatic_seeding` to `sys.availability_groups` without saying. The local AG has one replica
/// (this SQL Server), so no seed of its own can exist: every row under either id is the link's.
pub fn seeding(distributed_ag: &str, local_ag: &str) -> Statement {
    Statement::new(
        "SELECT TOP (5) s.current_state, s.failure_state_desc, CAST(s.error_code AS int) AS error_code,\n\
         \x20   CAST(s.number_of_attempts AS int) AS number_of_attempts,\n\
         \x20   CAST(CASE WHEN s.completion_time IS NULL THEN 0 ELSE 1 END AS int) AS completed,\n\
         \x20   CAST(p.transferred_size_bytes AS float) AS transferred_size_bytes, CAST(p.database_size_bytes AS float) AS database_size_bytes\n\
         FROM sys.dm_hadr_automatic_seeding AS s\n\
         JOIN sys.availability_groups AS ag ON ag.group_id = s.ag_id\n\
         LEFT JOIN sys.dm_hadr_physical_seeding_stats AS p ON p.local_physical_seeding_id = s.operation_id\n\
         WHERE ag.name IN (@P1, @P2)\n\
         ORDER BY s.start_time DESC",
    )
    .text(distributed_ag)
    .text(local_ag)
}

/// Whether named availability groups exist and which database each holds (create-link steps 10–11).
/// Columns: `name`, `is_distributed`, `database_name`.
pub fn availability_group_members(names: &[&str]) -> Statement {
    let list: Vec<String> = (1..=names.len()).map(|i| format!("@P{i}")).collect();
    let mut statement = Statement::new(format!(
        "SELECT ag.name, CAST(ag.is_distributed AS int) AS is_distributed, adc.database_name\n\
         FROM sys.availability_groups AS ag\n\
         LEFT JOIN sys.availability_databases_cluster AS adc ON adc.group_id = ag.group_id\n\
         WHERE ag.name IN ({})",
        if list.is_empty() { "NULL".to_owned() } else { list.join(", ") }
    ));
    for name in names {
        statement = statement.text(*name);
    }
    statement
}

/// Who is connected now, for the assessment's connection summary (the sessions to stop at cutover):
/// user sessions only (`is_user_process`, so no system or background task), neither this session nor
/// any other of milink's (it announces itself as `milink`), grouped by application, client address,
/// login and database. The host is the client's network address (`<local machine>` for shared memory),
/// else the workstation name it announced. With `VIEW SERVER STATE` the DMV lists every session; without
/// it, only the caller's own.
pub fn client_sessions() -> Statement {
    Statement::new(
        "SELECT CAST(ISNULL(s.program_name, N'') AS nvarchar(128)) AS application,\n\
         \x20   CAST(COALESCE(c.client_net_address, s.host_name, N'') AS nvarchar(128)) AS host,\n\
         \x20   CAST(s.login_name AS nvarchar(128)) AS login,\n\
         \x20   CAST(ISNULL(DB_NAME(s.database_id), N'') AS nvarchar(128)) AS database_name,\n\
         \x20   CAST(COUNT(*) AS bigint) AS sessions\n\
         FROM sys.dm_exec_sessions AS s\n\
         LEFT JOIN sys.dm_exec_connections AS c ON c.session_id = s.session_id AND c.parent_connection_id IS NULL\n\
         WHERE s.is_user_process = 1 AND s.session_id <> @@SPID AND ISNULL(s.program_name, N'') <> N'milink'\n\
         GROUP BY s.program_name, COALESCE(c.client_net_address, s.host_name, N''), s.login_name, s.database_id",
    )
}

/// The connection test: version, and whether this very session is encrypted as SQL Server sees it
/// (`sys.dm_exec_connections.encrypt_option` of `@@SPID`; readable for one's own session without
/// `VIEW SERVER STATE`).
pub fn connection_test() -> Statement {
    Statement::new(
        "SELECT CAST(c.encrypt_option AS nvarchar(40)) AS encrypt_option,\n\
         \x20   CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)) AS product_version\n\
         FROM sys.dm_exec_connections AS c WHERE c.session_id = @@SPID AND c.parent_connection_id IS NULL",
    )
}
