//! Digests: what SCHEDULED subscriptions receive. A matching report is not delivered on its own; it
//! becomes a [`DigestMember`] of the digest for (subscription, channel, tick), where the tick is the
//! schedule's first tick strictly after the report's time. At the tick the members become one
//! [`DeliveryTask`] carrying them all, retried and dead-lettered like any delivery.
//!
//! Everything is deterministic from the inputs: the digest's id from (subscription, channel, tick),
//! its members' order from (time, member id), so a replay after a crash rebuilds the same digest.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::delivery::{DeliveryChannel, DeliveryTask};
use crate::report::{DistributionRouting, ReportDataInfo, ReportDistribution, ReportMetadata};
use crate::subscription::NotificationSettings;
use crate::Time;

/// Namespace of digest ids, distinct from the delivery ids' so that no digest can share an id
/// with a single delivery. Fixed forever.
const DIGEST_ID_NAMESPACE: Uuid = Uuid::from_u128(0x2b7e_94d0_61c3_4f8a_b5d2_93e0_1a6c_7f45);

/// The delivery id of the digest of `subscription_id` on `channel` at `tick` (a UUIDv5).
pub fn digest_id(subscription_id: &str, channel: DeliveryChannel, tick: Time) -> String {
    let name = format!("{subscription_id}\u{1f}{}\u{1f}{tick}", channel.as_str());
    Uuid::new_v5(&DIGEST_ID_NAMESPACE, name.as_bytes()).to_string()
}

/// What a digest's delivery records as its `report_id`: `digest:` and the tick in UTC, e.g.
/// `digest:2025-06-21T08:00:00Z`.
pub fn digest_label(tick: Time) -> String {
    format!("digest:{}", tick_datetime(tick).format("%Y-%m-%dT%H:%M:%SZ"))
}

pub fn tick_datetime(tick: Time) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(tick as i64).unwrap_or_default()
}

/// One report collected for a digest: written durably with the report's delivery set, and fed to
/// the dataflow again after a restart until its digest goes out.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DigestMember {
    pub digest_id: String,
    /// The id the report would have as a delivery of its own on this subscription and channel.
    /// One report is one member of a digest however often it is published; receivers can
    /// deduplicate members across digests on it.
    pub member_id: String,
    pub subscription_id: String,
    pub subscriber_id: String,
    pub channel: DeliveryChannel,
    /// The subscription's destinations when the report matched.
    pub settings: NotificationSettings,
    pub schedule: String,
    /// When the digest goes out (dataflow time).
    pub tick: Time,
    pub report: ReportDistribution,
    /// Dataflow time at which the report was accepted.
    pub accepted_at: Time,
    /// The subscription's content selection when the report matched: each report's file in the
    /// digest is personalised with it, as a report of its own would be. Absent in members stored
    /// before digests were personalised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Box<crate::content::ContentSpec>>,
}

/// The contents of a digest delivery.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest {
    pub schedule: String,
    pub tick: Time,
    /// In acceptance order.
    pub members: Vec<DigestEntry>,
}

/// One report in a digest.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DigestEntry {
    pub member_id: String,
    pub accepted_at: Time,
    pub report: ReportDistribution,
}

