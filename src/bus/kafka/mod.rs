//! Kafka in (report events, subscription changes) and out (dead letters; distributed reports and
//! delivery outcomes through the outbox). librdkafka does the protocol; this module decides when an
//! offset may be committed and where a bad record goes.
//!
//! - `config`: topics, group, limits;
//! - `offsets`: which offsets are committable when records finish out of order;
//! - `reports`: the report consumer (commit after durable);
//! - `subscriptions`: the compacted subscription topic, read whole by every instance;
//! - `dead_letters`: refused records, with the error in headers;
//! - `relay`: the transactional outbox, published in commit order.

pub mod config;
pub mod dead_letters;
pub mod offsets;
pub mod relay;
pub mod reports;
pub mod subscriptions;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::KafkaConfig;

use crate::runtime::Runtime;
use dead_letters::DeadLetterTopic;

#[derive(Debug, thiserror::Error)]
pub enum KafkaBusError {
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("kafka: creating topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
}

/// The one retry policy of the bus: what it retries (an unaccepted report, an unapplied
/// subscription change, a dead letter or outbox batch the broker did not take) must eventually
/// succeed for its offset or row to move on, so it retries until shutdown, backing off up to
/// `max` with jitter so several instances don't retry in step.
pub(crate) fn retry_until_shutdown(min: Duration, max: Duration) -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default().with_min_delay(min).with_max_delay(max).with_jitter().without_max_times()
}

/// The running Kafka consumers; stopped by [`KafkaBus::shutdown`].
pub struct KafkaBus {
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// Every client's settings: the brokers, then `kafka.client_properties` (credentials and TLS for a
/// secured broker; the properties the service sets itself are refused when the config loads).
fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", config.brokers.as_deref().unwrap_or_default())
        .set("client.id", "repdist")
        .set("socket.keepalive.enable", "true");
    for (key, value) in &config.client_properties {
        client.set(key, value);
    }
    client
}

/// The idempotent producer every Kafka output shares: no duplicates from its own retries, and
/// records of one key stay in order.
pub fn producer(config: &KafkaConfig) -> Result<FutureProducer, KafkaBusError> {
    Ok(client_config(config)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("message.timeout.ms", "30000")
        .create()?)
}

impl KafkaBus {
    pub async fn start(
        config: &KafkaConfig,
        runtime: Arc<Runtime>,
        allow_private_webhooks: bool,
        cache: crate::cache::CacheClient,
    ) -> Result<KafkaBus, KafkaBusError> {
        if config.create_topics {
            create_topics(config).await?;
        }
        let dead_letters = DeadLetterTopic { producer: producer(config)?, topic: config.dead_letter_topic.clone() };

        let reports: StreamConsumer = client_config(config)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            // Group joins on some brokers wait for a full session timeout; keep it short.
            .set("session.timeout.ms", "6000")
            .create()?;
        reports.subscribe(&[config.reports_topic.as_str()])?;

        let subscriptions: StreamConsumer = client_config(config)
            // Required by librdkafka even though partitions are assigned by hand and nothing is committed.
            .set("group.id", format!("{}-subscriptions", config.group_id))
            .set("enable.auto.commit", "false")
            .create()?;
        let subscription_consumer = subscriptions::SubscriptionConsumer {
            consumer: subscriptions,
            runtime: runtime.clone(),
            topic: config.subscriptions_topic.clone(),
            dead_letters: dead_letters.clone(),
            allow_private_webhooks,
            cache,
        };
        subscription_consumer.assign_all()?;

        let relay = relay::OutboxRelay {
            store: runtime.store().clone(),
            producer: producer(config)?,
            doorbell: runtime.outbox_written().clone(),
            topics: relay::Topics::from_config(config),
        };
        let report_consumer = reports::ReportConsumer {
            consumer: Arc::new(reports),
            runtime,
            dead_letters,
            max_in_flight: config.max_in_flight,
            commit_interval: config.commit_interval,
        };
        let shutdown = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(subscription_consumer.run(shutdown.clone())),
            tokio::spawn(report_consumer.run(shutdown.clone())),
            tokio::spawn(relay.run(shutdown.clone())),
        ];
        tracing::info!(brokers = config.brokers.as_deref().unwrap_or_default(), topic = config.reports_topic, group = config.group_id, "consuming reports from kafka");
        Ok(KafkaBus { shutdown, tasks })
    }

    /// Stops at once, committing nothing more (a crash, for tests).
    pub fn abort(self) {
        for task in self.tasks {
            task.abort();
        }
    }

    /// Stops consuming; acknowledged records' offsets are committed first.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Creates the topics this service reads and writes when they are missing (the subscription topic
/// compacted). An existing topic is left as it is.
async fn create_topics(config: &KafkaConfig) -> Result<(), KafkaBusError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config).create()?;
    let compacted = [("cleanup.policy", "compact")];
    let topics: Vec<NewTopic<'_>> = [
        (&config.reports_topic, false),
        (&config.subscriptions_topic, true),
        (&config.distributed_topic, false),
        (&config.delivery_status_topic, false),
        (&config.dead_letter_topic, false),
    ]
    .into_iter()
    .map(|(name, compact)| {
        let topic = NewTopic::new(name, config.partitions, TopicReplication::Fixed(1));
        if compact { topic.set(compacted[0].0, compacted[0].1) } else { topic }
    })
    .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaBusError::Topic { topic, reason: code.to_string() }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_properties_reach_every_client_and_reserved_ones_are_refused() {
        let mut config = KafkaConfig { brokers: Some("127.0.0.1:9092".into()), ..KafkaConfig::default() };
        config.client_properties.insert("security.protocol".into(), "SASL_SSL".into());
        config.client_properties.insert("sasl.mechanisms".into(), "SCRAM-SHA-512".into());
        assert_eq!(config.validate(), Ok(()));
        let client = client_config(&config);
        assert_eq!(client.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(client.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(client.get("bootstrap.servers"), Some("127.0.0.1:9092"));

        config.client_properties.insert("enable.auto.commit".into(), "true".into());
        let error = config.validate().unwrap_err();
        assert!(error.starts_with("kafka.client_properties.enable.auto.commit:"), "{error}");
    }
}
