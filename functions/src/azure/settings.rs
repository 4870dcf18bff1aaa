//! App settings → a running [`AzureHost`].
//!
//! Everything comes from the environment, which in Azure is the Function App's app settings (Key Vault
//! references already resolved by the platform):
//!
//! | setting | meaning |
//! |---|---|
//! | `MILINK_CONFIG` | `milink.toml` (connections, `[server]` attempts and backoff, `[notify]`); default `milink.toml` in the app root; optional |
//! | `MILINK_TABLE_ENDPOINT`, `MILINK_STORAGE_ACCOUNT` | Table Storage endpoint and account |
//! | `MILINK_STORAGE_KEY` | account key; when absent, the managed identity is used |
//! | `MILINK_TABLE_PREFIX` | table-name prefix (default `milink`) |
//! | `MILINK_SERVICEBUS_URL` | `https://<namespace>.servicebus.windows.net` |
//! | `MILINK_SERVICEBUS_KEY_NAME`, `MILINK_SERVICEBUS_KEY` | SAS policy; when absent, the managed identity is used |
//! | `AZURE_CLIENT_ID` | client id of the user-assigned managed identity |
//! | `MILINK_POLL_PER_SOURCE`, `MILINK_POLL_CONCURRENCY`, `MILINK_POLL_BUDGET_SECONDS` | poll limits |
//! | `MILINK_RELAY_AGE_SECONDS` | how old an outbox row must be before the relay sends it (default 30) |
//!
//! Connections come from `milink.toml` and from the Connections table (rows added by operators); both are
//! parsed by the core's config parser, so a table row is validated exactly like a line in the file, and
//! its password is the app setting it names.
use super::catalog::QUEUE_PREFIX;
use super::{AzureHost, HostSettings, PollSettings};
use crate::context::Context;
use crate::engines::Engines;
use milink_azure::auth::{self, BusAuth, StorageAuth};
use milink_azure::{ServiceBusConfig, ServiceBusSender, TableStore, TableStoreConfig};
use milink_core::config::{Config, Secret};
use milink_core::ports::Clock;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Settings read from the environment.
#[derive(Debug, Clone)]
pub struct AzureSettings {
    /// Table Storage.
    pub table: TableStoreConfig,
    /// Service Bus.
    pub bus: ServiceBusConfig,
    /// `milink.toml`, if any.
    pub config_path: PathBuf,
    /// Adapter knobs.
    pub host: HostSettings,
}

impl AzureSettings {
    /// Reads the settings; `env` looks variables up (the process environment in the binary).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>, http: &reqwest::Client) -> Result<Self, String> {
        let required = |name: &str| env(name).filter(|v| !v.is_empty()).ok_or_else(|| format!("app setting {name} is not set"));
        let number = |name: &str, default: u64| -> Result<u64, String> {
            env(name).map_or(Ok(default), |v| v.parse().map_err(|_| format!("app setting {name} must be a whole number, not {v:?}")))
        };
        let client_id = env("AZURE_CLIENT_ID").filter(|v| !v.is_empty());
        let identity = || auth::managed_identity(client_id.as_deref(), http.clone()).map_err(|e| e.to_string());
        let account = required("MILINK_STORAGE_ACCOUNT")?;
        let storage_auth = match env("MILINK_STORAGE_KEY").filter(|v| !v.is_empty()) {
            Some(key) => StorageAuth::SharedKey { account: account.clone(), key: Secret::new(key) },
            None => StorageAuth::Token(identity()?),
        };
        let bus_auth = match (env("MILINK_SERVICEBUS_KEY_NAME"), env("MILINK_SERVICEBUS_KEY")) {
            (Some(key_name), Some(key)) if !key.is_empty() => BusAuth::Sas { key_name, key: Secret::new(key) },
            _ => BusAuth::Token(identity()?),
        };
        let table = TableStoreConfig {
            endpoint: required("MILINK_TABLE_ENDPOINT")?,
            account,
            auth: storage_auth,
            table_prefix: env("MILINK_TABLE_PREFIX").unwrap_or_else(|| "milink".into()),
        };
        table.validate()?;
        let bus = ServiceBusConfig {
            namespace_url: required("MILINK_SERVICEBUS_URL")?,
            auth: bus_auth,
            queue_prefix: env("MILINK_QUEUE_PREFIX").unwrap_or_else(|| QUEUE_PREFIX.into()),
        };
        bus.validate()?;
        let root = env("FUNCTIONS_APP_ROOT_PATH").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        let config_path = env("MILINK_CONFIG").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("milink.toml"));
        let config_path = if config_path.is_relative() { root.join(config_path) } else { config_path };
        let defaults = PollSettings::default();
        let host = HostSettings {
            poll: PollSettings {
                per_source: number("MILINK_POLL_PER_SOURCE", defaults.per_source as u64)? as usize,
                total: number("MILINK_POLL_CONCURRENCY", defaults.total as u64)? as usize,
                budget: Duration::from_secs(number("MILINK_POLL_BUDGET_SECONDS", defaults.budget.as_secs())?),
            },
            relay_age: Duration::from_secs(number("MILINK_RELAY_AGE_SECONDS", 30)?),
        };
        Ok(Self { table, bus, config_path, host })
    }
}

/// The config: `milink.toml` when present, plus every connection registered in the Connections table that
/// the file does not define.
pub async fn load_config(path: &std::path::Path, store: &TableStore, env: &(dyn Fn(&str) -> Option<String> + Sync)) -> Result<Config, String> {
    let mut text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    let from_file = Config::parse(&text, path.parent().unwrap_or(std::path::Path::new(".")), env)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let records = store.list_connections().await.map_err(|e| format!("Connections table: {e}"))?;
    for record in records {
        let known = milink_core::names::ConnectionName::parse(&record.name).is_ok_and(|n| from_file.connections.contains_key(&n));
        if !known {
            text.push('\n');
            text.push_str(&record.to_toml());
        }
    }
    Config::parse(&text, path.parent().unwrap_or(std::path::Path::new(".")), env).map_err(|e| format!("connections: {e}"))
}

/// Connects to Table Storage and Service Bus and assembles the host.
pub async fn connect(
    settings: AzureSettings,
    engines: Engines,
    clock: Arc<dyn Clock>,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    http: reqwest::Client,
) -> Result<AzureHost, String> {
    let sender = Arc::new(ServiceBusSender::new(settings.bus, http.clone())?);
    let store = TableStore::connect(settings.table, http).await.map_err(|e| format!("Table Storage: {e}"))?;
    let store = Arc::new(store.with_publisher(sender.clone()));
    let config = load_config(&settings.config_path, &store, env).await?;
    let ctx = Context::new(config, store.clone(), engines, clock);
    Ok(AzureHost::new(ctx, store, sender, settings.host))
}
