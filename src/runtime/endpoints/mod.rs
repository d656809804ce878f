//! Endpoints: where deliveries go (a channel and a `host:port`), each with a concurrency limit, a
//! rate limit, a pause a peer can ask for (`Retry-After`) and a circuit breaker. An endpoint that
//! cannot take a delivery now makes it wait, in that endpoint's own queue, most urgent first: it is
//! delayed, never dropped, and it holds back no other endpoint's deliveries.
//!
//! [`key`] says which endpoint a task goes to, [`lanes`] keeps the waiting tasks and picks the next
//! one, [`breaker`] and [`rate`] are the two limits with state. The dispatcher drives them.

pub mod breaker;
pub mod key;
pub mod lanes;
pub mod rate;

use std::time::Duration;

use dataflows::delivery::AttemptResult;

pub use breaker::{BreakerState, Verdict};
pub use key::{EndpointKey, EndpointResolver};
pub use lanes::{LaneStatus, Lanes, Next, Ticket};

/// How an attempt's result counts for its endpoint: the breaker's verdict, the pause the peer asked
/// for, and the failure to show. A transient failure with the peer's `Retry-After` is the peer
/// pacing us, not failing: it pauses the endpoint and does not count toward opening the breaker.
pub fn verdict(result: &AttemptResult) -> (Verdict, Option<Duration>, Option<&str>) {
    match result {
        AttemptResult::Delivered => (Verdict::Success, None, None),
        AttemptResult::Transient { error, retry_after: None } => (Verdict::Failure, None, Some(error)),
        AttemptResult::Transient { error, retry_after: Some(micros) } => {
            (Verdict::Neutral, Some(Duration::from_micros(*micros)), Some(error))
        }
        AttemptResult::Permanent { error } => (Verdict::Neutral, None, Some(error)),
    }
}
