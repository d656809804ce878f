//! Per-channel destinations of a subscription (`delivery_preferences.notification_settings`) and
//! their validation.
//!
//! They are checked when a subscription is created or updated, so that a destination that can never
//! work is a 422 naming the field (`delivery_preferences.notification_settings.sftp.host_key`)
//! rather than a dead letter later. The checks are syntactic: this crate does no I/O and knows no
//! channel library, so whether a key decrypts or a host answers is the sink's to find out.
//!
//! Secrets (webhook secret, SFTP password and private key, chat webhook URL, device tokens and topic
//! URLs) travel in these structs to the dispatcher. Their `Debug` redacts them; the REST API masks
//! them on reads.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::delivery::DeliveryChannel;
use crate::validation::FieldError;

/// The path every field error below starts with.
const PREFIX: &str = "delivery_preferences.notification_settings";

/// Per-channel destinations. A channel listed in `channels` needs its entry here (DASHBOARD needs none).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NotificationSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<DashboardSettings>,
    /// Boxed: it is the largest entry, and every delivery task carries these settings through the
    /// dataflow, mostly without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sftp: Option<Box<SftpSettings>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile_push: Option<MobilePushSettings>,
    /// SLACK_INTEGRATION's destination: a Slack or Teams webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackSettings>,
    /// The key reports that require encryption (`metadata.encryption_required`) are encrypted to.
    /// Without it such reports fail permanently instead of going out in clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionSettings>,
}

/// The subscriber's public key for encrypted deliveries. Checked by the service when the
/// subscription is written (a key that does not parse is a 422 naming `age_recipient`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EncryptionSettings {
    /// An age X25519 public key, `age1...` as `age-keygen` prints it. Not a secret: reads show it.
    pub age_recipient: String,
}

/// An HTTPS (or, for local receivers, HTTP) endpoint and its Standard Webhooks signing secret.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub url: String,
    /// `whsec_` followed by the base64 of the key bytes. Never logged, never returned by reads.
    pub secret: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    /// `a@example.com` or `Name <a@example.com>`; at least one.
    pub to: Vec<String>,
    /// Chooses the templates (`en`, `de-AT`); the server's default locale when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DashboardSettings {}

/// The subscriber's SFTP server. Exactly one of `password` and `private_key`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SftpSettings {
    pub host: String,
    #[serde(default = "default_sftp_port")]
    pub port: u16,
    pub username: String,
    /// Never returned by reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// OpenSSH (`-----BEGIN OPENSSH PRIVATE KEY-----`) or PEM text; ed25519 or ECDSA. Never returned
    /// by reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// Decrypts `private_key` when it is encrypted. Never returned by reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<String>,
    /// The server's key, pinned: an OpenSSH public key line (`ssh-ed25519 AAAA...`) or a
    /// `SHA256:...` fingerprint as `ssh-keygen -lf` prints it.
    pub host_key: String,
    /// Where files go: absolute, or relative to the login directory; created if missing.
    pub directory: String,
}

fn default_sftp_port() -> u16 {
    22
}

/// Which push service reaches the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PushProvider {
    /// Firebase Cloud Messaging: `device_token` is the registration token.
    Fcm,
    /// Apple Push Notification service: `device_token` is the hex device token.
    Apns,
    /// An ntfy topic or UnifiedPush endpoint: `topic_url`.
    Ntfy,
}

/// One device or topic: `device_token` for FCM and APNS, `topic_url` for NTFY.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MobilePushSettings {
    pub provider: PushProvider,
    /// A credential (anyone holding it can push to the device). Never returned by reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
    /// A credential (anyone knowing it can publish). Only its scheme and host are returned by reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_url: Option<String>,
    /// Device tokens (or topic URLs) the provider reported gone for good (FCM `UNREGISTERED`, APNs
    /// 410, a UnifiedPush 404/410). Kept by the service: it adds the token as a new subscription
    /// version, and deliveries to a dead token fail at once without contacting the provider. An
    /// update that leaves this out clears the marks (the app registered its token again). Masked on
    /// reads, like the tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dead_tokens: Vec<String>,
}

impl MobilePushSettings {
    /// Most tokens kept in `dead_tokens`: a subscription names one target, so a handful covers every
    /// token it ever had that a client might send again.
    pub const MAX_DEAD_TOKENS: usize = 16;

