//! Migration rows: `state` (whole migration as JSON plus list columns), claims, and saves with their outbox.
use super::{backend, entity, get_json, key, put_json, timestamp, TableStore};
use crate::table::{put_i64, Batch, BatchOp, Entity, TableError};
use async_trait::async_trait;
use milink_core::message::Envelope;
use milink_core::migration::Migration;
use milink_core::names::{ConnectionName, DatabaseName, MigrationId};
use milink_core::ports::{Created, MigrationFilter, MigrationStore, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const STATE: &str = "state";
const CLAIM: &str = "claim";

/// What a claim remembers: enough to finish a creation whose creator died after claiming.
#[derive(Serialize, Deserialize)]
struct Seed {
    migration: Migration,
    outbox: Vec<Envelope>,
}


/// Failed, cancelled and failed-back migrations free their database for a new one; completed ones do not
/// (the same rule as the SQLite store's unique index).
fn is_live(migration: &Migration) -> bool {
    !migration.phase.frees_database()
}

fn claim_partition(source: &ConnectionName, target: &ConnectionName, database: &DatabaseName) -> String {
    let mut digest = Sha256::new();
    for part in [source.as_str(), target.as_str(), database.as_str()] {
        digest.update(part.as_bytes());
        digest.update([0u8]);
    }
    let hex: String = digest.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("link:{hex}")
}

fn state_entity(migration: &Migration) -> Result<Entity, StoreError> {
    let mut row = entity(&key(migration.id.as_str()), STATE);
    let insert = |row: &mut Entity, name: &str, value: &str| {
        row.insert(name.into(), serde_json::Value::String(value.to_owned()));
    };
    insert(&mut row, "MigrationId", migration.id.as_str());
    insert(&mut row, "Source", migration.source.as_str());
    insert(&mut row, "Target", migration.target.as_str());
    insert(&mut row, "Database", migration.database.as_str());
    insert(&mut row, "Phase", migration.phase.key());
    insert(&mut row, "CreatedAt", &timestamp(migration.created_at));
    row.insert("Active".into(), serde_json::Value::Bool(!migration.phase.is_terminal()));
    put_i64(&mut row, "Version", migration.version as i64);
    let json = serde_json::to_string(migration).map_err(|e| StoreError::Backend(e.to_string()))?;
    put_json(&mut row, "State", &json)?;
    Ok(row)
}

fn claim_entity(partition: &str, seed: &Seed) -> Result<Entity, StoreError> {
    let mut row = entity(partition, CLAIM);
    row.insert("MigrationId".into(), serde_json::Value::String(seed.migration.id.to_string()));
    let json = serde_json::to_string(seed).map_err(|e| StoreError::Backend(e.to_string()))?;
    put_json(&mut row, "Seed", &json)?;
    Ok(row)
}

impl TableStore {
    /// Writes a migration's first state and messages; an existing state row (another caller finished
    /// this creation first) is fine.
    async fn insert_state(&self, migration: &Migration, outbox: &[Envelope]) -> Result<(), StoreError> {
        let mut batch = Batch::new(&self.tables.migrations);
        batch.push(BatchOp::Insert(state_entity(migration)?));
        for envelope in outbox {
            batch.push(BatchOp::Replace { entity: self.outbox_entity(migration.id.as_str(), envelope)?, if_match: None });
        }
        self.counters.batch();
        match self.client.submit(&batch).await {
            Ok(etags) => {
                if let Some(Some(etag)) = etags.first() {
                    self.remember(migration.id.as_str(), migration.version, etag.clone());
                }
                self.publish_committed(&self.tables.migrations, &key(migration.id.as_str()), outbox).await;
                Ok(())
            }
            Err(TableError::AlreadyExists { .. }) => Ok(()),
            Err(error) => Err(backend(error)),
        }
    }

    /// Reads the state row with its ETag.
    async fn load_row(&self, id: &str) -> Result<Option<(Migration, String)>, StoreError> {
        self.counters.read();
        let Some(stored) = self.client.get(&self.tables.migrations, &key(id), STATE).await.map_err(backend)? else {
            return Ok(None);
        };
        let migration: Migration = get_json(&stored.entity, "State")?;
        self.remember(id, migration.version, stored.etag.clone());
        Ok(Some((migration, stored.etag)))
    }

    /// The claim for a link, with its ETag.
    async fn claim(&self, partition: &str) -> Result<Option<(Seed, String)>, StoreError> {
        self.counters.read();
        let Some(stored) = self.client.get(&self.tables.migrations, partition, CLAIM).await.map_err(backend)? else {
            return Ok(None);
        };
        Ok(Some((get_json(&stored.entity, "Seed")?, stored.etag)))
    }

    /// Takes the claim for `seed`'s link, replacing `stale` (a claim whose migration failed or was
    /// cancelled) when given. `Ok(false)`: someone else claimed first.
    async fn take_claim(&self, partition: &str, seed: &Seed, stale: Option<&str>) -> Result<bool, StoreError> {
        let row = claim_entity(partition, seed)?;
        self.counters.write();
        let outcome = match stale {
            None => self.client.insert(&self.tables.migrations, &row).await,
            Some(etag) => self.client.replace(&self.tables.migrations, &row, Some(etag)).await,
        };
        match outcome {
            Ok(_) => Ok(true),
            Err(TableError::AlreadyExists { .. } | TableError::PreconditionFailed { .. }) => Ok(false),
            Err(error) => Err(backend(error)),
        }
    }
}

#[async_trait]
impl MigrationStore for TableStore {
    async fn create(&self, migration: &Migration, outbox: &[Envelope]) -> Result<Created, StoreError> {
        let mut stored = migration.clone();
        stored.version = 1;
        let seed = Seed { migration: stored.clone(), outbox: outbox.to_vec() };
        let partition = claim_partition(&migration.source, &migration.target, &migration.database);
        for _ in 0..10 {
            let stale = match self.claim(&partition).await? {
                None => None,
                Some((existing, etag)) => match self.load_row(existing.migration.id.as_str()).await? {
                    Some((current, _)) if is_live(&current) => return Ok(Created::Existing(current)),
                    Some(_) => Some(etag),
                    None => {
                        // Its creator claimed and stopped before writing the state: finish for it.
                        self.insert_state(&existing.migration, &existing.outbox).await?;
                        match self.load_row(existing.migration.id.as_str()).await? {
                            Some((current, _)) => return Ok(Created::Existing(current)),
                            None => return Err(StoreError::Backend("a claimed migration could not be completed".into())),
                        }
                    }
                },
            };
            if self.take_claim(&partition, &seed, stale.as_deref()).await? {
                self.insert_state(&stored, outbox).await?;
                return Ok(Created::New(stored));
            }
        }
        Err(StoreError::Conflict(format!("start of {} kept racing other starts", migration.database)))
    }

    async fn load(&self, id: &MigrationId) -> Result<Option<Migration>, StoreError> {
        Ok(self.load_row(id.as_str()).await?.map(|(migration, _)| migration))
    }

    async fn save(&self, migration: &Migration, outbox: &[Envelope]) -> Result<Migration, StoreError> {
        let id = migration.id.as_str();
        let etag = match self.remembered(id, migration.version) {
            Some(etag) => etag,
            None => match self.load_row(id).await? {
                Some((current, etag)) if current.version == migration.version => etag,
                _ => return Err(StoreError::Conflict(id.to_owned())),
            },
        };
        let mut next = migration.clone();
        next.version = migration.version + 1;
        let mut batch = Batch::new(&self.tables.migrations);
        batch.push(BatchOp::Replace { entity: state_entity(&next)?, if_match: Some(etag) });
        for envelope in outbox {
            batch.push(BatchOp::Replace { entity: self.outbox_entity(id, envelope)?, if_match: None });
        }
        self.counters.batch();
        match self.client.submit(&batch).await {
            Ok(etags) => {
                match etags.first() {
                    Some(Some(etag)) => self.remember(id, next.version, etag.clone()),
                    _ => self.forget(id),
                }
                self.publish_committed(&self.tables.migrations, &key(id), outbox).await;
                Ok(next)
            }
            Err(TableError::PreconditionFailed { .. }) => {
                self.forget(id);
                Err(StoreError::Conflict(id.to_owned()))
            }
            Err(error) => Err(backend(error)),
        }
    }

    async fn list(&self, filter: &MigrationFilter) -> Result<Vec<Migration>, StoreError> {
        let mut query = format!("RowKey eq '{STATE}'");
        if filter.active_only {
            query.push_str(" and Active eq true");
        }
        self.counters.query();
        let rows = self.client.query(&self.tables.migrations, &query, None).await.map_err(backend)?;
        let mut migrations = Vec::with_capacity(rows.len());
        for row in &rows {
            let migration: Migration = get_json(row, "State")?;
            migrations.push(migration);
        }
        migrations.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id)));
        Ok(migrations)
    }

    async fn find(
        &self,
        source: &ConnectionName,
        target: &ConnectionName,
        database: &DatabaseName,
    ) -> Result<Option<Migration>, StoreError> {
        let Some((seed, _)) = self.claim(&claim_partition(source, target, database)).await? else { return Ok(None) };
        Ok(self.load_row(seed.migration.id.as_str()).await?.map(|(m, _)| m).filter(is_live))
    }
}
