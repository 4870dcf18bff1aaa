//! The two connection kinds this engine reads, validated once without I/O.
//!
//! `engine = "sqlserver"` (the source): `url = "sqlserver://user@host:port/database"`, the password from the
//! core's `password_env` / `password_file`, and `[options]` for authentication, TLS, the endpoint, sizing.
//! `engine = "azure-sql-mi"` (the target): `url` (or `options.resource_id`) is the instance's ARM resource id;
//! `[options]` name the ARM endpoint, the credential flow, an optional TDS endpoint for MI-side checks, and
//! optional link/AG names. Unknown option keys are refused, so a typo is an error rather than a default.
//! Parsing is pure: secrets named by env var or file are resolved through injected lookups.
use crate::errors;
use crate::sizing::License;
use milink_core::config::{Endpoint, Secret};
use milink_core::error::EngineError;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

/// How to log in to SQL Server or the MI over TDS.
#[derive(Clone)]
pub enum SqlAuth {
    /// SQL authentication.
    Sql {
        /// Login.
        user: String,
        /// Password.
        password: Secret,
    },
    /// A ready Entra access token (from `password_env` / `password_file`).
    EntraToken(Secret),
    /// Entra tokens from a credential flow (scope `https://database.windows.net/.default`).
    Entra(Arc<dyn crate::arm::auth::TokenSource>),
}

impl std::fmt::Debug for SqlAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SqlAuth::Sql { user, .. } => write!(f, "Sql {{ user: {user:?}, password: <redacted> }}"),
            SqlAuth::EntraToken(_) => f.write_str("EntraToken(<redacted>)"),
            SqlAuth::Entra(_) => f.write_str("Entra(<credential>)"),
        }
    }
}

/// Everything needed to open a TDS connection.
#[derive(Debug, Clone)]
pub struct SqlConnection {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database to connect to.
    pub database: String,
    /// Login.
    pub auth: SqlAuth,
    /// Require TLS (default); `false` turns encryption off (test servers only).
    pub encrypt: bool,
    /// Accept any server certificate (test servers only).
    pub trust_server_certificate: bool,
    /// A CA file to validate the server certificate with.
    pub ca_certificate: Option<PathBuf>,
}

/// `[options]` of a `sqlserver` connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceOptions {
    /// `sql` (default), `entra_token` (the password is an access token) or `entra` (a credential flow).
    pub auth: String,
    /// Credential flow when `auth = "entra"` (same values as the target's `credential`).
    pub credential: String,
    /// Require TLS.
    pub encrypt: bool,
    /// Accept any server certificate (test servers only).
    pub trust_server_certificate: bool,
    /// CA file for the server certificate.
    pub ca_certificate: Option<PathBuf>,
    /// Certificate the mirroring endpoint uses when milink creates it.
    pub endpoint_certificate: String,
    /// Name of the mirroring endpoint when milink creates it.
    pub endpoint_name: String,
    /// Port of the mirroring endpoint when milink creates it (an existing endpoint's port wins).
    pub endpoint_port: u16,
    /// Env var holding the master key password (default: a random one, protected by the service master key).
    pub master_key_password_env: Option<String>,
    /// Percentile for sizing.
    pub sizing_percentile: f64,
    /// Headroom multiplier for sizing.
    pub sizing_scaling_factor: f64,
    /// `license_included` or `azure_hybrid_benefit`.
    pub license: License,
    /// A price list to use instead of the shipped one.
    pub price_file: Option<PathBuf>,
    /// Seconds between the two I/O snapshots of an assessment.
    pub sample_seconds: u64,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            auth: "sql".into(),
            credential: "default".into(),
            encrypt: true,
            trust_server_certificate: false,
            ca_certificate: None,
            endpoint_certificate: "milink_endpoint_cert".into(),
            endpoint_name: "milink_mirroring_endpoint".into(),
            endpoint_port: 5022,
            master_key_password_env: None,
            sizing_percentile: 95.0,
            sizing_scaling_factor: 1.0,
            license: License::LicenseIncluded,
            price_file: None,
            sample_seconds: 20,
        }
    }
}

