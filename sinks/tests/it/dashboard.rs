//! DASHBOARD_NOTIFICATION against a real in-memory board that keeps the board contract (idempotent
//! on `notification_id`), with switches to make it fail, reject or stall.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sinks::{
    BoardError, DashboardNotification, DashboardSink, DeliveryRequest, Destination, NotificationBoard, Sink, SinkError,
};

#[derive(Default)]
struct MemoryBoard {
    notifications: Mutex<BTreeMap<String, DashboardNotification>>,
    posts: AtomicUsize,
    down: AtomicBool,
    rejecting: AtomicBool,
    stalled: AtomicBool,
}

#[async_trait]
impl NotificationBoard for MemoryBoard {
    async fn post(&self, notification: DashboardNotification) -> Result<(), BoardError> {
        self.posts.fetch_add(1, Ordering::SeqCst);
        if self.stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(BoardError::new("database is locked"));
        }
        if self.rejecting.load(Ordering::SeqCst) {
            return Err(BoardError::rejected("payload is not JSON"));
        }
        let mut notifications = self.notifications.lock().map_err(|_| BoardError::new("poisoned"))?;
        // The contract: a known id is accepted and changes nothing.
        notifications.entry(notification.notification_id.clone()).or_insert(notification);
        Ok(())
    }
}

impl MemoryBoard {
    fn stored(&self) -> Vec<DashboardNotification> {
        self.notifications.lock().expect("board lock").values().cloned().collect()
    }
}

fn request(delivery_id: &str, attempt: u32) -> DeliveryRequest {
    DeliveryRequest {
        idempotency_key: delivery_id.to_string(),
        destination: Destination::Dashboard {
            subscriber_id: "client_001".into(),
            subscription_id: "sub_perf".into(),
            report_id: "report_20250621_001".into(),
        },
        payload: Bytes::from_static(br#"{"type":"report.distributed"}"#),
        timeout: Duration::from_secs(1),
        attempt,
        priority: 0,
        encrypt_to: None,
    }
}

fn setup() -> (Arc<MemoryBoard>, DashboardSink) {
    let board = Arc::new(MemoryBoard::default());
    (board.clone(), DashboardSink::new(board))
}

#[tokio::test]
async fn a_notification_reaches_the_board_with_everything_the_request_carried() {
    let (board, sink) = setup();
    assert_eq!(sink.name(), "DASHBOARD_NOTIFICATION");
    sink.deliver(&request("dlv_1", 1)).await.expect("posted");
    assert_eq!(
        board.stored(),
        vec![DashboardNotification {
            notification_id: "dlv_1".into(),
            subscriber_id: "client_001".into(),
            subscription_id: "sub_perf".into(),
            report_id: "report_20250621_001".into(),
            payload: Bytes::from_static(br#"{"type":"report.distributed"}"#),
        }]
    );
}

#[tokio::test]
async fn repeating_a_delivery_keeps_one_notification() {
    let (board, sink) = setup();
    sink.deliver(&request("dlv_1", 1)).await.expect("first attempt");
    sink.deliver(&request("dlv_1", 2)).await.expect("a repeat is harmless");
    sink.deliver(&request("dlv_2", 1)).await.expect("another delivery");
    assert_eq!(board.posts.load(Ordering::SeqCst), 3);
    let ids: Vec<_> = board.stored().into_iter().map(|n| n.notification_id).collect();
    assert_eq!(ids, vec!["dlv_1", "dlv_2"]);
}

#[tokio::test]
async fn a_board_failure_is_transient() {
    let (board, sink) = setup();
    board.down.store(true, Ordering::SeqCst);
    let result = sink.deliver(&request("dlv_1", 1)).await;
    assert_eq!(
        result,
        Err(SinkError::Transient {
            reason: "dashboard board unavailable: database is locked".into(),
            retry_after: None
        })
    );
    board.down.store(false, Ordering::SeqCst);
    sink.deliver(&request("dlv_1", 2)).await.expect("recovers on retry");
    assert_eq!(board.stored().len(), 1);
}

#[tokio::test]
async fn a_board_rejection_is_permanent() {
    let (board, sink) = setup();
    board.rejecting.store(true, Ordering::SeqCst);
    let result = sink.deliver(&request("dlv_1", 1)).await;
    assert_eq!(result, Err(SinkError::Permanent { reason: "dashboard board rejected: payload is not JSON".into() }));
}

#[tokio::test(start_paused = true)]
async fn a_stalled_board_times_out_as_transient() {
    let (board, sink) = setup();
    board.stalled.store(true, Ordering::SeqCst);
    // Paused time: the one-second deadline elapses without the test waiting for it.
    let result = sink.deliver(&request("dlv_1", 1)).await;
    assert!(matches!(&result, Err(SinkError::Transient { reason, .. }) if reason.contains("timed out")), "{result:?}");
    assert!(board.stored().is_empty());
}

#[tokio::test]
async fn another_channels_destination_is_permanent_and_never_posted() {
    let (board, sink) = setup();
    let mut wrong = request("dlv_1", 1);
    wrong.destination = Destination::Webhook { url: "http://127.0.0.1:9/".into(), secret: "whsec_c2VjcmV0".into() };
    let result = sink.deliver(&wrong).await;
    let Err(SinkError::Permanent { reason }) = result else { panic!("expected permanent: {result:?}") };
    assert!(!reason.contains("whsec_c2VjcmV0"), "the secret leaked into the reason: {reason}");
    assert_eq!(board.posts.load(Ordering::SeqCst), 0);
}
