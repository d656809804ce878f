//! Live fan-out of dashboard notifications to WebSocket clients. Each message is serialized once
//! and shared by every client (cloning `Utf8Bytes` copies a pointer, not the text). A client that
//! falls behind the broadcast buffer is told so and disconnected, never allowed to slow others.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use dataflows::report::ReportDataType;
use tokio::sync::broadcast;

#[derive(Clone, Debug)]
pub struct HubMessage {
    pub seq: u64,
    pub subscription_id: String,
    pub subscriber_id: String,
    pub report_type: Option<ReportDataType>,
    pub text: Utf8Bytes,
}

pub struct Hub {
    sender: broadcast::Sender<Arc<HubMessage>>,
    seq: AtomicU64,
}

impl Hub {
    pub fn new(capacity: usize) -> Hub {
        let (sender, _) = broadcast::channel(capacity);
        Hub { sender, seq: AtomicU64::new(0) }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<HubMessage>> {
        self.sender.subscribe()
    }

    /// Publishes a notification; `payload` is the delivery's rendered JSON envelope.
    pub fn publish(&self, subscriber_id: &str, subscription_id: &str, delivery_id: &str, payload: &[u8]) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let envelope: serde_json::Value = serde_json::from_slice(payload).unwrap_or(serde_json::Value::Null);
        let report = envelope.pointer("/data/report").cloned().unwrap_or(serde_json::Value::Null);
        let report_type = report
            .get("data_type")
            .and_then(|v| serde_json::from_value::<ReportDataType>(v.clone()).ok());
        let message = serde_json::json!({
            "seq": seq,
            "type": "notification",
            "delivery_id": delivery_id,
            "subscription_id": subscription_id,
            "subscriber_id": subscriber_id,
            "report": report,
        });
        let text = Utf8Bytes::from(message.to_string());
        let _ = self.sender.send(Arc::new(HubMessage {
            seq,
            subscription_id: subscription_id.to_string(),
            subscriber_id: subscriber_id.to_string(),
            report_type,
            text,
        }));
    }
}
