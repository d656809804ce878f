//! The dataflow driven in virtual time: every input at a chosen time, outputs checked exactly.

use std::cell::RefCell;
use std::rc::Rc;

use dataflows::dataflow::{build, Dataflow, DataflowConfig};
use dataflows::delivery::{delivery_id, AttemptResult, DeliveryChannel, DeliveryOutcome, DeliveryTask};
use dataflows::output::Output;
use dataflows::report::{ReportDataInfo, ReportDataType, ReportDistribution};
use dataflows::retry::RetryPolicy;
use dataflows::subscription::{
    DeliveryPreferences, NotificationSettings, ReportSubscription, SubscriptionFilters, SubscriptionStatus, SubscriptionType,
};
use dataflows::Time;

type Log = Rc<RefCell<Vec<(Time, Output)>>>;

/// Runs `script` against a single worker; `settle(t)` advances inputs to `t` and steps until done.
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
    /// An attempt's outcome, fed at the time it finished (as the host does).
    fn finish(&mut self, task: &DeliveryTask, result: AttemptResult, at: Time) {
        self.dataflow.advance_to(at);
        self.dataflow.insert_outcome(DeliveryOutcome { task: task.clone(), result, finished_at: at });
    }

    fn settle(&mut self, time: Time) {
        self.dataflow.advance_to(time);
        let probe = self.dataflow.probe().clone();
        while probe.less_than(&time) {
            self.worker.step();
        }
    }

    /// Outputs so far, taken.
    fn take(&mut self) -> Vec<(Time, Output)> {
        std::mem::take(&mut *self.log.borrow_mut())
    }

    /// Outputs so far other than stats, taken.
    fn events(&mut self) -> Vec<(Time, Output)> {
        self.take().into_iter().filter(|(_, o)| !matches!(o, Output::Stats(..))).collect()
    }

    fn dispatched(&mut self) -> Vec<(Time, DeliveryTask)> {
        self.take()
            .into_iter()
            .filter_map(|(t, o)| match o {
                Output::Dispatch(task) => Some((t, task)),
                _ => None,
            })
            .collect()
    }
}

fn subscription(id: &str, portfolios: &[&str]) -> ReportSubscription {
    ReportSubscription {
        subscription_id: id.into(),
        subscriber_id: format!("client-{id}"),
        subscriber_type: "CLIENT".into(),
        subscription_type: SubscriptionType::RealTime,
        report_types: vec![ReportDataType::PerformanceReport],
        delivery_preferences: DeliveryPreferences {
            channels: vec![DeliveryChannel::ApiWebhook],
            notification_settings: NotificationSettings::default(),
            ..Default::default()
        },
        filters: SubscriptionFilters { portfolio_ids: portfolios.iter().map(|p| p.to_string()).collect(), ..Default::default() },
        status: SubscriptionStatus::Active,
    }
}

fn report(event: &str, report_id: &str, portfolio: &str) -> ReportDistribution {
    ReportDistribution {
        event_id: event.into(),
        timestamp: chrono::DateTime::from_timestamp(0, 0).unwrap(),
        data_type: ReportDataType::PerformanceReport,
        report_data: ReportDataInfo { report_id: report_id.into(), portfolio_id: portfolio.into(), ..Default::default() },
        routing: Default::default(),
        metadata: Default::default(),
    }
}

fn ids(dispatched: &[(Time, DeliveryTask)]) -> Vec<String> {
    let mut ids: Vec<String> = dispatched.iter().map(|(_, t)| t.delivery_id.clone()).collect();
    ids.sort();
    ids
}

fn id(report: &str, sub: &str) -> String {
    delivery_id(report, sub, DeliveryChannel::ApiWebhook)
}

