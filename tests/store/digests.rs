//! Digest members of SCHEDULED subscriptions: durable with their report's delivery set, a digest's
//! delivery_history row from its first member on, answered for a re-sent event, and fed back after a
//! restart until the digest has gone out (or has a retry of its own scheduled).

use dataflows::delivery::{DeliveryState, DeliveryTask};
use dataflows::digest::{assemble, DigestMember};
use repdist::store::{ExpandedReport, WriteBatch};

use crate::backend::Backend;
use crate::fixtures::*;

fn joined(event_id: &str, members: &[&DigestMember]) -> WriteBatch {
    WriteBatch {
        expanded: vec![ExpandedReport {
            event_id: event_id.into(),
            deliveries: Vec::new(),
            digest_members: members.iter().map(|m| (*m).clone()).collect(),
        }],
        ..Default::default()
    }
}

async fn pending_members(store: &dyn repdist::store::Store) -> Vec<String> {
    let state = store.recovery_state().await.expect("recovery state");
    state.pending_digest_members.iter().map(|m| m.report.report_data.report_id.clone()).collect()
}

pub async fn digest_members_are_durable_until_their_digest_goes_out(backend: &dyn Backend) {
    let store = backend.open().await;
    let tick = T0 + 60 * SEC;
    let (r1, r2) = (report("evt-1", "rep-1"), report("evt-2", "rep-2"));
    let (m1, m2) = (digest_member(&r1, tick, T0 + SEC), digest_member(&r2, tick, T0 + 2 * SEC));
    apply(&*store, reports(&[(&r1, T0 + SEC)])).await;
    apply(&*store, joined("evt-1", &[&m1])).await;
    // Both members in one digest; the second report's batch repeats the first member (a replay).
    apply(&*store, merged(vec![reports(&[(&r2, T0 + 2 * SEC)]), joined("evt-2", &[&m2, &m1])])).await;

    let status = status(&*store, &m1.digest_id).await;
    assert_eq!(status.status, DeliveryState::Pending);
    assert_eq!(status.report_id, "digest:2023-11-14T22:14:20Z");
    assert_eq!(status.subscription_id, "sub-s");
    assert_eq!(store.deliveries_of_event("evt-2").await.unwrap(), Some(vec![m1.digest_id.clone()]));
    assert_eq!(pending_members(&*store).await, ["rep-1", "rep-2"], "one row per member, in acceptance order");
    assert!(pending(&*store).await.is_empty(), "no pending delivery before the tick");

    // The digest's first attempt failed and a retry is scheduled: it resumes as a pending delivery.
    let digest: DeliveryTask = assemble(vec![m1.clone(), m2.clone()]).expect("a digest");
    let retry_task = with_attempt(&digest, 2);
    apply(&*store, merged(vec![attempt(&digest, DeliveryState::Pending, Some("HTTP 503"), tick + 10), retry(&retry_task, tick + SEC, "HTTP 503")])).await;
    assert!(pending_members(&*store).await.is_empty(), "the retry carries the members");
    let resumed = pending(&*store).await;
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].0, retry_task, "the task round-trips with its members");

    // Delivered: nothing left to resume.
    apply(&*store, attempt(&retry_task, DeliveryState::Delivered, None, tick + 2 * SEC)).await;
    assert!(pending(&*store).await.is_empty());
    assert!(pending_members(&*store).await.is_empty());
    assert_eq!(status_of(&*store, &digest.delivery_id).await, DeliveryState::Delivered);
}

async fn status_of(store: &dyn repdist::store::Store, id: &str) -> DeliveryState {
    status(store, id).await.status
}
