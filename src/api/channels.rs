//! Server-side delivery channel configs (`delivery_channels`): the SMTP relay, SFTP hosts and push
//! credentials the channels use. Created, listed, enabled and disabled here; secrets in a config are
//! write-only (every answer masks them). An `EMAIL` row is an SMTP relay (see
//! `runtime::email_relay`): its config is checked when it is created, and creating, enabling or
//! disabling one switches the relay the next EMAIL attempt uses.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use dataflows::delivery::DeliveryChannel;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::body::JsonBody;
use super::endpoints::ChannelBreaker;
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::auth::Principal;
use crate::cache::keys;
use crate::store::{NewChannel, StoredChannel};

/// A channel config as a client sends it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelRequest {
    /// Unique, 1 to 100 characters of `A-Z a-z 0-9 _ - .` (it appears in URLs).
    pub channel_id: String,
    /// One of the spec's delivery channels, e.g. `EMAIL`, `SFTP`, `MOBILE_PUSH`.
    pub channel_type: DeliveryChannel,
    /// The channel's settings as a JSON object, e.g. `{"host": "smtp.example.com", "port": 587,
    /// "username": "mailer", "password": "..."}`.
    #[schema(value_type = Object)]
    pub channel_config: Map<String, Value>,
    /// Default `true`.
    pub enabled: Option<bool>,
}

fn check_channel_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 100 {
        return Err(ApiError::invalid("channel_id", "must be 1 to 100 characters"));
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        return Err(ApiError::invalid("channel_id", "may contain only A-Z, a-z, 0-9, `_`, `-` and `.`"));
    }
    Ok(())
}

/// PostgreSQL cannot store U+0000 in text or JSONB: refuse it up front, naming where it is.
fn check_no_nul(path: &str, value: &Value) -> Result<(), ApiError> {
    match value {
        Value::String(s) if s.contains('\0') => Err(ApiError::invalid(path, "must not contain U+0000")),
        Value::Array(items) => items.iter().enumerate().try_for_each(|(i, v)| check_no_nul(&format!("{path}[{i}]"), v)),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            if k.contains('\0') {
                return Err(ApiError::invalid(path, "keys must not contain U+0000"));
            }
            check_no_nul(&format!("{path}.{k}"), v)
        }),
        _ => Ok(()),
    }
}

#[utoipa::path(get, path = "/api/v1/reporting/channels", tag = "channels",
    responses((status = 200, description = "Every channel config by channel_id, secrets masked", body = [StoredChannel])))]
pub async fn list(State(app): State<AppState>) -> Result<Json<Vec<StoredChannel>>, ApiError> {
    let channels = app.runtime.store().channels().await?;
    Ok(Json(channels.into_iter().map(StoredChannel::redacted).collect()))
}

#[utoipa::path(post, path = "/api/v1/reporting/channels", tag = "channels", request_body = ChannelRequest,
    responses((status = 201, description = "Created (secrets masked in the answer)", body = StoredChannel),
              (status = 409, description = "The channel_id is taken", body = ErrorBody),
              (status = 422, description = "Invalid field", body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(request): JsonBody<ChannelRequest>,
) -> Result<(StatusCode, Json<StoredChannel>), ApiError> {
    check_channel_id(&request.channel_id)?;
    check_no_nul("channel_config", &Value::Object(request.channel_config.clone()))?;
    if request.channel_type == DeliveryChannel::Email {
        app.runtime.email_relay().check(&request.channel_config).map_err(|e| ApiError::invalid(e.field, e.reason))?;
    }
    let channel = NewChannel {
        channel_id: request.channel_id,
        channel_type: request.channel_type,
        channel_config: request.channel_config,
        enabled: request.enabled.unwrap_or(true),
    };
    match app.runtime.store().create_channel(&channel).await? {
        Some(stored) => {
            let stored = stored.redacted();
            reload_relay(&app, &stored).await;
            let status = ChannelStatus::changed(&app, &stored);
            app.cache.write_through_json(&keys::channel_status(&stored.channel_id), &status, keys::CHANNEL_STATUS_TTL).await;
            app.auth.auditor().done(&principal, "channel.create", &stored.channel_id).await;
            Ok((StatusCode::CREATED, Json(stored)))
        }
        None => Err(ApiError::conflict(format!("channel `{}` exists", channel.channel_id))),
    }
}

#[utoipa::path(get, path = "/api/v1/reporting/channels/{channel_id}", tag = "channels",
    params(("channel_id" = String, Path)),
    responses((status = 200, description = "The channel config, secrets masked, with the circuit breaker of the endpoint it describes", body = ChannelAnswer), (status = 404, body = ErrorBody)))]
