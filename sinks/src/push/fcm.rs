//! Firebase Cloud Messaging HTTP v1 (<https://firebase.google.com/docs/cloud-messaging/send/v1-api>).
//!
//! Authentication is OAuth 2 with a service account: a JWT assertion (RS256, `iss` the account's
//! e-mail, `scope` firebase.messaging, `aud` the token URI, valid one hour) is exchanged at the token
//! URI for an access token, which is cached (see `tokens`) and sent as `Authorization: Bearer`.
//!
//! FCM has no idempotency key; the delivery id travels in `data.delivery_id` so that the app can
//! drop a notification it already showed.
//!
//! Errors (<https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode>): `UNREGISTERED`,
//! `SENDER_ID_MISMATCH` and an `INVALID_ARGUMENT` about `message.token` mean the token is dead;
//! `QUOTA_EXCEEDED` (429), `UNAVAILABLE` (503) and `INTERNAL` (500) are transient and honour
//! `Retry-After`; a plain 401 means our access token was refused, so it is dropped and the attempt is
//! transient (the next one fetches a new token); `THIRD_PARTY_AUTH_ERROR` (the Firebase project's
//! APNs or web push credentials) is permanent.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::config::{FcmConfig, PushSetupError, DEFAULT_TOKEN_URI};
use super::tokens::{Issued, TokenCache};
use super::{dead_token, in_context, read_body, unix_now, Notification};
use crate::http_classify::{classify, transport_error};
use crate::{DeliveryRequest, SinkError};

pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Lifetime of the signed assertion (Google accepts at most one hour).
const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// An access token is replaced this long before it expires.
const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// Enough for FCM's error documents and a token response; anything longer is not read.
const BODY_LIMIT: usize = 16 * 1024;

/// `android.priority`: `HIGH` wakes the device at once and is meant for messages the user should
/// see now, so only reports of priority 1 and above get it.
pub fn android_priority(priority: i32) -> &'static str {
    if priority >= 1 {
        "HIGH"
    } else {
        "NORMAL"
    }
}

/// The fields of Google's service account JSON file that are used.
#[derive(Deserialize)]
struct ServiceAccountFile {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

pub(crate) struct Fcm {
    client: reqwest::Client,
    client_email: String,
    key_id: Option<String>,
    key: EncodingKey,
    token_uri: String,
    send_url: String,
    tokens: TokenCache,
}

fn load_service_account(path: &Path) -> Result<ServiceAccountFile, PushSetupError> {
    let key = "fcm.service_account_json_path";
    let text = std::fs::read_to_string(path)
        .map_err(|e| PushSetupError::InvalidConfig { key, reason: format!("cannot read {}: {e}", path.display()) })?;
    // serde_json's message names the line and column, never the content, so it is safe to show.
    serde_json::from_str(&text).map_err(|e| PushSetupError::InvalidConfig {
        key,
        reason: format!("{} is not a service account file: {e}", path.display()),
    })
}

impl Fcm {
    pub fn new(config: &FcmConfig, client: reqwest::Client) -> Result<Fcm, PushSetupError> {
        let (file, key_setting) = match &config.service_account_json_path {
            Some(path) => (Some(load_service_account(path)?), "fcm.service_account_json_path"),
            None => (None, "fcm.private_key"),
        };
        let client_email = file.as_ref().map(|f| f.client_email.clone()).or(config.client_email.clone());
        let private_key = file.as_ref().map(|f| f.private_key.clone()).or(config.private_key.clone());
        let (Some(client_email), Some(private_key)) = (client_email, private_key) else {
            return Err(PushSetupError::InvalidConfig {
                key: key_setting,
                reason: "no service account credentials".into(),
            });
        };
        let key = EncodingKey::from_rsa_pem(private_key.as_bytes()).map_err(|_| PushSetupError::InvalidConfig {
            key: key_setting,
            reason: "the private key is not a PEM RSA private key".into(),
        })?;
        let project_id = config
            .project_id
            .clone()
            .or(file.as_ref().and_then(|f| f.project_id.clone()))
            .filter(|p| !p.is_empty())
            .ok_or_else(|| PushSetupError::InvalidConfig {
                key: "fcm.project_id",
                reason: "required: neither the config nor the service account file names the project".into(),
            })?;
        let token_uri = config
            .token_uri
            .clone()
            .or(file.as_ref().and_then(|f| f.token_uri.clone()))
            .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string());
        let send_url = format!("{}/v1/projects/{project_id}/messages:send", config.api_base.trim_end_matches('/'));
        Ok(Fcm {
            client,
            client_email,
            key_id: file.and_then(|f| f.private_key_id),
            key,
            token_uri,
            send_url,
            tokens: TokenCache::new(REFRESH_BEFORE),
        })
    }

