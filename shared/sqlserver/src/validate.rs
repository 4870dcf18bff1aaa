//! Validation before a link is created: prerequisites against the real target, then the connection test.
//!
//! The same rules as assessment ([`crate::rules`]), now with the managed instance's facts (tier, storage,
//! update policy, collation), plus what only a plan knows: a database of the same name on the MI (the
//! documented `RemoteDatabaseExists`), the MI's link limit, whether a requested reverse link is possible, the
//! logins to fence, and the network test in both directions ([`crate::network`]). Blockers here fail the
//! migration with their remediation before anything is created.
use crate::collector::{self, Pause};
use crate::network::{self, Probe};
use crate::plan::Link;
use crate::rules::{self, ServiceTier, TargetFacts};
use crate::tds::{rows_as, SqlSession};
use crate::tsql::link as link_sql;
use milink_core::config::Secret;
use crate::versions::{failback, Build, UpdatePolicy};
use chrono::{DateTime, Months, Utc};
use milink_core::assessment::{Finding, Severity};
use milink_core::error::EngineError;
use serde::Deserialize;
use std::time::Duration;

/// How long a network probe job may run.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(90);

/// Where the network test gets a master key password when SQL Server has no master key yet.
pub type MasterKeyPassword<'a> = &'a (dyn Fn() -> Result<Secret, EngineError> + Sync);

/// Every finding for this link; blockers stop the migration.
pub async fn validate(
    link: &Link,
    session: &mut dyn SqlSession,
    mut instance_session: Option<Box<dyn SqlSession>>,
    pause: &dyn Pause,
    now: DateTime<Utc>,
    master_key_password: MasterKeyPassword<'_>,
) -> Result<Vec<Finding>, EngineError> {
    let inventory = collector::collect_facts(session).await?;
    let api = &link.target.api;
    let mi = api.instance().await?;
    let props = &mi.properties;
    let tier = mi.sku.as_ref().and_then(|s| s.tier.as_deref()).and_then(|t| ServiceTier::from_arm(t, props.is_general_purpose_v2.unwrap_or(false)));
    let policy = props.database_format.as_deref().and_then(UpdatePolicy::from_database_format);
    let target = TargetFacts { tier, storage_available_gb: props.storage_size_in_gb, update_policy: policy, collation: props.collation.clone() };
    let assessment = rules::evaluate(&inventory, &target);
    let mut findings = assessment.instance_findings;
    findings.extend(crate::options::tls_findings(&link.source.options, &link.target.options));
    match assessment.databases.into_iter().find(|d| d.name == link.database) {
        Some(db) => findings.extend(db.findings),
        None => findings.push(Finding::new("database_not_found", Severity::Blocker, format!("SQL Server has no user database named {}", link.database), "check the database name of the migration")),
    }
    if let Some(state) = props.state.as_deref().filter(|s| !s.eq_ignore_ascii_case("Ready")) {
        findings.push(Finding::new("mi_not_ready", Severity::Blocker, format!("the managed instance is {state}"), "start the managed instance (or wait for its current operation) and validate again"));
    }
    let existing_link = api.link(&link.names.distributed_ag).await?;
    if existing_link.is_some() {
        findings.push(Finding::new("link_exists", Severity::Info, format!("link {} already exists on the managed instance", link.names.distributed_ag), "nothing to do: creating the link resumes it"));
    } else if api.database_exists(&link.database).await? {
        findings.push(Finding::new(
            "remote_database_exists",
            Severity::Blocker,
            format!("a database named {} already exists on the managed instance; creating the link would fail with RemoteDatabaseExists", link.database),
            "delete that database on the managed instance (often left by an earlier, cancelled link), or migrate to another instance",
        ));
    }
    let limit = if tier == Some(ServiceTier::NextGenGeneralPurpose) { 500 } else { 100 };
    let links = api.links().await?.len();
    if existing_link.is_none() && links >= limit {
        findings.push(Finding::new("link_limit", Severity::Blocker, format!("the managed instance already has {links} links (limit {limit})"), "cut over or cancel other links first, or use another instance"));
    }
    if link.settings.keep_reverse_link {
        let build = Build::parse(&inventory.instance.product_version).unwrap_or(Build(0, 0, 0, 0));
        let verdict = failback(build, policy);
        if !verdict.possible {
            findings.push(Finding::new("reverse_link_impossible", Severity::Blocker, format!("keep_reverse_link is set, but {}", verdict.reason), "start the migration with keep_reverse_link = false, or change the MI's update policy to match"));
        }
    }
    // drain_stable_seconds below the documented stable period is raised by the flow itself
    // (Engine::min_drain_stable_seconds), so there is nothing to warn about here.
    findings.extend(fence_findings(link, session).await?);
    let context = NetworkContext { inventory: &inventory, fqdn: props.fully_qualified_domain_name.as_deref(), pause, now, master_key_password };
    findings.extend(network_findings(link, session, instance_session.as_mut().map(|s| &mut **s as &mut dyn SqlSession), &context).await);
    Ok(findings)
}

