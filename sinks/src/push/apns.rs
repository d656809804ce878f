//! Apple Push Notification service, token-based
//! (<https://developer.apple.com/documentation/usernotifications/sending-notification-requests-to-apns>).
//!
//! APNs speaks only HTTP/2, so its client is HTTP/2-only: ALPN `h2` over TLS, prior knowledge (h2c)
//! on a plain `http://` base, which only a test server uses. Each request carries a provider token
//! (ES256 JWT, `kid` the key id, `iss` the team id, `iat`), which Apple accepts for an hour and
//! throttles if it changes more often than every 20 minutes: it is cached for 50 minutes.
//!
//! `apns-id` is the delivery's id (see [`apns_id`]), so every attempt of one delivery carries the
//! same id and the device can drop a duplicate.
//!
//! Errors (`{"reason": ...}`): `410 Unregistered`/`ExpiredToken` and `400 BadDeviceToken` /
//! `DeviceTokenNotForTopic` mean the token is dead; `403 ExpiredProviderToken` drops the cached
//! provider token and is transient; `429`, `500` and `503` are transient; other 4xx are permanent.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};

use super::config::{ApnsConfig, PushConfig, PushSetupError};
use super::tokens::{Issued, TokenCache};
use super::{dead_token, in_context, read_body, unix_now, Notification};
use crate::http_classify::{classify, transport_error};
use crate::{DeliveryRequest, SinkError};

/// How long a provider token is used: under Apple's one hour, over its 20-minute refresh floor.
const PROVIDER_TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);
/// APNs device tokens are hex; they have been 64 characters long, but Apple says not to rely on it.
const MAX_DEVICE_TOKEN_LEN: usize = 200;
const BODY_LIMIT: usize = 4 * 1024;

/// `apns-priority`: 10 delivers at once and may wake the device, 5 lets the system pick a moment
/// that saves power. Reports of priority 1 and above are urgent enough for 10.
pub fn apns_priority(priority: i32) -> u8 {
    if priority >= 1 {
        10
    } else {
        5
    }
}

