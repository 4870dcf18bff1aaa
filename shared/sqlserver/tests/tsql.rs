//! T-SQL for every step, with hostile names: each name comes out as one bracket-quoted identifier or one
//! `N'…'` literal (or a bound parameter), and the statement outside its quoted tokens is byte-for-byte the
//! statement built with a harmless name — so no character of a name can change the statement's structure.
mod support;

use milink_core::config::Secret;
use milink_sqlserver::network::{self, Probe};
use milink_sqlserver::tsql::{cutover, link, probe, SqlParam, Statement};
use support::lexer::{idents, lex, literals};

fn hostile() -> Vec<String> {
    let mut long = "Toy]Store'".repeat(12);
    long.push_str("商店ø]]'xy");
    long.truncate(long.char_indices().nth(128).map_or(long.len(), |(i, _)| i));
    assert_eq!(long.chars().count(), 128);
    vec![
        "Toy]Store".into(),
        "O'Brien's \"db\"".into(),
        "Tøy商店 🧸".into(),
        "x]; DROP DATABASE master; --".into(),
        "a'; EXEC xp_cmdshell 'dir'; --".into(),
        "[already]".into(),
        long,
    ]
}

type Builder = Box<dyn Fn(&str) -> Statement>;

/// Every builder that takes a name, with the name in each position it can take.
fn builders() -> Vec<(&'static str, Builder)> {
    vec![
        ("endpoint certificate", Box::new(|n| link::create_endpoint_certificate(n, "20310101"))),
        ("public key", Box::new(link::certificate_public_key)),
        ("import certificate", Box::new(|n| link::import_certificate(n, "3082ABCD").unwrap())),
        ("drop certificate", Box::new(link::drop_certificate)),
        ("trusted issuer", Box::new(|n| link::add_trusted_issuer(n, "*.database.windows.net"))),
        ("create endpoint", Box::new(|n| link::create_endpoint(n, 5022, n))),
        ("alter endpoint", Box::new(|n| link::alter_endpoint(n, 5022, n))),
        ("drop endpoint", Box::new(link::drop_endpoint)),
        ("local AG (database)", Box::new(|n| link::create_local_ag(&link::LocalAgSpec { name: "milink_x_ag", database: n, server_name: n, endpoint_url: "TCP://10.0.0.4:5022", major_version: 16 }))),
        ("local AG 2016", Box::new(|n| link::create_local_ag(&link::LocalAgSpec { name: "milink_x_ag", database: n, server_name: "SQL01", endpoint_url: "TCP://10.0.0.4:5022", major_version: 13 }))),
        ("distributed AG", Box::new(|n| link::create_distributed_ag(&link::DistributedAgSpec { name: n, local_ag: n, local_listener_url: "TCP://10.0.0.4:5022", instance_ag: n, instance_fqdn: "testcl.abc.database.windows.net", instance_name: "testcl" }))),
        ("drop AG", Box::new(link::drop_availability_group)),
        ("commit mode", Box::new(|n| cutover::set_commit_mode(n, n, n, true))),
        ("commit mode query", Box::new(cutover::commit_mode)),
        ("failover", Box::new(cutover::failover)),
        ("disable login", Box::new(cutover::disable_login)),
        ("enable login", Box::new(cutover::enable_login)),
        ("sessions of login", Box::new(cutover::sessions_of_login)),
        ("login states", Box::new(|n| cutover::login_states(&[n.to_owned(), "other".to_owned()]))),
        ("database structure", Box::new(probe::database_structure)),
        ("database objects", Box::new(probe::database_objects)),
        ("code candidates", Box::new(probe::code_candidates)),
        ("link replicas", Box::new(probe::link_replicas)),
        ("seeding", Box::new(|n| probe::seeding(n, n))),
        ("AG members", Box::new(|n| probe::availability_group_members(&[n, n]))),
        ("row counts", Box::new(milink_sqlserver::cutover::row_counts)),
        ("delete job", Box::new(network::delete_job)),
        ("job history", Box::new(network::job_history)),
    ]
}

