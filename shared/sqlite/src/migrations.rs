//! Migration rows: the whole state as JSON, plus the columns the unique index and lists need.
use crate::{backend, from_json, queue, to_json, SqliteStore};
use async_trait::async_trait;
use milink_core::message::Envelope;
use milink_core::migration::Migration;
use milink_core::names::{ConnectionName, DatabaseName, MigrationId};
use milink_core::ports::{Created, MigrationFilter, MigrationStore, StoreError};
use rusqlite::{params, OptionalExtension, Transaction};


fn find_live(tx: &Transaction<'_>, source: &str, target: &str, database: &str) -> Result<Option<Migration>, StoreError> {
    let state: Option<String> = tx
        .query_row(
            "SELECT state FROM migrations WHERE source = ?1 AND target = ?2 AND database = ?3 \
             AND phase NOT IN ('failed', 'cancelled', 'failedBack')",
            params![source, target, database],
            |row| row.get(0),
        )
        .optional()
        .map_err(backend)?;
    state.map(|s| from_json(&s)).transpose()
}

#[async_trait]
impl MigrationStore for SqliteStore {
    async fn create(&self, migration: &Migration, outbox: &[Envelope]) -> Result<Created, StoreError> {
        let migration = migration.clone();
        let outbox = outbox.to_vec();
        let count = outbox.len();
        let result = self.with(move |connection| {
            let tx = connection.transaction().map_err(backend)?;
            let (source, target, database) =
                (migration.source.as_str(), migration.target.as_str(), migration.database.as_str());
            if let Some(existing) = find_live(&tx, source, target, database)? {
                return Ok(Created::Existing(existing));
            }
            let mut stored = migration.clone();
            stored.version = 1;
            tx.execute(
                "INSERT INTO migrations (id, source, target, database, phase, version, created_at, state) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    stored.id.as_str(),
                    source,
                    target,
                    database,
                    stored.phase.key(),
                    stored.version as i64,
                    stored.created_at.to_rfc3339(),
                    to_json(&stored)?
                ],
            )
            .map_err(backend)?;
            queue::enqueue(&tx, &outbox)?;
            tx.commit().map_err(backend)?;
            Ok(Created::New(stored))
        })
        .await;
        if result.is_ok() {
            self.wake(count);
        }
        result
    }

    async fn load(&self, id: &MigrationId) -> Result<Option<Migration>, StoreError> {
        let id = id.clone();
        self.with(move |connection| {
            let state: Option<String> = connection
                .query_row("SELECT state FROM migrations WHERE id = ?1", params![id.as_str()], |row| row.get(0))
                .optional()
                .map_err(backend)?;
            state.map(|s| from_json(&s)).transpose()
        })
        .await
    }

    async fn save(&self, migration: &Migration, outbox: &[Envelope]) -> Result<Migration, StoreError> {
        let mut next = migration.clone();
        next.version = migration.version + 1;
        let outbox = outbox.to_vec();
        let count = outbox.len();
        let result = self.with(move |connection| {
            let tx = connection.transaction().map_err(backend)?;
            let updated = tx
                .execute(
                    "UPDATE migrations SET phase = ?1, version = ?2, state = ?3 WHERE id = ?4 AND version = ?5",
                    params![
                        next.phase.key(),
                        next.version as i64,
                        to_json(&next)?,
                        next.id.as_str(),
                        (next.version - 1) as i64
                    ],
                )
                .map_err(backend)?;
            if updated == 0 {
                return Err(StoreError::Conflict(next.id.to_string()));
            }
            queue::enqueue(&tx, &outbox)?;
            tx.commit().map_err(backend)?;
            Ok(next)
        })
        .await;
        if result.is_ok() {
            self.wake(count);
        }
        result
    }

    async fn list(&self, filter: &MigrationFilter) -> Result<Vec<Migration>, StoreError> {
        let active_only = filter.active_only;
        self.with(move |connection| {
            let sql = if active_only {
                "SELECT state FROM migrations WHERE phase NOT IN ('completed', 'failed', 'cancelled', 'failedBack') ORDER BY created_at DESC, id"
            } else {
                "SELECT state FROM migrations ORDER BY created_at DESC, id"
            };
            let mut statement = connection.prepare_cached(sql).map_err(backend)?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0)).map_err(backend)?;
            rows.map(|row| from_json(&row.map_err(backend)?)).collect()
        })
        .await
    }

    async fn find(
        &self,
        source: &ConnectionName,
        target: &ConnectionName,
        database: &DatabaseName,
    ) -> Result<Option<Migration>, StoreError> {
        let key = (source.to_string(), target.to_string(), database.to_string());
        self.with(move |connection| {
            let tx = connection.transaction().map_err(backend)?;
            find_live(&tx, &key.0, &key.1, &key.2)
        })
        .await
    }
}
