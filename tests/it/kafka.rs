//! Kafka in: against a real Kafka-compatible broker on loopback (`scripts/services up` starts one;
//! `REPDIST_TEST_KAFKA_BROKERS` overrides the address). Every test uses its own topics and group.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::helpers::{eventually, report, webhook_subscription, TestServer};
use crate::kafka_peer::{brokers, kafka_config, produce, producer, unique_prefix};
use crate::receiver::Receiver;

/// Every record of `topic`, read from the beginning until `count` arrived or 15 s passed.
async fn read_topic(topic: &str, count: usize) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("reader-{}", rand::random::<u32>()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let mut assignment = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            assignment.add_partition_offset(t.name(), p.id(), Offset::Beginning).unwrap();
        }
    }
    consumer.assign(&assignment).expect("assign");
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while records.len() < count {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(record)) => records.push(record.detach()),
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => break,
        }
    }
    records
}

/// The group's committed offsets on `topic`, summed over partitions (= records committed when
/// the topic was written from offset 0).
fn committed_total(group: &str, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(5)).expect("committed offsets");
    committed.elements().iter().map(|e| if let Offset::Offset(o) = e.offset() { o } else { 0 }).sum()
}

fn header<'a>(record: &'a OwnedMessage, key: &str) -> Option<&'a str> {
    let headers = record.headers()?;
    headers.iter().find(|h| h.key == key).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
}

