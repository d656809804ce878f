//! Throughput of the temporal join: reports per second into the delivery set, with 100,000 active
//! subscriptions (two report types each, 1-3 of 1,000 portfolios, a tenth with a routing glob).
//! Run: `cargo bench --bench join`.

use std::cell::RefCell;
use std::rc::Rc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataflows::dataflow::{build, DataflowConfig};
use dataflows::delivery::DeliveryChannel;
use dataflows::output::Output;
use dataflows::report::{DistributionRouting, ReportDataInfo, ReportDataType, ReportDistribution};
use dataflows::subscription::{DeliveryPreferences, ReportSubscription, SubscriptionFilters, SubscriptionStatus, SubscriptionType};

const SUBSCRIPTIONS: usize = 100_000;
const PORTFOLIOS: usize = 1_000;
const BATCH: usize = 1_000;

fn subscription(i: usize) -> ReportSubscription {
    let types = [ReportDataType::ALL[i % 6], ReportDataType::ALL[(i / 6 + 1 + i % 5) % 6]];
    let portfolios: Vec<String> = (0..1 + i % 3).map(|k| format!("portfolio_{:04}", (i * 7 + k * 131) % PORTFOLIOS)).collect();
    ReportSubscription {
        subscription_id: format!("sub-{i}"),
        subscriber_id: format!("subscriber-{i}"),
        subscriber_type: "CLIENT".into(),
        subscription_type: SubscriptionType::RealTime,
        report_types: types.to_vec(),
        delivery_preferences: DeliveryPreferences { channels: vec![DeliveryChannel::ApiWebhook], ..Default::default() },
        filters: SubscriptionFilters {
            routing_key: (i % 10 == 0).then(|| format!("{}.*", portfolios[0])),
            portfolio_ids: portfolios,
            ..Default::default()
        },
        status: SubscriptionStatus::Active,
    }
}

fn report(n: usize) -> ReportDistribution {
    let portfolio = format!("portfolio_{:04}", (n * 17) % PORTFOLIOS);
    ReportDistribution {
        event_id: format!("evt-{n}"),
        timestamp: chrono::DateTime::from_timestamp(0, 0).unwrap_or_default(),
        data_type: ReportDataType::ALL[n % 6],
        report_data: ReportDataInfo { report_id: format!("rep-{n}"), portfolio_id: portfolio.clone(), ..Default::default() },
        routing: DistributionRouting { routing_key: format!("{portfolio}.perf.monthly"), ..Default::default() },
        metadata: Default::default(),
    }
}

/// The dataflow runs on its own thread (timely workers need `Send + 'static` closures, criterion's
/// handle is neither); each measured iteration asks it for one batch and waits for completion.
fn join(c: &mut Criterion) {
    let (requests, inbox) = std::sync::mpsc::channel::<usize>();
    let (done, finished) = std::sync::mpsc::channel::<usize>();
    // Mutexes only to satisfy `execute_directly`'s `Sync` bound; one thread uses them.
    let (inbox, done) = (std::sync::Mutex::new(inbox), std::sync::Mutex::new(done));
    let worker = std::thread::spawn(move || {
        timely::execute::execute_directly(move |worker| {
            let deliveries = Rc::new(RefCell::new(0usize));
            let count = deliveries.clone();
            let mut dataflow = build(worker, DataflowConfig::default(), move |_, output| {
                if let Output::Dispatch(_) = output {
                    *count.borrow_mut() += 1;
                }
            });
            let mut time = 1;
            dataflow.advance_to(time);
            for i in 0..SUBSCRIPTIONS {
                dataflow.upsert_subscription(subscription(i));
            }
            let probe = dataflow.probe().clone();
            let mut next = 0usize;
            // Batch 0 loads the subscriptions; each later request publishes BATCH reports.
            while let Ok(reports) = inbox.lock().map_err(|_| ()).and_then(|r| r.recv().map_err(|_| ())) {
                for _ in 0..reports {
                    dataflow.insert_report(report(next));
                    next += 1;
                }
                time += 1;
                dataflow.advance_to(time);
                while probe.less_than(&time) {
                    worker.step();
                }
                if let Ok(done) = done.lock() {
                    let _ = done.send(*deliveries.borrow());
                }
            }
            eprintln!("{next} reports produced {} deliveries ({:.1} per report)", deliveries.borrow(), *deliveries.borrow() as f64 / next.max(1) as f64);
        })
    });
    requests.send(0).expect("worker alive");
    finished.recv().expect("subscriptions loaded");

    let mut group = c.benchmark_group("join");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(format!("{BATCH}_reports_x_{SUBSCRIPTIONS}_subscriptions"), |b| {
        b.iter(|| {
            requests.send(BATCH).expect("worker alive");
            finished.recv().expect("batch done")
        })
    });
    group.finish();
    drop(requests);
    let _ = worker.join();
}

criterion_group!(benches, join);
criterion_main!(benches);
