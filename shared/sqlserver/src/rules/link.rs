//! MI link readiness (assessment.md §2, mi-link.md §1): can this server and this database be linked?
//!
//! Blockers are what stops `create_link` or makes the link fail: the build and edition, Always On not
//! enabled, a client OS, and per database: not FULL, no full backup (error 1475), FILESTREAM (also a
//! compatibility blocker), more than one log file, In-Memory OLTP to a tier without it, an existing AG.
//! Things `create_link` sets up itself (master key, endpoint, trusted roots) are info: the user learns what
//! will be created. Failback is info computed from the build and, when known, the MI's update policy.
use super::{ServiceTier, TargetFacts};
use crate::inventory::{DatabaseFacts, Inventory};
use crate::versions::{failback, minimum_link_build, Build};
use milink_core::assessment::{Finding, Severity};

/// Instance-level link readiness.
pub fn instance_findings(inventory: &Inventory, target: &TargetFacts) -> Vec<Finding> {
    let instance = &inventory.instance;
    let mut findings = Vec::new();
    match Build::parse(&instance.product_version) {
        None => findings.push(Finding::new(
            "link_unknown_version",
            Severity::Blocker,
            format!("the server reports version {:?}, which milink cannot read", instance.product_version),
            "check SERVERPROPERTY('ProductVersion') on the server",
        )),
        Some(build) => {
            findings.extend(build_findings(build));
            if build.major() >= 13 {
                let failback = failback(build, target.update_policy);
                findings.push(Finding::new(
                    "failback",
                    Severity::Info,
                    failback.reason,
                    if failback.possible { "nothing to do: keep_reverse_link can keep a reverse link after cutover" } else { "plan cutover as one-way: keep a backup strategy for going back (restore an MI backup to SQL Server 2022/2025, or transactional replication)" },
                ));
            }
        }
    }
    let edition = instance.edition.to_ascii_lowercase();
    if !(edition.contains("enterprise") || edition.contains("developer") || edition.contains("standard")) {
        findings.push(Finding::new(
            "link_edition",
            Severity::Blocker,
            format!("{} cannot host the MI link (Enterprise, Standard or Developer only)", instance.edition),
            "upgrade the edition, or migrate with backup and restore (Log Replay Service) instead",
        ));
    }
    let distribution = instance.host_distribution.to_ascii_lowercase();
    if distribution.contains("windows 10") || distribution.contains("windows 11") {
        findings.push(Finding::new(
            "link_client_os",
            Severity::Blocker,
            format!("{} is a client OS: the availability group feature cannot be enabled there", instance.host_distribution),
            "host SQL Server on Windows Server 2012 or later, or on Linux",
        ));
    }
    if !instance.is_hadr_enabled {
        findings.push(Finding::new(
            "hadr_disabled",
            Severity::Blocker,
            "Always On availability groups are not enabled (SERVERPROPERTY('IsHadrEnabled') = 0)",
            "enable Always On availability groups in SQL Server Configuration Manager (Linux: mssql-conf set hadr.hadrenabled 1) and restart SQL Server",
        ));
    }
    if instance.is_clustered {
        findings.push(Finding::new(
            "failover_cluster_instance",
            Severity::Warning,
            "the instance is a failover cluster instance; the Arc migration experience does not support FCIs and the link's endpoint must follow the FCI",
            "use the FCI's virtual network name/IP in replication_url and test a cluster failover before cutover",
        ));
    }
    if !inventory.has_master_key {
        findings.push(Finding::new("master_key_missing", Severity::Info, "there is no database master key in master", "nothing to do: milink creates one (protected by the service master key)"));
    }
    match &inventory.mirroring_endpoint {
        None => findings.push(Finding::new("mirroring_endpoint", Severity::Info, "there is no database mirroring endpoint", "nothing to do: milink creates one on TCP 5022 with certificate authentication and AES")),
        Some(endpoint) if !endpoint.is_link_ready() => findings.push(
            Finding::new(
                "mirroring_endpoint",
                Severity::Info,
                format!(
                    "the mirroring endpoint is {} with {} authentication and {} encryption; the link needs it started with certificate authentication and AES",
                    endpoint.state_desc, endpoint.connection_auth_desc, endpoint.encryption_algorithm_desc
                ),
                "nothing to do: milink alters it to WINDOWS NEGOTIATE CERTIFICATE with AES (existing Windows-authenticated AGs keep working)",
            )
            .with_objects(vec![endpoint.name.clone()]),
        ),
        Some(_) => {}
    }
    let has = |name: &str| inventory.certificates.iter().any(|c| c.name == name);
    if !(has("MicrosoftPKI") && has("DigiCertPKI")) {
        findings.push(Finding::new("trusted_roots_missing", Severity::Info, "the Azure trusted root certificates (MicrosoftPKI, DigiCertPKI) are not in master", "nothing to do: milink imports them and trusts them for the MI's DNS zone"));
    }
    let missing_flags: Vec<String> = [1800, 9567].iter().filter(|f| !inventory.global_trace_flags.contains(f)).map(|f| f.to_string()).collect();
    if !missing_flags.is_empty() {
        findings.push(
            Finding::new(
                "link_trace_flags_missing",
                Severity::Info,
                "the startup trace flags the link recommends are not enabled (1800: log sector sizes differ; 9567: compressed seeding)",
                "add -T1800 and -T9567 as startup parameters in SQL Server Configuration Manager and restart, before seeding",
            )
            .with_objects(missing_flags),
        );
    }
    if instance.agent_running == Some(false) {
        findings.push(Finding::new("agent_not_running", Severity::Info, "SQL Server Agent is not running; the network test runs as Agent jobs", "start SQL Server Agent to let milink test the network from SQL Server"));
    }
    if let Some(collation) = &target.collation {
        if !collation.eq_ignore_ascii_case(&instance.collation) {
            findings.push(Finding::new(
                "collation_mismatch",
                Severity::Warning,
                format!("SQL Server's collation {} differs from the managed instance's {collation}; server-name casing can then prevent the link from connecting", instance.collation),
                "use a managed instance with the same collation, or test the link before cutover",
            ));
        }
    }
    findings
}

