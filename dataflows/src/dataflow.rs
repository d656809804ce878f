//! The distribution dataflow. Inputs: report events (a stream), subscriptions (a collection),
//! attempt outcomes and resumed deliveries (streams). Outputs go to one callback, each stamped
//! with the time it happens at; the host learns from [`Dataflow::frontier`] when a time is complete.
//!
//! Shape: reports are deduplicated by event id, then half-joined against the subscription
//! arrangement as of their own time; outcomes decide retries (delayed in dataflow time) and dead
//! letters, and feed windowed stats maintained with `reduce`. Matches of SCHEDULED subscriptions
//! become digest members instead of deliveries, collected until their cron tick (see `digest`).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::AsCollection;
use differential_dogs3::operators::half_join;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::vec::{Delay, Input as _, Map};
use timely::dataflow::operators::{Concat, Inspect, Operator, Probe};

use crate::delivery::{AttemptResult, DeliveryOutcome, DeliveryTask};
use crate::digest::DigestMember;
use crate::index::{report_keys, subscription_keys, IndexKey};
use crate::output::Output;
use crate::report::ReportDistribution;
use crate::retry::RetryPolicy;
use crate::schedule::ScheduleCache;
use crate::stats::{StatsKey, StatsRow};
use crate::subscription::{ReportSubscription, SubscriptionStatus, SubscriptionType};
use crate::Time;

#[derive(Clone, Debug)]
pub struct DataflowConfig {
    pub retry: RetryPolicy,
    /// Length of a stats window.
    pub stats_window: Time,
    /// A window leaves the view (and memory) this long after it ends.
    pub stats_retention: Time,
    /// An event id seen again within this horizon is a duplicate; older ids are forgotten.
    pub dedupe_horizon: Time,
}

impl Default for DataflowConfig {
    fn default() -> Self {
        DataflowConfig {
            retry: RetryPolicy::default(),
            stats_window: 60_000_000,
            stats_retention: 3_600_000_000,
            dedupe_horizon: 86_400_000_000,
        }
    }
}

type Vec1<D> = timely::dataflow::operators::vec::input::Handle<Time, D>;

/// One worker's handles on the dataflow.
pub struct Dataflow {
    reports: Vec1<ReportDistribution>,
    subscriptions: InputSession<Time, (IndexKey, ReportSubscription), isize>,
    outcomes: Vec1<DeliveryOutcome>,
    resumes: Vec1<(DeliveryTask, Time)>,
    members: Vec1<DigestMember>,
    /// The versions this worker put into the subscriptions collection, to retract on change.
    current: HashMap<String, ReportSubscription>,
    probe: ProbeHandle<Time>,
    time: Time,
}

/// Stable 64-bit hash for routing records to workers (FNV-1a: the same on every process).
pub fn route_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// What an outcome leads to, besides stats.
#[derive(Clone, Debug)]
enum Decision {
    Retry { task: DeliveryTask, due: Time, error: String },
    DeadLetter { task: DeliveryTask, reason: String },
}

