//! One contract, two stores: every scenario runs against the SQLite store (embedded host) and the Table
//! store on Azurite (Azure host). What a handler may rely on must hold for both: versions and conflicts,
//! one live migration per database and link (also under concurrent starts), no lost update when writers
//! race on one migration, the outbox committed with the state, assessments, big and hostile values.
mod support;

use async_trait::async_trait;
use chrono::Utc;
use milink_azure::auth::StorageAuth;
use milink_azure::{TableStore, TableStoreConfig};
use milink_core::assessment::{Assessment, AssessmentReport, DatabaseAssessment, Readiness};
use milink_core::config::Secret;
use milink_core::flow::Command;
use milink_core::message::Envelope;
use milink_core::migration::{Migration, Phase, Settings};
use milink_core::names::{ConnectionName, DatabaseName, MigrationId};
use milink_core::ports::{AssessmentStore, Created, MigrationFilter, MigrationStore, StoreError};
use milink_sqlite::SqliteStore;
use std::collections::BTreeSet;
use std::sync::Arc;

/// A store under contract, plus a way to see which messages it committed.
#[async_trait]
trait Subject: MigrationStore + AssessmentStore + 'static {
    /// Ids of every committed, not yet delivered message; takes them out.
    async fn take_outbox(&self) -> BTreeSet<String>;
}

#[async_trait]
impl Subject for SqliteStore {
    async fn take_outbox(&self) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        while let Some(delivery) = self.claim(Utc::now(), 60_000).await.unwrap() {
            self.complete(&delivery.envelope.envelope_id).await.unwrap();
            ids.insert(delivery.envelope.envelope_id);
        }
        ids
    }
}

#[async_trait]
impl Subject for TableStore {
    async fn take_outbox(&self) -> BTreeSet<String> {
        let pending = self.pending_outbox(Utc::now() + chrono::Duration::days(1)).await.unwrap();
        self.mark_sent(&pending).await.unwrap();
        pending.into_iter().map(|e| e.envelope.envelope_id).collect()
    }
}

fn sqlite() -> Arc<SqliteStore> {
    Arc::new(SqliteStore::in_memory().unwrap())
}

async fn azurite() -> Arc<TableStore> {
    let config = TableStoreConfig {
        endpoint: support::azurite_endpoint(),
        account: support::ACCOUNT.into(),
        auth: StorageAuth::SharedKey { account: support::ACCOUNT.into(), key: Secret::new(support::KEY) },
        table_prefix: support::unique_prefix("c"),
    };
    Arc::new(TableStore::connect(config, reqwest::Client::new()).await.unwrap())
}

fn name(text: &str) -> ConnectionName {
    ConnectionName::parse(text).unwrap()
}

fn migration(database: &str) -> Migration {
    Migration::new(
        MigrationId::new_random(),
        name("src"),
        name("dst"),
        DatabaseName::parse(database).unwrap(),
        Settings::default(),
        Utc::now(),
    )
}

fn first_messages(m: &Migration) -> Vec<Envelope> {
    Envelope::for_commands(&m.id, 1, vec![Command::Validate])
}

async fn create_new<S: Subject>(store: &S, m: &Migration) -> Migration {
    match store.create(m, &first_messages(m)).await.unwrap() {
        Created::New(stored) => stored,
        Created::Existing(other) => panic!("expected a new migration, got existing {}", other.id),
    }
}

async fn created_migrations_start_at_version_one_with_their_messages<S: Subject>(store: Arc<S>) {
    let m = migration("ToyStore");
    let stored = create_new(store.as_ref(), &m).await;
    assert_eq!(stored.version, 1);
    assert_eq!(store.load(&m.id).await.unwrap(), Some(stored.clone()));
    assert_eq!(store.take_outbox().await, first_messages(&m).into_iter().map(|e| e.envelope_id).collect());
    assert_eq!(store.load(&MigrationId::new_random()).await.unwrap(), None);
}

async fn a_database_has_one_live_migration_per_link<S: Subject>(store: Arc<S>) {
    let first = create_new(store.as_ref(), &migration("ToyStore")).await;
    store.take_outbox().await;
    let again = migration("ToyStore");
    match store.create(&again, &first_messages(&again)).await.unwrap() {
        Created::Existing(existing) => assert_eq!(existing.id, first.id),
        Created::New(_) => panic!("a second live migration for the same database"),
    }
    assert!(store.take_outbox().await.is_empty(), "a refused create writes no message");
    assert_eq!(store.find(&name("src"), &name("dst"), &first.database).await.unwrap().map(|m| m.id), Some(first.id.clone()));
    create_new(store.as_ref(), &migration("Other")).await;

    // Completed still holds the database; failed frees it.
    let mut done = first.clone();
    done.phase = Phase::Completed;
    let done = store.save(&done, &[]).await.unwrap();
    assert!(matches!(store.create(&again, &[]).await.unwrap(), Created::Existing(_)));
    let mut failed = done;
    failed.phase = Phase::Failed;
    store.save(&failed, &[]).await.unwrap();
    assert_eq!(store.find(&name("src"), &name("dst"), &first.database).await.unwrap(), None);
    let replacement = create_new(store.as_ref(), &again).await;
    assert_ne!(replacement.id, first.id);

    // A failed-back migration frees it too (the source is primary again).
    let mut failed_back = replacement.clone();
    failed_back.phase = Phase::FailedBack;
    store.save(&failed_back, &[]).await.unwrap();
    assert_eq!(store.find(&name("src"), &name("dst"), &first.database).await.unwrap(), None);
    let third = migration("ToyStore");
    assert_ne!(create_new(store.as_ref(), &third).await.id, replacement.id);
}