    /// What deliveries go to: the device token (FCM, APNS) or the topic URL (NTFY).
    pub fn target(&self) -> Option<&str> {
        match self.provider {
            PushProvider::Fcm | PushProvider::Apns => self.device_token.as_deref(),
            PushProvider::Ntfy => self.topic_url.as_deref(),
        }
    }

    /// Whether the target was reported dead: every token this subscription has is dead.
    pub fn target_is_dead(&self) -> bool {
        self.target().is_some_and(|target| self.dead_tokens.iter().any(|dead| dead == target))
    }
}

/// Which chat service a webhook belongs to; it decides the message format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChatKind {
    /// A Slack incoming webhook (Block Kit).
    #[default]
    Slack,
    /// A Microsoft Teams workflow webhook (Adaptive Card).
    Teams,
}

/// A Slack incoming webhook or a Teams workflow webhook.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SlackSettings {
    #[serde(default)]
    pub kind: ChatKind,
    /// The URL is the credential. Only its scheme and host are returned by reads.
    pub webhook_url: String,
    /// Where the message's button points (e.g. the report in a portal); else the report's file path
    /// when it is a web URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

const REDACTED: &str = "<redacted>";

fn redacted<T>(value: &Option<T>) -> Option<&'static str> {
    value.as_ref().map(|_| REDACTED)
}

impl fmt::Debug for SftpSettings {
    /// By hand so that the password and key never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("private_key", &redacted(&self.private_key))
            .field("passphrase", &redacted(&self.passphrase))
            .field("host_key", &self.host_key)
            .field("directory", &self.directory)
            .finish()
    }
}

impl fmt::Debug for MobilePushSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MobilePushSettings")
            .field("provider", &self.provider)
            .field("device_token", &redacted(&self.device_token))
            .field("topic_url", &redacted(&self.topic_url))
            .field("dead_tokens", &self.dead_tokens.len())
            .finish()
    }
}

impl fmt::Debug for SlackSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackSettings")
            .field("kind", &self.kind)
            .field("webhook_url", &REDACTED)
            .field("link", &self.link)
            .finish()
    }
}

impl NotificationSettings {
    /// Checks that `channel` has its settings here and that they are usable. Errors name the field.
    pub fn validate_for(&self, channel: DeliveryChannel) -> Result<(), FieldError> {
        fn required<'a, T>(value: &'a Option<T>, key: &str, channel: DeliveryChannel) -> Result<&'a T, FieldError> {
            value.as_ref().ok_or_else(|| {
                FieldError::new(
                    format!("{PREFIX}.{key}"),
                    format!("is required when channels include {}", channel.as_str()),
                )
            })
        }
        match channel {
            DeliveryChannel::ApiWebhook => required(&self.webhook, "webhook", channel)?.validate(),
            DeliveryChannel::Email => required(&self.email, "email", channel)?.validate(),
            DeliveryChannel::Sftp => required(&self.sftp, "sftp", channel)?.validate(),
            DeliveryChannel::MobilePush => required(&self.mobile_push, "mobile_push", channel)?.validate(),
            DeliveryChannel::SlackIntegration => required(&self.slack, "slack", channel)?.validate(),
            // The dashboard needs no destination: notifications are kept per subscriber.
            DeliveryChannel::DashboardNotification => Ok(()),
        }
    }
}

fn field(path: &str) -> String {
    format!("{PREFIX}.{path}")
}

