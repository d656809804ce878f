//! The tasks waiting to be attempted, in one lane per endpoint, and the choice of the next one.
//!
//! Each lane is a priority heap (highest `delivery_priority` first, first in first out within one)
//! with its endpoint's limits in front of it: attempts under way, the rate limit, a `Retry-After`
//! pause and the circuit breaker. The next task is the most urgent head among the lanes that can
//! take one now, so a saturated or broken endpoint holds back only its own tasks (no head-of-line
//! blocking), and tasks that wait cost nothing: a lane blocked until a time is on a timer list, a
//! lane blocked by its attempts under way is looked at again when one finishes. Nothing here reads
//! the clock or sleeps; `now` is an argument, so the tests run in virtual time.
//!
//! Bounded by what it holds: every task waiting is an outstanding delivery (the sequencer admits
//! none past `delivery.max_outstanding`), and an idle lane is forgotten after [`IDLE_LANE_TTL`].

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::time::Duration;

use dataflows::delivery::DeliveryTask;
use tokio::time::Instant;

use super::breaker::{Breaker, BreakerState, Gate, Verdict};
use super::key::EndpointKey;
use super::rate::RateLimit;
use crate::config::{EndpointLimits, EndpointsConfig};

/// An idle lane (nothing waiting or under way, breaker not open, no pause) is dropped after this,
/// so endpoints seen once do not accumulate. Its rate limiter has long refilled by then.
pub const IDLE_LANE_TTL: Duration = Duration::from_secs(600);
const SWEEP_EVERY: Duration = Duration::from_secs(60);

type LaneId = u64;

struct Queued {
    priority: i32,
    sequence: u64,
    task: DeliveryTask,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    /// Higher priority first; within a priority, first in first out.
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority.cmp(&other.priority).then_with(|| other.sequence.cmp(&self.sequence))
    }
}

/// A lane's place in the ready set: its head's priority (reversed, so the most urgent sorts first)
/// and sequence.
type ReadyEntry = (Reverse<i32>, u64);

struct Lane {
    key: EndpointKey,
    limits: EndpointLimits,
    rate: Option<RateLimit>,
    breaker: Breaker,
    waiting: BinaryHeap<Queued>,
    in_flight: usize,
    paused_until: Option<Instant>,
    rate_until: Option<Instant>,
    ready_entry: Option<ReadyEntry>,
    timer: Option<Instant>,
    last_active: Instant,
    last_failure: Option<String>,
}

/// Which lane an admitted attempt came from, handed back with its result.
#[derive(Debug)]
pub struct Ticket {
    lane: Option<LaneId>,
    probe: bool,
}

/// What [`Lanes::next`] found.
// Made and moved once per attempt; boxing the task would allocate once per attempt instead.
#[allow(clippy::large_enum_variant)]
pub enum Next {
    Task(DeliveryTask, Ticket),
    /// Nothing can go now; look again at this time (if any), when a task is pushed, or when an
    /// attempt finishes.
    Wait(Option<Instant>),
}

/// One endpoint as [`Lanes::statuses`] shows it; times are tokio instants.
#[derive(Clone, Debug)]
pub struct LaneStatus {
    pub key: EndpointKey,
    pub state: BreakerState,
    pub consecutive_failures: u32,
    pub in_flight: usize,
    pub waiting: usize,
    pub limits: EndpointLimits,
    pub open_until: Option<Instant>,
    pub paused_until: Option<Instant>,
    pub changed_at: Option<Instant>,
    pub last_failure: Option<String>,
}

pub struct Lanes {
    config: EndpointsConfig,
    lanes: HashMap<LaneId, Lane>,
    by_key: HashMap<EndpointKey, LaneId>,
    /// Tasks with no endpoint (dashboard notifications, destinations that cannot be rendered):
    /// ordered with the others, limited by nothing but `max_in_flight`.
    unkeyed: BinaryHeap<Queued>,
    ready: BTreeSet<(Reverse<i32>, u64, LaneId)>,
    timers: BTreeSet<(Instant, LaneId)>,
    next_lane: LaneId,
    sequence: u64,
    waiting: usize,
    /// Moves whenever a breaker changes state or a pause starts: what status watchers follow.
    version: u64,
    last_sweep: Option<Instant>,
}

impl Lanes {
    pub fn new(config: EndpointsConfig) -> Lanes {
        Lanes {
            config,
            lanes: HashMap::new(),
            by_key: HashMap::new(),
            unkeyed: BinaryHeap::new(),
            ready: BTreeSet::new(),
            timers: BTreeSet::new(),
            next_lane: 0,
            sequence: 0,
            waiting: 0,
            version: 0,
            last_sweep: None,
        }
    }

