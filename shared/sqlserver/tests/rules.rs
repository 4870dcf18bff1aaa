//! Assessment and link-readiness rules on inventories captured as data: the Tailspin lab (ToyStore Ready,
//! Customer360 Not ready for FILESTREAM and two log files) and edge cases of builds, editions and databases.
use milink_core::assessment::{Assessment, AssessmentReport, Finding, Readiness, Severity};
use milink_core::names::ConnectionName;
use milink_sqlserver::inventory::{AvailabilityGroupFacts, Inventory};
use milink_sqlserver::rules::{evaluate, ServiceTier, TargetFacts};
use milink_sqlserver::versions::UpdatePolicy;

fn tailspin() -> Inventory {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tailspin.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn assess(inventory: &Inventory) -> Assessment {
    evaluate(inventory, &TargetFacts::default())
}

fn readiness(assessment: &Assessment, database: &str) -> Readiness {
    assessment.databases.iter().find(|d| d.name == database).unwrap().readiness
}

fn rules_of(findings: &[Finding]) -> Vec<(&str, Severity)> {
    findings.iter().map(|f| (f.rule.as_str(), f.severity)).collect()
}

fn db_findings<'a>(assessment: &'a Assessment, database: &str) -> &'a [Finding] {
    &assessment.databases.iter().find(|d| d.name == database).unwrap().findings
}

#[test]
fn tailspin_toystore_is_ready_and_customer360_is_not() {
    let assessment = assess(&tailspin());
    assert_eq!(readiness(&assessment, "ToyStore"), Readiness::Ready, "{:#?}", db_findings(&assessment, "ToyStore"));
    assert_eq!(readiness(&assessment, "Customer360"), Readiness::NotReady);
    let blockers: Vec<&str> = db_findings(&assessment, "Customer360").iter().filter(|f| f.severity == Severity::Blocker).map(|f| f.rule.as_str()).collect();
    assert_eq!(blockers, ["filestream", "multiple_log_files"]);
    let filestream = &db_findings(&assessment, "Customer360")[0];
    assert!(filestream.remediation.contains("FILESTREAM"), "{}", filestream.remediation);
}

#[test]
fn the_links_own_trace_flags_are_info_not_warnings() {
    let assessment = assess(&tailspin());
    let flags = assessment.instance_findings.iter().find(|f| f.rule == "trace_flags_for_link").expect("1800/9567 reported");
    assert_eq!(flags.severity, Severity::Info);
    assert_eq!(flags.objects, ["1800", "9567"]);
    assert!(!assessment.instance_findings.iter().any(|f| f.rule == "trace_flags"), "1800 and 9567 are not unsupported flags");
    assert!(!assessment.instance_findings.iter().any(|f| f.rule == "link_trace_flags_missing"));

    let mut inventory = tailspin();
    inventory.global_trace_flags = vec![1117, 1800, 460];
    let assessment = assess(&inventory);
    let unsupported = assessment.instance_findings.iter().find(|f| f.rule == "trace_flags").unwrap();
    assert_eq!((unsupported.severity, unsupported.objects.clone()), (Severity::Warning, vec!["1117".to_owned()]));
    let missing = assessment.instance_findings.iter().find(|f| f.rule == "link_trace_flags_missing").unwrap();
    assert_eq!(missing.objects, ["9567"]);
}

#[test]
fn the_core_rolls_the_report_up_the_same_way() {
    let report = AssessmentReport::running("a1".into(), ConnectionName::parse("tailspin-src").unwrap(), chrono::Utc::now()).completed(assess(&tailspin()), chrono::Utc::now());
    assert_eq!(report.databases.iter().map(|d| (d.name.as_str(), d.readiness)).collect::<Vec<_>>(), [("ToyStore", Readiness::Ready), ("Customer360", Readiness::NotReady)]);
    assert!(report.blockers_for("ToyStore").unwrap().is_empty());
    assert_eq!(report.blockers_for("Customer360").unwrap().len(), 2);
}

fn with_version(version: &str) -> Assessment {
    let mut inventory = tailspin();
    inventory.instance.product_version = version.into();
    assess(&inventory)
}

