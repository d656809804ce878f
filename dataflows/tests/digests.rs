//! SCHEDULED subscriptions in virtual time: reports collected into one digest per subscription,
//! channel and cron tick, emitted when dataflow time reaches the tick, and nothing for empty ticks.

use std::cell::RefCell;
use std::rc::Rc;

use dataflows::dataflow::{build, Dataflow, DataflowConfig};
use dataflows::delivery::{delivery_id, AttemptResult, DeliveryChannel, DeliveryOutcome, DeliveryTask};
use dataflows::digest::{digest_id, DigestMember};
use dataflows::output::Output;
use dataflows::report::{ReportDataInfo, ReportDataType, ReportDistribution};
use dataflows::retry::RetryPolicy;
use dataflows::subscription::{
    DeliveryPreferences, ReportSubscription, SubscriptionFilters, SubscriptionStatus, SubscriptionType,
};
use dataflows::Time;

type Log = Rc<RefCell<Vec<(Time, Output)>>>;

/// 2025-06-21T08:00:00Z, a whole second: ticks of an every-second schedule fall on `BASE + n * SECOND`.
const BASE: Time = 1_750_492_800_000_000;
const SECOND: Time = 1_000_000;

fn run(config: DataflowConfig, script: impl FnOnce(&mut Harness) + Send + Sync + 'static) {
    timely::execute::execute_directly(move |worker| {
        let log: Log = Rc::new(RefCell::new(Vec::new()));
        let sink = log.clone();
        let dataflow = build(worker, config.clone(), move |time, output| sink.borrow_mut().push((time, output)));
        let mut harness = Harness { worker, dataflow, log };
        script(&mut harness);
    });
}

struct Harness<'w> {
    worker: &'w mut timely::worker::Worker,
    dataflow: Dataflow,
    log: Log,
}

impl Harness<'_> {
    fn settle(&mut self, time: Time) {
        self.dataflow.advance_to(time);
        let probe = self.dataflow.probe().clone();
        while probe.less_than(&time) {
            self.worker.step();
        }
    }

    fn report_at(&mut self, time: Time, report_id: &str) {
        self.dataflow.advance_to(time);
        self.dataflow.insert_report(report(&format!("e-{report_id}-{time}"), report_id));
    }

    fn take(&mut self) -> Vec<(Time, Output)> {
        std::mem::take(&mut *self.log.borrow_mut())
            .into_iter()
            .filter(|(_, o)| !matches!(o, Output::Stats(..)))
            .collect()
    }

    fn digests(&mut self) -> Vec<(Time, DeliveryTask)> {
        self.take()
            .into_iter()
            .filter_map(|(t, o)| match o {
                Output::DigestDue(task) => Some((t, task)),
                _ => None,
            })
            .collect()
    }
}

fn scheduled(id: &str, schedule: &str, channels: Vec<DeliveryChannel>) -> ReportSubscription {
    ReportSubscription {
        subscription_id: id.into(),
        subscriber_id: format!("client-{id}"),
        subscriber_type: "CLIENT".into(),
        subscription_type: SubscriptionType::Scheduled,
        report_types: vec![ReportDataType::PerformanceReport],
        delivery_preferences: DeliveryPreferences { channels, schedule: Some(schedule.into()), ..Default::default() },
        filters: SubscriptionFilters::default(),
        status: SubscriptionStatus::Active,
    }
}

fn report(event: &str, report_id: &str) -> ReportDistribution {
    ReportDistribution {
        event_id: event.into(),
        timestamp: chrono::DateTime::from_timestamp(0, 0).unwrap(),
        data_type: ReportDataType::PerformanceReport,
        report_data: ReportDataInfo { report_id: report_id.into(), portfolio_id: "p1".into(), ..Default::default() },
        routing: Default::default(),
        metadata: Default::default(),
    }
}

fn member_reports(task: &DeliveryTask) -> Vec<String> {
    task.digest.as_ref().expect("a digest").members.iter().map(|m| m.report.report_data.report_id.clone()).collect()
}

const WEBHOOK: DeliveryChannel = DeliveryChannel::ApiWebhook;

