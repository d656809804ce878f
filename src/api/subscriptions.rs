//! Subscription management: create, list, update, cancel. Every change becomes a subscription
//! version in the dataflow at the time the sequencer commits it: it applies to later reports only.


use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use dataflows::channel_settings::PushProvider;
use dataflows::delivery::DeliveryChannel;
use dataflows::subscription::{
    DeliveryPreferences, ReportSubscription, SubscriptionFilters, SubscriptionStatus, SubscriptionType,
};
use dataflows::report::ReportDataType;
use dataflows::validation::Validate;
use serde::Deserialize;

use super::body::JsonBody;
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::auth::http::ensure_owner;
use crate::auth::Principal;
use crate::store::StoredSubscription;

/// A subscription as a client sends it. `subscription_id` may be omitted on create: the server
/// assigns one. Omitted optional fields take the defaults shown in the schema.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    pub subscription_id: Option<String>,
    pub subscriber_id: String,
    /// Free text up to 50 bytes, e.g. `CLIENT`, `PORTFOLIO_MANAGER`. Default `USER`.
    pub subscriber_type: Option<String>,
    /// Default `REAL_TIME`.
    pub subscription_type: Option<SubscriptionType>,
    pub report_types: Vec<ReportDataType>,
    pub delivery_preferences: DeliveryPreferences,
    pub filters: Option<SubscriptionFilters>,
    /// Default `active`.
    pub status: Option<SubscriptionStatus>,
}

impl SubscriptionRequest {
    pub(crate) fn into_subscription(self, subscription_id: String) -> ReportSubscription {
        ReportSubscription {
            subscription_id,
            subscriber_id: self.subscriber_id,
            subscriber_type: self.subscriber_type.unwrap_or_else(|| "USER".to_string()),
            subscription_type: self.subscription_type.unwrap_or_default(),
            report_types: self.report_types,
            delivery_preferences: self.delivery_preferences,
            filters: self.filters.unwrap_or_default(),
            status: self.status.unwrap_or_default(),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/reporting/subscribe", tag = "subscriptions",
    request_body = SubscriptionRequest,
    responses((status = 201, description = "Created; applies to reports accepted from now on", body = StoredSubscription),
              (status = 409, description = "The subscription_id is taken", body = ErrorBody),
              (status = 422, description = "Invalid field", body = ErrorBody)))]
pub async fn subscribe(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(request): JsonBody<SubscriptionRequest>,
) -> Result<(StatusCode, Json<StoredSubscription>), ApiError> {
    let id = request.subscription_id.clone().unwrap_or_else(|| format!("sub_{}", uuid::Uuid::new_v4().simple()));
    let subscription = request.into_subscription(id);
    if !principal.owns(&subscription.subscriber_id) {
        let mut error = ApiError::new(StatusCode::FORBIDDEN, "forbidden", "subscriber_id: a subscriber key creates subscriptions for its own subscriber only");
        error.field = Some("subscriber_id".to_string());
        return Err(error);
    }
    check(&app, &subscription)?;
    if app.runtime.store().subscription(&subscription.subscription_id).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "subscription `{}` exists; update it with PUT /api/v1/reporting/subscriptions/{{subscription_id}}",
            subscription.subscription_id
        )));
    }
    let stored = apply(&app, subscription).await?;
    app.auth.auditor().done(&principal, "subscription.create", &stored.subscription.subscription_id).await;
    Ok((StatusCode::CREATED, Json(stored)))
}

#[utoipa::path(get, path = "/api/v1/reporting/subscriptions/{subscriber_id}", tag = "subscriptions",
    params(("subscriber_id" = String, Path)),
    responses((status = 200, description = "The subscriber's subscriptions, cancelled ones included", body = [StoredSubscription])))]
