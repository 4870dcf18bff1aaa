//! Settling a delivery, as a pure function: done, retry at a time (backoff inside), or give up.
//!
//! Both hosts call [`settle`] with the handler's outcome and the attempt number and act on the answer
//! with their own transport (the SQLite queue updates a row; the Azure host sends a scheduled message).
//! Time and randomness come in as arguments, so the rule is tested with a fixed clock and a seeded
//! random source, and a property test holds it to its bounds.
use chrono::{DateTime, Utc};
use milink_core::config::ServerConfig;
use milink_core::error::EngineError;
use rand::Rng;
use std::time::Duration;

/// How often and how patiently a failing step is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Deliveries of one message before it is given up (dead-lettered, the flow told).
    pub max_attempts: u32,
    /// The first retry's delay, before jitter.
    pub base_ms: u64,
    /// No retry waits longer than this.
    pub max_ms: u64,
}

impl RetryPolicy {
    /// The policy of the config's `[server]` section.
    pub fn of(server: &ServerConfig) -> Self {
        Self { max_attempts: server.max_attempts.max(1), base_ms: server.retry_base_ms, max_ms: server.retry_max_ms }
    }
}

/// What to do with a delivery once its handler has run.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    /// Handled: remove the message.
    Done,
    /// Deliver it again, as attempt `attempt`, not before `at`.
    Retry {
        /// The next attempt's number.
        attempt: u32,
        /// Not before.
        at: DateTime<Utc>,
        /// Why it failed this time.
        error: EngineError,
    },
    /// Attempts used up: tell the flow, keep the message as a dead letter.
    GiveUp {
        /// The last error.
        error: EngineError,
    },
}

/// Decides what happens to delivery number `attempt` (1-based) whose handler returned `outcome`.
pub fn settle(outcome: Result<(), EngineError>, attempt: u32, policy: &RetryPolicy, now: DateTime<Utc>, rng: &mut impl Rng) -> Settlement {
    let Err(error) = outcome else { return Settlement::Done };
    if attempt >= policy.max_attempts {
        return Settlement::GiveUp { error };
    }
    let delay = backoff(policy, attempt, rng);
    Settlement::Retry { attempt: attempt + 1, at: now + chrono::Duration::from_std(delay).unwrap_or_default(), error }
}

/// Exponential backoff with jitter: base·2^(attempt−1), capped, then a random 50–100 % of it so that
/// many migrations failing together do not retry in lockstep.
pub fn backoff(policy: &RetryPolicy, attempt: u32, rng: &mut impl Rng) -> Duration {
    let exponential = policy.base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(20)).min(policy.max_ms);
    Duration::from_millis(rng.gen_range(exponential / 2..=exponential.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{rngs::StdRng, SeedableRng};

    const POLICY: RetryPolicy = RetryPolicy { max_attempts: 6, base_ms: 500, max_ms: 30_000 };

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn failure() -> Result<(), EngineError> {
        Err(EngineError::transient("x", "it failed", "wait"))
    }

    #[test]
    fn success_is_done_whatever_the_attempt() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(settle(Ok(()), 1, &POLICY, now(), &mut rng), Settlement::Done);
        assert_eq!(settle(Ok(()), 99, &POLICY, now(), &mut rng), Settlement::Done);
    }

    #[test]
    fn the_last_attempt_gives_up_and_earlier_ones_retry_later() {
        let mut rng = StdRng::seed_from_u64(2);
        assert!(matches!(settle(failure(), 6, &POLICY, now(), &mut rng), Settlement::GiveUp { .. }));
        match settle(failure(), 1, &POLICY, now(), &mut rng) {
            Settlement::Retry { attempt, at, .. } => {
                assert_eq!(attempt, 2);
                assert!(at >= now() + chrono::Duration::milliseconds(250) && at <= now() + chrono::Duration::milliseconds(500));
            }
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #[test]
        fn retries_stay_within_their_doubling_bounds(seed in any::<u64>(), attempt in 1u32..40, max_attempts in 1u32..12) {
            let policy = RetryPolicy { max_attempts, ..POLICY };
            let mut rng = StdRng::seed_from_u64(seed);
            match settle(failure(), attempt, &policy, now(), &mut rng) {
                Settlement::Done => prop_assert!(false, "a failure is never done"),
                Settlement::GiveUp { .. } => prop_assert!(attempt >= max_attempts),
                Settlement::Retry { attempt: next, at, .. } => {
                    prop_assert!(attempt < max_attempts);
                    prop_assert_eq!(next, attempt + 1);
                    let ceiling = (500u64 << (attempt - 1).min(20)).min(30_000) as i64;
                    let waited = (at - now()).num_milliseconds();
                    prop_assert!(waited >= ceiling / 2 && waited <= ceiling, "attempt {} waited {} ms (ceiling {})", attempt, waited, ceiling);
                }
            }
        }
    }
}
