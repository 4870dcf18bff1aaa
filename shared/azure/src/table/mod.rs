//! A thin Table Storage REST client: exactly the operations the store needs, nothing else.
//!
//! # Why a REST client and not `azure_data_tables`
//!
//! We tried `azure_data_tables` 0.21 (the only Rust Table crate; "legacy", no planned updates) against Azurite
//! 3.35 before deciding, with a probe that writes a state row and an outbox row in one batch:
//!
//! ```text
//! batch(right etag): ops [NoContent, Created]
//! batch(stale etag): Ok! ops [PreconditionFailed]     <- the crate reports success
//! batch(two partitions): Ok ops [Created, Created]    <- neither crate nor Azurite refuses
//! ```
//!
//! So it does batches and `If-Match` against Azurite, and Azurite rolls the failed batch back, but the crate
//! returns `Ok` for a batch whose changeset failed with 412 (the status is only inside
//! `operation_responses`), does not refuse a batch spanning partitions or above 100 operations, and is built
//! on `azure_core` 0.21 while the workspace uses `azure_core` 1.x (a second HTTP and credential stack, and no
//! way to use the 1.x managed-identity credential). Each of those we would have to wrap anyway. The REST
//! surface we need is small (create table, point get, insert, conditional replace, delete, filtered query
//! with continuation, `$batch`), so we speak it directly: batch outcomes become typed results (a 412 is
//! [`TableError::PreconditionFailed`] with the failing operation's index), and the entity-group rules
//! (one partition, at most 100 operations, at most 4 MiB) are enforced in [`batch`] before anything is sent.
//!
//! Entities travel as JSON with `odata=nometadata`; 64-bit integers carry their `Edm.Int64` annotation.
pub mod batch;

use crate::auth::{self, StorageAuth};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value};

pub use batch::{Batch, BatchOp};

/// The REST API version we speak (the first that accepts Entra tokens for tables).
pub const API_VERSION: &str = "2019-02-02";
const JSON: &str = "application/json";
const ACCEPT_JSON: &str = "application/json;odata=nometadata";

/// An entity: its properties, `PartitionKey` and `RowKey` included.
pub type Entity = Map<String, Value>;

/// A failed Table operation, classified.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// `If-Match` did not match (412): someone else wrote first.
    #[error("precondition failed (operation {index:?})")]
    PreconditionFailed {
        /// The failing operation in a batch.
        index: Option<usize>,
    },
    /// The entity already exists (409 on insert).
    #[error("entity already exists (operation {index:?})")]
    AlreadyExists {
        /// The failing operation in a batch.
        index: Option<usize>,
    },
    /// Not found (404).
    #[error("not found")]
    NotFound,
    /// The request broke a rule we enforce before sending (batch size, partitions, entity size).
    #[error("{0}")]
    Invalid(String),
    /// Anything else: status, service code and message.
    #[error("table service: HTTP {status} {code}: {message}")]
    Service {
        /// HTTP status.
        status: u16,
        /// The service's error code.
        code: String,
        /// The service's message.
        message: String,
    },
    /// Network, auth, or an unreadable response.
    #[error("table service unreachable: {0}")]
    Transport(String),
}

/// One stored entity with its ETag.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The properties.
    pub entity: Entity,
    /// The ETag, for `If-Match`.
    pub etag: String,
}

/// A client for the tables of one account.
#[derive(Clone, Debug)]
pub struct TableClient {
    /// `https://<account>.table.core.windows.net` or `http://127.0.0.1:10002/devstoreaccount1`.
    endpoint: Url,
    account: String,
    auth: StorageAuth,
    http: reqwest::Client,
}

/// Quotes a key for an OData key predicate: single quotes doubled, then percent-encoded.
fn key_literal(key: &str) -> String {
    auth::encode_component(&key.replace('\'', "''"))
}

impl TableClient {
    /// A client for `endpoint` (no trailing slash needed). `account` is the storage account's name.
    pub fn new(endpoint: &str, account: &str, auth: StorageAuth, http: reqwest::Client) -> Result<Self, TableError> {
        let mut text = endpoint.trim_end_matches('/').to_owned();
        text.push('/');
        let endpoint = Url::parse(&text).map_err(|e| TableError::Invalid(format!("table endpoint {endpoint:?}: {e}")))?;
        Ok(Self { endpoint, account: account.to_owned(), auth, http })
    }