    /// Tasks waiting, all lanes together.
    pub fn len(&self) -> usize {
        self.waiting
    }

    pub fn is_empty(&self) -> bool {
        self.waiting == 0
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn push(&mut self, key: Option<EndpointKey>, task: DeliveryTask, now: Instant) {
        self.sequence += 1;
        self.waiting += 1;
        let queued = Queued { priority: task.priority(), sequence: self.sequence, task };
        let Some(key) = key else {
            self.unkeyed.push(queued);
            return;
        };
        let id = match self.by_key.get(&key) {
            Some(id) => *id,
            None => self.open_lane(key, now),
        };
        if let Some(lane) = self.lanes.get_mut(&id) {
            lane.waiting.push(queued);
            lane.last_active = now;
        }
        self.refresh(id, now);
    }

    fn open_lane(&mut self, key: EndpointKey, now: Instant) -> LaneId {
        let limits = self.config.limits(key.channel);
        let lane = Lane {
            rate: RateLimit::new(limits.rate_per_second, limits.burst),
            breaker: Breaker::new(limits.failure_threshold, limits.open_for),
            limits,
            key: key.clone(),
            waiting: BinaryHeap::new(),
            in_flight: 0,
            paused_until: None,
            rate_until: None,
            ready_entry: None,
            timer: None,
            last_active: now,
            last_failure: None,
        };
        let id = self.next_lane;
        self.next_lane += 1;
        self.lanes.insert(id, lane);
        self.by_key.insert(key, id);
        id
    }

    /// The most urgent task that may be attempted now, admitted (it counts against its endpoint
    /// until [`Lanes::finish`]), or when to look again.
    pub fn next(&mut self, now: Instant) -> Next {
        self.fire_timers(now);
        self.sweep(now);
        loop {
            let keyed = self.ready.first().copied();
            let unkeyed = self.unkeyed.peek().map(|q| (Reverse(q.priority), q.sequence));
            let take_unkeyed = match (keyed, unkeyed) {
                (None, None) => return Next::Wait(self.timers.first().map(|(at, _)| *at)),
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some((priority, sequence, _)), Some(head)) => head < (priority, sequence),
            };
            if take_unkeyed {
                let queued = self.unkeyed.pop().expect("peeked");
                self.waiting -= 1;
                return Next::Task(queued.task, Ticket { lane: None, probe: false });
            }
            let (_, _, id) = keyed.expect("chosen");
            let Some(lane) = self.lanes.get_mut(&id) else {
                self.ready.pop_first();
                continue;
            };
            if let Some(rate) = &lane.rate {
                if let Err(wait) = rate.try_take() {
                    // Never zero, so a limiter that is a hair early cannot make this loop spin.
                    lane.rate_until = Some(now + wait.max(Duration::from_millis(1)));
                    self.refresh(id, now);
                    continue;
                }
            }
            let queued = lane.waiting.pop().expect("a ready lane has a head");
            lane.in_flight += 1;
            lane.last_active = now;
            let probe = lane.breaker.admit();
            self.waiting -= 1;
            self.refresh(id, now);
            return Next::Task(queued.task, Ticket { lane: Some(id), probe });
        }
    }

    /// Takes an admitted attempt's result in: frees its place, feeds the breaker, and starts a pause
    /// when the peer asked for one (`Retry-After`).
    pub fn finish(&mut self, ticket: Ticket, verdict: Verdict, pause: Option<Duration>, failure: Option<&str>, now: Instant) {
        let Some(id) = ticket.lane else { return };
        let Some(lane) = self.lanes.get_mut(&id) else { return };
        lane.in_flight = lane.in_flight.saturating_sub(1);
        lane.last_active = now;
        let before = lane.breaker.state();
        lane.breaker.record(verdict, ticket.probe, now);
        let after = lane.breaker.state();
        if verdict == Verdict::Failure {
            lane.last_failure = failure.map(str::to_string);
        }
        if let Some(pause) = pause.filter(|p| !p.is_zero()) {
            let until = now + pause.min(self.config.max_pause);
            lane.paused_until = Some(lane.paused_until.map_or(until, |current| current.max(until)));
            metrics::counter!("repdist_endpoint_pauses_total", "channel" => lane.key.channel.as_str()).increment(1);
            self.version += 1;
        }
        if before != after {
            transitioned(&lane.key, after);
            self.version += 1;
        }
        self.refresh(id, now);
    }

