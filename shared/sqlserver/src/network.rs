//! The connection test, both directions, the way Microsoft's published test does it (mi-link.md §5.3).
//!
//! Neither side can open a TCP connection from T-SQL, so the documented test runs `Test-NetConnection` in
//! SQL Agent PowerShell job steps: on SQL Server towards the MI (port 5022 on its FQDN and the redirect port in
//! 11000–11999 on the node that hosts it), and on the MI towards SQL Server's endpoint (with a temporary test
//! endpoint on SQL Server when none listens yet, and a temporary master key before it on a server that has none:
//! SQL Server refuses a certificate with a private key without one, error 15581). The job's step output carries
//! a marker line milink parses.
//! Statement builders are pure and tested; [`run_probes`] creates the job, polls its history (the pause is
//! injected), and always deletes the job. Each failure becomes a blocker with the exact firewall/NSG/DNS
//! remediation; a test that cannot run (Linux has no PowerShell job steps, Agent stopped, no MI TDS endpoint)
//! is a warning that says how to test by hand.
use crate::collector::Pause;
use crate::names::quote_literal;
use crate::tds::{rows_as, SqlSession};
use crate::tsql::{link as link_sql, Statement};
use milink_core::assessment::{Finding, Severity};
use milink_core::error::EngineError;
use serde::Deserialize;
use std::time::Duration;

/// Name of the temporary endpoint and certificate for the MI → SQL Server test.
pub const TEST_ENDPOINT: &str = "milink_test_endpoint";
/// Certificate of the temporary endpoint.
pub const TEST_CERTIFICATE: &str = "milink_test_certificate";

/// One TCP test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Stable rule id of the finding it produces.
    pub rule: &'static str,
    /// Host to reach (validated: letters, digits, `.`, `-`, `:`).
    pub host: String,
    /// Port.
    pub port: u16,
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// The probe.
    pub probe: Probe,
    /// TCP connection succeeded.
    pub succeeded: bool,
    /// The address the name resolved to (empty when it did not resolve).
    pub remote_address: String,
}

/// A host that may be put into a PowerShell single-quoted string.
pub fn is_probe_host(host: &str) -> bool {
    !host.is_empty() && host.len() <= 253 && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
}

/// The PowerShell step: `Test-NetConnection`, then a marker line `milink-tnc:<True|False>:<address>`.
pub fn powershell_probe(host: &str, port: u16) -> String {
    format!(
        "$r = Test-NetConnection -ComputerName '{}' -Port {port} -WarningAction SilentlyContinue; Write-Output ('milink-tnc:' + $r.TcpTestSucceeded + ':' + $r.RemoteAddress)",
        host.replace('\'', "''")
    )
}

/// Parses the marker line out of a job step's output.
pub fn parse_probe_output(message: &str) -> Option<(bool, String)> {
    let start = message.find("milink-tnc:")? + "milink-tnc:".len();
    let rest = &message[start..];
    let (ok, address) = rest.split_once(':').unwrap_or((rest, ""));
    let address: String = address.chars().take_while(|c| c.is_ascii_hexdigit() || ".:".contains(*c)).collect();
    Some((ok.trim().eq_ignore_ascii_case("true"), address))
}

/// Deletes the job if it exists.
pub fn delete_job(job: &str) -> Statement {
    Statement::new("IF EXISTS (SELECT 1 FROM msdb.dbo.sysjobs WHERE name = @P1) EXEC msdb.dbo.sp_delete_job @job_name = @P1").text(job)
}

/// Creates and starts a job with one PowerShell step per probe (`@flags = 40`: output to the log table and
/// into the history). `None` when a host is not safe to embed.
pub fn create_probe_job(job: &str, probes: &[Probe]) -> Option<Vec<Statement>> {
    if !probes.iter().all(|p| is_probe_host(&p.host)) {
        return None;
    }
    let mut statements = vec![delete_job(job), Statement::new("EXEC msdb.dbo.sp_add_job @job_name = @P1").text(job)];
    for (index, probe) in probes.iter().enumerate() {
        let action = if index + 1 == probes.len() { 1 } else { 3 };
        statements.push(
            Statement::new(format!(
                "EXEC msdb.dbo.sp_add_jobstep @job_name = @P1, @step_name = @P2, @subsystem = N'PowerShell', @command = @P3, \
                 @on_success_action = {action}, @on_fail_action = {action}, @flags = 40"
            ))
            .text(job)
            .text(format!("{} {}:{}", probe.rule, probe.host, probe.port))
            .text(powershell_probe(&probe.host, probe.port)),
        );
    }
    statements.push(Statement::new("EXEC msdb.dbo.sp_add_jobserver @job_name = @P1").text(job));
    statements.push(Statement::new("EXEC msdb.dbo.sp_start_job @job_name = @P1").text(job));
    Some(statements)
}

