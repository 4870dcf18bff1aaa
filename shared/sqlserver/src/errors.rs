//! Every error this engine can meet, classified once into the core's `EngineError`.
//!
//! SQL Server error numbers (from TDS error tokens and from the link's own DMV columns) and ARM error codes
//! map to *definite* (retrying the same thing fails the same way; the user must act) or *transient*
//! (retry with backoff), each with a stable code and the remediation a DBA can act on. Anything not listed
//! is transient, as the design requires. Messages are built from numbers, codes and the server's own text,
//! never from connection strings or tokens, so nothing here can leak a secret.
use milink_core::error::EngineError;

/// What a SQL Server error number means for the link, when milink knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownSqlError {
    /// The error number.
    pub number: i64,
    /// Stable code.
    pub code: &'static str,
    /// Retrying may help.
    pub transient: bool,
    /// What it means, in words.
    pub meaning: &'static str,
    /// What to do.
    pub remediation: &'static str,
}

const fn known(number: i64, code: &'static str, transient: bool, meaning: &'static str, remediation: &'static str) -> KnownSqlError {
    KnownSqlError { number, code, transient, meaning, remediation }
}

/// SQL Server errors milink recognizes (mi-link.md §5.1 for the link's own errors).
pub const SQL_ERRORS: &[KnownSqlError] = &[
    known(18456, "authentication_failed", false, "login failed", "check the login name and the password (or token) the connection's password_env / password_file provides"),
    known(4060, "database_unavailable", false, "the login cannot open the requested database", "check the database in the connection options and that the login has access to it"),
    known(229, "permission_denied", false, "permission denied", "run milink as a member of sysadmin on SQL Server (the link needs it)"),
    known(262, "permission_denied", false, "permission denied in the database", "run milink as a member of sysadmin on SQL Server (the link needs it)"),
    known(15247, "permission_denied", false, "no permission to perform the action", "run milink as a member of sysadmin on SQL Server (the link needs it)"),
    known(1205, "deadlock", true, "chosen as a deadlock victim", "none: milink retries"),
    known(1222, "lock_timeout", true, "lock request timed out", "none: milink retries"),
    known(1475, "no_full_backup", false, "the database has no full backup that starts a log chain (error 1475)", "take a full backup without COPY_ONLY (BACKUP DATABASE … TO …) so a log chain starts, then retry"),
    known(35220, "hadr_disabled", false, "the Always On availability groups feature is not enabled", "enable Always On availability groups in SQL Server Configuration Manager (or mssql-conf set hadr.hadrenabled 1) and restart SQL Server"),
    known(35221, "hadr_disabled", false, "the Always On availability groups replica manager is disabled", "enable Always On availability groups in SQL Server Configuration Manager (or mssql-conf set hadr.hadrenabled 1) and restart SQL Server"),
    known(41962, "link_not_initiated", false, "the link was not initiated within 5 minutes: the managed instance could not reach SQL Server (41962)", "open TCP 5022 between SQL Server and the whole MI subnet in both directions (host firewall, network firewalls, NSGs) and make the partner endpoint an IP or a name the MI's VNet resolves; then cancel and start again"),
    known(41973, "sql_certificate_not_on_mi", false, "the SQL Server endpoint certificate was not imported into the managed instance correctly (41973)", "re-upload the SQL Server endpoint certificate's public key to the MI (serverTrustCertificates), then cancel and start again"),
    known(41974, "mi_certificate_not_on_sql", false, "the managed instance's endpoint certificate was not imported into SQL Server correctly (41974)", "import the MI's DATABASE_MIRRORING certificate on SQL Server named exactly as the MI's FQDN, then cancel and start again"),
    known(41976, "availability_group_not_responding", false, "the availability group is not responding: names or configuration parameters are wrong (41976)", "check the AG and distributed AG names and the partner endpoint on both sides, then cancel and start again"),
    known(41977, "target_database_not_responsive", true, "the target database is not responsive (41977)", "wait; if it persists, check the managed instance's health and cancel and start again"),
    known(41986, "secondary_not_responsive", false, "the connection failed or the secondary replica is not responsive (41986)", "check names, the partner endpoint and the network (TCP 5022 both ways), then cancel and start again"),
    known(47521, "request_not_received", false, "the secondary did not receive the request (47521)", "check the health of the availability group and the database on SQL Server"),
    known(1408, "log_truncated_during_seeding", false, "the remote copy is not recovered far enough (1408): the log was truncated while seeding", "drop and recreate the link; pause log backups (or enable trace flag 12381) until seeding finishes"),
    known(1412, "log_truncated_during_seeding", false, "the remote copy has not been rolled forward far enough (1412): the log was truncated while seeding", "drop and recreate the link; pause log backups (or enable trace flag 12381) until seeding finishes"),
    known(40613, "azure_unavailable", true, "the Azure database is not currently available", "none: milink retries"),
    known(40197, "azure_service_error", true, "the service encountered an error processing the request", "none: milink retries"),
    known(40501, "azure_busy", true, "the service is busy", "none: milink retries"),
    known(10928, "azure_resource_limit", true, "a resource limit was reached", "none: milink retries"),
    known(10929, "azure_resource_limit", true, "a resource limit was reached", "none: milink retries"),
];

/// Looks a SQL Server error number up.
pub fn known_sql_error(number: i64) -> Option<&'static KnownSqlError> {
    SQL_ERRORS.iter().find(|e| e.number == number)
}