    pub async fn send(
        &self,
        device_token: &str,
        request: &DeliveryRequest,
        notification: &Notification,
    ) -> Result<String, SinkError> {
        if device_token.trim().is_empty() {
            return Err(dead_token("FCM registration token is empty"));
        }
        let access_token = self.tokens.get(|| self.issue(request)).await?;
        let body = message(device_token, request, notification);
        let response = self
            .client
            .post(&self.send_url)
            .timeout(request.timeout)
            .bearer_auth(&*access_token)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| in_context("FCM", transport_error(e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let answer = read_body(response, BODY_LIMIT).await;
        match classify_send(status, &headers, &answer) {
            Ok(()) => {
                let name = serde_json::from_slice::<Value>(&answer)
                    .ok()
                    .and_then(|v| v.get("name").and_then(Value::as_str).map(String::from));
                Ok(match name {
                    Some(name) => format!("HTTP {} {name}", status.as_u16()),
                    None => format!("HTTP {}", status.as_u16()),
                })
            }
            Err(Failure::Unauthenticated(error)) => {
                self.tokens.invalidate(&access_token).await;
                Err(error)
            }
            Err(Failure::Other(error)) => Err(error),
        }
        .map_err(|error| without(error, device_token))
    }

    /// Signs an assertion and exchanges it for an access token.
    async fn issue(&self, request: &DeliveryRequest) -> Result<Issued, SinkError> {
        let iat = unix_now();
        let claims = AssertionClaims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat,
            exp: iat + ASSERTION_LIFETIME_SECS,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.key_id.clone();
        let assertion = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| SinkError::permanent(format!("cannot sign the FCM assertion: {e}")))?;
        let response = self
            .client
            .post(&self.token_uri)
            .timeout(request.timeout)
            .form(&[("grant_type", GRANT_TYPE), ("assertion", assertion.as_str())])
            .send()
            .await
            .map_err(|e| in_context("FCM token exchange", transport_error(e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let answer = read_body(response, BODY_LIMIT).await;
        classify(status, &headers, &answer).map_err(|e| in_context("FCM token exchange", e))?;
        let token: TokenResponse = serde_json::from_slice(&answer)
            .map_err(|_| SinkError::transient("FCM token exchange: the answer has no access_token"))?;
        if token.access_token.is_empty() {
            return Err(SinkError::transient("FCM token exchange: the answer has an empty access_token"));
        }
        Ok(Issued { value: token.access_token, lifetime: Duration::from_secs(token.expires_in.unwrap_or(3600)) })
    }
}

/// The `messages:send` body. `data` values must all be strings.
fn message(device_token: &str, request: &DeliveryRequest, notification: &Notification) -> Value {
    let summary = &notification.summary;
    json!({"message": {
        "token": device_token,
        "notification": {"title": notification.title, "body": notification.body},
        "data": {
            "type": "report.distributed",
            "delivery_id": request.idempotency_key,
            "subscription_id": summary.subscription_id,
            "report_id": summary.report_id,
            "report_type": summary.report_type,
            "portfolio_id": summary.portfolio_id,
            "report_period": summary.report_period,
        },
        "android": {"priority": android_priority(request.priority)},
    }})
}

enum Failure {
    /// Our access token was refused: drop it, and let a later attempt fetch a new one.
    Unauthenticated(SinkError),
    Other(SinkError),
}

/// What FCM's error document says: `{"error": {"code", "message", "status", "details": [...]}}`.
struct FcmError {
    status: String,
    message: String,
    error_code: Option<String>,
    token_violation: bool,
}

fn parse_error(body: &[u8]) -> Option<FcmError> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let details = error.get("details").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let error_code = details.iter().find_map(|d| d.get("errorCode").and_then(Value::as_str)).map(String::from);
    let token_violation = details
        .iter()
        .filter_map(|d| d.get("fieldViolations").and_then(Value::as_array))
        .flatten()
        .any(|v| v.get("field").and_then(Value::as_str) == Some("message.token"));
    Some(FcmError {
        status: text(error.get("status")),
        message: text(error.get("message")),
        error_code,
        token_violation,
    })
}

fn classify_send(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<(), Failure> {
    if status.is_success() {
        return Ok(());
    }
    let parsed = parse_error(body);
    let code = parsed.as_ref().and_then(|e| e.error_code.clone().or(Some(e.status.clone()).filter(|s| !s.is_empty())));
    let message = parsed.as_ref().map(|e| crate::chat::envelope::truncated(&e.message, 200)).unwrap_or_default();
    let reason = match (&code, message.is_empty()) {
        (Some(code), false) => format!("FCM HTTP {} {code}: {message}", status.as_u16()),
        (Some(code), true) => format!("FCM HTTP {} {code}", status.as_u16()),
        (None, _) => String::new(),
    };
    let token_is_bad = parsed
        .as_ref()
        .is_some_and(|e| e.token_violation || e.message.to_ascii_lowercase().contains("registration token"));
    match code.as_deref() {
        Some("UNREGISTERED") | Some("SENDER_ID_MISMATCH") => return Err(Failure::Other(dead_token(reason))),
        Some("INVALID_ARGUMENT") if token_is_bad => return Err(Failure::Other(dead_token(reason))),
        Some("THIRD_PARTY_AUTH_ERROR") => return Err(Failure::Other(SinkError::permanent(reason))),
        _ => {}
    }
    // Everything else follows HTTP conventions (429/5xx transient with Retry-After, 4xx permanent),
    // with FCM's code and message in the reason when it sent them.
    let error = match classify(status, headers, if reason.is_empty() { body } else { b"" }) {
        Ok(()) => return Ok(()),
        Err(error) if reason.is_empty() => in_context("FCM", error),
        Err(SinkError::Transient { retry_after, .. }) => SinkError::Transient { reason, retry_after },
        Err(SinkError::Permanent { .. }) => SinkError::permanent(reason),
    };
    if status == StatusCode::UNAUTHORIZED {
        let reason = error.reason().to_string();
        return Err(Failure::Unauthenticated(SinkError::transient(format!("{reason} (access token dropped)"))));
    }
    Err(Failure::Other(error))
}

/// A provider may quote the token it refused; it must not reach a stored reason.
fn without(error: SinkError, device_token: &str) -> SinkError {
    if device_token.len() < 8 {
        return error;
    }
    match error {
        SinkError::Transient { reason, retry_after } => {
            SinkError::Transient { reason: reason.replace(device_token, "<redacted>"), retry_after }
        }
        SinkError::Permanent { reason } => SinkError::Permanent { reason: reason.replace(device_token, "<redacted>") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::is_dead_token;

    fn run(status: u16, body: &str) -> Result<(), Failure> {
        classify_send(StatusCode::from_u16(status).expect("status"), &HeaderMap::new(), body.as_bytes())
    }

    fn error(result: Result<(), Failure>) -> SinkError {
        match result {
            Err(Failure::Other(e)) => e,
            Err(Failure::Unauthenticated(_)) => panic!("unexpected 401 handling"),
            Ok(()) => panic!("expected a failure"),
        }
    }

    #[test]
    fn priority_mapping() {
        assert_eq!(android_priority(-1), "NORMAL");
        assert_eq!(android_priority(0), "NORMAL");
        assert_eq!(android_priority(1), "HIGH");
        assert_eq!(android_priority(5), "HIGH");
    }

    #[test]
    fn unregistered_and_bad_token_arguments_are_dead_tokens() {
        let unregistered = r#"{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND",
            "details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#;
        let e = error(run(404, unregistered));
        assert!(is_dead_token(&e), "{e:?}");
        assert_eq!(e.reason(), "dead device token: FCM HTTP 404 UNREGISTERED: Requested entity was not found.");

        let bad_token = r#"{"error":{"code":400,"message":"The registration token is not a valid FCM registration token",
            "status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode":"INVALID_ARGUMENT"},{"@type":"type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations":[{"field":"message.token","description":"Invalid registration token"}]}]}}"#;
        assert!(is_dead_token(&error(run(400, bad_token))));

        let bad_payload = r#"{"error":{"code":400,"message":"Invalid value at 'message.data[0].value'",
            "status":"INVALID_ARGUMENT","details":[{"errorCode":"INVALID_ARGUMENT"}]}}"#;
        let e = error(run(400, bad_payload));
        assert!(!e.is_transient() && !is_dead_token(&e), "a payload bug is no dead token: {e:?}");
    }

