//! MOBILE_PUSH: a short notification about the report on the subscriber's device, through Firebase
//! Cloud Messaging (Android, and iOS apps using Firebase), Apple Push Notification service, or an
//! ntfy / UnifiedPush topic URL.
//!
//! - `config`: the service's FCM service account and APNs provider key;
//! - `tokens`: the cached bearer tokens both providers need;
//! - `fcm`, `apns`, `ntfy`: one provider each, with its own error classification;
//! - this file: the destination, the dead-token marker and the dispatch to a provider.
//!
//! # Dead device tokens
//!
//! Device tokens die: the app is uninstalled, the user signs out, the token is rotated. Providers
//! say so (FCM `UNREGISTERED`, APNs `410`/`BadDeviceToken`, a UnifiedPush distributor's `404`/`410`),
//! and resending to such a token never succeeds. Those failures are [`SinkError::Permanent`] with a
//! reason starting with [`DEAD_TOKEN_PREFIX`]; the service tests them with [`is_dead_token`] and
//! should stop using the token (mark the subscription's device dead) rather than only dead-letter
//! the delivery.
//!
//! Tests against a real HTTP/2 server live in `sinks/tests/it/push.rs`.

mod apns;
mod config;
mod fcm;
mod ntfy;
mod tokens;

use std::fmt;
use std::time::Instant;

use async_trait::async_trait;

pub use apns::{apns_id, apns_priority};
pub use config::{ApnsConfig, FcmConfig, PushConfig, PushSetupError};
pub use fcm::android_priority;
pub use ntfy::ntfy_priority;

use crate::chat::envelope::ReportSummary;
use crate::{DeliveryRequest, Destination, Receipt, Sink, SinkError};

/// Where one device is reached. Tokens and topic URLs are credentials (anyone holding one can push
/// to the device), so `Debug` redacts them.
#[derive(Clone, PartialEq, Eq)]
pub enum PushTarget {
    /// An FCM registration token.
    Fcm { device_token: String },
    /// An APNs device token (hex), for the app configured as `push.apns.topic`.
    Apns { device_token: String },
    /// A full ntfy topic URL or UnifiedPush endpoint, e.g. `https://ntfy.sh/mytopic`.
    Ntfy { topic_url: String },
}

impl fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushTarget::Fcm { .. } => f.debug_struct("Fcm").field("device_token", &"<redacted>").finish(),
            PushTarget::Apns { .. } => f.debug_struct("Apns").field("device_token", &"<redacted>").finish(),
            PushTarget::Ntfy { .. } => f.debug_struct("Ntfy").field("topic_url", &"<redacted>").finish(),
        }
    }
}

/// The start of every dead-token reason. Part of this crate's contract with the service: see the
/// module docs.
pub const DEAD_TOKEN_PREFIX: &str = "dead device token: ";

/// Whether `error` says the device token (or topic URL) is dead for good, so the service should
/// stop delivering to it.
pub fn is_dead_token(error: &SinkError) -> bool {
    matches!(error, SinkError::Permanent { reason } if reason.starts_with(DEAD_TOKEN_PREFIX))
}

/// A permanent failure marked as a dead token.
pub(crate) fn dead_token(detail: impl fmt::Display) -> SinkError {
    SinkError::permanent(format!("{DEAD_TOKEN_PREFIX}{detail}"))
}

/// What the notification says, the same on every provider.
pub(crate) struct Notification {
    pub title: String,
    pub body: String,
    pub summary: ReportSummary,
}

impl Notification {
    /// Titles and bodies are short on a lock screen; these limits keep the payload far below
    /// APNs' 4 KiB and FCM's 4 KiB data limits whatever the report carries.
    const TITLE_MAX_CHARS: usize = 120;
    const BODY_MAX_CHARS: usize = 240;

    fn from_payload(payload: &[u8]) -> Result<Notification, SinkError> {
        use crate::chat::envelope::truncated;
        if let Some(digest) = crate::digest::DigestSummary::parse(payload)? {
            // One notification for the digest: how many reports, and as many titles as fit.
            let summary = ReportSummary {
                delivery_id: digest.delivery_id.clone(),
                subscription_id: digest.subscription_id.clone(),
                ..ReportSummary::default()
            };
            return Ok(Notification {
                title: truncated(&digest.title(), Self::TITLE_MAX_CHARS),
                body: digest.body_line(Self::BODY_MAX_CHARS),
                summary,
            });
        }
        let summary = ReportSummary::parse(payload)?;
        Ok(Notification {
            title: truncated(&summary.title(), Self::TITLE_MAX_CHARS),
            body: truncated(&summary.body_line(), Self::BODY_MAX_CHARS),
            summary,
        })
    }
}

/// Sends push notifications. Holds one HTTP client for FCM and ntfy, an HTTP/2-only client for
/// APNs, and each provider's cached token. A provider left out of [`PushConfig`] is disabled: its
/// deliveries fail permanently.
pub struct PushSink {
    fcm: Option<fcm::Fcm>,
    apns: Option<apns::Apns>,
    ntfy: ntfy::Ntfy,
}

impl PushSink {
    pub const CHANNEL: &'static str = "MOBILE_PUSH";