#[test]
fn builds_below_the_minimum_block_every_database() {
    for (version, blocked, rule) in [
        ("15.0.4298.1", true, "link_build_too_old"),      // 2019 CU19
        ("15.0.4312.2", false, ""),                       // 2019 CU20
        ("14.0.3456.2", true, "link_build_too_old"),      // 2017 CU31 without the Azure Connect pack
        ("14.0.3490.10", false, ""),                      // 2017 Azure Connect pack
        ("13.0.6300.2", true, "link_build_too_old"),      // 2016 SP3 without the Azure Connect pack
        ("13.0.6435.1", true, "link_build_too_old"),      // 2016 SP3 GDR, still no Azure Connect pack
        ("13.0.7000.253", false, ""),                     // 2016 Azure Connect pack
        ("12.0.6024.0", true, "link_unsupported_version"), // 2014
        ("16.0.1000.6", false, ""),                       // 2022 RTM
        ("17.0.1000.7", false, ""),                       // 2025 RTM
    ] {
        let assessment = with_version(version);
        assert_eq!(readiness(&assessment, "ToyStore") == Readiness::NotReady, blocked, "{version}");
        if blocked {
            let finding = assessment.instance_findings.iter().find(|f| f.rule == rule).unwrap_or_else(|| panic!("{version}: {rule}"));
            assert_eq!(finding.severity, Severity::Blocker);
            assert!(!finding.remediation.is_empty());
        }
    }
    let finding = with_version("13.0.6300.2").instance_findings.into_iter().find(|f| f.rule == "link_build_too_old").unwrap();
    assert!(finding.remediation.contains("Azure Connect pack (13.0.7000.253"), "{}", finding.remediation);
}

#[test]
fn editions_hosts_and_hadr() {
    let check = |change: &dyn Fn(&mut Inventory), rule: &str| {
        let mut inventory = tailspin();
        change(&mut inventory);
        let assessment = assess(&inventory);
        assert_eq!(readiness(&assessment, "ToyStore"), Readiness::NotReady, "{rule}");
        assert!(rules_of(&assessment.instance_findings).contains(&(rule, Severity::Blocker)), "{rule}: {:?}", rules_of(&assessment.instance_findings));
    };
    check(&|i| i.instance.edition = "Express Edition (64-bit)".into(), "link_edition");
    check(&|i| i.instance.edition = "Web Edition (64-bit)".into(), "link_edition");
    check(&|i| i.instance.host_distribution = "Windows 10 Enterprise".into(), "link_client_os");
    check(&|i| i.instance.is_hadr_enabled = false, "hadr_disabled");
    for edition in ["Standard Edition (64-bit)", "Developer Edition (64-bit)", "Enterprise Evaluation Edition (64-bit)"] {
        let mut inventory = tailspin();
        inventory.instance.edition = edition.into();
        assert_eq!(readiness(&assess(&inventory), "ToyStore"), Readiness::Ready, "{edition}");
    }
}

#[test]
fn database_prerequisites_of_the_link() {
    let check = |change: &dyn Fn(&mut Inventory), rule: &str, severity: Severity| {
        let mut inventory = tailspin();
        change(&mut inventory);
        let assessment = assess(&inventory);
        assert!(rules_of(db_findings(&assessment, "ToyStore")).contains(&(rule, severity)), "{rule}: {:?}", rules_of(db_findings(&assessment, "ToyStore")));
    };
    check(&|i| i.databases[0].recovery_model_desc = "SIMPLE".into(), "recovery_model_not_full", Severity::Blocker);
    check(&|i| i.databases[0].log_chain_established = false, "no_full_backup", Severity::Blocker);
    check(&|i| i.databases[0].has_full_backup = false, "no_full_backup", Severity::Blocker);
    check(&|i| i.databases[0].state_desc = "RESTORING".into(), "database_not_online", Severity::Blocker);
    check(&|i| i.databases[0].data_size_mb = 40.0 * 1024.0 * 1024.0, "database_size", Severity::Blocker);
    check(&|i| i.databases[0].memory_optimized_filegroups = 1, "in_memory_oltp", Severity::Warning);
    check(&|i| i.databases[0].memory_optimized_containers = 2, "multiple_in_memory_files", Severity::Blocker);
    check(&|i| i.databases[0].is_encrypted = true, "tde_certificate", Severity::Warning);
    check(&|i| i.databases[0].compatibility_level = 90, "compat_level_below_100", Severity::Warning);
    check(&|i| i.databases[0].assemblies_from_file = vec!["Geo".into()], "assembly_from_file", Severity::Warning);
    check(&|i| i.databases[0].distributed_transaction_modules = vec!["dbo.Sync".into()], "distributed_transactions", Severity::Warning);
    check(
        &|i| {
            i.databases[0].availability_group = Some("AG1".into());
            i.availability_groups = vec![AvailabilityGroupFacts { name: "AG1".into(), is_distributed: false, database_count: 3 }];
        },
        "existing_availability_group",
        Severity::Blocker,
    );
    let mut inventory = tailspin();
    inventory.databases[0].recovery_model_desc = "SIMPLE".into();
    let finding = assess(&inventory).databases[0].findings.iter().find(|f| f.rule == "recovery_model_not_full").unwrap().clone();
    assert!(finding.remediation.contains("SET RECOVERY FULL"));
}

