//! `TableStore`: milink's state in Azure Table Storage, behind the same ports as the SQLite store.
//!
//! Layout (every table name starts with a configurable prefix, `milink` by default):
//!
//! | table | partition | rows |
//! |---|---|---|
//! | `…Migrations` | one per migration (its id) | `state` (the whole migration as JSON, plus columns for lists), `outbox:<message id>` (messages not yet on the bus) |
//! | `…Migrations` | `link:<sha256 of source, target, database>` | `claim`: which migration holds that database on that link |
//! | `…Assessments` | one per assessment (its id) | `report`, `outbox:<message id>` |
//! | `…Connections` | `connection` | one row per connection: non-secret metadata only |
//! | `…DeadLetters` | `deadletter` | messages whose retries ran out |
//!
//! Why it is shaped so:
//! - **Partition = migration**, so a state change and the messages it emits are written by one entity-group
//!   transaction (all or nothing), which is what makes the outbox safe. A batch holds at most 100
//!   operations, so a save carries at most 99 messages; [`crate::table::batch`] refuses more before sending.
//! - **Optimistic concurrency by ETag.** A save replaces the `state` row with `If-Match` the ETag it was
//!   loaded with; a 412 becomes [`StoreError::Conflict`], and the caller re-reads and re-decides. The ETag
//!   of the last version this process saw is remembered per migration, so a load-then-save costs two
//!   requests, not three; when the remembered version is not the one being saved, the row is read first.
//! - **One live migration per (source, target, database)** without a unique index: a claim row in a
//!   partition named by the triple. The claim is written first and carries the new migration and its first
//!   messages, so a creator that dies between claim and state leaves enough behind for the next caller to
//!   finish the creation instead of making a second migration.
//! - **Outbox rows are deleted once sent.** After a commit, the store hands the messages to its
//!   [`Publisher`] (Service Bus) and deletes their rows; a crash in between leaves rows that
//!   [`TableStore::pending_outbox`] finds and the relay timer sends. Message ids are deterministic, so a
//!   message sent twice is dropped by Service Bus duplicate detection.
//! - **Large state** (a long history) is split over several string properties (each at most 32 K UTF-16
//!   units), so the 64 KiB property limit never truncates a migration; the 1 MiB entity limit is checked.
mod assessments;
mod extras;
mod migrations;
mod outbox;

use crate::auth::StorageAuth;
use crate::table::{Entity, TableClient, TableError};
use async_trait::async_trait;
use milink_core::message::Envelope;
use milink_core::ports::StoreError;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use extras::{ConnectionRecord, DeadLetterRecord};
pub use outbox::OutboxEntry;

/// Where the store lives and how it signs in.
#[derive(Debug, Clone)]
pub struct TableStoreConfig {
    /// `https://<account>.table.core.windows.net`, or Azurite's `http://127.0.0.1:10002/devstoreaccount1`.
    pub endpoint: String,
    /// The storage account's name.
    pub account: String,
    /// Shared key (Azurite, development) or Entra token (managed identity).
    pub auth: StorageAuth,
    /// Prefix of every table name (letters and digits, starting with a letter).
    pub table_prefix: String,
}

impl TableStoreConfig {
    /// Checks what can be checked without the network.
    pub fn validate(&self) -> Result<(), String> {
        let prefix = &self.table_prefix;
        let valid = prefix.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && prefix.chars().all(|c| c.is_ascii_alphanumeric())
            && prefix.len() <= 40;
        if !valid {
            return Err(format!(
                "table prefix {prefix:?} must be 1-40 letters and digits starting with a letter (Table Storage table names)"
            ));
        }
        if !(self.endpoint.starts_with("https://") || self.endpoint.starts_with("http://")) {
            return Err(format!("table endpoint {:?} must be an http(s) URL", self.endpoint));
        }
        if self.account.is_empty() {
            return Err("the storage account name is empty".into());
        }
        Ok(())
    }
}

/// Sends committed outbox messages to the bus.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Sends every envelope; an error means some may not have been sent (they stay in the outbox).
    async fn publish(&self, envelopes: &[Envelope]) -> Result<(), String>;
}

/// Migrations, assessments, outbox, connections and dead letters in Table Storage.
#[derive(Clone)]
pub struct TableStore {
    client: TableClient,
    tables: Tables,
    etags: Arc<Mutex<HashMap<String, (u64, String)>>>,
    publisher: Option<Arc<dyn Publisher>>,
    counters: Arc<Counters>,
}

