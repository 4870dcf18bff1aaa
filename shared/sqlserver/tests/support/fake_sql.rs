//! A FAKE SQL Server for orchestration tests — no real server is reachable here.
//!
//! It keeps the state the link steps touch (master key, certificates, endpoint, availability groups, logins,
//! sessions, Agent jobs), answers the engine's read-only queries from that state, and applies the DDL the
//! engine sends by reading the statement the way SQL Server would (identifiers and literals through the
//! test lexer, values through the bound parameters). Any statement it does not recognise panics, so a test
//! fails on SQL nobody reviewed. It proves order, idempotency and resumability of the steps; it proves
//! nothing about SQL Server's own behaviour (that is the live suite's job).
use super::lexer::{idents, literals};
use async_trait::async_trait;
use milink_core::error::EngineError;
use milink_sqlserver::tds::{Row, SqlConnector, SqlSession};
use milink_sqlserver::tsql::{SqlParam, Statement};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// The mirroring endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeEndpoint {
    /// Name.
    pub name: String,
    /// `CERTIFICATE`, `NEGOTIATE`, `NEGOTIATE, CERTIFICATE`.
    pub auth: String,
    /// Algorithm.
    pub algorithm: String,
    /// Certificate.
    pub certificate: Option<String>,
    /// Port.
    pub port: u16,
}

/// An availability group.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeGroup {
    /// Distributed.
    pub distributed: bool,
    /// The database of a local AG.
    pub database: Option<String>,
    /// Synchronous commit.
    pub synchronous: bool,
}

/// One row of `sys.dm_hadr_fabric_replicas` joined to its partition (FAKE MI only).
#[derive(Debug, Clone, PartialEq)]
pub struct FakeFabricReplica {
    /// `fp.service_name`, e.g. `fabric:/Worker.CL/ManagedServer/<instance>`.
    pub service_name: String,
    /// `fr.node_name`: a fabric node name, not a DNS label.
    pub node_name: String,
    /// `fr.replica_address`: `<node>\<…>`.
    pub replica_address: String,
    /// `fr.replica_role` (2 = primary).
    pub replica_role: i64,
}

/// The fabric DMVs of a FAKE managed instance: several instances share a virtual cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeFabric {
    /// Replicas, in the order the DMV returns them.
    pub replicas: Vec<FakeFabricReplica>,
    /// `ClusterName`.
    pub cluster_name: String,
    /// `HadrPort`.
    pub hadr_port: i64,
    /// `InstanceName` (section `SQL`): this instance.
    pub instance_name: String,
}

impl Default for FakeFabric {
    fn default() -> Self {
        let replica = |instance: &str, node: &str, address: &str| FakeFabricReplica {
            service_name: format!("fabric:/Worker.CL/ManagedServer/{instance}"),
            node_name: node.into(),
            replica_address: address.into(),
            replica_role: 2,
        };
        Self {
            // Another instance's primary comes first, on another node.
            replicas: vec![replica("7d41c0a3b2e9", "DB.8C1", "DB8C1\\7d41c0a3b2e9"), replica("a1b2c3d4e5f6", "DB.8C2", "DB8C2\\a1b2c3d4e5f6")],
            cluster_name: "tr123.westus1-a.worker.database.windows.net".into(),
            hadr_port: 11002,
            instance_name: "a1b2c3d4e5f6".into(),
        }
    }
}

/// `@@SPID` of every session the fake hands out.
pub const FAKE_SPID: i64 = 52;