#[test]
fn the_target_decides_in_memory_oltp_and_size() {
    let mut inventory = tailspin();
    inventory.databases[0].memory_optimized_tables = 4;
    for (tier, severity) in [(ServiceTier::GeneralPurpose, Severity::Blocker), (ServiceTier::NextGenGeneralPurpose, Severity::Blocker), (ServiceTier::BusinessCritical, Severity::Info)] {
        let assessment = evaluate(&inventory, &TargetFacts { tier: Some(tier), ..TargetFacts::default() });
        assert!(rules_of(db_findings(&assessment, "ToyStore")).contains(&("in_memory_oltp", severity)), "{tier:?}");
    }
    let small = TargetFacts { storage_available_gb: Some(16.0), ..TargetFacts::default() };
    assert!(rules_of(db_findings(&evaluate(&tailspin(), &small), "ToyStore")).contains(&("database_size", Severity::Blocker)));
}

#[test]
fn failback_is_reported_from_the_build_and_the_update_policy() {
    let failback = |version: &str, policy: Option<UpdatePolicy>| {
        let mut inventory = tailspin();
        inventory.instance.product_version = version.into();
        evaluate(&inventory, &TargetFacts { update_policy: policy, ..TargetFacts::default() }).instance_findings.into_iter().find(|f| f.rule == "failback").unwrap()
    };
    assert!(failback("16.0.4135.4", Some(UpdatePolicy::SqlServer2022)).message.contains("can fail over and fail back"));
    assert!(failback("16.0.4135.4", Some(UpdatePolicy::AlwaysUpToDate)).message.contains("does not match"));
    assert!(failback("15.0.4312.2", None).message.contains("one way only"));
    assert_eq!(failback("17.0.1000.7", Some(UpdatePolicy::SqlServer2025)).severity, Severity::Info);
}

#[test]
fn instance_compatibility_warnings_name_the_objects() {
    let mut inventory = tailspin();
    inventory.windows_logins = vec!["TAILSPIN\\svc_reports".into()];
    inventory.linked_servers = vec![milink_sqlserver::inventory::LinkedServer { name: "ORA".into(), product: "Oracle".into(), provider: "OraOLEDB.Oracle".into() }];
    inventory.job_steps = vec![
        milink_sqlserver::inventory::JobStep { job_name: "Nightly".into(), step_name: "export".into(), subsystem: "PowerShell".into(), command: "x".into() },
        milink_sqlserver::inventory::JobStep { job_name: "Backup".into(), step_name: "full".into(), subsystem: "TSQL".into(), command: "BACKUP DATABASE ToyStore TO DISK = 'x'".into() },
        milink_sqlserver::inventory::JobStep { job_name: "Ok".into(), step_name: "ok".into(), subsystem: "TSQL".into(), command: "EXEC dbo.Cleanup".into() },
    ];
    let assessment = assess(&inventory);
    let found = rules_of(&assessment.instance_findings);
    for rule in ["windows_authentication", "linked_server_non_sql_provider", "powershell_job", "transact_sql_job"] {
        assert!(found.contains(&(rule, Severity::Warning)), "{rule}: {found:?}");
    }
    let tsql = assessment.instance_findings.iter().find(|f| f.rule == "transact_sql_job").unwrap();
    assert_eq!(tsql.objects, ["Backup / full"]);
    assert_eq!(readiness(&assessment, "ToyStore"), Readiness::Ready, "instance warnings do not block a database");
}

