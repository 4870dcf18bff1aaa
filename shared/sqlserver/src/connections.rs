//! From the core's `Endpoint`s to live ports: a SQL Server connector and the managed instance's API.
//!
//! The engine never builds a socket or an HTTP client itself; it asks a [`Connections`] for a [`Source`]
//! and a [`Target`]. [`LiveConnections`] builds tiberius connectors and the ARM client (with the
//! `azure_identity` credential the options name); tests build the same structs around a scripted SQL
//! session and the real ARM client pointed at the contract server. Building is cheap and does no I/O:
//! credentials fetch tokens only when a request needs one.
use crate::arm::auth::{credential, AzureTokens, CredentialKind, TokenSource};
use crate::arm::client::{ArmClient, Polling};
use crate::arm::{InstanceId, ManagedInstanceApi, ManagedInstanceArm};
use crate::errors;
use crate::options::{parse_host_port, parse_sql_url, read_options, SourceOptions, SqlAuth, SqlConnection, SqlUrl, TargetOptions};
use crate::tds::{SqlConnector, TdsConnector};
use milink_core::config::{Endpoint, Secret};
use milink_core::error::EngineError;
use std::sync::Arc;
use std::time::Duration;

/// The Entra scope of Azure SQL (TDS with a token).
pub const SQL_SCOPE: &str = "https://database.windows.net/.default";

/// Looks an environment variable up (injected so tests control the environment).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The source side, ready to use.
#[derive(Clone)]
pub struct Source {
    /// Opens sessions to SQL Server.
    pub connector: Arc<dyn SqlConnector>,
    /// Its options.
    pub options: SourceOptions,
    /// Its URL.
    pub url: SqlUrl,
    /// Host the managed instance reaches SQL Server's mirroring endpoint at.
    pub replication_host: String,
    /// Port of that endpoint when configured (otherwise the existing endpoint's or `endpoint_port`).
    pub replication_port: Option<u16>,
}

/// The target side, ready to use.
#[derive(Clone)]
pub struct Target {
    /// The managed instance's ARM API.
    pub api: Arc<dyn ManagedInstanceApi>,
    /// Its options.
    pub options: TargetOptions,
    /// Its resource id.
    pub instance: InstanceId,
    /// Sessions to the MI's TDS endpoint, when configured.
    pub sql: Option<Arc<dyn SqlConnector>>,
}

/// Builds sources and targets from endpoints.
pub trait Connections: Send + Sync {
    /// The source.
    fn source(&self, endpoint: &Endpoint) -> Result<Source, EngineError>;
    /// The target.
    fn target(&self, endpoint: &Endpoint) -> Result<Target, EngineError>;
}

/// Real connections: tiberius and ARM over reqwest with `azure_identity`.
pub struct LiveConnections {
    http: reqwest::Client,
    env: EnvLookup,
}

impl Default for LiveConnections {
    fn default() -> Self {
        Self::new(Arc::new(|name: &str| std::env::var(name).ok()))
    }
}

impl LiveConnections {
    /// With an environment lookup (secrets named by `*_env` options).
    pub fn new(env: EnvLookup) -> Self {
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(20)).timeout(Duration::from_secs(120)).build().unwrap_or_default();
        Self { http, env }
    }

    fn credential_kind(&self, name: &str, options: &TargetOptions) -> Result<CredentialKind, EngineError> {
        let missing = |what: &str| errors::config("invalid_options", format!("credential = \"client_secret\" needs {what}"), "set tenant_id, client_id and client_secret_env or client_secret_file in the target's [options]");
        Ok(match name {
            "default" => CredentialKind::Default,
            "managed_identity" => CredentialKind::ManagedIdentity { client_id: options.managed_identity_client_id.clone() },
            "workload_identity" => CredentialKind::WorkloadIdentity,
            "azure_cli" => CredentialKind::AzureCli,
            "client_secret" => {
                let secret = match (&options.client_secret_env, &options.client_secret_file) {
                    (Some(var), _) => (self.env)(var).ok_or_else(|| missing(&format!("the environment variable {var}")))?,
                    (None, Some(file)) => std::fs::read_to_string(file).map_err(|e| missing(&format!("a readable client_secret_file ({e})")))?.trim_end().to_owned(),
                    (None, None) => return Err(missing("client_secret_env or client_secret_file")),
                };
                CredentialKind::ClientSecret {
                    tenant_id: options.tenant_id.clone().ok_or_else(|| missing("tenant_id"))?,
                    client_id: options.client_id.clone().ok_or_else(|| missing("client_id"))?,
                    secret: Secret::new(secret),
                }
            }
            other => {
                return Err(errors::config(
                    "invalid_options",
                    format!("unknown credential {other:?}"),
                    "use default, managed_identity, workload_identity, azure_cli or client_secret",
                ))
            }
        })
    }

    fn tokens(&self, kind_name: &str, options: &TargetOptions, scope: String) -> Result<Arc<dyn TokenSource>, EngineError> {
        let kind = self.credential_kind(kind_name, options)?;
        let env = self.env.clone();
        let credential = credential(&kind, self.http.clone(), options.authority_host.as_deref(), &move |name| env(name))?;
        Ok(Arc::new(AzureTokens::new(credential, scope)))
    }
}

