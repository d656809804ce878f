//! The maintained delivery set against a from-scratch recomputation: random subscription changes
//! and reports at increasing times; for each report, the oracle scans the subscription versions
//! valid at its time. Also: two workers produce the same set as one.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use dataflows::dataflow::{build, DataflowConfig};
use dataflows::delivery::{delivery_id, DeliveryChannel};
use dataflows::output::Output;
use dataflows::report::{DistributionRouting, ReportDataInfo, ReportDataType, ReportDistribution};
use dataflows::subscription::{DeliveryPreferences, ReportSubscription, SubscriptionFilters, SubscriptionStatus, SubscriptionType};
use dataflows::Time;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Upsert { sub: u8, types: u8, portfolio: Option<u8>, status: u8, min_priority: Option<i32> },
    Report { portfolio: u8, report_type: u8, priority: i32 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..6, 1u8..8, proptest::option::of(0u8..3), 0u8..4, proptest::option::of(0i32..3))
            .prop_map(|(sub, types, portfolio, status, min_priority)| Step::Upsert { sub, types, portfolio, status, min_priority }),
        (0u8..3, 0u8..3, 0i32..3).prop_map(|(portfolio, report_type, priority)| Step::Report { portfolio, report_type, priority }),
    ]
}

fn subscription(sub: u8, types: u8, portfolio: Option<u8>, status: u8, min_priority: Option<i32>) -> ReportSubscription {
    let report_types = (0..3).filter(|b| types & (1 << b) != 0).map(|b| ReportDataType::ALL[b]).collect();
    ReportSubscription {
        subscription_id: format!("s{sub}"),
        subscriber_id: format!("c{sub}"),
        subscriber_type: "CLIENT".into(),
        subscription_type: SubscriptionType::RealTime,
        report_types,
        delivery_preferences: DeliveryPreferences { channels: vec![DeliveryChannel::ApiWebhook], ..Default::default() },
        filters: SubscriptionFilters { portfolio_ids: portfolio.map(|p| vec![format!("p{p}")]).unwrap_or_default(), min_priority, ..Default::default() },
        // Mostly active; sometimes paused or cancelled.
        status: match status {
            0 => SubscriptionStatus::Paused,
            1 => SubscriptionStatus::Cancelled,
            _ => SubscriptionStatus::Active,
        },
    }
}

fn report(n: usize, portfolio: u8, report_type: u8, priority: i32) -> ReportDistribution {
    ReportDistribution {
        event_id: format!("e{n}"),
        timestamp: chrono::DateTime::from_timestamp(0, 0).unwrap(),
        data_type: ReportDataType::ALL[report_type as usize],
        report_data: ReportDataInfo { report_id: format!("r{n}"), portfolio_id: format!("p{portfolio}"), ..Default::default() },
        routing: DistributionRouting { priority, ..Default::default() },
        metadata: Default::default(),
    }
}

/// Feeds `steps` (step n at time n + 1) to `workers` workers, routing each subscription to one
/// fixed worker as the host does; returns the dispatched delivery ids by time.
fn run_dataflow(steps: Vec<Step>, workers: usize) -> BTreeMap<Time, Vec<String>> {
    let collected = Arc::new(Mutex::new(BTreeMap::<Time, Vec<String>>::new()));
    let sink = collected.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let local = Rc::new(RefCell::new(Vec::new()));
        let out = local.clone();
        let mut dataflow = build(worker, DataflowConfig::default(), move |time, output| {
            if let Output::Dispatch(task) = output {
                out.borrow_mut().push((time, task.delivery_id));
            }
        });
        let index = worker.index();
        for (n, step) in steps.iter().enumerate() {
            dataflow.advance_to(n as Time + 1);
            match step.clone() {
                Step::Upsert { sub, types, portfolio, status, min_priority } if sub as usize % workers == index => {
                    dataflow.upsert_subscription(subscription(sub, types, portfolio, status, min_priority));
                }
                Step::Report { portfolio, report_type, priority } if n % workers == index => {
                    dataflow.insert_report(report(n, portfolio, report_type, priority));
                }
                _ => {}
            }
        }
        let end = steps.len() as Time + 2;
        dataflow.advance_to(end);
        let probe = dataflow.probe().clone();
        while probe.less_than(&end) {
            worker.step();
        }
        let mut all = sink.lock().unwrap();
        for (t, id) in local.borrow_mut().drain(..) {
            all.entry(t).or_default().push(id);
        }
    })
    .unwrap();
    let mut result = std::mem::take(&mut *collected.lock().unwrap());
    result.values_mut().for_each(|v| v.sort());
    result
}

/// The naive answer: each report against the latest version of every subscription at its time.
fn oracle(steps: &[Step]) -> BTreeMap<Time, Vec<String>> {
    let mut current: BTreeMap<u8, ReportSubscription> = BTreeMap::new();
    let mut expected = BTreeMap::new();
    for (n, step) in steps.iter().enumerate() {
        match step.clone() {
            Step::Upsert { sub, types, portfolio, status, min_priority } => {
                current.insert(sub, subscription(sub, types, portfolio, status, min_priority));
            }
            Step::Report { portfolio, report_type, priority } => {
                let r = report(n, portfolio, report_type, priority);
                let mut ids: Vec<String> = current
                    .values()
                    .filter(|s| s.matches(&r))
                    .flat_map(|s| s.channels_for(&r).into_iter().map(|c| delivery_id(&r.report_data.report_id, &s.subscription_id, c)))
                    .collect();
                ids.sort();
                if !ids.is_empty() {
                    expected.insert(n as Time + 1, ids);
                }
            }
        }
    }
    expected
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn the_delivery_set_matches_a_naive_recomputation(steps in proptest::collection::vec(step(), 1..40)) {
        prop_assert_eq!(run_dataflow(steps.clone(), 1), oracle(&steps));
    }
}

#[test]
fn two_workers_produce_the_same_delivery_set_as_one() {
    let steps: Vec<Step> = (0..60u8)
        .map(|i| match i % 3 {
            0 => Step::Upsert { sub: i % 6, types: 1 + i % 7, portfolio: (i % 4 != 0).then_some(i % 3), status: 2 + i % 3, min_priority: None },
            _ => Step::Report { portfolio: i % 3, report_type: i % 3, priority: (i % 3) as i32 },
        })
        .collect();
    let one = run_dataflow(steps.clone(), 1);
    assert!(!one.is_empty());
    assert_eq!(one, oracle(&steps));
    assert_eq!(run_dataflow(steps, 2), one);
}