/// Classifies a SQL Server error by number, keeping the server's message.
pub fn sql_error(number: i64, server_message: &str) -> EngineError {
    match known_sql_error(number) {
        Some(known) => {
            let message = format!("SQL Server error {number}: {} ({})", known.meaning, server_message.trim());
            if known.transient {
                EngineError::transient(known.code, message, known.remediation)
            } else {
                EngineError::definite(known.code, message, known.remediation)
            }
        }
        None => EngineError::transient(
            "sqlserver_error",
            format!("SQL Server error {number}: {}", server_message.trim()),
            "milink retries; if it persists, look the error number up and fix the cause on SQL Server",
        ),
    }
}

/// A connection that did not open (TCP, DNS, TLS).
pub fn unreachable(what: &str, detail: &str) -> EngineError {
    EngineError::transient(
        "unreachable",
        format!("cannot reach {what}: {detail}"),
        "check the host and port in the connection url, that the server is running, and the firewalls in between",
    )
}

/// The TLS handshake failed: a configuration problem, not a blip.
pub fn tls_failed(what: &str, detail: &str) -> EngineError {
    EngineError::definite(
        "tls_failed",
        format!("TLS with {what} failed: {detail}"),
        "trust the server's certificate: set options.ca_certificate to its CA file, or (test servers only) options.trust_server_certificate = true",
    )
}

/// A setting is wrong (config, names, resource id).
pub fn config(code: &str, message: impl Into<String>, remediation: impl Into<String>) -> EngineError {
    EngineError::definite(code, message, remediation)
}

/// Classifies an ARM error response (status, `error.code`, `error.message`). Status 0 means the error
/// came from a long-running operation's status resource rather than an HTTP status.
pub fn arm_error(status: u16, code: &str, message: &str, operation: &str) -> EngineError {
    let text = if message.is_empty() { code.to_owned() } else { format!("{code}: {message}") };
    let full = if status == 0 { format!("{operation} failed in Azure: {text}") } else { format!("{operation} failed with HTTP {status} {text}") };
    let definite = |c: &str, fix: &str| EngineError::definite(c, full.clone(), fix);
    let transient = |c: &str, fix: &str| EngineError::transient(c, full.clone(), fix);
    match (status, code) {
        (_, "RemoteDatabaseExists") => definite(
            "remote_database_exists",
            "a database with this name already exists on the managed instance (often left by an earlier, cancelled link): delete it on the MI, or migrate to another instance, then start again",
        ),
        (_, "InvalidDistributedAvailabilityGroupFailoverInstanceRole") => definite(
            "failover_wrong_role",
            "a planned failover through Azure runs only while the managed instance is the primary (failback); to move SQL Server → MI use the cutover, which fails over on SQL Server",
        ),
        (_, "InvalidDistributedAvailabilityGroupFailoverRequest") => definite("failover_invalid_request", "the failover request was invalid; this is a milink bug, please report it"),
        (_, "OperationCanNotStartDueToMiLink") => transient("mi_busy_with_link", "a link is still creating a database on this managed instance; milink retries when it is done"),
        (_, "UnableToResolveRemoteServer") => definite(
            "partner_unresolvable",
            "the managed instance cannot resolve the SQL Server endpoint name: use an IP address in replication_url, or a name the MI's VNet resolves (custom DNS)",
        ),
        (_, "ManagedInstanceIsBusy" | "ConflictingServerOperation" | "ManagedInstanceStarting" | "ResourceBusy" | "AnotherOperationInProgress") => {
            transient("mi_busy", "another operation is running on the managed instance; milink retries")
        }
        (_, "ManagedInstanceStoppingOrStopped") => definite("mi_stopped", "start the managed instance, then retry"),
        (_, "MissingCertificateName") => definite("certificate_name_missing", "this is a milink bug, please report it"),
        (401, _) | (_, "InvalidAuthenticationToken" | "ExpiredAuthenticationToken" | "AuthenticationFailed") => definite(
            "arm_authentication_failed",
            "milink could not authenticate to Azure: check the credential option (managed identity, workload identity, Azure CLI login, client secret) and the tenant",
        ),
        (403, _) | (_, "AuthorizationFailed" | "LinkedAuthorizationFailed") => definite(
            "arm_permission_denied",
            "grant the identity milink runs as the SQL Managed Instance Contributor role (or a custom role with the managedInstances distributedAvailabilityGroups, serverTrustCertificates, endpointCertificates and hybridLink actions) on the instance",
        ),
        (404, _) | (_, "ResourceNotFound" | "ParentResourceNotFound" | "ResourceGroupNotFound" | "SubscriptionNotFound") => {
            definite("arm_not_found", "check options.resource_id of the target connection (subscription, resource group, instance name)")
        }
        (409, _) => transient("arm_conflict", "a conflicting operation is running; milink retries"),
        (429, _) => transient("arm_throttled", "Azure throttled the request; milink retries"),
        (500..=599, _) => transient("arm_unavailable", "Azure returned a server error; milink retries"),
        (400, _) => definite("arm_bad_request", "Azure refused the request; read the message for the field to fix"),
        _ => transient("arm_error", "milink retries; if it persists, read the message"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use milink_core::error::ErrorKind;

    #[test]
    fn unknown_errors_are_transient() {
        assert_eq!(sql_error(99999, "x").kind, ErrorKind::Transient);
        assert_eq!(arm_error(418, "Teapot", "", "GET").kind, ErrorKind::Transient);
    }

    #[test]
    fn known_errors_carry_their_remediation() {
        let error = sql_error(1475, "no backup");
        assert_eq!(error.kind, ErrorKind::Definite);
        assert!(error.remediation.contains("COPY_ONLY"));
        let error = arm_error(409, "RemoteDatabaseExists", "The destination database name already exists on the destination server.", "create link");
        assert_eq!(error.code, "remote_database_exists");
        assert!(error.message.contains("already exists"));
        assert_eq!(arm_error(409, "ManagedInstanceIsBusy", "", "x").kind, ErrorKind::Transient);
    }
}
