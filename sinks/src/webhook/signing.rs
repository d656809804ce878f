//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): `webhook-signature` is
//! `v1,<base64 HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")>`, the key being the
//! base64 after `whsec_`. The `standardwebhooks` crate does the cryptography; this module only
//! parses secrets strictly and keeps them out of every message.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use standardwebhooks::Webhook;

/// Why a secret is unusable. Deliberately carries no detail: a base64 decoding error names the
/// offending byte and its offset, which would leak part of the secret into a stored reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the webhook secret is not `whsec_` followed by the base64 of a non-empty key")]
pub struct InvalidSecret;

/// Parses `whsec_<base64>`. Unlike `standardwebhooks::Webhook::new`, the prefix is required (a bare
/// base64 string is more likely a misconfigured field than a key) and an empty key is refused (an
/// HMAC with an empty key authenticates nothing).
pub(crate) fn signer(secret: &str) -> Result<Webhook, InvalidSecret> {
    let encoded = secret.strip_prefix("whsec_").ok_or(InvalidSecret)?;
    let key = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| InvalidSecret)?;
    if key.is_empty() {
        return Err(InvalidSecret);
    }
    Webhook::from_bytes(key).map_err(|_| InvalidSecret)
}

/// The three Standard Webhooks headers of one attempt.
pub(crate) struct SignatureHeaders {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
}

/// Signs `body` as message `id`, now. The timestamp is taken per attempt (receivers reject
/// signatures older than a few minutes), while `id` stays the same across attempts so that receivers
/// can deduplicate on it.
pub(crate) fn sign(signer: &Webhook, id: &str, body: &[u8]) -> Result<SignatureHeaders, String> {
    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let signature = signer
        .sign(id, timestamp, body)
        // The only failure is a body that is not UTF-8, which the spec's string-based signing cannot cover.
        .map_err(|e| format!("cannot sign the payload: {e}"))?;
    Ok(SignatureHeaders { id: id.to_string(), timestamp, signature })
}

/// Verifies a Standard Webhooks request as a receiver would: the signature must match `body` and
/// the `webhook-id`/`webhook-timestamp` headers, and the timestamp must be within five minutes of
/// now (which bounds replays). `secret` is `whsec_<base64>`, parsed as strictly as the sink does.
///
/// The error is a short description for a 401 answer or a log line; it never contains the secret.
pub fn verify_signature(secret: &str, headers: &http::HeaderMap, body: &[u8]) -> Result<(), String> {
    let verifier = signer(secret).map_err(|e| e.to_string())?;
    verifier.verify(body, headers).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_vector_of_the_spec() {
        // The test vector shipped with the Standard Webhooks reference libraries.
        let signer = signer("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").expect("valid secret");
        let signature = signer
            .sign(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#,
            )
            .expect("utf-8 body");
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn secrets_must_be_whsec_base64_of_a_non_empty_key() {
        assert!(signer("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        for bad in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_not base64!", "", "whsec_%%%%"] {
            assert_eq!(signer(bad).err(), Some(InvalidSecret), "{bad:?}");
        }
    }

    #[test]
    fn a_bad_secret_is_not_echoed_by_verify() {
        let error =
            verify_signature("whsec_s3cr3t-with-bad-byte", &http::HeaderMap::new(), b"{}").expect_err("bad secret");
        assert!(!error.contains("s3cr3t"), "{error}");
        assert_eq!(error, InvalidSecret.to_string());
    }
}
