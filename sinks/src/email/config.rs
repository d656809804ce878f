//! The email channel's settings: which SMTP relay to hand messages to, how to reach it, who the
//! messages are from, and how large an attachment may be before a link is sent instead. Recipients,
//! locale and the report come with each [`crate::DeliveryRequest`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;
use serde::Deserialize;

/// How the connection to the relay is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain SMTP. Only for a relay on the same host or a trusted network (and for tests).
    None,
    /// Plain connect, then `STARTTLS`, which is required: a relay that does not offer it fails the
    /// delivery rather than receiving the message in the clear. Usually port 587.
    Starttls,
    /// TLS from the first byte ("SMTPS"). Usually port 465.
    Implicit,
}

impl TlsMode {
    /// The port used when `port` is not set.
    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::None => 25,
            TlsMode::Starttls => 587,
            TlsMode::Implicit => 465,
        }
    }
}

/// SMTP AUTH credentials (PLAIN or LOGIN, whichever the relay offers). `Debug` redacts the password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpAuth {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for SmtpAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpAuth").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// Settings of the email channel. Every field has a default, so an empty table is a valid
/// configuration (a plain relay on `localhost:25`); unknown keys are rejected so that a typo is an
/// error rather than a silently ignored setting. Durations are written as `"5s"`, `"1m 30s"`.
///
/// There is no separate "command timeout": lettre's async transport applies its timeout to the TCP
/// connect only, and the whole SMTP exchange is bounded by each request's own deadline.
///
/// Not `Serialize`, so that the password cannot end up in a dumped configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// The relay's host name (also the name its TLS certificate is checked against).
    pub host: String,
    /// The relay's port; [`TlsMode::default_port`] when unset.
    pub port: Option<u16>,
    pub tls: TlsMode,
    /// A PEM file of CA certificates trusted for the relay's certificate, besides the public roots
    /// (webpki-roots): for a relay whose certificate comes from a private CA. Read when the channel
    /// is set up; only with `tls = "starttls"` or `"implicit"`.
    pub tls_ca_file: Option<PathBuf>,
    /// Absent: no SMTP AUTH.
    pub auth: Option<SmtpAuth>,
    /// The `From` header and envelope sender, e.g. `"Reports <reports@example.com>"`.
    pub from: String,
    /// Bound on establishing a connection (TCP). The per-request deadline still applies.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Largest report file sent as an attachment. A larger file is sent as a link instead, because
    /// relays and mailboxes commonly refuse messages above 10 to 25 MiB (and base64 adds a third).
    pub attachment_max_bytes: u64,
    /// Prefix of the link sent for a file too large to attach: the link is this URL followed by the
    /// file's name. Unset: the link is the file's path (useful when recipients share the file system).
    pub link_base_url: Option<String>,
    /// Most connections kept open to the relay, so that a burst of deliveries reuses connections
    /// (and TLS sessions) instead of dialling for every message.
    pub pool_max_size: u32,
    /// How long an idle pooled connection is kept.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// The locale whose templates are used when a subscriber has none, or none exists for theirs.
    pub default_locale: String,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            host: "localhost".to_string(),
            port: None,
            tls: TlsMode::None,
            tls_ca_file: None,
            auth: None,
            from: "repdist <repdist@localhost>".to_string(),
            connect_timeout: Duration::from_secs(5),
            attachment_max_bytes: 10 * 1024 * 1024,
            link_base_url: None,
            pool_max_size: 8,
            pool_idle_timeout: Duration::from_secs(60),
            default_locale: "en".to_string(),
        }
    }
}

/// Why the email channel could not be set up. Config errors name the offending key.
#[derive(Debug, thiserror::Error)]
pub enum EmailSetupError {
    #[error("email.{key}: {reason}")]
    InvalidConfig { key: &'static str, reason: String },
    #[error("cannot set up TLS for the SMTP relay: {0}")]
    Tls(#[from] lettre::transport::smtp::Error),
}

fn invalid(key: &'static str, reason: impl Into<String>) -> EmailSetupError {
    EmailSetupError::InvalidConfig { key, reason: reason.into() }
}

impl EmailConfig {
    /// Checks what serde cannot: values that parse but would make every delivery fail.
    pub fn validate(&self) -> Result<(), EmailSetupError> {
        if self.host.trim().is_empty() || self.host.contains(char::is_whitespace) {
            return Err(invalid("host", "must be a host name or address without spaces"));
        }
        if self.port == Some(0) {
            return Err(invalid("port", "must be between 1 and 65535"));
        }
        if self.tls_ca_file.is_some() && self.tls == TlsMode::None {
            return Err(invalid("tls_ca_file", "only applies with tls = \"starttls\" or \"implicit\""));
        }
        if let Some(auth) = &self.auth {
            if auth.username.is_empty() {
                return Err(invalid("auth.username", "must not be empty"));
            }
        }
        self.from_mailbox()?;
        if self.connect_timeout.is_zero() {
            return Err(invalid("connect_timeout", "must be greater than zero"));
        }
        if self.attachment_max_bytes == 0 {
            return Err(invalid("attachment_max_bytes", "must be greater than zero (a link is sent above it)"));
        }
        if let Some(base) = &self.link_base_url {
            let scheme_ok = base.starts_with("https://") || base.starts_with("http://");
            if !scheme_ok || base.contains(char::is_whitespace) {
                return Err(invalid("link_base_url", "must be an http:// or https:// URL without spaces"));
            }
        }
        if self.pool_max_size == 0 {
            return Err(invalid("pool_max_size", "must be at least 1"));
        }
        if self.default_locale.trim().is_empty() {
            return Err(invalid("default_locale", "must not be empty"));
        }
        Ok(())
    }

    /// The port actually dialled.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.tls.default_port())
    }

    /// The certificates of `tls_ca_file`, read and parsed; `None` when it is not set. Errors name
    /// the key: an unreadable file, or one without a PEM certificate.
    pub fn extra_roots(&self) -> Result<Option<lettre::transport::smtp::client::Certificate>, EmailSetupError> {
        let Some(path) = &self.tls_ca_file else { return Ok(None) };
        let pem = std::fs::read(path).map_err(|e| invalid("tls_ca_file", format!("cannot read {}: {e}", path.display())))?;
        // lettre takes a PEM without any certificate as an empty list: refuse it here instead of
        // trusting nothing more than the public roots without saying so.
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            return Err(invalid("tls_ca_file", format!("{} holds no PEM certificate", path.display())));
        }
        lettre::transport::smtp::client::Certificate::from_pem(&pem)
            .map(Some)
            .map_err(|e| invalid("tls_ca_file", format!("{}: {e}", path.display())))
    }