/// The `apns-id` of a delivery: its id itself when that is already a UUID (lowercased, as Apple
/// writes them), else a UUID derived from it deterministically, so that every attempt of one
/// delivery carries the same `apns-id`. The derivation is FNV-1a (128-bit) of the id, stamped as a
/// version 8 ("custom") UUID: stable across processes and releases, which a std hasher is not.
pub fn apns_id(delivery_id: &str) -> String {
    if is_uuid(delivery_id) {
        return delivery_id.to_ascii_lowercase();
    }
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    let mut hash = OFFSET;
    for byte in b"repdist/apns-id/".iter().chain(delivery_id.as_bytes()) {
        hash ^= u128::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    // Version 8 in bits 48..52, variant 0b10 in bits 64..66 (RFC 9562).
    let hash = (hash & !(0xf << 76) & !(0x3 << 62)) | (0x8 << 76) | (0x2 << 62);
    let hex = format!("{hash:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

fn is_uuid(value: &str) -> bool {
    value.len() == 36
        && value.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[derive(Serialize)]
struct ProviderClaims<'a> {
    iss: &'a str,
    iat: u64,
}

pub(crate) struct Apns {
    client: reqwest::Client,
    team_id: String,
    key_id: String,
    key: EncodingKey,
    topic: String,
    api_base: String,
    tokens: TokenCache,
}

impl Apns {
    pub fn new(config: &ApnsConfig, push: &PushConfig) -> Result<Apns, PushSetupError> {
        let pem = match (&config.private_key, &config.private_key_path) {
            (Some(pem), _) => pem.clone(),
            (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| PushSetupError::InvalidConfig {
                key: "apns.private_key_path",
                reason: format!("cannot read {}: {e}", path.display()),
            })?,
            (None, None) => {
                return Err(PushSetupError::InvalidConfig { key: "apns.private_key", reason: "required".into() })
            }
        };
        let key_setting = if config.private_key.is_some() { "apns.private_key" } else { "apns.private_key_path" };
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|_| PushSetupError::InvalidConfig {
            key: key_setting,
            reason: "not a PEM P-256 private key (PKCS#8, as in Apple's .p8 file)".into(),
        })?;
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .connect_timeout(push.connect_timeout)
            .user_agent(push.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Apns {
            client,
            team_id: config.team_id.clone(),
            key_id: config.key_id.clone(),
            key,
            topic: config.topic.clone(),
            api_base: config.api_base.trim_end_matches('/').to_string(),
            // Lifetime is ours to choose, so nothing to subtract.
            tokens: TokenCache::new(Duration::ZERO),
        })
    }

    fn provider_token(&self) -> Result<Issued, SinkError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = ProviderClaims { iss: &self.team_id, iat: unix_now() };
        let value = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| SinkError::permanent(format!("cannot sign the APNs provider token: {e}")))?;
        Ok(Issued { value, lifetime: PROVIDER_TOKEN_LIFETIME })
    }

    pub async fn send(
        &self,
        device_token: &str,
        request: &DeliveryRequest,
        notification: &Notification,
    ) -> Result<String, SinkError> {
        // The token goes into the URL path: anything but hex is refused before it can reshape it.
        if device_token.is_empty()
            || device_token.len() > MAX_DEVICE_TOKEN_LEN
            || !device_token.chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err(dead_token("APNs device token is not a hex string"));
        }
        let provider_token = self.tokens.get(|| async { self.provider_token() }).await?;
        let id = apns_id(&request.idempotency_key);
        let body = json!({
            "aps": {"alert": {"title": notification.title, "body": notification.body}},
            "delivery_id": request.idempotency_key,
            "report_id": notification.summary.report_id,
        });
        let response = self
            .client
            .post(format!("{}/3/device/{device_token}", self.api_base))
            .timeout(request.timeout)
            .header("authorization", format!("bearer {provider_token}"))
            .header("apns-topic", &self.topic)
            .header("apns-push-type", "alert")
            .header("apns-priority", apns_priority(request.priority).to_string())
            .header("apns-id", &id)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| in_context("APNs", transport_error(e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let answer = read_body(response, BODY_LIMIT).await;
        if status.is_success() {
            let id = headers.get("apns-id").and_then(|v| v.to_str().ok()).unwrap_or(&id);
            return Ok(format!("HTTP {} apns-id {id}", status.as_u16()));
        }
        let reason = serde_json::from_slice::<Value>(&answer)
            .ok()
            .and_then(|v| v.get("reason").and_then(Value::as_str).map(String::from))
            .unwrap_or_default();
        let described = if reason.is_empty() {
            format!("APNs HTTP {}", status.as_u16())
        } else {
            format!("APNs HTTP {} {}", status.as_u16(), crate::chat::envelope::truncated(&reason, 64))
        };
        match (status, reason.as_str()) {
            (StatusCode::GONE, _) | (StatusCode::BAD_REQUEST, "BadDeviceToken" | "DeviceTokenNotForTopic") => {
                Err(dead_token(described))
            }
            (StatusCode::FORBIDDEN, "ExpiredProviderToken") => {
                self.tokens.invalidate(&provider_token).await;
                Err(SinkError::transient(format!("{described} (provider token renewed)")))
            }
            _ => match classify(status, &headers, b"") {
                Ok(()) => Ok(format!("HTTP {}", status.as_u16())),
                Err(SinkError::Transient { retry_after, .. }) => {
                    Err(SinkError::Transient { reason: described, retry_after })
                }
                Err(SinkError::Permanent { .. }) => Err(SinkError::permanent(described)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_mapping() {
        assert_eq!(apns_priority(-3), 5);
        assert_eq!(apns_priority(0), 5);
        assert_eq!(apns_priority(1), 10);
        assert_eq!(apns_priority(9), 10);
    }

    #[test]
    fn a_uuid_delivery_id_is_used_as_it_is() {
        assert_eq!(apns_id("0F9C2A1E-8B3D-4C5E-9F6A-7B8C9D0E1F2A"), "0f9c2a1e-8b3d-4c5e-9f6a-7b8c9d0e1f2a");
    }

    #[test]
    fn other_ids_give_a_stable_well_formed_uuid() {
        let id = apns_id("dlv_0f9c2a");
        assert!(is_uuid(&id), "{id}");
        assert_eq!(id, apns_id("dlv_0f9c2a"), "same delivery, same apns-id");
        assert_ne!(id, apns_id("dlv_0f9c2b"));
        assert_eq!(&id[14..15], "8", "version 8: {id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "RFC 9562 variant: {id}");
        // Pinned (computed independently) so that a change of derivation, which would break
        // deduplication across a deployment, is noticed.
        assert_eq!(id, "68705b5c-b73e-8f0d-806e-4b721e47a3b4");
        assert!(!is_uuid("0f9c2a1e-8b3d-4c5e-9f6a-7b8c9d0e1f2g"));
        assert!(!is_uuid("0f9c2a1e8b3d-4c5e-9f6a-7b8c9d0e1f2a-"));
    }
}
