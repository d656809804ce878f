//! Subscription changes from the compacted topic keyed by `subscription_id`, so every instance's
//! dataflow sees the same subscriptions. Each instance reads the whole topic from the beginning at
//! start (it is the full current state) and follows it; a change identical to what the store already
//! holds (this instance's own change coming back, or a restart re-reading) is skipped. A tombstone
//! cancels.

use std::sync::Arc;
use std::time::Duration;

use backon::Retryable;
use dataflows::subscription::{ReportSubscription, SubscriptionStatus};
use dataflows::validation::Validate;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::dead_letters::{DeadLetterTopic, Refusal};
use crate::runtime::Runtime;

pub struct SubscriptionConsumer {
    pub consumer: StreamConsumer,
    pub runtime: Arc<Runtime>,
    pub topic: String,
    pub dead_letters: DeadLetterTopic,
    pub allow_private_webhooks: bool,
    /// Changes from the topic invalidate the subscriber's cached list, as changes over the API do.
    pub cache: crate::cache::CacheClient,
}

/// What one record asks for.
#[derive(Debug)]
pub enum Change {
    Upsert(ReportSubscription),
    /// Tombstone: cancel this subscription.
    Cancel(String),
}

/// Decodes a record: the key is the subscription id; no payload is a tombstone.
pub fn decode(key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<Change, Refusal> {
    let key = key
        .and_then(|k| std::str::from_utf8(k).ok())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| Refusal { field: Some("key".into()), message: "the record key must be the subscription_id (UTF-8)".into() })?;
    let Some(payload) = payload else { return Ok(Change::Cancel(key.to_string())) };
    let subscription: ReportSubscription = crate::api::body::parse(payload)?;
    subscription.validate()?;
    if subscription.subscription_id != key {
        return Err(Refusal {
            field: Some("subscription_id".into()),
            message: format!("subscription_id {:?} differs from the record key {key:?}", subscription.subscription_id),
        });
    }
    Ok(Change::Upsert(subscription))
}

impl SubscriptionConsumer {
    /// Assigns every partition of the topic from the beginning (no group: every instance reads all).
    pub fn assign_all(&self) -> Result<(), rdkafka::error::KafkaError> {
        let metadata = self.consumer.fetch_metadata(Some(&self.topic), Duration::from_secs(10))?;
        let mut assignment = TopicPartitionList::new();
        for topic in metadata.topics() {
            for partition in topic.partitions() {
                assignment.add_partition_offset(topic.name(), partition.id(), Offset::Beginning)?;
            }
        }
        self.consumer.assign(&assignment)
    }

    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let record = tokio::select! {
                _ = shutdown.cancelled() => return,
                received = self.consumer.recv() => match received {
                    Ok(record) => record.detach(),
                    Err(error) => {
                        tracing::warn!(%error, "kafka subscription consumer error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                },
            };
            if !self.apply(record, &shutdown).await {
                return;
            }
        }
    }

    /// Applies one record, retrying while the service is saturated. `false` on shutdown.
    async fn apply(&self, record: OwnedMessage, shutdown: &CancellationToken) -> bool {
        let decoded = decode(record.key(), record.payload()).and_then(|change| match &change {
            Change::Upsert(subscription) => crate::api::subscriptions::admissible(&self.runtime, self.allow_private_webhooks, subscription)
                .map(|()| change)
                .map_err(Refusal::from),
            Change::Cancel(_) => Ok(change),
        });
        let change = match decoded {
            Ok(change) => change,
            Err(refusal) => {
                tracing::warn!(
                    topic = record.topic(), partition = record.partition(), offset = record.offset(),
                    field = refusal.field.as_deref().unwrap_or("-"), error = refusal.message,
                    "refused a subscription record; writing it to the dead-letter topic"
                );
                return self.dead_letters.write(&record, &refusal, shutdown).await;
            }
        };
        let apply = || async {
            match self.version_to_apply(&change).await? {
                None => Ok(()),
                Some(subscription) => {
                    let key = crate::cache::keys::subscriptions(&subscription.subscriber_id);
                    let changed = self.runtime.apply_subscription_from_bus(subscription).await.map_err(|e| e.to_string());
                    self.cache.invalidate(&key).await;
                    changed
                }
            }
        };
        let applied = apply
            .retry(super::retry_until_shutdown(Duration::from_millis(50), Duration::from_secs(2)))
            .notify(|error, _| tracing::warn!(%error, "subscription change from kafka not applied yet; retrying"));
        tokio::select! {
            applied = applied => {
                if applied.is_ok() {
                    metrics::counter!("repdist_kafka_subscription_changes_total").increment(1);
                }
                applied.is_ok()
            }
            _ = shutdown.cancelled() => false,
        }
    }

    /// The version to apply, or `None` when the store already holds exactly it.
    async fn version_to_apply(&self, change: &Change) -> Result<Option<ReportSubscription>, String> {
        let id = match change {
            Change::Upsert(s) => &s.subscription_id,
            Change::Cancel(id) => id,
        };
        let stored = self.runtime.store().subscription(id).await.map_err(|e| e.to_string())?;
        Ok(match (change, stored) {
            (Change::Upsert(new), Some(old)) if old.subscription == *new => None,
            (Change::Upsert(new), _) => Some(new.clone()),
            (Change::Cancel(_), Some(old)) if old.subscription.status != SubscriptionStatus::Cancelled => {
                let mut cancelled = old.subscription;
                cancelled.status = SubscriptionStatus::Cancelled;
                Some(cancelled)
            }
            (Change::Cancel(_), _) => None,
        })
    }
}
