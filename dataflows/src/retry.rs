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
