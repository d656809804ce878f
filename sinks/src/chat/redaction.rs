//! Keeping a destination secret out of a failure reason.
//!
//! `http_classify` strips the URL from transport errors, but a peer's answer is quoted as it is, and
//! some peers echo the request URL in their error page. For Slack and Teams webhooks and ntfy topics
//! the URL itself is the credential, so any echo of it (or of its path, which carries the token) is
//! replaced before the reason is stored.

use crate::SinkError;

/// `error` with every occurrence of `url`, and of its path and query, replaced by `<redacted>`.
pub fn redacted(error: SinkError, url: &str) -> SinkError {
    let mut secrets = vec![url.trim().to_string()];
    if let Some(after_scheme) = url.split_once("://").map(|(_, rest)| rest) {
        if let Some((_, path)) = after_scheme.split_once('/') {
            // A path shorter than this is no token (e.g. "/"), and replacing it would mangle the text.
            if path.len() >= 8 {
                secrets.push(format!("/{path}"));
            }
        }
    }
    let scrub = |reason: String| {
        secrets
            .iter()
            .filter(|s| !s.is_empty())
            .fold(reason, |reason, secret| reason.replace(secret.as_str(), "<redacted>"))
    };
    match error {
        SinkError::Transient { reason, retry_after } => SinkError::Transient { reason: scrub(reason), retry_after },
        SinkError::Permanent { reason } => SinkError::Permanent { reason: scrub(reason) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_and_its_path_are_removed() {
        let url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET";
        let error = SinkError::permanent(format!("HTTP 404: no hook at {url} (path /services/T000/B000/XXXXSECRET)"));
        let error = redacted(error, url);
        assert_eq!(error.reason(), "HTTP 404: no hook at <redacted> (path <redacted>)");
        let error = redacted(SinkError::transient("HTTP 500: /"), "http://127.0.0.1:1/");
        assert_eq!(error.reason(), "HTTP 500: /");
    }
}