    /// The account name.
    pub fn account(&self) -> &str {
        &self.account
    }

    pub(crate) fn url(&self, path: &str) -> Result<Url, TableError> {
        self.endpoint.join(path).map_err(|e| TableError::Invalid(format!("bad table URL {path}: {e}")))
    }

    pub(crate) fn entity_url(&self, table: &str, partition: &str, row: &str) -> Result<Url, TableError> {
        self.url(&format!("{table}(PartitionKey='{}',RowKey='{}')", key_literal(partition), key_literal(row)))
    }

    /// Sends one signed request.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        content_type: Option<&str>,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, TableError> {
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let authorization = match &self.auth {
            StorageAuth::SharedKey { account, key } => {
                let string_to_sign = auth::table_string_to_sign(method.as_str(), content_type.unwrap_or(""), &date, account, &url);
                auth::table_shared_key(account, key, &string_to_sign).map_err(|e| TableError::Transport(e.to_string()))?
            }
            StorageAuth::Token(credential) => auth::bearer(credential.as_ref(), auth::STORAGE_SCOPE)
                .await
                .map_err(|e| TableError::Transport(e.to_string()))?,
        };
        let mut request = self
            .http
            .request(method, url)
            .header("x-ms-date", &date)
            .header("x-ms-version", API_VERSION)
            .header("Accept", ACCEPT_JSON)
            .header("DataServiceVersion", "3.0;NetFx")
            .header("MaxDataServiceVersion", "3.0;NetFx")
            .header("Authorization", authorization);
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        request.send().await.map_err(|e| TableError::Transport(e.without_url().to_string()))
    }

    /// Creates `table` unless it exists.
    pub async fn create_table_if_missing(&self, table: &str) -> Result<(), TableError> {
        let body = serde_json::to_vec(&serde_json::json!({ "TableName": table })).expect("JSON");
        let response =
            self.send(Method::POST, self.url("Tables")?, Some(JSON), &[("Prefer", "return-no-content".into())], Some(body)).await?;
        match response.status() {
            status if status.is_success() => Ok(()),
            StatusCode::CONFLICT => Ok(()),
            _ => Err(error_of(response, None).await),
        }
    }

    /// Reads one entity; `None` when it does not exist.
    pub async fn get(&self, table: &str, partition: &str, row: &str) -> Result<Option<Stored>, TableError> {
        let response = self.send(Method::GET, self.entity_url(table, partition, row)?, None, &[], None).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(error_of(response, None).await);
        }
        let etag = etag_of(&response)?;
        let entity = response.json::<Entity>().await.map_err(|e| TableError::Transport(format!("unreadable entity: {e}")))?;
        Ok(Some(Stored { entity, etag }))
    }

    /// Inserts an entity; [`TableError::AlreadyExists`] if its keys are taken. Returns the new ETag.
    pub async fn insert(&self, table: &str, entity: &Entity) -> Result<String, TableError> {
        let body = serde_json::to_vec(entity).expect("JSON");
        let response =
            self.send(Method::POST, self.url(table)?, Some(JSON), &[("Prefer", "return-no-content".into())], Some(body)).await?;
        if !response.status().is_success() {
            return Err(error_of(response, None).await);
        }
        etag_of(&response)
    }

    /// Replaces an entity if its ETag still is `if_match` (or unconditionally with `"*"`); upserts when
    /// `if_match` is `None`. Returns the new ETag.
    pub async fn replace(&self, table: &str, entity: &Entity, if_match: Option<&str>) -> Result<String, TableError> {
        let (partition, row) = keys_of(entity)?;
        let url = self.entity_url(table, partition, row)?;
        let headers: Vec<(&str, String)> = if_match.map(|etag| ("If-Match", etag.to_owned())).into_iter().collect();
        let response = self.send(Method::PUT, url, Some(JSON), &headers, Some(serde_json::to_vec(entity).expect("JSON"))).await?;
        if !response.status().is_success() {
            return Err(error_of(response, None).await);
        }
        etag_of(&response)
    }

    /// Deletes an entity if its ETag still is `if_match` (`"*"`: any). A missing entity is not an error.
    pub async fn delete(&self, table: &str, partition: &str, row: &str, if_match: &str) -> Result<(), TableError> {
        let url = self.entity_url(table, partition, row)?;
        let response = self.send(Method::DELETE, url, None, &[("If-Match", if_match.to_owned())], None).await?;
        match response.status() {
            status if status.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Ok(()),
            _ => Err(error_of(response, None).await),
        }
    }

    /// Every entity matching an OData `filter`, following continuations; `select` limits the properties.
    pub async fn query(&self, table: &str, filter: &str, select: Option<&str>) -> Result<Vec<Entity>, TableError> {
        let mut entities = Vec::new();
        let mut next: Option<(String, Option<String>)> = None;
        loop {
            let mut url = self.url(&format!("{table}()"))?;
            {
                let mut query = url.query_pairs_mut();
                query.append_pair("$filter", filter);
                if let Some(select) = select {
                    query.append_pair("$select", select);
                }
                if let Some((partition, row)) = &next {
                    query.append_pair("NextPartitionKey", partition);
                    if let Some(row) = row {
                        query.append_pair("NextRowKey", row);
                    }
                }
            }
            let response = self.send(Method::GET, url, None, &[], None).await?;
            if !response.status().is_success() {
                return Err(error_of(response, None).await);
            }
            let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            next = header("x-ms-continuation-NextPartitionKey").map(|p| (p, header("x-ms-continuation-NextRowKey")));
            let page: Value = response.json().await.map_err(|e| TableError::Transport(format!("unreadable page: {e}")))?;
            if let Some(Value::Array(values)) = page.get("value") {
                entities.extend(values.iter().filter_map(|v| v.as_object().cloned()));
            }
            if next.is_none() {
                return Ok(entities);
            }
        }
    }

    /// Runs an entity-group transaction: all operations or none.
    pub async fn submit(&self, batch: &Batch) -> Result<Vec<Option<String>>, TableError> {
        batch::submit(self, batch).await
    }
}