/// Version findings: too old a major version, or too old a build of a supported one.
pub fn build_findings(build: Build) -> Vec<Finding> {
    match minimum_link_build(build.major()) {
        None if build.major() > 17 => vec![Finding::new("link_untested_version", Severity::Warning, format!("{build} is newer than the versions milink knows"), "check the MI link documentation for this version")],
        None => vec![Finding::new(
            "link_unsupported_version",
            Severity::Blocker,
            format!("{} ({build}) cannot use the MI link (no distributed availability groups)", build.product()),
            "upgrade to SQL Server 2016 SP3 or later with the Azure Connect pack, or migrate with the Log Replay Service",
        )],
        Some(minimum) if build < minimum.build => vec![Finding::new(
            "link_build_too_old",
            Severity::Blocker,
            format!("{} build {build} is older than the oldest build that can link ({})", build.product(), minimum.build),
            format!("install {}", minimum.update),
        )],
        Some(_) => Vec::new(),
    }
}

/// Database-level link readiness.
pub fn database_findings(inventory: &Inventory, db: &DatabaseFacts, target: &TargetFacts) -> Vec<Finding> {
    let mut findings = Vec::new();
    if !db.recovery_model_desc.eq_ignore_ascii_case("FULL") {
        findings.push(Finding::new(
            "recovery_model_not_full",
            Severity::Blocker,
            format!("the recovery model is {}; the link needs FULL", db.recovery_model_desc),
            "ALTER DATABASE … SET RECOVERY FULL, then take a full backup (not COPY_ONLY)",
        ));
    } else if !db.has_full_backup || !db.log_chain_established {
        findings.push(Finding::new(
            "no_full_backup",
            Severity::Blocker,
            "no full backup starts the log chain, so creating the link fails with error 1475",
            "take a full backup without COPY_ONLY (BACKUP DATABASE … TO DISK/URL …) to start a log chain",
        ));
    }
    let in_memory = db.memory_optimized_filegroups > 0 || db.memory_optimized_tables > 0;
    if in_memory {
        let (severity, message) = match target.tier {
            Some(ServiceTier::BusinessCritical) => (Severity::Info, "In-Memory OLTP is used; the Business Critical target supports it".to_owned()),
            Some(tier) => (Severity::Blocker, format!("In-Memory OLTP is used and the target is {}, which does not support it", tier.label())),
            None => (Severity::Warning, "In-Memory OLTP is used; only a Business Critical instance can take this database".to_owned()),
        };
        findings.push(Finding::new("in_memory_oltp", severity, message, "link it to a Business Critical managed instance, or remove the memory-optimized objects and filegroup"));
    }
    if db.memory_optimized_containers > 1 {
        findings.push(Finding::new(
            "multiple_in_memory_files",
            Severity::Blocker,
            format!("the memory-optimized filegroup has {} containers; the link supports only one", db.memory_optimized_containers),
            "remove the extra containers (ALTER DATABASE … REMOVE FILE) so one remains",
        ));
    }
    if let Some(ag) = &db.availability_group {
        let count = inventory.availability_groups.iter().find(|g| &g.name == ag).map_or(0, |g| g.database_count);
        findings.push(
            Finding::new(
                "existing_availability_group",
                Severity::Blocker,
                format!("the database is already in availability group {ag} ({count} databases); milink links a database through its own one-database availability group"),
                "remove the database from that availability group (ALTER AVAILABILITY GROUP … REMOVE DATABASE …) before linking",
            )
            .with_objects(vec![ag.clone()]),
        );
    }
    if db.is_encrypted {
        findings.push(Finding::new(
            "tde_certificate",
            Severity::Warning,
            format!("TDE is on (certificate {}); the managed instance must hold that certificate before the link seeds", db.tde_certificate.as_deref().unwrap_or("unknown")),
            "migrate the TDE certificate to the managed instance first (Add-AzSqlManagedInstanceTransparentDataEncryptionCertificate), or use a customer-managed key in Azure Key Vault",
        ));
    }
    if db.is_accelerated_database_recovery_on == Some(false) {
        findings.push(Finding::new("adr_disabled", Severity::Info, "accelerated database recovery is off and cannot be turned on after migration to MI", "ALTER DATABASE … SET ACCELERATED_DATABASE_RECOVERY = ON before linking if you want it on MI"));
    }
    if db.is_replicated || db.is_cdc_enabled {
        findings.push(Finding::new(
            "replication_reconfigure",
            Severity::Warning,
            "replication or change data capture is configured; it is not carried by the link",
            "reconfigure replication/CDC on the managed instance after cutover",
        ));
    }
    findings
}
