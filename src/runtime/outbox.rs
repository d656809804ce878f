//! What the service tells the rest of the platform, composed in the same transaction as the state
//! change it reports (a transactional outbox): a relay publishes the rows afterwards and deletes them
//! once the broker has them, so an event is never lost to a crash between commit and publish, and
//! never published for a change that did not commit.
//!
//! - `report_distributed` per report with at least one delivery (the spec's "Event Output" shape);
//! - each delivery's final outcome (the spec's `DeliveryStatus`), when it is delivered or
//!   dead-lettered;
//! - subscription changes made over the API, so every instance's dataflow sees them.

use chrono::{DateTime, Utc};
use dataflows::delivery::{DeliveryState, DeliveryTask};
use dataflows::subscription::ReportSubscription;
use serde::Serialize;

use crate::store::{OutboxMessage, OutboxTopic};

/// Namespace of the ids of `report_distributed` events: one event id per report event, so a
/// republished event carries the same id and consumers can deduplicate on it.
const DISTRIBUTED_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6f1c_2a47_93d4_4c1b_a7e3_5b0f_d2c8_1e94);

#[derive(Serialize)]
struct ReportDistributed<'a> {
    event_id: String,
    timestamp: DateTime<Utc>,
    distribution: DistributionInfo<'a>,
    report_data: &'a dataflows::report::ReportDataInfo,
    metadata: &'a dataflows::report::ReportMetadata,
}

#[derive(Serialize)]
struct DistributionInfo<'a> {
    topic: &'a str,
    routing_key: &'a str,
    target_subscribers: Vec<&'a str>,
    delivery_channels: Vec<&'static str>,
}

/// The `report_distributed` event of a report whose delivery set is `deliveries` (all of one report).
/// `None` when nothing was distributed. Subscribers and channels are those actually matched, sorted.
pub fn report_distributed(deliveries: &[DeliveryTask], at: DateTime<Utc>) -> Option<OutboxMessage> {
    let report = &deliveries.first()?.report;
    let mut subscribers: Vec<&str> = deliveries.iter().map(|t| t.subscriber_id.as_str()).collect();
    subscribers.sort_unstable();
    subscribers.dedup();
    let mut channels: Vec<&'static str> = deliveries.iter().map(|t| t.channel.as_str()).collect();
    channels.sort_unstable();
    channels.dedup();
    let event = ReportDistributed {
        event_id: uuid::Uuid::new_v5(&DISTRIBUTED_NAMESPACE, report.event_id.as_bytes()).to_string(),
        timestamp: at,
        distribution: DistributionInfo {
            topic: &report.routing.topic,
            routing_key: &report.routing.routing_key,
            target_subscribers: subscribers,
            delivery_channels: channels,
        },
        report_data: &report.report_data,
        metadata: &report.metadata,
    };
    Some(OutboxMessage {
        topic: OutboxTopic::Distributed,
        key: report.report_data.portfolio_id.clone(),
        payload: serde_json::to_string(&event).ok(),
    })
}

#[derive(Serialize)]
struct DeliveryStatusEvent<'a> {
    delivery_id: &'a str,
    subscription_id: &'a str,
    report_id: &'a str,
    channel: &'static str,
    status: &'static str,
    delivery_time: DateTime<Utc>,
    retry_count: u32,
    error_details: Option<&'a str>,
}

/// A delivery's final outcome. `retry_count` is attempts beyond the first.
pub fn delivery_status(task: &DeliveryTask, state: DeliveryState, error: Option<&str>, at: DateTime<Utc>) -> OutboxMessage {
    let event = DeliveryStatusEvent {
        delivery_id: &task.delivery_id,
        subscription_id: &task.subscription_id,
        report_id: &task.report.report_data.report_id,
        channel: task.channel.as_str(),
        status: state.as_str(),
        delivery_time: at,
        retry_count: task.attempt.saturating_sub(1),
        error_details: error,
    };
    OutboxMessage {
        topic: OutboxTopic::DeliveryStatus,
        key: task.report.report_data.portfolio_id.clone(),
        payload: serde_json::to_string(&event).ok(),
    }
}

/// A subscription version for the compacted topic, keyed by its id.
pub fn subscription_change(subscription: &ReportSubscription) -> OutboxMessage {
    OutboxMessage {
        topic: OutboxTopic::Subscriptions,
        key: subscription.subscription_id.clone(),
        payload: serde_json::to_string(subscription).ok(),
    }
}
