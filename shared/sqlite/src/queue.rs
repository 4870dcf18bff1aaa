//! The durable message queue: outbox, delivery with leases, retries, dead letters.
//!
//! Messages that share an ordering key (a migration id) are delivered one at a time, oldest first, like
//! Service Bus sessions: a migration's steps never run concurrently, so a cancel can never race the
//! create-link it follows. A delivery holds a lease; if the process dies, the lease is released when the
//! host starts again ([`SqliteStore::release_leases`]), so a restart resumes every in-flight step at once.
use crate::{backend, from_json, to_json, SqliteStore};
use chrono::{DateTime, Utc};
use milink_core::message::Envelope;
use milink_core::ports::StoreError;
use rusqlite::{params, OptionalExtension, Transaction};
use milink_core::ports::DeadLetter;

/// A message handed to a handler.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message.
    pub envelope: Envelope,
    /// How many times it has been delivered, this time included (1 on the first try).
    pub delivery_count: u32,
}

/// Appends messages (ignoring ids already queued) inside the caller's transaction.
pub(crate) fn enqueue(tx: &Transaction<'_>, outbox: &[Envelope]) -> Result<(), StoreError> {
    let mut statement = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO queue (id, stage, ordering_key, body, enqueued_ms) \
             VALUES (?1, ?2, ?3, ?4, CAST(unixepoch('subsec') * 1000 AS INTEGER))",
        )
        .map_err(backend)?;
    for envelope in outbox {
        statement
            .execute(params![envelope.envelope_id, envelope.stage.as_str(), envelope.ordering_key, to_json(envelope)?])
            .map_err(backend)?;
    }
    Ok(())
}

/// A state file from before the queue remembered when each message came adds the column here (its
/// messages count as enqueued at 0, i.e. unknown, and are left out of the oldest message's age).
pub(crate) fn add_enqueued_column(connection: &rusqlite::Connection) -> Result<(), StoreError> {
    let has_column = connection
        .prepare("SELECT 1 FROM pragma_table_info('queue') WHERE name = 'enqueued_ms'")
        .and_then(|mut statement| statement.exists([]))
        .map_err(backend)?;
    if !has_column {
        connection.execute_batch("ALTER TABLE queue ADD COLUMN enqueued_ms INTEGER NOT NULL DEFAULT 0").map_err(backend)?;
    }
    Ok(())
}

/// The queue's gauges at one moment (for metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages waiting or in flight.
    pub depth: u64,
    /// When the oldest of them was enqueued (wall clock), if any has a known time.
    pub oldest_enqueued_at: Option<DateTime<Utc>>,
    /// Dead letters kept.
    pub dead_letters: u64,
}

impl SqliteStore {
    /// Enqueues messages outside any state change (the API's assess requests).
    pub async fn enqueue(&self, outbox: &[Envelope]) -> Result<(), StoreError> {
        let outbox = outbox.to_vec();
        let count = outbox.len();
        let result = self.with(move |connection| {
            let tx = connection.transaction().map_err(backend)?;
            enqueue(&tx, &outbox)?;
            tx.commit().map_err(backend)
        })
        .await;
        if result.is_ok() {
            self.wake(count);
        }
        result
    }

