//! One endpoint's rate limit: `governor`'s GCRA (a token bucket without a refill task) over tokio's
//! clock. Only its non-blocking `check` is used: a refusal says how long until the next cell, and the
//! dispatcher keeps the task queued until then instead of sleeping in a task of its own. Reading
//! tokio's clock (not `quanta` or `std`) makes the limit follow `tokio::time::pause` in tests.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

/// Time since the limiter was made, read from tokio's clock. `Duration` is one of governor's
/// `Reference` types already.
#[derive(Clone, Debug)]
struct TokioClock {
    origin: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }
}

pub struct RateLimit {
    limiter: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>,
    clock: TokioClock,
}

impl RateLimit {
    /// `per_second` cells per second on average, `burst` at once after a quiet spell (0: the rate
    /// rounded up). `None` when `per_second` is not a positive rate (no limit).
    pub fn new(per_second: f64, burst: u32) -> Option<RateLimit> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return None;
        }
        let burst = if burst == 0 { per_second.ceil().min(f64::from(u32::MAX)) as u32 } else { burst };
        let period = Duration::from_secs_f64(1.0 / per_second);
        let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst.max(1))?);
        let clock = TokioClock { origin: Instant::now() };
        Some(RateLimit { limiter: RateLimiter::direct_with_clock(quota, clock.clone()), clock })
    }

    /// Takes a cell if one is free now; otherwise says how long until one is.
    pub fn try_take(&self) -> Result<(), Duration> {
        self.limiter.check().map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_one_cell_per_period() {
        let limit = RateLimit::new(10.0, 3).expect("a limit");
        for _ in 0..3 {
            assert_eq!(limit.try_take(), Ok(()));
        }
        let wait = limit.try_take().expect_err("the burst is spent");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        tokio::time::advance(wait).await;
        assert_eq!(limit.try_take(), Ok(()));
        assert!(limit.try_take().is_err());
    }

    #[test]
    fn no_rate_is_no_limit_and_the_burst_defaults_to_the_rate() {
        assert!(RateLimit::new(0.0, 5).is_none());
        assert!(RateLimit::new(f64::NAN, 5).is_none());
        let limit = RateLimit::new(2.5, 0).expect("a limit");
        assert_eq!((0..10).filter(|_| limit.try_take().is_ok()).count(), 3);
    }
}