/// The job's step history. Columns: `step_id`, `message`.
pub fn job_history(job: &str) -> Statement {
    Statement::new(
        "SELECT CAST(h.step_id AS int) AS step_id, CAST(h.message AS nvarchar(4000)) AS message\n\
         FROM msdb.dbo.sysjobhistory AS h JOIN msdb.dbo.sysjobs AS j ON j.job_id = h.job_id\n\
         WHERE j.name = @P1 AND h.step_id > 0 ORDER BY h.instance_id",
    )
    .text(job)
}

/// The temporary endpoint SQL Server listens on for the MI → SQL Server test, and how to remove it.
pub fn test_endpoint(port: u16, expiry_yyyymmdd: &str) -> (Vec<Statement>, Vec<Statement>) {
    let create = vec![
        Statement::new(format!(
            "IF CERT_ID(@P1) IS NULL CREATE CERTIFICATE [{TEST_CERTIFICATE}] WITH SUBJECT = N'milink network test', EXPIRY_DATE = {}",
            quote_literal(expiry_yyyymmdd)
        ))
        .text(TEST_CERTIFICATE),
        link_sql::create_endpoint(TEST_ENDPOINT, port, TEST_CERTIFICATE),
    ];
    let drop = vec![
        Statement::new(format!("IF EXISTS (SELECT 1 FROM sys.endpoints WHERE name = @P1) DROP ENDPOINT [{TEST_ENDPOINT}]")).text(TEST_ENDPOINT),
        link_sql::drop_certificate(TEST_CERTIFICATE),
    ];
    (create, drop)
}

/// On the MI: the node hosting this instance's primary and its HADR (redirect) port, as Microsoft's published
/// test script ("Test the connection from SQL Server to SQL Managed Instance", managed-instance-link-preparation)
/// derives them: the host is the part of `replica_address` before `\` plus `.` and the `ClusterName` parameter,
/// and only the `ManagedServer` service whose last path segment is this instance's `InstanceName` (section
/// `SQL`) counts — one virtual cluster hosts several instances, so without that filter `TOP (1)` may pick
/// another instance's node, and `node_name` is a fabric node name, not a DNS name. The `CASE`s keep
/// `SUBSTRING`/`RIGHT` from failing on a value without the separator (the script would). The fabric DMVs are
/// undocumented; if this fails, the redirect test is reported as not run. Columns: `node`, `hadr_port`.
pub fn instance_redirect_target() -> Statement {
    Statement::new(
        "SELECT TOP (1) CAST(SUBSTRING(fr.replica_address, 1, CASE WHEN CHARINDEX(N'\\', fr.replica_address) > 1 THEN CHARINDEX(N'\\', fr.replica_address) - 1 ELSE 0 END) AS nvarchar(256))\n\
         \x20   + N'.' + CAST(c.value AS nvarchar(256)) AS node, CAST(p.value AS int) AS hadr_port\n\
         FROM sys.dm_hadr_fabric_partitions AS fp\n\
         JOIN sys.dm_hadr_fabric_replicas AS fr ON fr.partition_id = fp.partition_id\n\
         JOIN sys.dm_hadr_fabric_nodes AS fn ON fn.node_name = fr.node_name\n\
         CROSS JOIN (SELECT value FROM sys.dm_hadr_fabric_config_parameters WHERE parameter_name = N'ClusterName') AS c\n\
         CROSS JOIN (SELECT value FROM sys.dm_hadr_fabric_config_parameters WHERE parameter_name = N'HadrPort') AS p\n\
         WHERE fp.service_name LIKE N'%ManagedServer%' AND fr.replica_role = 2\n\
         \x20   AND CHARINDEX(N'\\', fr.replica_address) > 1\n\
         \x20   AND CASE WHEN CHARINDEX(N'/', fp.service_name) > 0 THEN RIGHT(fp.service_name, CHARINDEX(N'/', REVERSE(fp.service_name)) - 1) END\n\
         \x20       IN (SELECT CAST(value AS nvarchar(256)) FROM sys.dm_hadr_fabric_config_parameters WHERE section_name = N'SQL' AND parameter_name = N'InstanceName')",
    )
}