async fn start_with_kafka(prefix: &str, data_dir: Option<&std::path::Path>) -> TestServer {
    let kafka = kafka_config(prefix);
    match data_dir {
        None => TestServer::start_with(|c| c.kafka = kafka).await,
        Some(dir) => TestServer::start_in(dir, |c| c.kafka = kafka).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_from_kafka_are_delivered_and_bad_records_are_dead_lettered_and_committed() {
    let prefix = unique_prefix("ingest");
    let receiver = Receiver::start().await;
    let (url, secret) = receiver.endpoint("k1");
    let server = start_with_kafka(&prefix, None).await;
    server.subscribe(webhook_subscription("sub_k1", "client_k1", &url, &secret)).await;

    let producer = producer();
    let topic = format!("{prefix}.reports");
    for i in 0..3 {
        let body = report(&format!("evt_k{i}"), &format!("report_k{i}")).to_string();
        produce(&producer, &topic, "portfolio_001", Some(&body)).await;
    }
    let mut unknown_enum = report("evt_bad_enum", "report_bad");
    unknown_enum["data_type"] = json!("HOROSCOPE_REPORT");
    let mut missing = report("evt_missing", "report_missing");
    missing["report_data"].as_object_mut().unwrap().remove("report_id");
    produce(&producer, &topic, "portfolio_001", Some("{not json")).await;
    produce(&producer, &topic, "portfolio_001", Some(&unknown_enum.to_string())).await;
    produce(&producer, &topic, "portfolio_001", Some(&missing.to_string())).await;
    // One more good record after the bad ones: a bad record never stops the consumer.
    produce(&producer, &topic, "portfolio_001", Some(&report("evt_k3", "report_k3").to_string())).await;

    let delivered = eventually(Duration::from_secs(20), || async {
        let got = receiver.received_by("k1");
        (got.len() >= 4).then_some(got)
    })
    .await
    .expect("all four good reports delivered");
    let mut reports: Vec<String> =
        delivered.iter().map(|r| r.body["data"]["report"]["report_data"]["report_id"].as_str().unwrap().to_string()).collect();
    reports.sort();
    reports.dedup();
    assert_eq!(reports, ["report_k0", "report_k1", "report_k2", "report_k3"]);
    assert!(delivered.iter().all(|r| r.signature_ok));

    let dead = read_topic(&format!("{prefix}.reports.dlq"), 3).await;
    assert_eq!(dead.len(), 3, "three refused records in the dead-letter topic");
    let payloads: Vec<&str> = dead.iter().map(|r| std::str::from_utf8(r.payload().unwrap()).unwrap()).collect();
    assert!(payloads.contains(&"{not json"), "the refused record is kept byte for byte");
    for record in &dead {
        assert_eq!(header(record, "source.topic"), Some(topic.as_str()));
        assert!(header(record, "source.offset").is_some_and(|o| o.parse::<i64>().is_ok()));
        assert!(header(record, "error").is_some_and(|e| !e.is_empty()));
    }
    let fields: Vec<Option<&str>> = dead.iter().map(|r| header(r, "error.field")).collect();
    assert!(fields.contains(&Some("data_type")), "the unknown enum names its field: {fields:?}");
    assert!(fields.iter().any(|f| f.is_some_and(|f| f.contains("report_id"))), "the missing field is named: {fields:?}");

    // Every record, good or bad, is committed once it is durable or dead-lettered.
    let group = format!("{prefix}-group");
    let committed = eventually(Duration::from_secs(10), || async {
        let total = committed_total(&group, &topic, 2);
        (total == 7).then_some(total)
    })
    .await;
    assert_eq!(committed, Some(7), "committed offsets cover all 7 records");
    server.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_topic_adds_and_a_tombstone_cancels() {
    let prefix = unique_prefix("subs");
    let receiver = Receiver::start().await;
    let (url_a, secret_a) = receiver.endpoint("sa");
    let (url_w, secret_w) = receiver.endpoint("sw");
    let server = start_with_kafka(&prefix, None).await;
    let producer = producer();
    let subs_topic = format!("{prefix}.subscriptions");
    let reports_topic = format!("{prefix}.reports");

    produce(&producer, &subs_topic, "sub_a", Some(&webhook_subscription("sub_a", "client_a", &url_a, &secret_a).to_string())).await;
    produce(&producer, &subs_topic, "sub_w", Some(&webhook_subscription("sub_w", "client_w", &url_w, &secret_w).to_string())).await;
    // A record whose key disagrees with its body is refused, not applied.
    produce(&producer, &subs_topic, "sub_other", Some(&webhook_subscription("sub_x", "client_x", &url_a, &secret_a).to_string())).await;
    for subscriber in ["client_a", "client_w"] {
        eventually(Duration::from_secs(15), || async {
            let (_, list) = server.get(&format!("/api/v1/reporting/subscriptions/{subscriber}")).await;
            (list.as_array().is_some_and(|l| !l.is_empty())).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("{subscriber}'s subscription arrived from the topic"));
    }
    let (status, _) = server.get("/api/v1/reporting/subscriptions/client_x").await;
    let (_, list) = server.get("/api/v1/reporting/subscriptions/client_x").await;
    assert!(status == 404 || list.as_array().is_some_and(|l| l.is_empty()), "sub_x must not exist: {list}");

    produce(&producer, &reports_topic, "portfolio_001", Some(&report("evt_s1", "report_s1").to_string())).await;
    eventually(Duration::from_secs(15), || async { (receiver.received_by("sa").len() == 1 && receiver.received_by("sw").len() == 1).then_some(()) })
        .await
        .expect("both subscriptions receive the first report");

    produce(&producer, &subs_topic, "sub_a", None).await;
    eventually(Duration::from_secs(15), || async {
        let (_, list) = server.get("/api/v1/reporting/subscriptions/client_a").await;
        (list[0]["status"] == "CANCELLED" || list[0]["status"] == "cancelled").then_some(())
    })
    .await
    .expect("the tombstone cancelled sub_a");

    produce(&producer, &reports_topic, "portfolio_001", Some(&report("evt_s2", "report_s2").to_string())).await;
    // The witness subscription gets the second report; the cancelled one, matched in the same
    // dataflow step, must not.
    eventually(Duration::from_secs(15), || async { (receiver.received_by("sw").len() == 2).then_some(()) })
        .await
        .expect("the witness receives the second report");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.received_by("sa").len(), 1, "a cancelled subscription receives nothing new");
    server.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_stream_loses_no_report_and_repeats_none_under_another_id() {
    let prefix = unique_prefix("crash");
    let receiver = Receiver::start().await;
    let (url, secret) = receiver.endpoint("c1");
    let data_dir = tempfile::tempdir().unwrap();
    let server = start_with_kafka(&prefix, Some(data_dir.path())).await;
    server.subscribe(webhook_subscription("sub_c1", "client_c1", &url, &secret)).await;
    let producer = producer();
    let topic = format!("{prefix}.reports");
    let total = 200;
    for i in 0..total / 2 {
        produce(&producer, &topic, "portfolio_001", Some(&report(&format!("evt_c{i}"), &format!("report_c{i}")).to_string())).await;
    }
    eventually(Duration::from_secs(20), || async { (receiver.received_by("c1").len() >= 20).then_some(()) }).await.expect("some delivered");
    server.server.abort();

    for i in total / 2..total {
        produce(&producer, &topic, "portfolio_001", Some(&report(&format!("evt_c{i}"), &format!("report_c{i}")).to_string())).await;
    }
    let server = start_with_kafka(&prefix, Some(data_dir.path())).await;
    let received = eventually(Duration::from_secs(30), || async {
        let got = receiver.received_by("c1");
        let mut reports: Vec<Value> = got.iter().map(|r| r.body["data"]["report"]["report_data"]["report_id"].clone()).collect();
        reports.sort_by_key(|v| v.to_string());
        reports.dedup();
        (reports.len() == total).then_some(got)
    })
    .await
    .expect("every report delivered after the restart");
    // At least once: a report may arrive twice, but always under the same delivery id.
    let mut ids_by_report = std::collections::HashMap::<String, std::collections::HashSet<String>>::new();
    for r in &received {
        let report_id = r.body["data"]["report"]["report_data"]["report_id"].as_str().unwrap().to_string();
        ids_by_report.entry(report_id).or_default().insert(r.delivery_id.clone());
    }
    assert!(ids_by_report.values().all(|ids| ids.len() == 1), "one delivery id per report");
    server.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_reports_outcomes_and_api_subscriptions_are_published() {
    let prefix = unique_prefix("out");
    let receiver = Receiver::start().await;
    let (url, secret) = receiver.endpoint("o1");
    let server = start_with_kafka(&prefix, None).await;
    server.subscribe(webhook_subscription("sub_o1", "client_o1", &url, &secret)).await;
    let mut dashboard = webhook_subscription("sub_o2", "client_o2", &url, &secret);
    dashboard["delivery_preferences"]["channels"] = json!(["DASHBOARD_NOTIFICATION"]);
    server.subscribe(dashboard).await;
    let ids = server.deliver(report("evt_o1", "report_o1")).await;
    assert_eq!(ids.len(), 2);
    for id in &ids {
        server.wait_for_state(id, "DELIVERED").await;
    }

    // The subscription changes made over the API, keyed by subscription id, for other instances.
    let subs = read_topic(&format!("{prefix}.subscriptions"), 2).await;
    let keys: Vec<&str> = subs.iter().map(|r| std::str::from_utf8(r.key().unwrap()).unwrap()).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.contains(&"sub_o1") && keys.contains(&"sub_o2"));

    // The spec's report_distributed event, with the subscribers and channels actually matched.
    let distributed = read_topic(&format!("{prefix}.distributed"), 1).await;
    assert_eq!(distributed.len(), 1);
    assert_eq!(distributed[0].key(), Some("portfolio_001".as_bytes()), "keyed by portfolio");
    let event: Value = serde_json::from_slice(distributed[0].payload().unwrap()).unwrap();
    let mut keys: Vec<&String> = event.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["distribution", "event_id", "metadata", "report_data", "timestamp"]);
    assert_eq!(event["distribution"]["target_subscribers"], json!(["client_o1", "client_o2"]));
    assert_eq!(event["distribution"]["delivery_channels"], json!(["API_WEBHOOK", "DASHBOARD_NOTIFICATION"]));
    assert_eq!(event["distribution"]["routing_key"], "portfolio_001.performance.monthly");
    assert_eq!(event["report_data"]["report_id"], "report_o1");
    assert_eq!(event["report_data"]["file_size_bytes"], 2048576);
    assert_eq!(event["metadata"]["retention_days"], 90);
    assert!(uuid::Uuid::parse_str(event["event_id"].as_str().unwrap()).is_ok());

    // Each delivery's final outcome, in the spec's DeliveryStatus shape.
    let statuses = read_topic(&format!("{prefix}.delivery-status"), 2).await;
    assert_eq!(statuses.len(), 2);
    let mut delivered: Vec<String> = statuses
        .iter()
        .map(|r| serde_json::from_slice::<Value>(r.payload().unwrap()).unwrap())
        .inspect(|s| {
            assert_eq!(s["status"], "DELIVERED");
            assert_eq!(s["report_id"], "report_o1");
            assert_eq!(s["retry_count"], 0);
        })
        .map(|s| s["delivery_id"].as_str().unwrap().to_string())
        .collect();
    delivered.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(delivered, expected);
    server.server.shutdown().await.unwrap();
}