/// `[options]` of an `azure-sql-mi` connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetOptions {
    /// ARM resource id (default: the connection's url).
    pub resource_id: Option<String>,
    /// ARM endpoint: public cloud, a sovereign cloud, or the tests' contract server.
    pub arm_base_url: String,
    /// Token scope for ARM (default `<arm_base_url>/.default`).
    pub arm_scope: Option<String>,
    /// Entra authority host for sovereign clouds (default: public cloud or `AZURE_AUTHORITY_HOST`).
    pub authority_host: Option<String>,
    /// `default`, `managed_identity`, `workload_identity`, `azure_cli`, `client_secret`.
    pub credential: String,
    /// Client id of a user-assigned managed identity.
    pub managed_identity_client_id: Option<String>,
    /// Tenant for `client_secret`.
    pub tenant_id: Option<String>,
    /// Application id for `client_secret`.
    pub client_id: Option<String>,
    /// Env var with the client secret.
    pub client_secret_env: Option<String>,
    /// File with the client secret.
    pub client_secret_file: Option<PathBuf>,
    /// `host:port` of the MI's VNet-local TDS endpoint, for checks on the MI side (optional).
    pub tds_endpoint: Option<String>,
    /// Login for the TDS endpoint (SQL authentication; the password is the connection's password).
    pub tds_user: Option<String>,
    /// `sql` (default) or `entra` for the TDS endpoint.
    pub tds_auth: String,
    /// Accept any certificate on the TDS endpoint (test instances only).
    pub tds_trust_server_certificate: bool,
    /// CA file for the TDS endpoint's certificate (default: the system's roots).
    pub tds_ca_certificate: Option<PathBuf>,
    /// Distributed AG / link name (default `milink_<id>`).
    pub link_name: Option<String>,
    /// SQL Server AG name (default `<link>_ag`).
    pub availability_group: Option<String>,
    /// MI-side AG name (default `<link>_mi`).
    pub instance_availability_group: Option<String>,
    /// Name of SQL Server's certificate on the MI (default: derived from the server and certificate names).
    pub trust_certificate_name: Option<String>,
    /// Longest wait for one ARM operation, seconds.
    pub operation_timeout_seconds: u64,
}

impl Default for TargetOptions {
    fn default() -> Self {
        Self {
            resource_id: None,
            arm_base_url: "https://management.azure.com".into(),
            arm_scope: None,
            authority_host: None,
            credential: "default".into(),
            managed_identity_client_id: None,
            tenant_id: None,
            client_id: None,
            client_secret_env: None,
            client_secret_file: None,
            tds_endpoint: None,
            tds_user: None,
            tds_auth: "sql".into(),
            tds_trust_server_certificate: false,
            tds_ca_certificate: None,
            link_name: None,
            availability_group: None,
            instance_availability_group: None,
            trust_certificate_name: None,
            operation_timeout_seconds: 1800,
        }
    }
}

/// `user`, `host`, `port`, `database` of a `sqlserver://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlUrl {
    /// Login, when given.
    pub user: Option<String>,
    /// Host or IP.
    pub host: String,
    /// Port (1433 by default).
    pub port: u16,
    /// Database (`master` by default).
    pub database: String,
}

/// Parses `sqlserver://[user@]host[:port][/database]` (IPv6 hosts in brackets; user percent-decoded).
pub fn parse_sql_url(url: &str) -> Result<SqlUrl, String> {
    let rest = url
        .strip_prefix("sqlserver://")
        .or_else(|| url.strip_prefix("mssql://"))
        .ok_or_else(|| format!("{url:?} must start with sqlserver://"))?;
    let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((user, hostport)) => (Some(percent_decode(user)?), hostport),
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed [ in the host")?;
        (host.to_owned(), after.strip_prefix(':'))
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (hostport.to_owned(), None),
        }
    };
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c)) {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| format!("{p:?} is not a port"))?,
        None => 1433,
    };
    let database = if database.is_empty() { "master".to_owned() } else { percent_decode(database.split('?').next().unwrap_or(""))? };
    Ok(SqlUrl { user, host, port, database })
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "invalid %-escape")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "%-escapes are not UTF-8".to_owned())
}

/// Reads an endpoint's `[options]` table into `T`, naming the connection in the error.
pub fn read_options<T: serde::de::DeserializeOwned>(endpoint: &Endpoint) -> Result<T, EngineError> {
    toml::Value::Table(endpoint.options.clone()).try_into().map_err(|e| {
        errors::config("invalid_options", format!("connection {}: invalid [options]: {e}", endpoint.name), "fix the option named in the message (docs/sqlserver.md lists them)")
    })
}

/// How a TDS connection treats the server's certificate; one place decides, so tiberius's config,
/// validation's warning and the log all say the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateCheck {
    /// Validated against the system's roots (the default).
    SystemRoots,
    /// Validated against this CA file.
    CaFile(PathBuf),
    /// Not validated: any certificate is accepted (`trust_server_certificate`, test servers only).
    TrustAny,
    /// No TLS for the session (`encrypt = false`, test servers only).
    Unencrypted,
}

impl SqlConnection {
    /// What this connection checks of the server's certificate.
    pub fn certificate_check(&self) -> CertificateCheck {
        match (self.encrypt, self.trust_server_certificate, &self.ca_certificate) {
            (false, _, _) => CertificateCheck::Unencrypted,
            (true, true, _) => CertificateCheck::TrustAny,
            (true, false, Some(ca)) => CertificateCheck::CaFile(ca.clone()),
            (true, false, None) => CertificateCheck::SystemRoots,
        }
    }
}

/// Refuses a TLS configuration that says two things at once (`connection` and option prefix for messages).
pub fn check_tls_options(connection: &str, prefix: &str, trust_any: bool, ca: Option<&PathBuf>) -> Result<(), EngineError> {
    if trust_any && ca.is_some() {
        return Err(errors::config(
            "invalid_options",
            format!("connection {connection}: options.{prefix}trust_server_certificate and options.{prefix}ca_certificate are both set"),
            format!("keep options.{prefix}ca_certificate (the certificate is validated with that CA) and remove {prefix}trust_server_certificate"),
        ));
    }
    Ok(())
}

