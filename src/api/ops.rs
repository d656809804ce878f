//! Operations endpoints: health, Prometheus metrics, the OpenAPI document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;

use super::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when the core loop has stopped.
    pub status: &'static str,
    pub outstanding_deliveries: usize,
    pub dispatch_queue: usize,
    pub storage: &'static str,
    /// The read cache's backend and state; a `down` cache does not make the service unhealthy.
    pub cache: crate::cache::CacheHealth,
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn healthz(State(app): State<AppState>) -> impl IntoResponse {
    let healthy = app.runtime.is_healthy();
    let health = Health {
        status: if healthy { "ok" } else { "unavailable" },
        outstanding_deliveries: app.runtime.views().outstanding(),
        dispatch_queue: app.runtime.views().queued(),
        storage: "sqlite",
        cache: app.cache.health().await,
    };
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(health))
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let body = app.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

pub async fn openapi() -> impl IntoResponse {
    Json(super::openapi::document())
}
