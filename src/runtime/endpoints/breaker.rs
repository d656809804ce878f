//! One endpoint's circuit breaker: closed → open after `threshold` consecutive failures → half-open
//! (one probe) once `open_for` has passed → closed on the probe's success, open again on its failure.
//!
//! Hand-written rather than taken from a crate: the breaker crates on crates.io (`failsafe`,
//! `circuitbreaker-rs`, ...) wrap the call itself and decide on the spot, which would make a refused
//! attempt an error. Here a refusal must be a *wait*: the dispatcher keeps the task in its endpoint's
//! queue and asks again when [`Breaker::gate`] says it may pass, and the half-open probe is chosen by
//! priority among the waiting tasks. What is left is a state machine of a few transitions with time
//! as an input (no clock read here), so it is tested in virtual time without sleeping.
//!
//! What counts: a transient failure without a peer's `Retry-After` is a failure; a delivery is a
//! success; a permanent failure (the peer refused this one request) and a paced failure (`429` with
//! `Retry-After`, which pauses the endpoint instead) are neutral. Results of attempts admitted before
//! the breaker opened (stragglers) are ignored once it is open: only the probe decides.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The breaker's state, the seed's `channel_status` of an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BreakerState {
    /// Deliveries flow.
    Closed,
    /// Deliveries wait until `open_until`; none is attempted.
    Open,
    /// One delivery (the most urgent waiting) is attempted as a probe; the others wait for its result.
    HalfOpen,
}

impl BreakerState {
    /// The Prometheus gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "CLOSED",
            BreakerState::Open => "OPEN",
            BreakerState::HalfOpen => "HALF_OPEN",
        }
    }
}

/// How an attempt's result counts for the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
    Neutral,
}

/// Whether an attempt may start now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    Pass,
    /// Open: ask again at this time.
    Until(Instant),
    /// Half-open with the probe under way: ask again when it has finished.
    AwaitingProbe,
}

#[derive(Clone, Debug)]
pub struct Breaker {
    /// Consecutive failures that open the breaker; 0: it never opens.
    threshold: u32,
    open_for: Duration,
    state: BreakerState,
    consecutive_failures: u32,
    open_until: Option<Instant>,
    probe_in_flight: bool,
    changed_at: Option<Instant>,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            threshold,
            open_for,
            state: BreakerState::Closed,
            consecutive_failures: 0,
            open_until: None,
            probe_in_flight: false,
            changed_at: None,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// When an open breaker lets a probe through.
    pub fn open_until(&self) -> Option<Instant> {
        (self.state == BreakerState::Open).then_some(self.open_until).flatten()
    }

    /// The last transition, if any.
    pub fn changed_at(&self) -> Option<Instant> {
        self.changed_at
    }

    /// Whether an attempt may start at `now`. An open breaker whose time is up turns half-open here.
    pub fn gate(&mut self, now: Instant) -> Gate {
        match self.state {
            BreakerState::Closed => Gate::Pass,
            BreakerState::Open => match self.open_until {
                Some(until) if until > now => Gate::Until(until),
                _ => {
                    self.transition(BreakerState::HalfOpen, now);
                    Gate::Pass
                }
            },
            BreakerState::HalfOpen if self.probe_in_flight => Gate::AwaitingProbe,
            BreakerState::HalfOpen => Gate::Pass,
        }
    }

    /// An attempt passed [`Breaker::gate`] and starts; returns whether it is the half-open probe.
    pub fn admit(&mut self) -> bool {
        if self.state == BreakerState::HalfOpen {
            self.probe_in_flight = true;
            return true;
        }
        false
    }