    /// Validates `config`, reads and parses the keys (errors name the key), and builds the clients.
    pub fn new(config: PushConfig) -> Result<PushSink, PushSetupError> {
        config.validate()?;
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .user_agent(config.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let fcm = config.fcm.as_ref().map(|fcm| fcm::Fcm::new(fcm, client.clone())).transpose()?;
        let apns = config.apns.as_ref().map(|apns| apns::Apns::new(apns, &config)).transpose()?;
        // ntfy topic URLs are chosen by subscribers: their own client, whose names resolve to public
        // addresses only unless allowed (FCM's client reaches the configured Google endpoints).
        let ntfy_client = crate::egress::guard(
            reqwest::Client::builder()
                .connect_timeout(config.connect_timeout)
                .user_agent(config.user_agent.clone())
                .redirect(reqwest::redirect::Policy::none()),
            config.allow_private_destinations,
        )
        .build()?;
        let ntfy = ntfy::Ntfy::new(ntfy_client, config.allow_private_destinations);
        Ok(PushSink { fcm, apns, ntfy })
    }
}

#[async_trait]
impl Sink for PushSink {
    fn name(&self) -> &'static str {
        Self::CHANNEL
    }

    async fn deliver(&self, request: &DeliveryRequest) -> Result<Receipt, SinkError> {
        if request.encrypt_to.is_some() {
            return Err(crate::encryption::unsupported(Self::CHANNEL));
        }
        let Destination::Push { target } = &request.destination else {
            return Err(SinkError::permanent(format!("{} cannot deliver to {:?}", Self::CHANNEL, request.destination)));
        };
        let notification = Notification::from_payload(&request.payload)?;
        let started = Instant::now();
        let attempt = async {
            match target {
                PushTarget::Fcm { device_token } => match &self.fcm {
                    Some(fcm) => fcm.send(device_token, request, &notification).await,
                    None => Err(SinkError::permanent("FCM is not configured on this server (push.fcm)")),
                },
                PushTarget::Apns { device_token } => match &self.apns {
                    Some(apns) => apns.send(device_token, request, &notification).await,
                    None => Err(SinkError::permanent("APNs is not configured on this server (push.apns)")),
                },
                PushTarget::Ntfy { topic_url } => self.ntfy.send(topic_url, request, &notification).await,
            }
        };
        // One deadline over everything, the token refresh (or the wait for another caller's) included.
        let outcome = match tokio::time::timeout(request.timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(SinkError::transient(format!("timed out after {:?}", request.timeout))),
        };
        let elapsed = started.elapsed();
        tracing::debug!(
            delivery_id = %request.idempotency_key,
            attempt = request.attempt,
            target = ?target,
            ok = outcome.is_ok(),
            dead_token = outcome.as_ref().err().is_some_and(is_dead_token),
            elapsed_ms = elapsed.as_millis() as u64,
            "push provider answered"
        );
        let detail = outcome?;
        Ok(Receipt { elapsed, detail })
    }
}

/// Reads a response body up to `limit` bytes (a provider's error document, a token response). The
/// rest is not downloaded; a failure while reading leaves what was read, since the status has
/// already decided the outcome.
pub(crate) async fn read_body(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// `error` with `context: ` before its reason (which provider, which step).
pub(crate) fn in_context(context: &str, error: SinkError) -> SinkError {
    match error {
        SinkError::Transient { reason, retry_after } => {
            SinkError::Transient { reason: format!("{context}: {reason}"), retry_after }
        }
        SinkError::Permanent { reason } => SinkError::Permanent { reason: format!("{context}: {reason}") },
    }
}

/// Seconds since the Unix epoch, for JWT `iat`/`exp`.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_tokens_are_permanent_failures_with_the_prefix() {
        assert!(is_dead_token(&dead_token("FCM UNREGISTERED (HTTP 404)")));
        assert!(!is_dead_token(&SinkError::permanent("HTTP 400: bad payload")));
        let transient = SinkError::transient(format!("{DEAD_TOKEN_PREFIX}not really"));
        assert!(!is_dead_token(&transient), "only a permanent failure marks a token dead");
    }

    #[test]
    fn a_digest_is_one_notification_counting_its_reports() {
        let payload = serde_json::json!({"type": "report.digest", "data": {"delivery_id": "d1", "subscription_id": "s1",
            "reports": [{"report": {"report_data": {"report_id": "r1", "report_type": "risk"}}},
                        {"report": {"report_data": {"report_id": "r2", "title": "Q2 performance"}}}]}});
        let notification = Notification::from_payload(&serde_json::to_vec(&payload).unwrap()).expect("a digest");
        assert_eq!(notification.title, "2 new reports");
        assert_eq!(notification.body, "Risk report r1, Q2 performance");
        assert_eq!((notification.summary.delivery_id.as_str(), notification.summary.subscription_id.as_str()), ("d1", "s1"));
    }

    #[test]
    fn debug_redacts_targets() {
        for target in [
            PushTarget::Fcm { device_token: "fcm-secret".into() },
            PushTarget::Apns { device_token: "abcdef0123".into() },
            PushTarget::Ntfy { topic_url: "https://ntfy.sh/secret-topic".into() },
        ] {
            let printed = format!("{target:?}");
            assert!(!printed.contains("secret") && !printed.contains("abcdef"), "{printed}");
        }
    }
}