fn texts(statement: &Statement) -> Vec<String> {
    statement.params.iter().filter_map(|p| if let SqlParam::Text(t) = p { Some(t.clone()) } else { None }).collect()
}

#[test]
fn names_are_quoted_never_spliced() {
    for (what, build) in builders() {
        let harmless = build("plain");
        let (_, harmless_outside) = lex(&harmless.sql);
        for name in hostile() {
            let statement = build(&name);
            let (tokens, outside) = lex(&statement.sql);
            assert_eq!(outside, harmless_outside, "{what}: the statement's structure changed with {name:?}:\n{}", statement.sql);
            assert_eq!(statement.params.len(), harmless.params.len(), "{what}");
            let appears = idents(&statement.sql).contains(&name)
                || literals(&statement.sql).iter().any(|l| l == &name || l.contains(&name))
                || texts(&statement).contains(&name);
            assert!(appears, "{what}: {name:?} is neither a quoted token nor a parameter:\n{}", statement.sql);
            assert!(!tokens.is_empty() || !statement.params.is_empty(), "{what}");
        }
    }
}

#[test]
fn every_step_statement_reads_as_written() {
    let ag = link::create_local_ag(&link::LocalAgSpec { name: "milink_0f1e2d3c4b5a_ag", database: "Toy]Store", server_name: "SQL01", endpoint_url: "TCP://10.0.0.4:5022", major_version: 16 });
    assert_eq!(
        ag.sql,
        "CREATE AVAILABILITY GROUP [milink_0f1e2d3c4b5a_ag]\nWITH (CLUSTER_TYPE = NONE)\nFOR DATABASE [Toy]]Store]\n\
         REPLICA ON N'SQL01' WITH (ENDPOINT_URL = N'TCP://10.0.0.4:5022', AVAILABILITY_MODE = SYNCHRONOUS_COMMIT, FAILOVER_MODE = MANUAL, SEEDING_MODE = AUTOMATIC)"
    );
    let dag = link::create_distributed_ag(&link::DistributedAgSpec {
        name: "milink_0f1e2d3c4b5a",
        local_ag: "milink_0f1e2d3c4b5a_ag",
        local_listener_url: "TCP://10.0.0.4:5022",
        instance_ag: "milink_0f1e2d3c4b5a_mi",
        instance_fqdn: "testcl.abc.database.windows.net",
        instance_name: "testcl",
    });
    assert_eq!(
        dag.sql,
        "CREATE AVAILABILITY GROUP [milink_0f1e2d3c4b5a]\nWITH (DISTRIBUTED)\nAVAILABILITY GROUP ON\n\
         \x20   N'milink_0f1e2d3c4b5a_ag' WITH (LISTENER_URL = N'TCP://10.0.0.4:5022', AVAILABILITY_MODE = ASYNCHRONOUS_COMMIT, FAILOVER_MODE = MANUAL, SEEDING_MODE = AUTOMATIC, SESSION_TIMEOUT = 20),\n\
         \x20   N'milink_0f1e2d3c4b5a_mi' WITH (LISTENER_URL = N'tcp://testcl.abc.database.windows.net:5022;Server=[testcl]', AVAILABILITY_MODE = ASYNCHRONOUS_COMMIT, FAILOVER_MODE = MANUAL, SEEDING_MODE = AUTOMATIC)"
    );
    assert_eq!(
        link::create_endpoint("milink_mirroring_endpoint", 5022, "milink_endpoint_cert").sql,
        "CREATE ENDPOINT [milink_mirroring_endpoint] STATE = STARTED\n    AS TCP (LISTENER_PORT = 5022, LISTENER_IP = ALL)\n    \
         FOR DATABASE_MIRRORING (ROLE = ALL, AUTHENTICATION = CERTIFICATE [milink_endpoint_cert], ENCRYPTION = REQUIRED ALGORITHM AES)"
    );
    assert!(link::alter_endpoint("Mirroring", 5023, "c").sql.contains("AUTHENTICATION = WINDOWS NEGOTIATE CERTIFICATE [c], ENCRYPTION = REQUIRED ALGORITHM AES"));
    assert_eq!(cutover::failover("milink_x").sql, "ALTER AVAILABILITY GROUP [milink_x] FAILOVER");
    assert_eq!(cutover::disable_login("toystore_app").sql, "IF EXISTS (SELECT 1 FROM sys.server_principals WHERE name = @P1) ALTER LOGIN [toystore_app] DISABLE");
}

