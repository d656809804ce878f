//! ntfy (<https://docs.ntfy.sh/publish/>) and UnifiedPush endpoints: a plain HTTP POST of a short
//! text to the topic URL, with `Title`, `Priority` (1-5) and `X-Delivery-Id` headers (the receiving
//! app can deduplicate on the latter), classified by [`crate::http_classify`].
//!
//! A UnifiedPush distributor answers `404` or `410` for an endpoint that no longer exists (the app
//! unregistered): the endpoint is dead, like a device token. The topic URL is a credential (anyone
//! who knows it can publish), so it never appears in a reason.

use base64::Engine as _;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::StatusCode;

use super::{dead_token, in_context, Notification};
use crate::chat::envelope::is_web_url;
use crate::chat::redaction::redacted;
use crate::http_classify::{classify, read_body_excerpt, transport_error};
use crate::{DeliveryRequest, SinkError};

/// ntfy's `Priority`: 3 is ntfy's default and matches report priority 0; each step up or down
/// moves one level, clamped to ntfy's 1 (min) to 5 (max/urgent).
pub fn ntfy_priority(priority: i32) -> u8 {
    priority.saturating_add(3).clamp(1, 5) as u8
}

/// A header value for free text: as it is when it is printable ASCII, else RFC 2047 encoded
/// (`=?UTF-8?B?...?=`), which ntfy decodes, since HTTP headers cannot carry raw UTF-8 reliably.
fn text_header(text: &str) -> HeaderValue {
    let printable = text.chars().all(|c| c == ' ' || c.is_ascii_graphic());
    if printable {
        if let Ok(value) = HeaderValue::from_str(text) {
            return value;
        }
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    HeaderValue::from_str(&format!("=?UTF-8?B?{encoded}?=")).unwrap_or_else(|_| HeaderValue::from_static("Report"))
}

pub(crate) struct Ntfy {
    /// Redirects off; names resolved through [`crate::egress::PublicOnly`] unless private
    /// destinations are allowed.
    client: reqwest::Client,
    allow_private_destinations: bool,
}

impl Ntfy {
    pub fn new(client: reqwest::Client, allow_private_destinations: bool) -> Ntfy {
        Ntfy { client, allow_private_destinations }
    }

    pub async fn send(
        &self,
        topic_url: &str,
        request: &DeliveryRequest,
        notification: &Notification,
    ) -> Result<String, SinkError> {
        if !is_web_url(topic_url) {
            return Err(dead_token("the ntfy topic URL is not an http(s) URL"));
        }
        // A literal private address never reaches the resolver's check: refuse it here. Permanent
        // but not a dead token: the URL is not gone, this server will not deliver there.
        crate::egress::check_literal(topic_url, self.allow_private_destinations)
            .map_err(|e| in_context("ntfy", SinkError::permanent(e.to_string())))?;
        let mut builder = self
            .client
            .post(topic_url)
            .timeout(request.timeout)
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .header("Title", text_header(&notification.title))
            .header("Priority", ntfy_priority(request.priority).to_string())
            .header("X-Delivery-Id", text_header(&request.idempotency_key));
        if let Some(link) = notification.summary.link(None) {
            if let Ok(value) = HeaderValue::from_str(&link) {
                builder = builder.header("Click", value);
            }
        }
        let outcome = async {
            let response = builder.body(notification.body.clone()).send().await.map_err(transport_error)?;
            let status = response.status();
            let headers = response.headers().clone();
            let answer = read_body_excerpt(response).await;
            if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
                return Err(dead_token(format!("the push endpoint answered HTTP {}", status.as_u16())));
            }
            classify(status, &headers, &answer)?;
            Ok(format!("HTTP {}", status.as_u16()))
        }
        .await;
        outcome.map_err(|e| match e {
            e if super::is_dead_token(&e) => redacted(e, topic_url),
            e => in_context("ntfy", redacted(e, topic_url)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_mapping() {
        assert_eq!(ntfy_priority(i32::MIN), 1);
        assert_eq!(ntfy_priority(-2), 1);
        assert_eq!(ntfy_priority(-1), 2);
        assert_eq!(ntfy_priority(0), 3);
        assert_eq!(ntfy_priority(1), 4);
        assert_eq!(ntfy_priority(2), 5);
        assert_eq!(ntfy_priority(i32::MAX), 5);
    }

    #[test]
    fn non_ascii_titles_are_rfc2047_encoded() {
        assert_eq!(text_header("Q2 report"), "Q2 report");
        assert_eq!(text_header("Q2 – résumé"), "=?UTF-8?B?UTIg4oCTIHLDqXN1bcOp?=");
        assert_eq!(text_header("line\nbreak"), "=?UTF-8?B?bGluZQpicmVhaw==?=");
    }
}