/// The entity's keys.
pub fn keys_of(entity: &Entity) -> Result<(&str, &str), TableError> {
    let key = |name: &str| {
        entity.get(name).and_then(Value::as_str).ok_or_else(|| TableError::Invalid(format!("entity without {name}")))
    };
    Ok((key("PartitionKey")?, key("RowKey")?))
}

fn etag_of(response: &reqwest::Response) -> Result<String, TableError> {
    response
        .headers()
        .get("ETag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| TableError::Transport("response without an ETag".into()))
}

/// Turns an error response into a [`TableError`].
pub(crate) async fn error_of(response: reqwest::Response, index: Option<usize>) -> TableError {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    classify(status.as_u16(), &body, index)
}

/// Classifies a status and an OData error body (`{"odata.error":{"code","message":{"value"}}}`).
pub(crate) fn classify(status: u16, body: &str, index: Option<usize>) -> TableError {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let error = &parsed["odata.error"];
    let code = error["code"].as_str().unwrap_or("").to_owned();
    let message = error["message"]["value"].as_str().or_else(|| error["message"].as_str()).unwrap_or(body).to_owned();
    match status {
        412 => TableError::PreconditionFailed { index },
        409 if code == "EntityAlreadyExists" || code.is_empty() => TableError::AlreadyExists { index },
        404 => TableError::NotFound,
        _ => TableError::Service { status, code, message: message.chars().take(500).collect() },
    }
}

/// An `Edm.Int64` property value and its annotation.
pub fn put_i64(entity: &mut Entity, name: &str, value: i64) {
    entity.insert(name.to_owned(), Value::String(value.to_string()));
    entity.insert(format!("{name}@odata.type"), Value::String("Edm.Int64".into()));
}

/// Reads an `Edm.Int64` property (a string on the wire; a number from some emulators).
pub fn get_i64(entity: &Entity, name: &str) -> Option<i64> {
    match entity.get(name)? {
        Value::String(text) => text.parse().ok(),
        Value::Number(number) => number.as_i64(),
        _ => None,
    }
}

/// A quoted OData string literal.
pub fn odata_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