/// The delivery of one digest from its members (all of one digest id, at least one).
///
/// The task's `report` is a summary standing for the digest wherever one report is expected
/// (delivery history, dead letters, stats, dispatch order): its `event_id` is the digest id, its
/// `report_id` the [`digest_label`], its type the first member's, its `delivery_priority` the
/// highest of the members'. Destinations are the newest member's (the subscription as it last
/// matched). Latency is measured from the tick.
pub fn assemble(mut members: Vec<DigestMember>) -> Option<DeliveryTask> {
    members.sort_by(|a, b| (a.accepted_at, &a.member_id).cmp(&(b.accepted_at, &b.member_id)));
    members.dedup_by(|a, b| a.member_id == b.member_id);
    let first = members.first()?.clone();
    let newest = members.last()?.clone();
    let portfolio = if members.iter().all(|m| m.report.report_data.portfolio_id == first.report.report_data.portfolio_id) {
        first.report.report_data.portfolio_id.clone()
    } else {
        String::new()
    };
    let summary = ReportDistribution {
        event_id: first.digest_id.clone(),
        timestamp: tick_datetime(first.tick),
        data_type: first.report.data_type,
        report_data: ReportDataInfo {
            report_id: digest_label(first.tick),
            report_type: "DIGEST".to_string(),
            portfolio_id: portfolio,
            report_period: String::new(),
            file_path: String::new(),
            file_size_bytes: members.iter().map(|m| m.report.report_data.file_size_bytes.max(0)).sum(),
            content_facts: Default::default(),
        },
        routing: DistributionRouting::default(),
        metadata: ReportMetadata {
            source_service: "repdist-digest".to_string(),
            delivery_priority: members.iter().map(|m| m.report.metadata.delivery_priority).max().unwrap_or(0),
            encryption_required: members.iter().any(|m| m.report.metadata.encryption_required),
            retention_days: members.iter().map(|m| m.report.metadata.retention_days).max().unwrap_or(0),
        },
    };
    Some(DeliveryTask {
        delivery_id: first.digest_id.clone(),
        subscription_id: first.subscription_id.clone(),
        subscriber_id: first.subscriber_id.clone(),
        channel: first.channel,
        settings: newest.settings.clone(),
        report: summary,
        accepted_at: first.tick,
        attempt: 1,
        digest: Some(Box::new(Digest {
            schedule: newest.schedule.clone(),
            tick: first.tick,
            members: members
                .into_iter()
                .map(|m| DigestEntry { member_id: m.member_id, accepted_at: m.accepted_at, report: m.report })
                .collect(),
        })),
        content: newest.content.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ReportDataType;

    fn member(report_id: &str, accepted_at: Time, priority: i32) -> DigestMember {
        DigestMember {
            digest_id: digest_id("s", DeliveryChannel::ApiWebhook, 1_000),
            member_id: crate::delivery::delivery_id(report_id, "s", DeliveryChannel::ApiWebhook),
            subscription_id: "s".into(),
            subscriber_id: "c".into(),
            channel: DeliveryChannel::ApiWebhook,
            settings: NotificationSettings::default(),
            schedule: "* * * * * *".into(),
            tick: 1_000,
            content: None,
            report: ReportDistribution {
                event_id: format!("e-{report_id}"),
                timestamp: chrono::DateTime::from_timestamp(0, 0).unwrap(),
                data_type: ReportDataType::RiskReport,
                report_data: ReportDataInfo { report_id: report_id.into(), portfolio_id: "p".into(), ..Default::default() },
                routing: Default::default(),
                metadata: ReportMetadata { delivery_priority: priority, ..Default::default() },
            },
            accepted_at,
        }
    }

    #[test]
    fn ids_are_stable_and_distinct_per_subscription_channel_and_tick() {
        let id = digest_id("s", DeliveryChannel::Email, 1_000_000);
        assert_eq!(id, digest_id("s", DeliveryChannel::Email, 1_000_000));
        assert_ne!(id, digest_id("s", DeliveryChannel::Email, 2_000_000));
        assert_ne!(id, digest_id("s", DeliveryChannel::ApiWebhook, 1_000_000));
        assert_ne!(id, digest_id("t", DeliveryChannel::Email, 1_000_000));
        assert_eq!(digest_label(1_750_492_800_000_000), "digest:2025-06-21T08:00:00Z");
    }

    #[test]
    fn assembly_orders_deduplicates_and_summarises() {
        let task = assemble(vec![member("r2", 20, 1), member("r1", 10, 5), member("r2", 30, 1)]).unwrap();
        let digest = task.digest.as_ref().unwrap();
        let order: Vec<&str> = digest.members.iter().map(|m| m.report.report_data.report_id.as_str()).collect();
        assert_eq!(order, ["r1", "r2"], "acceptance order, one member per report");
        assert_eq!(task.delivery_id, digest_id("s", DeliveryChannel::ApiWebhook, 1_000));
        assert_eq!(task.report.event_id, task.delivery_id);
        assert_eq!((task.accepted_at, task.attempt, task.priority()), (1_000, 1, 5));
        assert_eq!(task.report.report_data.portfolio_id, "p");
        assert!(assemble(Vec::new()).is_none());
    }
}