/// Builds the dataflow in `worker`. `output` is called on this worker's thread for every output.
pub fn build(
    worker: &mut timely::worker::Worker,
    config: DataflowConfig,
    output: impl FnMut(Time, Output) + 'static,
) -> Dataflow {
    let output = Rc::new(RefCell::new(output));
    let probe = ProbeHandle::new();
    let (reports, subscriptions, outcomes, resumes, members) = worker.dataflow::<Time, _, _>(|scope| {
        let (report_input, reports) = scope.new_input::<ReportDistribution>();
        let (subscription_input, subscriptions) = scope.new_collection::<(IndexKey, ReportSubscription), isize>();
        let (outcome_input, outcomes) = scope.new_input::<DeliveryOutcome>();
        let (resume_input, resumes) = scope.new_input::<(DeliveryTask, Time)>();
        let (member_input, resumed_members) = scope.new_input::<DigestMember>();

        // Deduplicate by event id (all copies of an id meet on one worker), then probe the index.
        let horizon = config.dedupe_horizon;
        let probes = reports
            .unary(Exchange::new(|r: &ReportDistribution| route_hash(&r.event_id)), "DedupeEvents", move |_, _| {
                let mut seen: HashMap<String, Time> = HashMap::new();
                let mut order: VecDeque<(Time, String)> = VecDeque::new();
                move |input, out| {
                    input.for_each_time(|time, data| {
                        let now = *time.time();
                        while order.front().is_some_and(|(t, _)| t.saturating_add(horizon) < now) {
                            if let Some((t, id)) = order.pop_front() {
                                if seen.get(&id) == Some(&t) {
                                    seen.remove(&id);
                                }
                            }
                        }
                        let mut session = out.session(&time);
                        for report in data.flat_map(|d| d.drain(..)) {
                            if seen.contains_key(&report.event_id) {
                                continue;
                            }
                            seen.insert(report.event_id.clone(), now);
                            order.push_back((now, report.event_id.clone()));
                            let [specific, any] = report_keys(&report);
                            session.give(((specific, report.clone(), now), now, 1isize));
                            session.give(((any, report, now), now, 1isize));
                        }
                    });
                }
            })
            .as_collection();

        // The temporal half-join: each report sees the subscription versions at or before its time.
        let arranged = subscriptions.arrange_by_key();
        let matches = half_join(
            probes,
            arranged,
            |time: &Time, frontier: &mut timely::progress::Antichain<Time>| {
                frontier.insert(*time);
            },
            |subscription_time: &Time, report_time: &Time| subscription_time <= report_time,
            |_key: &IndexKey, report: &ReportDistribution, subscription: &ReportSubscription| {
                subscription.matches(report).then(|| (report.clone(), subscription.clone()))
            },
        );
        let mut schedules = ScheduleCache::default();
        let expansions = matches.inner.flat_map(move |((matched, _), accepted_at, diff)| match matched {
            Some((report, subscription)) if diff > 0 => expand(&report, &subscription, accepted_at, &mut schedules),
            _ => Vec::new(),
        });
        let new_deliveries = expansions.clone().flat_map(|expansion| match expansion {
            Expansion::Now(task) => Some(task),
            Expansion::Later(_) => None,
        });
        // Digest members: told to the host (to be made durable with the report's delivery set),
        // then collected by digest until dataflow time reaches their tick.
        let sink = output.clone();
        let members = expansions
            .flat_map(|expansion| match expansion {
                Expansion::Now(_) => None,
                Expansion::Later(member) => Some(member),
            })
            .inspect_time(move |time, member| {
                (sink.borrow_mut())(*time, Output::DigestMember(member.clone()));
            });
        let sink = output.clone();
        let digests = collect_digests(members.concat(resumed_members)).inspect_time(move |time, task| {
            (sink.borrow_mut())(*time, Output::DigestDue(task.clone()));
        });

        // Outcomes: decide retry or dead letter where the delivery id lives.
        let policy = config.retry.clone();
        let decisions = outcomes.clone().unary(
            Exchange::new(|o: &DeliveryOutcome| route_hash(&o.task.delivery_id)),
            "DecideOutcomes",
            move |_, _| {
                move |input, out| {
                    input.for_each_time(|time, data| {
                        let mut session = out.session(&time);
                        for outcome in data.flat_map(|d| d.drain(..)) {
                            if let Some(decision) = decide(&policy, outcome) {
                                session.give(decision);
                            }
                        }
                    });
                }
            },
        );
        let scheduled = decisions.clone().flat_map(|d| match d {
            Decision::Retry { task, due, .. } => Some((task, due)),
            Decision::DeadLetter { .. } => None,
        });
        let sink = output.clone();
        let decisions = decisions.inspect_time(move |time, decision| {
            let item = match decision.clone() {
                Decision::Retry { task, due, error } => Output::RetryScheduled { task, due, error },
                Decision::DeadLetter { task, reason } => Output::DeadLettered { task, reason },
            };
            (sink.borrow_mut())(*time, item);
        });

        // Everything due: new deliveries now, retries and resumes once the frontier reaches `due`.
        let due = scheduled
            .concat(resumes)
            .delay(|(_, due), time| (*due).max(*time))
            .map(|(task, _)| task);
        let sink = output.clone();
        let dispatched = new_deliveries.concat(due).inspect_time(move |time, task| {
            (sink.borrow_mut())(*time, Output::Dispatch(task.clone()));
        });

        // Stats: every outcome counts in the window it finished in, until the window expires.
        let window = config.stats_window.max(1);
        let retention = config.stats_retention;
        let contributions = outcomes
            .map(move |o| {
                let key = StatsKey {
                    window_start: o.finished_at - o.finished_at % window,
                    report_type: o.task.report.data_type,
                    channel: o.task.channel,
                };
                let value = match o.result {
                    AttemptResult::Delivered => (1u8, o.finished_at.saturating_sub(o.task.accepted_at)),
                    _ => (0u8, 0),
                };
                ((key, value), o.finished_at, 1isize)
            })
            .as_collection();
        let expiries = contributions
            .inner
            .clone()
            .map(move |((key, value), time, diff)| ((key, value), (key.window_start + window + retention).max(time), diff))
            .delay(|(_, expiry, _), _| *expiry)
            .as_collection()
            .negate();
        let rows = contributions.concat(expiries).reduce(|_key, input, out| {
            out.push((stats_row(input), 1isize));
        });
        let sink = output.clone();
        let mut pending: HashMap<Time, Vec<(StatsKey, StatsRow, isize)>> = HashMap::new();
        let stats = rows.inner.unary_notify::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _>(Pipeline, "StatsChanges", vec![], move |input, _out, notificator| {
            input.for_each_time(|time, data| {
                let batch = pending.entry(*time.time()).or_default();
                batch.extend(data.flat_map(|d| d.drain(..)).map(|((key, row), _, diff)| (key, row, diff)));
                notificator.notify_at(time.retain(0));
            });
            notificator.for_each(|time, _, _| {
                let Some(changes) = pending.remove(time.time()) else { return };
                // A key whose row was replaced reports the new row; one only retracted is gone.
                let mut latest: std::collections::BTreeMap<StatsKey, Option<StatsRow>> = Default::default();
                for (key, row, diff) in changes {
                    if diff > 0 {
                        latest.insert(key, Some(row));
                    } else {
                        latest.entry(key).or_insert(None);
                    }
                }
                for (key, row) in latest {
                    (sink.borrow_mut())(*time.time(), Output::Stats(key, row));
                }
            });
        });

        decisions.probe_with(&probe);
        dispatched.probe_with(&probe);
        stats.probe_with(&probe);
        digests.probe_with(&probe);
        (report_input, subscription_input, outcome_input, resume_input, member_input)
    });
    Dataflow { reports, subscriptions, outcomes, resumes, members, current: HashMap::new(), probe, time: 0 }
}

