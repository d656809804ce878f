//! DASHBOARD_NOTIFICATION: hands a notification to a [`NotificationBoard`] that the service owns (it
//! stores notifications per subscriber and pushes them to open dashboards). This crate keeps no
//! storage of its own, so the channel is the same whichever store the service runs on.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{DeliveryRequest, Destination, Receipt, Sink, SinkError};

/// A notification for one subscriber's dashboard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DashboardNotification {
    /// The delivery's idempotency key. Every attempt of one delivery carries the same id, so the
    /// board can keep exactly one notification per delivery.
    pub notification_id: String,
    pub subscriber_id: String,
    pub subscription_id: String,
    pub report_id: String,
    /// The rendered body (JSON), as the dispatcher produced it.
    pub payload: Bytes,
}

/// Why a board did not take a notification.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BoardError {
    message: String,
    rejected: bool,
}

impl BoardError {
    /// The board could not store the notification now (storage busy or down); the attempt is retried.
    pub fn new(message: impl Into<String>) -> Self {
        BoardError { message: message.into(), rejected: false }
    }

    /// The board will never accept this notification (e.g. its payload is not what the board
    /// stores); the delivery fails permanently instead of exhausting its retries.
    pub fn rejected(message: impl Into<String>) -> Self {
        BoardError { message: message.into(), rejected: true }
    }

    pub fn is_rejected(&self) -> bool {
        self.rejected
    }
}

/// Storage and live fan-out of dashboard notifications, implemented by the service.
///
/// **Contract: `post` is idempotent on `notification_id`.** Posting a notification whose id the board
/// already holds must succeed and leave the board as it was (one notification, not two). The sink
/// relies on this: an attempt can time out after the board stored the notification, or the outcome
/// can be lost in a crash, and the delivery is then attempted again with the same id.
#[async_trait]
pub trait NotificationBoard: Send + Sync {
    async fn post(&self, notification: DashboardNotification) -> Result<(), BoardError>;
}

/// The DASHBOARD_NOTIFICATION channel.
pub struct DashboardSink {
    board: Arc<dyn NotificationBoard>,
}

impl DashboardSink {
    /// The channel name this sink registers under.
    pub const CHANNEL: &'static str = "DASHBOARD_NOTIFICATION";

    pub fn new(board: Arc<dyn NotificationBoard>) -> Self {
        DashboardSink { board }
    }
}

#[async_trait]
impl Sink for DashboardSink {
    fn name(&self) -> &'static str {
        Self::CHANNEL
    }

    async fn deliver(&self, request: &DeliveryRequest) -> Result<Receipt, SinkError> {
        if request.encrypt_to.is_some() {
            return Err(crate::encryption::unsupported(Self::CHANNEL));
        }
        let Destination::Dashboard { subscriber_id, subscription_id, report_id } = &request.destination else {
            return Err(SinkError::permanent(format!("{} cannot deliver to {:?}", Self::CHANNEL, request.destination)));
        };
        let notification = DashboardNotification {
            notification_id: request.idempotency_key.clone(),
            subscriber_id: subscriber_id.clone(),
            subscription_id: subscription_id.clone(),
            report_id: report_id.clone(),
            payload: request.payload.clone(),
        };
        let started = Instant::now();
        // The board is in-process but may wait on storage; the deadline keeps a stuck store from
        // holding a dispatcher slot. Abandoning a post that later completes is safe: the retry
        // carries the same id and the board is idempotent on it.
        match tokio::time::timeout(request.timeout, self.board.post(notification)).await {
            Ok(Ok(())) => Ok(Receipt { elapsed: started.elapsed(), detail: "posted to the dashboard".to_string() }),
            Ok(Err(error)) if error.is_rejected() => {
                Err(SinkError::permanent(format!("dashboard board rejected: {error}")))
            }
            Ok(Err(error)) => Err(SinkError::transient(format!("dashboard board unavailable: {error}"))),
            Err(_) => Err(SinkError::transient(format!("dashboard board timed out after {:?}", request.timeout))),
        }
    }
}
