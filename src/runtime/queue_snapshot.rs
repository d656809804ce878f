//! The spec's `delivery_queue:{priority}` cache entries: what is waiting to be attempted, by
//! delivery priority, for operators and other instances to look at without asking this one.
//!
//! The queue itself is not in the cache: it lives in the dispatcher (and durably in the store's
//! `pending_deliveries`), so a lost or stale entry loses nothing. Each entry is a snapshot taken
//! every [`EVERY`]: how many tasks wait at that priority and the [`OLDEST`] that have waited
//! longest, as summaries (a task's destination holds the subscriber's secrets, which never go to
//! the cache). A priority whose queue emptied is written once more as empty, then left to expire.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dataflows::delivery::DeliveryTask;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::clock::to_datetime;
use super::dispatcher::DispatchQueue;
use crate::cache::{keys, CacheClient};

/// How often the snapshot is taken (only while something waits, or just stopped waiting).
pub const EVERY: Duration = Duration::from_secs(2);
/// Tasks listed per priority; `waiting` counts them all.
pub const OLDEST: usize = 100;

/// One `delivery_queue:{priority}` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    pub priority: i32,
    pub waiting: usize,
    pub taken_at: DateTime<Utc>,
    /// The longest-waiting tasks first, at most [`OLDEST`].
    pub tasks: Vec<QueuedTask>,
}

/// A waiting task without its destination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueuedTask {
    pub delivery_id: String,
    pub subscription_id: String,
    pub subscriber_id: String,
    pub channel: String,
    pub report_id: String,
    pub attempt: u32,
    pub accepted_at: DateTime<Utc>,
}

impl From<&DeliveryTask> for QueuedTask {
    fn from(task: &DeliveryTask) -> Self {
        QueuedTask {
            delivery_id: task.delivery_id.clone(),
            subscription_id: task.subscription_id.clone(),
            subscriber_id: task.subscriber_id.clone(),
            channel: task.channel.as_str().to_string(),
            report_id: task.report.report_data.report_id.clone(),
            attempt: task.attempt,
            accepted_at: to_datetime(task.accepted_at),
        }
    }
}

/// Writes the snapshots until `stop`.
pub fn publish(queue: Arc<DispatchQueue>, cache: CacheClient, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut written: BTreeSet<i32> = BTreeSet::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let snapshot = queue.waiting_by_priority(OLDEST);
            let taken_at = Utc::now();
            let emptied: Vec<i32> = written.iter().filter(|p| !snapshot.contains_key(p)).copied().collect();
            for priority in emptied {
                let entry = QueueSnapshot { priority, waiting: 0, taken_at, tasks: Vec::new() };
                cache.write_through_json(&keys::delivery_queue(priority), &entry, keys::DELIVERY_QUEUE_TTL).await;
                written.remove(&priority);
            }
            for (priority, (waiting, tasks)) in snapshot {
                let tasks = tasks.iter().map(QueuedTask::from).collect();
                let entry = QueueSnapshot { priority, waiting, taken_at, tasks };
                cache.write_through_json(&keys::delivery_queue(priority), &entry, keys::DELIVERY_QUEUE_TTL).await;
                written.insert(priority);
            }
        }
    })
}