    /// Extends the lease of a message being handled to `until` (a step that runs longer than one lease,
    /// such as a verification of a large database, keeps its message to itself).
    pub async fn renew_lease(&self, id: &str, until: DateTime<Utc>) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.with(move |connection| {
            connection
                .execute("UPDATE queue SET leased_until_ms = ?1 WHERE id = ?2 AND leased_until_ms > 0", params![until.timestamp_millis(), id])
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    /// Takes the next deliverable message and leases it until `now + lease`.
    pub async fn claim(&self, now: DateTime<Utc>, lease_ms: i64) -> Result<Option<Delivery>, StoreError> {
        let now_ms = now.timestamp_millis();
        self.with(move |connection| {
            let tx = connection.transaction().map_err(backend)?;
            let row: Option<(i64, String, u32)> = tx
                .query_row(
                    "SELECT q.seq, q.body, q.deliveries FROM queue q \
                     WHERE q.not_before_ms <= ?1 AND q.leased_until_ms <= ?1 \
                       AND q.seq = (SELECT MIN(h.seq) FROM queue h WHERE h.ordering_key = q.ordering_key) \
                     ORDER BY q.not_before_ms, q.seq LIMIT 1",
                    params![now_ms],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()
                .map_err(backend)?;
            let Some((seq, body, deliveries)) = row else { return Ok(None) };
            tx.execute(
                "UPDATE queue SET deliveries = deliveries + 1, leased_until_ms = ?1 WHERE seq = ?2",
                params![now_ms + lease_ms, seq],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(Some(Delivery { envelope: from_json(&body)?, delivery_count: deliveries + 1 }))
        })
        .await
    }

    /// Removes a handled message.
    pub async fn complete(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.with(move |connection| {
            connection.execute("DELETE FROM queue WHERE id = ?1", params![id]).map_err(backend)?;
            Ok(())
        })
        .await?;
        // The next message of the same migration (one at a time per ordering key) can go now.
        self.wake(1);
        Ok(())
    }

    /// Releases a message for another try at `not_before`, remembering the error.
    pub async fn retry(&self, id: &str, not_before: DateTime<Utc>, error: &str) -> Result<(), StoreError> {
        let (id, error) = (id.to_owned(), error.to_owned());
        self.with(move |connection| {
            connection
                .execute(
                    "UPDATE queue SET not_before_ms = ?1, leased_until_ms = 0, last_error = ?2 WHERE id = ?3",
                    params![not_before.timestamp_millis(), error, id],
                )
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    /// Moves a message to the dead letters.
    pub async fn dead_letter(&self, id: &str, error: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let (id, error) = (id.to_owned(), error.to_owned());
        self.with(move |connection| {
            let tx = connection.transaction().map_err(backend)?;
            tx.execute(
                "INSERT OR REPLACE INTO dead_letters (id, stage, ordering_key, body, deliveries, last_error, dead_at) \
                 SELECT id, stage, ordering_key, body, deliveries, ?1, ?2 FROM queue WHERE id = ?3",
                params![error, now.to_rfc3339(), id],
            )
            .map_err(backend)?;
            tx.execute("DELETE FROM queue WHERE id = ?1", params![id]).map_err(backend)?;
            tx.commit().map_err(backend)
        })
        .await?;
        self.wake(1);
        Ok(())
    }

    /// Dead letters, newest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.with(|connection| {
            let mut statement = connection
                .prepare("SELECT id, stage, body, deliveries, last_error, dead_at FROM dead_letters ORDER BY dead_at DESC")
                .map_err(backend)?;
            let rows = statement
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?, row.get(3)?, row.get(4)?, row.get::<_, String>(5)?))
                })
                .map_err(backend)?;
            rows.map(|row| {
                let (id, stage, body, deliveries, last_error, dead_at) = row.map_err(backend)?;
                let stage = serde_json::from_value(serde_json::Value::String(stage)).map_err(|e| StoreError::Backend(e.to_string()))?;
                let dead_at = DateTime::parse_from_rfc3339(&dead_at).map_err(|e| StoreError::Backend(e.to_string()))?.with_timezone(&Utc);
                Ok(DeadLetter { id, stage, envelope: from_json(&body)?, deliveries, last_error, dead_at })
            })
            .collect()
        })
        .await
    }

    /// Releases every lease: called once at start, when no handler of this store can be running.
    pub async fn release_leases(&self) -> Result<usize, StoreError> {
        self.with(|connection| {
            connection.execute("UPDATE queue SET leased_until_ms = 0 WHERE leased_until_ms > 0", []).map_err(backend)
        })
        .await
    }

    /// Depth, oldest message and dead letters, in one read.
    pub async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        self.with(|connection| {
            let (depth, oldest_ms, dead_letters): (i64, Option<i64>, i64) = connection
                .query_row(
                    "SELECT (SELECT COUNT(*) FROM queue), (SELECT MIN(enqueued_ms) FROM queue WHERE enqueued_ms > 0), \
                            (SELECT COUNT(*) FROM dead_letters)",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .map_err(backend)?;
            Ok(QueueStats {
                depth: depth as u64,
                oldest_enqueued_at: oldest_ms.and_then(DateTime::from_timestamp_millis),
                dead_letters: dead_letters as u64,
            })
        })
        .await
    }

    /// Messages waiting or in flight.
    pub async fn depth(&self) -> Result<u64, StoreError> {
        self.with(|connection| {
            connection.query_row("SELECT COUNT(*) FROM queue", [], |row| row.get::<_, i64>(0)).map(|n| n as u64).map_err(backend)
        })
        .await
    }
}

