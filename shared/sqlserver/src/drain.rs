//! The cutover decision: has the managed instance hardened everything SQL Server hardened?
//!
//! The documented rule (mi-link.md §3.3) is that `last_hardened_lsn` on SQL Server and on the MI "match,
//! and remain matched and unchanged for some time". [`DrainJudge`] applies it to a sequence of samples: it
//! says caught up only when both positions are present, equal, and have stayed equal *and unchanged* for
//! `stable_for`; any difference or movement restarts the clock. It is pure (time comes in with each sample),
//! so the rule is tested with constructed timelines, and the engine's `switch` uses it as a last guard —
//! only once [`synchronous_problem`] says both sides are in synchronous commit, connected and synchronized.
use crate::arm::models::DistributedAvailabilityGroup;
use crate::observe::SqlServerLinkView;
use chrono::{DateTime, Utc};
use milink_core::drain::{DrainRule, DrainVerdict};
use milink_core::migration::Position;

/// Why the link is not in a state where equal hardened LSNs prove anything, `None` when it is.
///
/// Equality alone is weak: on a synchronous-commit primary the local `last_hardened_lsn` is the minimum
/// across its synchronous secondaries, and while the switch to synchronous commit has not taken effect (or the
/// MI is disconnected) the two numbers can match without the MI holding everything. So both members of the
/// distributed AG must report `SYNCHRONOUS_COMMIT` (the switch took effect on SQL Server), ARM must report
/// `replicationMode: Sync` when it reports a mode (the MI's side), and the MI's replica must be `CONNECTED` (as
/// SQL Server and, when it says, ARM see it) and `SYNCHRONIZED` — the state a synchronous secondary reaches
/// only when it has hardened the primary's log. This is the check of Microsoft's planned failover of a
/// distributed availability group (switch both members to synchronous commit, wait until the database is
/// SYNCHRONIZED and the hardened LSNs are the same) and of the MI link cutover scripts.
pub fn synchronous_problem(view: &SqlServerLinkView, dag: Option<&DistributedAvailabilityGroup>) -> Option<String> {
    let (Some(local), Some(remote)) = (view.local(), view.remote()) else {
        return Some("SQL Server reports no replica pair for the link".into());
    };
    for (side, row) in [("SQL Server's", local), ("the managed instance's", remote)] {
        let mode = row.availability_mode_desc.as_deref().unwrap_or("unknown");
        if mode != "SYNCHRONOUS_COMMIT" {
            return Some(format!("{side} member of the distributed availability group is {mode}, not SYNCHRONOUS_COMMIT (the switch to synchronous commit has not taken effect)"));
        }
    }
    if let Some(mode) = dag.and_then(|d| d.properties.replication_mode.as_deref()).filter(|m| !m.eq_ignore_ascii_case("Sync")) {
        return Some(format!("the managed instance reports replicationMode {mode}, not Sync"));
    }
    let arm_connected = dag.and_then(|d| d.properties.databases.first()).and_then(|d| d.connected_state.as_deref());
    if let Some(state) = arm_connected.filter(|s| !s.eq_ignore_ascii_case("CONNECTED")) {
        return Some(format!("the managed instance reports its replica {state}"));
    }
    let connected = remote.connected_state_desc.as_deref().unwrap_or("unknown");
    if connected != "CONNECTED" {
        return Some(format!("the managed instance's replica is {connected}"));
    }
    let state = remote.synchronization_state_desc.as_deref().unwrap_or("unknown");
    if state != "SYNCHRONIZED" {
        return Some(format!("the managed instance's replica is {state}, not SYNCHRONIZED"));
    }
    None
}

/// What the samples so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainDecision {
    /// Equal and stable: safe to switch at this position.
    CaughtUp(Position),
    /// Not yet, and why.
    Wait(String),
}

/// Applies the equal-and-stable rule to successive samples: the core's drain rule
/// ([`milink_core::drain::DrainRule`]) with SQL Server's hardened LSN as the position to reach, started
/// again whenever that position moves or the two differ.
#[derive(Debug, Clone)]
pub struct DrainJudge {
    stable_seconds: u64,
    rule: Option<DrainRule>,
}