/// The fake's state.
#[derive(Debug, Default)]
pub struct FakeState {
    /// `SERVERPROPERTY('ProductVersion')`.
    pub version: String,
    /// Server name.
    pub server_name: String,
    /// Host platform.
    pub host_platform: String,
    /// Master key exists.
    pub master_key: bool,
    /// Certificates: name → hex.
    pub certificates: BTreeMap<String, String>,
    /// Certificates made here, whose private key the master key protects.
    pub private_keys: BTreeSet<String>,
    /// Trusted issuers (certificate, dns).
    pub issuers: BTreeSet<(String, String)>,
    /// The endpoint.
    pub endpoint: Option<FakeEndpoint>,
    /// Availability groups.
    pub groups: BTreeMap<String, FakeGroup>,
    /// Rows of the databases query.
    pub databases: Vec<Value>,
    /// Logins: name → disabled.
    pub logins: BTreeMap<String, bool>,
    /// Sessions: (id, login).
    pub sessions: Vec<(i64, String)>,
    /// Rows of `sys.dm_exec_sessions` joined to `sys.dm_exec_connections`, for the connection summary:
    /// `session_id`, `is_user_process`, `program_name`, `host_name`, `client_net_address`, `login_name`,
    /// `database_name`. The fake's own session is [`FAKE_SPID`].
    pub client_sessions: Vec<Value>,
    /// Rows of the link replicas query (when the DAG exists).
    pub replicas: Vec<Value>,
    /// Rows of the seeding query, each with `ag_name`: the AG whose id the row carries.
    pub seeding: Vec<Value>,
    /// Global trace flags.
    pub trace_flags: Vec<i32>,
    /// Agent job step messages a started job writes to its history.
    pub job_output: Vec<String>,
    /// When set, `Test-NetConnection` steps answer from this map instead of `job_output`: `host:port` →
    /// the address it resolved to and connected to; anything else fails without resolving.
    pub network: Option<BTreeMap<String, String>>,
    /// Commands of the steps of each job.
    pub job_steps: BTreeMap<String, Vec<String>>,
    /// Fabric DMVs (a managed instance).
    pub fabric: FakeFabric,
    /// Started jobs: name → history messages.
    pub jobs: BTreeMap<String, Vec<String>>,
    /// Failovers run (distributed AG names).
    pub failovers: Vec<String>,
    /// Every statement executed.
    pub executed: Vec<Statement>,
    /// Every query run.
    pub queries: Vec<Statement>,
}

/// The fake server: a connector handing out sessions on shared state.
#[derive(Clone, Default)]
pub struct FakeSqlServer {
    /// Shared state.
    pub state: Arc<Mutex<FakeState>>,
}

impl FakeSqlServer {
    /// A SQL Server 2022 CU13+ Enterprise on Windows, HADR on, with the given user databases.
    pub fn sql2022(databases: &[&str]) -> Self {
        let state = FakeState {
            version: "16.0.4135.4".into(),
            server_name: "SQL01".into(),
            host_platform: "Windows".into(),
            databases: databases.iter().map(|name| json!({
                "name": name, "state_desc": "ONLINE", "recovery_model_desc": "FULL", "compatibility_level": 160,
                "is_encrypted": 0, "is_broker_enabled": 0, "is_replicated": 0, "is_cdc_enabled": 0,
                "is_accelerated_database_recovery_on": 0, "full_backups": 3, "log_chain_established": 1,
                "log_files": 1, "data_files": 1, "data_size_mb": 2048.0, "log_size_mb": 512.0,
                "availability_group": null, "tde_certificate": null
            })).collect(),
            logins: [("toystore_app".to_owned(), false)].into_iter().collect(),
            sessions: vec![(57, "toystore_app".into()), (58, "toystore_app".into()), (61, "dba".into())],
            trace_flags: vec![1800, 9567],
            client_sessions: [
                (FAKE_SPID, 1, "milink", "MILINK01", "10.0.0.9", "milink", "master"),
                (70, 1, "milink", "MILINK01", "10.0.0.9", "milink", "master"),
                (12, 0, "", "", "", "sa", "master"),
                (57, 1, "ToyStore.Web", "WEB01", "10.0.0.21", "toystore_app", "ToyStore"),
                (58, 1, "ToyStore.Web", "WEB01", "10.0.0.21", "toystore_app", "ToyStore"),
                (59, 1, "ToyStore.Web", "WEB02", "10.0.0.22", "toystore_app", "ToyStore"),
                (61, 1, "Microsoft SQL Server Management Studio", "SQL01", "<local machine>", "dba", "master"),
            ]
            .into_iter()
            .map(|(id, user, program, host, address, login, database)| json!({
                "session_id": id, "is_user_process": user, "program_name": program, "host_name": host,
                "client_net_address": address, "login_name": login, "database_name": database
            }))
            .collect(),
            ..FakeState::default()
        };
        Self { state: Arc::new(Mutex::new(state)) }
    }