#[test]
fn reports_meet_the_subscriptions_active_at_their_time() {
    run(DataflowConfig::default(), |h| {
        h.dataflow.advance_to(10);
        h.dataflow.upsert_subscription(subscription("early", &["p1"]));
        h.settle(20);
        h.dataflow.insert_report(report("e1", "r1", "p1"));
        h.settle(30);
        h.dataflow.upsert_subscription(subscription("late", &[]));
        h.settle(40);
        let first = h.dispatched();
        assert_eq!(ids(&first), vec![id("r1", "early")], "a later subscription never sees an earlier report");
        assert_eq!(first[0].0, 20, "dispatched at the report's time");
        assert_eq!(first[0].1.accepted_at, 20);

        h.dataflow.insert_report(report("e2", "r2", "p1"));
        h.settle(50);
        let mut expected = vec![id("r2", "early"), id("r2", "late")];
        expected.sort();
        assert_eq!(ids(&h.dispatched()), expected);

        let mut cancelled = subscription("early", &["p1"]);
        cancelled.status = SubscriptionStatus::Cancelled;
        h.dataflow.upsert_subscription(cancelled);
        h.dataflow.insert_report(report("e3", "r3", "p1"));
        h.settle(60);
        assert_eq!(ids(&h.dispatched()), vec![id("r3", "late")], "a cancelled subscription gets nothing from its change on");
    });
}

#[test]
fn a_repeated_event_id_yields_nothing_new() {
    run(DataflowConfig::default(), |h| {
        h.dataflow.upsert_subscription(subscription("s", &[]));
        h.settle(10);
        h.dataflow.insert_report(report("e1", "r1", "p1"));
        h.settle(20);
        h.dataflow.insert_report(report("e1", "r1", "p1"));
        h.settle(30);
        assert_eq!(ids(&h.dispatched()), vec![id("r1", "s")]);
    });
}

#[test]
fn transient_failures_retry_on_schedule_then_dead_letter() {
    let policy = RetryPolicy { initial_backoff: 1_000, multiplier: 2, max_backoff: 10_000, max_attempts: 3, jitter_percent: 0 };
    run(DataflowConfig { retry: policy, ..DataflowConfig::default() }, |h| {
        h.dataflow.upsert_subscription(subscription("s", &[]));
        h.settle(10);
        h.dataflow.insert_report(report("e1", "r1", "p1"));
        h.settle(20);
        let task = h.dispatched().remove(0).1;
        let failure = || AttemptResult::Transient { error: "HTTP 503".into(), retry_after: None };

        h.finish(&task, failure(), 100);
        h.settle(101);
        let out = h.events();
        assert!(matches!(&out[..], [(100, Output::RetryScheduled { due: 1_100, task, .. })] if task.attempt == 2), "{out:?}");
        h.settle(1_100);
        assert!(h.dispatched().is_empty(), "not before it is due");
        h.settle(1_101);
        let retry = h.dispatched();
        assert_eq!(retry.len(), 1);
        assert_eq!((retry[0].0, retry[0].1.attempt), (1_100, 2));

        h.finish(&retry[0].1, failure(), 1_200);
        h.settle(3_300);
        let third = h.dispatched();
        assert_eq!((third[0].0, third[0].1.attempt), (3_200, 3), "second retry waits twice as long");

        h.finish(&third[0].1, failure(), 3_300);
        h.settle(3_400);
        let out = h.events();
        assert!(
            matches!(&out[..], [(3_300, Output::DeadLettered { reason, .. })] if reason.contains("exhausted 3 attempts") && reason.contains("HTTP 503")),
            "{out:?}"
        );
    });
}

#[test]
fn permanent_failures_dead_letter_and_resumes_dispatch() {
    run(DataflowConfig::default(), |h| {
        h.dataflow.upsert_subscription(subscription("s", &[]));
        h.settle(10);
        h.dataflow.insert_report(report("e1", "r1", "p1"));
        h.settle(20);
        let task = h.dispatched().remove(0).1;
        h.finish(&task, AttemptResult::Permanent { error: "HTTP 410".into() }, 30);
        h.settle(31);
        let out = h.events();
        assert!(matches!(&out[..], [(30, Output::DeadLettered { reason, .. })] if reason == "HTTP 410"), "{out:?}");

        h.dataflow.resume(task.clone(), 5);
        h.dataflow.resume(task.clone(), 50);
        h.settle(40);
        assert_eq!(h.dispatched().iter().map(|(t, _)| *t).collect::<Vec<_>>(), vec![31], "a past due time dispatches now");
        h.settle(51);
        assert_eq!(h.dispatched().iter().map(|(t, _)| *t).collect::<Vec<_>>(), vec![50]);
    });
}

