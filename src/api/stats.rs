//! `distribution_stats` as the dataflow maintains them: the windows within its retention.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::AppState;
use crate::runtime::clock::to_datetime;

#[derive(Serialize, utoipa::ToSchema)]
pub struct StatsWindow {
    /// Start of the window.
    pub timestamp: chrono::DateTime<chrono::Utc>,
    pub window_end: chrono::DateTime<chrono::Utc>,
    pub report_type: String,
    pub channel: String,
    pub deliveries_attempted: u64,
    pub deliveries_successful: u64,
    pub deliveries_failed: u64,
    pub avg_delivery_time_ms: Option<f64>,
    pub p99_delivery_time_ms: Option<f64>,
}

#[utoipa::path(get, path = "/api/v1/reporting/stats", tag = "stats",
    responses((status = 200, description = "Current windows, oldest first", body = [StatsWindow])))]
pub async fn current(State(app): State<AppState>) -> Json<Vec<StatsWindow>> {
    let windows = windows(&app.runtime, app.stats_window_micros);
    publish_per_type(&app, &windows);
    Json(windows)
}

/// The windows the dataflow currently holds, oldest first; the gRPC API serves the same.
pub fn windows(runtime: &crate::runtime::Runtime, window: u64) -> Vec<StatsWindow> {
    runtime
        .views()
        .stats()
        .into_iter()
        .map(|(key, row)| StatsWindow {
            timestamp: to_datetime(key.window_start),
            window_end: to_datetime(key.window_start + window),
            report_type: key.report_type.as_str().to_string(),
            channel: key.channel.as_str().to_string(),
            deliveries_attempted: row.attempted,
            deliveries_successful: row.successful,
            deliveries_failed: row.failed,
            avg_delivery_time_ms: row.avg_delivery_time_us.map(|us| us as f64 / 1000.0),
            p99_delivery_time_ms: row.p99_delivery_time_us.map(|us| us as f64 / 1000.0),
        })
        .collect()
}

/// The spec's `dist_metrics:{report_type}` entry: one report type's totals over the windows above and
/// the windows themselves. The stats are served from memory, so the cache serves other readers of a
/// shared Redis, not this endpoint.
#[derive(Serialize)]
struct DistMetrics<'a> {
    report_type: &'a str,
    deliveries_attempted: u64,
    deliveries_successful: u64,
    deliveries_failed: u64,
    windows: Vec<&'a StatsWindow>,
}

/// Writes each report type's entry in the background, so the answer never waits for the cache.
fn publish_per_type(app: &AppState, windows: &[StatsWindow]) {
    let mut by_type: std::collections::BTreeMap<&str, DistMetrics> = std::collections::BTreeMap::new();
    for window in windows {
        let entry = by_type.entry(&window.report_type).or_insert_with(|| DistMetrics {
            report_type: &window.report_type,
            deliveries_attempted: 0,
            deliveries_successful: 0,
            deliveries_failed: 0,
            windows: Vec::new(),
        });
        entry.deliveries_attempted += window.deliveries_attempted;
        entry.deliveries_successful += window.deliveries_successful;
        entry.deliveries_failed += window.deliveries_failed;
        entry.windows.push(window);
    }
    let entries: Vec<(String, Vec<u8>)> = by_type
        .into_iter()
        .filter_map(|(report_type, metrics)| Some((crate::cache::keys::dist_metrics(report_type), serde_json::to_vec(&metrics).ok()?)))
        .collect();
    if entries.is_empty() {
        return;
    }
    let cache = app.cache.clone();
    tokio::spawn(async move {
        for (key, value) in entries {
            cache.set_snapshot(&key, &value, crate::cache::keys::DIST_METRICS_TTL).await;
        }
    });
}