    /// Statements executed so far, as text.
    pub fn executed(&self) -> Vec<String> {
        self.state.lock().unwrap().executed.iter().map(|s| s.sql.clone()).collect()
    }
}

#[async_trait]
impl SqlConnector for FakeSqlServer {
    async fn connect(&self) -> Result<Box<dyn SqlSession>, EngineError> {
        Ok(Box::new(FakeSession { state: self.state.clone() }))
    }
}

struct FakeSession {
    state: Arc<Mutex<FakeState>>,
}

fn param(statement: &Statement, index: usize) -> String {
    match statement.params.get(index) {
        Some(SqlParam::Text(text)) => text.clone(),
        Some(SqlParam::Int(value)) => value.to_string(),
        Some(SqlParam::Secret(secret)) => secret.expose().to_owned(),
        None => panic!("statement has no parameter {}: {}", index + 1, statement.sql),
    }
}

fn rows(values: Vec<Value>) -> Vec<Row> {
    values.into_iter().map(|v| v.as_object().cloned().expect("object row")).collect()
}

/// Answers the connection summary's query as SQL Server would: its filters apply only when the text has
/// them (so a query that forgot one counts sessions it must not), the host is the address before the
/// workstation name when the query says so, and rows are grouped by application, host, login, database.
fn client_session_groups(sessions: &[Value], sql: &str) -> Vec<Value> {
    let text = |row: &Value, key: &str| row[key].as_str().unwrap_or_default().to_owned();
    let mut groups: BTreeMap<(String, String, String, String), i64> = BTreeMap::new();
    for row in sessions {
        if sql.contains("s.is_user_process = 1") && row["is_user_process"] != 1 {
            continue;
        }
        if sql.contains("s.session_id <> @@SPID") && row["session_id"] == FAKE_SPID {
            continue;
        }
        if sql.contains("ISNULL(s.program_name, N'') <> N'milink'") && row["program_name"] == "milink" {
            continue;
        }
        let host = if sql.contains("COALESCE(c.client_net_address, s.host_name") { text(row, "client_net_address") } else { text(row, "host_name") };
        *groups.entry((text(row, "program_name"), host, text(row, "login_name"), text(row, "database_name"))).or_default() += 1;
    }
    groups
        .into_iter()
        .map(|((application, host, login, database), sessions)| json!({ "application": application, "host": host, "login": login, "database_name": database, "sessions": sessions }))
        .collect()
}

fn fake_key(name: &str) -> String {
    let mut hex = String::from("3082");
    for byte in name.bytes().take(16) {
        hex.push_str(&format!("{byte:02X}"));
    }
    hex
}

