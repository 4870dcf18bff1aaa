//! The SQL Server side of creating and cancelling a link, one builder per step (mi-link.md §2.1).
//!
//! Each create step is a *check* (a read-only query, in [`super::probe`] or here) followed by an *act*
//! built here; the orchestration in [`crate::link`] runs the check, decides, and only then acts, so a
//! repeat after a crash resumes where it stopped. Identifiers are bracket-quoted, literals `N'…'`-quoted,
//! and lookups take parameters; certificate blobs are validated hex before they become `0x…` literals.
use super::{is_hex_blob, Statement};
use crate::names::{quote_ident, quote_literal};
use milink_core::config::Secret;

/// Longest master key password the statement of [`create_master_key`] can carry: `QUOTENAME` takes at most
/// 128 characters and returns NULL beyond, and `EXEC (NULL)` does nothing, silently.
pub const MAX_MASTER_KEY_PASSWORD_CHARS: usize = 128;

/// Why a master key password cannot be used, `None` when it can (1 to 128 characters).
pub fn master_key_password_problem(password: &Secret) -> Option<String> {
    let chars = password.expose().chars().count();
    if chars == 0 {
        Some("the master key password is empty".into())
    } else if chars > MAX_MASTER_KEY_PASSWORD_CHARS {
        Some(format!("the master key password has {chars} characters; SQL Server takes at most {MAX_MASTER_KEY_PASSWORD_CHARS}"))
    } else {
        None
    }
}

/// Creates the database master key in `master` unless one exists (step 2). The password travels as a
/// parameter and becomes a literal on the server, so it is never in the statement text. Callers check the
/// password with [`master_key_password_problem`] first; the `IF @create IS NULL` guard makes the server
/// refuse loudly should a longer one ever get through, instead of `EXEC (NULL)` doing nothing.
pub fn create_master_key(password: Secret) -> Statement {
    Statement::new(
        "IF NOT EXISTS (SELECT 1 FROM master.sys.symmetric_keys WHERE symmetric_key_id = 101)\n\
         BEGIN\n\
         \x20   DECLARE @create nvarchar(max) = N'CREATE MASTER KEY ENCRYPTION BY PASSWORD = ' + QUOTENAME(@P1, N'''');\n\
         \x20   IF @create IS NULL THROW 50000, N'The master key password is longer than 128 characters.', 1;\n\
         \x20   EXEC (@create);\n\
         END",
    )
    .secret(password)
}

/// Drops the database master key in `master` (only the network test's, made on a server that had none; the
/// server refuses with 15580 while a certificate is encrypted by it, so it can never take a link's key).
pub fn drop_master_key() -> Statement {
    Statement::new("IF EXISTS (SELECT 1 FROM master.sys.symmetric_keys WHERE symmetric_key_id = 101) DROP MASTER KEY")
}

/// Creates the certificate the mirroring endpoint authenticates with (step 3). `expiry` is `YYYYMMDD`.
pub fn create_endpoint_certificate(name: &str, expiry_yyyymmdd: &str) -> Statement {
    let subject = format!("milink endpoint certificate {name}");
    Statement::new(format!(
        "CREATE CERTIFICATE {} WITH SUBJECT = {}, EXPIRY_DATE = {}",
        quote_ident(name),
        quote_literal(&subject),
        quote_literal(expiry_yyyymmdd)
    ))
}

/// Reads a certificate's public key as upper-case hex without `0x` (step 4, and the step-7 comparison) and
/// its SHA-1 thumbprint (what ARM reports as a server trust certificate's `thumbprint`). One row, columns
/// `public_key`, `thumbprint`, NULL when there is no such certificate.
pub fn certificate_public_key(name: &str) -> Statement {
    Statement::new(
        "SELECT CONVERT(varchar(max), CERTENCODED(CERT_ID(@P1)), 2) AS public_key,\n\
         \x20   (SELECT CONVERT(varchar(64), thumbprint, 2) FROM master.sys.certificates WHERE name = @P1) AS thumbprint",
    )
    .text(name)
}