    /// Takes an attempt's result in; `probe` is what [`Breaker::admit`] returned for it.
    pub fn record(&mut self, verdict: Verdict, probe: bool, now: Instant) {
        if probe {
            self.probe_in_flight = false;
            match verdict {
                Verdict::Success => {
                    self.consecutive_failures = 0;
                    self.transition(BreakerState::Closed, now);
                }
                Verdict::Failure => {
                    self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                    self.open(now);
                }
                // The probe proved nothing either way: the next waiting task probes.
                Verdict::Neutral => {}
            }
            return;
        }
        if self.state != BreakerState::Closed {
            return;
        }
        match verdict {
            Verdict::Success => self.consecutive_failures = 0,
            Verdict::Failure => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.threshold > 0 && self.consecutive_failures >= self.threshold {
                    self.open(now);
                }
            }
            Verdict::Neutral => {}
        }
    }

    fn open(&mut self, now: Instant) {
        self.open_until = Some(now + self.open_for);
        self.transition(BreakerState::Open, now);
    }

    fn transition(&mut self, to: BreakerState, now: Instant) {
        if to != BreakerState::Open {
            self.open_until = None;
        }
        self.state = to;
        self.changed_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(30);

    #[test]
    fn opens_after_consecutive_failures_only() {
        let now = Instant::now();
        let mut breaker = Breaker::new(3, OPEN_FOR);
        for verdict in [Verdict::Failure, Verdict::Failure, Verdict::Success, Verdict::Failure, Verdict::Neutral, Verdict::Failure] {
            assert_eq!(breaker.gate(now), Gate::Pass);
            let probe = breaker.admit();
            breaker.record(verdict, probe, now);
        }
        assert_eq!((breaker.state(), breaker.consecutive_failures()), (BreakerState::Closed, 2), "a success resets, neutral does not");
        breaker.record(Verdict::Failure, false, now);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.open_until(), Some(now + OPEN_FOR));
        assert_eq!(breaker.gate(now + Duration::from_secs(29)), Gate::Until(now + OPEN_FOR));
    }

    #[test]
    fn a_threshold_of_zero_never_opens() {
        let now = Instant::now();
        let mut breaker = Breaker::new(0, OPEN_FOR);
        for _ in 0..1000 {
            breaker.record(Verdict::Failure, false, now);
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_lets_one_probe_through_and_its_result_decides() {
        let start = Instant::now();
        let mut breaker = Breaker::new(1, OPEN_FOR);
        breaker.record(Verdict::Failure, false, start);
        let later = start + OPEN_FOR;
        assert_eq!(breaker.gate(later), Gate::Pass);
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(breaker.admit(), "the first attempt after opening is the probe");
        assert_eq!(breaker.gate(later), Gate::AwaitingProbe, "a second attempt waits for the probe");
        // A straggler admitted before the breaker opened does not decide anything.
        breaker.record(Verdict::Success, false, later);
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        // The probe fails: open again, for another full period.
        breaker.record(Verdict::Failure, true, later);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.gate(later + Duration::from_secs(1)), Gate::Until(later + OPEN_FOR));
        // The next probe is neutral (a permanent refusal): still half-open, the next task probes.
        let again = later + OPEN_FOR;
        assert_eq!(breaker.gate(again), Gate::Pass);
        assert!(breaker.admit());
        breaker.record(Verdict::Neutral, true, again);
        assert_eq!((breaker.state(), breaker.gate(again)), (BreakerState::HalfOpen, Gate::Pass));
        // A successful probe closes it and clears the failures.
        assert!(breaker.admit());
        breaker.record(Verdict::Success, true, again);
        assert_eq!((breaker.state(), breaker.consecutive_failures()), (BreakerState::Closed, 0));
        assert_eq!(breaker.changed_at(), Some(again));
        assert!(!breaker.admit(), "attempts of a closed breaker are no probes");
    }

    #[test]
    fn stragglers_do_not_extend_an_open_breaker() {
        let now = Instant::now();
        let mut breaker = Breaker::new(2, OPEN_FOR);
        breaker.record(Verdict::Failure, false, now);
        breaker.record(Verdict::Failure, false, now);
        breaker.record(Verdict::Failure, false, now + Duration::from_secs(10));
        assert_eq!(breaker.open_until(), Some(now + OPEN_FOR));
    }
}
