//! The read side: delivery status, an event's delivery ids, dead-letter pages, notifications,
//! the delivery summary and stats windows.

use std::sync::Arc;

use dataflows::delivery::{DeliveryChannel, DeliveryState};
use dataflows::report::ReportDataType;
use dataflows::stats::{StatsKey, StatsRow};
use dataflows::Time;
use repdist::store::*;
use serde_json::json;

use crate::backend::Backend;
use crate::fixtures::*;

pub async fn delivery_status_and_deliveries_of_event(backend: &dyn Backend) {
    let store = backend.open().await;
    let store = &*store;
    let r = report("evt-1", "rep-1");
    let a = subscription("sub-a", "client-a", "active", &["API_WEBHOOK", "EMAIL"]);
    let b = subscription("sub-b", "client-b", "active", &["API_WEBHOOK"]);
    assert_eq!(store.deliveries_of_event("evt-1").await.unwrap(), None, "never accepted");
    apply(store, reports(&[(&r, T0)])).await;
    assert_eq!(store.deliveries_of_event("evt-1").await.unwrap(), None, "accepted, not expanded yet");
    let state = store.recovery_state().await.unwrap();
    assert_eq!(state.unexpanded_reports.len(), 1);
    assert_eq!(state.unexpanded_reports[0].event, r, "the report comes back exactly as accepted");

    let webhook = task(&r, &a, DeliveryChannel::ApiWebhook, T0);
    let email = task(&r, &a, DeliveryChannel::Email, T0);
    apply(store, expanded("evt-1", &[&webhook, &email])).await;
    let ids = sorted(vec![webhook.delivery_id.clone(), email.delivery_id.clone()]);
    assert_eq!(store.deliveries_of_event("evt-1").await.unwrap(), Some(ids.clone()), "sorted by id");

    let s = status(store, &email.delivery_id).await;
    assert_eq!(s.delivery_id, email.delivery_id);
    assert_eq!((s.subscription_id.as_str(), s.report_id.as_str()), ("sub-a", "rep-1"));
    assert_eq!((s.channel, s.status, s.retry_count), (DeliveryChannel::Email, DeliveryState::Pending, 0));
    assert_eq!((s.delivery_time, s.error_details), (None, None));
    assert!(store.delivery_status("nope").await.unwrap().is_none());

    // The same report under a new event shares the ids already made and adds the new subscriber's.
    let again = report("evt-2", "rep-1");
    let to_b = task(&again, &b, DeliveryChannel::ApiWebhook, T0 + 5);
    apply(store, reports(&[(&again, T0 + 5)])).await;
    let out = apply(store, expanded("evt-2", &[&task(&again, &a, DeliveryChannel::ApiWebhook, T0 + 5), &to_b])).await;
    assert_eq!(out.existing_deliveries, vec![webhook.delivery_id.clone()]);
    let mut all = ids.clone();
    all.push(to_b.delivery_id.clone());
    assert_eq!(store.deliveries_of_event("evt-2").await.unwrap(), Some(sorted(all.clone())));
    assert_eq!(store.deliveries_of_event("evt-1").await.unwrap(), Some(sorted(all)), "by report: the report's deliveries");

    // Expanded to nothing is still expanded.
    let lonely = report("evt-3", "rep-3");
    apply(store, reports(&[(&lonely, T0 + 6)])).await;
    apply(store, expanded("evt-3", &[])).await;
    assert_eq!(store.deliveries_of_event("evt-3").await.unwrap(), Some(vec![]));
}

