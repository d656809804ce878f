//! `ReportUpdate`s: what a durable batch means to the subscribers it concerns. A report that matched
//! a subscription is one update for that subscription (with the deliveries it created there); each
//! delivery state change (delivered, retry scheduled, dead-lettered, replayed) is one more. Built
//! from the batch the sequencer has just committed, so nothing is announced before it is durable.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use dataflows::delivery::{AttemptResult, DeliveryChannel, DeliveryOutcome, DeliveryState, DeliveryTask};
use dataflows::report::ReportDataType;
use dataflows::Time;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::runtime::clock::{to_datetime, wall_micros};
use crate::store::WriteBatch;

/// One change, for one subscription, not yet numbered.
#[derive(Clone, Debug)]
pub struct Update {
    pub subscription_id: Arc<str>,
    pub subscriber_id: String,
    pub event_id: String,
    pub report_id: String,
    pub report_type: ReportDataType,
    /// When it happened (dataflow time, microseconds since the Unix epoch).
    pub at: Time,
    pub change: Change,
}

#[derive(Clone, Debug)]
pub enum Change {
    /// The report matched the subscription and these deliveries were created for it.
    Report { deliveries: Vec<(String, DeliveryChannel)>, report: Arc<RawValue> },
    /// One of the subscription's deliveries changed state.
    Delivery {
        delivery_id: String,
        channel: DeliveryChannel,
        status: DeliveryState,
        /// Attempts made so far in this round (0 for a dead letter taken back for replay).
        attempt: u32,
        error: Option<String>,
        /// When the next attempt is due (RETRYING only).
        next_attempt_at: Option<Time>,
    },
}

impl Update {
    fn of(task: &DeliveryTask, at: Time, change: Change) -> Update {
        Update {
            subscription_id: Arc::from(task.subscription_id.as_str()),
            subscriber_id: task.subscriber_id.clone(),
            event_id: task.report.event_id.clone(),
            report_id: task.report.report_data.report_id.clone(),
            report_type: task.report.data_type,
            at,
            change,
        }
    }

    fn delivery(task: &DeliveryTask, at: Time, status: DeliveryState, attempt: u32, error: Option<&str>, next: Option<Time>) -> Update {
        let change = Change::Delivery {
            delivery_id: task.delivery_id.clone(),
            channel: task.channel,
            status,
            attempt,
            error: error.map(str::to_string),
            next_attempt_at: next,
        };
        Update::of(task, at, change)
    }

    /// The update as the WebSocket sends it, numbered `seq`: serialized once, shared by every client.
    pub fn to_text(&self, seq: u64, epoch: u64) -> Utf8Bytes {
        let head = Head {
            seq,
            epoch,
            at: to_datetime(self.at),
            subscription_id: &self.subscription_id,
            subscriber_id: &self.subscriber_id,
            event_id: &self.event_id,
            report_id: &self.report_id,
            report_type: self.report_type.as_str(),
        };
        let text = match &self.change {
            Change::Report { deliveries, report } => serde_json::to_string(&ReportWire {
                kind: "report",
                head,
                deliveries: deliveries.iter().map(|(id, channel)| DeliveryRef { delivery_id: id, channel: channel.as_str() }).collect(),
                report,
            }),
            Change::Delivery { delivery_id, channel, status, attempt, error, next_attempt_at } => serde_json::to_string(&DeliveryWire {
                kind: "delivery",
                head,
                delivery_id,
                channel: channel.as_str(),
                status: status.as_str(),
                attempt: *attempt,
                error: error.as_deref(),
                next_attempt_at: next_attempt_at.map(to_datetime),
            }),
        };
        // Plain structs of strings and numbers: serialization cannot fail.
        Utf8Bytes::from(text.unwrap_or_default())
    }
}

#[derive(Serialize)]
struct Head<'a> {
    seq: u64,
    epoch: u64,
    at: chrono::DateTime<chrono::Utc>,
    subscription_id: &'a str,
    subscriber_id: &'a str,
    event_id: &'a str,
    report_id: &'a str,
    report_type: &'static str,
}

#[derive(Serialize)]
struct DeliveryRef<'a> {
    delivery_id: &'a str,
    channel: &'static str,
}

#[derive(Serialize)]
struct ReportWire<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    head: Head<'a>,
    deliveries: Vec<DeliveryRef<'a>>,
    report: &'a RawValue,
}

#[derive(Serialize)]
struct DeliveryWire<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    head: Head<'a>,
    delivery_id: &'a str,
    channel: &'static str,
    status: &'static str,
    attempt: u32,
    error: Option<&'a str>,
    next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The updates of a committed batch, in the order they happened: reports' delivery sets first
/// (an attempt that finished early is committed with its report's expansion), then finished
/// attempts, scheduled retries, dead letters and replays. A failed attempt is not an update of its
/// own: the dataflow's decision (retry or dead letter) follows in a later batch and is.
pub fn from_commit(batch: &WriteBatch, outcomes: &[DeliveryOutcome]) -> Vec<Update> {
    let mut updates: Vec<Update> = Vec::new();
    for expanded in &batch.expanded {
        let Some(first) = expanded.deliveries.first() else { continue };
        // One report JSON per report, shared by all its subscriptions' updates.
        let Ok(report) = serde_json::value::to_raw_value(&first.report) else { continue };
        let report: Arc<RawValue> = Arc::from(report);
        let mut by_subscription: HashMap<&str, usize> = HashMap::new();
        let start = updates.len();
        for task in &expanded.deliveries {
            match by_subscription.get(task.subscription_id.as_str()) {
                Some(&i) => {
                    if let Change::Report { deliveries, .. } = &mut updates[i].change {
                        deliveries.push((task.delivery_id.clone(), task.channel));
                    }
                }
                None => {
                    by_subscription.insert(&task.subscription_id, updates.len());
                    let change = Change::Report { deliveries: vec![(task.delivery_id.clone(), task.channel)], report: report.clone() };
                    updates.push(Update::of(task, task.accepted_at, change));
                }
            }
        }
        debug_assert!(updates.len() > start);
    }
    for outcome in outcomes {
        if outcome.result == AttemptResult::Delivered {
            let task = &outcome.task;
            updates.push(Update::delivery(task, outcome.finished_at, DeliveryState::Delivered, task.attempt, None, None));
        }
    }
    if !batch.retries.is_empty() {
        let now = wall_micros();
        for retry in &batch.retries {
            let task = &retry.task;
            // `task.attempt` is the attempt that will run at `due`; the one before it failed.
            let failed = task.attempt.saturating_sub(1);
            updates.push(Update::delivery(task, now, DeliveryState::Retrying, failed, Some(&retry.error), Some(retry.due)));
        }
    }
    for dead in &batch.dead_letters {
        let task = &dead.task;
        updates.push(Update::delivery(task, dead.at, DeliveryState::DeadLettered, task.attempt, Some(&dead.reason), None));
    }
    for replay in &batch.replays {
        updates.push(Update::delivery(&replay.task, replay.at, DeliveryState::Pending, 0, None, None));
    }
    updates
}