#[test]
fn one_digest_per_tick_with_its_members_and_none_for_empty_ticks() {
    run(DataflowConfig::default(), |h| {
        h.settle(BASE - SECOND);
        h.dataflow.upsert_subscription(scheduled("s", "* * * * * *", vec![WEBHOOK]));
        h.settle(BASE);
        h.report_at(BASE, "r1"); // exactly on a tick: belongs to the next one
        h.report_at(BASE + 400_000, "r2");
        h.settle(BASE + SECOND);
        let out = h.take();
        let members: Vec<(Time, &DigestMember)> = out
            .iter()
            .filter_map(|(t, o)| match o {
                Output::DigestMember(m) => Some((*t, m)),
                _ => None,
            })
            .collect();
        assert_eq!(members.len(), 2, "each report is told to the host as a member: {out:?}");
        assert_eq!((members[0].0, members[0].1.tick), (BASE, BASE + SECOND), "at the report's time, for the next tick");
        assert_eq!(members[0].1.member_id, delivery_id("r1", "s", WEBHOOK));
        assert!(
            out.iter().all(|(_, o)| !matches!(o, Output::Dispatch(_) | Output::DigestDue(_))),
            "nothing goes out before the tick: {out:?}"
        );

        h.settle(BASE + SECOND + 1);
        let digests = h.digests();
        assert_eq!(digests.len(), 1, "{digests:?}");
        let (time, task) = &digests[0];
        assert_eq!(*time, BASE + SECOND, "due at the tick, in dataflow time");
        assert_eq!(task.delivery_id, digest_id("s", WEBHOOK, BASE + SECOND));
        assert_eq!((task.accepted_at, task.attempt, task.channel), (BASE + SECOND, 1, WEBHOOK));
        assert_eq!(member_reports(task), ["r1", "r2"]);

        // The next tick has one member; the two after it none.
        h.report_at(BASE + 1_500_000, "r3");
        h.settle(BASE + 4 * SECOND + 1);
        let digests = h.digests();
        assert_eq!(digests.len(), 1, "empty ticks send nothing: {digests:?}");
        assert_eq!(digests[0].0, BASE + 2 * SECOND);
        assert_eq!(digests[0].1.delivery_id, digest_id("s", WEBHOOK, BASE + 2 * SECOND));
        assert_eq!(member_reports(&digests[0].1), ["r3"]);
    });
}

#[test]
fn digests_are_per_subscription_and_channel_and_real_time_stays_immediate() {
    run(DataflowConfig::default(), |h| {
        h.settle(BASE);
        h.dataflow.upsert_subscription(scheduled("a", "*/2 * * * * *", vec![WEBHOOK, DeliveryChannel::DashboardNotification]));
        h.dataflow.upsert_subscription(scheduled("b", "* * * * * *", vec![WEBHOOK]));
        let mut now = scheduled("now", "unused", vec![WEBHOOK]);
        now.subscription_type = SubscriptionType::RealTime;
        now.delivery_preferences.schedule = None;
        h.dataflow.upsert_subscription(now);
        h.settle(BASE + 100);
        h.report_at(BASE + 100, "r1");
        h.settle(BASE + 200);
        let immediate: Vec<String> = h
            .take()
            .into_iter()
            .filter_map(|(_, o)| match o {
                Output::Dispatch(task) => Some(task.delivery_id),
                _ => None,
            })
            .collect();
        assert_eq!(immediate, vec![delivery_id("r1", "now", WEBHOOK)]);

        h.settle(BASE + 2 * SECOND + 1);
        let mut digests: Vec<(Time, String)> = h.digests().into_iter().map(|(t, task)| (t, task.delivery_id)).collect();
        digests.sort();
        let mut expected = vec![
            (BASE + SECOND, digest_id("b", WEBHOOK, BASE + SECOND)),
            (BASE + 2 * SECOND, digest_id("a", WEBHOOK, BASE + 2 * SECOND)),
            (BASE + 2 * SECOND, digest_id("a", DeliveryChannel::DashboardNotification, BASE + 2 * SECOND)),
        ];
        expected.sort();
        assert_eq!(digests, expected);
    });
}

