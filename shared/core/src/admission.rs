//! Admission control: which queued migrations may create their link now, and why the others wait.
//!
//! A link holds resources on both servers for as long as it lives. For PostgreSQL: a replication slot
//! and a WAL sender on the source, an apply worker (from `max_logical_replication_workers`, itself
//! drawn from `max_worker_processes`) on the target, plus, while seeding, table-sync workers, each with a
//! temporary slot and WAL sender of its own. Start more links than that and PostgreSQL does not refuse:
//! the apply workers take every worker and the table syncs wait forever (the starvation issue 10 shows).
//! So milink reserves before it starts: a link is admitted only when, on each server, what the server
//! has ([`Pool::total`]) minus what is in use ([`Pool::in_use`], read from the server, so other tools'
//! links count too) minus what milink's own admitted-but-not-yet-visible links will take still leaves
//! room for the new link while it seeds.
//!
//! "Not yet visible" is counted per link: an admitted link reserves what it needs
//! ([`Pool::seeding_need`] while seeding, [`Pool::streaming_need`] after) minus what the server already
//! shows it using ([`Pool::by_link`]), so a link is never counted twice and never zero times.
//!
//! Order: queued migrations are considered oldest first. Once one waits on a server, younger ones that
//! need the same server wait behind it ("in start order", no overtaking), while migrations on other
//! servers go ahead. User caps ([`Caps`]) count milink's active links globally, per source and per target.
//!
//! This module is pure: the runtime reads the capacities (engine I/O) and applies the verdicts as
//! `Admitted` / `StillQueued` events. Two connection names that point at one server are counted as two
//! servers (milink cannot tell); the caps still hold.
use crate::migration::{LinkPhase, Migration, Phase};
use crate::names::{ConnectionName, MigrationId};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// Which side of a link a server is on: the resources differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Where the link reads from (slots, WAL senders).
    Source,
    /// Where the link applies (workers).
    Target,
}

/// One kind of resource on one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// What one unit is called, singular ("logical replication worker").
    pub what: String,
    /// The server setting that sets the total ("max_logical_replication_workers").
    pub setting: String,
    /// What the server has.
    pub total: u32,
    /// What is in use now, by anyone.
    pub in_use: u32,
    /// Of `in_use`, what each milink link (by link name) uses.
    pub by_link: BTreeMap<String, u32>,
    /// What a link needs while it seeds (apply plus one table sync, for PostgreSQL workers).
    pub seeding_need: u32,
    /// What a link needs once it streams.
    pub streaming_need: u32,
}

/// What a server has, as its engine reads it for one role.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capacity {
    /// Every resource a link takes on this server.
    pub pools: Vec<Pool>,
}

/// The user's caps on active migrations (`[admission]` in the config). Active = admitted and not
/// finished: Deploying, syncing, cutting over, cancelling.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Caps {
    /// Active migrations in total.
    pub max_active: Option<u32>,
    /// Active migrations per source connection.
    pub max_active_per_source: Option<u32>,
    /// Active migrations per target connection.
    pub max_active_per_target: Option<u32>,
}

/// What admission says about one queued migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Create the link now.
    Admit,
    /// Keep waiting, for this reason.
    Wait(String),
}

/// The name milink gives a migration's link objects (publication, subscription, slot, AG).
pub fn link_name(id: &MigrationId) -> String {
    format!("milink_{}", id.short())
}

/// A migration that holds resources on its servers (admitted, not finished).
pub fn holds_capacity(m: &Migration) -> bool {
    matches!(m.phase, Phase::Deploying | Phase::Syncing | Phase::CuttingOver { .. } | Phase::Cancelling)
}

fn seeding(m: &Migration) -> bool {
    match m.phase {
        Phase::Deploying => true,
        Phase::Syncing => m.observation.as_ref().is_none_or(|o| o.phase != LinkPhase::Streaming),
        _ => false,
    }
}

