//! DASHBOARD_NOTIFICATION: hands the notification to a board the service owns (it stores it per
//! subscriber and pushes it live). The board must be idempotent on `notification_id`, because an
//! attempt whose outcome was lost in a crash is attempted again.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{DeliveryRequest, Destination, Receipt, Sink, SinkError};

#[derive(Clone, Debug)]
pub struct DashboardNotification {
    /// The delivery id; posting it twice keeps one notification.
    pub notification_id: String,
    pub subscriber_id: String,
    pub subscription_id: String,
    pub report_id: String,
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BoardError(String);

impl BoardError {
    pub fn new(message: impl Into<String>) -> Self {
        BoardError(message.into())
    }
}

#[async_trait]
pub trait NotificationBoard: Send + Sync {
    async fn post(&self, notification: DashboardNotification) -> Result<(), BoardError>;
}

pub struct DashboardSink {
    board: Arc<dyn NotificationBoard>,
}

impl DashboardSink {
    pub fn new(board: Arc<dyn NotificationBoard>) -> Self {
        DashboardSink { board }
    }
}

#[async_trait]
impl Sink for DashboardSink {
    fn name(&self) -> &'static str {
        "DASHBOARD_NOTIFICATION"
    }

    async fn deliver(&self, request: &DeliveryRequest) -> Result<Receipt, SinkError> {
        let Destination::Dashboard { subscriber_id, subscription_id, report_id } = &request.destination else {
            return Err(SinkError::Permanent { reason: "not a dashboard destination".into() });
        };
        let started = Instant::now();
        let notification = DashboardNotification {
            notification_id: request.idempotency_key.clone(),
            subscriber_id: subscriber_id.clone(),
            subscription_id: subscription_id.clone(),
            report_id: report_id.clone(),
            payload: request.payload.clone(),
        };
        // A board failure (storage busy or down) is worth retrying.
        self.board
            .post(notification)
            .await
            .map_err(|e| SinkError::Transient { reason: format!("dashboard board: {e}"), retry_after: None })?;
        Ok(Receipt { elapsed: started.elapsed(), detail: "stored".to_string() })
    }
}