/// Validation's warnings for connections whose server certificate is not validated (the config said so).
pub fn tls_findings(source: &SourceOptions, target: &TargetOptions) -> Vec<milink_core::Finding> {
    use milink_core::{Finding, Severity};
    let mut findings = Vec::new();
    if !source.encrypt {
        findings.push(Finding::new(
            "tls_not_encrypted",
            Severity::Warning,
            "the connection to SQL Server is not encrypted (options.encrypt = false): logins and data cross the network in clear",
            "remove options.encrypt = false (test servers only); give options.ca_certificate if the server's certificate comes from a private CA",
        ));
    } else if source.trust_server_certificate {
        findings.push(Finding::new(
            "tls_certificate_not_verified",
            Severity::Warning,
            "SQL Server's certificate is not validated (options.trust_server_certificate = true): milink cannot tell it is talking to that server",
            "set options.ca_certificate to the CA file that signed SQL Server's certificate and remove trust_server_certificate (test servers only)",
        ));
    }
    if target.tds_endpoint.is_some() && target.tds_trust_server_certificate {
        findings.push(Finding::new(
            "tls_certificate_not_verified",
            Severity::Warning,
            "the managed instance's TDS endpoint certificate is not validated (options.tds_trust_server_certificate = true)",
            "remove tds_trust_server_certificate (test instances only); set options.tds_ca_certificate for a private CA",
        ));
    }
    findings
}

/// `host:port` of `tcp://host:port` (the replication URL or the TDS endpoint).
pub fn parse_host_port(text: &str, default_port: u16) -> Result<(String, u16), String> {
    let rest = text.split_once("://").map_or(text, |(_, rest)| rest).trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => (host.trim_matches(['[', ']']), port.parse::<u16>().map_err(|_| format!("{port:?} is not a port"))?),
        _ => (rest.trim_matches(['[', ']']), default_port),
    };
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c)) {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(encrypt: bool, trust: bool, ca: Option<&str>) -> SqlConnection {
        let auth = SqlAuth::Sql { user: "u".into(), password: Secret::new("p") };
        SqlConnection { host: "h".into(), port: 1433, database: "master".into(), auth, encrypt, trust_server_certificate: trust, ca_certificate: ca.map(PathBuf::from) }
    }

    #[test]
    fn certificates_are_validated_unless_the_config_says_otherwise() {
        let defaults = SourceOptions::default();
        assert!(defaults.encrypt && !defaults.trust_server_certificate);
        assert_eq!(connection(true, false, None).certificate_check(), CertificateCheck::SystemRoots);
        assert_eq!(connection(true, false, Some("/ca.pem")).certificate_check(), CertificateCheck::CaFile("/ca.pem".into()));
        assert_eq!(connection(true, true, None).certificate_check(), CertificateCheck::TrustAny);
        assert_eq!(connection(false, false, None).certificate_check(), CertificateCheck::Unencrypted);
        assert!(tls_findings(&defaults, &TargetOptions::default()).is_empty(), "the defaults warn about nothing");
    }

    #[test]
    fn trusting_any_certificate_is_a_validation_warning_and_contradictions_are_refused() {
        let source = SourceOptions { trust_server_certificate: true, ..SourceOptions::default() };
        let target = TargetOptions { tds_endpoint: Some("mi:1433".into()), tds_trust_server_certificate: true, ..TargetOptions::default() };
        let findings = tls_findings(&source, &target);
        assert_eq!(findings.len(), 2);
        assert!(findings.iter().all(|f| f.rule == "tls_certificate_not_verified" && f.severity == milink_core::Severity::Warning));
        let error = check_tls_options("sql1", "", true, Some(&PathBuf::from("/ca.pem"))).unwrap_err();
        assert!(error.message.contains("sql1") && error.remediation.contains("ca_certificate"), "{error:?}");
        assert!(check_tls_options("sql1", "", true, None).is_ok());
    }

    #[test]
    fn sql_urls_parse() {
        let url = parse_sql_url("sqlserver://milink@sql01.contoso.com:14330/ToyStore").unwrap();
        assert_eq!(url, SqlUrl { user: Some("milink".into()), host: "sql01.contoso.com".into(), port: 14330, database: "ToyStore".into() });
        let url = parse_sql_url("sqlserver://[fe80::1]").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.database.as_str()), ("fe80::1", 1433, "master"));
        assert_eq!(parse_sql_url("sqlserver://a%40b@h/Toy%5DStore").unwrap().database, "Toy]Store");
        assert!(parse_sql_url("postgres://h").is_err());
        assert!(parse_sql_url("sqlserver://h:99999").is_err());
        assert!(parse_sql_url("sqlserver://bad host").is_err());
    }

    #[test]
    fn host_ports_parse() {
        assert_eq!(parse_host_port("TCP://10.0.0.4:5022", 5022).unwrap(), ("10.0.0.4".into(), 5022));
        assert_eq!(parse_host_port("mi.zone.database.windows.net", 1433).unwrap().1, 1433);
        assert!(parse_host_port("tcp://x y:1", 1).is_err());
    }
}