/// Decides every queued migration in `queued` (any order; sorted here oldest first), given the other
/// unfinished ones in `active` (those that [`holds_capacity`] count against the servers; those still
/// validating, older than a queued one on the same server, keep their place in line), every migration of
/// the fleet plans the queued ones belong to in `members` (finished ones too: a wave's gate,
/// [`crate::fleet::gate`], looks at the earlier waves), the servers' capacities by (connection, role) (a
/// missing entry means "unknown": only the caps apply) and the user's caps.
///
/// A migration whose wave has not opened waits without holding its place on its servers: younger ones
/// that need the same servers go ahead of it.
pub fn decide(
    queued: &[&Migration],
    active: &[&Migration],
    members: &[&Migration],
    capacities: &BTreeMap<(ConnectionName, Role), Result<Capacity, String>>,
    caps: &Caps,
) -> Vec<(MigrationId, Verdict)> {
    let mut queued = queued.to_vec();
    queued.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let mut holders: Vec<(&Migration, bool)> = active.iter().filter(|m| holds_capacity(m)).map(|m| (*m, seeding(m))).collect();
    let mut blocked: BTreeSet<(ConnectionName, Role)> = BTreeSet::new();
    let mut verdicts = Vec::new();
    // Validations still running (not stalled) hold their place: a younger migration whose validation
    // happened to finish first must not take the room of an older one.
    let validating: Vec<&Migration> =
        active.iter().filter(|m| m.phase == Phase::Validating && m.stall.is_none()).copied().collect();
    for m in queued {
        for older in validating.iter().filter(|v| (v.created_at, &v.id) < (m.created_at, &m.id)) {
            blocked.insert((older.source.clone(), Role::Source));
            blocked.insert((older.target.clone(), Role::Target));
        }
        if let Some(reason) = crate::fleet::gate(m, members) {
            verdicts.push((m.id.clone(), Verdict::Wait(reason)));
            continue;
        }
        let sides = [(m.source.clone(), Role::Source), (m.target.clone(), Role::Target)];
        // Only the side that is short blocks younger migrations: one on another target still goes ahead.
        let (verdict, short_side) = if let Some(side) = sides.iter().find(|s| blocked.contains(s)) {
            (Verdict::Wait(format!("waiting behind older queued migrations on {}", side.0)), None)
        } else if let Some((reason, side)) = over_cap(m, &holders, caps) {
            (Verdict::Wait(reason), side)
        } else {
            match sides.iter().find_map(|side| short_on(side, &holders, capacities).map(|r| (r, side.clone()))) {
                Some((reason, side)) => (Verdict::Wait(reason), Some(side)),
                None => (Verdict::Admit, None),
            }
        };
        if verdict == Verdict::Admit {
            holders.push((m, true));
        }
        blocked.extend(short_side);
        verdicts.push((m.id.clone(), verdict));
    }
    verdicts
}

fn over_cap(m: &Migration, holders: &[(&Migration, bool)], caps: &Caps) -> Option<(String, Option<(ConnectionName, Role)>)> {
    let count = |f: &dyn Fn(&Migration) -> bool| holders.iter().filter(|(h, _)| f(h)).count() as u32;
    if let Some(cap) = caps.max_active {
        let n = count(&|_| true);
        if n >= cap {
            return Some((format!("waiting for a free migration slot: {n} of {cap} active (admission.max_active)"), None));
        }
    }
    if let Some(cap) = caps.max_active_per_source {
        let n = count(&|h| h.source == m.source);
        if n >= cap {
            let reason = format!("waiting for a free migration slot on source {}: {n} of {cap} active (admission.max_active_per_source)", m.source);
            return Some((reason, Some((m.source.clone(), Role::Source))));
        }
    }
    if let Some(cap) = caps.max_active_per_target {
        let n = count(&|h| h.target == m.target);
        if n >= cap {
            let reason = format!("waiting for a free migration slot on target {}: {n} of {cap} active (admission.max_active_per_target)", m.target);
            return Some((reason, Some((m.target.clone(), Role::Target))));
        }
    }
    None
}

fn short_on(
    side: &(ConnectionName, Role),
    holders: &[(&Migration, bool)],
    capacities: &BTreeMap<(ConnectionName, Role), Result<Capacity, String>>,
) -> Option<String> {
    let capacity = match capacities.get(side)? {
        Ok(capacity) => capacity,
        Err(error) => return Some(format!("waiting: cannot read the capacity of {}: {error}", side.0)),
    };
    let on_side = |h: &Migration| match side.1 {
        Role::Source => h.source == side.0,
        Role::Target => h.target == side.0,
    };
    for pool in &capacity.pools {
        let reserved: u32 = holders
            .iter()
            .filter(|(h, _)| on_side(h))
            .map(|(h, seeding)| {
                let need = if *seeding { pool.seeding_need } else { pool.streaming_need };
                need.saturating_sub(pool.by_link.get(&link_name(&h.id)).copied().unwrap_or(0))
            })
            .sum();
        let used = pool.in_use + reserved;
        if used + pool.seeding_need > pool.total {
            return Some(format!(
                "waiting for a {} on {}: {} of {} in use ({}; a starting link needs {})",
                pool.what,
                side.0,
                used,
                pool.total,
                pool.setting,
                pool.seeding_need
            ));
        }
    }
    None
}

/// Pools of a server that can never hold one starting link, whatever else ends: validation reports
/// these up front instead of queueing forever.
pub fn never_fits(server: &ConnectionName, capacity: &Capacity) -> Vec<String> {
    capacity
        .pools
        .iter()
        .filter(|pool| pool.total < pool.seeding_need)
        .map(|pool| {
            format!(
                "{} has {} = {}, but a starting link needs {} {}s: the migration could never start",
                server, pool.setting, pool.total, pool.seeding_need, pool.what
            )
        })
        .collect()
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
