//! Kafka settings. `brokers` unset means no Kafka: reports come in over the REST API only and
//! nothing is produced (the embedded default).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port[,host:port]`; env `REPDIST_KAFKA_BROKERS`. Unset: Kafka is off.
    pub brokers: Option<String>,
    /// Consumer group of the report consumers; partitions are shared among the group's members.
    pub group_id: String,
    /// Report events (the spec's `ReportDistribution` JSON).
    pub reports_topic: String,
    /// Subscription changes, keyed by `subscription_id`, compacted; a tombstone cancels.
    pub subscriptions_topic: String,
    /// One `report_distributed` event per distributed report.
    pub distributed_topic: String,
    /// Each delivery's final outcome (delivered or dead-lettered).
    pub delivery_status_topic: String,
    /// Records that cannot be decoded, with the error in headers.
    pub dead_letter_topic: String,
    /// Report records being processed at once (taken, not yet durable). Bounds memory; when full,
    /// consumption pauses.
    pub max_in_flight: usize,
    /// How often stored offsets are committed.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Create missing topics at start (handy on a development broker; off where topics are managed).
    pub create_topics: bool,
    /// Partitions of the topics this service creates.
    pub partitions: i32,
    /// librdkafka properties set on every client, for a secured broker: `security.protocol`,
    /// `sasl.mechanisms`, `sasl.username`, `sasl.password`, `ssl.ca.location`, ... Properties the
    /// service sets itself ([`RESERVED_PROPERTIES`]) are refused: its delivery guarantees depend on
    /// them. Never serialized, since it may hold a password.
    #[serde(skip_serializing)]
    pub client_properties: BTreeMap<String, String>,
}

/// librdkafka properties the service sets itself: at-least-once (offsets committed by the service
/// once durable), the idempotent producer, and the consumer groups.
pub const RESERVED_PROPERTIES: [&str; 9] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.idempotence",
    "acks",
    "isolation.level",
    "partition.assignment.strategy",
];

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: None,
            group_id: "repdist".into(),
            reports_topic: "reporting.reports".into(),
            subscriptions_topic: "reporting.subscriptions".into(),
            distributed_topic: "reporting.distributed".into(),
            delivery_status_topic: "reporting.delivery-status".into(),
            dead_letter_topic: "reporting.reports.dlq".into(),
            max_in_flight: 1024,
            commit_interval: Duration::from_secs(1),
            create_topics: true,
            partitions: 4,
            client_properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    pub fn is_enabled(&self) -> bool {
        self.brokers.as_deref().is_some_and(|b| !b.trim().is_empty())
    }

    /// Errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.is_enabled() {
            return Ok(());
        }
        let topics = [
            ("kafka.reports_topic", &self.reports_topic),
            ("kafka.subscriptions_topic", &self.subscriptions_topic),
            ("kafka.distributed_topic", &self.distributed_topic),
            ("kafka.delivery_status_topic", &self.delivery_status_topic),
            ("kafka.dead_letter_topic", &self.dead_letter_topic),
            ("kafka.group_id", &self.group_id),
        ];
        for (key, value) in topics {
            if value.is_empty() || value.len() > 249 || !value.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                return Err(format!("{key}: must be 1-249 characters of [a-zA-Z0-9._-]"));
            }
        }
        if self.max_in_flight == 0 {
            return Err("kafka.max_in_flight: must be at least 1".into());
        }
        if self.partitions < 1 {
            return Err("kafka.partitions: must be at least 1".into());
        }
        if self.commit_interval.is_zero() {
            return Err("kafka.commit_interval: must be positive".into());
        }
        if let Some(key) = self.client_properties.keys().find(|key| RESERVED_PROPERTIES.contains(&key.as_str())) {
            return Err(format!("kafka.client_properties.{key}: set by the service itself (its delivery guarantees depend on it)"));
        }
        Ok(())
    }
}