    /// Every lane's state, ordered by endpoint.
    pub fn statuses(&self) -> Vec<LaneStatus> {
        let mut statuses: Vec<LaneStatus> = self
            .lanes
            .values()
            .map(|lane| LaneStatus {
                key: lane.key.clone(),
                state: lane.breaker.state(),
                consecutive_failures: lane.breaker.consecutive_failures(),
                in_flight: lane.in_flight,
                waiting: lane.waiting.len(),
                limits: lane.limits.clone(),
                open_until: lane.breaker.open_until(),
                paused_until: lane.paused_until,
                changed_at: lane.breaker.changed_at(),
                last_failure: lane.last_failure.clone(),
            })
            .collect();
        statuses.sort_by(|a, b| a.key.cmp(&b.key));
        statuses
    }

    /// Waiting tasks by priority: how many there are, and the `oldest` that have waited longest
    /// (longest first). One pass over the queues; only those kept are cloned.
    pub fn waiting_by_priority(&self, oldest: usize) -> BTreeMap<i32, (usize, Vec<DeliveryTask>)> {
        let mut by_priority: BTreeMap<i32, Vec<&Queued>> = BTreeMap::new();
        let queued = self.unkeyed.iter().chain(self.lanes.values().flat_map(|lane| lane.waiting.iter()));
        for entry in queued {
            by_priority.entry(entry.priority).or_default().push(entry);
        }
        by_priority
            .into_iter()
            .map(|(priority, mut entries)| {
                let waiting = entries.len();
                if entries.len() > oldest {
                    entries.select_nth_unstable_by_key(oldest, |entry| entry.sequence);
                    entries.truncate(oldest);
                }
                entries.sort_unstable_by_key(|entry| entry.sequence);
                (priority, (waiting, entries.into_iter().map(|entry| entry.task.clone()).collect()))
            })
            .collect()
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(lane) = self.lanes.get_mut(&id) {
                lane.timer = None;
            }
            self.refresh(id, now);
        }
    }

    /// Puts a lane where it belongs: in the ready set under its head, on the timer list until it may
    /// go, or nowhere (waiting for an attempt under way to finish, or empty). An open breaker keeps
    /// its timer even with nothing waiting, so it shows half-open once its time is up.
    fn refresh(&mut self, id: LaneId, now: Instant) {
        let Some(lane) = self.lanes.get_mut(&id) else { return };
        if let Some((priority, sequence)) = lane.ready_entry.take() {
            self.ready.remove(&(priority, sequence, id));
        }
        if let Some(at) = lane.timer.take() {
            self.timers.remove(&(at, id));
        }
        let before = lane.breaker.state();
        let gate = lane.breaker.gate(now);
        if lane.breaker.state() != before {
            transitioned(&lane.key, lane.breaker.state());
            self.version += 1;
        }
        let Some(head) = lane.waiting.peek() else {
            if let Gate::Until(until) = gate {
                lane.timer = Some(until);
                self.timers.insert((until, id));
            }
            return;
        };
        let head = (Reverse(head.priority), head.sequence);
        if lane.in_flight >= lane.limits.max_concurrency {
            return;
        }
        if let Some(until) = lane.paused_until {
            if until > now {
                lane.timer = Some(until);
                self.timers.insert((until, id));
                return;
            }
            lane.paused_until = None;
            self.version += 1;
        }
        match gate {
            Gate::Pass => {}
            Gate::Until(until) => {
                lane.timer = Some(until);
                self.timers.insert((until, id));
                return;
            }
            Gate::AwaitingProbe => return,
        }
        if let Some(until) = lane.rate_until {
            if until > now {
                lane.timer = Some(until);
                self.timers.insert((until, id));
                return;
            }
            lane.rate_until = None;
        }
        lane.ready_entry = Some(head);
        self.ready.insert((head.0, head.1, id));
    }

    /// Forgets lanes idle for [`IDLE_LANE_TTL`], at most once per [`SWEEP_EVERY`].
    fn sweep(&mut self, now: Instant) {
        match self.last_sweep {
            None => {
                self.last_sweep = Some(now);
                return;
            }
            Some(last) if now.saturating_duration_since(last) < SWEEP_EVERY => return,
            Some(_) => self.last_sweep = Some(now),
        }
        let idle: Vec<LaneId> = self
            .lanes
            .iter()
            .filter(|(_, lane)| {
                // A half-open breaker with nothing to probe is forgotten too: after this long idle,
                // the next delivery may as well find the endpoint anew.
                lane.waiting.is_empty()
                    && lane.in_flight == 0
                    && lane.breaker.state() != BreakerState::Open
                    && lane.paused_until.is_none_or(|until| until <= now)
                    && now.saturating_duration_since(lane.last_active) >= IDLE_LANE_TTL
            })
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            if let Some(lane) = self.lanes.remove(&id) {
                self.by_key.remove(&lane.key);
                if let Some(at) = lane.timer {
                    self.timers.remove(&(at, id));
                }
            }
        }
    }
}

