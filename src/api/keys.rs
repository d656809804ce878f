//! API keys over REST (admins only): create (the key is in the answer, once), list, revoke.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;

use super::body::JsonBody;
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::auth::keys::{self, CreatedKey, KeyError};
use crate::auth::Principal;
use crate::store::{ApiKeyRecord, AuditEntry, Role};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    pub role: Role,
    /// Required for role `subscriber` (the subscriber the key acts for), refused for the others.
    pub subscriber_id: Option<String>,
}

impl From<KeyError> for ApiError {
    fn from(error: KeyError) -> ApiError {
        match error {
            KeyError::Store(e) => e.into(),
            other => ApiError::invalid("subscriber_id", other.to_string().trim_start_matches("subscriber_id: ").to_string()),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/reporting/keys", tag = "access control", request_body = KeyRequest,
   
    responses((status = 201, description = "Created; `key` is shown only in this answer", body = CreatedKey),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(request): JsonBody<KeyRequest>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let created = keys::create(app.runtime.store().as_ref(), request.role, request.subscriber_id).await?;
    let mut entry = AuditEntry::now(principal.actor, "keys.create", Some(created.record.key_id.clone()), "ok");
    entry.detail = Some(format!("role {}", created.record.role.as_str()));
    app.auth.auditor().record(entry).await;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/api/v1/reporting/keys", tag = "access control",
    responses((status = 200, description = "Every key (never the secret), revoked ones included", body = [ApiKeyRecord]),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(State(app): State<AppState>) -> Result<Json<Vec<ApiKeyRecord>>, ApiError> {
    Ok(Json(app.runtime.store().api_keys().await?))
}

#[utoipa::path(post, path = "/api/v1/reporting/keys/{key_id}/revoke", tag = "access control",
    params(("key_id" = String, Path)),
    responses((status = 200, description = "Revoked (at once, for every instance)", body = ApiKeyRecord),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(key_id): Path<String>,
) -> Result<Json<ApiKeyRecord>, ApiError> {
    let revoked = app.runtime.store().revoke_api_key(&key_id, chrono::Utc::now().timestamp_micros()).await?;
    let outcome = if revoked.is_some() { "ok" } else { "not_found" };
    app.auth.auditor().record(AuditEntry::now(principal.actor, "keys.revoke", Some(key_id.clone()), outcome)).await;
    revoked.map(Json).ok_or_else(|| ApiError::not_found("key", &key_id))
}