/// What one (report, subscription) match becomes on each channel.
#[derive(Clone, Debug)]
enum Expansion {
    /// A delivery of the report on its own, due now.
    Now(DeliveryTask),
    /// A member of the subscription's next digest on that channel.
    Later(DigestMember),
}

fn expand(
    report: &ReportDistribution,
    subscription: &ReportSubscription,
    accepted_at: Time,
    schedules: &mut ScheduleCache,
) -> Vec<Expansion> {
    // A SCHEDULED subscription whose schedule does not parse or fire (refused at subscribe time, so
    // only a version stored before that check) gets its reports at once rather than never.
    let tick = match (&subscription.subscription_type, &subscription.delivery_preferences.schedule) {
        (SubscriptionType::Scheduled, Some(schedule)) => schedules.next_after(schedule, accepted_at),
        _ => None,
    };
    subscription
        .channels_for(report)
        .into_iter()
        .map(|channel| {
            let member_id = crate::delivery::delivery_id(&report.report_data.report_id, &subscription.subscription_id, channel);
            match tick {
                Some(tick) => Expansion::Later(DigestMember {
                    digest_id: crate::digest::digest_id(&subscription.subscription_id, channel, tick),
                    member_id,
                    subscription_id: subscription.subscription_id.clone(),
                    subscriber_id: subscription.subscriber_id.clone(),
                    channel,
                    settings: subscription.delivery_preferences.notification_settings.clone(),
                    schedule: subscription.delivery_preferences.schedule.clone().unwrap_or_default(),
                    tick,
                    report: report.clone(),
                    accepted_at,
                    content: subscription.content_spec().map(Box::new),
                }),
                None => Expansion::Now(DeliveryTask {
                    delivery_id: member_id,
                    subscription_id: subscription.subscription_id.clone(),
                    subscriber_id: subscription.subscriber_id.clone(),
                    channel,
                    settings: subscription.delivery_preferences.notification_settings.clone(),
                    report: report.clone(),
                    accepted_at,
                    attempt: 1,
                    digest: None,
                    content: subscription.content_spec().map(Box::new),
                }),
            }
        })
        .collect()
}

