//! `Store::apply`: every part of a group commit, its idempotence, batches of every size, atomicity.

use dataflows::delivery::{DeliveryChannel, DeliveryState, DeliveryTask};
use dataflows::report::ReportDataType;
use dataflows::stats::{StatsKey, StatsRow};
use repdist::store::*;
use serde_json::json;

use crate::backend::Backend;
use crate::fixtures::*;

pub async fn reopening_keeps_everything_and_migrates_nothing_twice(backend: &dyn Backend) {
    let store = backend.open().await;
    let sub = subscription("sub-1", "client-1", "active", &["EMAIL"]);
    let t = one_delivery(&*store, "evt-1", "rep-1", T0).await;
    apply(&*store, changes(&[(&sub, T0 + 1)])).await;
    drop(store);
    let store = backend.open().await;
    assert_eq!(store.subscription("sub-1").await.unwrap().expect("kept across reopen").subscription, sub);
    assert_eq!(status(&*store, &t.delivery_id).await.status, DeliveryState::Pending);
    drop(store);
    let store = backend.open().await;
    apply(&*store, changes(&[(&subscription("sub-2", "client-1", "active", &["EMAIL"]), T0 + 2)])).await;
    assert_eq!(store.subscriptions_of("client-1").await.unwrap().len(), 2, "a reopened store still takes writes");
}

/// Every part of a turn applied twice (a commit retried after an ambiguous failure, a replayed
/// report or outcome) leaves what applying it once leaves.
pub async fn apply_is_idempotent(backend: &dyn Backend) {
    let store = backend.open().await;
    let store = &*store;
    let r = report("evt-1", "rep-1");
    let sub = subscription("sub-a", "client-a", "active", &["API_WEBHOOK", "EMAIL"]);
    let webhook = task(&r, &sub, DeliveryChannel::ApiWebhook, T0);
    let email = task(&r, &sub, DeliveryChannel::Email, T0);
    let accept = merged(vec![reports(&[(&r, T0)]), changes(&[(&sub, T0)])]);
    let expand = expanded("evt-1", &[&webhook, &email]);

    assert!(apply(store, accept.clone()).await.duplicate_events.is_empty());
    assert_eq!(apply(store, accept).await.duplicate_events, vec!["evt-1".to_string()], "a re-sent report is a duplicate");
    assert!(apply(store, expand.clone()).await.existing_deliveries.is_empty());
    let again = apply(store, expand).await;
    assert_eq!(sorted(again.existing_deliveries), sorted(vec![webhook.delivery_id.clone(), email.delivery_id.clone()]));
    assert_eq!(store.subscriptions_of("client-a").await.unwrap().len(), 1);
    assert_eq!(store.delivery_summary().await.unwrap().total, 2, "no second delivery row");
    assert_eq!(pending(store).await.len(), 2);

    let second = with_attempt(&webhook, 2);
    let outcomes = merged(vec![
        attempt(&webhook, DeliveryState::Retrying, Some("HTTP 503"), T0 + SEC),
        attempt(&email, DeliveryState::Retrying, Some("SMTP 550"), T0 + SEC),
        retry(&second, T0 + 3 * SEC, "HTTP 503"),
        dead_letter(&email, "permanent: SMTP 550", T0 + SEC),
    ]);
    apply(store, outcomes.clone()).await;
    apply(store, outcomes).await;
    let w = status(store, &webhook.delivery_id).await;
    assert_eq!((w.status, w.retry_count, w.error_details.as_deref()), (DeliveryState::Retrying, 1, Some("HTTP 503")));
    let e = status(store, &email.delivery_id).await;
    assert_eq!((e.status, e.retry_count, e.error_details.as_deref()), (DeliveryState::DeadLettered, 1, Some("permanent: SMTP 550")));
    assert_eq!(pending(store).await, vec![(second.clone(), T0 + 3 * SEC)], "one pending row, the latest attempt");
    assert_eq!(store.dead_letters(10, None).await.unwrap().len(), 1, "one dead letter");

    let fresh = with_attempt(&email, 1);
    apply(store, replay(&fresh, T0 + 10 * SEC)).await;
    apply(store, replay(&fresh, T0 + 10 * SEC)).await;
    assert!(store.dead_letters(10, None).await.unwrap().is_empty());
    assert_eq!(pending(store).await.len(), 2);

    let key = StatsKey { window_start: T0, report_type: ReportDataType::PerformanceReport, channel: DeliveryChannel::ApiWebhook };
    let row = StatsRow { attempted: 2, successful: 1, failed: 1, avg_delivery_time_us: Some(1500), p99_delivery_time_us: Some(1500) };
    let done = merged(vec![
        attempt(&second, DeliveryState::Delivered, None, T0 + 4 * SEC),
        attempt(&fresh, DeliveryState::Delivered, None, T0 + 11 * SEC),
        WriteBatch { stats: vec![(key, Some(row))], ..Default::default() },
    ]);
    apply(store, done.clone()).await;
    apply(store, done).await;
    let w = status(store, &webhook.delivery_id).await;
    assert_eq!((w.status, w.retry_count, w.delivery_time), (DeliveryState::Delivered, 1, Some(at(T0 + 4 * SEC))));
    let e = status(store, &email.delivery_id).await;
    assert_eq!((e.status, e.retry_count, e.error_details), (DeliveryState::Delivered, 0, None));
    assert!(pending(store).await.is_empty());
    assert_eq!(store.stats_since(at(0)).await.unwrap().len(), 1, "one stats row per window");
    let summary = store.delivery_summary().await.unwrap();
    assert_eq!((summary.total, summary.retries), (2, 1));
    assert_eq!(summary.by_channel["API_WEBHOOK"]["DELIVERED"], 1);
    assert_eq!(summary.by_channel["EMAIL"]["DELIVERED"], 1);
}

