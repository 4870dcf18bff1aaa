//! The embedded host's state and durable queue, in one SQLite file.
//!
//! One file holds migrations, assessments, the message queue and its dead letters. The queue *is* the
//! outbox: a state change and the messages it emits are written in one SQLite transaction, so a crash can
//! never keep one without the other, and the dispatcher reads straight from it (nothing to relay).
//! Message ids are deterministic, so re-deciding the same transition (`INSERT OR IGNORE`) adds nothing.
//!
//! rusqlite is synchronous; every call runs on tokio's blocking pool behind one mutex. The embedded host
//! writes a few rows a second per migration, far below what one SQLite connection sustains, and one
//! connection keeps transactions simple. The file is opened in exclusive locking mode, so a second
//! `milink up` on the same state file fails at start instead of racing the first.
#![warn(missing_docs)]

mod assessments;
mod migrations;
pub mod queue;

use milink_core::ports::StoreError;
use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub use queue::{Delivery, QueueStats};

/// Migrations, assessments and the queue in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    /// Signalled after a transaction that enqueued messages commits, so the dispatcher takes the next
    /// step at once instead of at its next idle poll (each cutover step is one hop through the queue).
    enqueued: Arc<tokio::sync::Notify>,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS migrations (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    database TEXT NOT NULL,
    phase TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL
);
-- At most one live migration per database and link: concurrent starts collide here, atomically.
-- Failed, cancelled and failed-back migrations free the database for a new one.
CREATE UNIQUE INDEX IF NOT EXISTS migrations_one_per_link_v2
    ON migrations (source, target, database) WHERE phase NOT IN ('failed', 'cancelled', 'failedBack');
CREATE TABLE IF NOT EXISTS assessments (
    id TEXT PRIMARY KEY,
    connection TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    report TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    stage TEXT NOT NULL,
    ordering_key TEXT NOT NULL,
    body TEXT NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    not_before_ms INTEGER NOT NULL DEFAULT 0,
    leased_until_ms INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    enqueued_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS queue_by_key ON queue (ordering_key, seq);
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT PRIMARY KEY,
    stage TEXT NOT NULL,
    ordering_key TEXT NOT NULL,
    body TEXT NOT NULL,
    deliveries INTEGER NOT NULL,
    last_error TEXT,
    dead_at TEXT NOT NULL
);
"#;

impl SqliteStore {
    /// Opens (creating if needed) the state file. Fails if another process holds it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = Connection::open(path).map_err(backend)?;
        connection
            .execute_batch("PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(backend)?;
        // Touch the file for writing now, so a second process fails here with a clear message.
        connection.execute_batch("BEGIN IMMEDIATE; COMMIT;").map_err(|e| {
            StoreError::Backend(format!(
                "state file {} is in use by another milink process ({e}); stop it or use --state with another file",
                path.display()
            ))
        })?;
        Self::init(connection)
    }

    /// An in-memory store (tests and benchmarks).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(backend)?)
    }

    fn init(connection: Connection) -> Result<Self, StoreError> {
        connection.busy_timeout(std::time::Duration::from_secs(5)).map_err(backend)?;
        connection.execute_batch(SCHEMA).map_err(backend)?;
        queue::add_enqueued_column(&connection)?;
        Ok(Self { connection: Arc::new(Mutex::new(connection)), enqueued: Arc::new(tokio::sync::Notify::new()) })
    }

    /// Completes when messages were enqueued since the last wait (a wake-up is never lost: one that
    /// comes while nobody waits is kept for the next wait).
    pub async fn enqueued(&self) {
        self.enqueued.notified().await;
    }

    /// Says that messages were enqueued (after their transaction committed).
    pub(crate) fn wake(&self, outbox_len: usize) {
        if outbox_len > 0 {
            self.enqueued.notify_one();
        }
    }

    /// Runs `work` with the connection on the blocking pool.
    async fn with<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = connection.lock().map_err(|_| StoreError::Backend("store mutex poisoned".into()))?;
            work(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task: {e}")))?
    }
}

pub(crate) fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(error.to_string())
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(backend)
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Backend(format!("stored row does not parse: {e}")))
}
