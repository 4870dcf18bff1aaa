//! The reverse link (`keepReverseLink`) and failback for PostgreSQL.
//!
//! A link always runs one way at a time, and both ways use the same names (`milink_<id>` for the
//! publication, the slot and the subscription, each on its own server), so a plan with source and target
//! swapped ([`reversed`]) is the reverse link, and the fence, the drain positions and the verification
//! built for the forward link work on it unchanged.
//!
//! Switch with a reverse link kept:
//! 1. the forward subscription is dropped (the drain has proven the target holds every change), then its
//!    slot and publication on the source (`link::switch`);
//! 2. [`create_from_now`] on the reversed plan: publication and slot on the target, subscription on the source
//!    with `copy_data = false`. The slot is created before the target takes writes (the pooler is still
//!    paused, or the application was stopped as confirmed), so every write on the target is in it;
//! 3. the target's own fence is lifted, if a failback left one (a second cutover after a failback);
//! 4. the pooler is repointed at the target and resumed (`pooler`).
//!
//! Failback mirrors it on the reversed plan: verify in full before anything is fenced, tracking what changes
//! (`verify::before_fence`: a difference proven there refuses the failback with nothing fenced), pause the
//! pooler, fence the target, wait until the source's subscription confirmed the fence position, carry
//! sequences and large objects back and compare what changed since (the finalize of the forward cutover, on
//! the reversed plan), drop the reverse link, create the forward link
//! again from the current position (so failing forward again is an ordinary cutover), unfence the source,
//! repoint the pooler at the source and resume it. The target stays fenced, as the source did after the
//! cutover. A failback that cannot prove the source holds everything gives the target its writes back and
//! fails: the target stays primary.
//!
//! Loops: changes never come back to where they were made, because a slot only ever starts after the
//! opposite subscription is gone (step 1 before step 2, and the reverse link dropped before the forward one
//! is made), so no slot decodes what the other direction applied. On PostgreSQL 16 and later the
//! subscription also says `origin = none`, which filters such changes out in the publisher as well.
//!
//! The fenced source and the reverse subscription: the fence is `default_transaction_read_only = on` for
//! the database and its roles' entries, which stops application roles; the subscription's apply worker
//! writes rows without the executor's read-only check, so it applies on the fenced source (the fence's
//! subscriptions module relies on the same fact). milink's own sessions turn read-only off before DDL.
//!
//! Crash safety: every step checks before it acts. The reverse subscription's existence on the source is
//! what tells a repeated failback whether the target still needs fencing, draining and verifying.
use crate::connect::{quiet_logging, subscription_oid, writable, Server, Session};
use crate::errors::classify_publisher_connect;
use crate::rules;
use crate::sql::{quote_ident, quote_literal};
use crate::{cutover, finalize, link, pooler, verify};
use milink_core::migration::{CutoverStep, StepDuration};
use milink_core::ports::LinkPlan;
use milink_core::EngineError;
use std::time::{Duration, Instant};

/// How often the failback's drain compares positions.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// The same link the other way: the target as publisher, the source as subscriber.
pub(crate) fn reversed(plan: &LinkPlan) -> LinkPlan {
    LinkPlan { source: plan.target.clone(), target: plan.source.clone(), ..plan.clone() }
}

/// After the forward link is removed: the reverse link, starting now, and the target's writes back.
pub(crate) async fn keep_reverse_link(plan: &LinkPlan) -> Result<(), EngineError> {
    let back = reversed(plan);
    create_from_now(&back).await?;
    // A failback fenced the target; this cutover makes it primary again.
    cutover::unfence(&back).await
}