#[async_trait]
impl SqlSession for FakeSession {
    async fn query(&mut self, statement: &Statement) -> Result<Vec<Row>, EngineError> {
        let mut s = self.state.lock().unwrap();
        s.queries.push(statement.clone());
        let sql = statement.sql.as_str();
        let result = if sql.starts_with("SELECT CAST(SERVERPROPERTY('ProductVersion')") {
            vec![json!({ "product_version": s.version })]
        } else if sql.starts_with("SELECT CAST(@@SERVERNAME") {
            vec![json!({
                "server_name": s.server_name, "product_version": s.version, "edition": "Enterprise Edition (64-bit)",
                "is_hadr_enabled": 1, "is_clustered": 0, "collation": "SQL_Latin1_General_CP1_CI_AS",
                "host_platform": s.host_platform, "host_distribution": "Windows Server 2022 Datacenter",
                "cpu_count": 8, "physical_memory_mb": 65536, "master_keys": i64::from(s.master_key), "agent_running": 1
            })]
        } else if sql.contains("FROM sys.databases AS d") {
            s.databases.clone()
        } else if sql.contains(".sys.filegroups WHERE type = 'FD'") {
            vec![json!({ "filestream_filegroups": 0, "filetables": 0, "memory_optimized_filegroups": 0, "memory_optimized_containers": 0, "memory_optimized_tables": 0 })]
        } else if sql.contains("m.definition\nFROM") || sql.contains("AS kind, a.name AS object_name") || sql.contains("msdb.dbo.sysjobsteps") || sql.contains("FROM sys.servers WHERE is_linked") || sql.contains("FROM sys.server_audits") || sql.contains("type IN ('U', 'G') AND is_disabled = 0") {
            vec![]
        } else if sql.starts_with("DBCC TRACESTATUS") {
            s.trace_flags.iter().map(|f| json!({ "TraceFlag": f, "Status": 1, "Global": 1, "Session": 0 })).collect()
        } else if sql.contains("FROM sys.database_mirroring_endpoints") {
            s.endpoint.iter().map(|e| json!({
                "name": e.name, "state_desc": "STARTED", "role_desc": "ALL", "connection_auth_desc": e.auth,
                "is_encryption_enabled": 1, "encryption_algorithm_desc": e.algorithm, "certificate_name": e.certificate, "port": e.port
            })).collect()
        } else if sql.contains("expiry_date FROM master.sys.certificates") {
            s.certificates.keys().map(|name| json!({ "name": name, "expiry_date": "2031-01-01T00:00:00" })).collect()
        } else if sql.contains("AS database_count\nFROM sys.availability_groups") {
            s.groups.iter().map(|(name, g)| json!({ "name": name, "is_distributed": i64::from(g.distributed), "database_count": i64::from(g.database.is_some()) })).collect()
        } else if sql.contains("CERTENCODED(CERT_ID(@P1))") {
            let key = s.certificates.get(&param(statement, 0));
            vec![json!({ "public_key": key, "thumbprint": key.map(|k| super::fake_thumbprint(k)) })]
        } else if sql.contains("adc.database_name\nFROM sys.availability_groups") {
            let names: Vec<String> = (0..statement.params.len()).map(|i| param(statement, i)).collect();
            s.groups.iter().filter(|(name, _)| names.contains(name)).map(|(name, g)| json!({ "name": name, "is_distributed": i64::from(g.distributed), "database_name": g.database })).collect()
        } else if sql.contains("ars.is_local") {
            match s.groups.get(&param(statement, 0)).filter(|g| g.distributed) {
                None => vec![],
                // The members' mode follows the last MODIFY AVAILABILITY GROUP ON (a row that names its mode keeps
                // it: a switch that did not take effect), and only a synchronous-commit secondary is SYNCHRONIZED.
                Some(group) => s.replicas.iter().cloned().map(|mut row| {
                    if row.get("availability_mode_desc").is_none() {
                        row["availability_mode_desc"] = json!(if group.synchronous { "SYNCHRONOUS_COMMIT" } else { "ASYNCHRONOUS_COMMIT" });
                    }
                    if row["availability_mode_desc"] != "SYNCHRONOUS_COMMIT" && row["synchronization_state_desc"] == "SYNCHRONIZED" {
                        row["synchronization_state_desc"] = json!("SYNCHRONIZING");
                    }
                    row
                }).collect(),
            }
        } else if sql.contains("sys.dm_hadr_automatic_seeding") {
            // Each row names the availability group whose id it carries (`ag_name`); the query's filter decides
            // which rows it sees, as `JOIN sys.availability_groups … WHERE ag.name …` does.
            // Only parameters the text uses filter (a bound but unused @P2 filters nothing on a real server).
            let names: Vec<String> = (0..statement.params.len()).filter(|i| sql.contains(&format!("@P{}", i + 1))).map(|i| param(statement, i)).collect();
            s.seeding.iter().filter(|row| row["ag_name"].as_str().is_some_and(|ag| names.iter().any(|n| n == ag))).cloned().collect()
        } else if sql.contains("FROM sys.server_principals WHERE name IN") {
            let names: Vec<String> = (0..statement.params.len()).map(|i| param(statement, i)).collect();
            s.logins.iter().filter(|(name, _)| names.contains(name)).map(|(name, disabled)| json!({ "name": name, "is_disabled": i64::from(*disabled) })).collect()
        } else if sql.contains("encrypt_option") && sql.contains("session_id = @@SPID") {
            vec![json!({ "product_version": s.version, "encrypt_option": "TRUE" })]
        } else if sql.contains("FROM sys.dm_exec_sessions AS s\nLEFT JOIN sys.dm_exec_connections") {
            client_session_groups(&s.client_sessions, sql)
        } else if sql.contains("FROM sys.dm_exec_sessions") {
            let login = param(statement, 0);
            s.sessions.iter().filter(|(_, l)| *l == login).map(|(id, _)| json!({ "session_id": id })).collect()
        } else if sql.contains("RING_BUFFER_SCHEDULER_MONITOR") {
            (0..200).map(|i| json!({ "cpu_percent": f64::from(i % 40) })).collect()
        } else if sql.contains("dm_io_virtual_file_stats") {
            vec![json!({ "io_count": 3_600_000.0, "log_bytes_written": 3_774_873_600.0, "uptime_seconds": 3600.0, "memory_in_use_mb": 12288.0 })]
        } else if sql.contains("AS size_mb FROM sys.master_files") {
            vec![json!({ "size_mb": 2048.0 }), json!({ "size_mb": 512.0 })]
        } else if sql.contains("msdb.dbo.sysjobhistory") {
            s.jobs.get(&param(statement, 0)).map(|messages| {
                messages.iter().enumerate().map(|(i, m)| json!({ "step_id": i as i64 + 1, "message": m })).collect()
            }).unwrap_or_default()
        } else if sql.contains("sys.dm_hadr_fabric") {
            // Answers what the query asks: the host from `replica_address` (else `node_name`), this instance's
            // service only when the query filters by `InstanceName`, then TOP (1).
            let fabric = &s.fabric;
            let by_instance = sql.contains("parameter_name = N'InstanceName'");
            fabric
                .replicas
                .iter()
                .filter(|r| r.replica_role == 2 && r.service_name.contains("ManagedServer"))
                .filter(|r| !by_instance || r.service_name.rsplit('/').next() == Some(fabric.instance_name.as_str()))
                .filter_map(|r| if sql.contains("replica_address") { r.replica_address.split_once('\\').map(|(host, _)| host.to_owned()) } else { Some(r.node_name.clone()) })
                .take(1)
                .map(|host| json!({ "node": format!("{host}.{}", fabric.cluster_name), "hadr_port": fabric.hadr_port }))
                .collect()
        } else {
            panic!("the fake SQL Server does not know this query:\n{sql}");
        };
        Ok(rows(result))
    }

