//! Records that cannot be decoded go to a dead-letter topic, byte for byte, with the error and
//! their origin in headers; only then is their offset finished. A record is never skipped silently.

use std::time::Duration;

use backon::Retryable;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

/// Why a record was refused: the field at fault (when there is one) and the message.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub field: Option<String>,
    pub message: String,
}

/// The REST API's decoding and admission errors, so a record is refused exactly as a request body.
impl From<crate::api::error::ApiError> for Refusal {
    fn from(error: crate::api::error::ApiError) -> Self {
        Refusal { field: error.field, message: error.message }
    }
}

impl From<dataflows::validation::FieldError> for Refusal {
    fn from(error: dataflows::validation::FieldError) -> Self {
        Refusal { field: Some(error.field), message: error.message }
    }
}

#[derive(Clone)]
pub struct DeadLetterTopic {
    pub producer: FutureProducer,
    pub topic: String,
}

impl DeadLetterTopic {
    /// Writes `record` to the dead-letter topic, retrying until the broker has it or `shutdown`
    /// fires. `false` means shutdown came first: the record's offset must not be committed.
    pub async fn write(&self, record: &OwnedMessage, refusal: &Refusal, shutdown: &CancellationToken) -> bool {
        let partition = record.partition().to_string();
        let offset = record.offset().to_string();
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: "error", value: Some(refusal.message.as_str()) })
            .insert(Header { key: "source.topic", value: Some(record.topic()) })
            .insert(Header { key: "source.partition", value: Some(partition.as_str()) })
            .insert(Header { key: "source.offset", value: Some(offset.as_str()) });
        if let Some(field) = &refusal.field {
            headers = headers.insert(Header { key: "error.field", value: Some(field.as_str()) });
        }
        let send = || {
            let mut out = FutureRecord::to(&self.topic).headers(headers.clone());
            if let Some(key) = record.key() {
                out = out.key(key);
            }
            if let Some(payload) = record.payload() {
                out = out.payload(payload);
            }
            async move { self.producer.send(out, Duration::from_secs(30)).await.map_err(|(error, _)| error) }
        };
        let sent = send
            .retry(super::retry_until_shutdown(Duration::from_millis(100), Duration::from_secs(5)))
            .notify(|error, _| tracing::warn!(%error, topic = self.topic, "could not write to the dead-letter topic; retrying"));
        tokio::select! {
            sent = sent => {
                if sent.is_ok() {
                    metrics::counter!("repdist_kafka_dead_lettered_total", "topic" => record.topic().to_string()).increment(1);
                }
                sent.is_ok()
            }
            _ = shutdown.cancelled() => false,
        }
    }
}
