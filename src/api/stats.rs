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
    Json(windows(&app.runtime, app.stats_window_micros))
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