pub async fn dead_letters_page_in_order(backend: &dyn Backend) {
    let store = backend.open().await;
    let store = &*store;
    let mut tasks = Vec::new();
    for i in 0..5u64 {
        tasks.push(one_delivery(store, &format!("evt-{i}"), &format!("rep-{i}"), T0 + i).await);
    }
    for (i, t) in tasks.iter().enumerate() {
        apply(store, dead_letter(&with_attempt(t, 3), &format!("gone {i}"), T0 + 100 + i as Time)).await;
    }
    let expected: Vec<String> = tasks.iter().map(|t| t.delivery_id.clone()).collect();
    let ids = |page: Vec<DeadLetter>| page.into_iter().map(|d| d.delivery_id).collect::<Vec<_>>();

    let all = store.dead_letters(100, None).await.unwrap();
    assert_eq!(all.len(), 5);
    let first = &all[0];
    assert_eq!((first.subscription_id.as_str(), first.subscriber_id.as_str()), ("sub-w", "client-w"));
    assert_eq!((first.report_id.as_str(), first.event_id.as_str()), ("rep-0", "evt-0"));
    assert_eq!((first.channel, first.reason.as_str(), first.attempts), (DeliveryChannel::ApiWebhook, "gone 0", 3));
    assert_eq!(first.dead_lettered_at, at(T0 + 100));
    assert_eq!(ids(all), expected, "in the order they were dead-lettered");

    let page1 = ids(store.dead_letters(2, None).await.unwrap());
    assert_eq!(page1, expected[..2]);
    let page2 = ids(store.dead_letters(2, Some(&page1[1])).await.unwrap());
    assert_eq!(page2, expected[2..4]);
    let page3 = ids(store.dead_letters(2, Some(&page2[1])).await.unwrap());
    assert_eq!(page3, expected[4..]);
    assert!(store.dead_letters(2, Some(&page3[0])).await.unwrap().is_empty(), "past the end");

    // Dead-lettered again (a replayed outcome): same place, latest reason.
    apply(store, dead_letter(&with_attempt(&tasks[1], 4), "gone again", T0 + 200)).await;
    let all = store.dead_letters(100, None).await.unwrap();
    assert_eq!(ids(all.clone()), expected);
    assert_eq!((all[1].reason.as_str(), all[1].attempts), ("gone again", 4));
    assert_eq!(store.dead_letter_task(&tasks[1].delivery_id).await.unwrap(), Some(with_attempt(&tasks[1], 4)));
    assert_eq!(store.dead_letter_task("nope").await.unwrap(), None);

    // Replayed: out of the list; dead-lettered once more, it goes to the end.
    apply(store, replay(&tasks[0], T0 + 300)).await;
    assert_eq!(ids(store.dead_letters(100, None).await.unwrap()), expected[1..]);
    apply(store, dead_letter(&tasks[0], "gone for good", T0 + 400)).await;
    let mut rotated = expected[1..].to_vec();
    rotated.push(expected[0].clone());
    assert_eq!(ids(store.dead_letters(100, None).await.unwrap()), rotated);
}

fn notification(id: &str, subscriber: &str, created_at: Time) -> Notification {
    Notification {
        notification_id: id.to_string(),
        subscriber_id: subscriber.to_string(),
        subscription_id: "sub-d".to_string(),
        report_id: "rep-1".to_string(),
        payload: json!({"type": "report.distributed", "data": {"delivery_id": id, "nested": [1, 2.5, "x\u{e9}"], "z": null, "a": {}}}),
        created_at: at(created_at),
    }
}

pub async fn notifications_are_idempotent_and_newest_first(backend: &dyn Backend) {
    let store = backend.open().await;
    let first = notification("n-1", "client-1", T0);
    store.insert_notification(&first).await.unwrap();
    store.insert_notification(&first).await.unwrap();
    let mut changed = notification("n-1", "client-1", T0 + 5);
    changed.payload = json!({"other": true});
    store.insert_notification(&changed).await.unwrap();
    let stored = store.notifications_of("client-1", 10).await.unwrap();
    assert_eq!(stored.len(), 1, "one notification per id");
    assert_eq!(stored[0].payload, first.payload, "the first one stored stands");
    assert_eq!(stored[0].created_at, first.created_at);
    assert_eq!((stored[0].subscription_id.as_str(), stored[0].report_id.as_str()), ("sub-d", "rep-1"));

    // Many at once (the way a dashboard fan-out arrives), some of them repeats.
    let mut inserts = Vec::new();
    for i in 0..200u64 {
        let store = Arc::clone(&store);
        let n = notification(&format!("m-{:03}", i % 150), "client-2", T0 + i % 150);
        inserts.push(tokio::spawn(async move { store.insert_notification(&n).await }));
    }
    for insert in inserts {
        insert.await.unwrap().unwrap();
    }
    let stored = store.notifications_of("client-2", 1000).await.unwrap();
    assert_eq!(stored.len(), 150);
    let newest: Vec<&str> = stored.iter().take(3).map(|n| n.notification_id.as_str()).collect();
    assert_eq!(newest, vec!["m-149", "m-148", "m-147"], "newest first");
    assert_eq!(store.notifications_of("client-2", 7).await.unwrap().len(), 7);
    assert_eq!(store.notifications_of("client-1", 10).await.unwrap().len(), 1, "per subscriber");
    assert!(store.notifications_of("client-404", 10).await.unwrap().is_empty());
}