fn auth_for(auth: &str, user: Option<String>, password: Option<&Secret>, entra: impl FnOnce() -> Result<Arc<dyn TokenSource>, EngineError>) -> Result<SqlAuth, EngineError> {
    let needs = |what: &str| errors::config("invalid_options", format!("authentication {auth:?} needs {what}"), "set it in the connection (password_env / password_file for secrets)");
    match auth {
        "sql" => Ok(SqlAuth::Sql { user: user.ok_or_else(|| needs("a login in the url (sqlserver://login@host)"))?, password: password.cloned().ok_or_else(|| needs("a password"))? }),
        "entra_token" => Ok(SqlAuth::EntraToken(password.cloned().ok_or_else(|| needs("the token in password_env or password_file"))?)),
        "entra" => Ok(SqlAuth::Entra(entra()?)),
        other => Err(errors::config("invalid_options", format!("unknown auth {other:?}"), "use sql, entra_token or entra")),
    }
}

impl Connections for LiveConnections {
    fn source(&self, endpoint: &Endpoint) -> Result<Source, EngineError> {
        build_source(endpoint, |options| {
            let target_like = TargetOptions::default();
            self.tokens(&options.credential, &target_like, SQL_SCOPE.to_owned())
        })
        .map(|(source, connection)| Source { connector: Arc::new(TdsConnector::new(connection)), ..source })
    }

    fn target(&self, endpoint: &Endpoint) -> Result<Target, EngineError> {
        let options: TargetOptions = read_options(endpoint)?;
        let instance = instance_id(endpoint, &options)?;
        let base = options.arm_base_url.trim_end_matches('/').to_owned();
        let scope = options.arm_scope.clone().unwrap_or_else(|| format!("{base}/.default"));
        let mut client = ArmClient::new(self.http.clone(), &base, self.tokens(&options.credential, &options, scope)?);
        client.polling = Polling { timeout: Duration::from_secs(options.operation_timeout_seconds), ..Polling::default() };
        let sql = match &options.tds_endpoint {
            None => None,
            Some(address) => {
                let (host, port) = parse_host_port(address, 1433).map_err(|e| errors::config("invalid_options", format!("tds_endpoint: {e}"), "use host:port of the MI's VNet-local endpoint"))?;
                let auth = auth_for(&options.tds_auth, options.tds_user.clone(), endpoint.password.as_ref(), || self.tokens(&options.credential, &options, SQL_SCOPE.to_owned()))?;
                crate::options::check_tls_options(endpoint.name.as_str(), "tds_", options.tds_trust_server_certificate, options.tds_ca_certificate.as_ref())?;
                let connection = SqlConnection { host, port, database: "master".into(), auth, encrypt: true, trust_server_certificate: options.tds_trust_server_certificate, ca_certificate: options.tds_ca_certificate.clone() };
                Some(Arc::new(TdsConnector::new(connection)) as Arc<dyn SqlConnector>)
            }
        };
        Ok(Target { api: Arc::new(ManagedInstanceArm::new(client, instance.clone())), options, instance, sql })
    }
}

/// The resource id from `options.resource_id` or the url.
pub fn instance_id(endpoint: &Endpoint, options: &TargetOptions) -> Result<InstanceId, EngineError> {
    let id = options.resource_id.as_deref().unwrap_or(&endpoint.url);
    InstanceId::parse(id).map_err(|e| errors::config("invalid_resource_id", format!("connection {}: {e}", endpoint.name), "set url (or options.resource_id) to the managed instance's resource id"))
}

/// Parses a source endpoint; the connector is filled by the caller (so tests can script it).
pub fn build_source(
    endpoint: &Endpoint,
    entra: impl FnOnce(&SourceOptions) -> Result<Arc<dyn TokenSource>, EngineError>,
) -> Result<(Source, SqlConnection), EngineError> {
    let options: SourceOptions = read_options(endpoint)?;
    crate::options::check_tls_options(endpoint.name.as_str(), "", options.trust_server_certificate, options.ca_certificate.as_ref())?;
    let url = parse_sql_url(&endpoint.url).map_err(|e| errors::config("invalid_url", format!("connection {}: {e}", endpoint.name), "use sqlserver://login@host:port/database"))?;
    let (replication_host, replication_port) = match &endpoint.replication_url {
        Some(replication) => {
            let (host, port) = parse_host_port(replication, options.endpoint_port)
                .map_err(|e| errors::config("invalid_url", format!("connection {}: replication_url: {e}", endpoint.name), "use tcp://<IP or name the MI resolves>:5022"))?;
            (host, Some(port))
        }
        None => (url.host.clone(), None),
    };
    let auth = auth_for(&options.auth, url.user.clone(), endpoint.password.as_ref(), || entra(&options))?;
    let connection = SqlConnection {
        host: url.host.clone(),
        port: url.port,
        database: "master".into(),
        auth,
        encrypt: options.encrypt,
        trust_server_certificate: options.trust_server_certificate,
        ca_certificate: options.ca_certificate.clone(),
    };
    let placeholder: Arc<dyn SqlConnector> = Arc::new(TdsConnector::new(connection.clone()));
    Ok((Source { connector: placeholder, options, url, replication_host, replication_port }, connection))
}
