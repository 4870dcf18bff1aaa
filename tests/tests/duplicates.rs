//! At-least-once delivery, for real: the same handlers and a SQLite queue, in process, against real
//! PostgreSQL, with every message handled twice in a row and delivered once more after it was completed
//! (a late duplicate, as Service Bus may do after a lock expires). The end state must be the one a clean
//! run reaches: Completed, every row on the target, each step recorded once.
use milink_core::config::Config;
use milink_core::flow::{self, Event};
use milink_core::message::Envelope;
use milink_core::migration::{Migration, Settings, Status};
use milink_core::names::{ConnectionName, DatabaseName, MigrationId};
use milink_core::ports::{Created, MigrationStore, SystemClock};
use milink_e2e::pg;
use milink_e2e::unique;
use milink_functions::context::Context;
use milink_functions::engines::Engines;
use milink_functions::handlers;
use milink_functions::runtime::poll::{self, PollSettings};
use milink_sqlite::SqliteStore;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn config() -> Config {
    let s = pg::servers();
    let text = format!(
        "[connections.src]\nengine = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n\
         [connections.dst]\nengine = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n",
        s.source_url, s.password_file, s.target_url, s.password_file
    );
    Config::parse(&text, std::path::Path::new("/"), &|_| None).expect("test config parses")
}

/// Handles every queued message twice, completes it, and keeps it for a late redelivery.
async fn pump_twice(ctx: &Context, store: &SqliteStore, handled: &mut Vec<Envelope>) -> anyhow::Result<usize> {
    let mut count = 0;
    while let Some(delivery) = store.claim(chrono::Utc::now(), 60_000).await? {
        for _ in 0..2 {
            handlers::handle(ctx, &delivery.envelope).await.map_err(|e| anyhow::anyhow!("{}", e.0.message))?;
        }
        store.complete(&delivery.envelope.envelope_id).await?;
        handled.push(delivery.envelope);
        count += 1;
    }
    Ok(count)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_message_delivered_twice_and_late_reaches_the_same_end_state() -> anyhow::Result<()> {
    let database = unique("ToyStoreTwice");
    pg::load_sample(&database, "toystore.sql").await?;
    let store = Arc::new(SqliteStore::in_memory()?);
    let ctx = Context::new(config(), store.clone(), Engines::default(), Arc::new(SystemClock));

    let migration = Migration::new(
        MigrationId::new_random(),
        ConnectionName::parse("src")?,
        ConnectionName::parse("dst")?,
        DatabaseName::parse(&database)?,
        Settings::default(),
        chrono::Utc::now(),
    );
    let transition = flow::start(migration);
    let outbox = Envelope::for_commands(&transition.migration.id, 1, transition.commands);
    let Created::New(migration) = store.create(&transition.migration, &outbox).await? else { panic!("new") };
    let id = migration.id.clone();

    let mut handled = Vec::new();
    let mut cutover_requested = false;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        pump_twice(&ctx, &store, &mut handled).await?;
        poll::tick(&ctx, &PollSettings::default()).await;
        poll::tick(&ctx, &PollSettings::default()).await; // every observation twice too
        let m = store.load(&id).await?.expect("stored");
        match m.status() {
            Status::ReadyForCutover if !cutover_requested => {
                let event = Event::CutoverRequested { confirm_traffic_stopped: true };
                handlers::apply(&ctx, &id, &event).await?;
                handlers::apply(&ctx, &id, &event).await?; // a second click
                cutover_requested = true;
            }
            Status::Completed => break,
            Status::Failed | Status::Cancelled => panic!("migration ended {:?}: {:?}", m.status(), m.reason()),
            _ => {}
        }
        // Late duplicates: everything handled so far, delivered again.
        store.enqueue(&handled).await?;
        anyhow::ensure!(Instant::now() < deadline, "not completed in time: {:?} {:?}", m.status(), m.reason());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Late duplicates after completion change nothing either.
    let before = store.load(&id).await?.expect("stored");
    store.enqueue(&handled).await?;
    pump_twice(&ctx, &store, &mut Vec::new()).await?;
    let after = store.load(&id).await?.expect("stored");
    assert_eq!(before, after, "duplicates after completion changed the migration");

    let count = |needle: &str| after.history.iter().filter(|h| h.message.contains(needle)).count();
    assert_eq!(count("source fenced"), 1, "{:#?}", after.history);
    assert_eq!(count("target is primary"), 1);
    assert_eq!(count("link created"), 1);
    assert_eq!(after.cutover.attempt, 1);
    pg::assert_target_matches_source(&database).await?;
    pg::drop_everywhere(&database).await;
    Ok(())
}