/// Runs probes as an Agent job on `session`'s server and collects their results; deletes the job always.
pub async fn run_probes(session: &mut dyn SqlSession, job: &str, probes: &[Probe], pause: &dyn Pause, timeout: Duration) -> Result<Vec<ProbeResult>, EngineError> {
    #[derive(Deserialize)]
    struct HistoryRow {
        step_id: i64,
        message: Option<String>,
    }
    let statements = create_probe_job(job, probes)
        .ok_or_else(|| crate::errors::config("invalid_host", "a host to test is not a plain host name or IP address", "use an IP or DNS name in replication_url"))?;
    let outcome = async {
        for statement in &statements {
            session.execute(statement).await?;
        }
        let mut waited = Duration::ZERO;
        loop {
            let history: Vec<HistoryRow> = rows_as(session.query(&job_history(job)).await?, "job history")?;
            if history.len() >= probes.len() || waited >= timeout {
                let results = probes
                    .iter()
                    .enumerate()
                    .map(|(i, probe)| {
                        let message = history.iter().find(|h| h.step_id == i as i64 + 1).and_then(|h| h.message.clone()).unwrap_or_default();
                        let (succeeded, remote_address) = parse_probe_output(&message).unwrap_or((false, String::new()));
                        ProbeResult { probe: probe.clone(), succeeded, remote_address }
                    })
                    .collect();
                return Ok::<_, EngineError>(results);
            }
            pause.pause(Duration::from_secs(3)).await;
            waited += Duration::from_secs(3);
        }
    }
    .await;
    session.execute(&delete_job(job)).await?;
    outcome
}

/// The finding for one probe result, with the exact remediation for its direction.
pub fn finding(result: &ProbeResult) -> Finding {
    let target = format!("{}:{}", result.probe.host, result.probe.port);
    if result.succeeded {
        return Finding::new(result.probe.rule, Severity::Info, format!("TCP to {target} succeeded (resolved to {})", result.remote_address), "nothing to do");
    }
    let unresolved = result.remote_address.is_empty();
    let remediation = match (result.probe.rule, unresolved) {
        ("network_sql_to_mi", true) => "SQL Server cannot resolve the managed instance's FQDN: make the MI's private DNS zone resolvable from the SQL Server host (conditional forwarder or hosts entry)".to_owned(),
        ("network_sql_to_mi", false) => "allow outbound TCP 5022 from the SQL Server host to the whole MI subnet (host firewall and every network firewall), and inbound 5022 from the SQL Server's IP in the NSG of the MI subnet; the link uses only the MI's VNet-local endpoint (VPN, ExpressRoute or peering)".to_owned(),
        ("network_sql_to_mi_redirect", _) => "allow outbound TCP 11000–11999 from the SQL Server host to the whole MI subnet, and inbound 11000–11999 from the SQL Server's IP in the NSG of the MI subnet".to_owned(),
        ("network_mi_to_sql", true) => "the managed instance cannot resolve SQL Server's name: use an IP address in replication_url, or configure custom DNS on the MI's VNet".to_owned(),
        _ => format!(
            "allow inbound TCP {} on the SQL Server host's firewall and on any network firewall or NSG of the SQL Server's network from the whole MI subnet, and outbound {} in the NSG of the MI subnet; check that SQL Server is running and listening",
            result.probe.port, result.probe.port
        ),
    };
    Finding::new(result.probe.rule, Severity::Blocker, format!("TCP to {target} failed{}", if unresolved { " (the name did not resolve)" } else { "" }), remediation)
}

/// A test that could not run, with how to run it by hand.
pub fn not_run(rule: &'static str, why: &str, manual: &str) -> Finding {
    Finding::new(rule, Severity::Warning, format!("the connection test was not run: {why}"), format!("test by hand before starting: {manual}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_is_parsed() {
        assert_eq!(parse_probe_output("Executed as user: x. milink-tnc:True:10.0.1.5  Process Exit Code 0."), Some((true, "10.0.1.5".into())));
        assert_eq!(parse_probe_output("milink-tnc:False:"), Some((false, String::new())));
        assert_eq!(parse_probe_output("nothing"), None);
    }

    #[test]
    fn hostile_hosts_are_refused() {
        let probe = |host: &str| Probe { rule: "network_sql_to_mi", host: host.into(), port: 5022 };
        assert!(create_probe_job("j", &[probe("mi.zone.database.windows.net")]).is_some());
        assert!(create_probe_job("j", &[probe("x'; Remove-Item C:\\")]).is_none());
        assert!(create_probe_job("j", &[probe("a b")]).is_none());
    }
}
