//! The push channel's server-side settings: the FCM service account and the APNs provider key. A
//! subscription only brings a device token or a topic URL; the credentials to reach FCM and APNs
//! belong to the service. Either provider may be left out, which disables that provider (its
//! deliveries fail permanently); ntfy needs no settings.
//!
//! The base URLs are settings so that a test (or a proxy) can stand in for Google and Apple.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
pub const DEFAULT_FCM_API_BASE: &str = "https://fcm.googleapis.com";
pub const DEFAULT_APNS_API_BASE: &str = "https://api.push.apple.com";

/// `[push]`. Every field has a default, so an empty table is valid (ntfy only). Unknown keys are
/// rejected so that a typo is an error. Deliberately not `Serialize`, and `Debug` redacts the
/// private keys: this struct holds secrets.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Bound on establishing a connection; the per-request deadline still applies.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    pub user_agent: String,
    /// Deliver to ntfy / UnifiedPush topic URLs on loopback, private and link-local addresses too
    /// (tests, the demo, an internal ntfy server). Off by default: a subscriber chooses the topic URL,
    /// so it is guarded like a webhook URL (see [`crate::egress`]). FCM and APNs are the service's
    /// own configured endpoints and are not affected.
    pub allow_private_destinations: bool,
    pub fcm: Option<FcmConfig>,
    pub apns: Option<ApnsConfig>,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            connect_timeout: Duration::from_secs(5),
            user_agent: concat!("repdist/", env!("CARGO_PKG_VERSION")).to_string(),
            allow_private_destinations: false,
            fcm: None,
            apns: None,
        }
    }
}

/// `[push.fcm]`: Firebase Cloud Messaging HTTP v1 with a service account, given either as the JSON
/// file Google hands out (`service_account_json_path`) or inline (`client_email` + `private_key`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// The Firebase project; defaults to the service account file's `project_id`.
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub service_account_json_path: Option<PathBuf>,
    #[serde(default)]
    pub client_email: Option<String>,
    /// PEM (PKCS#8 `BEGIN PRIVATE KEY`, as in the service account file).
    #[serde(default)]
    pub private_key: Option<String>,
    /// Where the signed assertion is exchanged for an access token; defaults to the file's
    /// `token_uri`, else Google's.
    #[serde(default)]
    pub token_uri: Option<String>,
    #[serde(default = "default_fcm_api_base")]
    pub api_base: String,
}

/// `[push.apns]`: Apple Push Notification service with a token-based (`.p8`) provider key.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// The Apple developer team id, the provider token's `iss`.
    pub team_id: String,
    /// The key's id, the provider token's `kid`.
    pub key_id: String,
    /// The `.p8` file's PEM text (P-256, PKCS#8), or `private_key_path` to read it from.
    #[serde(default)]
    pub private_key: Option<String>,
    #[serde(default)]
    pub private_key_path: Option<PathBuf>,
    /// The app's bundle id, sent as `apns-topic`.
    pub topic: String,
    /// `https://api.push.apple.com`, or `https://api.sandbox.push.apple.com` for development builds.
    #[serde(default = "default_apns_api_base")]
    pub api_base: String,
}

fn default_fcm_api_base() -> String {
    DEFAULT_FCM_API_BASE.to_string()
}

fn default_apns_api_base() -> String {
    DEFAULT_APNS_API_BASE.to_string()
}

/// Why the push channel could not be set up. Messages name the offending key and never quote a key.
#[derive(Debug, thiserror::Error)]
pub enum PushSetupError {
    #[error("push.{key}: {reason}")]
    InvalidConfig { key: &'static str, reason: String },
    #[error("cannot build the push HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

fn invalid(key: &'static str, reason: impl Into<String>) -> PushSetupError {
    PushSetupError::InvalidConfig { key, reason: reason.into() }
}

fn check_base_url(key: &'static str, value: &str) -> Result<(), PushSetupError> {
    let lower = value.to_ascii_lowercase();
    let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['?', '#']) => Ok(()),
        _ => Err(invalid(key, "must be an http:// or https:// URL without query")),
    }
}

