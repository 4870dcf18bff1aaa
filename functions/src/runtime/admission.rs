//! Admission control at run time, for both hosts: read what the servers of the queued migrations have
//! and use, let the pure rule ([`milink_core::admission::decide`]) pick who starts, and apply its
//! verdicts as `Admitted` / `StillQueued` events.
//!
//! It runs on every poll tick (so a queued migration starts within a tick of capacity freeing: a link
//! that finished seeding, a migration that completed or was cancelled, a DBA raising a setting) and right
//! after a validation queues a migration (so a migration that fits starts at once, not a tick later).
//!
//! Within a process one round runs at a time (a mutex), so two rounds never admit into the same free
//! worker. Across processes (the Azure host's instances) nothing serializes the validate handler's
//! round with the timer's; two rounds at the same moment can each admit one migration into the same
//! room, overshooting by the number of racing rounds. The Azure timer runs as a singleton, so the race is
//! only between it and a validation finishing at that moment; a PostgreSQL link that does not get a
//! worker at once waits for one rather than failing, so an overshoot slows a link, it does not break it.
use crate::context::Context;
use crate::handlers::apply;
use milink_core::admission::{self, Capacity, Role, Verdict};
use milink_core::flow::Event;
use milink_core::migration::{Migration, Phase};
use milink_core::names::ConnectionName;
use milink_core::ports::MigrationFilter;
use std::collections::BTreeMap;
use std::time::Duration;

/// A server slow to answer must not hold up the tick.
const CAPACITY_TIMEOUT: Duration = Duration::from_secs(10);

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    /// Queued migrations considered.
    pub queued: usize,
    /// Admitted (their link is being created).
    pub admitted: usize,
}

static ROUND: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One admission round over every queued migration.
pub async fn run(ctx: &Context) -> Round {
    let _one_at_a_time = ROUND.lock().await;
    let migrations = match ctx.migrations.list(&MigrationFilter { active_only: true }).await {
        Ok(migrations) => migrations,
        Err(error) => {
            tracing::warn!(%error, "admission: cannot list migrations");
            return Round::default();
        }
    };
    let queued: Vec<&Migration> = migrations.iter().filter(|m| matches!(m.phase, Phase::Queued { .. })).collect();
    if queued.is_empty() {
        return Round::default();
    }
    let active: Vec<&Migration> = migrations.iter().filter(|m| !matches!(m.phase, Phase::Queued { .. })).collect();
    // A wave's gate looks at the earlier waves, finished migrations too: read them only when a plan waits.
    let plans: std::collections::BTreeSet<&str> = queued.iter().filter_map(|m| m.fleet.as_ref()).map(|f| f.plan.as_str()).collect();
    let all = match plans.is_empty() {
        true => Vec::new(),
        false => match ctx.migrations.list(&MigrationFilter::default()).await {
            Ok(all) => all,
            Err(error) => {
                tracing::warn!(%error, "admission: cannot list the fleet plans' migrations");
                return Round::default();
            }
        },
    };
    let members: Vec<&Migration> = all.iter().filter(|m| m.fleet.as_ref().is_some_and(|f| plans.contains(f.plan.as_str()))).collect();
    let capacities = read_capacities(ctx, &queued).await;
    let verdicts = admission::decide(&queued, &active, &members, &capacities, &ctx.config.admission);
    let mut round = Round { queued: queued.len(), admitted: 0 };
    for (id, verdict) in verdicts {
        let event = match verdict {
            Verdict::Admit => {
                round.admitted += 1;
                tracing::info!(migration = %id, "admitted");
                Event::Admitted
            }
            Verdict::Wait(reason) => Event::StillQueued { reason },
        };
        if let Err(error) = apply(ctx, &id, &event).await {
            tracing::warn!(migration = %id, %error, "admission: could not record the verdict");
        }
    }
    round
}

/// The capacity of every server a queued migration needs, read once per (connection, role).
async fn read_capacities(ctx: &Context, queued: &[&Migration]) -> BTreeMap<(ConnectionName, Role), Result<Capacity, String>> {
    let mut capacities = BTreeMap::new();
    for m in queued {
        for (name, role) in [(&m.source, Role::Source), (&m.target, Role::Target)] {
            let key = (name.clone(), role);
            if capacities.contains_key(&key) {
                continue;
            }
            if let Some(read) = read_one(ctx, m, name, role).await {
                capacities.insert(key, read);
            }
        }
    }
    capacities
}

/// `None` when the engine cannot tell (only the caps apply).
async fn read_one(ctx: &Context, m: &Migration, name: &ConnectionName, role: Role) -> Option<Result<Capacity, String>> {
    let (plan, engine) = match crate::handlers::link_for(ctx, m) {
        Ok(found) => found,
        Err(error) => return Some(Err(error.message)),
    };
    let endpoint = if role == Role::Source { &plan.source } else { &plan.target };
    debug_assert_eq!(&endpoint.name, name);
    match tokio::time::timeout(CAPACITY_TIMEOUT, engine.capacity(endpoint, role)).await {
        Ok(Ok(capacity)) => capacity.map(Ok),
        Ok(Err(error)) => Some(Err(error.message)),
        Err(_) => Some(Err(format!("it did not answer within {} s", CAPACITY_TIMEOUT.as_secs()))),
    }
}

/// Findings for validation: servers that could never hold this link, whatever else ends.
pub async fn never_fits(ctx: &Context, m: &Migration) -> Vec<String> {
    let mut reasons = Vec::new();
    for (name, role) in [(&m.source, Role::Source), (&m.target, Role::Target)] {
        if let Some(Ok(capacity)) = read_one(ctx, m, name, role).await {
            reasons.extend(admission::never_fits(name, &capacity));
        }
    }
    reasons
}
