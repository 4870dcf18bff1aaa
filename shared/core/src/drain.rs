//! The drain rule, pure: a cutover's target has caught up when its confirmed position is at or past the
//! fence position and has stayed at that same position for the stable period.
//!
//! Engines differ only in what they feed it: PostgreSQL the slot's `confirmed_flush_lsn` (final, so the
//! stable period is 0 unless the user asks for one), the MI link the managed instance's hardened LSN (whose
//! documented rule asks for a stable period). The cutover's drain step asks the engine for positions and
//! this rule for the verdict, so the rule lives in one place and is tested with an injected clock.
use crate::migration::Position;
use chrono::{DateTime, Duration, Utc};

/// What one sample says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainVerdict {
    /// Not yet (behind the fence position, or not stable long enough).
    Wait,
    /// Caught up: the position that proved it.
    Drained(Position),
}

/// The rule for one drain: the fence position to reach and how long the target must stay put there.
#[derive(Debug, Clone)]
pub struct DrainRule {
    fence: Position,
    stable_for: Duration,
    reached: Option<(Position, DateTime<Utc>)>,
}

impl DrainRule {
    /// A rule for reaching `fence` and staying there `stable_seconds`.
    pub fn new(fence: Position, stable_seconds: u64) -> Self {
        let stable_for = Duration::seconds(i64::try_from(stable_seconds).unwrap_or(i64::MAX / 1000));
        Self { fence, stable_for, reached: None }
    }

    /// The position to reach.
    pub fn fence(&self) -> Position {
        self.fence
    }

    /// The stable period asked for.
    pub fn stable_for(&self) -> Duration {
        self.stable_for
    }

    /// Since when the target has held its current position at or past the fence, if it has.
    pub fn held_since(&self) -> Option<DateTime<Utc>> {
        self.reached.map(|(_, since)| since)
    }

    /// Feeds the target's confirmed position at `now`.
    pub fn observe(&mut self, target: Position, now: DateTime<Utc>) -> DrainVerdict {
        if target < self.fence {
            self.reached = None;
            return DrainVerdict::Wait;
        }
        let since = match self.reached {
            Some((position, since)) if position == target => since,
            _ => {
                self.reached = Some((target, now));
                now
            }
        };
        match now - since >= self.stable_for {
            true => DrainVerdict::Drained(target),
            false => DrainVerdict::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_800_000_000_000 + ms).unwrap()
    }

    #[test]
    fn a_final_confirmation_drains_at_once_and_a_stable_period_waits() {
        let mut at_once = DrainRule::new(Position(100), 0);
        assert_eq!(at_once.observe(Position(99), t(0)), DrainVerdict::Wait);
        assert_eq!(at_once.observe(Position(120), t(1)), DrainVerdict::Drained(Position(120)));
        let mut stable = DrainRule::new(Position(100), 10);
        assert_eq!(stable.observe(Position(100), t(0)), DrainVerdict::Wait);
        assert_eq!(stable.observe(Position(100), t(9_999)), DrainVerdict::Wait);
        assert_eq!(stable.observe(Position(100), t(10_000)), DrainVerdict::Drained(Position(100)));
    }

    #[test]
    fn a_moving_target_restarts_the_stable_period() {
        let mut rule = DrainRule::new(Position(100), 10);
        rule.observe(Position(100), t(0));
        assert_eq!(rule.observe(Position(101), t(9_000)), DrainVerdict::Wait);
        assert_eq!(rule.observe(Position(101), t(18_000)), DrainVerdict::Wait);
        assert_eq!(rule.observe(Position(101), t(19_000)), DrainVerdict::Drained(Position(101)));
    }

    proptest! {
        /// Whatever the samples, a verdict of Drained names a position at or past the fence that the last
        /// samples held, unchanged, for the whole stable period.
        #[test]
        fn drained_only_at_or_past_the_fence_and_after_a_stable_run(
            fence in 0u64..50,
            stable in 0u64..5,
            samples in proptest::collection::vec((0u64..60, 0i64..3_000), 1..40),
        ) {
            let mut rule = DrainRule::new(Position(fence), stable);
            let mut now = 0;
            let mut history: Vec<(u64, i64)> = Vec::new();
            for (position, step) in samples {
                now += step;
                history.push((position, now));
                if let DrainVerdict::Drained(p) = rule.observe(Position(position), t(now)) {
                    prop_assert_eq!(p.0, position);
                    prop_assert!(position >= fence);
                    let run_start = history.iter().rev().take_while(|(q, _)| *q == position).last().unwrap().1;
                    prop_assert!(now - run_start >= stable as i64 * 1000, "drained after {} ms of a {} s rule", now - run_start, stable);
                }
            }
        }
    }
}
