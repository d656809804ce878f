//! The REST and WebSocket API (axum) under `/api/v1/reporting`, plus `/healthz`, `/metrics` and
//! `/api/v1/openapi.json`. Everything under `/api/v1/reporting` needs a credential (`crate::auth`);
//! health, metrics and the OpenAPI document stay open.

pub mod analytics;
pub mod audit;
pub mod body;
pub mod channels;
pub mod dead_letters;
pub mod deliveries;
pub mod endpoints;
pub mod error;
pub mod keys;
pub mod notifications;
pub mod openapi;
pub mod ops;
pub mod stats;
pub mod stream;
pub mod subscriptions;
pub mod templates;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::runtime::Runtime;

#[derive(Clone)]
pub struct AppState {
    pub runtime: Arc<Runtime>,
    pub metrics: PrometheusHandle,
    pub allow_private_webhooks: bool,
    pub stats_window_micros: u64,
    /// Read cache in front of the store; never required for an answer.
    pub cache: crate::cache::CacheClient,
    /// Limits of the analyses and whether operators' SQL is served.
    pub analytics: crate::config::AnalyticsConfig,
    /// Who is calling, and the audit trail.
    pub auth: Arc<crate::auth::Authenticator>,
}

pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let reporting = Router::new()
        .route("/subscribe", post(subscriptions::subscribe))
        .route("/subscriptions/{id}", get(subscriptions::list).put(subscriptions::update).delete(subscriptions::cancel))
        .route("/deliver", post(deliveries::deliver))
        .route("/delivery/{delivery_id}/status", get(deliveries::status))
        .route("/deliveries/summary", get(deliveries::summary))
        .route("/stats", get(stats::current))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/{delivery_id}/replay", post(dead_letters::replay))
        .route("/notifications/{subscriber_id}", get(notifications::list))
        .route("/stream", get(stream::stream))
        .route("/channels", get(channels::list).post(channels::create))
        .route("/channels/{channel_id}", get(channels::get))
        .route("/channels/{channel_id}/enable", post(channels::enable))
        .route("/channels/{channel_id}/disable", post(channels::disable))
        .route("/endpoints", get(endpoints::list))
        .route("/templates", get(templates::list))
        .route("/templates/{report_type}/{locale}", put(templates::put).delete(templates::delete))
        .route("/analytics", get(analytics::list))
        .route("/analytics/query", post(analytics::query))
        .route("/analytics/{name}", get(analytics::analysis))
        .route("/keys", get(keys::list).post(keys::create))
        .route("/keys/{key_id}/revoke", post(keys::revoke))
        .route("/audit", get(audit::list))
        // Every route above needs a credential (see `crate::auth`); unknown paths still answer 404.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::http::require));
    Router::new()
        .nest("/api/v1/reporting", reporting)
        .route("/api/v1/openapi.json", get(ops::openapi))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .fallback(|| async { error::ApiError::new(axum::http::StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}