/// An `http://` or `https://` URL naming a host, without whitespace or control characters.
fn web_url(path: &str, url: &str) -> Result<(), FieldError> {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(|| FieldError::new(field(path), "must be an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with(['/', '?', '#']) || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(FieldError::new(field(path), "must name a host"));
    }
    Ok(())
}

/// Non-empty, at most `max` bytes, without control characters.
fn text(path: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::new(field(path), "must not be empty"));
    }
    if value.len() > max {
        return Err(FieldError::new(field(path), format!("must be at most {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(field(path), "must not contain control characters"));
    }
    Ok(())
}

impl WebhookSettings {
    fn validate(&self) -> Result<(), FieldError> {
        web_url("webhook.url", &self.url)?;
        let secret_field = field("webhook.secret");
        let key = self
            .secret
            .strip_prefix("whsec_")
            .ok_or_else(|| FieldError::new(&secret_field, "must start with whsec_"))?;
        match base64::engine::general_purpose::STANDARD.decode(key) {
            Ok(bytes) if bytes.len() >= 16 => Ok(()),
            _ => Err(FieldError::new(secret_field, "must be whsec_ followed by the base64 of at least 16 bytes")),
        }
    }
}

impl EmailSettings {
    fn validate(&self) -> Result<(), FieldError> {
        if self.to.is_empty() {
            return Err(FieldError::new(field("email.to"), "needs at least one recipient when channels include EMAIL"));
        }
        for (i, address) in self.to.iter().enumerate() {
            let path = format!("email.to[{i}]");
            text(&path, address, 320)?;
            // The address part: inside <...> when a display name is given.
            let addr = match (address.rfind('<'), address.rfind('>')) {
                (Some(open), Some(close)) if open < close => &address[open + 1..close],
                _ => address.trim(),
            };
            match addr.rsplit_once('@') {
                Some((local, domain))
                    if !local.is_empty() && !domain.is_empty() && !addr.contains(char::is_whitespace) => {}
                _ => {
                    return Err(FieldError::new(
                        field(&path),
                        "must be an email address (a@example.com or Name <a@example.com>)",
                    ))
                }
            }
        }
        if let Some(locale) = &self.locale {
            let valid = !locale.is_empty()
                && locale.len() <= 35
                && locale.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                return Err(FieldError::new(field("email.locale"), "must be a locale such as en or de-AT"));
            }
        }
        Ok(())
    }
}

impl SftpSettings {
    fn validate(&self) -> Result<(), FieldError> {
        text("sftp.host", &self.host, 253)?;
        if self.host.contains(char::is_whitespace) {
            return Err(FieldError::new(field("sftp.host"), "must be a host name or address without spaces"));
        }
        if self.port == 0 {
            return Err(FieldError::new(field("sftp.port"), "must be between 1 and 65535"));
        }
        text("sftp.username", &self.username, 255)?;
        match (&self.password, &self.private_key) {
            (Some(_), Some(_)) => {
                return Err(FieldError::new(field("sftp.private_key"), "give either password or private_key, not both"))
            }
            (None, None) => return Err(FieldError::new(field("sftp.password"), "password or private_key is required")),
            (Some(password), None) => {
                if password.is_empty() || password.contains('\0') {
                    return Err(FieldError::new(field("sftp.password"), "must be non-empty text"));
                }
                if self.passphrase.is_some() {
                    return Err(FieldError::new(field("sftp.passphrase"), "only applies to a private_key"));
                }
            }
            (None, Some(key)) => {
                if !(key.contains("-----BEGIN ") && key.contains("PRIVATE KEY-----")) || key.contains('\0') {
                    return Err(FieldError::new(
                        field("sftp.private_key"),
                        "must be the text of an OpenSSH or PEM private key (-----BEGIN ... PRIVATE KEY-----)",
                    ));
                }
                if self.passphrase.as_deref().is_some_and(|p| p.contains('\0')) {
                    return Err(FieldError::new(field("sftp.passphrase"), "must not contain U+0000"));
                }
            }
        }
        if !host_key_pin(&self.host_key) {
            return Err(FieldError::new(
                field("sftp.host_key"),
                "must be an OpenSSH public key line (ssh-ed25519 AAAA...) or a SHA256: fingerprint (ssh-keygen -lf)",
            ));
        }
        text("sftp.directory", &self.directory, 1024)
    }
}

/// Whether `pin` is a `SHA256:` fingerprint (32 bytes of base64, padded or not) or a public key
/// line `<type> <base64 blob> [comment]` whose blob starts with its own type, as OpenSSH writes it.
fn host_key_pin(pin: &str) -> bool {
    let pin = pin.trim();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s.trim_end_matches('=')).ok();
    if let Some(encoded) = pin.strip_prefix("SHA256:") {
        return b64(encoded).is_some_and(|bytes| bytes.len() == 32);
    }
    let mut parts = pin.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else { return false };
    let Some(blob) = b64(blob) else { return false };
    let Some(len) = blob.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) else {
        return false;
    };
    blob.get(4..4 + len).is_some_and(|name| name == kind.as_bytes())
}

