//! The DASHBOARD_NOTIFICATION channel's storage: notifications are kept per subscriber in the store
//! (listed by `GET /notifications/{subscriber_id}`). Live dashboards follow the update stream, which
//! announces the delivery once its outcome is durable (`hub`).

use std::sync::Arc;

use async_trait::async_trait;
use sinks::{BoardError, DashboardNotification, NotificationBoard};

use crate::store::{Notification, Store};

pub struct StoreBoard {
    pub store: Arc<dyn Store>,
}

#[async_trait]
impl NotificationBoard for StoreBoard {
    async fn post(&self, notification: DashboardNotification) -> Result<(), BoardError> {
        let payload: serde_json::Value = serde_json::from_slice(&notification.payload)
            .map_err(|e| BoardError::rejected(format!("payload is not JSON: {e}")))?;
        let stored = Notification {
            notification_id: notification.notification_id.clone(),
            subscriber_id: notification.subscriber_id.clone(),
            subscription_id: notification.subscription_id.clone(),
            report_id: notification.report_id.clone(),
            payload,
            created_at: chrono::Utc::now(),
        };
        self.store.insert_notification(&stored).await.map_err(|e| BoardError::new(e.to_string()))?;
        Ok(())
    }
}
