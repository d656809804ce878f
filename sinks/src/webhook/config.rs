//! The webhook channel's settings: how the one shared HTTP client pools and dials. The deadline of a
//! request is not here: it comes with each [`crate::DeliveryRequest`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of the webhook channel's HTTP client. Every field has a default, so an empty table is a
/// valid configuration; unknown keys are rejected so that a typo is an error rather than a silently
/// ignored setting. Durations are written as `"5s"`, `"90s"`, `"1m 30s"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Idle keep-alive connections kept per host, so that a busy endpoint is not dialled (and, over
    /// TLS, handshaken) again for every delivery. 0 disables keeping idle connections.
    pub pool_max_idle_per_host: usize,
    /// How long an idle connection is kept before it is closed.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Bound on establishing a connection (TCP and TLS). The per-request deadline still applies, so
    /// the effective bound is the smaller of the two.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Sent as `user-agent`, so receivers can tell repdist's deliveries apart in their logs.
    pub user_agent: String,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            pool_max_idle_per_host: 64,
            pool_idle_timeout: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(5),
            user_agent: concat!("repdist/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// Why the webhook channel could not be set up. Config errors name the offending key.
#[derive(Debug, thiserror::Error)]
pub enum WebhookSetupError {
    #[error("webhook.{key}: {reason}")]
    InvalidConfig { key: &'static str, reason: &'static str },
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl WebhookConfig {
    /// Checks what serde cannot: values that parse but would make every delivery fail.
    pub fn validate(&self) -> Result<(), WebhookSetupError> {
        if self.connect_timeout.is_zero() {
            return Err(WebhookSetupError::InvalidConfig {
                key: "connect_timeout",
                reason: "must be greater than zero",
            });
        }
        if self.user_agent.is_empty() || reqwest::header::HeaderValue::from_str(&self.user_agent).is_err() {
            return Err(WebhookSetupError::InvalidConfig {
                key: "user_agent",
                reason: "must be a non-empty, printable ASCII header value",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_table_gives_the_defaults() {
        let config: WebhookConfig = serde_json::from_str("{}").expect("defaults");
        assert_eq!(config, WebhookConfig::default());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn durations_are_human_readable() {
        let config: WebhookConfig = serde_json::from_str(
            r#"{"connect_timeout": "250ms", "pool_idle_timeout": "1m 30s", "pool_max_idle_per_host": 8}"#,
        )
        .expect("valid config");
        assert_eq!(config.connect_timeout, Duration::from_millis(250));
        assert_eq!(config.pool_idle_timeout, Duration::from_secs(90));
        assert_eq!(config.pool_max_idle_per_host, 8);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = serde_json::from_str::<WebhookConfig>(r#"{"conect_timeout": "1s"}"#).expect_err("a typo");
        assert!(error.to_string().contains("conect_timeout"), "{error}");
    }

    #[test]
    fn validation_names_the_key() {
        let config = WebhookConfig { connect_timeout: Duration::ZERO, ..Default::default() };
        let error = config.validate().expect_err("zero connect timeout");
        assert_eq!(error.to_string(), "webhook.connect_timeout: must be greater than zero");

        let config = WebhookConfig { user_agent: "bad\nagent".into(), ..Default::default() };
        assert!(matches!(config.validate(), Err(WebhookSetupError::InvalidConfig { key: "user_agent", .. })));
    }
}