pub async fn delivery_summary_counts_every_state(backend: &dyn Backend) {
    let store = backend.open().await;
    let store = &*store;
    assert_eq!(store.delivery_summary().await.unwrap().total, 0);
    let r = report("evt-1", "rep-1");
    let subs: Vec<_> = (0..4).map(|i| subscription(&format!("sub-{i}"), "client", "active", &["API_WEBHOOK", "EMAIL"])).collect();
    let tasks: Vec<_> = subs.iter().map(|s| task(&r, s, DeliveryChannel::ApiWebhook, T0)).collect();
    let email = task(&r, &subs[0], DeliveryChannel::Email, T0);
    let mut all: Vec<&_> = tasks.iter().collect();
    all.push(&email);
    apply(store, merged(vec![reports(&[(&r, T0)]), expanded("evt-1", &all)])).await;
    apply(
        store,
        merged(vec![
            attempt(&tasks[1], DeliveryState::Delivered, None, T0 + 1),
            attempt(&tasks[2], DeliveryState::Retrying, Some("503"), T0 + 1),
            retry(&with_attempt(&tasks[2], 2), T0 + 9, "503"),
            attempt(&with_attempt(&tasks[3], 2), DeliveryState::Retrying, Some("410"), T0 + 1),
            dead_letter(&with_attempt(&tasks[3], 2), "410", T0 + 1),
        ]),
    )
    .await;
    let summary = store.delivery_summary().await.unwrap();
    assert_eq!(summary.total, 5);
    assert_eq!(summary.retries, 1 + 2, "failed attempts so far");
    let webhook = &summary.by_channel["API_WEBHOOK"];
    let counts: Vec<(&str, u64)> = webhook.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(counts, vec![("DEAD_LETTERED", 1), ("DELIVERED", 1), ("PENDING", 1), ("RETRYING", 1)]);
    assert_eq!(summary.by_channel["EMAIL"].values().sum::<u64>(), 1);
    assert_eq!(summary.by_channel["EMAIL"]["DELIVERED"], 0, "all four states appear");
    assert_eq!(summary.by_channel.len(), 2, "only channels with deliveries");
}

pub async fn stats_windows_upsert_and_none_keeps_the_row(backend: &dyn Backend) {
    let store = backend.open().await;
    let store = &*store;
    let window = |start: Time, channel| StatsKey { window_start: start, report_type: ReportDataType::RiskReport, channel };
    let w1 = window(T0, DeliveryChannel::ApiWebhook);
    let w1_email = window(T0, DeliveryChannel::Email);
    let w2 = window(T0 + 60 * SEC, DeliveryChannel::ApiWebhook);
    let row = |attempted, successful, failed, avg: Option<u64>, p99: Option<u64>| StatsRow {
        attempted,
        successful,
        failed,
        avg_delivery_time_us: avg,
        p99_delivery_time_us: p99,
    };
    let batch = WriteBatch {
        stats: vec![
            (w2, Some(row(1, 1, 0, Some(7), Some(7)))),
            (w1_email, Some(row(1, 0, 1, None, None))),
            (w1, Some(row(3, 2, 1, Some(1500), Some(2250)))),
        ],
        ..Default::default()
    };
    apply(store, batch).await;
    apply(store, WriteBatch { stats: vec![(w1, Some(row(5, 4, 1, Some(2000), Some(9000))))], ..Default::default() }).await;
    apply(store, WriteBatch { stats: vec![(w2, None)], ..Default::default() }).await;

    let stored = store.stats_since(at(T0)).await.unwrap();
    assert_eq!(stored.len(), 3, "one row per window, type and channel: {stored:?}");
    let s = &stored[0];
    assert_eq!((s.timestamp, s.report_type.as_str(), s.channel.as_str()), (at(T0), "RISK_REPORT", "API_WEBHOOK"));
    assert_eq!((s.deliveries_attempted, s.deliveries_successful, s.deliveries_failed), (5, 4, 1), "the latest figures");
    assert_eq!((s.avg_delivery_time_ms, s.p99_delivery_time_ms), (Some(2.0), Some(9.0)));
    assert_eq!(stored[1].channel, "EMAIL", "oldest window first, then type and channel");
    assert_eq!((stored[1].avg_delivery_time_ms, stored[1].p99_delivery_time_ms), (None, None));
    let s = &stored[2];
    assert_eq!(s.timestamp, at(T0 + 60 * SEC));
    assert_eq!((s.deliveries_attempted, s.avg_delivery_time_ms, s.p99_delivery_time_ms), (1, Some(0.007), Some(0.007)), "None kept it");
    let later = store.stats_since(at(T0 + SEC)).await.unwrap();
    assert_eq!(later.len(), 1, "windows starting at or after `since`");
    assert_eq!(later[0].timestamp, at(T0 + 60 * SEC));
}
