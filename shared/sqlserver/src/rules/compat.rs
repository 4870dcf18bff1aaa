//! MI compatibility rules (assessment.md §1.1–1.2), with the severities of the suggested mapping.
//!
//! Blockers are what makes a restore (and so the link) fail: FILESTREAM/FileTable, more than one log file,
//! a database larger than the target can hold, a database that is not online. Everything else breaks a
//! feature, not the migration, and is a warning. Trace flags 1800 and 9567 are info: the link itself asks for
//! them (mi-link.md §1.3), so the TraceFlags rule must not count them against the server. Each function
//! here reads only the inventory; the query behind each field is in [`crate::tsql::probe`].
use super::{ServiceTier, TargetFacts, LARGEST_INSTANCE_STORAGE_GB};
use crate::inventory::{DatabaseFacts, Inventory};
use milink_core::assessment::{Finding, Severity};

/// Global trace flags MI supports (`dbcc-traceon` doc).
pub const MI_SUPPORTED_TRACE_FLAGS: &[i32] = &[460, 2301, 2389, 2390, 2453, 2467, 7471, 8207, 9389, 10316, 11024];

/// Trace flags the link recommends on SQL Server (1800, 9567) or uses during seeding (12381).
pub const LINK_TRACE_FLAGS: &[i32] = &[1800, 9567, 12381];

/// milink's rule id → the rule's name in Microsoft's MI list (DMA / Azure Migrate / Arc), shown in the
/// finding so a user can match it to Microsoft's report. Rules without an entry (CmdExec and ActiveScripting
/// job steps, audit targets, the General Purpose file limit) come from the MI documentation, not the list. The
/// code-scanning rules carry their names in [`super::code::CODE_RULES`].
pub const MICROSOFT_RULES: &[(&str, &str)] = &[
    ("analysis_command_job", "AnalysisCommandJob"),
    ("analysis_query_job", "AnalysisQueryJob"),
    ("assembly_from_file", "AssemblyFromFile"),
    ("clr_strict_security", "ClrStrictSecurity"),
    ("compat_level_below_100", "DbCompatLevelLowerThan100"),
    ("database_count", "NumDbExceeds100"),
    ("database_size", "MIDatabaseSize"),
    ("distributed_transactions", "MIHomogeneousMSDTCTransactSQL / MIHeterogeneousMSDTCTransactSQL"),
    ("filestream", "FileStream"),
    ("instance_size", "MIInstanceSize"),
    ("linked_server_non_sql_provider", "LinkedServerWithNonSQLProvider"),
    ("merge_job", "MergeJob"),
    ("multiple_log_files", "MultipleLogFiles"),
    ("powershell_job", "PowerShellJob"),
    ("queue_reader_job", "QueueReaderJob"),
    ("trace_flags", "TraceFlags"),
    ("transact_sql_job", "TransactSqlJob"),
    ("windows_authentication", "WindowsAuthentication"),
    ("xp_cmdshell", "XpCmdshell"),
];

/// Appends Microsoft's rule name to the message of each finding that has one.
fn name_microsoft_rules(mut findings: Vec<Finding>) -> Vec<Finding> {
    for finding in &mut findings {
        if let Some((_, name)) = MICROSOFT_RULES.iter().find(|(id, _)| *id == finding.rule) {
            finding.message = format!("{} (Microsoft rule {name})", finding.message);
        }
    }
    findings
}

/// OLE DB providers a linked server on MI may use.
pub const MI_LINKED_SERVER_PROVIDERS: &[&str] = &["SQLNCLI", "SQLNCLI10", "SQLNCLI11", "SQLOLEDB", "MSOLEDBSQL", "MSOLEDBSQL19"];

/// Instance-level compatibility findings.
pub fn instance_findings(inventory: &Inventory, target: &TargetFacts) -> Vec<Finding> {
    name_microsoft_rules(instance_rules(inventory, target))
}