/// Repeats inside one batch fold the way running the rows one after the other would.
pub async fn repeats_within_one_batch(backend: &dyn Backend) {
    let store = backend.open().await;
    let store = &*store;
    let sub = subscription("sub-a", "client-a", "active", &["API_WEBHOOK"]);
    // One report published twice (two events) in one turn: its delivery is created and dispatched once.
    let (e1, e2) = (report("evt-1", "rep-1"), report("evt-2", "rep-1"));
    let t1 = task(&e1, &sub, DeliveryChannel::ApiWebhook, T0);
    let t2 = task(&e2, &sub, DeliveryChannel::ApiWebhook, T0);
    let mut paused = subscription("sub-a", "client-a", "paused", &["API_WEBHOOK"]);
    paused.subscriber_type = "CLIENT".into();
    let out = apply(
        store,
        merged(vec![reports(&[(&e1, T0), (&e2, T0)]), changes(&[(&sub, T0), (&paused, T0 + 1)]), expanded("evt-1", &[&t1]), expanded("evt-2", &[&t2])]),
    )
    .await;
    assert!(out.duplicate_events.is_empty(), "{out:?}");
    assert_eq!(out.existing_deliveries, vec![t1.delivery_id.clone()], "the second occurrence is not new");
    assert_eq!(pending(store).await, vec![(t1.clone(), T0)]);
    let stored = store.subscription("sub-a").await.unwrap().unwrap();
    assert_eq!(stored.subscription, paused, "the last version wins");
    assert_eq!((stored.created_at, stored.updated_at), (at(T0), at(T0 + 1)));
    let versions = store.recovery_state().await.unwrap().subscription_versions;
    assert!(versions.is_empty(), "the active version ended when the pause began: {versions:?}");

    // Failure then success, and success then failure: delivered either way; the last attempt's count.
    let r2 = report("evt-3", "rep-3");
    let (a, b) = (task(&r2, &sub, DeliveryChannel::ApiWebhook, T0), task(&r2, &sub, DeliveryChannel::Email, T0));
    apply(store, merged(vec![reports(&[(&r2, T0)]), expanded("evt-3", &[&a, &b])])).await;
    apply(
        store,
        merged(vec![
            attempt(&a, DeliveryState::Retrying, Some("HTTP 500"), T0 + 1),
            attempt(&with_attempt(&a, 2), DeliveryState::Delivered, None, T0 + 2),
            attempt(&with_attempt(&b, 2), DeliveryState::Delivered, None, T0 + 3),
            attempt(&with_attempt(&b, 3), DeliveryState::Retrying, Some("late"), T0 + 4),
            retry(&with_attempt(&t1, 2), T0 + 5, "first"),
            retry(&with_attempt(&t1, 3), T0 + 9, "second"),
        ]),
    )
    .await;
    let sa = status(store, &a.delivery_id).await;
    assert_eq!((sa.status, sa.retry_count, sa.error_details.as_deref()), (DeliveryState::Delivered, 1, Some("HTTP 500")));
    assert_eq!(sa.delivery_time, Some(at(T0 + 2)));
    let sb = status(store, &b.delivery_id).await;
    assert_eq!((sb.status, sb.retry_count, sb.error_details.as_deref()), (DeliveryState::Delivered, 3, Some("late")));
    assert_eq!(pending(store).await, vec![(with_attempt(&t1, 3), T0 + 9)], "the last retry of a batch wins");

    let key = StatsKey { window_start: T0, report_type: ReportDataType::RiskReport, channel: DeliveryChannel::Email };
    let row = |n| StatsRow { attempted: n, successful: n, failed: 0, avg_delivery_time_us: None, p99_delivery_time_us: None };
    apply(store, WriteBatch { stats: vec![(key, Some(row(1))), (key, Some(row(7))), (key, None)], ..Default::default() }).await;
    let stats = store.stats_since(at(T0)).await.unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].deliveries_attempted, 7);
}

