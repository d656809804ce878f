//! The outbox relay: publishes committed outbox rows in commit order through the idempotent
//! producer, and deletes them once the broker has acknowledged them. A crash between publishing
//! and deleting publishes those rows again (at least once; `report_distributed` events carry a
//! stable event id, delivery outcomes their delivery id, for consumers to deduplicate).

use std::sync::Arc;
use std::time::Duration;

use backon::Retryable;
use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use super::KafkaConfig;
use crate::store::{OutboxRecord, OutboxTopic, Store};

/// Rows published per round.
const BATCH: u32 = 512;
/// How long the relay sleeps when no commit woke it (a safety net; commits ring the doorbell).
const IDLE_POLL: Duration = Duration::from_millis(500);

pub struct OutboxRelay {
    pub store: Arc<dyn Store>,
    pub producer: FutureProducer,
    pub doorbell: Arc<tokio::sync::Notify>,
    pub topics: Topics,
}

/// Configured topic names of the outbox's logical topics.
#[derive(Clone)]
pub struct Topics {
    pub subscriptions: String,
    pub distributed: String,
    pub delivery_status: String,
}

impl Topics {
    pub fn from_config(config: &KafkaConfig) -> Topics {
        Topics {
            subscriptions: config.subscriptions_topic.clone(),
            distributed: config.distributed_topic.clone(),
            delivery_status: config.delivery_status_topic.clone(),
        }
    }

    fn name(&self, topic: OutboxTopic) -> &str {
        match topic {
            OutboxTopic::Subscriptions => &self.subscriptions,
            OutboxTopic::Distributed => &self.distributed,
            OutboxTopic::DeliveryStatus => &self.delivery_status,
        }
    }
}

impl OutboxRelay {
    pub async fn run(self, shutdown: CancellationToken) {
        let round = || self.round();
        loop {
            let published = round
                .retry(super::retry_until_shutdown(Duration::from_millis(100), Duration::from_secs(5)))
                .notify(|error, _| tracing::warn!(%error, "outbox relay: will retry"));
            let published = tokio::select! {
                published = published => published.unwrap_or(0),
                _ = shutdown.cancelled() => return,
            };
            if published < BATCH as usize {
                tokio::select! {
                    _ = self.doorbell.notified() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }

    /// Publishes one batch; deletes the prefix the broker acknowledged. Returns rows published.
    async fn round(&self) -> Result<usize, String> {
        let rows = self.store.outbox_peek(BATCH).await.map_err(|e| e.to_string())?;
        if rows.is_empty() {
            return Ok(0);
        }
        let sends = rows.iter().map(|row| self.publish(row));
        let results = join_all(sends).await;
        // Only the acknowledged prefix is deleted, so a failure re-publishes in order from there.
        let acknowledged: Vec<i64> =
            rows.iter().zip(&results).take_while(|(_, result)| result.is_ok()).map(|(row, _)| row.seq).collect();
        self.store.outbox_remove(&acknowledged).await.map_err(|e| e.to_string())?;
        metrics::counter!("repdist_outbox_published_total").increment(acknowledged.len() as u64);
        match results.into_iter().find_map(Result::err) {
            Some(error) => Err(format!("publishing failed after {} rows: {error}", acknowledged.len())),
            None => Ok(acknowledged.len()),
        }
    }

    async fn publish(&self, row: &OutboxRecord) -> Result<(), String> {
        let topic = self.topics.name(row.message.topic);
        let mut record = FutureRecord::to(topic).key(row.message.key.as_str());
        if let Some(payload) = &row.message.payload {
            record = record.payload(payload.as_str());
        }
        self.producer.send(record, Duration::from_secs(30)).await.map(|_| ()).map_err(|(error, _)| error.to_string())
    }
}