    async fn execute(&mut self, statement: &Statement) -> Result<(), EngineError> {
        let mut s = self.state.lock().unwrap();
        s.executed.push(statement.clone());
        let sql = statement.sql.as_str();
        let names = idents(sql);
        if sql.contains("CREATE MASTER KEY") {
            // QUOTENAME returns NULL beyond 128 characters and EXEC (NULL) does nothing, silently, unless the
            // batch checks for it.
            if param(statement, 0).chars().count() > 128 {
                if sql.contains("IF @create IS NULL THROW") {
                    return Err(milink_sqlserver::errors::sql_error(50000, "The master key password is longer than 128 characters."));
                }
            } else {
                s.master_key = true;
            }
        } else if sql.starts_with("CREATE CERTIFICATE") && sql.contains("FROM BINARY = 0x") {
            let hex = sql.rsplit("0x").next().unwrap().to_owned();
            s.certificates.insert(names[0].clone(), hex);
        } else if sql.starts_with("CREATE CERTIFICATE") || sql.starts_with("IF CERT_ID(@P1) IS NULL CREATE CERTIFICATE") {
            let name = names[0].clone();
            // A certificate with a private key (not imported FROM BINARY) is protected by the master key unless
            // the statement names a password; on a fresh server there is none.
            if !s.master_key && !s.certificates.contains_key(&name) && !sql.contains("ENCRYPTION BY PASSWORD") {
                return Err(milink_sqlserver::errors::sql_error(15581, "Please create a master key in the database or open the master key in the session before performing this operation."));
            }
            if !s.certificates.contains_key(&name) {
                s.private_keys.insert(name.clone());
            }
            s.certificates.entry(name.clone()).or_insert_with(|| fake_key(&name));
        } else if sql.contains("DROP CERTIFICATE") {
            s.certificates.remove(&param(statement, 0));
            s.private_keys.remove(&param(statement, 0));
        } else if sql.contains("DROP MASTER KEY") {
            if let Some(name) = s.private_keys.iter().next() {
                return Err(milink_sqlserver::errors::sql_error(15580, &format!("Cannot drop master key because certificate '{name}' is encrypted by it.")));
            }
            s.master_key = false;
        } else if sql.contains("sp_certificate_add_issuer") {
            let issuer = (param(statement, 0), param(statement, 1));
            s.issuers.insert(issuer);
        } else if sql.starts_with("CREATE ENDPOINT") {
            if s.endpoint.is_some() {
                return Err(milink_sqlserver::errors::sql_error(7862, "An endpoint of the requested type already exists."));
            }
            let port = sql.split("LISTENER_PORT = ").nth(1).and_then(|r| r.split(',').next()).and_then(|p| p.parse().ok()).unwrap();
            s.endpoint = Some(FakeEndpoint { name: names[0].clone(), auth: "CERTIFICATE".into(), algorithm: "AES".into(), certificate: Some(names[1].clone()), port });
        } else if sql.starts_with("ALTER ENDPOINT") {
            let endpoint = s.endpoint.as_mut().expect("ALTER ENDPOINT on an existing endpoint");
            endpoint.auth = "NEGOTIATE, CERTIFICATE".into();
            endpoint.algorithm = "AES".into();
            endpoint.certificate = Some(names[1].clone());
        } else if sql.contains("DROP ENDPOINT") {
            s.endpoint = None;
        } else if sql.starts_with("CREATE AVAILABILITY GROUP") {
            let distributed = sql.contains("WITH (DISTRIBUTED)");
            let database = if distributed { None } else { Some(names[1].clone()) };
            assert!(!distributed || literals(sql).len() == 4, "a distributed AG names two members and two URLs");
            s.groups.insert(names[0].clone(), FakeGroup { distributed, database, synchronous: !distributed });
        } else if sql.contains("DROP AVAILABILITY GROUP") {
            s.groups.remove(&param(statement, 0));
        } else if sql.contains("ALTER LOGIN") {
            let disabled = sql.ends_with("DISABLE");
            s.logins.insert(param(statement, 0), disabled);
        } else if let Some(id) = sql.strip_prefix("KILL ") {
            let id: i64 = id.parse().unwrap();
            s.sessions.retain(|(session, _)| *session != id);
        } else if sql.contains("MODIFY AVAILABILITY GROUP ON") {
            let synchronous = !sql.contains("ASYNCHRONOUS_COMMIT");
            s.groups.get_mut(&names[0]).expect("the distributed AG exists").synchronous = synchronous;
        } else if sql.ends_with(" FAILOVER") {
            s.failovers.push(names[0].clone());
            for replica in &mut s.replicas {
                let local = replica["is_local"] == 1;
                replica["role_desc"] = json!(if local { "SECONDARY" } else { "PRIMARY" });
            }
        } else if sql.contains("sp_start_job") {
            let job = param(statement, 0);
            let output = match &s.network {
                None => s.job_output.clone(),
                Some(network) => s.job_steps.get(&job).cloned().unwrap_or_default().iter().map(|command| {
                    let host = command.split("-ComputerName '").nth(1).and_then(|r| r.split('\'').next()).unwrap_or("");
                    let port = command.split("-Port ").nth(1).and_then(|r| r.split(' ').next()).unwrap_or("");
                    match network.get(&format!("{host}:{port}")) {
                        Some(address) => format!("milink-tnc:True:{address}"),
                        None => "milink-tnc:False:".to_owned(),
                    }
                }).collect(),
            };
            s.jobs.insert(job, output);
        } else if sql.contains("sp_delete_job") {
            s.jobs.remove(&param(statement, 0));
            s.job_steps.remove(&param(statement, 0));
        } else if sql.contains("sp_add_jobstep") {
            let (job, command) = (param(statement, 0), param(statement, 2));
            s.job_steps.entry(job).or_default().push(command);
        } else if sql.contains("sp_add_job") {
            // job definition: nothing to model beyond start/delete
        } else {
            panic!("the fake SQL Server does not know this statement:\n{sql}");
        }
        Ok(())
    }
}
