//! Classifying an HTTP answer, shared by every HTTP-based channel: 2xx is success; 408, 429 and 5xx
//! are transient (honouring `Retry-After`); redirects and other 4xx are permanent.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;

use crate::SinkError;

/// How much of a response body goes into an error reason.
const BODY_EXCERPT: usize = 256;

pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<(), SinkError> {
    if status.is_success() {
        return Ok(());
    }
    let excerpt = String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT)]).trim().to_string();
    let reason = if excerpt.is_empty() { format!("HTTP {}", status.as_u16()) } else { format!("HTTP {}: {excerpt}", status.as_u16()) };
    if status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Err(SinkError::Transient { reason, retry_after: retry_after(headers) });
    }
    if status.is_redirection() {
        return Err(SinkError::Permanent { reason: format!("{reason} (redirect not followed)") });
    }
    Err(SinkError::Permanent { reason })
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// A transport failure: all are worth retrying (the peer may come back).
pub fn transport_error(error: &reqwest::Error) -> SinkError {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut reason = format!("{kind}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        reason.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    SinkError::Transient { reason, retry_after: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, retry_after.parse().unwrap());
        headers
    }

    #[test]
    fn statuses_are_classified() {
        let none = HeaderMap::new();
        assert!(classify(StatusCode::NO_CONTENT, &none, b"").is_ok());
        for status in [408, 429, 500, 502, 503] {
            assert!(matches!(classify(StatusCode::from_u16(status).unwrap(), &none, b""), Err(SinkError::Transient { .. })), "{status}");
        }
        for status in [301, 400, 401, 404, 410, 422] {
            assert!(matches!(classify(StatusCode::from_u16(status).unwrap(), &none, b""), Err(SinkError::Permanent { .. })), "{status}");
        }
        let Err(SinkError::Permanent { reason }) = classify(StatusCode::NOT_FOUND, &none, b"no such hook") else { panic!() };
        assert_eq!(reason, "HTTP 404: no such hook");
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        assert_eq!(retry_after(&headers("7")), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let parsed = retry_after(&headers(&later)).unwrap();
        assert!(parsed > Duration::from_secs(100) && parsed <= Duration::from_secs(120), "{parsed:?}");
        assert_eq!(retry_after(&headers("soon")), None);
        let Err(SinkError::Transient { retry_after: hint, .. }) = classify(StatusCode::TOO_MANY_REQUESTS, &headers("3"), b"") else { panic!() };
        assert_eq!(hint, Some(Duration::from_secs(3)));
    }
}