/// Holds members by digest (all members of one digest meet on one worker) and emits each digest
/// once, at its tick, when the frontier shows that no report of an earlier time can still add to it.
/// A tick without members emits nothing. A member fed after its tick (a restart that missed it)
/// goes out at the time it is fed.
fn collect_digests<'scope>(
    members: timely::dataflow::Stream<'scope, Time, Vec<DigestMember>>,
) -> timely::dataflow::Stream<'scope, Time, Vec<DeliveryTask>> {
    // Due time -> digest id -> member id -> member (one member per report and digest).
    let mut pending: BTreeMap<Time, BTreeMap<String, BTreeMap<String, DigestMember>>> = BTreeMap::new();
    members.unary_notify::<timely::container::CapacityContainerBuilder<Vec<DeliveryTask>>, _, _>(
        Exchange::new(|m: &DigestMember| route_hash(&m.digest_id)),
        "CollectDigests",
        vec![],
        move |input, output, notificator| {
            input.for_each_time(|time, data| {
                for member in data.flat_map(|d| d.drain(..)) {
                    let due = member.tick.max(*time.time());
                    let digests = pending.entry(due).or_default();
                    if digests.is_empty() {
                        notificator.notify_at(time.delayed(&due, 0));
                    }
                    digests.entry(member.digest_id.clone()).or_default().insert(member.member_id.clone(), member);
                }
            });
            notificator.for_each(|capability, _, _| {
                let Some(digests) = pending.remove(capability.time()) else { return };
                let mut session = output.session(&capability);
                for members in digests.into_values() {
                    if let Some(task) = crate::digest::assemble(members.into_values().collect()) {
                        session.give(task);
                    }
                }
            });
        },
    )
}

fn decide(policy: &RetryPolicy, outcome: DeliveryOutcome) -> Option<Decision> {
    let DeliveryOutcome { mut task, result, finished_at } = outcome;
    match result {
        AttemptResult::Delivered => None,
        AttemptResult::Permanent { error } => Some(Decision::DeadLetter { task, reason: error }),
        AttemptResult::Transient { error, retry_after } => {
            match policy.next_retry(&task.delivery_id, task.attempt, retry_after) {
                Some(delay) => {
                    task.attempt += 1;
                    Some(Decision::Retry { task, due: finished_at + delay, error })
                }
                None => {
                    let reason = format!("exhausted {} attempts; last error: {error}", task.attempt);
                    Some(Decision::DeadLetter { task, reason })
                }
            }
        }
    }
}

