//! The sequencer's share of SCHEDULED subscriptions' digests (the dataflow collects them; see
//! `dataflows::digest`). Two rules keep a digest's record ahead of its delivery:
//!
//! - a member becomes durable with its report's delivery set (the same [`ExpandedReport`]), so it is
//!   held here by event id until that report's expansion goes into a batch;
//! - a digest that came due is dispatched only once every report that could be in it has had its
//!   expansion put in a batch (the frontier has passed its tick), so its members and its
//!   delivery_history row are committed before its first attempt can finish.
//!
//! [`ExpandedReport`]: crate::store::ExpandedReport

use std::collections::HashMap;

use dataflows::delivery::DeliveryTask;
use dataflows::digest::DigestMember;
use dataflows::Time;

#[derive(Default)]
pub(super) struct Digests {
    /// Members by the event id of their report, until its expansion is in a batch.
    members: HashMap<String, Vec<DigestMember>>,
    /// Digests that came due, waiting for their members' expansions.
    held: Vec<DeliveryTask>,
}

impl Digests {
    pub fn collect(&mut self, member: DigestMember) {
        self.members.entry(member.report.event_id.clone()).or_default().push(member);
    }

    /// The members of `event_id`'s report, taken for its expansion.
    pub fn members_of(&mut self, event_id: &str) -> Vec<DigestMember> {
        self.members.remove(event_id).unwrap_or_default()
    }

    pub fn hold(&mut self, digest: DeliveryTask) {
        self.held.push(digest);
    }

    /// Digests whose tick every worker has passed (`done_before`, as `complete_expansions` reads
    /// the frontiers): all their members' reports are expanded by now.
    pub fn release(&mut self, frontiers: &[Option<Time>]) -> Vec<DeliveryTask> {
        if self.held.is_empty() {
            return Vec::new();
        }
        let done_before = frontiers.iter().map(|f| f.unwrap_or(Time::MAX)).min().unwrap_or(0);
        let (ready, waiting) = std::mem::take(&mut self.held).into_iter().partition(|task| task.accepted_at < done_before);
        self.held = waiting;
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(tick: Time) -> DeliveryTask {
        DeliveryTask {
            delivery_id: format!("d{tick}"),
            subscription_id: "s".into(),
            subscriber_id: "c".into(),
            channel: dataflows::delivery::DeliveryChannel::ApiWebhook,
            settings: Default::default(),
            report: serde_json::from_value(serde_json::json!({"event_id": "e", "timestamp": "2025-06-21T08:00:00Z",
                "data_type": "RISK_REPORT", "report_data": {"report_id": "r"}}))
            .unwrap(),
            accepted_at: tick,
            attempt: 1,
            digest: None,
            content: None,
        }
    }

    #[test]
    fn digests_wait_until_every_worker_passed_their_tick() {
        let mut digests = Digests::default();
        digests.hold(digest(10));
        digests.hold(digest(20));
        assert!(digests.release(&[Some(10), Some(30)]).is_empty(), "one worker is still at 10");
        let ready: Vec<Time> = digests.release(&[Some(11), Some(30)]).iter().map(|t| t.accepted_at).collect();
        assert_eq!(ready, [10]);
        let ready: Vec<Time> = digests.release(&[None, None]).iter().map(|t| t.accepted_at).collect();
        assert_eq!(ready, [20]);
    }
}