#[test]
fn the_master_key_password_never_appears_in_the_statement() {
    let statement = link::create_master_key(Secret::new("S3cret'pass]word"));
    assert!(!statement.sql.contains("S3cret"));
    assert!(statement.sql.contains("QUOTENAME(@P1, N'''')"), "the password becomes a literal on the server");
    assert!(!format!("{statement:?}").contains("S3cret"));
    assert!(matches!(statement.params[0], SqlParam::Secret(_)));
}

#[test]
fn probe_jobs_carry_hosts_and_commands_as_parameters() {
    let statements = network::create_probe_job("milink_network_test", &[
        Probe { rule: "network_sql_to_mi", host: "testcl.abc.database.windows.net".into(), port: 5022 },
        Probe { rule: "network_sql_to_mi_redirect", host: "DB8C2.tr123.westus1-a.worker.database.windows.net".into(), port: 11002 },
    ])
    .unwrap();
    let steps: Vec<&Statement> = statements.iter().filter(|s| s.sql.contains("sp_add_jobstep")).collect();
    assert_eq!(steps.len(), 2);
    assert!(steps[0].sql.contains("@on_success_action = 3") && steps[1].sql.contains("@on_success_action = 1"), "run both, then quit");
    assert_eq!(
        texts(steps[1])[2],
        "$r = Test-NetConnection -ComputerName 'DB8C2.tr123.westus1-a.worker.database.windows.net' -Port 11002 -WarningAction SilentlyContinue; Write-Output ('milink-tnc:' + $r.TcpTestSucceeded + ':' + $r.RemoteAddress)"
    );
    assert!(statements.last().unwrap().sql.contains("sp_start_job"));
}

#[test]
fn read_only_probes_only_read() {
    let probes = [
        probe::product_version(),
        probe::instance_facts(13),
        probe::instance_facts(16),
        probe::databases(14),
        probe::databases(16),
        probe::database_structure("ToyStore"),
        probe::database_objects("ToyStore"),
        probe::code_candidates("ToyStore"),
        probe::trace_flags(),
        probe::job_steps(),
        probe::linked_servers(),
        probe::windows_logins(),
        probe::server_audits(),
        probe::mirroring_endpoint(),
        probe::certificates(),
        probe::availability_groups(),
        probe::cpu_history(),
        probe::io_snapshot(),
        probe::file_sizes(),
        probe::client_sessions(),
        probe::connection_test(),
        probe::link_replicas("milink_x"),
        probe::seeding("milink_x", "milink_x_ag"),
        network::instance_redirect_target(),
    ];
    for statement in probes {
        let (_, outside) = lex(&statement.sql);
        let words: Vec<String> = outside.split(|c: char| !(c.is_alphanumeric() || c == '_')).map(str::to_ascii_uppercase).collect();
        for verb in ["INSERT", "UPDATE", "DELETE", "MERGE", "CREATE", "ALTER", "DROP", "EXEC", "EXECUTE", "KILL", "BACKUP", "RESTORE", "TRUNCATE", "GRANT"] {
            assert!(!words.iter().any(|w| w == verb), "{verb} in a read-only probe:\n{}", statement.sql);
        }
    }
    assert!(!probe::instance_facts(13).sql.contains("dm_os_host_info"), "SQL Server 2016 has no sys.dm_os_host_info");
    assert!(!probe::databases(14).sql.contains("is_accelerated_database_recovery_on AS int"), "ADR is 2019+");
}