fn instance_rules(inventory: &Inventory, target: &TargetFacts) -> Vec<Finding> {
    let mut findings = trace_flag_findings(&inventory.global_trace_flags);
    findings.extend(job_step_findings(inventory));
    if !inventory.windows_logins.is_empty() {
        findings.push(
            Finding::new(
                "windows_authentication",
                Severity::Warning,
                "Windows logins are not supported on Azure SQL Managed Instance",
                "recreate these logins as Microsoft Entra logins (CREATE LOGIN … FROM EXTERNAL PROVIDER) and map the database users to them after cutover",
            )
            .with_objects(inventory.windows_logins.clone()),
        );
    }
    let non_sql: Vec<String> = inventory
        .linked_servers
        .iter()
        .filter(|s| !s.product.eq_ignore_ascii_case("SQL Server") && !MI_LINKED_SERVER_PROVIDERS.iter().any(|p| p.eq_ignore_ascii_case(&s.provider)))
        .map(|s| format!("{} ({})", s.name, s.provider))
        .collect();
    if !non_sql.is_empty() {
        findings.push(
            Finding::new(
                "linked_server_non_sql_provider",
                Severity::Warning,
                "linked servers whose provider is not SQL Server stop working on MI (only SQL Server, MI, SQL Database and Synapse targets)",
                "replace them with a SQL Server target, or move the access into the application or Azure Data Factory",
            )
            .with_objects(non_sql),
        );
    }
    let audits: Vec<String> = inventory
        .server_audits
        .iter()
        .filter(|a| !a.type_desc.eq_ignore_ascii_case("URL") && !a.type_desc.eq_ignore_ascii_case("EXTERNAL_MONITOR"))
        .map(|a| format!("{} ({})", a.name, a.type_desc))
        .collect();
    if !audits.is_empty() {
        findings.push(
            Finding::new("server_audit_target", Severity::Warning, "server audits to a file or a Windows log are not supported on MI", "recreate the audits TO URL (Azure Blob Storage) after cutover")
                .with_objects(audits),
        );
    }
    let database_limit = if target.tier == Some(ServiceTier::NextGenGeneralPurpose) { 500 } else { 100 };
    if inventory.databases.len() > database_limit {
        findings.push(Finding::new(
            "database_count",
            Severity::Warning,
            format!("{} user databases: more than one managed instance holds ({database_limit})", inventory.databases.len()),
            "spread the databases over several instances, or use Next-gen General Purpose (500 databases)",
        ));
    }
    let total_gb: f64 = inventory.databases.iter().map(DatabaseFacts::size_gb).sum();
    let limit = target.storage_available_gb.unwrap_or(LARGEST_INSTANCE_STORAGE_GB);
    if total_gb > limit {
        findings.push(Finding::new(
            "instance_size",
            Severity::Warning,
            format!("all databases together take {total_gb:.0} GB, more than one instance holds ({limit:.0} GB)"),
            "migrate the databases to more than one managed instance",
        ));
    }
    let files: u32 = inventory.databases.iter().map(|d| d.data_files + d.log_files).sum();
    if files > 280 && target.tier != Some(ServiceTier::BusinessCritical) && target.tier != Some(ServiceTier::NextGenGeneralPurpose) {
        findings.push(Finding::new(
            "file_count",
            if target.tier == Some(ServiceTier::GeneralPurpose) { Severity::Blocker } else { Severity::Warning },
            format!("{files} database files: General Purpose holds at most 280 files per instance"),
            "use Business Critical or Next-gen General Purpose, or merge files (DBCC SHRINKFILE … EMPTYFILE, then ALTER DATABASE … REMOVE FILE)",
        ));
    }
    findings
}