async fn saves_take_turns_by_version<S: Subject>(store: Arc<S>) {
    let stored = create_new(store.as_ref(), &migration("ToyStore")).await;
    store.take_outbox().await;
    let mut next = stored.clone();
    next.phase = Phase::Deploying;
    let outbox = Envelope::for_commands(&stored.id, 2, vec![Command::CreateLink]);
    let saved = store.save(&next, &outbox).await.unwrap();
    assert_eq!(saved.version, 2);
    assert_eq!(store.load(&stored.id).await.unwrap().unwrap().phase, Phase::Deploying);
    // A writer still holding version 1 loses, and its messages are not committed.
    let mut stale = stored.clone();
    stale.phase = Phase::Failed;
    let lost = Envelope::for_commands(&stored.id, 2, vec![Command::Notify { status: "Failed".into(), message: "x".into() }]);
    assert!(matches!(store.save(&stale, &lost).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.take_outbox().await, outbox.iter().map(|e| e.envelope_id.clone()).collect());
    assert_eq!(store.load(&stored.id).await.unwrap().unwrap().phase, Phase::Deploying);
}

async fn lists_are_newest_first_and_filter_active<S: Subject>(store: Arc<S>) {
    let mut ids = Vec::new();
    for db in ["A", "B", "C"] {
        let mut m = migration(db);
        m.created_at = Utc::now() + chrono::Duration::seconds(ids.len() as i64);
        ids.push(create_new(store.as_ref(), &m).await);
    }
    let mut finished = ids[0].clone();
    finished.phase = Phase::Cancelled;
    store.save(&finished, &[]).await.unwrap();
    let all: Vec<_> = store.list(&MigrationFilter::default()).await.unwrap().into_iter().map(|m| m.database.to_string()).collect();
    assert_eq!(all, ["C", "B", "A"]);
    let active: Vec<_> =
        store.list(&MigrationFilter { active_only: true }).await.unwrap().into_iter().map(|m| m.database.to_string()).collect();
    assert_eq!(active, ["C", "B"]);
}

async fn concurrent_starts_make_one_migration<S: Subject>(store: Arc<S>) {
    let starts = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let m = migration("Raced");
            store.create(&m, &first_messages(&m)).await.unwrap()
        })
    });
    let outcomes: Vec<Created> = futures::future::join_all(starts).await.into_iter().map(|r| r.unwrap()).collect();
    let new: Vec<_> = outcomes.iter().filter(|c| matches!(c, Created::New(_))).collect();
    assert_eq!(new.len(), 1, "exactly one start creates");
    let ids: BTreeSet<String> = outcomes
        .iter()
        .map(|c| match c {
            Created::New(m) | Created::Existing(m) => m.id.to_string(),
        })
        .collect();
    assert_eq!(ids.len(), 1, "every start sees the same migration: {ids:?}");
    assert_eq!(store.list(&MigrationFilter::default()).await.unwrap().len(), 1);
    assert_eq!(store.take_outbox().await.len(), 1, "only the winner's first message is committed");
}

async fn racing_writers_lose_no_update<S: Subject>(store: Arc<S>) {
    let stored = create_new(store.as_ref(), &migration("Busy")).await;
    let (writers, steps) = (6, 5);
    let tasks = (0..writers).map(|writer| {
        let (store, id) = (store.clone(), stored.id.clone());
        tokio::spawn(async move {
            let mut conflicts = 0;
            for step in 0..steps {
                loop {
                    let mut current = store.load(&id).await.unwrap().unwrap();
                    current.record(Utc::now(), format!("writer {writer} step {step}"));
                    let message = Envelope::for_commands(&id, current.version + 1, vec![Command::Validate]);
                    match store.save(&current, &message).await {
                        Ok(_) => break,
                        Err(StoreError::Conflict(_)) => conflicts += 1,
                        Err(other) => panic!("{other}"),
                    }
                }
            }
            conflicts
        })
    });
    let conflicts: u32 = futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap()).sum();
    let last = store.load(&stored.id).await.unwrap().unwrap();
    assert_eq!(last.version, 1 + writers * steps, "every save counted once");
    for writer in 0..writers {
        for step in 0..steps {
            let line = format!("writer {writer} step {step}");
            assert_eq!(last.history.iter().filter(|h| h.message == line).count(), 1, "{line} lost or doubled");
        }
    }
    // One message per committed version (2..=31) plus the first: losers committed nothing.
    assert_eq!(store.take_outbox().await.len() as u64, 1 + writers * steps);
    println!("{conflicts} conflicts re-read and retried");
}

