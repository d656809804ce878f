//! Delivery outcomes, once durable, into the analytics store.
//!
//! The sequencer calls [`Views`](super::views::Views) after each successful commit; the views hand
//! the batch here. Attempts are staged as they finish (their task is not in the batch) and shipped
//! with the next commit that succeeds, which is the commit that holds them: a failed commit keeps
//! its attempts for the next one, and so do the staged rows. Created deliveries and dead letters
//! come from the batch itself; `distribution_stats` windows are held until they close (a window
//! after its end plus one more window length) and then appended, and all held at shutdown.
//!
//! Nothing here waits: rows are offered to the writer's bounded queue and, if it is full, counted
//! as dropped and recorded as a gap (see `analytics::writer`). What reaches the analytics store
//! is at most what is durable in the service's store; rows shipped but not yet written when the
//! process dies are missing from analytics (the store of record is unaffected).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::analytics::rows::{AttemptRow, DeadLetterRow, DeliveryRow, ErrorKind, StatsWindowRow};
use crate::analytics::windows::OpenWindows;
use crate::analytics::{AnalyticsStore, Chunk};
use dataflows::delivery::{AttemptResult, DeliveryTask};
use dataflows::stats::{StatsKey, StatsRow};
use dataflows::Time;

use crate::store::WriteBatch;

pub struct AnalyticsFeed {
    store: Arc<AnalyticsStore>,
    staged: Mutex<Vec<AttemptRow>>,
    windows: Mutex<OpenWindows>,
    window: Time,
}

impl AnalyticsFeed {
    /// `window`: the stats window length (microseconds).
    pub fn new(store: Arc<AnalyticsStore>, window: Time) -> Self {
        AnalyticsFeed { store, staged: Mutex::default(), windows: Mutex::new(OpenWindows::new(window as i64)), window }
    }

    pub fn store(&self) -> &Arc<AnalyticsStore> {
        &self.store
    }

    /// An attempt that finished; it goes out with the commit that makes it durable.
    pub(super) fn stage_attempt(&self, task: &DeliveryTask, result: &AttemptResult, elapsed: Duration, now: Time) {
        let error = match result {
            AttemptResult::Delivered => None,
            AttemptResult::Transient { error, .. } => Some((ErrorKind::Transient, error.clone())),
            AttemptResult::Permanent { error } => Some((ErrorKind::Permanent, error.clone())),
        };
        let row = AttemptRow {
            delivery_id: task.delivery_id.clone(),
            report_id: task.report.report_data.report_id.clone(),
            report_type: task.report.data_type.as_str(),
            report_period: task.report.report_data.report_period.clone(),
            subscription_id: task.subscription_id.clone(),
            subscriber_id: task.subscriber_id.clone(),
            channel: task.channel.as_str(),
            attempt: task.attempt,
            error,
            accepted_at: task.accepted_at as i64,
            finished_at: now as i64,
            attempt_micros: elapsed.as_micros() as i64,
        };
        lock(&self.staged).push(row);
    }

    /// A batch is durable: ship what it holds.
    pub(super) fn committed(&self, batch: &WriteBatch) {
        let mut chunk = Chunk { attempts: std::mem::take(&mut *lock(&self.staged)), ..Chunk::default() };
        for expanded in &batch.expanded {
            chunk.deliveries.extend(expanded.deliveries.iter().map(delivery_row));
        }
        for dead in &batch.dead_letters {
            chunk.dead_letters.push(DeadLetterRow {
                delivery_id: dead.task.delivery_id.clone(),
                report_id: dead.task.report.report_data.report_id.clone(),
                report_type: dead.task.report.data_type.as_str(),
                subscription_id: dead.task.subscription_id.clone(),
                subscriber_id: dead.task.subscriber_id.clone(),
                channel: dead.task.channel.as_str(),
                attempts: dead.task.attempt,
                reason: dead.reason.clone(),
                accepted_at: dead.task.accepted_at as i64,
                dead_lettered_at: dead.at as i64,
            });
        }
        {
            let mut windows = lock(&self.windows);
            for (key, row) in &batch.stats {
                // `None` is the dataflow forgetting a window past its retention, long after it closed.
                if let Some(row) = row {
                    windows.update(stats_row(key, row, self.window));
                }
            }
            chunk.stats = windows.close_until(chrono::Utc::now().timestamp_micros());
        }
        self.store.ingest().offer(chunk);
    }

    /// At shutdown: ship the windows still open, then let the writer finish and close the file.
    pub fn close(&self) {
        let chunk = Chunk { stats: lock(&self.windows).close_all(), ..Chunk::default() };
        self.store.ingest().offer(chunk);
        self.store.close();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn delivery_row(task: &DeliveryTask) -> DeliveryRow {
    DeliveryRow {
        delivery_id: task.delivery_id.clone(),
        event_id: task.report.event_id.clone(),
        report_id: task.report.report_data.report_id.clone(),
        report_type: task.report.data_type.as_str(),
        report_period: task.report.report_data.report_period.clone(),
        portfolio_id: task.report.report_data.portfolio_id.clone(),
        subscription_id: task.subscription_id.clone(),
        subscriber_id: task.subscriber_id.clone(),
        channel: task.channel.as_str(),
        delivery_priority: task.report.metadata.delivery_priority,
        accepted_at: task.accepted_at as i64,
    }
}

fn stats_row(key: &StatsKey, row: &StatsRow, window: Time) -> StatsWindowRow {
    StatsWindowRow {
        window_start: key.window_start as i64,
        window_end: (key.window_start + window) as i64,
        report_type: key.report_type.as_str(),
        channel: key.channel.as_str(),
        attempted: row.attempted as i64,
        successful: row.successful as i64,
        failed: row.failed as i64,
        avg_delivery_time_ms: row.avg_delivery_time_us.map(|us| us as f64 / 1000.0),
        p99_delivery_time_ms: row.p99_delivery_time_us.map(|us| us as f64 / 1000.0),
    }
}
