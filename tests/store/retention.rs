//! `metadata.retention_days`: the purge removes an expired report's payload, delivery history,
//! dead letters and notifications once every delivery it caused has ended, and nothing else: not
//! a report still within its retention, not one with a delivery pending or retrying, not one whose
//! delivery set is not durable yet, not a digest holding a report still within its retention.

use chrono::Utc;
use dataflows::delivery::{DeliveryChannel, DeliveryState};
use dataflows::digest::DigestMember;
use dataflows::report::ReportDistribution;
use dataflows::Time;
use repdist::store::retention::Purged;
use repdist::store::*;
use serde_json::json;

use crate::backend::Backend;
use crate::fixtures::*;

const DAY: Time = 86_400 * SEC;

fn kept_for(event_id: &str, report_id: &str, days: i32) -> ReportDistribution {
    let mut r = report(event_id, report_id);
    r.metadata.retention_days = days;
    r
}

/// Purges in batches of one until nothing is left, as the background job does in larger batches.
async fn purge(store: &dyn Store, now: Time) -> Purged {
    let mut total = Purged::default();
    loop {
        let purged = store.purge_expired(now, 1).await.expect("purge commits");
        assert!(purged.reports <= 1, "a batch holds at most `limit` reports: {purged:?}");
        if purged.is_empty() {
            return total;
        }
        total.reports += purged.reports;
        total.deliveries.extend(purged.deliveries);
    }
}

async fn notify(store: &dyn Store, delivery_id: &str, subscriber_id: &str, report_id: &str) {
    let notification = Notification {
        notification_id: delivery_id.into(),
        subscriber_id: subscriber_id.into(),
        subscription_id: "sub-a".into(),
        report_id: report_id.into(),
        payload: json!({"report_id": report_id}),
        created_at: Utc::now(),
    };
    store.insert_notification(&notification).await.expect("notification stored");
}

