//! The Kafka broker the tests run against (`scripts/services up` starts one on loopback;
//! `REPDIST_TEST_KAFKA_BROKERS` overrides the address), with per-test topic names.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use repdist::bus::kafka::KafkaConfig;

pub fn brokers() -> String {
    let brokers = std::env::var("REPDIST_TEST_KAFKA_BROKERS")
        .or_else(|_| std::env::var("REPDIST_KAFKA_BROKERS"))
        .unwrap_or_else(|_| "127.0.0.1:9092".into());
    let first = brokers.split(',').next().unwrap_or_default().to_string();
    std::net::TcpStream::connect_timeout(&first.parse().expect("broker address host:port"), Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("no Kafka broker at {first} ({e}); run `eval \"$(scripts/services up)\"` first"));
    brokers
}

pub fn kafka_config(prefix: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: Some(brokers()),
        group_id: format!("{prefix}-group"),
        reports_topic: format!("{prefix}.reports"),
        subscriptions_topic: format!("{prefix}.subscriptions"),
        distributed_topic: format!("{prefix}.distributed"),
        delivery_status_topic: format!("{prefix}.delivery-status"),
        dead_letter_topic: format!("{prefix}.reports.dlq"),
        commit_interval: Duration::from_millis(100),
        partitions: 2,
        ..KafkaConfig::default()
    }
}

pub fn unique_prefix(name: &str) -> String {
    format!("t{}-{name}", rand::random::<u32>())
}

pub fn producer() -> FutureProducer {
    ClientConfig::new().set("bootstrap.servers", brokers()).set("message.timeout.ms", "10000").create().expect("producer")
}

pub async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: Option<&str>) {
    let mut record = FutureRecord::to(topic).key(key);
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    producer.send(record, Duration::from_secs(10)).await.expect("produced");
}