/// Drops `plan`'s subscription on its (possibly fenced) subscriber, detached from its slot first, so the
/// publisher is not needed; `link::switch` then removes the slot and the publication.
pub(crate) async fn drop_subscription(plan: &LinkPlan) -> Result<(), EngineError> {
    let subscriber = Server::new("target", &plan.target)?;
    let session = subscriber.connect(Some(plan.database.as_str())).await?;
    writable(&session).await?;
    let name = plan.link_name();
    if subscription_oid(&session, &name).await?.is_none() {
        return Ok(());
    }
    let sub = quote_ident(&name);
    session.run("disabling the subscription", &format!("ALTER SUBSCRIPTION {sub} DISABLE")).await?;
    session.run("detaching the subscription from its slot", &format!("ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)")).await?;
    session.run("dropping the subscription", &format!("DROP SUBSCRIPTION IF EXISTS {sub}")).await
}

/// A link from `plan.source` to `plan.target` that carries what is written from now on, with no copy:
/// publication and slot on the source, subscription on the target. Safe to repeat.
pub(crate) async fn create_from_now(plan: &LinkPlan) -> Result<(), EngineError> {
    let publisher = Server::new("source", &plan.source)?;
    let subscriber = Server::new("target", &plan.target)?;
    let database = plan.database.as_str();
    let name = plan.link_name();
    let (src, tgt) = tokio::try_join!(publisher.connect(Some(database)), subscriber.connect(Some(database)))?;
    tokio::try_join!(writable(&src), writable(&tgt))?;
    if subscription_oid(&tgt, &name).await?.is_some() {
        return Ok(());
    }
    ensure_publication(&src, &name).await?;
    // A slot left by an attempt that stopped before its subscription was committed.
    src.rows(
        "dropping a leftover slot",
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active",
        &[&name],
    )
    .await?;
    // The slot first, on the publisher, in a statement of its own; then the subscription without creating
    // one. CREATE SUBSCRIPTION creating its slot holds a transaction on the subscriber while the slot waits
    // for every transaction running on the publisher: two such statements in opposite directions between
    // the same two servers (another link created the other way at that moment) wait for each other forever.
    // A CI run caught exactly that. Made here, the slot waits holding nothing on the subscriber.
    src.row("creating the reverse link's slot", "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", &[&name]).await?;
    let origin = match tgt.version_num().await? >= 160_000 {
        true => ", origin = none",
        false => "",
    };
    let link = Server::as_seen_by_target(&plan.source)?;
    let sql = format!(
        "CREATE SUBSCRIPTION {sub} CONNECTION {conninfo} PUBLICATION {sub}
         WITH (copy_data = false, create_slot = false, slot_name = {slot}, enabled = true{origin})",
        sub = quote_ident(&name),
        conninfo = quote_literal(&link.conninfo(database, &name)),
        slot = quote_literal(&name),
    );
    if !quiet_logging(&tgt).await? {
        tracing::warn!(link = %name, "the subscriber logs failing statements and milink's role cannot turn that off: \
                                      a failing CREATE SUBSCRIPTION would put the publisher's password in its log");
    }
    let doing = "creating the reverse link's subscription (connecting to the new primary)";
    tgt.try_run(&sql).await.map_err(|e| match e.as_db_error() {
        Some(db) if db.code().code().starts_with("08") => classify_publisher_connect(db.message(), link.place(), doing),
        _ => crate::errors::classify(&e, tgt.place(), doing),
    })?;
    tracing::info!(link = %name, from = %publisher.place().label(), "link created from the current position (no copy)");
    Ok(())
}