/// Trace flag findings: unsupported ones are a warning, the link's own are info.
pub fn trace_flag_findings(flags: &[i32]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let unsupported: Vec<String> = flags
        .iter()
        .filter(|f| !MI_SUPPORTED_TRACE_FLAGS.contains(f) && !LINK_TRACE_FLAGS.contains(f))
        .map(|f| f.to_string())
        .collect();
    if !unsupported.is_empty() {
        findings.push(
            Finding::new(
                "trace_flags",
                Severity::Warning,
                "global trace flags that Azure SQL Managed Instance does not support are enabled",
                "check what each flag does for the workload; MI supports only 460, 2301, 2389, 2390, 2453, 2467, 7471, 8207, 9389, 10316 and 11024 (global)",
            )
            .with_objects(unsupported),
        );
    }
    let link_flags: Vec<String> = flags.iter().filter(|f| LINK_TRACE_FLAGS.contains(f)).map(|f| f.to_string()).collect();
    if !link_flags.is_empty() {
        findings.push(
            Finding::new(
                "trace_flags_for_link",
                Severity::Info,
                "trace flags the MI link recommends on SQL Server are enabled (1800: log sector size; 9567: compressed seeding; 12381: no log truncation while seeding); they stay on SQL Server and are not needed on MI",
                "nothing to do; disable 12381 after seeding",
            )
            .with_objects(link_flags),
        );
    }
    findings
}

fn job_step_findings(inventory: &Inventory) -> Vec<Finding> {
    const UNSUPPORTED: &[(&str, &str, &str)] = &[
        ("POWERSHELL", "powershell_job", "PowerShell job steps"),
        ("CMDEXEC", "cmdexec_job", "operating system (CmdExec) job steps"),
        ("ACTIVESCRIPTING", "active_scripting_job", "ActiveX script job steps"),
        ("ANALYSISQUERY", "analysis_query_job", "Analysis Services query job steps"),
        ("ANALYSISCOMMAND", "analysis_command_job", "Analysis Services command job steps"),
        ("MERGE", "merge_job", "merge replication job steps"),
        ("QUEUEREADER", "queue_reader_job", "queue reader job steps"),
    ];
    let mut findings = Vec::new();
    for (subsystem, rule, what) in UNSUPPORTED {
        let steps: Vec<String> = inventory
            .job_steps
            .iter()
            .filter(|s| s.subsystem.eq_ignore_ascii_case(subsystem))
            .map(|s| format!("{} / {}", s.job_name, s.step_name))
            .collect();
        if !steps.is_empty() {
            findings.push(
                Finding::new(rule, Severity::Warning, format!("{what} are not supported by SQL Agent on MI"), "rewrite the steps as T-SQL or SSIS steps, or move them to Azure Automation / Functions")
                    .with_objects(steps),
            );
        }
    }
    let tsql: Vec<String> = inventory
        .job_steps
        .iter()
        .filter(|s| s.subsystem.eq_ignore_ascii_case("TSQL") && tsql_step_unsupported(&s.command))
        .map(|s| format!("{} / {}", s.job_name, s.step_name))
        .collect();
    if !tsql.is_empty() {
        findings.push(
            Finding::new(
                "transact_sql_job",
                Severity::Warning,
                "T-SQL job steps use commands MI does not support (BACKUP/RESTORE to disk, xp_cmdshell, attach/detach)",
                "remove backup jobs (MI backs up automatically; use COPY_ONLY BACKUP TO URL if you need your own) and rewrite the other commands",
            )
            .with_objects(tsql),
        );
    }
    findings
}

/// A T-SQL job step command that MI refuses.
pub fn tsql_step_unsupported(command: &str) -> bool {
    let upper = command.to_ascii_uppercase();
    (upper.contains("BACKUP ") && upper.contains("TO DISK"))
        || upper.contains("RESTORE DATABASE")
        || upper.contains("RESTORE LOG")
        || upper.contains("XP_CMDSHELL")
        || upper.contains("SP_ATTACH_DB")
        || upper.contains("SP_DETACH_DB")
}

/// Database-level compatibility findings.
pub fn database_findings(db: &DatabaseFacts, target: &TargetFacts) -> Vec<Finding> {
    name_microsoft_rules(database_rules(db, target))
}