/// A group commit may carry thousands of rows of each kind.
pub async fn a_large_group_commit(backend: &dyn Backend) {
    let store = backend.open().await;
    let store = &*store;
    const N: usize = 2500;
    let sub = subscription("sub-big", "client-big", "active", &["API_WEBHOOK"]);
    let events: Vec<_> = (0..N).map(|i| report(&format!("evt-{i}"), &format!("rep-{i}"))).collect();
    let tasks: Vec<DeliveryTask> = events.iter().map(|e| task(e, &sub, DeliveryChannel::ApiWebhook, T0)).collect();
    let accepted: Vec<_> = events.iter().map(|e| (e, T0)).collect();
    let out = apply(store, reports(&accepted)).await;
    assert!(out.duplicate_events.is_empty());
    let expansions = WriteBatch {
        expanded: events
            .iter()
            .zip(&tasks)
            .map(|(e, t)| ExpandedReport { event_id: e.event_id.clone(), deliveries: vec![t.clone()], digest_members: vec![] })
            .collect(),
        ..Default::default()
    };
    assert!(apply(store, expansions.clone()).await.existing_deliveries.is_empty());
    assert_eq!(apply(store, reports(&accepted)).await.duplicate_events.len(), N);
    assert_eq!(apply(store, expansions).await.existing_deliveries.len(), N);
    let attempts = WriteBatch {
        attempts: tasks
            .iter()
            .enumerate()
            .map(|(i, t)| AttemptRecord {
                delivery_id: t.delivery_id.clone(),
                attempt: 1,
                state: if i % 2 == 0 { DeliveryState::Delivered } else { DeliveryState::Retrying },
                error: (i % 2 == 1).then(|| "HTTP 503".to_string()),
                finished_at: T0 + SEC,
            })
            .collect(),
        ..Default::default()
    };
    apply(store, attempts).await;
    let summary = store.delivery_summary().await.unwrap();
    assert_eq!((summary.total, summary.retries), (N as u64, (N / 2) as u64));
    assert_eq!(summary.by_channel["API_WEBHOOK"]["DELIVERED"], (N / 2) as u64);
    assert_eq!(pending(store).await.len(), N / 2);
    assert_eq!(store.deliveries_of_event(&format!("evt-{}", N - 1)).await.unwrap(), Some(vec![tasks[N - 1].delivery_id.clone()]));
}