/// The publication of every table the forward link publishes, on the new publisher.
async fn ensure_publication(src: &Session, name: &str) -> Result<(), EngineError> {
    let exists = src
        .maybe_row("looking for the publication", "SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await?
        .is_some();
    if exists {
        return Ok(());
    }
    let tables = rules::tables(src).await?;
    let list: Vec<String> = tables.iter().filter(|t| t.is_published()).map(|t| t.sql_name()).collect();
    let sql = match list.is_empty() {
        true => format!("CREATE PUBLICATION {}", quote_ident(name)),
        false => format!("CREATE PUBLICATION {} FOR TABLE {}", quote_ident(name), list.join(", ")),
    };
    src.run("creating the publication", &sql).await
}

/// Makes the source primary again over the reverse link. See the module doc.
pub(crate) async fn failback(plan: &LinkPlan) -> Result<Vec<StepDuration>, EngineError> {
    let started = Instant::now();
    let back = reversed(plan);
    let mut steps = Vec::new();
    if reverse_link_exists(plan).await? {
        // As a cutover does: verify in full while the target still takes writes, and track what changes,
        // so the comparison after the fence reads only that (the fence step's time includes it).
        let pausing = Instant::now();
        match verify::before_fence(&back).await {
            Ok(verification) if verification.proves_a_difference() => {
                return Err(EngineError::definite(
                    "failback_not_equal",
                    format!(
                        "failback refused before the fence (nothing was fenced), the source does not hold what the target holds: {}",
                        verification.summary()
                    ),
                    "The target stays primary and writable. Repair the differences on the source (or fail forward and \
                     start a new migration), then fail back again.",
                ));
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error.message, "failback: no verification before the fence; the comparison after it reads every row"),
        }
        let paused = match pooler::pause(plan).await {
            Ok(paused) => paused,
            Err(error) => {
                cutover::hold::release(&back).await;
                stop_tracking_quietly(&back).await;
                return Err(error);
            }
        };
        if let Err(error) = hand_back(plan, &back, pausing, &mut steps).await {
            // The target stays primary: its writes back, then the pooler's clients released to it.
            if let Err(unfence) = cutover::unfence(&back).await {
                tracing::warn!(error = %unfence.message, "failback: could not unfence the target after the failback failed");
            }
            stop_tracking_quietly(&back).await;
            if let Some(pooler) = &paused {
                pooler::resume_quietly(pooler, plan.database.as_str()).await;
            }
            return Err(error);
        }
    }
    let step = Instant::now();
    // What is left of the reverse link: slot and publication on the target (a reverse link never seeds).
    link::switch(&back, &crate::seed::Seeders::default()).await?;
    create_from_now(plan).await?; // the forward link again, before the source takes writes
    cutover::unfence(plan).await?;
    pooler::repoint_to(plan, &plan.source).await?;
    steps.push(StepDuration { step: CutoverStep::Switching, ms: step.elapsed().as_millis() as i64 });
    tracing::info!(
        database = %plan.database.as_str(),
        switch_ms = step.elapsed().as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "failed back: the source is primary, the link runs from the source to the target again"
    );
    Ok(steps)
}

/// Removes the reverse link for good (the migration is final): the subscription on the source, detached
/// from its slot first, then the slot and the publication on the target, as failback does. The source
/// stays fenced. Safe to repeat.
pub(crate) async fn drop_reverse_link(plan: &LinkPlan) -> Result<(), EngineError> {
    let back = reversed(plan);
    cutover::hold::release_or_fail(&back).await?; // the same for a hold on the target's server
    verify::stop_tracking(&back).await?; // a failback that stopped half way may have left them
    drop_subscription(&back).await?;
    link::switch(&back, &crate::seed::Seeders::default()).await?;
    tracing::info!(database = %plan.database.as_str(), "reverse link removed: the target no longer keeps WAL for the source");
    Ok(())
}

/// Drops the failback verification's tracking slots (they hold WAL on both servers); a failure is logged.
async fn stop_tracking_quietly(back: &LinkPlan) {
    if let Err(error) = verify::stop_tracking(back).await {
        tracing::warn!(error = %error.message, "failback: the verification's tracking slots stay until the next failback, removal of the reverse link, or cancel");
    }
}

async fn reverse_link_exists(plan: &LinkPlan) -> Result<bool, EngineError> {
    let source = Server::new("source", &plan.source)?;
    let session = source.connect(Some(plan.database.as_str())).await?;
    Ok(subscription_oid(&session, &plan.link_name()).await?.is_some())
}

/// Fence the target, drain the reverse link, verify, drop the reverse subscription; each step's duration
/// is added to `steps` (the fence's from `since`: the pooler's pause is part of it, as in a cutover).
async fn hand_back(plan: &LinkPlan, back: &LinkPlan, since: Instant, steps: &mut Vec<StepDuration>) -> Result<(), EngineError> {
    // The verification before the fence engaged the synchronous hold on the target's server (`cutover::hold`).
    let fenced = cutover::fence(back).await;
    cutover::hold::release(back).await;
    let position = fenced?;
    let fence_ms = since.elapsed().as_millis() as u64;
    steps.push(StepDuration { step: CutoverStep::Fencing, ms: fence_ms as i64 });
    let step = Instant::now();
    let drained = drain(back, position.0, Duration::from_secs(plan.settings.drain_timeout_seconds)).await;
    cutover::forget(back);
    drained?;
    let drain_ms = step.elapsed().as_millis() as u64;
    steps.push(StepDuration { step: CutoverStep::Draining, ms: drain_ms as i64 });
    let step = Instant::now();
    let verification = finalize::finalize(back).await;
    verify::forget_taken(&back.link_name());
    let verification = verification?;
    if !verification.is_clean() {
        return Err(EngineError::definite(
            "failback_not_equal",
            format!("failback refused, the source does not hold what the target holds: {}", verification.summary()),
            "The target stays primary and writable. Repair the differences on the source (or fail forward and \
             start a new migration), then fail back again.",
        ));
    }
    let finalize_ms = step.elapsed().as_millis() as u64;
    steps.push(StepDuration { step: CutoverStep::Finalizing, ms: finalize_ms as i64 });
    drop_subscription(back).await?;
    tracing::info!(fence_ms, drain_ms, finalize_ms, sequences = verification.sequences_set, "failback: target fenced, drained and verified");
    Ok(())
}

/// Waits until the source's reverse subscription has confirmed `position` on the target's slot.
async fn drain(back: &LinkPlan, position: u64, timeout: Duration) -> Result<(), EngineError> {
    let deadline = Instant::now() + timeout;
    loop {
        let positions = cutover::positions(back).await?;
        if positions.target.0 >= position {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(EngineError::transient(
                "failback_drain_timeout",
                format!(
                    "the source did not confirm every change of the target within {} s (reached {}, needed {position})",
                    timeout.as_secs(),
                    positions.target.0
                ),
                "The target stays primary and writable. Check the reverse subscription on the source \
                 (pg_stat_subscription, the source's log), then fail back again.",
            ));
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// What the reverse link needs of the target, checked by `validate` when `keepReverseLink` is set: the
/// target publishes (logical WAL) and has a slot and a sender to spare for the source's subscription.
pub(crate) async fn validate(target_admin: &Session) -> Result<Vec<milink_core::Finding>, EngineError> {
    use milink_core::{Finding, Severity};
    let row = target_admin
        .row(
            "reading what the reverse link needs of the target",
            "SELECT current_setting('wal_level'),
                    current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)::int,
                    current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication)::int",
            &[],
        )
        .await?;
    let (wal_level, free_slots, free_senders): (String, i32, i32) = (row.get(0), row.get(1), row.get(2));
    let address = &target_admin.place().address;
    let mut findings = Vec::new();
    if wal_level != "logical" {
        findings.push(Finding::new(
            "reverse_link_needs_logical_wal",
            Severity::Blocker,
            format!("keepReverseLink: the target ({address}) has wal_level = {wal_level}, so it cannot publish the reverse link"),
            "Set wal_level = logical on the target and restart it, or start the migration with keepReverseLink = false.",
        ));
    }
    if free_slots < 1 || free_senders < 1 {
        findings.push(Finding::new(
            "reverse_link_needs_a_slot",
            Severity::Warning,
            format!("keepReverseLink: the target ({address}) has {free_slots} replication slot(s) and {free_senders} WAL sender(s) free now; the reverse link needs one of each at cutover"),
            "Raise max_replication_slots and max_wal_senders on the target (restart), or free one before the cutover.",
        ));
    }
    Ok(findings)
}
