//! The retry schedule: exponential backoff with deterministic jitter, in dataflow time.

use serde::{Deserialize, Serialize};

use crate::Time;

/// When to try again after a transient failure. Times are microseconds of dataflow time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Delay before the first retry (attempt 2).
    pub initial_backoff: Time,
    /// Each further retry waits this many times longer than the previous one...
    pub multiplier: u32,
    /// ...but never longer than this.
    pub max_backoff: Time,
    /// Attempts in all, the first included; a transient failure of the last one dead-letters.
    pub max_attempts: u32,
    /// Up to this percentage of a backoff is taken off, spreading retries that failed together.
    pub jitter_percent: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: 1_000_000,
            multiplier: 2,
            max_backoff: 300_000_000,
            max_attempts: 8,
            jitter_percent: 20,
        }
    }
}

impl RetryPolicy {
    /// The delay before the attempt after `failed_attempt` (1-based), or `None` when it was the last.
    /// Deterministic: the jitter is a hash of the delivery id and attempt, so a replay of the
    /// dataflow schedules the same retry at the same time.
    pub fn next_retry(&self, delivery_id: &str, failed_attempt: u32, retry_after: Option<Time>) -> Option<Time> {
        if failed_attempt >= self.max_attempts {
            return None;
        }
        let exponent = failed_attempt.saturating_sub(1).min(63);
        let growth = (self.multiplier.max(1) as u64).saturating_pow(exponent);
        let backoff = self.initial_backoff.saturating_mul(growth).min(self.max_backoff);
        let seed = crate::dataflow::route_hash(delivery_id) ^ (failed_attempt as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let fraction = (seed % 10_000) as u128; // 0..1 in 1/10_000 steps
        let cut = backoff as u128 * self.jitter_percent.min(100) as u128 * fraction / 1_000_000;
        let delay = backoff - cut as Time;
        // A receiver's Retry-After is honoured, but bounded so that one cannot park a delivery forever.
        Some(match retry_after {
            Some(hint) => delay.max(hint.min(self.max_backoff.saturating_mul(4))),
            None => delay,
        })
    }

    pub fn validate(&self) -> Result<(), crate::validation::FieldError> {
        use crate::validation::FieldError;
        if self.max_attempts == 0 {
            return Err(FieldError::new("max_attempts", "must be at least 1"));
        }
        if self.multiplier == 0 {
            return Err(FieldError::new("multiplier", "must be at least 1"));
        }
        if self.initial_backoff == 0 || self.initial_backoff > self.max_backoff {
            return Err(FieldError::new("initial_backoff", "must be positive and at most max_backoff"));
        }
        if self.jitter_percent > 100 {
            return Err(FieldError::new("jitter_percent", "must be at most 100"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_jittered_and_ends() {
        let policy = RetryPolicy { jitter_percent: 0, ..RetryPolicy::default() };
        let delays: Vec<_> = (1..=8).map(|a| policy.next_retry("d", a, None)).collect();
        assert_eq!(
            delays,
            vec![Some(1_000_000), Some(2_000_000), Some(4_000_000), Some(8_000_000), Some(16_000_000), Some(32_000_000), Some(64_000_000), None]
        );
        let capped = RetryPolicy { max_backoff: 3_000_000, jitter_percent: 0, ..RetryPolicy::default() };
        assert_eq!(capped.next_retry("d", 5, None), Some(3_000_000));
        let jittered = RetryPolicy::default();
        for attempt in 1..8 {
            let plain = policy.next_retry("d", attempt, None).unwrap();
            let delay = jittered.next_retry("d", attempt, None).unwrap();
            assert!(delay <= plain && delay >= plain * 80 / 100, "attempt {attempt}: {delay} vs {plain}");
            assert_eq!(delay, jittered.next_retry("d", attempt, None).unwrap(), "deterministic");
        }
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let policy = RetryPolicy { jitter_percent: 0, ..RetryPolicy::default() };
        assert_eq!(policy.next_retry("d", 1, Some(7_000_000)), Some(7_000_000));
        assert_eq!(policy.next_retry("d", 1, Some(10)), Some(1_000_000));
        assert_eq!(policy.next_retry("d", 1, Some(u64::MAX)), Some(policy.max_backoff * 4));
    }
}