async fn big_states_and_hostile_names_round_trip<S: Subject>(store: Arc<S>) {
    for database in ["Toy/Store#1?", "Toy\\Store%", "it's \"quoted\"", "Tøy商店"] {
        let m = create_new(store.as_ref(), &migration(database)).await;
        assert_eq!(store.find(&name("src"), &name("dst"), &m.database).await.unwrap().map(|f| f.id), Some(m.id.clone()));
        let mut big = m.clone();
        for i in 0..3000 {
            big.record(Utc::now(), format!("observation {i}: streaming, lag 0 bytes, ünïcødé"));
        }
        let saved = store.save(&big, &[]).await.unwrap();
        assert_eq!(store.load(&m.id).await.unwrap().unwrap(), saved);
    }
}

async fn assessments_keep_the_newest_completed_report<S: Subject>(store: Arc<S>) {
    let connection = name("src");
    let older = AssessmentReport::running("a-1".into(), connection.clone(), Utc::now() - chrono::Duration::minutes(5));
    let newer = AssessmentReport::running("a-2".into(), connection.clone(), Utc::now());
    let notify = |id: &str| Envelope {
        envelope_id: format!("assessed:{id}"),
        stage: milink_core::message::Stage::Notify,
        ordering_key: format!("assessed:{id}"),
        payload: milink_core::message::Payload::AssessmentCompleted { assessment_id: id.into(), message: "done".into() },
        trace_parent: None,
    };
    let assessment = Assessment {
        server_version: "16".into(),
        instance_findings: vec![],
        databases: vec![DatabaseAssessment { name: "ToyStore".into(), readiness: Readiness::Ready, findings: vec![], size_bytes: Some(1) }],
        recommendation: None,
        connection_summary: None,
    };
    store.put_assessment(&older, &[]).await.unwrap();
    store.put_assessment(&newer, &[]).await.unwrap();
    assert_eq!(store.latest_assessment(&connection).await.unwrap(), None, "running reports are not results");
    let older_done = older.completed(assessment.clone(), Utc::now());
    store.put_assessment(&older_done, &[notify("a-1")]).await.unwrap();
    assert_eq!(store.latest_assessment(&connection).await.unwrap().map(|r| r.id), Some("a-1".into()));
    let newer_done = newer.completed(assessment, Utc::now());
    store.put_assessment(&newer_done, &[notify("a-2")]).await.unwrap();
    assert_eq!(store.latest_assessment(&connection).await.unwrap(), Some(newer_done.clone()));
    assert_eq!(store.get_assessment("a-2").await.unwrap(), Some(newer_done));
    assert_eq!(store.get_assessment("nope").await.unwrap(), None);
    assert_eq!(store.latest_assessment(&name("other")).await.unwrap(), None);
    assert_eq!(store.take_outbox().await, BTreeSet::from(["assessed:a-1".to_owned(), "assessed:a-2".to_owned()]));
}

macro_rules! contract {
    ($($scenario:ident),* $(,)?) => {
        mod on_sqlite {
            $( #[tokio::test(flavor = "multi_thread")] async fn $scenario() { super::$scenario(super::sqlite()).await } )*
        }
        mod on_azurite {
            $( #[tokio::test(flavor = "multi_thread")] async fn $scenario() { super::$scenario(super::azurite().await).await } )*
        }
    };
}

contract!(
    created_migrations_start_at_version_one_with_their_messages,
    a_database_has_one_live_migration_per_link,
    saves_take_turns_by_version,
    lists_are_newest_first_and_filter_active,
    concurrent_starts_make_one_migration,
    racing_writers_lose_no_update,
    big_states_and_hostile_names_round_trip,
    assessments_keep_the_newest_completed_report,
);

/// Table Storage only: an entity-group batch holds 100 operations, so a save carries at most 99
/// messages; the store refuses more before sending (Azurite would accept them) and keeps the old state.
#[tokio::test]
async fn a_save_with_more_messages_than_one_batch_holds_is_refused_whole() {
    let store = azurite().await;
    let stored = create_new(store.as_ref(), &migration("Chatty")).await;
    let many: Vec<Envelope> = (0..100)
        .map(|i| Envelope::for_command(&stored.id, 2, i, Command::Notify { status: "x".into(), message: i.to_string() }))
        .collect();
    let error = store.save(&stored, &many).await.unwrap_err();
    assert!(error.to_string().contains("at most 100"), "{error}");
    assert_eq!(store.load(&stored.id).await.unwrap().unwrap().version, 1);
    store.save(&stored, &many[..99]).await.unwrap();
}
