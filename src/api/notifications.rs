//! A subscriber's dashboard notifications (the DASHBOARD_NOTIFICATION channel's inbox).

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;

use super::error::{ApiError, ErrorBody};
use super::body::Params;
use super::AppState;
use crate::auth::http::ensure_owner;
use crate::auth::Principal;
use crate::store::Notification;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// At most this many, newest first (1 to 1000, default 100).
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/reporting/notifications/{subscriber_id}", tag = "notifications",
    params(("subscriber_id" = String, Path), Limit),
    responses((status = 200, body = [Notification]), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(subscriber_id): Path<String>,
    Params(query): Params<Limit>,
) -> Result<Json<Vec<Notification>>, ApiError> {
    ensure_owner(&principal, &subscriber_id, "subscriber", &subscriber_id)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    Ok(Json(app.runtime.store().notifications_of(&subscriber_id, limit).await?))
}
