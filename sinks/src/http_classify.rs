//! Classifying an HTTP exchange, shared by every HTTP-based channel (webhook today; Slack, Teams and
//! push gateways later), so that they all retry the same things:
//!
//! - 2xx is success;
//! - 408, 429 and 5xx are transient, honouring the peer's `Retry-After`;
//! - 3xx is permanent: redirects are never followed, because following one would send a signed
//!   payload to a host the subscriber did not register;
//! - any other status (4xx and non-standard codes) is permanent;
//! - failing to reach the peer or to get its answer (refused, reset, timed out) is transient, but a
//!   request that cannot even be built (a malformed URL) is permanent.

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::StatusCode;

use crate::SinkError;

/// How much of a response body goes into an error reason: enough to show the peer's message, little
/// enough to keep delivery history rows small.
pub const BODY_EXCERPT_BYTES: usize = 256;

/// How much of a response body is read at most. Reading a small body to its end lets the connection
/// go back to the keep-alive pool; a larger one is abandoned (and its connection closed) rather than
/// downloaded.
pub const BODY_DRAIN_LIMIT: usize = 64 * 1024;

/// The longest `Retry-After` honoured. A peer's hint beyond a day is treated as a day, so that a
/// nonsensical value cannot park a delivery for years or overflow a timestamp downstream.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Classifies a response from its status, headers and the start of its body (see
/// [`read_body_excerpt`]). Only the first [`BODY_EXCERPT_BYTES`] of `body` are used.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<(), SinkError> {
    if status.is_success() {
        return Ok(());
    }
    let mut reason = format!("HTTP {}", status.as_u16());
    if status.is_redirection() {
        reason.push_str(" redirect not followed");
        if let Some(location) = headers.get(LOCATION) {
            let location = String::from_utf8_lossy(excerpt(location.as_bytes()));
            reason.push_str(&format!(" (location: {location})"));
        }
    }
    let body = String::from_utf8_lossy(excerpt(body));
    let body = body.trim();
    if !body.is_empty() {
        reason.push_str(": ");
        reason.push_str(body);
    }
    if status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Err(SinkError::Transient { reason, retry_after: retry_after(headers) });
    }
    Err(SinkError::Permanent { reason })
}

fn excerpt(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len().min(BODY_EXCERPT_BYTES)]
}

/// The `Retry-After` hint, as delta-seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`]. A date
/// in the past means "now" (zero). An unparseable value is ignored, as if absent.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

/// [`retry_after`] as seen at `now`.
pub fn retry_after_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let date = httpdate::parse_http_date(value).ok()?;
            date.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Classifies a request that got no usable answer.
///
/// The URL is stripped from the message: a subscriber's URL may carry a token (Slack's incoming
/// webhooks are nothing but one), and reasons are stored and shown. The cause chain is kept, since
/// "connection refused" versus "certificate expired" is what an operator needs.
pub fn transport_error(error: reqwest::Error) -> SinkError {
    let error = error.without_url();
    let kind = if error.is_builder() {
        "invalid request"
    } else if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        // Includes a connection reset or closed before the answer arrived.
        "request failed"
    };
    let mut reason = format!("{kind}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        reason.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    if error.is_builder() || crate::egress::is_refusal(&error) {
        // A malformed URL or header, or a destination refused as private: the same request fails
        // the same way every time.
        SinkError::Permanent { reason }
    } else {
        SinkError::Transient { reason, retry_after: None }
    }
}

/// Reads the start of a response body: the first [`BODY_EXCERPT_BYTES`] are returned, and up to
/// [`BODY_DRAIN_LIMIT`] are read so that the connection can be reused.
///
/// A failure while reading is not an error: the status has already decided the outcome, and the
/// excerpt is only there to explain it.
pub async fn read_body_excerpt(mut response: reqwest::Response) -> Bytes {
    let mut excerpt = BytesMut::new();
    let mut read = 0usize;
    while read < BODY_DRAIN_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                let room = BODY_EXCERPT_BYTES.saturating_sub(excerpt.len());
                excerpt.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    excerpt.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: reqwest::header::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, value.parse().expect("a valid header value"));
        headers
    }

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).expect("a valid status code")
    }

    #[test]
    fn success_statuses_are_ok() {
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(classify(status(code), &HeaderMap::new(), b"ignored"), Ok(()), "{code}");
        }
    }

    #[test]
    fn timeouts_rate_limits_and_server_errors_are_transient() {
        for code in [408, 429, 500, 502, 503, 504, 599] {
            let result = classify(status(code), &HeaderMap::new(), b"");
            assert!(matches!(result, Err(SinkError::Transient { retry_after: None, .. })), "{code}: {result:?}");
        }
    }

    #[test]
    fn other_client_errors_redirects_and_odd_codes_are_permanent() {
        for code in [301, 302, 307, 308, 400, 401, 403, 404, 405, 410, 413, 422, 999] {
            let result = classify(status(code), &HeaderMap::new(), b"");
            assert!(matches!(result, Err(SinkError::Permanent { .. })), "{code}: {result:?}");
        }
    }

    #[test]
    fn the_reason_names_the_status_and_a_lossy_excerpt_of_the_body() {
        let result = classify(status(404), &HeaderMap::new(), b"  no such hook\n");
        assert_eq!(result, Err(SinkError::permanent("HTTP 404: no such hook")));

        let mut body = b"bad \xff byte ".to_vec();
        body.extend(std::iter::repeat_n(b'x', 1000));
        let Err(error) = classify(status(500), &HeaderMap::new(), &body) else { panic!("500 must fail") };
        assert!(error.reason().starts_with("HTTP 500: bad \u{fffd} byte xxx"), "{}", error.reason());
        // "HTTP 500: " + 256 bytes, one of them widened to the 3-byte replacement character.
        assert_eq!(error.reason().len(), "HTTP 500: ".len() + BODY_EXCERPT_BYTES + 2);
    }

    #[test]
    fn a_redirect_says_it_was_not_followed_and_where_it_pointed() {
        let result = classify(status(301), &with(LOCATION, "https://elsewhere.example/hook"), b"");
        assert_eq!(
            result,
            Err(SinkError::permanent("HTTP 301 redirect not followed (location: https://elsewhere.example/hook)"))
        );
    }

    #[test]
    fn retry_after_in_seconds() {
        assert_eq!(retry_after(&with(RETRY_AFTER, "7")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&with(RETRY_AFTER, " 0 ")), Some(Duration::ZERO));
        let result = classify(status(429), &with(RETRY_AFTER, "3"), b"");
        assert!(
            matches!(result, Err(SinkError::Transient { retry_after: Some(d), .. }) if d == Duration::from_secs(3))
        );
    }

    #[test]
    fn retry_after_as_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        assert_eq!(retry_after_at(&with(RETRY_AFTER, &later), now), Some(Duration::from_secs(120)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(120));
        assert_eq!(retry_after_at(&with(RETRY_AFTER, &earlier), now), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_is_capped_and_garbage_is_ignored() {
        assert_eq!(retry_after(&with(RETRY_AFTER, "18446744073709551615")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&with(RETRY_AFTER, "soon")), None);
        assert_eq!(retry_after(&with(RETRY_AFTER, "-5")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn retry_after_is_ignored_on_permanent_failures() {
        let result = classify(status(404), &with(RETRY_AFTER, "3"), b"");
        assert_eq!(result, Err(SinkError::permanent("HTTP 404")));
    }
}