pub async fn get(State(app): State<AppState>, Path(channel_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let key = keys::channel_status(&channel_id);
    if let Some(status) = app.cache.get_json::<ChannelStatus<Value>>(&key).await {
        return Ok(Json(status.answer()));
    }
    let epoch = app.cache.epoch();
    match app.runtime.store().channel(&channel_id).await? {
        Some(stored) => {
            let stored = stored.redacted();
            let breaker = super::endpoints::breaker_for(&app.runtime.endpoints().endpoints(), &stored);
            let status = ChannelStatus { channel: &stored, status_changed_at: None, breaker };
            if let Ok(bytes) = serde_json::to_vec(&status) {
                app.cache.fill(&key, &bytes, keys::CHANNEL_STATUS_TTL, epoch).await;
            }
            Ok(Json(status.answer()))
        }
        None => Err(ApiError::not_found("channel", &channel_id)),
    }
}

/// `GET /channels/{id}`'s answer, for the OpenAPI document.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ChannelAnswer {
    #[serde(flatten)]
    pub channel: StoredChannel,
    /// Null until a delivery has gone to the endpoint this channel describes.
    pub breaker: Option<ChannelBreaker>,
}

/// The spec's `channel_status:{channel_id}` entry: the channel as `GET` answers it (secrets masked,
/// `enabled` included), when this service last changed it, and the circuit breaker of the endpoint
/// the channel describes (rewritten whenever that breaker changes state).
#[derive(serde::Serialize, Deserialize)]
pub(crate) struct ChannelStatus<C> {
    #[serde(flatten)]
    pub channel: C,
    /// Null when the entry was filled from the database rather than written by a change.
    pub status_changed_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    pub breaker: Option<ChannelBreaker>,
}

impl<'a> ChannelStatus<&'a StoredChannel> {
    fn changed(app: &AppState, channel: &'a StoredChannel) -> Self {
        let breaker = super::endpoints::breaker_for(&app.runtime.endpoints().endpoints(), channel);
        ChannelStatus { channel, status_changed_at: Some(chrono::Utc::now()), breaker }
    }
}

impl<C: serde::Serialize> ChannelStatus<C> {
    /// The channel with its `breaker`.
    fn answer(&self) -> Value {
        let mut answer = serde_json::to_value(&self.channel).unwrap_or_default();
        if let Value::Object(fields) = &mut answer {
            fields.insert("breaker".into(), serde_json::to_value(&self.breaker).unwrap_or_default());
        }
        answer
    }
}

#[utoipa::path(post, path = "/api/v1/reporting/channels/{channel_id}/enable", tag = "channels",
    params(("channel_id" = String, Path)),
    responses((status = 200, body = StoredChannel), (status = 404, body = ErrorBody)))]
pub async fn enable(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(channel_id): Path<String>,
) -> Result<Json<StoredChannel>, ApiError> {
    set_enabled(&app, &principal, channel_id, true).await
}

#[utoipa::path(post, path = "/api/v1/reporting/channels/{channel_id}/disable", tag = "channels",
    params(("channel_id" = String, Path)),
    responses((status = 200, body = StoredChannel), (status = 404, body = ErrorBody)))]
pub async fn disable(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(channel_id): Path<String>,
) -> Result<Json<StoredChannel>, ApiError> {
    set_enabled(&app, &principal, channel_id, false).await
}

async fn set_enabled(app: &AppState, principal: &Principal, channel_id: String, enabled: bool) -> Result<Json<StoredChannel>, ApiError> {
    match app.runtime.store().set_channel_enabled(&channel_id, enabled).await? {
        Some(stored) => {
            let stored = stored.redacted();
            reload_relay(app, &stored).await;
            let status = ChannelStatus::changed(app, &stored);
            app.cache.write_through_json(&keys::channel_status(&channel_id), &status, keys::CHANNEL_STATUS_TTL).await;
            let action = if enabled { "channel.enable" } else { "channel.disable" };
            app.auth.auditor().done(principal, action, &channel_id).await;
            Ok(Json(stored))
        }
        None => Err(ApiError::not_found("channel", &channel_id)),
    }
}

/// After an EMAIL row changed: the relay is chosen again. A store that cannot be read keeps the
/// relay in use (logged); the change itself is stored and applies at the next change or start.
async fn reload_relay(app: &AppState, changed: &StoredChannel) {
    if changed.channel_type != DeliveryChannel::Email {
        return;
    }
    if let Err(error) = app.runtime.email_relay().reload(app.runtime.store().as_ref()).await {
        tracing::warn!(%error, channel_id = %changed.channel_id, "the EMAIL relay was not switched");
    }
}
