//! The audit trail, for admins: who did what to which ids, when, and how it ended.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::body::Params;
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::store::{AuditQuery, AuditRecord};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Only rows of this actor: `key:<key_id>`, `jwt:<sub>`, `anonymous`, `system`.
    pub actor: Option<String>,
    /// Only this action, e.g. `subscription.create`, `delivery.attempt`, `request.denied`.
    pub action: Option<String>,
    /// Rows at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Rows before this RFC 3339 time.
    pub until: Option<String>,
    /// At most this many, oldest first (1 to 1000, default 100).
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    pub after: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditRecord>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<i64>,
}

fn time(field: &str, text: Option<&str>) -> Result<Option<i64>, ApiError> {
    text.map(|text| {
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_micros())
            .map_err(|e| ApiError::invalid(field, format!("not an RFC 3339 time: {e}")))
    })
    .transpose()
}

#[utoipa::path(get, path = "/api/v1/reporting/audit", tag = "access control", params(AuditParams),
    responses((status = 200, body = AuditPage), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn list(State(app): State<AppState>, Params(params): Params<AuditParams>) -> Result<Json<AuditPage>, ApiError> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    for (field, value) in [("actor", &params.actor), ("action", &params.action)] {
        if value.as_deref().is_some_and(|v| v.contains('\0')) {
            return Err(ApiError::invalid(field, "must not contain U+0000"));
        }
    }
    let query = AuditQuery {
        actor: params.actor,
        action: params.action,
        since: time("since", params.since.as_deref())?,
        until: time("until", params.until.as_deref())?,
        after: params.after,
        limit,
    };
    let items = app.runtime.store().audit(&query).await?;
    let next = if items.len() == limit as usize { items.last().map(|r| r.seq) } else { None };
    Ok(Json(AuditPage { items, next }))
}
