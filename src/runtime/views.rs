//! Read-side views the API serves without touching the write path: the live stats windows as the
//! dataflow maintains them, and counters for health and metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dataflows::delivery::{AttemptResult, DeliveryTask};
use dataflows::stats::{StatsKey, StatsRow};
use dataflows::Time;

use super::analytics_feed::AnalyticsFeed;
use crate::store::WriteBatch;

#[derive(Default)]
pub struct Views {
    stats: RwLock<BTreeMap<StatsKey, StatsRow>>,
    outstanding: AtomicUsize,
    queued: AtomicUsize,
    /// Where durable outcomes go for analysis (absent when analytics is off or failed to open).
    analytics: Option<Arc<AnalyticsFeed>>,
}

impl Views {
    pub fn new(analytics: Option<Arc<AnalyticsFeed>>) -> Self {
        Views { analytics, ..Views::default() }
    }

    pub fn analytics(&self) -> Option<&Arc<AnalyticsFeed>> {
        self.analytics.as_ref()
    }

    /// The stats windows currently in the dataflow's view (within its retention), oldest first.
    pub fn stats(&self) -> Vec<(StatsKey, StatsRow)> {
        self.stats.read().map(|s| s.iter().map(|(k, v)| (*k, *v)).collect()).unwrap_or_default()
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub(super) fn update_stats(&self, key: StatsKey, row: Option<StatsRow>) {
        if let Ok(mut stats) = self.stats.write() {
            match row {
                Some(row) => stats.insert(key, row),
                None => stats.remove(&key),
            };
        }
    }

    pub(super) fn set_outstanding(&self, outstanding: usize, queued: usize) {
        self.outstanding.store(outstanding, Ordering::Relaxed);
        self.queued.store(queued, Ordering::Relaxed);
        metrics::gauge!("repdist_outstanding_deliveries").set(outstanding as f64);
        metrics::gauge!("repdist_dispatch_queue_length").set(queued as f64);
    }

    pub(super) fn record_commit(&self, batch: &WriteBatch) {
        metrics::counter!("repdist_reports_accepted_total").increment(batch.reports.len() as u64);
        metrics::counter!("repdist_subscription_changes_total").increment(batch.subscription_changes.len() as u64);
        metrics::counter!("repdist_retries_scheduled_total").increment(batch.retries.len() as u64);
        let deliveries: usize = batch.expanded.iter().map(|e| e.deliveries.len()).sum();
        metrics::counter!("repdist_deliveries_created_total").increment(deliveries as u64);
        if let Some(analytics) = &self.analytics {
            analytics.committed(batch);
        }
    }

    pub(super) fn record_attempt(&self, task: &DeliveryTask, result: &AttemptResult, elapsed: Duration, now: Time) {
        let outcome = match result {
            AttemptResult::Delivered => "delivered",
            AttemptResult::Transient { .. } => "transient",
            AttemptResult::Permanent { .. } => "permanent",
        };
        let channel = task.channel.as_str();
        metrics::counter!("repdist_attempts_total", "channel" => channel, "outcome" => outcome).increment(1);
        metrics::histogram!("repdist_attempt_duration_seconds", "channel" => channel).record(elapsed.as_secs_f64());
        if matches!(result, AttemptResult::Delivered) {
            let latency = now.saturating_sub(task.accepted_at) as f64 / 1e6;
            metrics::histogram!("repdist_delivery_latency_seconds", "channel" => channel).record(latency);
        }
        if let Some(analytics) = &self.analytics {
            analytics.stage_attempt(task, result, elapsed, now);
        }
    }
}
