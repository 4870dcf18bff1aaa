//! The outbox: messages committed with a state change, sent right after the commit, and found again by the
//! relay when the process died in between.
use super::{backend, entity, get_json, key, put_json, text, timestamp, TableStore};
use crate::table::{Batch, BatchOp, Entity};
use chrono::{DateTime, Utc};
use milink_core::message::Envelope;
use milink_core::ports::StoreError;

/// Row keys of outbox rows start with this; `;` is the next character after `:`, which bounds a range query.
const PREFIX: &str = "outbox:";
const PREFIX_END: &str = "outbox;";

/// A message waiting in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    /// The message.
    pub envelope: Envelope,
    /// When it was committed.
    pub committed_at: Option<DateTime<Utc>>,
    table: String,
    partition: String,
    row: String,
}

impl TableStore {
    pub(crate) fn outbox_entity(&self, partition_id: &str, envelope: &Envelope) -> Result<Entity, StoreError> {
        let mut row = entity(&key(partition_id), &format!("{PREFIX}{}", key(&envelope.envelope_id)));
        row.insert("Stage".into(), envelope.stage.as_str().into());
        row.insert("CommittedAt".into(), timestamp(Utc::now()).into());
        let json = serde_json::to_string(envelope).map_err(|e| StoreError::Backend(e.to_string()))?;
        put_json(&mut row, "Envelope", &json)?;
        Ok(row)
    }

    /// After a commit: publish, then delete the rows. Failures are logged and left to the relay, because
    /// the state is already saved and the caller must not retry the save.
    pub(crate) async fn publish_committed(&self, table: &str, partition: &str, outbox: &[Envelope]) {
        let Some(publisher) = &self.publisher else { return };
        if outbox.is_empty() {
            return;
        }
        if let Err(error) = publisher.publish(outbox).await {
            tracing::warn!(%error, messages = outbox.len(), "could not send committed messages now; the relay will");
            return;
        }
        let entries: Vec<OutboxEntry> = outbox
            .iter()
            .map(|envelope| OutboxEntry {
                envelope: envelope.clone(),
                committed_at: None,
                table: table.to_owned(),
                partition: partition.to_owned(),
                row: format!("{PREFIX}{}", key(&envelope.envelope_id)),
            })
            .collect();
        if let Err(error) = self.mark_sent(&entries).await {
            tracing::warn!(%error, "sent messages stay in the outbox; the relay will send them again (deduplicated)");
        }
    }

    /// Messages committed at or before `committed_before` and not yet marked sent, oldest first, from
    /// migrations and assessments. The relay passes "a little while ago" so it does not race the send
    /// that follows every commit.
    pub async fn pending_outbox(&self, committed_before: DateTime<Utc>) -> Result<Vec<OutboxEntry>, StoreError> {
        let filter = format!(
            "RowKey ge '{PREFIX}' and RowKey lt '{PREFIX_END}' and CommittedAt le '{}'",
            timestamp(committed_before)
        );
        let mut entries = Vec::new();
        for table in [&self.tables.migrations, &self.tables.assessments] {
            self.counters.query();
            for row in self.client.query(table, &filter, None).await.map_err(backend)? {
                let (Some(partition), Some(row_key)) = (text(&row, "PartitionKey"), text(&row, "RowKey")) else { continue };
                let envelope: Envelope = match get_json(&row, "Envelope") {
                    Ok(envelope) => envelope,
                    Err(error) => {
                        tracing::error!(%error, row = row_key, "unreadable outbox row skipped");
                        continue;
                    }
                };
                let committed_at = text(&row, "CommittedAt").and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.to_utc());
                entries.push(OutboxEntry { envelope, committed_at, table: table.clone(), partition, row: row_key });
            }
        }
        entries.sort_by_key(|entry| entry.committed_at);
        Ok(entries)
    }

    /// Removes sent messages from the outbox: one batch per partition, falling back to single deletes when
    /// a row is already gone (a relay and a committer both sent it).
    pub async fn mark_sent(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        let mut groups: std::collections::BTreeMap<(&str, &str), Vec<&OutboxEntry>> = Default::default();
        for entry in entries {
            groups.entry((entry.table.as_str(), entry.partition.as_str())).or_default().push(entry);
        }
        for ((table, partition), group) in groups {
            for chunk in group.chunks(crate::table::batch::MAX_OPERATIONS) {
                let mut batch = Batch::new(table);
                for entry in chunk {
                    batch.push(BatchOp::Delete { partition: partition.to_owned(), row: entry.row.clone(), if_match: "*".into() });
                }
                self.counters.batch();
                if self.client.submit(&batch).await.is_err() {
                    for entry in chunk {
                        self.counters.write();
                        self.client.delete(table, partition, &entry.row, "*").await.map_err(backend)?;
                    }
                }
            }
        }
        Ok(())
    }
}