/// Imports a certificate from its public key (step 7 for the MI's certificate, named exactly as the MI's
/// FQDN; step 8 for the Azure trusted roots). `None` when `hex` is not a valid blob.
pub fn import_certificate(name: &str, hex: &str) -> Option<Statement> {
    is_hex_blob(hex).then(|| Statement::new(format!("CREATE CERTIFICATE {} FROM BINARY = 0x{hex}", quote_ident(name))))
}

/// Drops a certificate (rotation of the MI's certificate; cancel).
pub fn drop_certificate(name: &str) -> Statement {
    Statement::new(format!(
        "IF CERT_ID(@P1) IS NOT NULL DROP CERTIFICATE {}",
        quote_ident(name)
    ))
    .text(name)
}

/// Trusts a root certificate as an issuer for the MI DNS zone (step 8). "Already added" is success.
pub fn add_trusted_issuer(certificate: &str, dns_wildcard: &str) -> Statement {
    Statement::new(
        "DECLARE @certificate_id int = CERT_ID(@P1);\n\
         BEGIN TRY\n\
         \x20   EXEC sp_certificate_add_issuer @certificate_id, @P2;\n\
         END TRY\n\
         BEGIN CATCH\n\
         \x20   IF ERROR_MESSAGE() NOT LIKE N'%already%' THROW;\n\
         END CATCH",
    )
    .text(certificate)
    .text(dns_wildcard)
}

/// Creates the database mirroring endpoint with certificate authentication and AES (step 9, new).
pub fn create_endpoint(name: &str, port: u16, certificate: &str) -> Statement {
    Statement::new(format!(
        "CREATE ENDPOINT {} STATE = STARTED\n\
         \x20   AS TCP (LISTENER_PORT = {port}, LISTENER_IP = ALL)\n\
         \x20   FOR DATABASE_MIRRORING (ROLE = ALL, AUTHENTICATION = CERTIFICATE {}, ENCRYPTION = REQUIRED ALGORITHM AES)",
        quote_ident(name),
        quote_ident(certificate)
    ))
}

/// Alters an existing endpoint so it also accepts the certificate and requires AES (step 9, existing).
/// Windows authentication is kept (`WINDOWS NEGOTIATE CERTIFICATE`) so existing AGs keep working.
pub fn alter_endpoint(name: &str, port: u16, certificate: &str) -> Statement {
    Statement::new(format!(
        "ALTER ENDPOINT {} STATE = STARTED\n\
         \x20   AS TCP (LISTENER_PORT = {port}, LISTENER_IP = ALL)\n\
         \x20   FOR DATABASE_MIRRORING (ROLE = ALL, AUTHENTICATION = WINDOWS NEGOTIATE CERTIFICATE {}, ENCRYPTION = REQUIRED ALGORITHM AES)",
        quote_ident(name),
        quote_ident(certificate)
    ))
}

/// Drops an endpoint (cancel, only when milink created it and nothing else uses it).
pub fn drop_endpoint(name: &str) -> Statement {
    Statement::new(format!("DROP ENDPOINT {}", quote_ident(name)))
}

/// What the local availability group is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAgSpec<'a> {
    /// AG name.
    pub name: &'a str,
    /// The database it holds.
    pub database: &'a str,
    /// `@@SERVERNAME` of the SQL Server.
    pub server_name: &'a str,
    /// `TCP://host:port` of the SQL Server's mirroring endpoint.
    pub endpoint_url: &'a str,
    /// SQL Server major version (13 = 2016, which cannot take `CLUSTER_TYPE = NONE`).
    pub major_version: u32,
}