/// One window's figures from its contributions, sorted by (success flag, latency).
fn stats_row(input: &[(&(u8, Time), isize)]) -> StatsRow {
    let mut failed = 0u64;
    let mut successful = 0u64;
    let mut sum = 0u128;
    for ((kind, latency), count) in input.iter().map(|(v, c)| (**v, *c)) {
        let count = count.max(0) as u64;
        if kind == 1 {
            successful += count;
            sum += latency as u128 * count as u128;
        } else {
            failed += count;
        }
    }
    let p99 = (successful > 0).then(|| {
        // Nearest rank: the smallest latency with at least 99% of successes at or below it.
        let rank = (successful * 99).div_ceil(100).max(1);
        let mut seen = 0u64;
        let mut answer = 0;
        for ((kind, latency), count) in input.iter().map(|(v, c)| (**v, *c)) {
            if kind != 1 {
                continue;
            }
            seen += count.max(0) as u64;
            answer = latency;
            if seen >= rank {
                break;
            }
        }
        answer
    });
    StatsRow {
        attempted: successful + failed,
        successful,
        failed,
        avg_delivery_time_us: (successful > 0).then(|| (sum / successful as u128) as Time),
        p99_delivery_time_us: p99,
    }
}

impl Dataflow {
    /// Adds a report at the current input time.
    pub fn insert_report(&mut self, report: ReportDistribution) {
        self.reports.send(report);
    }

    /// Replaces this worker's version of the subscription; a non-active status only retracts it.
    pub fn upsert_subscription(&mut self, subscription: ReportSubscription) {
        self.retract(&subscription.subscription_id);
        if subscription.status == SubscriptionStatus::Active {
            for key in subscription_keys(&subscription) {
                self.subscriptions.insert((key, subscription.clone()));
            }
            self.current.insert(subscription.subscription_id.clone(), subscription);
        }
    }

    pub fn remove_subscription(&mut self, subscription_id: &str) {
        self.retract(subscription_id);
    }

    fn retract(&mut self, subscription_id: &str) {
        if let Some(previous) = self.current.remove(subscription_id) {
            for key in subscription_keys(&previous) {
                self.subscriptions.remove((key, previous.clone()));
            }
        }
    }

    /// An attempt's outcome; it counts at the current input time if `finished_at` is earlier.
    pub fn insert_outcome(&mut self, mut outcome: DeliveryOutcome) {
        outcome.finished_at = outcome.finished_at.max(self.time);
        self.outcomes.send(outcome);
    }

    /// A pending delivery after a restart, or a replayed dead letter: dispatched at `due` or now.
    pub fn resume(&mut self, task: DeliveryTask, due: Time) {
        self.resumes.send((task, due));
    }

    /// A digest member already durable from an earlier run, whose digest has not gone out yet: fed
    /// at its original acceptance time, it rejoins its digest (one member per report, so a report
    /// replayed too is not counted twice).
    pub fn resume_member(&mut self, member: DigestMember) {
        self.members.send(member);
    }

    /// Moves every input to `time`; earlier times are closed. A time in the past is ignored.
    pub fn advance_to(&mut self, time: Time) {
        if time <= self.time {
            return;
        }
        self.time = time;
        self.reports.advance_to(time);
        self.outcomes.advance_to(time);
        self.resumes.advance_to(time);
        self.members.advance_to(time);
        self.subscriptions.advance_to(time);
        self.subscriptions.flush();
    }

    pub fn time(&self) -> Time {
        self.time
    }

    /// All outputs for times before this have been emitted (on every worker); `None` when the
    /// dataflow is complete.
    pub fn frontier(&self) -> Option<Time> {
        self.probe.with_frontier(|f| f.first().copied())
    }

    pub fn probe(&self) -> &ProbeHandle<Time> {
        &self.probe
    }
}
