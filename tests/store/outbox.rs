//! The outbox: rows committed with a batch come back in commit order and go once removed; a batch
//! that fails leaves none.

use repdist::store::{OutboxMessage, OutboxTopic, WriteBatch};

use crate::backend::Backend;

fn message(topic: OutboxTopic, key: &str, payload: Option<&str>) -> OutboxMessage {
    OutboxMessage { topic, key: key.to_string(), payload: payload.map(str::to_string) }
}

pub async fn outbox_rows_are_kept_in_commit_order_until_removed(backend: &dyn Backend) {
    let store = backend.open().await;
    assert!(store.outbox_peek(10).await.unwrap().is_empty());
    let first = vec![
        message(OutboxTopic::Subscriptions, "sub_1", Some(r#"{"subscription_id":"sub_1"}"#)),
        message(OutboxTopic::Distributed, "portfolio_001", Some(r#"{"event_id":"e"}"#)),
    ];
    let second = vec![
        message(OutboxTopic::DeliveryStatus, "portfolio_001", Some(r#"{"status":"DELIVERED"}"#)),
        message(OutboxTopic::Subscriptions, "sub_2", None),
    ];
    store.apply(&WriteBatch { outbox: first.clone(), ..WriteBatch::default() }).await.unwrap();
    store.apply(&WriteBatch { outbox: second.clone(), ..WriteBatch::default() }).await.unwrap();

    let rows = store.outbox_peek(10).await.unwrap();
    let messages: Vec<OutboxMessage> = rows.iter().map(|r| r.message.clone()).collect();
    assert_eq!(messages, [first.clone(), second.clone()].concat(), "commit order, tombstone kept as None");
    assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(store.outbox_peek(3).await.unwrap().len(), 3, "limit");

    store.outbox_remove(&[rows[0].seq, rows[1].seq]).await.unwrap();
    let left: Vec<OutboxMessage> = store.outbox_peek(10).await.unwrap().into_iter().map(|r| r.message).collect();
    assert_eq!(left, second);
    store.outbox_remove(&[]).await.unwrap();
    store.outbox_remove(&[rows[2].seq, rows[3].seq, 999_999]).await.unwrap();
    assert!(store.outbox_peek(10).await.unwrap().is_empty());
}