impl MobilePushSettings {
    fn validate(&self) -> Result<(), FieldError> {
        let (needed, unwanted) = match self.provider {
            PushProvider::Fcm | PushProvider::Apns => {
                (("device_token", &self.device_token), ("topic_url", &self.topic_url))
            }
            PushProvider::Ntfy => (("topic_url", &self.topic_url), ("device_token", &self.device_token)),
        };
        let provider = match self.provider {
            PushProvider::Fcm => "FCM",
            PushProvider::Apns => "APNS",
            PushProvider::Ntfy => "NTFY",
        };
        if unwanted.1.is_some() {
            return Err(FieldError::new(
                field(&format!("mobile_push.{}", unwanted.0)),
                format!("does not apply to provider {provider}"),
            ));
        }
        if self.dead_tokens.len() > Self::MAX_DEAD_TOKENS {
            return Err(FieldError::new(
                field("mobile_push.dead_tokens"),
                format!("holds at most {} tokens", Self::MAX_DEAD_TOKENS),
            ));
        }
        for (i, token) in self.dead_tokens.iter().enumerate() {
            if token.is_empty() || token.len() > 4096 || token.chars().any(char::is_control) {
                return Err(FieldError::new(
                    field(&format!("mobile_push.dead_tokens[{i}]")),
                    "must be a token or topic URL (1 to 4096 bytes, no control characters)",
                ));
            }
        }
        let path = format!("mobile_push.{}", needed.0);
        let value = needed
            .1
            .as_deref()
            .ok_or_else(|| FieldError::new(field(&path), format!("is required for provider {provider}")))?;
        match self.provider {
            PushProvider::Ntfy => web_url(&path, value),
            PushProvider::Apns
                if !value.chars().all(|c| c.is_ascii_hexdigit()) || value.is_empty() || value.len() > 200 =>
            {
                Err(FieldError::new(field(&path), "must be the APNs device token in hex"))
            }
            _ if value.is_empty() || value.len() > 4096 || !value.chars().all(|c| c.is_ascii_graphic()) => {
                Err(FieldError::new(field(&path), "must be the registration token (printable ASCII, no spaces)"))
            }
            _ => Ok(()),
        }
    }
}