#[derive(Debug, Clone)]
pub(crate) struct Tables {
    pub(crate) migrations: String,
    pub(crate) assessments: String,
    pub(crate) connections: String,
    pub(crate) dead_letters: String,
}

/// Requests made to Table Storage, by kind (for benchmarks and the operations figures).
#[derive(Debug, Default)]
pub struct Counters {
    /// Point reads.
    pub reads: std::sync::atomic::AtomicU64,
    /// Single-entity writes (insert, replace, delete).
    pub writes: std::sync::atomic::AtomicU64,
    /// Entity-group transactions.
    pub batches: std::sync::atomic::AtomicU64,
    /// Queries (each page counted once per call).
    pub queries: std::sync::atomic::AtomicU64,
}

impl Counters {
    pub(crate) fn read(&self) {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    pub(crate) fn write(&self) {
        self.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    pub(crate) fn batch(&self) {
        self.batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    pub(crate) fn query(&self) {
        self.queries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    /// (reads, writes, batches, queries) so far.
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.reads.load(Relaxed), self.writes.load(Relaxed), self.batches.load(Relaxed), self.queries.load(Relaxed))
    }
}

impl TableStore {
    /// Connects and creates the tables that are missing.
    pub async fn connect(config: TableStoreConfig, http: reqwest::Client) -> Result<Self, StoreError> {
        config.validate().map_err(StoreError::Backend)?;
        let client = TableClient::new(&config.endpoint, &config.account, config.auth, http).map_err(backend)?;
        let prefix = &config.table_prefix;
        let tables = Tables {
            migrations: format!("{prefix}Migrations"),
            assessments: format!("{prefix}Assessments"),
            connections: format!("{prefix}Connections"),
            dead_letters: format!("{prefix}DeadLetters"),
        };
        for table in [&tables.migrations, &tables.assessments, &tables.connections, &tables.dead_letters] {
            client.create_table_if_missing(table).await.map_err(backend)?;
        }
        Ok(Self { client, tables, etags: Arc::default(), publisher: None, counters: Arc::default() })
    }

    /// Sends messages right after each commit through `publisher` (the relay sends what this misses).
    pub fn with_publisher(mut self, publisher: Arc<dyn Publisher>) -> Self {
        self.publisher = Some(publisher);
        self
    }

    /// Requests made so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Reachable and authorized: reads a row that need not exist.
    pub async fn health(&self) -> Result<(), StoreError> {
        self.client.get(&self.tables.migrations, "health", "health").await.map(drop).map_err(backend)
    }

    pub(crate) fn remember(&self, id: &str, version: u64, etag: String) {
        if let Ok(mut etags) = self.etags.lock() {
            etags.insert(id.to_owned(), (version, etag));
        }
    }

    pub(crate) fn remembered(&self, id: &str, version: u64) -> Option<String> {
        let etags = self.etags.lock().ok()?;
        etags.get(id).filter(|(v, _)| *v == version).map(|(_, etag)| etag.clone())
    }

    pub(crate) fn forget(&self, id: &str) {
        if let Ok(mut etags) = self.etags.lock() {
            etags.remove(id);
        }
    }
}

pub(crate) fn backend(error: TableError) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// Escapes the characters Table Storage forbids in keys (`/ \ # ?`, control characters) and `%` itself.
pub(crate) fn key(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '/' | '\\' | '#' | '?' | '%') || c.is_control() {
            let mut buffer = [0u8; 4];
            for byte in c.encode_utf8(&mut buffer).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Most UTF-16 units in one string property (the service allows 32 K).
const CHUNK_UNITS: usize = 30_000;
/// What the JSON properties of one entity may take of the service's 1 MiB per entity, leaving room for the
/// entity's other properties (keys, timestamps, counters: a few hundred bytes) and their names.
const MAX_JSON_ENTITY_BYTES: usize = 1024 * 1024 - 16 * 1024;

/// What Table Storage counts for one string property: 2 bytes per UTF-16 unit of the value plus 4, and
/// 8 plus 2 per UTF-16 unit of the name. The service stores strings as UTF-16, so UTF-8 lengths undercount
/// anything but a wholly non-ASCII text: 600 K ASCII characters are 600 KB of UTF-8 and 1.2 MB to the service.
fn property_bytes(name: &str, value: &str) -> usize {
    8 + 2 * name.encode_utf16().count() + 4 + 2 * value.encode_utf16().count()
}

/// Stores `json` in `name`, `name1`, `name2`… with `nameParts` saying how many.
pub(crate) fn put_json(entity: &mut Entity, name: &str, json: &str) -> Result<(), StoreError> {
    let mut parts = Vec::new();
    let (mut current, mut units) = (String::new(), 0);
    for c in json.chars() {
        if units + c.len_utf16() > CHUNK_UNITS {
            parts.push(std::mem::take(&mut current));
            units = 0;
        }
        units += c.len_utf16();
        current.push(c);
    }
    parts.push(current);
    let bytes: usize = parts
        .iter()
        .enumerate()
        .map(|(index, part)| property_bytes(&if index == 0 { name.to_owned() } else { format!("{name}{index}") }, part))
        .sum();
    if bytes > MAX_JSON_ENTITY_BYTES {
        return Err(StoreError::Backend(format!(
            "{name} takes {bytes} bytes as Table Storage counts them (UTF-16), above what one entity holds ({MAX_JSON_ENTITY_BYTES})"
        )));
    }
    for (index, part) in parts.iter().enumerate() {
        let property = if index == 0 { name.to_owned() } else { format!("{name}{index}") };
        entity.insert(property, Value::String(part.clone()));
    }
    entity.insert(format!("{name}Parts"), Value::from(parts.len() as i64));
    Ok(())
}

/// Reads what [`put_json`] stored and parses it.
pub(crate) fn get_json<T: serde::de::DeserializeOwned>(entity: &Entity, name: &str) -> Result<T, StoreError> {
    let parts = entity.get(&format!("{name}Parts")).and_then(Value::as_i64).unwrap_or(1).max(1) as usize;
    let mut json = String::new();
    for index in 0..parts {
        let property = if index == 0 { name.to_owned() } else { format!("{name}{index}") };
        let part = entity
            .get(&property)
            .and_then(Value::as_str)
            .ok_or_else(|| StoreError::Backend(format!("stored entity lacks {property}")))?;
        json.push_str(part);
    }
    serde_json::from_str(&json).map_err(|e| StoreError::Backend(format!("stored {name} does not parse: {e}")))
}

pub(crate) fn text(entity: &Entity, name: &str) -> Option<String> {
    entity.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// A new entity with its keys.
pub(crate) fn entity(partition: &str, row: &str) -> Entity {
    let mut entity = Entity::new();
    entity.insert("PartitionKey".into(), Value::String(partition.to_owned()));
    entity.insert("RowKey".into(), Value::String(row.to_owned()));
    entity
}

/// Timestamps as fixed-width UTC text, so they sort as text.
pub(crate) fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15, Azure item 3: the old guard counted UTF-8 bytes against 900 KiB, so 600 K ASCII characters
    /// (1.2 MB as the service counts them) passed it and failed at the service with EntityTooLarge.
    #[test]
    fn the_entity_size_guard_counts_strings_as_the_service_does() {
        let mut entity = Entity::new();
        let ascii = format!("\"{}\"", "a".repeat(600_000));
        let error = put_json(&mut entity, "Report", &ascii).expect_err("1.2 MB as UTF-16 does not fit an entity");
        assert!(error.to_string().contains("UTF-16"), "{error}");
        let fits = format!("\"{}\"", "a".repeat(400_000));
        put_json(&mut entity, "Report", &fits).expect("800 KB as UTF-16 fits");
        assert_eq!(get_json::<String>(&entity, "Report").unwrap().len(), 400_000);
    }

    #[test]
    fn keys_escape_what_table_storage_forbids_and_stay_readable() {
        assert_eq!(key("Toy/Store#1?\\%"), "Toy%2FStore%231%3F%5C%25");
        assert_eq!(key("Tøy商店 'x'"), "Tøy商店 'x'");
        assert_ne!(key("a/b"), key("a%2Fb"), "escaping is injective");
    }

    #[test]
    fn long_json_is_split_and_joined_without_loss() {
        let value = serde_json::json!({ "history": "é".repeat(70_000) + &"商".repeat(40_000) });
        let json = serde_json::to_string(&value).unwrap();
        let mut e = entity("p", "r");
        put_json(&mut e, "State", &json).unwrap();
        assert!(e["StateParts"].as_i64().unwrap() >= 4);
        for (name, v) in &e {
            if let Some(s) = v.as_str() {
                assert!(s.encode_utf16().count() <= CHUNK_UNITS, "{name} too long");
            }
        }
        let back: Value = get_json(&e, "State").unwrap();
        assert_eq!(back, value);
        assert!(put_json(&mut e, "State", &"x".repeat(MAX_JSON_ENTITY_BYTES / 2 + 1)).is_err());
    }
}