/// The code-scanning rules of Microsoft's MI list: each legacy form is found with Microsoft's rule name, the
/// module that holds it and a remediation, and its modern rewrite is not.
#[test]
fn code_rules_find_legacy_t_sql_in_modules_and_not_its_modern_rewrite() {
    use milink_sqlserver::inventory::ModuleText;
    use milink_sqlserver::rules::code::CODE_RULES;
    let cases: &[(&str, &str, &str, &str)] = &[
        ("bulk_insert", "BulkInsert", "CREATE PROCEDURE dbo.LoadOrders AS BULK INSERT dbo.Orders FROM 'D:\\feeds\\orders.csv' WITH (FIELDTERMINATOR = ',')",
            "CREATE PROCEDURE dbo.LoadOrders AS BULK INSERT dbo.Orders FROM 'feeds/orders.csv' WITH (DATA_SOURCE = 'FeedBlob', FORMAT = 'CSV')"),
        ("compute_clause", "ComputeClause", "CREATE PROCEDURE dbo.Totals AS SELECT id, price FROM dbo.Toys ORDER BY id COMPUTE SUM(price)",
            "CREATE PROCEDURE dbo.Totals AS SELECT id, SUM(price) FROM dbo.Toys GROUP BY ROLLUP(id)"),
        ("cryptographic_provider", "CryptographicProvider", "CREATE PROCEDURE dbo.Ekm AS CREATE CRYPTOGRAPHIC PROVIDER Hsm FROM FILE = 'C:\\hsm.dll'",
            "CREATE PROCEDURE dbo.Ekm AS SELECT name FROM sys.cryptographic_providers"),
        ("database_principal_alias", "DatabasePrincipalAlias", "CREATE PROCEDURE dbo.Alias AS EXEC sp_addalias 'legacy_login', 'dbo'",
            "CREATE PROCEDURE dbo.Alias AS ALTER ROLE db_owner ADD MEMBER legacy_user"),
        ("disable_def_cnst_chk", "DisableDefCNSTCHK", "CREATE PROCEDURE dbo.Fast AS SET DISABLE_DEF_CNST_CHK ON; INSERT dbo.T VALUES (1)",
            "CREATE PROCEDURE dbo.Fast AS INSERT dbo.T VALUES (1)"),
        ("fast_first_row_hint", "FastFirstRowHint", "CREATE VIEW dbo.FirstToy AS SELECT id FROM dbo.Toys WITH (FASTFIRSTROW)",
            "CREATE PROCEDURE dbo.FirstToy AS SELECT id FROM dbo.Toys OPTION (FAST 1)"),
        ("non_ansi_left_outer_join", "NonANSILeftOuterJoinSyntax", "CREATE VIEW dbo.V AS SELECT o.id FROM dbo.Orders o, dbo.Customers c WHERE o.customer_id *= c.id",
            "CREATE PROCEDURE dbo.V @n int AS SET @n *= 2; SELECT o.id FROM dbo.Orders o LEFT JOIN dbo.Customers c ON o.customer_id = c.id"),
        ("non_ansi_right_outer_join", "NonANSIRightOuterJoinSyntax", "CREATE VIEW dbo.W AS SELECT o.id FROM dbo.Orders o, dbo.Customers c WHERE o.customer_id =* c.id",
            "CREATE VIEW dbo.W AS SELECT o.id FROM dbo.Orders o RIGHT JOIN dbo.Customers c ON o.customer_id = c.id"),
        ("openrowset_bulk_non_blob", "OpenRowsetWithNonBlobDataSourceBulk", "CREATE PROCEDURE dbo.Img AS SELECT * FROM OPENROWSET(BULK 'C:\\img\\logo.png', SINGLE_BLOB) AS x",
            "CREATE PROCEDURE dbo.Img AS SELECT * FROM OPENROWSET(BULK 'img/logo.png', DATA_SOURCE = 'Assets', SINGLE_BLOB) AS x"),
        ("openrowset_non_sql_provider", "OpenRowsetWithNonSQLProvider", "CREATE PROCEDURE dbo.Xl AS SELECT * FROM OPENROWSET('Microsoft.ACE.OLEDB.12.0', 'Excel 12.0;Database=C:\\x.xlsx', 'SELECT * FROM [S$]')",
            "CREATE PROCEDURE dbo.Xl AS SELECT * FROM OPENROWSET('MSOLEDBSQL', 'Server=sql02;Trusted_Connection=yes;', 'SELECT 1')"),
        ("raiserror_legacy", "RAISERROR", "CREATE TRIGGER dbo.T1 ON dbo.Toys AFTER INSERT AS RAISERROR 50001 'no toys today'",
            "CREATE TRIGGER dbo.T1 ON dbo.Toys AFTER INSERT AS RAISERROR ('no toys today', 16, 1)"),
        ("sql_mail", "SqlMail", "CREATE PROCEDURE dbo.Notify AS EXEC master..xp_sendmail @recipients = 'ops@tailspin.example', @message = 'done'",
            "CREATE PROCEDURE dbo.Notify AS EXEC msdb.dbo.sp_send_dbmail @recipients = 'ops@tailspin.example', @body = 'done'"),
        ("system_procedures_110", "SystemProcedures110", "CREATE PROCEDURE dbo.ReadOnly AS EXEC sp_dboption 'ToyStore', 'read only', 'TRUE'",
            "CREATE PROCEDURE dbo.ReadOnly AS ALTER DATABASE ToyStore SET READ_ONLY"),
    ];
    for (rule, microsoft, legacy, modern) in cases {
        let mut inventory = tailspin();
        let toystore = inventory.databases.iter_mut().find(|d| d.name == "ToyStore").unwrap();
        toystore.modules = vec![ModuleText { name: "dbo.Legacy".into(), definition: (*legacy).into() }, ModuleText { name: "dbo.Modern".into(), definition: (*modern).into() }];
        let assessment = assess(&inventory);
        let findings = db_findings(&assessment, "ToyStore");
        let code: Vec<&Finding> = findings.iter().filter(|f| CODE_RULES.iter().any(|r| r.id == f.rule)).collect();
        assert_eq!(code.len(), 1, "{rule}: {code:#?}");
        let finding = code[0];
        assert_eq!((finding.rule.as_str(), finding.severity), (*rule, Severity::Warning));
        assert!(finding.message.contains(&format!("Microsoft rule {microsoft}")), "{rule}: {}", finding.message);
        assert_eq!(finding.objects, ["dbo.Legacy"], "{rule}: the modern rewrite is not flagged");
        assert!(!finding.remediation.is_empty());
        assert_eq!(readiness(&assessment, "ToyStore"), Readiness::ReadyWithWarnings, "{rule}");
    }

    // NextColumn comes from the catalog.
    let mut inventory = tailspin();
    inventory.databases.iter_mut().find(|d| d.name == "ToyStore").unwrap().next_columns = vec!["dbo.Shipments.NEXT".into()];
    let assessment = assess(&inventory);
    let next = db_findings(&assessment, "ToyStore").iter().find(|f| f.rule == "next_column").unwrap();
    assert!(next.message.contains("Microsoft rule NextColumn") && next.objects == ["dbo.Shipments.NEXT"]);
}