#[test]
fn members_collected_before_a_cancel_still_go_out() {
    run(DataflowConfig::default(), |h| {
        h.settle(BASE);
        h.dataflow.upsert_subscription(scheduled("s", "* * * * * *", vec![WEBHOOK]));
        h.report_at(BASE + 10, "r1");
        h.settle(BASE + 20);
        let mut cancelled = scheduled("s", "* * * * * *", vec![WEBHOOK]);
        cancelled.status = SubscriptionStatus::Cancelled;
        h.dataflow.upsert_subscription(cancelled);
        h.report_at(BASE + 30, "r2");
        h.settle(BASE + SECOND + 1);
        let digests = h.digests();
        assert_eq!(digests.len(), 1);
        assert_eq!(member_reports(&digests[0].1), ["r1"], "collected while active: sent; after the cancel: not collected");
    });
}

#[test]
fn resumed_members_rejoin_their_digest_once() {
    run(DataflowConfig::default(), |h| {
        h.settle(BASE);
        h.dataflow.upsert_subscription(scheduled("s", "* * * * * *", vec![WEBHOOK]));
        h.settle(BASE + 10);
        // A restart: r1 was durable as a member, r2 is replayed as a report at its original time,
        // and r1's report is replayed too.
        let mut first_run_log = Vec::new();
        h.report_at(BASE + 10, "r1");
        h.settle(BASE + 11);
        for (_, output) in h.take() {
            if let Output::DigestMember(member) = output {
                first_run_log.push(member);
            }
        }
        assert_eq!(first_run_log.len(), 1);
        h.dataflow.resume_member(first_run_log[0].clone());
        h.report_at(BASE + 20, "r2");
        h.settle(BASE + SECOND + 1);
        let digests = h.digests();
        assert_eq!(digests.len(), 1);
        assert_eq!(member_reports(&digests[0].1), ["r1", "r2"], "r1 once, though it came twice");

        // A member whose tick passed while the service was down goes out when it is fed.
        let mut late = first_run_log[0].clone();
        late.tick = BASE + 2 * SECOND;
        late.digest_id = digest_id("s", WEBHOOK, late.tick);
        h.settle(BASE + 5 * SECOND);
        h.dataflow.resume_member(late.clone());
        h.settle(BASE + 5 * SECOND + 1);
        let digests = h.digests();
        assert_eq!(digests.len(), 1);
        assert_eq!((digests[0].0, digests[0].1.delivery_id.as_str()), (BASE + 5 * SECOND, late.digest_id.as_str()));
    });
}

#[test]
fn a_digest_retries_and_dead_letters_like_any_delivery() {
    let policy = RetryPolicy { initial_backoff: 1_000, multiplier: 2, max_backoff: 10_000, max_attempts: 2, jitter_percent: 0 };
    run(DataflowConfig { retry: policy, ..DataflowConfig::default() }, |h| {
        h.settle(BASE);
        h.dataflow.upsert_subscription(scheduled("s", "* * * * * *", vec![WEBHOOK]));
        h.report_at(BASE + 10, "r1");
        h.settle(BASE + SECOND + 1);
        let (_, digest) = h.digests().remove(0);
        let failed_at = BASE + SECOND + 100;
        h.dataflow.advance_to(failed_at);
        let transient = AttemptResult::Transient { error: "HTTP 503".into(), retry_after: None };
        h.dataflow.insert_outcome(DeliveryOutcome { task: digest.clone(), result: transient.clone(), finished_at: failed_at });
        h.settle(failed_at + 1_001);
        let out = h.take();
        let retry = out
            .iter()
            .find_map(|(t, o)| match o {
                Output::Dispatch(task) => Some((*t, task.clone())),
                _ => None,
            })
            .unwrap_or_else(|| panic!("a retry: {out:?}"));
        assert_eq!(retry.0, failed_at + 1_000);
        assert_eq!((retry.1.attempt, retry.1.digest.clone()), (2, digest.digest.clone()), "the same members");

        h.dataflow.insert_outcome(DeliveryOutcome { task: retry.1.clone(), result: transient, finished_at: failed_at + 2_000 });
        h.settle(failed_at + 3_000);
        let out = h.take();
        assert!(
            out.iter().any(|(_, o)| matches!(o, Output::DeadLettered { task, .. } if task.delivery_id == digest.delivery_id)),
            "{out:?}"
        );
    });
}