    #[test]
    fn quota_and_server_errors_are_transient_and_401_drops_the_token() {
        for (status, code) in [(429, "QUOTA_EXCEEDED"), (503, "UNAVAILABLE"), (500, "INTERNAL")] {
            let body = format!(r#"{{"error":{{"code":{status},"message":"later","status":"{code}"}}}}"#);
            let e = error(run(status, &body));
            assert!(e.is_transient(), "{e:?}");
            assert!(e.reason().contains(code), "{e:?}");
        }
        assert!(error(run(502, "<html>bad gateway</html>")).is_transient());
        assert!(
            matches!(run(401, r#"{"error":{"code":401,"status":"UNAUTHENTICATED"}}"#), Err(Failure::Unauthenticated(e)) if e.is_transient())
        );
        let third_party =
            r#"{"error":{"code":401,"status":"UNAUTHENTICATED","details":[{"errorCode":"THIRD_PARTY_AUTH_ERROR"}]}}"#;
        assert!(!error(run(401, third_party)).is_transient());
    }

    #[test]
    fn a_quoted_device_token_is_redacted() {
        let e = without(SinkError::permanent("HTTP 400: token abcdefghijkl is bad"), "abcdefghijkl");
        assert_eq!(e.reason(), "HTTP 400: token <redacted> is bad");
    }
}