async fn fence_findings(link: &Link, session: &mut dyn SqlSession) -> Result<Vec<Finding>, EngineError> {
    #[derive(Deserialize)]
    struct LoginRow {
        name: String,
        is_disabled: Option<i64>,
    }
    let logins = &link.settings.fence_roles;
    if logins.is_empty() {
        return Ok(vec![Finding::new(
            "no_fence_logins",
            Severity::Warning,
            "no application logins are named to fence: cutover cannot stop writes on SQL Server by itself",
            "name the application logins in the migration's fence_roles, or make sure the application is stopped before confirming cutover",
        )]);
    }
    let rows: Vec<LoginRow> = rows_as(session.query(&crate::tsql::cutover::login_states(logins)).await?, "logins")?;
    let mut findings = Vec::new();
    for login in logins {
        match rows.iter().find(|r| &r.name == login) {
            None => findings.push(Finding::new("fence_login_missing", Severity::Blocker, format!("login {login} (to fence at cutover) does not exist on SQL Server"), "fix fence_roles: name the logins the application uses")),
            Some(row) if row.is_disabled.unwrap_or(0) != 0 => findings.push(Finding::new(
                "fence_login_disabled",
                Severity::Warning,
                format!("login {login} is already disabled; an abandoned cutover enables every fenced login, including this one"),
                "remove it from fence_roles if it must stay disabled",
            )),
            Some(_) => {}
        }
    }
    Ok(findings)
}

/// What the network test needs besides the sessions.
struct NetworkContext<'a> {
    inventory: &'a crate::inventory::Inventory,
    fqdn: Option<&'a str>,
    pause: &'a dyn Pause,
    now: DateTime<Utc>,
    master_key_password: MasterKeyPassword<'a>,
}