pub async fn a_failed_batch_leaves_nothing(backend: &dyn Backend) {
    let store = backend.open().await;
    let store = &*store;
    let sub = subscription("sub-1", "client-1", "active", &["EMAIL"]);
    let r = report("evt-1", "rep-1");
    let good = task(&r, &sub, DeliveryChannel::Email, T0);
    // The spec caps delivery_id at 100 characters: this one breaks the batch at its third step,
    // after the report and the subscription were written within the transaction.
    let bad = DeliveryTask { delivery_id: "x".repeat(101), ..good.clone() };
    let batch = WriteBatch {
        reports: vec![NewReport { event: r.clone(), accepted_at: T0 }],
        subscription_changes: vec![SubscriptionChange { subscription: sub.clone(), changed_at: T0 }],
        expanded: vec![ExpandedReport { event_id: "evt-1".into(), deliveries: vec![good.clone(), bad], digest_members: vec![] }],
        stats: vec![(
            StatsKey { window_start: T0, report_type: ReportDataType::PerformanceReport, channel: DeliveryChannel::Email },
            Some(StatsRow { attempted: 1, successful: 1, failed: 0, avg_delivery_time_us: Some(1), p99_delivery_time_us: Some(1) }),
        )],
        ..Default::default()
    };
    assert!(store.apply(&batch).await.is_err(), "a 101-character delivery id must be refused");
    assert!(store.subscription("sub-1").await.unwrap().is_none());
    assert!(store.delivery_status(&good.delivery_id).await.unwrap().is_none());
    assert_eq!(store.deliveries_of_event("evt-1").await.unwrap(), None);
    assert!(store.stats_since(at(0)).await.unwrap().is_empty());
    let after = store.recovery_state().await.unwrap();
    assert!(after.unexpanded_reports.is_empty() && after.subscription_versions.is_empty() && after.pending_deliveries.is_empty());
    assert_eq!(after.last_time, 0);
    let out = apply(store, reports(&[(&r, T0 + 1)])).await;
    assert!(out.duplicate_events.is_empty(), "the failed batch's report was not stored");
}

pub async fn subscription_versions_upsert_and_keep_created_at(backend: &dyn Backend) {
    let store = backend.open().await;
    let store = &*store;
    let v1 = subscription("sub-1", "client-1", "active", &["EMAIL"]);
    let other = subscription("sub-2", "client-1", "active", &["API_WEBHOOK"]);
    let stranger = subscription("sub-3", "client-9", "active", &["EMAIL"]);
    apply(store, changes(&[(&v1, T0), (&other, T0 + 1), (&stranger, T0 + 1)])).await;
    let mut v2 = subscription("sub-1", "client-1", "paused", &["EMAIL", "SLACK_INTEGRATION"]);
    v2.filters.portfolio_ids = vec!["portfolio_002".into()];
    v2.filters.routing_key = None;
    apply(store, changes(&[(&v2, T0 + 10 * SEC)])).await;

    let stored = store.subscription("sub-1").await.unwrap().expect("stored");
    assert_eq!(stored.subscription, v2, "the latest version, every field");
    assert_eq!(stored.created_at, at(T0), "created when the first version took effect");
    assert_eq!(stored.updated_at, at(T0 + 10 * SEC));
    assert!(store.subscription("sub-404").await.unwrap().is_none());
    let ids: Vec<String> =
        store.subscriptions_of("client-1").await.unwrap().into_iter().map(|s| s.subscription.subscription_id).collect();
    assert_eq!(ids, vec!["sub-1", "sub-2"], "the subscriber's, paused included, oldest first");
    assert!(store.subscriptions_of("client-404").await.unwrap().is_empty());

    let mut versions = store.recovery_state().await.unwrap().subscription_versions;
    versions.sort_by(|a, b| a.0.subscription_id.cmp(&b.0.subscription_id));
    // No report awaits expansion, so only versions still in effect matter: sub-1 is paused.
    assert_eq!(versions, vec![(other, T0 + 1, None), (stranger, T0 + 1, None)]);

    let cancelled = subscription("sub-2", "client-1", "cancelled", &["API_WEBHOOK"]);
    apply(store, changes(&[(&cancelled, T0 + 20 * SEC)])).await;
    let payload = json!(store.subscription("sub-2").await.unwrap().unwrap().subscription.status);
    assert_eq!(payload, json!("cancelled"));
}
