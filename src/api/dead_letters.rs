//! The dead-letter set: deliveries that cannot succeed, with the reason, and their replay.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorBody};
use super::body::Params;
use super::AppState;
use crate::auth::Principal;
use crate::store::DeadLetter;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeadLetterPage {
    pub items: Vec<DeadLetter>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ReplayAccepted {
    pub delivery_id: String,
    pub status: String,
}

#[utoipa::path(get, path = "/api/v1/reporting/dead-letters", tag = "dead letters", params(Page),
    responses((status = 200, body = DeadLetterPage), (status = 422, body = ErrorBody)))]
pub async fn list(State(app): State<AppState>, Params(page): Params<Page>) -> Result<Json<DeadLetterPage>, ApiError> {
    let limit = page.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let items = app.runtime.store().dead_letters(limit, page.after.as_deref()).await?;
    let next = if items.len() == limit as usize { items.last().map(|d| d.delivery_id.clone()) } else { None };
    Ok(Json(DeadLetterPage { items, next }))
}

#[utoipa::path(post, path = "/api/v1/reporting/dead-letters/{delivery_id}/replay", tag = "dead letters",
    params(("delivery_id" = String, Path)),
    responses((status = 202, description = "Back in the delivery set with a fresh round of attempts", body = ReplayAccepted),
              (status = 404, description = "Not a current dead letter", body = ErrorBody)))]
pub async fn replay(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(delivery_id): Path<String>,
) -> Result<(StatusCode, Json<ReplayAccepted>), ApiError> {
    let Some(mut task) = app.runtime.store().dead_letter_task(&delivery_id).await? else {
        return Err(ApiError::not_found("dead letter", &delivery_id));
    };
    task.attempt = 1;
    app.runtime.replay(task).await?;
    app.auth.auditor().done(&principal, "dead_letter.replay", &delivery_id).await;
    Ok((StatusCode::ACCEPTED, Json(ReplayAccepted { delivery_id, status: "PENDING".to_string() })))
}