pub async fn retention_purges_ended_deliveries_of_expired_reports_only(backend: &dyn Backend) {
    let store = backend.open().await;
    let store = &*store;
    let a = subscription("sub-a", "client-a", "active", &["API_WEBHOOK", "DASHBOARD_NOTIFICATION"]);
    // expired: one delivery delivered (with a notification), one dead-lettered
    let expired = kept_for("evt-old", "rep-old", 1);
    let delivered = task(&expired, &a, DeliveryChannel::DashboardNotification, T0);
    let dead = task(&expired, &a, DeliveryChannel::ApiWebhook, T0);
    // expired, but its delivery is still retrying
    let busy = kept_for("evt-busy", "rep-busy", 1);
    let retrying = task(&busy, &a, DeliveryChannel::ApiWebhook, T0);
    // delivered, still within its retention
    let young = kept_for("evt-young", "rep-young", 30);
    let young_task = task(&young, &a, DeliveryChannel::ApiWebhook, T0);
    // expired, accepted but its delivery set not durable yet
    let unexpanded = kept_for("evt-new", "rep-new", 0);

    apply(store, reports(&[(&expired, T0), (&busy, T0), (&young, T0), (&unexpanded, T0)])).await;
    apply(store, merged(vec![expanded("evt-old", &[&delivered, &dead]), expanded("evt-busy", &[&retrying]), expanded("evt-young", &[&young_task])]))
        .await;
    apply(store, merged(vec![
        attempt(&delivered, DeliveryState::Delivered, None, T0 + SEC),
        attempt(&young_task, DeliveryState::Delivered, None, T0 + SEC),
        attempt(&dead, DeliveryState::Pending, Some("HTTP 410"), T0 + SEC),
        dead_letter(&dead, "HTTP 410", T0 + SEC),
        attempt(&retrying, DeliveryState::Pending, Some("HTTP 503"), T0 + SEC),
        retry(&with_attempt(&retrying, 2), T0 + 3 * DAY, "HTTP 503"),
    ]))
    .await;
    notify(store, &delivered.delivery_id, "client-a", "rep-old").await;
    notify(store, &young_task.delivery_id, "client-a", "rep-young").await;
    assert_eq!(status(store, &dead.delivery_id).await.status, DeliveryState::DeadLettered);
    assert_eq!(status(store, &retrying.delivery_id).await.status, DeliveryState::Retrying);

    assert_eq!(purge(store, T0 + DAY - 1).await, Purged::default(), "nothing has passed its retention yet");

    let purged = purge(store, T0 + 2 * DAY).await;
    assert_eq!(purged.reports, 1, "{purged:?}");
    assert_eq!(sorted(purged.deliveries), sorted(vec![delivered.delivery_id.clone(), dead.delivery_id.clone()]));
    for id in [&delivered.delivery_id, &dead.delivery_id] {
        assert!(store.delivery_status(id).await.unwrap().is_none(), "history of {id} purged");
    }
    assert_eq!(store.deliveries_of_event("evt-old").await.unwrap(), None, "the report is forgotten");
    assert!(store.dead_letters(100, None).await.unwrap().is_empty(), "the dead letter is purged");
    assert!(store.dead_letter_task(&dead.delivery_id).await.unwrap().is_none(), "and cannot be replayed");
    let inbox: Vec<String> = store.notifications_of("client-a", 10).await.unwrap().into_iter().map(|n| n.report_id).collect();
    assert_eq!(inbox, vec!["rep-young".to_string()], "the expired report's notification is purged");

    // What must stay: the retrying delivery (and its pending task), the young report, the report
    // whose delivery set is not durable yet.
    assert_eq!(status(store, &retrying.delivery_id).await.status, DeliveryState::Retrying);
    assert_eq!(status(store, &young_task.delivery_id).await.status, DeliveryState::Delivered);
    let state = store.recovery_state().await.unwrap();
    assert_eq!(state.pending_deliveries.len(), 1);
    assert_eq!(state.pending_deliveries[0].0.delivery_id, retrying.delivery_id);
    assert_eq!(state.unexpanded_reports.len(), 1, "an unexpanded report is never purged");
    assert_eq!(state.unexpanded_reports[0].event.event_id, "evt-new");

    // Once the retried delivery ends, its report goes at the next purge.
    apply(store, attempt(&with_attempt(&retrying, 2), DeliveryState::Delivered, None, T0 + 3 * DAY)).await;
    let purged = purge(store, T0 + 3 * DAY).await;
    assert_eq!((purged.reports, purged.deliveries), (1, vec![retrying.delivery_id.clone()]));
    assert!(store.delivery_status(&retrying.delivery_id).await.unwrap().is_none());
    assert!(store.recovery_state().await.unwrap().pending_deliveries.is_empty());

    // A purged event id is no longer known: sent again, it is a new report.
    let out = apply(store, reports(&[(&expired, T0 + 4 * DAY)])).await;
    assert!(out.duplicate_events.is_empty(), "{out:?}");
    // The young report stays until its own retention ends.
    assert_eq!(status(store, &young_task.delivery_id).await.status, DeliveryState::Delivered);
    let purged = purge(store, T0 + 31 * DAY).await;
    assert!(purged.deliveries.contains(&young_task.delivery_id), "{purged:?}");
}

pub async fn a_digest_is_purged_once_it_ended_and_all_its_reports_expired(backend: &dyn Backend) {
    let store = backend.open().await;
    let store = &*store;
    let tick = T0 + 60 * SEC;
    let (short, long) = (kept_for("evt-1", "rep-1", 1), kept_for("evt-2", "rep-2", 5));
    let (m1, m2) = (digest_member(&short, tick, T0), digest_member(&long, tick, T0));
    let joined = |event_id: &str, m: &DigestMember| WriteBatch {
        expanded: vec![ExpandedReport { event_id: event_id.into(), deliveries: vec![], digest_members: vec![m.clone()] }],
        ..Default::default()
    };
    apply(store, reports(&[(&short, T0), (&long, T0)])).await;
    apply(store, merged(vec![joined("evt-1", &m1), joined("evt-2", &m2)])).await;
    assert_eq!(purge(store, T0 + 2 * DAY).await, Purged::default(), "the digest has not gone out: its reports stay");

    let digest = dataflows::digest::assemble(vec![m1.clone(), m2.clone()]).expect("a digest task");
    apply(store, attempt(&digest, DeliveryState::Delivered, None, tick + SEC)).await;
    let purged = purge(store, T0 + 2 * DAY).await;
    assert_eq!((purged.reports, purged.deliveries.len()), (1, 0), "the short-lived report goes, the digest stays: {purged:?}");
    assert_eq!(status(store, &m1.digest_id).await.status, DeliveryState::Delivered);

    let purged = purge(store, T0 + 6 * DAY).await;
    assert_eq!((purged.reports, purged.deliveries), (1, vec![m1.digest_id.clone()]));
    assert!(store.delivery_status(&m1.digest_id).await.unwrap().is_none());
    assert!(store.recovery_state().await.unwrap().pending_digest_members.is_empty());
}