async fn network_findings(link: &Link, session: &mut dyn SqlSession, instance_session: Option<&mut dyn SqlSession>, context: &NetworkContext<'_>) -> Vec<Finding> {
    let NetworkContext { inventory, fqdn, pause, now, .. } = *context;
    let Some(fqdn) = fqdn else {
        return vec![network::not_run("network_test_not_run", "the managed instance reports no FQDN yet", "Test-NetConnection <mi fqdn> -Port 5022 from the SQL Server host")];
    };
    let listen_port = inventory.mirroring_endpoint.as_ref().map(|e| e.port).or(link.source.replication_port).unwrap_or(link.source.options.endpoint_port);
    let port = link.source.replication_port.unwrap_or(listen_port);
    let manual_sql = format!("Test-NetConnection {fqdn} -Port 5022 on the SQL Server host (and a port in 11000-11999 of the MI's node)");
    let manual_mi = format!("from a VM in the MI subnet: Test-NetConnection {} -Port {port}", link.source.replication_host);
    if inventory.instance.host_platform.eq_ignore_ascii_case("Linux") {
        return vec![network::not_run("network_test_not_run", "SQL Server on Linux has no PowerShell job steps", &format!("nc -zv {fqdn} 5022 on the SQL Server host; {manual_mi}"))];
    }
    if inventory.instance.agent_running == Some(false) {
        return vec![network::not_run("network_test_not_run", "SQL Server Agent is not running", &format!("start SQL Server Agent and validate again, or {manual_sql}"))];
    }
    let mut findings = Vec::new();
    // One job name per link, so validations of two links on one server do not collide.
    let job = format!("milink_network_test_{}", link.names.distributed_ag);
    let mut probes = vec![Probe { rule: "network_sql_to_mi", host: fqdn.to_owned(), port: 5022 }];
    let Some(mi) = instance_session else {
        findings.push(network::not_run("network_mi_to_sql_not_run", "the target has no tds_endpoint, so milink cannot run the test on the managed instance", &manual_mi));
        findings.extend(run(session, &job, &probes, pause).await);
        return findings;
    };
    match redirect_target(mi).await {
        Ok(Some((node, hadr_port))) => probes.push(Probe { rule: "network_sql_to_mi_redirect", host: node, port: hadr_port }),
        Ok(None) | Err(_) => findings.push(network::not_run("network_redirect_not_run", "the managed instance did not report its node and redirect port", &manual_sql)),
    }
    findings.extend(run(session, &job, &probes, pause).await);
    // MI → SQL Server: something must listen on SQL Server's port; a temporary endpoint when none does.
    let expiry = now.checked_add_months(Months::new(1)).unwrap_or(now).format("%Y%m%d").to_string();
    let (mut create, mut drop) = network::test_endpoint(listen_port, &expiry);
    let needs_test_endpoint = inventory.mirroring_endpoint.is_none();
    if needs_test_endpoint && !inventory.has_master_key {
        // The test endpoint's certificate is protected by the master key; a fresh server has none and
        // refuses the certificate (15581). Make one for the test and drop it after, leaving the server as found
        // (create_link makes the link's own).
        match (context.master_key_password)() {
            Ok(password) => {
                create.insert(0, link_sql::create_master_key(password));
                drop.push(link_sql::drop_master_key());
            }
            Err(error) => {
                findings.push(network::not_run("network_mi_to_sql_not_run", &format!("SQL Server has no master key and none can be made: {}", error.message), &manual_mi));
                return findings;
            }
        }
    }
    if needs_test_endpoint {
        for statement in &create {
            if let Err(error) = session.execute(statement).await {
                findings.push(network::not_run("network_mi_to_sql_not_run", &format!("the temporary test endpoint could not be created: {}", error.message), &manual_mi));
                return findings;
            }
        }
    }
    let probe = Probe { rule: "network_mi_to_sql", host: link.source.replication_host.clone(), port };
    findings.extend(run(mi, &job, std::slice::from_ref(&probe), pause).await);
    if needs_test_endpoint {
        for statement in &drop {
            if let Err(error) = session.execute(statement).await {
                tracing::warn!(code = %error.code, "temporary test endpoint not removed");
            }
        }
    }
    findings
}

async fn run(session: &mut dyn SqlSession, job: &str, probes: &[Probe], pause: &dyn Pause) -> Vec<Finding> {
    match network::run_probes(session, job, probes, pause, PROBE_TIMEOUT).await {
        Ok(results) => results.iter().map(network::finding).collect(),
        Err(error) => vec![network::not_run("network_test_not_run", &format!("the test job could not run: {}", error.message), "Test-NetConnection by hand (see docs/sqlserver.md)")],
    }
}

async fn redirect_target(session: &mut dyn SqlSession) -> Result<Option<(String, u16)>, EngineError> {
    #[derive(Deserialize)]
    struct Row {
        node: Option<String>,
        hadr_port: Option<u16>,
    }
    let rows: Vec<Row> = rows_as(session.query(&network::instance_redirect_target()).await?, "MI node")?;
    Ok(rows.into_iter().next().and_then(|r| Some((r.node?, r.hadr_port?))).filter(|(node, _)| network::is_probe_host(node)))
}