fn transitioned(key: &EndpointKey, to: BreakerState) {
    tracing::info!(endpoint = %key, state = to.as_str(), "endpoint circuit breaker changed state");
    metrics::counter!("repdist_endpoint_breaker_transitions_total", "channel" => key.channel.as_str(), "to" => to.as_str())
        .increment(1);
}

#[cfg(test)]
mod tests {
    use dataflows::delivery::DeliveryChannel;

    use super::*;

    fn task(id: &str, priority: i32) -> DeliveryTask {
        let mut report = dataflows::report::ReportDistribution {
            event_id: "e".into(),
            timestamp: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            data_type: dataflows::report::ReportDataType::PerformanceReport,
            report_data: Default::default(),
            routing: Default::default(),
            metadata: Default::default(),
        };
        report.metadata.delivery_priority = priority;
        DeliveryTask {
            delivery_id: id.into(),
            subscription_id: "s".into(),
            subscriber_id: "c".into(),
            channel: DeliveryChannel::ApiWebhook,
            settings: Default::default(),
            report,
            accepted_at: 0,
            attempt: 1,
            digest: None,
            content: None,
        }
    }

    fn key(authority: &str) -> Option<EndpointKey> {
        Some(EndpointKey { channel: DeliveryChannel::ApiWebhook, authority: authority.into() })
    }

    fn config(max_concurrency: usize) -> EndpointsConfig {
        EndpointsConfig { max_concurrency, failure_threshold: 2, open_for: Duration::from_secs(30), ..Default::default() }
    }

    fn take(lanes: &mut Lanes) -> Option<(String, Ticket)> {
        match lanes.next(Instant::now()) {
            Next::Task(task, ticket) => Some((task.delivery_id, ticket)),
            Next::Wait(_) => None,
        }
    }