#[async_trait::async_trait]
impl milink_core::ports::DeadLetters for SqliteStore {
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        SqliteStore::dead_letters(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use milink_core::flow::Command;
    use milink_core::names::MigrationId;

    fn envelope(migration: &str, version: u64, command: Command) -> Envelope {
        Envelope::for_command(&MigrationId(migration.into()), version, 0, command)
    }

    #[tokio::test]
    async fn one_message_per_ordering_key_at_a_time_in_order() {
        let store = SqliteStore::in_memory().unwrap();
        let now = Utc::now();
        store.enqueue(&[envelope("a", 1, Command::Validate), envelope("a", 2, Command::CreateLink)]).await.unwrap();
        store.enqueue(&[envelope("b", 1, Command::Validate)]).await.unwrap();
        let first = store.claim(now, 60_000).await.unwrap().unwrap();
        let second = store.claim(now, 60_000).await.unwrap().unwrap();
        assert_eq!(first.envelope.ordering_key, "a");
        assert_eq!(second.envelope.ordering_key, "b", "a's second message must wait for its first");
        assert!(store.claim(now, 60_000).await.unwrap().is_none());
        store.complete(&first.envelope.envelope_id).await.unwrap();
        let third = store.claim(now, 60_000).await.unwrap().unwrap();
        assert_eq!(third.envelope.payload, envelope("a", 2, Command::CreateLink).payload);
    }

    #[tokio::test]
    async fn an_enqueue_or_a_completed_message_wakes_a_waiting_dispatcher() {
        let store = SqliteStore::in_memory().unwrap();
        let soon = std::time::Duration::from_secs(5);
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { tokio::time::timeout(soon, store.enqueued()).await.is_ok() }
        });
        tokio::task::yield_now().await;
        store.enqueue(&[envelope("a", 1, Command::Validate), envelope("a", 2, Command::CreateLink)]).await.unwrap();
        assert!(waiting.await.unwrap(), "the enqueue woke the waiter");
        let first = store.claim(Utc::now(), 60_000).await.unwrap().unwrap();
        store.complete(&first.envelope.envelope_id).await.unwrap();
        // The completion freed the migration's next message: the wake-up is kept for the next wait.
        assert!(tokio::time::timeout(soon, store.enqueued()).await.is_ok());
        // Nothing happened since: no wake-up.
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), store.enqueued()).await.is_err());
    }

    #[tokio::test]
    async fn duplicates_are_dropped_and_retries_wait_and_count() {
        let store = SqliteStore::in_memory().unwrap();
        let now = Utc::now();
        let message = envelope("a", 1, Command::Validate);
        store.enqueue(&[message.clone(), message.clone()]).await.unwrap();
        assert_eq!(store.depth().await.unwrap(), 1);
        let stats = store.queue_stats().await.unwrap();
        let age = Utc::now() - stats.oldest_enqueued_at.expect("a queued message has its enqueue time");
        assert!(stats.depth == 1 && age >= chrono::Duration::zero() && age < chrono::Duration::seconds(60), "{stats:?}");
        let delivery = store.claim(now, 60_000).await.unwrap().unwrap();
        assert_eq!(delivery.delivery_count, 1);
        store.retry(&message.envelope_id, now + chrono::Duration::seconds(5), "boom").await.unwrap();
        assert!(store.claim(now, 60_000).await.unwrap().is_none(), "not before its retry time");
        let again = store.claim(now + chrono::Duration::seconds(6), 60_000).await.unwrap().unwrap();
        assert_eq!(again.delivery_count, 2);
        store.dead_letter(&message.envelope_id, "gave up", now).await.unwrap();
        assert_eq!(store.depth().await.unwrap(), 0);
        assert_eq!(store.dead_letters().await.unwrap()[0].last_error.as_deref(), Some("gave up"));
        assert_eq!(store.queue_stats().await.unwrap(), QueueStats { depth: 0, oldest_enqueued_at: None, dead_letters: 1 });
    }

    #[tokio::test]
    async fn leases_of_a_dead_process_are_released_at_start() {
        let store = SqliteStore::in_memory().unwrap();
        let now = Utc::now();
        store.enqueue(&[envelope("a", 1, Command::Validate)]).await.unwrap();
        store.claim(now, 600_000).await.unwrap().unwrap();
        assert!(store.claim(now, 600_000).await.unwrap().is_none());
        assert_eq!(store.release_leases().await.unwrap(), 1);
        assert!(store.claim(now, 600_000).await.unwrap().is_some());
    }

    /// A step that outlives one lease keeps its message: a renewed lease is not handed out again, so the
    /// same step never runs twice side by side (a verification of a large database can run for longer than
    /// a lease).
    #[tokio::test]
    async fn a_renewed_lease_keeps_a_long_step_to_itself() {
        let store = SqliteStore::in_memory().unwrap();
        let now = Utc::now();
        store.enqueue(&[envelope("a", 1, Command::Verify { request: 1 })]).await.unwrap();
        let running = store.claim(now, 1_000).await.unwrap().unwrap();
        store.renew_lease(&running.envelope.envelope_id, now + chrono::Duration::seconds(60)).await.unwrap();
        assert!(store.claim(now + chrono::Duration::seconds(2), 1_000).await.unwrap().is_none(), "still leased after renewal");
        assert!(store.claim(now + chrono::Duration::seconds(61), 1_000).await.unwrap().is_some(), "free once the renewed lease ends");
    }
}
