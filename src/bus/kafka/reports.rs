//! Report events in from Kafka. A record's offset is committed only once the report and its delivery
//! set are durable (the same moment the REST API answers 202); a record that cannot be decoded is
//! logged and written to the dead-letter topic first. Records are pipelined: many are in the
//! sequencer at once, in partition order, and offsets advance over the finished prefix only.

use std::sync::Arc;
use std::time::Duration;

use backon::Retryable;
use dataflows::report::ReportDistribution;
use dataflows::validation::Validate;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

use super::dead_letters::{DeadLetterTopic, Refusal};
use super::offsets::OffsetTracker;
use crate::runtime::{ReportAck, Runtime, RuntimeError};

pub struct ReportConsumer {
    pub consumer: Arc<StreamConsumer>,
    pub runtime: Arc<Runtime>,
    pub dead_letters: DeadLetterTopic,
    pub max_in_flight: usize,
    pub commit_interval: Duration,
}

/// A record's position, for committing and for logs.
#[derive(Clone, Debug)]
struct Position {
    topic: String,
    partition: i32,
    offset: i64,
}

/// Decodes one record: the same parsing and validation as `POST /deliver`, so both doors refuse
/// the same things with the same field names.
pub fn decode(payload: Option<&[u8]>) -> Result<ReportDistribution, Refusal> {
    let payload = payload.ok_or_else(|| Refusal { field: None, message: "empty record (no payload)".into() })?;
    let event: ReportDistribution = crate::api::body::parse(payload)?;
    event.validate()?;
    Ok(event)
}

impl ReportConsumer {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tracker = OffsetTracker::default();
        let mut pending: FuturesUnordered<BoxFuture<'static, Option<Position>>> = FuturesUnordered::new();
        let mut commit_tick = tokio::time::interval(self.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let room = pending.len() < self.max_in_flight;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(position) = pending.next(), if !pending.is_empty() => {
                    self.finished(&mut tracker, position);
                }
                _ = commit_tick.tick() => self.commit(CommitMode::Async),
                received = self.consumer.recv(), if room => {
                    let record = match received {
                        Ok(record) => record.detach(),
                        Err(error) => {
                            tracing::warn!(%error, "kafka consumer error");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    let position = Position { topic: record.topic().to_string(), partition: record.partition(), offset: record.offset() };
                    tracker.take(&position.topic, position.partition, position.offset);
                    match decode(record.payload()) {
                        Ok(event) => {
                            // Enqueued here, in partition order; the acknowledgement is awaited beside.
                            let Some(answer) = self.enqueue(event.clone(), &shutdown).await else { break };
                            let runtime = self.runtime.clone();
                            let shutdown = shutdown.clone();
                            pending.push(async move {
                                await_durable(runtime, event, answer, &shutdown).await.then_some(position)
                            }.boxed());
                        }
                        Err(refusal) => {
                            tracing::warn!(
                                topic = position.topic, partition = position.partition, offset = position.offset,
                                field = refusal.field.as_deref().unwrap_or("-"), error = refusal.message,
                                "refused a report record; writing it to the dead-letter topic"
                            );
                            let dead_letters = self.dead_letters.clone();
                            let shutdown = shutdown.clone();
                            pending.push(async move {
                                dead_letters.write(&record, &refusal, &shutdown).await.then_some(position)
                            }.boxed());
                        }
                    }
                }
            }
        }
        // Shutdown: records whose acknowledgement is already under way are waited for briefly, so
        // their offsets can be committed; anything else is read again on the next start.
        let drain = async {
            while let Some(position) = pending.next().await {
                self.finished(&mut tracker, position);
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
        self.commit(CommitMode::Sync);
    }

    fn finished(&self, tracker: &mut OffsetTracker, position: Option<Position>) {
        let Some(p) = position else { return };
        if let Some(last_done) = tracker.finish(&p.topic, p.partition, p.offset) {
            // librdkafka stores `last_done + 1`, the next offset to read.
            if let Err(error) = self.consumer.store_offset(&p.topic, p.partition, last_done) {
                // The partition was revoked meanwhile: its new owner reads these records again.
                tracing::debug!(%error, topic = p.topic, partition = p.partition, "offset not stored");
                tracker.forget(&p.topic, p.partition);
            }
        }
        metrics::gauge!("repdist_kafka_reports_in_flight").set(tracker.in_flight() as f64);
    }

    fn commit(&self, mode: CommitMode) {
        match self.consumer.commit_consumer_state(mode) {
            Ok(()) => {}
            // Nothing stored since the last commit.
            Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => tracing::warn!(%error, "offset commit failed; will retry"),
        }
    }

    /// Hands the report to the sequencer, waiting while its queue is full (backpressure: the consumer
    /// stops reading). `None` on shutdown.
    async fn enqueue(
        &self,
        event: ReportDistribution,
        shutdown: &CancellationToken,
    ) -> Option<tokio::sync::oneshot::Receiver<Result<ReportAck, RuntimeError>>> {
        tokio::select! {
            queued = self.runtime.enqueue_report(event) => queued.ok(),
            _ = shutdown.cancelled() => None,
        }
    }
}

/// Waits until the report is durable, submitting it again if a commit failed. `false` on shutdown.
async fn await_durable(
    runtime: Arc<Runtime>,
    event: ReportDistribution,
    first: tokio::sync::oneshot::Receiver<Result<ReportAck, RuntimeError>>,
    shutdown: &CancellationToken,
) -> bool {
    let answer = tokio::select! {
        answer = first => answer.unwrap_or(Err(RuntimeError::ShuttingDown)),
        _ = shutdown.cancelled() => return false,
    };
    let accepted = match answer {
        Ok(_) => true,
        Err(RuntimeError::ShuttingDown) => false,
        Err(error) => {
            tracing::warn!(%error, event_id = event.event_id, "report from kafka not accepted yet; retrying");
            let resubmitted = (|| runtime.submit_report(event.clone()))
                .retry(super::retry_until_shutdown(Duration::from_millis(50), Duration::from_secs(2)))
                .when(|error| !matches!(error, RuntimeError::ShuttingDown))
                .notify(|error, _| tracing::warn!(%error, event_id = event.event_id, "report from kafka not accepted yet; retrying"));
            tokio::select! {
                resubmitted = resubmitted => resubmitted.is_ok(),
                _ = shutdown.cancelled() => false,
            }
        }
    };
    if accepted {
        metrics::counter!("repdist_kafka_reports_accepted_total").increment(1);
    }
    accepted
}