/// Creates the one-database AG (step 10). `CLUSTER_TYPE = NONE` is omitted for SQL Server 2016.
pub fn create_local_ag(spec: &LocalAgSpec<'_>) -> Statement {
    let cluster = if spec.major_version <= 13 { "" } else { "WITH (CLUSTER_TYPE = NONE)\n" };
    Statement::new(format!(
        "CREATE AVAILABILITY GROUP {}\n\
         {cluster}FOR DATABASE {}\n\
         REPLICA ON {} WITH (ENDPOINT_URL = {}, AVAILABILITY_MODE = SYNCHRONOUS_COMMIT, FAILOVER_MODE = MANUAL, SEEDING_MODE = AUTOMATIC)",
        quote_ident(spec.name),
        quote_ident(spec.database),
        quote_literal(spec.server_name),
        quote_literal(spec.endpoint_url)
    ))
}

/// What the distributed AG joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistributedAgSpec<'a> {
    /// Distributed AG name (= the link name).
    pub name: &'a str,
    /// The local AG.
    pub local_ag: &'a str,
    /// `TCP://host:port` of the SQL Server's endpoint.
    pub local_listener_url: &'a str,
    /// The MI's member name (`instanceAvailabilityGroupName`).
    pub instance_ag: &'a str,
    /// The MI's FQDN.
    pub instance_fqdn: &'a str,
    /// The MI's short name (first DNS label), for `Server=[…]`.
    pub instance_name: &'a str,
}

/// The listener URL of the MI member: `tcp://<fqdn>:5022;Server=[<name>]` (the MI port cannot change).
pub fn instance_listener_url(instance_fqdn: &str, instance_name: &str) -> String {
    format!("tcp://{instance_fqdn}:5022;Server={}", quote_ident(instance_name))
}

/// Creates the distributed AG, asynchronous and automatically seeded (step 11).
pub fn create_distributed_ag(spec: &DistributedAgSpec<'_>) -> Statement {
    Statement::new(format!(
        "CREATE AVAILABILITY GROUP {}\n\
         WITH (DISTRIBUTED)\n\
         AVAILABILITY GROUP ON\n\
         \x20   {} WITH (LISTENER_URL = {}, AVAILABILITY_MODE = ASYNCHRONOUS_COMMIT, FAILOVER_MODE = MANUAL, SEEDING_MODE = AUTOMATIC, SESSION_TIMEOUT = 20),\n\
         \x20   {} WITH (LISTENER_URL = {}, AVAILABILITY_MODE = ASYNCHRONOUS_COMMIT, FAILOVER_MODE = MANUAL, SEEDING_MODE = AUTOMATIC)",
        quote_ident(spec.name),
        quote_literal(spec.local_ag),
        quote_literal(spec.local_listener_url),
        quote_literal(spec.instance_ag),
        quote_literal(&instance_listener_url(spec.instance_fqdn, spec.instance_name))
    ))
}

/// Drops an availability group, distributed or not, if it exists (cancel; break after cutover).
pub fn drop_availability_group(name: &str) -> Statement {
    Statement::new(format!(
        "IF EXISTS (SELECT 1 FROM sys.availability_groups WHERE name = @P1) DROP AVAILABILITY GROUP {}",
        quote_ident(name)
    ))
    .text(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_server_2016_gets_no_cluster_type() {
        let mut spec = LocalAgSpec {
            name: "milink_x_ag",
            database: "ToyStore",
            server_name: "SQL01",
            endpoint_url: "TCP://10.0.0.4:5022",
            major_version: 13,
        };
        assert!(!create_local_ag(&spec).sql.contains("CLUSTER_TYPE"));
        spec.major_version = 16;
        assert!(create_local_ag(&spec).sql.contains("WITH (CLUSTER_TYPE = NONE)"));
    }

    #[test]
    fn invalid_blobs_are_refused() {
        assert!(import_certificate("x", "0x12").is_none());
        assert!(import_certificate("x", "12; DROP").is_none());
        assert_eq!(import_certificate("x", "12AB").unwrap().sql, "CREATE CERTIFICATE [x] FROM BINARY = 0x12AB");
    }
}
