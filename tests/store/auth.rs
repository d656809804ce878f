//! `api_keys` and `audit_log`: keys stored by hash, found, listed, revoked; audit rows appended
//! directly and by the group commit, filtered and paged, kept across a reopen.

use repdist::auth::keys;
use repdist::store::{AttemptRecord, AuditEntry, AuditQuery, Role, WriteBatch};

use crate::backend::Backend;

pub async fn api_keys_are_stored_hashed_and_revoked(backend: &dyn Backend) {
    let store = backend.open().await;
    assert_eq!(store.active_api_keys().await.unwrap(), 0);
    let admin = keys::create(store.as_ref(), Role::Admin, None).await.unwrap();
    let subscriber = keys::create(store.as_ref(), Role::Subscriber, Some("pm_001".to_string())).await.unwrap();
    assert!(matches!(keys::create(store.as_ref(), Role::Subscriber, None).await, Err(keys::KeyError::SubscriberRequired)));
    assert!(matches!(keys::create(store.as_ref(), Role::Publisher, Some("x".into())).await, Err(keys::KeyError::SubscriberNotAllowed)));
    assert_eq!(store.active_api_keys().await.unwrap(), 2);

    let found = store.api_key_by_hash(&keys::hash(&subscriber.key)).await.unwrap().expect("found by hash");
    assert_eq!(found, subscriber.record);
    assert_eq!(found.role, Role::Subscriber);
    assert_eq!(found.subscriber_id.as_deref(), Some("pm_001"));
    assert_ne!(found.key_hash, subscriber.key, "the key itself is never stored");
    assert!(store.api_key_by_hash(&keys::hash("rd_not-a-key")).await.unwrap().is_none());

    let listed = store.api_keys().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|k| k.key_id == admin.record.key_id));

    let revoked = store.revoke_api_key(&subscriber.record.key_id, 1_000).await.unwrap().expect("revoked");
    assert_eq!(revoked.revoked_at, Some(1_000));
    let again = store.revoke_api_key(&subscriber.record.key_id, 2_000).await.unwrap().expect("still there");
    assert_eq!(again.revoked_at, Some(1_000), "the first revocation time is kept");
    assert!(store.revoke_api_key("key_nope", 1).await.unwrap().is_none());
    assert_eq!(store.active_api_keys().await.unwrap(), 1);

    drop(store);
    let store = backend.open().await;
    let after = store.api_key_by_hash(&keys::hash(&subscriber.key)).await.unwrap().expect("kept across a reopen");
    assert_eq!(after.revoked_at, Some(1_000));
}

fn entry(at: i64, actor: &str, action: &str) -> AuditEntry {
    AuditEntry { at, actor: actor.to_string(), action: action.to_string(), target: Some(format!("t{at}")), outcome: "ok".to_string(), detail: None }
}

pub async fn audit_rows_are_appended_filtered_and_paged(backend: &dyn Backend) {
    let store = backend.open().await;
    let all = |limit| AuditQuery { limit, ..Default::default() };
    assert!(store.audit(&all(10)).await.unwrap().is_empty());
    store.append_audit(&[entry(1_000, "key:a", "subscription.create"), entry(2_000, "key:b", "keys.create")]).await.unwrap();
    store.append_audit(&[entry(3_000, "key:a", "request.denied")]).await.unwrap();

    // The group commit adds the delivery machinery's rows in the same transaction.
    let batch = WriteBatch {
        attempts: vec![AttemptRecord {
            delivery_id: "d-1".to_string(),
            attempt: 2,
            state: dataflows::delivery::DeliveryState::Pending,
            error: Some("HTTP 500".to_string()),
            finished_at: 4_000,
        }],
        ..Default::default()
    };
    store.apply(&batch).await.unwrap();

    let rows = store.audit(&all(10)).await.unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq), "oldest first");
    let attempt = &rows[3];
    assert_eq!((attempt.actor.as_str(), attempt.action.as_str(), attempt.outcome.as_str()), ("system", "delivery.attempt", "FAILED"));
    assert_eq!(attempt.target.as_deref(), Some("d-1"));
    assert_eq!(attempt.detail.as_deref(), Some("attempt 2: HTTP 500"));
    assert_eq!(attempt.at.timestamp_micros(), 4_000);

    let by_actor = store.audit(&AuditQuery { actor: Some("key:a".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(by_actor.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(), ["subscription.create", "request.denied"]);
    let by_action = store.audit(&AuditQuery { action: Some("keys.create".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(by_action.len(), 1);
    let window = store.audit(&AuditQuery { since: Some(2_000), until: Some(4_000), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(window.iter().map(|r| r.at.timestamp_micros()).collect::<Vec<_>>(), [2_000, 3_000], "since inclusive, until exclusive");

    let first = store.audit(&all(2)).await.unwrap();
    let second = store.audit(&AuditQuery { after: Some(first[1].seq), limit: 2, ..Default::default() }).await.unwrap();
    assert_eq!(first.len() + second.len(), 4);
    assert!(second[0].seq > first[1].seq);

    drop(store);
    assert_eq!(backend.open().await.audit(&all(10)).await.unwrap().len(), 4, "kept across a reopen");
}
