//! repdist's delivery channels behind one [`Sink`] trait. A sink knows nothing of reports or
//! subscriptions: it gets a rendered [`DeliveryRequest`] (destination, payload, idempotency key,
//! deadline) and answers with a [`Receipt`] or a classified [`SinkError`]. Adding a channel is one
//! module here, one [`Destination`] arm and one registry line (see `docs/adding-a-channel.md`).

pub mod dashboard;
pub mod http_classify;
pub mod registry;
pub mod webhook;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use dashboard::{BoardError, DashboardNotification, DashboardSink, NotificationBoard};
pub use registry::SinkRegistry;

/// One attempt to deliver, fully rendered.
#[derive(Clone)]
pub struct DeliveryRequest {
    /// The delivery id: the same for every attempt of a delivery, so receivers can deduplicate.
    pub idempotency_key: String,
    pub destination: Destination,
    /// The rendered body (JSON).
    pub payload: Bytes,
    /// Deadline of this attempt, connection included.
    pub timeout: Duration,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// Where a request goes; one arm per channel.
#[derive(Clone)]
pub enum Destination {
    Webhook { url: String, secret: String },
    Dashboard { subscriber_id: String, subscription_id: String, report_id: String },
}

impl std::fmt::Debug for Destination {
    /// Secrets never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Webhook { url, .. } => f.debug_struct("Webhook").field("url", url).field("secret", &"<redacted>").finish(),
            Destination::Dashboard { subscriber_id, subscription_id, report_id } => f
                .debug_struct("Dashboard")
                .field("subscriber_id", subscriber_id)
                .field("subscription_id", subscription_id)
                .field("report_id", report_id)
                .finish(),
        }
    }
}

impl std::fmt::Debug for DeliveryRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryRequest")
            .field("idempotency_key", &self.idempotency_key)
            .field("destination", &self.destination)
            .field("payload_bytes", &self.payload.len())
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// A successful attempt.
#[derive(Clone, Debug)]
pub struct Receipt {
    pub elapsed: Duration,
    /// What the peer said, e.g. `HTTP 204`.
    pub detail: String,
}

/// A failed attempt, classified so the dataflow knows whether to retry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying; `retry_after` is the peer's own hint when it gave one.
    #[error("transient: {reason}")]
    Transient { reason: String, retry_after: Option<Duration> },
    /// Retrying cannot help.
    #[error("permanent: {reason}")]
    Permanent { reason: String },
}

#[async_trait]
pub trait Sink: Send + Sync {
    /// The channel this sink serves, e.g. `API_WEBHOOK`.
    fn name(&self) -> &'static str;
    async fn deliver(&self, request: &DeliveryRequest) -> Result<Receipt, SinkError>;
}