impl SlackSettings {
    fn validate(&self) -> Result<(), FieldError> {
        web_url("slack.webhook_url", &self.webhook_url)?;
        if let Some(link) = &self.link {
            web_url("slack.link", link)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJO+rYgqfW01X4GFoveyekcWNRYZ3k+sSJm+dwUJSINY host";
    const FINGERPRINT: &str = "SHA256:3l2WbMFMFMLFrwrRXKFHaZZgYmra8EyDYG+Rg8EoIxg";

    fn sftp() -> SftpSettings {
        SftpSettings {
            host: "sftp.example.com".into(),
            port: 22,
            username: "reports".into(),
            password: Some("hunter2".into()),
            private_key: None,
            passphrase: None,
            host_key: HOST_KEY.into(),
            directory: "inbox".into(),
        }
    }

    fn error_field(settings: &NotificationSettings, channel: DeliveryChannel) -> String {
        settings.validate_for(channel).expect_err("invalid").field
    }

    #[test]
    fn each_channel_needs_its_settings() {
        let empty = NotificationSettings::default();
        for (channel, key) in [
            (DeliveryChannel::ApiWebhook, "webhook"),
            (DeliveryChannel::Email, "email"),
            (DeliveryChannel::Sftp, "sftp"),
            (DeliveryChannel::MobilePush, "mobile_push"),
            (DeliveryChannel::SlackIntegration, "slack"),
        ] {
            assert_eq!(error_field(&empty, channel), format!("{PREFIX}.{key}"));
        }
        assert!(empty.validate_for(DeliveryChannel::DashboardNotification).is_ok());
    }

    #[test]
    fn sftp_settings_name_the_field() {
        let ok = NotificationSettings { sftp: Some(Box::new(sftp())), ..Default::default() };
        assert_eq!(ok.validate_for(DeliveryChannel::Sftp), Ok(()));
        let fingerprint = SftpSettings { host_key: FINGERPRINT.into(), ..sftp() };
        assert!(NotificationSettings { sftp: Some(Box::new(fingerprint)), ..Default::default() }
            .validate_for(DeliveryChannel::Sftp)
            .is_ok());
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbg==\n-----END OPENSSH PRIVATE KEY-----\n";
        let cases = [
            (SftpSettings { host_key: "ssh-ed25519 notbase64!".into(), ..sftp() }, "sftp.host_key"),
            (
                SftpSettings {
                    host_key: "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIJO+rYgqfW01X4GFoveyekcWNRYZ3k+sSJm+dwUJSINY".into(),
                    ..sftp()
                },
                "sftp.host_key",
            ),
            (SftpSettings { host_key: "SHA256:c2hvcnQ".into(), ..sftp() }, "sftp.host_key"),
            (SftpSettings { host: "".into(), ..sftp() }, "sftp.host"),
            (SftpSettings { port: 0, ..sftp() }, "sftp.port"),
            (SftpSettings { username: "".into(), ..sftp() }, "sftp.username"),
            (SftpSettings { password: None, ..sftp() }, "sftp.password"),
            (SftpSettings { private_key: Some(key.into()), ..sftp() }, "sftp.private_key"),
            (SftpSettings { password: None, private_key: Some("not a key".into()), ..sftp() }, "sftp.private_key"),
            (SftpSettings { passphrase: Some("p".into()), ..sftp() }, "sftp.passphrase"),
            (SftpSettings { directory: "".into(), ..sftp() }, "sftp.directory"),
        ];
        for (settings, path) in cases {
            let settings = NotificationSettings { sftp: Some(Box::new(settings)), ..Default::default() };
            assert_eq!(error_field(&settings, DeliveryChannel::Sftp), format!("{PREFIX}.{path}"));
        }
        let with_key =
            SftpSettings { password: None, private_key: Some(key.into()), passphrase: Some("p".into()), ..sftp() };
        assert!(NotificationSettings { sftp: Some(Box::new(with_key)), ..Default::default() }
            .validate_for(DeliveryChannel::Sftp)
            .is_ok());
    }

    #[test]
    fn sftp_port_defaults_to_22_and_unknown_keys_are_refused() {
        let parsed: SftpSettings = serde_json::from_str(
            r#"{"host": "h", "username": "u", "password": "p", "host_key": "SHA256:x", "directory": "d"}"#,
        )
        .expect("valid");
        assert_eq!(parsed.port, 22);
        let error = serde_json::from_str::<SftpSettings>(r#"{"host": "h", "usr": "u"}"#).expect_err("typo");
        assert!(error.to_string().contains("usr"), "{error}");
    }

    #[test]
    fn push_settings_need_the_right_target() {
        let check = |provider, device_token: Option<&str>, topic_url: Option<&str>| {
            let push = MobilePushSettings {
                provider,
                device_token: device_token.map(String::from),
                topic_url: topic_url.map(String::from),
                dead_tokens: Vec::new(),
            };
            NotificationSettings { mobile_push: Some(push), ..Default::default() }
                .validate_for(DeliveryChannel::MobilePush)
                .map_err(|e| e.field.trim_start_matches(&format!("{PREFIX}.")).to_string())
        };
        assert_eq!(check(PushProvider::Fcm, Some("fcm:token-1"), None), Ok(()));
        assert_eq!(check(PushProvider::Apns, Some("a1b2c3"), None), Ok(()));
        assert_eq!(check(PushProvider::Ntfy, None, Some("https://ntfy.sh/topic")), Ok(()));
        assert_eq!(check(PushProvider::Fcm, None, None), Err("mobile_push.device_token".into()));
        assert_eq!(check(PushProvider::Apns, Some("not hex"), None), Err("mobile_push.device_token".into()));
        assert_eq!(check(PushProvider::Ntfy, None, Some("ftp://x")), Err("mobile_push.topic_url".into()));
        assert_eq!(
            check(PushProvider::Ntfy, Some("t"), Some("https://ntfy.sh/t")),
            Err("mobile_push.device_token".into())
        );
        assert_eq!(check(PushProvider::Fcm, Some("t"), Some("https://ntfy.sh/t")), Err("mobile_push.topic_url".into()));
    }

    #[test]
    fn dead_tokens_are_checked_and_mark_the_target() {
        let push = |provider, device_token: Option<&str>, topic_url: Option<&str>, dead: &[&str]| MobilePushSettings {
            provider,
            device_token: device_token.map(String::from),
            topic_url: topic_url.map(String::from),
            dead_tokens: dead.iter().map(|t| t.to_string()).collect(),
        };
        assert!(!push(PushProvider::Fcm, Some("t1"), None, &[]).target_is_dead());
        assert!(!push(PushProvider::Fcm, Some("t2"), None, &["t1"]).target_is_dead(), "an old token's mark");
        assert!(push(PushProvider::Apns, Some("ab12"), None, &["t1", "ab12"]).target_is_dead());
        assert!(push(PushProvider::Ntfy, None, Some("https://n/t"), &["https://n/t"]).target_is_dead());
        assert_eq!(push(PushProvider::Ntfy, None, Some("https://n/t"), &[]).target(), Some("https://n/t"));

        let check = |settings: MobilePushSettings| {
            NotificationSettings { mobile_push: Some(settings), ..Default::default() }
                .validate_for(DeliveryChannel::MobilePush)
                .map_err(|e| e.field.trim_start_matches(&format!("{PREFIX}.")).to_string())
        };
        assert_eq!(check(push(PushProvider::Fcm, Some("t2"), None, &["t1"])), Ok(()));
        assert_eq!(
            check(push(PushProvider::Fcm, Some("t2"), None, &["t1", ""])),
            Err("mobile_push.dead_tokens[1]".into())
        );
        let many: Vec<String> = (0..=MobilePushSettings::MAX_DEAD_TOKENS).map(|i| format!("t{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(check(push(PushProvider::Fcm, Some("t"), None, &many)), Err("mobile_push.dead_tokens".into()));
        let parsed: MobilePushSettings = serde_json::from_str(r#"{"provider": "FCM", "device_token": "t"}"#).unwrap();
        assert!(parsed.dead_tokens.is_empty(), "optional");
        assert!(!serde_json::to_string(&parsed).unwrap().contains("dead_tokens"), "left out when empty");
    }

    #[test]
    fn slack_and_email_settings_name_the_field() {
        let slack: SlackSettings =
            serde_json::from_str(r#"{"webhook_url": "https://hooks.slack.com/services/T/B/x"}"#).unwrap();
        assert_eq!(slack.kind, ChatKind::Slack);
        let teams: SlackSettings =
            serde_json::from_str(r#"{"kind": "TEAMS", "webhook_url": "https://x.example/w"}"#).unwrap();
        assert_eq!(teams.kind, ChatKind::Teams);
        let bad = NotificationSettings {
            slack: Some(SlackSettings { link: Some("javascript:x".into()), ..slack }),
            ..Default::default()
        };
        assert_eq!(error_field(&bad, DeliveryChannel::SlackIntegration), format!("{PREFIX}.slack.link"));

        let email = |to: &[&str], locale: Option<&str>| NotificationSettings {
            email: Some(EmailSettings {
                to: to.iter().map(|s| s.to_string()).collect(),
                locale: locale.map(String::from),
            }),
            ..Default::default()
        };
        assert!(email(&["a@example.com", "Ann <ann@example.com>"], Some("de-AT"))
            .validate_for(DeliveryChannel::Email)
            .is_ok());
        assert_eq!(error_field(&email(&[], None), DeliveryChannel::Email), format!("{PREFIX}.email.to"));
        assert_eq!(
            error_field(&email(&["a@example.com", "nobody"], None), DeliveryChannel::Email),
            format!("{PREFIX}.email.to[1]")
        );
        assert_eq!(
            error_field(&email(&["a@example.com"], Some("en US")), DeliveryChannel::Email),
            format!("{PREFIX}.email.locale")
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let settings = NotificationSettings {
            sftp: Some(Box::new(sftp())),
            slack: Some(SlackSettings {
                kind: ChatKind::Teams,
                webhook_url: "https://hooks.example/SECRETPATH".into(),
                link: None,
            }),
            mobile_push: Some(MobilePushSettings {
                provider: PushProvider::Fcm,
                device_token: Some("TOKEN123".into()),
                topic_url: None,
                dead_tokens: vec!["TOKEN122".into()],
            }),
            ..Default::default()
        };
        let printed = format!("{settings:?}");
        for secret in ["hunter2", "SECRETPATH", "TOKEN123", "TOKEN122"] {
            assert!(!printed.contains(secret), "{printed}");
        }
    }
}