impl PushConfig {
    /// Checks what serde cannot. Reading and parsing the key files happens when the sink is built
    /// ([`super::PushSink::new`]), which reports problems with the same key names.
    pub fn validate(&self) -> Result<(), PushSetupError> {
        if self.connect_timeout.is_zero() {
            return Err(invalid("connect_timeout", "must be greater than zero"));
        }
        if self.user_agent.is_empty() || reqwest::header::HeaderValue::from_str(&self.user_agent).is_err() {
            return Err(invalid("user_agent", "must be a non-empty, printable ASCII header value"));
        }
        if let Some(fcm) = &self.fcm {
            fcm.validate()?;
        }
        if let Some(apns) = &self.apns {
            apns.validate()?;
        }
        Ok(())
    }
}

impl FcmConfig {
    fn validate(&self) -> Result<(), PushSetupError> {
        let inline = self.client_email.is_some() || self.private_key.is_some();
        match (&self.service_account_json_path, inline) {
            (Some(_), true) => {
                return Err(invalid(
                    "fcm.service_account_json_path",
                    "give either the service account file or client_email + private_key, not both",
                ))
            }
            (None, false) => {
                return Err(invalid("fcm.service_account_json_path", "required (or client_email + private_key inline)"))
            }
            (None, true) => {
                if self.client_email.as_deref().is_none_or(|e| !e.contains('@')) {
                    return Err(invalid("fcm.client_email", "must be the service account's e-mail address"));
                }
                if self.private_key.as_deref().is_none_or(|k| !k.contains("PRIVATE KEY")) {
                    return Err(invalid("fcm.private_key", "must be the service account's PEM private key"));
                }
                if self.project_id.as_deref().is_none_or(str::is_empty) {
                    return Err(invalid("fcm.project_id", "required when the service account is given inline"));
                }
            }
            (Some(_), false) => {}
        }
        if self.project_id.as_deref().is_some_and(|p| p.is_empty() || !p.chars().all(is_id_char)) {
            return Err(invalid("fcm.project_id", "must be a Firebase project id (letters, digits, '-')"));
        }
        if let Some(uri) = &self.token_uri {
            check_base_url("fcm.token_uri", uri)?;
        }
        check_base_url("fcm.api_base", &self.api_base)
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == ':' || c == '.'
}

impl ApnsConfig {
    fn validate(&self) -> Result<(), PushSetupError> {
        if self.team_id.is_empty() || !self.team_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid("apns.team_id", "must be the Apple team id (letters and digits)"));
        }
        if self.key_id.is_empty() || !self.key_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid("apns.key_id", "must be the key id of the .p8 key (letters and digits)"));
        }
        match (&self.private_key, &self.private_key_path) {
            (Some(_), Some(_)) => {
                return Err(invalid("apns.private_key", "give private_key or private_key_path, not both"))
            }
            (None, None) => return Err(invalid("apns.private_key", "required (or private_key_path)")),
            (Some(key), None) if !key.contains("PRIVATE KEY") => {
                return Err(invalid("apns.private_key", "must be the PEM text of the .p8 key"))
            }
            _ => {}
        }
        if self.topic.is_empty() || reqwest::header::HeaderValue::from_str(&self.topic).is_err() {
            return Err(invalid("apns.topic", "must be the app's bundle id"));
        }
        check_base_url("apns.api_base", &self.api_base)
    }
}

impl fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushConfig")
            .field("connect_timeout", &self.connect_timeout)
            .field("user_agent", &self.user_agent)
            .field("allow_private_destinations", &self.allow_private_destinations)
            .field("fcm", &self.fcm)
            .field("apns", &self.apns)
            .finish()
    }
}

impl fmt::Debug for FcmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FcmConfig")
            .field("project_id", &self.project_id)
            .field("service_account_json_path", &self.service_account_json_path)
            .field("client_email", &self.client_email)
            .field("private_key", &self.private_key.as_ref().map(|_| "<redacted>"))
            .field("token_uri", &self.token_uri)
            .field("api_base", &self.api_base)
            .finish()
    }
}