/// Every rule of Microsoft's MI list (assessment.md §1.1, 34 rules) has a milink rule that names it.
#[test]
fn every_rule_of_microsofts_mi_list_is_covered_and_named() {
    use milink_sqlserver::rules::code::CODE_RULES;
    use milink_sqlserver::rules::compat::MICROSOFT_RULES;
    let microsoft = [
        "AnalysisCommandJob", "AnalysisQueryJob", "AssemblyFromFile", "BulkInsert", "ClrStrictSecurity", "ComputeClause", "CryptographicProvider",
        "DatabasePrincipalAlias", "DbCompatLevelLowerThan100", "DisableDefCNSTCHK", "FastFirstRowHint", "FileStream", "LinkedServerWithNonSQLProvider",
        "MergeJob", "MIDatabaseSize", "MIHeterogeneousMSDTCTransactSQL", "MIHomogeneousMSDTCTransactSQL", "MIInstanceSize", "MultipleLogFiles",
        "NextColumn", "NonANSILeftOuterJoinSyntax", "NonANSIRightOuterJoinSyntax", "NumDbExceeds100", "OpenRowsetWithNonBlobDataSourceBulk",
        "OpenRowsetWithNonSQLProvider", "PowerShellJob", "QueueReaderJob", "RAISERROR", "SqlMail", "SystemProcedures110", "TraceFlags",
        "TransactSqlJob", "WindowsAuthentication", "XpCmdshell",
    ];
    assert_eq!(microsoft.len(), 34);
    let named: Vec<&str> = MICROSOFT_RULES.iter().flat_map(|(_, name)| name.split(" / ")).chain(CODE_RULES.iter().map(|r| r.microsoft_rule)).collect();
    let missing: Vec<&&str> = microsoft.iter().filter(|m| !named.contains(m)).collect();
    assert!(missing.is_empty(), "not covered: {missing:?}");

    let assessment = assess(&tailspin());
    let filestream = db_findings(&assessment, "Customer360").iter().find(|f| f.rule == "filestream").unwrap();
    assert!(filestream.message.ends_with("(Microsoft rule FileStream)"), "{}", filestream.message);
}