impl DrainJudge {
    /// A judge requiring `stable_seconds` of equal, unchanged positions (0 = equal once is enough).
    pub fn new(stable_seconds: u64) -> Self {
        Self { stable_seconds, rule: None }
    }

    /// The link is not synchronous and connected ([`synchronous_problem`]): equal positions prove nothing, and
    /// the stable window starts again.
    pub fn not_ready(&mut self, reason: String) -> DrainDecision {
        self.rule = None;
        DrainDecision::Wait(reason)
    }

    /// Feeds one sample (SQL Server's and the MI's `last_hardened_lsn` as positions).
    pub fn observe(&mut self, source: Option<Position>, target: Option<Position>, at: DateTime<Utc>) -> DrainDecision {
        let (Some(source), Some(target)) = (source, target) else {
            self.rule = None;
            return DrainDecision::Wait(format!(
                "last_hardened_lsn is not reported on {} yet (the link must be in synchronous commit)",
                if source.is_none() { "SQL Server" } else { "the managed instance" }
            ));
        };
        if source != target {
            self.rule = None;
            return DrainDecision::Wait(format!("last_hardened_lsn differs: SQL Server {} / managed instance {}", source.0, target.0));
        }
        // SQL Server's position moved: the MI must now hold the new one, for the whole window again.
        let stable_seconds = self.stable_seconds;
        let rule = match &mut self.rule {
            Some(rule) if rule.fence() == source => rule,
            slot => slot.insert(DrainRule::new(source, stable_seconds)),
        };
        match rule.observe(target, at) {
            DrainVerdict::Drained(position) => DrainDecision::CaughtUp(position),
            DrainVerdict::Wait => DrainDecision::Wait(format!(
                "last_hardened_lsn equal for {}s of the {}s required",
                rule.held_since().map_or(0, |since| (at - since).num_seconds()),
                rule.stable_for().num_seconds()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn equal_and_unchanged_for_the_window_is_caught_up() {
        let mut judge = DrainJudge::new(10);
        let p = Some(Position(42));
        assert!(matches!(judge.observe(p, p, t(0)), DrainDecision::Wait(_)));
        assert!(matches!(judge.observe(p, p, t(9)), DrainDecision::Wait(_)));
        assert_eq!(judge.observe(p, p, t(10)), DrainDecision::CaughtUp(Position(42)));
    }

    #[test]
    fn movement_or_difference_restarts_the_clock() {
        let mut judge = DrainJudge::new(10);
        judge.observe(Some(Position(1)), Some(Position(1)), t(0));
        // both moved to 2: equal, but changed → the window restarts
        assert!(matches!(judge.observe(Some(Position(2)), Some(Position(2)), t(8)), DrainDecision::Wait(_)));
        assert!(matches!(judge.observe(Some(Position(2)), Some(Position(2)), t(12)), DrainDecision::Wait(_)));
        // a difference in between restarts it too
        assert!(matches!(judge.observe(Some(Position(3)), Some(Position(2)), t(13)), DrainDecision::Wait(_)));
        assert!(matches!(judge.observe(Some(Position(3)), Some(Position(3)), t(14)), DrainDecision::Wait(_)));
        assert_eq!(judge.observe(Some(Position(3)), Some(Position(3)), t(24)), DrainDecision::CaughtUp(Position(3)));
    }

    #[test]
    fn a_missing_side_never_counts() {
        let mut judge = DrainJudge::new(0);
        assert!(matches!(judge.observe(None, Some(Position(1)), t(0)), DrainDecision::Wait(_)));
        assert!(matches!(judge.observe(Some(Position(1)), None, t(0)), DrainDecision::Wait(_)));
        assert_eq!(judge.observe(Some(Position(1)), Some(Position(1)), t(0)), DrainDecision::CaughtUp(Position(1)));
    }
}