    fn wait_until(lanes: &mut Lanes) -> Option<Instant> {
        match lanes.next(Instant::now()) {
            Next::Task(task, _) => panic!("{} was admitted", task.delivery_id),
            Next::Wait(until) => until,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_takes_at_most_its_concurrency_most_urgent_first() {
        let mut lanes = Lanes::new(config(2));
        for (id, priority) in [("a1", 1), ("a5", 5), ("a3", 3), ("b5", 5), ("a9", 9)] {
            lanes.push(key("a:80"), task(id, priority), Instant::now());
        }
        let (first, t1) = take(&mut lanes).unwrap();
        let (second, _t2) = take(&mut lanes).unwrap();
        assert_eq!((first.as_str(), second.as_str()), ("a9", "a5"));
        assert_eq!(wait_until(&mut lanes), None, "saturated: only a finished attempt frees it");
        assert_eq!(lanes.len(), 3);
        lanes.finish(t1, Verdict::Success, None, None, Instant::now());
        assert_eq!(take(&mut lanes).unwrap().0, "b5", "the most urgent of those left; a5 went first, being older");
        assert!(take(&mut lanes).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_saturated_endpoint_does_not_hold_back_others() {
        let mut lanes = Lanes::new(config(1));
        lanes.push(key("slow:80"), task("slow-1", 9), Instant::now());
        lanes.push(key("slow:80"), task("slow-2", 9), Instant::now());
        lanes.push(key("fast:80"), task("fast-1", 1), Instant::now());
        lanes.push(None, task("dash-1", 0), Instant::now());
        let order: Vec<String> = std::iter::from_fn(|| take(&mut lanes).map(|(id, _)| id)).collect();
        assert_eq!(order, ["slow-1", "fast-1", "dash-1"]);
        assert_eq!(lanes.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_delays_without_dropping() {
        let mut lanes = Lanes::new(EndpointsConfig { rate_per_second: 10.0, burst: 1, ..config(64) });
        for i in 0..3 {
            lanes.push(key("a:80"), task(&format!("t{i}"), 1), Instant::now());
        }
        assert!(take(&mut lanes).is_some());
        let until = wait_until(&mut lanes).expect("a time to look again");
        assert!(until > Instant::now() && until <= Instant::now() + Duration::from_millis(101));
        tokio::time::advance(until - Instant::now()).await;
        assert_eq!(take(&mut lanes).unwrap().0, "t1");
        assert!(take(&mut lanes).is_none());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(take(&mut lanes).unwrap().0, "t2");
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_holds_tasks_and_a_probe_reopens_the_flow() {
        let mut lanes = Lanes::new(config(64));
        for i in 0..6 {
            lanes.push(key("a:80"), task(&format!("t{i}"), 1), Instant::now());
        }
        let (_, t0) = take(&mut lanes).unwrap();
        let (_, t1) = take(&mut lanes).unwrap();
        let (_, t2) = take(&mut lanes).unwrap();
        let version = lanes.version();
        lanes.finish(t0, Verdict::Failure, None, Some("HTTP 500"), Instant::now());
        lanes.finish(t1, Verdict::Failure, None, Some("HTTP 503"), Instant::now());
        assert!(lanes.version() > version, "a transition is announced");
        let status = &lanes.statuses()[0];
        assert_eq!((status.state, status.waiting, status.last_failure.as_deref()), (BreakerState::Open, 3, Some("HTTP 503")));
        let opened = Instant::now();
        assert_eq!(wait_until(&mut lanes), Some(opened + Duration::from_secs(30)));
        // A straggler's success while open changes nothing.
        lanes.finish(t2, Verdict::Success, None, None, Instant::now());
        assert_eq!(lanes.statuses()[0].state, BreakerState::Open);

        tokio::time::advance(Duration::from_secs(30)).await;
        let (probe, ticket) = take(&mut lanes).expect("one probe");
        assert_eq!(probe, "t3");
        assert_eq!(lanes.statuses()[0].state, BreakerState::HalfOpen);
        assert_eq!(wait_until(&mut lanes), None, "the others wait for the probe");
        lanes.finish(ticket, Verdict::Failure, None, None, Instant::now());
        assert_eq!(lanes.statuses()[0].state, BreakerState::Open);

        tokio::time::advance(Duration::from_secs(30)).await;
        let (_, ticket) = take(&mut lanes).expect("the next probe");
        lanes.finish(ticket, Verdict::Success, None, None, Instant::now());
        assert_eq!(lanes.statuses()[0].state, BreakerState::Closed);
        assert_eq!(take(&mut lanes).unwrap().0, "t5", "closed: the rest flows");
        assert_eq!(lanes.len(), 0, "nothing was dropped: 6 pushed, 6 taken");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_the_endpoint() {
        let mut lanes = Lanes::new(config(64));
        lanes.push(key("a:80"), task("t0", 1), Instant::now());
        lanes.push(key("a:80"), task("t1", 1), Instant::now());
        let (_, ticket) = take(&mut lanes).unwrap();
        let paced = Instant::now();
        lanes.finish(ticket, Verdict::Neutral, Some(Duration::from_secs(2)), None, paced);
        assert_eq!(lanes.statuses()[0].paused_until, Some(paced + Duration::from_secs(2)));
        assert_eq!(wait_until(&mut lanes), Some(paced + Duration::from_secs(2)));
        assert_eq!(lanes.statuses()[0].state, BreakerState::Closed, "pacing is no failure");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(take(&mut lanes).unwrap().0, "t1");
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_with_nothing_waiting_turns_half_open_on_time() {
        let mut lanes = Lanes::new(config(64));
        lanes.push(key("a:80"), task("t0", 1), Instant::now());
        lanes.push(key("a:80"), task("t1", 1), Instant::now());
        let (_, t0) = take(&mut lanes).unwrap();
        let (_, t1) = take(&mut lanes).unwrap();
        lanes.finish(t0, Verdict::Failure, None, None, Instant::now());
        lanes.finish(t1, Verdict::Failure, None, None, Instant::now());
        assert_eq!(lanes.statuses()[0].state, BreakerState::Open);
        let until = wait_until(&mut lanes).expect("the breaker's timer");
        tokio::time::advance(until - Instant::now()).await;
        assert_eq!(wait_until(&mut lanes), None);
        assert_eq!(lanes.statuses()[0].state, BreakerState::HalfOpen, "the next delivery will be the probe");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_lanes_are_forgotten() {
        let mut lanes = Lanes::new(config(64));
        lanes.push(key("a:80"), task("t0", 1), Instant::now());
        let (_, ticket) = take(&mut lanes).unwrap();
        lanes.finish(ticket, Verdict::Success, None, None, Instant::now());
        assert_eq!(lanes.statuses().len(), 1);
        tokio::time::advance(IDLE_LANE_TTL + SWEEP_EVERY).await;
        assert!(take(&mut lanes).is_none());
        assert!(lanes.statuses().is_empty());
    }
}