impl fmt::Debug for ApnsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApnsConfig")
            .field("team_id", &self.team_id)
            .field("key_id", &self.key_id)
            .field("private_key", &self.private_key.as_ref().map(|_| "<redacted>"))
            .field("private_key_path", &self.private_key_path)
            .field("topic", &self.topic)
            .field("api_base", &self.api_base)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

    fn parse(json: &str) -> PushConfig {
        serde_json::from_str(json).expect("parses")
    }

    fn key_of(config: &PushConfig) -> &'static str {
        match config.validate() {
            Err(PushSetupError::InvalidConfig { key, .. }) => key,
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_table_is_valid_and_has_no_providers() {
        let config = parse("{}");
        assert_eq!(config, PushConfig::default());
        assert!(config.fcm.is_none() && config.apns.is_none());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn provider_defaults() {
        let config = parse(
            r#"{"fcm": {"service_account_json_path": "/etc/sa.json"},
            "apns": {"team_id": "T1", "key_id": "K1", "private_key_path": "/etc/k.p8", "topic": "com.x"}}"#,
        );
        config.validate().expect("valid");
        let fcm = config.fcm.expect("fcm");
        assert_eq!(fcm.api_base, DEFAULT_FCM_API_BASE);
        assert_eq!(fcm.token_uri, None, "taken from the file, else Google's");
        assert_eq!(config.apns.expect("apns").api_base, DEFAULT_APNS_API_BASE);
    }

    #[test]
    fn unknown_keys_are_rejected_at_every_level() {
        for json in [r#"{"fmc": {}}"#, r#"{"fcm": {"service_account_json_path": "/x", "tokn_uri": "x"}}"#] {
            assert!(serde_json::from_str::<PushConfig>(json).is_err(), "{json}");
        }
    }

    #[test]
    fn fcm_credentials_are_a_file_or_inline_never_both_or_neither() {
        assert_eq!(key_of(&parse(r#"{"fcm": {"project_id": "p"}}"#)), "fcm.service_account_json_path");
        let both = format!(
            r#"{{"fcm": {{"service_account_json_path": "/x", "client_email": "a@b", "private_key": {PEM:?}}}}}"#
        );
        assert_eq!(key_of(&parse(&both)), "fcm.service_account_json_path");
        let no_key = r#"{"fcm": {"project_id": "p", "client_email": "a@b"}}"#;
        assert_eq!(key_of(&parse(no_key)), "fcm.private_key");
        let no_project = format!(r#"{{"fcm": {{"client_email": "a@b", "private_key": {PEM:?}}}}}"#);
        assert_eq!(key_of(&parse(&no_project)), "fcm.project_id");
        let inline = format!(r#"{{"fcm": {{"project_id": "p-1", "client_email": "a@b", "private_key": {PEM:?}}}}}"#);
        parse(&inline).validate().expect("inline credentials");
        let bad_uri = r#"{"fcm": {"service_account_json_path": "/x", "token_uri": "ftp://x"}}"#;
        assert_eq!(key_of(&parse(bad_uri)), "fcm.token_uri");
    }

    #[test]
    fn apns_settings_are_checked_and_named() {
        let base = |extra: &str| {
            parse(&format!(r#"{{"apns": {{"team_id": "T1", "key_id": "K1", "topic": "com.x"{extra}}}}}"#))
        };
        assert_eq!(key_of(&base("")), "apns.private_key");
        assert_eq!(key_of(&base(r#", "private_key": "nope""#)), "apns.private_key");
        let both = format!(r#", "private_key": {PEM:?}, "private_key_path": "/k""#);
        assert_eq!(key_of(&base(&both)), "apns.private_key");
        assert_eq!(key_of(&base(r#", "private_key_path": "/k", "api_base": "api.push.apple.com""#)), "apns.api_base");
        let config = parse(r#"{"apns": {"team_id": "T 1", "key_id": "K1", "topic": "x", "private_key_path": "/k"}}"#);
        assert_eq!(key_of(&config), "apns.team_id");
        base(r#", "private_key_path": "/k""#).validate().expect("valid");
    }

    #[test]
    fn debug_redacts_private_keys() {
        let config = parse(&format!(
            r#"{{"fcm": {{"project_id": "p", "client_email": "a@b", "private_key": {PEM:?}}},
                "apns": {{"team_id": "T1", "key_id": "K1", "topic": "com.x", "private_key": {PEM:?}}}}}"#
        ));
        let printed = format!("{config:?}");
        assert!(!printed.contains("MIIE"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }
}