#[test]
fn stats_windows_count_attempts_and_latency() {
    let config = DataflowConfig { stats_window: 1_000, stats_retention: 5_000, ..DataflowConfig::default() };
    run(config, |h| {
        h.dataflow.upsert_subscription(subscription("s", &[]));
        h.settle(10);
        h.dataflow.insert_report(report("e1", "r1", "p1"));
        h.dataflow.insert_report(report("e2", "r2", "p1"));
        h.settle(100);
        let tasks: Vec<DeliveryTask> = h.dispatched().into_iter().map(|(_, t)| t).collect();
        h.finish(&tasks[0], AttemptResult::Delivered, 110);
        h.finish(&tasks[1], AttemptResult::Transient { error: "x".into(), retry_after: None }, 110);
        h.settle(120);
        h.finish(&tasks[1], AttemptResult::Delivered, 310);
        h.settle(320);
        let stats: Vec<_> = h
            .take()
            .into_iter()
            .filter_map(|(t, o)| match o {
                Output::Stats(key, row) => Some((t, key, row)),
                _ => None,
            })
            .collect();
        assert_eq!(stats.len(), 2, "{stats:?}");
        let (_, key, row) = &stats[1];
        assert_eq!(key.window_start, 0);
        let row = row.expect("a live window");
        assert_eq!((row.attempted, row.successful, row.failed), (3, 2, 1));
        // Latencies 100 (110 - 10... accepted at 10) and 300: accepted_at is the report's time, 10.
        assert_eq!(row.avg_delivery_time_us, Some((100 + 300) / 2));
        assert_eq!(row.p99_delivery_time_us, Some(300));
        h.settle(6_001);
        let all = h.take();
        let gone: Vec<_> = all.iter().filter(|(_, o)| matches!(o, Output::Stats(_, None))).collect();
        assert_eq!(gone.len(), 1, "the window leaves the view after its retention");
    });
}

/// A TRIGGERED subscription yields a delivery only for reports its condition holds for (metadata,
/// and content facts computed at ingest); for the others no task exists at all.
#[test]
fn triggered_subscriptions_create_tasks_only_when_the_condition_holds() {
    run(DataflowConfig::default(), |h| {
        let mut alerts = subscription("alerts", &[]);
        alerts.subscription_type = SubscriptionType::Triggered;
        alerts.report_types = vec![ReportDataType::AlertReport, ReportDataType::PerformanceReport];
        alerts.filters.trigger = Some(
            serde_json::from_value(serde_json::json!({
                "data_types": ["ALERT_REPORT"], "min_priority": 3,
                "content": [{"column": "var_99", "aggregate": "max", "gte": 5.5}]
            }))
            .unwrap(),
        );
        let plain = subscription("plain", &[]);
        h.dataflow.advance_to(10);
        h.dataflow.upsert_subscription(alerts);
        h.dataflow.upsert_subscription(plain);
        h.settle(20);

        let alert = |event: &str, report_id: &str, priority: i32, var: Option<f64>| {
            let mut r = report(event, report_id, "p1");
            r.data_type = ReportDataType::AlertReport;
            r.routing.priority = priority;
            if let Some(v) = var {
                r.report_data.content_facts.insert("max(var_99)".into(), dataflows::content::Number(v));
            }
            r
        };
        h.dataflow.insert_report(alert("e1", "fires", 3, Some(5.5)));
        h.dataflow.insert_report(alert("e2", "low-priority", 2, Some(9.0)));
        h.dataflow.insert_report(alert("e3", "calm", 5, Some(5.4)));
        h.dataflow.insert_report(alert("e4", "no-content", 5, None));
        h.dataflow.insert_report(report("e5", "performance", "p1"));
        h.settle(30);
        let dispatched = h.dispatched();
        let triggered: Vec<&str> = dispatched
            .iter()
            .filter(|(_, t)| t.subscription_id == "alerts")
            .map(|(_, t)| t.report.report_data.report_id.as_str())
            .collect();
        assert_eq!(triggered, vec!["fires"], "only the report that meets every part of the condition");
        assert_eq!(dispatched.iter().filter(|(_, t)| t.subscription_id == "plain").count(), 1, "REAL_TIME: its type only");
        assert!(h.events().is_empty(), "nothing else: no task, no dead letter for a trigger that did not fire");
    });
}