    /// `from` parsed as a mailbox.
    pub fn from_mailbox(&self) -> Result<Mailbox, EmailSetupError> {
        self.from.parse::<Mailbox>().map_err(|e| invalid("from", format!("not an email address ({e})")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_table_gives_the_defaults() {
        let config: EmailConfig = serde_json::from_str("{}").expect("defaults");
        assert_eq!(config, EmailConfig::default());
        assert!(config.validate().is_ok());
        assert_eq!(config.effective_port(), 25);
    }

    #[test]
    fn a_full_table_parses() {
        let config: EmailConfig = serde_json::from_str(
            r#"{"host": "smtp.example.com", "tls": "implicit", "auth": {"username": "u", "password": "p"},
                "from": "Reports <reports@example.com>", "connect_timeout": "250ms",
                "attachment_max_bytes": 1024, "link_base_url": "https://files.example.com/reports/",
                "pool_max_size": 2, "pool_idle_timeout": "1m 30s", "default_locale": "de"}"#,
        )
        .expect("valid config");
        assert_eq!(config.tls, TlsMode::Implicit);
        assert_eq!(config.effective_port(), 465);
        assert_eq!(config.connect_timeout, Duration::from_millis(250));
        assert_eq!(config.pool_idle_timeout, Duration::from_secs(90));
        assert!(config.validate().is_ok());
        assert_eq!(config.from_mailbox().expect("mailbox").email.to_string(), "reports@example.com");
    }

    #[test]
    fn unknown_keys_and_tls_modes_are_rejected() {
        let error = serde_json::from_str::<EmailConfig>(r#"{"hots": "x"}"#).expect_err("a typo");
        assert!(error.to_string().contains("hots"), "{error}");
        let error = serde_json::from_str::<EmailConfig>(r#"{"tls": "ssl"}"#).expect_err("no such mode");
        assert!(error.to_string().contains("ssl"), "{error}");
        let error = serde_json::from_str::<EmailConfig>(r#"{"auth": {"username": "u", "pasword": "p"}}"#)
            .expect_err("a typo in auth");
        assert!(error.to_string().contains("pasword"), "{error}");
    }

    #[test]
    fn validation_names_the_key() {
        let cases = [
            (EmailConfig { host: " ".into(), ..Default::default() }, "host"),
            (EmailConfig { port: Some(0), ..Default::default() }, "port"),
            (EmailConfig { from: "not an address".into(), ..Default::default() }, "from"),
            (EmailConfig { connect_timeout: Duration::ZERO, ..Default::default() }, "connect_timeout"),
            (EmailConfig { attachment_max_bytes: 0, ..Default::default() }, "attachment_max_bytes"),
            (EmailConfig { link_base_url: Some("ftp://x".into()), ..Default::default() }, "link_base_url"),
            (EmailConfig { pool_max_size: 0, ..Default::default() }, "pool_max_size"),
            (EmailConfig { default_locale: "".into(), ..Default::default() }, "default_locale"),
            (EmailConfig { tls_ca_file: Some("/etc/ca.pem".into()), ..Default::default() }, "tls_ca_file"),
            (
                EmailConfig {
                    auth: Some(SmtpAuth { username: "".into(), password: "p".into() }),
                    ..Default::default()
                },
                "auth.username",
            ),
        ];
        for (config, key) in cases {
            let error = config.validate().expect_err(key);
            assert!(matches!(&error, EmailSetupError::InvalidConfig { key: k, .. } if *k == key), "{key}: {error}");
            assert!(error.to_string().starts_with(&format!("email.{key}: ")), "{error}");
        }
    }

    #[test]
    fn the_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let with = |path: PathBuf| EmailConfig { tls: TlsMode::Starttls, tls_ca_file: Some(path), ..Default::default() };
        assert!(EmailConfig::default().extra_roots().expect("no file").is_none());
        let missing = with(dir.path().join("missing.pem")).extra_roots().expect_err("missing");
        assert!(missing.to_string().starts_with("email.tls_ca_file: cannot read"), "{missing}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").expect("written");
        let error = with(empty).extra_roots().expect_err("no certificate");
        assert!(error.to_string().contains("holds no PEM certificate"), "{error}");
    }

    #[test]
    fn debug_redacts_the_password() {
        let config = EmailConfig {
            auth: Some(SmtpAuth { username: "mailer".into(), password: "hunter2".into() }),
            ..Default::default()
        };
        let printed = format!("{config:?}");
        assert!(printed.contains("mailer") && printed.contains("<redacted>"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }
}
