//! What the process-level fault tests share: a service wired to Kafka and PostgreSQL, a publisher
//! that keeps producing reports into Kafka through the fault, and the tally of what arrived.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dataflows::delivery::{delivery_id, DeliveryChannel};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::helpers::{report, webhook_subscription};
use crate::receiver::{Received, Receiver};

/// `repdist serve` settings for Kafka (topics and group named after `prefix`) and PostgreSQL.
pub fn service_env(prefix: &str, database_url: &str, brokers: &str) -> Vec<(&'static str, String)> {
    vec![
        ("REPDIST_DATABASE_URL", database_url.to_string()),
        ("REPDIST_KAFKA_BROKERS", brokers.to_string()),
        ("REPDIST_KAFKA__GROUP_ID", format!("{prefix}-group")),
        ("REPDIST_KAFKA__REPORTS_TOPIC", format!("{prefix}.reports")),
        ("REPDIST_KAFKA__SUBSCRIPTIONS_TOPIC", format!("{prefix}.subscriptions")),
        ("REPDIST_KAFKA__DISTRIBUTED_TOPIC", format!("{prefix}.distributed")),
        ("REPDIST_KAFKA__DELIVERY_STATUS_TOPIC", format!("{prefix}.delivery-status")),
        ("REPDIST_KAFKA__DEAD_LETTER_TOPIC", format!("{prefix}.reports.dlq")),
        ("REPDIST_KAFKA__COMMIT_INTERVAL", "100ms".to_string()),
        ("REPDIST_KAFKA__PARTITIONS", "2".to_string()),
    ]
}

/// Creates `count` webhook subscriptions over REST (endpoints `f0`, `f1`, ...); returns their ids.
pub async fn subscribe(base: &str, key: &str, receiver: &Receiver, prefix: &str, count: usize) -> Vec<String> {
    let http = crate::helpers::client_with(Some(key));
    let mut ids = Vec::new();
    for i in 0..count {
        let (url, secret) = receiver.endpoint(&format!("f{i}"));
        let id = format!("{prefix}-sub-{i}");
        let body = webhook_subscription(&id, &format!("client-{i}"), &url, &secret);
        let response = http
            .post(format!("{base}/api/v1/reporting/subscribe"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201, "{}", response.text().await.unwrap());
        ids.push(id);
    }
    ids
}

/// Produces report `n` (ids from `prefix`) every 20 ms until stopped. A report the broker does
/// not take (it may be down) is sent again until it does: the publisher is at-least-once too.
pub struct Publisher {
    published: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub fn start(brokers: &str, prefix: &str) -> Publisher {
        let producer: FutureProducer =
            ClientConfig::new().set("bootstrap.servers", brokers).set("message.timeout.ms", "5000").create().expect("producer");
        let published = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped, topic, prefix) = (published.clone(), stop.clone(), format!("{prefix}.reports"), prefix.to_string());
        let task = tokio::spawn(async move {
            while !stopped.load(Ordering::Relaxed) {
                let n = count.load(Ordering::Relaxed);
                let body = report(&format!("{prefix}-evt-{n}"), &format!("{prefix}-rep-{n}")).to_string();
                let record = FutureRecord::to(&topic).key("portfolio_001").payload(&body);
                if producer.send(record, Duration::from_secs(5)).await.is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Publisher { published, stop, task }
    }

    /// Stops producing; returns how many reports the broker took.
    pub async fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        self.published.load(Ordering::Relaxed)
    }
}

/// Every delivery the first `reports` reports owe the subscriptions.
pub fn expected_ids(prefix: &str, reports: usize, subscriptions: &[String]) -> HashSet<String> {
    (0..reports)
        .flat_map(|n| {
            let report_id = format!("{prefix}-rep-{n}");
            subscriptions.iter().map(move |sub| delivery_id(&report_id, sub, DeliveryChannel::ApiWebhook)).collect::<Vec<_>>()
        })
        .collect()
}

pub struct Tally {
    pub lost: Vec<String>,
    pub foreign: Vec<String>,
    pub duplicates: usize,
}

/// Compares what the receiver took (2xx answers) with what was owed.
pub fn tally(received: &[Received], expected: &HashSet<String>) -> Tally {
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for r in received.iter().filter(|r| (200..300).contains(&r.answered)) {
        *copies.entry(r.delivery_id.as_str()).or_default() += 1;
    }
    let seen: HashSet<String> = copies.keys().map(|id| id.to_string()).collect();
    Tally {
        lost: expected.difference(&seen).cloned().collect(),
        foreign: seen.difference(expected).cloned().collect(),
        duplicates: copies.values().map(|n| n - 1).sum(),
    }
}