fn database_rules(db: &DatabaseFacts, target: &TargetFacts) -> Vec<Finding> {
    let mut findings = Vec::new();
    if !db.state_desc.eq_ignore_ascii_case("ONLINE") {
        findings.push(Finding::new(
            "database_not_online",
            Severity::Blocker,
            format!("the database is {}; only online databases can be assessed and linked", db.state_desc),
            "bring the database online (ALTER DATABASE … SET ONLINE) and assess again",
        ));
    }
    if let Some(error) = &db.read_error {
        findings.push(Finding::new(
            "assessment_incomplete",
            Severity::Warning,
            format!("milink could not read the database's own catalog ({error}); FILESTREAM, In-Memory OLTP, CLR and code rules were not evaluated"),
            "grant the assessment login access to the database (VIEW DATABASE STATE, VIEW DEFINITION) and assess again",
        ));
    }
    if db.filestream_filegroups > 0 || db.filetables > 0 {
        findings.push(Finding::new(
            "filestream",
            Severity::Blocker,
            format!("FILESTREAM or FileTable is used ({} FILESTREAM filegroups, {} FileTables); MI cannot restore or link it", db.filestream_filegroups, db.filetables),
            "move the FILESTREAM data out (for example to Azure Blob Storage with a varbinary or path column), drop the FILESTREAM filegroups and FileTables, then assess again",
        ));
    }
    if db.log_files > 1 {
        findings.push(Finding::new(
            "multiple_log_files",
            Severity::Blocker,
            format!("the database has {} log files; MI cannot restore or link a database with more than one", db.log_files),
            "empty and remove the extra log files: DBCC SHRINKFILE (<file>, EMPTYFILE) after a log backup, then ALTER DATABASE … REMOVE FILE <file>",
        ));
    }
    let limit = target.storage_available_gb.unwrap_or(LARGEST_INSTANCE_STORAGE_GB);
    if db.size_gb() > limit {
        findings.push(Finding::new(
            "database_size",
            Severity::Blocker,
            format!("the database takes {:.0} GB (data and log), more than the target can hold ({limit:.0} GB)", db.size_gb()),
            "reserve more storage on the target (or choose a tier that holds more), or reduce the database (archive data, shrink the log)",
        ));
    }
    if db.compatibility_level > 0 && db.compatibility_level < 100 {
        findings.push(Finding::new(
            "compat_level_below_100",
            Severity::Warning,
            format!("compatibility level {} is raised to 100 on MI", db.compatibility_level),
            "test the application at compatibility level 100 or higher before cutover",
        ));
    }
    push_objects(&mut findings, "assembly_from_file", Severity::Warning, "CLR assemblies created from a file path cannot be created that way on MI", "recreate them FROM BINARY (the assembly bits as varbinary)", &db.assemblies_from_file);
    push_objects(&mut findings, "clr_strict_security", Severity::Warning, "SAFE or EXTERNAL_ACCESS assemblies are treated as UNSAFE under CLR strict security on MI", "sign the assemblies with a certificate or asymmetric key, or add them with sys.sp_add_trusted_assembly", &db.clr_safe_or_external_assemblies);
    push_objects(&mut findings, "distributed_transactions", Severity::Warning, "modules start distributed transactions; across SQL Server instances they need DTC for Managed Instance, and to other products they are not supported", "configure DTC for Azure SQL Managed Instance for MI-to-MI transactions, or remove them", &db.distributed_transaction_modules);
    push_objects(&mut findings, "xp_cmdshell", Severity::Warning, "modules call xp_cmdshell, which MI does not have", "move the shell work out of the database (Azure Automation, Functions)", &db.xp_cmdshell_modules);
    push_objects(&mut findings, "windows_authentication", Severity::Warning, "database users are mapped to Windows principals, which MI does not support", "map these users to Microsoft Entra logins after cutover (ALTER USER … WITH LOGIN)", &db.windows_users);
    findings
}

fn push_objects(findings: &mut Vec<Finding>, rule: &str, severity: Severity, message: &str, remediation: &str, objects: &[String]) {
    if !objects.is_empty() {
        findings.push(Finding::new(rule, severity, message, remediation).with_objects(objects.to_vec()));
    }
}