pub async fn list(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(subscriber_id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    ensure_owner(&principal, &subscriber_id, "subscriber", &subscriber_id)?;
    // Cached as the exact answer bytes (secrets already masked), under the spec's key.
    let key = crate::cache::keys::subscriptions(&subscriber_id);
    if let Some(body) = app.cache.get(&key).await {
        return Ok(json_bytes(body));
    }
    let epoch = app.cache.epoch();
    let subscriptions = app.runtime.store().subscriptions_of(&subscriber_id).await?;
    let subscriptions: Vec<StoredSubscription> = subscriptions.into_iter().map(redact).collect();
    let body = serde_json::to_vec(&subscriptions).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    app.cache.fill(&key, &body, crate::cache::keys::SUBSCRIPTIONS_TTL, epoch).await;
    Ok(json_bytes(body))
}

fn json_bytes(body: Vec<u8>) -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[utoipa::path(put, path = "/api/v1/reporting/subscriptions/{subscription_id}", tag = "subscriptions",
    params(("subscription_id" = String, Path)), request_body = SubscriptionRequest,
    responses((status = 200, description = "Updated; the new version applies to reports accepted from now on", body = StoredSubscription),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(subscription_id): Path<String>,
    JsonBody(request): JsonBody<SubscriptionRequest>,
) -> Result<Json<StoredSubscription>, ApiError> {
    if let Some(body_id) = &request.subscription_id {
        if body_id != &subscription_id {
            return Err(ApiError::invalid("subscription_id", "differs from the subscription id in the path"));
        }
    }
    let existing = app.runtime.store().subscription(&subscription_id).await?;
    let Some(existing) = existing else { return Err(ApiError::not_found("subscription", &subscription_id)) };
    ensure_owner(&principal, &existing.subscription.subscriber_id, "subscription", &subscription_id)?;
    let subscription = request.into_subscription(subscription_id);
    if subscription.subscriber_id != existing.subscription.subscriber_id {
        return Err(ApiError::invalid("subscriber_id", "a subscription cannot move to another subscriber"));
    }
    check(&app, &subscription)?;
    let stored = apply(&app, subscription).await?;
    app.auth.auditor().done(&principal, "subscription.update", &stored.subscription.subscription_id).await;
    Ok(Json(stored))
}

#[utoipa::path(delete, path = "/api/v1/reporting/subscriptions/{subscription_id}", tag = "subscriptions",
    params(("subscription_id" = String, Path)),
    responses((status = 200, description = "Cancelled: receives no report accepted from now on", body = StoredSubscription),
              (status = 404, body = ErrorBody)))]
pub async fn cancel(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(subscription_id): Path<String>,
) -> Result<Json<StoredSubscription>, ApiError> {
    let existing = app.runtime.store().subscription(&subscription_id).await?;
    let Some(existing) = existing else { return Err(ApiError::not_found("subscription", &subscription_id)) };
    ensure_owner(&principal, &existing.subscription.subscriber_id, "subscription", &subscription_id)?;
    if existing.subscription.status == SubscriptionStatus::Cancelled {
        return Ok(Json(redact(existing)));
    }
    let mut subscription = existing.subscription;
    subscription.status = SubscriptionStatus::Cancelled;
    let stored = apply(&app, subscription).await?;
    app.auth.auditor().done(&principal, "subscription.cancel", &subscription_id).await;
    Ok(Json(stored))
}

async fn apply(app: &AppState, subscription: ReportSubscription) -> Result<StoredSubscription, ApiError> {
    let id = subscription.subscription_id.clone();
    let subscriber_id = subscription.subscriber_id.clone();
    let changed = app.runtime.change_subscription(subscription).await;
    // Committed (or, on an error, possibly committed): the subscriber's cached list is stale now.
    app.cache.invalidate(&crate::cache::keys::subscriptions(&subscriber_id)).await;
    changed?;
    let stored = app.runtime.store().subscription(&id).await?;
    stored.map(redact).ok_or_else(|| ApiError::not_found("subscription", &id))
}

/// Validation beyond the types: domain rules, then what this server can serve.
fn check(app: &AppState, subscription: &ReportSubscription) -> Result<(), ApiError> {
    admissible(&app.runtime, app.allow_private_webhooks, subscription)
}

/// The checks every door applies to a subscription (REST, gRPC, the Kafka topic).
pub(crate) fn admissible(runtime: &crate::runtime::Runtime, allow_private_webhooks: bool, subscription: &ReportSubscription) -> Result<(), ApiError> {
    subscription.validate()?;
    let enabled = runtime.enabled_channels();
    for (i, channel) in subscription.delivery_preferences.channels.iter().enumerate() {
        if !enabled.contains(&channel.as_str()) {
            return Err(ApiError::invalid(
                format!("delivery_preferences.channels[{i}]"),
                format!("channel {} is not available on this server (available: {})", channel.as_str(), enabled.join(", ")),
            ));
        }
    }
    let prefs = &subscription.delivery_preferences;
    if let Some(encryption) = &prefs.notification_settings.encryption {
        encryption
            .age_recipient
            .parse::<sinks::encryption::Recipient>()
            .map_err(|e| ApiError::invalid(crate::runtime::render::ENCRYPTION_KEY_FIELD, e.to_string()))?;
    }
    if !allow_private_webhooks {
        // Every URL a subscriber chooses and the service then POSTs to: the webhook and the
        // ntfy / UnifiedPush topic (the sinks check the addresses dialled again at delivery time).
        let settings = &prefs.notification_settings;
        let mut targets: Vec<(&str, &str)> = Vec::new();
        if prefs.channels.contains(&DeliveryChannel::ApiWebhook) {
            if let Some(webhook) = &settings.webhook {
                targets.push(("delivery_preferences.notification_settings.webhook.url", &webhook.url));
            }
        }
        if prefs.channels.contains(&DeliveryChannel::MobilePush) {
            if let Some(push) = settings.mobile_push.as_ref().filter(|p| p.provider == PushProvider::Ntfy) {
                if let Some(url) = &push.topic_url {
                    targets.push(("delivery_preferences.notification_settings.mobile_push.topic_url", url));
                }
            }
        }
        if let Some((field, _)) = targets.into_iter().find(|(_, url)| targets_private_network(url)) {
            return Err(ApiError::invalid(
                field,
                "points at a loopback, private or link-local address, which this server does not deliver to",
            ));
        }
    }
    Ok(())
}

/// Whether a URL names a host on the local machine or a private network (a literal address, or
/// `localhost`), or no host at all. Names that resolve to such addresses are refused again at
/// delivery time, on the addresses actually dialled (`sinks::egress`).
fn targets_private_network(url: &str) -> bool {
    let has_host = reqwest::Url::parse(url).ok().is_some_and(|u| u.host_str().is_some());
    !has_host || sinks::egress::names_private_host(url)
}

/// What a read shows in place of a secret.
const MASK: &str = "********";

/// Secrets are write-only: reads show that one is set, never what it is. URLs that are credentials
/// (chat webhooks, ntfy topics) keep their scheme and host, so a subscriber can tell which is set.
pub(crate) fn redact(mut stored: StoredSubscription) -> StoredSubscription {
    let settings = &mut stored.subscription.delivery_preferences.notification_settings;
    if let Some(webhook) = settings.webhook.as_mut() {
        webhook.secret = "whsec_********".to_string();
    }
    if let Some(sftp) = settings.sftp.as_mut() {
        for secret in [&mut sftp.password, &mut sftp.private_key, &mut sftp.passphrase] {
            if let Some(value) = secret.as_mut() {
                *value = MASK.to_string();
            }
        }
    }
    if let Some(slack) = settings.slack.as_mut() {
        slack.webhook_url = masked_url(&slack.webhook_url);
    }
    if let Some(push) = settings.mobile_push.as_mut() {
        if let Some(token) = push.device_token.as_mut() {
            *token = MASK.to_string();
        }
        if let Some(url) = push.topic_url.as_mut() {
            *url = masked_url(url);
        }
        for dead in push.dead_tokens.iter_mut() {
            *dead = MASK.to_string();
        }
    }
    stored
}

/// `https://hooks.slack.com/services/T/B/secret` -> `https://hooks.slack.com/********`.
fn masked_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}/{MASK}", parsed.scheme()),
            (Some(host), None) => format!("{}://{host}/{MASK}", parsed.scheme()),
            _ => MASK.to_string(),
        },
        Err(_) => MASK.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{masked_url, targets_private_network};

    #[test]
    fn masked_urls_keep_only_scheme_and_host() {
        assert_eq!(masked_url("https://hooks.slack.com/services/T0/B0/secret"), "https://hooks.slack.com/********");
        assert_eq!(masked_url("http://127.0.0.1:8081/topic?auth=x"), "http://127.0.0.1:8081/********");
        assert_eq!(masked_url("not a url"), "********");
    }

    #[test]
    fn private_targets_are_recognised() {
        for url in ["http://127.0.0.1:9/x", "http://10.1.2.3/", "http://[::1]/", "http://localhost/", "http://169.254.169.254/", "http://[fd00::1]/", "not a url"] {
            assert!(targets_private_network(url), "{url}");
        }
        for url in ["https://example.com/hook", "https://93.184.216.34/"] {
            assert!(!targets_private_network(url), "{url}");
        }
    }
}
