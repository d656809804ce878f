//! `recovery_state`: what a restart feeds back into the dataflow after partial work.

use dataflows::delivery::{DeliveryChannel, DeliveryState};
use dataflows::subscription::ReportSubscription;
use dataflows::Time;

use crate::backend::Backend;
use crate::fixtures::*;

fn by_id(mut versions: Vec<(ReportSubscription, Time, Option<Time>)>) -> Vec<(ReportSubscription, Time, Option<Time>)> {
    versions.sort_by(|a, b| (a.1, &a.0.subscription_id).cmp(&(b.1, &b.0.subscription_id)));
    versions
}

pub async fn recovery_after_partial_work(backend: &dyn Backend) {
    let store = backend.open().await;
    let s = |t: Time| T0 + t * SEC;
    let a1 = subscription("sub-a", "client-a", "active", &["API_WEBHOOK"]);
    let a2 = subscription("sub-a", "client-a", "active", &["API_WEBHOOK", "EMAIL"]);
    let a3 = subscription("sub-a", "client-a", "paused", &["API_WEBHOOK", "EMAIL"]);
    let b1 = subscription("sub-b", "client-b", "active", &["EMAIL"]);
    let b2 = subscription("sub-b", "client-b", "cancelled", &["EMAIL"]);
    let c1 = subscription("sub-c", "client-c", "active", &["EMAIL"]);
    let d_never = subscription("sub-d", "client-d", "active", &["EMAIL"]);
    let d1 = subscription("sub-d", "client-d", "active", &["MOBILE_PUSH"]);
    apply(&*store, changes(&[(&a1, s(1))])).await;
    apply(&*store, changes(&[(&b1, s(2))])).await;
    // An earlier report, expanded: one delivery delivered, one waiting for its retry, one dead.
    let r0 = report("evt-0", "rep-0");
    let delivered = task(&r0, &a1, DeliveryChannel::ApiWebhook, s(2) + 5);
    let retried = task(&r0, &b1, DeliveryChannel::Email, s(2) + 5);
    let dead = task(&r0, &c1, DeliveryChannel::Email, s(2) + 5);
    apply(&*store, reports(&[(&r0, s(2) + 5)])).await;
    apply(&*store, expanded("evt-0", &[&delivered, &retried, &dead])).await;
    apply(&*store, changes(&[(&b2, s(3))])).await;
    apply(&*store, changes(&[(&a2, s(4))])).await;
    // Accepted but not expanded when the process dies.
    let r1 = report("evt-1", "rep-1");
    let r2 = report("evt-2", "rep-2");
    apply(&*store, reports(&[(&r1, s(5)), (&r2, s(5))])).await;
    apply(&*store, changes(&[(&a3, s(6))])).await;
    // Two versions in one commit: the first was never in effect.
    apply(&*store, changes(&[(&d_never, s(7)), (&d1, s(7))])).await;
    apply(&*store, changes(&[(&c1, s(7))])).await;
    apply(
        &*store,
        merged(vec![
            attempt(&delivered, DeliveryState::Delivered, None, s(8)),
            attempt(&retried, DeliveryState::Retrying, Some("SMTP 451"), s(8)),
            attempt(&dead, DeliveryState::Retrying, Some("SMTP 550"), s(8)),
            dead_letter(&dead, "SMTP 550", s(8)),
        ]),
    )
    .await;
    let next = with_attempt(&retried, 2);
    apply(&*store, retry(&next, s(30), "SMTP 451")).await;
    drop(store); // the crash: no orderly close

    let store = backend.open().await;
    let state = store.recovery_state().await.unwrap();
    let accepted: Vec<(&str, Time)> = state.unexpanded_reports.iter().map(|r| (r.event.event_id.as_str(), r.accepted_at)).collect();
    assert_eq!(accepted, vec![("evt-1", s(5)), ("evt-2", s(5))], "in acceptance order");
    assert_eq!(state.unexpanded_reports[0].event, r1);
    assert_eq!(
        by_id(state.subscription_versions),
        vec![(a2.clone(), s(4), Some(s(6))), (c1.clone(), s(7), None), (d1.clone(), s(7), None)],
        "active versions in effect at or after the oldest unexpanded report (a1 ended and b was cancelled \
         before it, a3 is paused, d's first version never took effect)"
    );
    assert_eq!(state.pending_deliveries, vec![(next.clone(), s(30))], "the retry, with its whole task, due when scheduled");
    assert_eq!(state.last_time, s(30), "the latest time any record carries (a retry's due time included)");
}

pub async fn recovery_without_unexpanded_reports_has_only_current_versions(backend: &dyn Backend) {
    let store = backend.open().await;
    let a1 = subscription("sub-a", "client-a", "active", &["API_WEBHOOK"]);
    let a2 = subscription("sub-a", "client-a", "active", &["EMAIL"]);
    let b1 = subscription("sub-b", "client-b", "active", &["EMAIL"]);
    let b2 = subscription("sub-b", "client-b", "paused", &["EMAIL"]);
    apply(&*store, changes(&[(&a1, T0), (&b1, T0)])).await;
    let r = report("evt-1", "rep-1");
    apply(&*store, reports(&[(&r, T0 + 1)])).await;
    apply(&*store, changes(&[(&a2, T0 + 2), (&b2, T0 + 2)])).await;
    apply(&*store, expanded("evt-1", &[])).await;
    drop(store);
    let store = backend.open().await;
    let state = store.recovery_state().await.unwrap();
    assert!(state.unexpanded_reports.is_empty());
    assert!(state.pending_deliveries.is_empty(), "an empty delivery set leaves nothing pending");
    assert_eq!(state.subscription_versions, vec![(a2, T0 + 2, None)]);
    assert_eq!(state.last_time, T0 + 2);
}
