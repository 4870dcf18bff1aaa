//! Connections' non-secret metadata and dead letters: the two things a fleet operator reads and writes
//! outside the flow.
//!
//! A connection row holds what `milink.toml` would (engine, URL, replication URL, options) and the *name*
//! of the app setting that holds the password, never the password: in Azure that app setting is a Key
//! Vault reference (`@Microsoft.KeyVault(SecretUri=…)`), resolved by the platform into the process's
//! environment. So registering a thousand servers is a thousand rows, not a thousand redeployments.
use super::{backend, entity, text, timestamp, TableStore};
use crate::table::{get_i64, put_i64};
use milink_core::ports::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const CONNECTION: &str = "connection";
const DEAD_LETTER: &str = "deadletter";

/// A connection as registered in the Connections table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRecord {
    /// The connection's name (row key).
    pub name: String,
    /// `postgres`, `sqlserver`, `azure-sql-mi`.
    pub engine: String,
    /// URL without a password.
    pub url: String,
    /// The URL the target uses to reach the source, when it differs.
    pub replication_url: Option<String>,
    /// The app setting (environment variable) holding the password.
    pub password_setting: Option<String>,
    /// Engine options, as strings.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl ConnectionRecord {
    /// The record as a `milink.toml` section, so the core's config parser validates it exactly like a
    /// connection written in the file (a password in the URL is refused there, with the fix).
    pub fn to_toml(&self) -> String {
        let quote = |s: &str| serde_json::to_string(s).expect("a string serializes");
        let mut out = format!("[connections.{}]\nengine = {}\nurl = {}\n", quote(&self.name), quote(&self.engine), quote(&self.url));
        if let Some(url) = &self.replication_url {
            out.push_str(&format!("replication_url = {}\n", quote(url)));
        }
        if let Some(setting) = &self.password_setting {
            out.push_str(&format!("password_env = {}\n", quote(setting)));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("[connections.{}.options]\n", quote(&self.name)));
            for (name, value) in &self.options {
                out.push_str(&format!("{} = {}\n", quote(name), quote(value)));
            }
        }
        out
    }
}

/// A message whose retries ran out (the core's type; kept under this name for callers).
pub type DeadLetterRecord = milink_core::ports::DeadLetter;

impl TableStore {
    /// Registers or replaces a connection.
    pub async fn put_connection(&self, record: &ConnectionRecord) -> Result<(), StoreError> {
        let mut row = entity(CONNECTION, &super::key(&record.name));
        let json = serde_json::to_string(record).map_err(|e| StoreError::Backend(e.to_string()))?;
        row.insert("Record".into(), json.into());
        self.counters.write();
        self.client.replace(&self.tables.connections, &row, None).await.map(drop).map_err(backend)
    }

    /// Every registered connection.
    pub async fn list_connections(&self) -> Result<Vec<ConnectionRecord>, StoreError> {
        self.counters.query();
        let rows = self.client.query(&self.tables.connections, &format!("PartitionKey eq '{CONNECTION}'"), None).await.map_err(backend)?;
        rows.iter()
            .map(|row| {
                let json = text(row, "Record").unwrap_or_default();
                serde_json::from_str(&json).map_err(|e| StoreError::Backend(format!("connection row does not parse: {e}")))
            })
            .collect()
    }

    /// Records a dead letter (newest first in [`TableStore::dead_letters`]).
    pub async fn put_dead_letter(&self, record: &DeadLetterRecord) -> Result<(), StoreError> {
        // Newest first: row keys sort ascending, so use the time left until the year 9999.
        let inverted = i64::MAX - record.dead_at.timestamp_micros();
        let mut row = entity(DEAD_LETTER, &format!("{inverted:020}:{}", super::key(&record.id)));
        let json = serde_json::to_string(record).map_err(|e| StoreError::Backend(e.to_string()))?;
        row.insert("Record".into(), json.into());
        row.insert("DeadAt".into(), timestamp(record.dead_at).into());
        put_i64(&mut row, "Deliveries", record.deliveries as i64);
        self.counters.write();
        self.client.replace(&self.tables.dead_letters, &row, None).await.map(drop).map_err(backend)
    }

    /// Dead letters, newest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetterRecord>, StoreError> {
        self.counters.query();
        let rows = self.client.query(&self.tables.dead_letters, &format!("PartitionKey eq '{DEAD_LETTER}'"), None).await.map_err(backend)?;
        rows.iter()
            .filter(|row| get_i64(row, "Deliveries").is_some())
            .map(|row| {
                serde_json::from_str(&text(row, "Record").unwrap_or_default())
                    .map_err(|e| StoreError::Backend(format!("dead-letter row does not parse: {e}")))
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl milink_core::ports::DeadLetters for TableStore {
    async fn dead_letters(&self) -> Result<Vec<DeadLetterRecord>, StoreError> {
        TableStore::dead_letters(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_connection_becomes_a_config_section_with_the_password_by_reference() {
        let record = ConnectionRecord {
            name: "pg-eu-01".into(),
            engine: "postgres".into(),
            url: "postgresql://milink@pg-eu-01:5432/postgres".into(),
            replication_url: None,
            password_setting: Some("PG_EU_01_PASSWORD".into()),
            options: BTreeMap::from([("sslmode".into(), "require \"x\"".into())]),
        };
        let text = record.to_toml();
        let config = milink_core::config::Config::parse(&text, std::path::Path::new("/"), &|name| {
            (name == "PG_EU_01_PASSWORD").then(|| "from-key-vault".to_owned())
        })
        .unwrap();
        let endpoint = config.connections.values().next().unwrap();
        assert_eq!(endpoint.password.as_ref().unwrap().expose(), "from-key-vault");
        assert_eq!(endpoint.options["sslmode"].as_str(), Some("require \"x\""));
    }
}
