//! The chat channel's settings: how the one HTTP client shared by Slack and Teams deliveries pools
//! and dials. Webhook URLs are not here: each subscription brings its own in the destination.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of the chat channel's HTTP client. Every field has a default, so an empty table is valid;
/// unknown keys are rejected so that a typo is an error. Durations are written as `"5s"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    /// Idle keep-alive connections kept per host. All Slack webhooks share one host
    /// (`hooks.slack.com`), so a pool avoids a TLS handshake per message.
    pub pool_max_idle_per_host: usize,
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Bound on establishing a connection; the per-request deadline still applies.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    pub user_agent: String,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            pool_max_idle_per_host: 16,
            pool_idle_timeout: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(5),
            user_agent: concat!("repdist/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// Why the chat channel could not be set up. Config errors name the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ChatSetupError {
    #[error("chat.{key}: {reason}")]
    InvalidConfig { key: &'static str, reason: &'static str },
    #[error("cannot build the chat HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl ChatConfig {
    /// Checks what serde cannot: values that parse but would make every delivery fail.
    pub fn validate(&self) -> Result<(), ChatSetupError> {
        if self.connect_timeout.is_zero() {
            return Err(ChatSetupError::InvalidConfig { key: "connect_timeout", reason: "must be greater than zero" });
        }
        if self.user_agent.is_empty() || reqwest::header::HeaderValue::from_str(&self.user_agent).is_err() {
            return Err(ChatSetupError::InvalidConfig {
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
    fn an_empty_table_gives_valid_defaults() {
        let config: ChatConfig = serde_json::from_str("{}").expect("defaults");
        assert_eq!(config, ChatConfig::default());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn unknown_keys_are_rejected_and_validation_names_the_key() {
        let error = serde_json::from_str::<ChatConfig>(r#"{"conect_timeout":"1s"}"#).expect_err("typo");
        assert!(error.to_string().contains("conect_timeout"), "{error}");
        let config = ChatConfig { connect_timeout: Duration::ZERO, ..Default::default() };
        let error = config.validate().expect_err("zero timeout");
        assert_eq!(error.to_string(), "chat.connect_timeout: must be greater than zero");
        let config = ChatConfig { user_agent: String::new(), ..Default::default() };
        assert!(matches!(config.validate(), Err(ChatSetupError::InvalidConfig { key: "user_agent", .. })));
    }
}
