//! The HTTP client settings the HTTP channels share (webhooks, and Slack/Teams): how the one client
//! of each channel pools and dials, and whether it may reach private addresses. The deadline of a
//! request is not here: it comes with each [`crate::DeliveryRequest`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::egress;

/// Every field has a default, so an empty table is a valid configuration; unknown keys are
/// rejected so that a typo is an error rather than a silently ignored setting. Durations are
/// written as `"5s"`, `"90s"`, `"1m 30s"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpClientConfig {
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
    /// Deliver to loopback, private and link-local addresses too (tests, the demo, an internal
    /// deployment). Off by default: see [`crate::egress`].
    pub allow_private_destinations: bool,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        HttpClientConfig {
            pool_max_idle_per_host: 64,
            pool_idle_timeout: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(5),
            user_agent: concat!("repdist/", env!("CARGO_PKG_VERSION")).to_string(),
            allow_private_destinations: false,
        }
    }
}

/// Why a channel's HTTP client could not be set up. Config errors name the section and key.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("{section}.{key}: {reason}")]
    InvalidConfig { section: &'static str, key: &'static str, reason: &'static str },
    #[error("cannot build the {section} HTTP client: {source}")]
    Client { section: &'static str, source: reqwest::Error },
}

impl HttpClientConfig {
    /// Checks what serde cannot: values that parse but would make every delivery fail. `section`
    /// names the configuration table in errors (`webhook`, `chat`).
    pub fn validate(&self, section: &'static str) -> Result<(), HttpClientError> {
        if self.connect_timeout.is_zero() {
            return Err(HttpClientError::InvalidConfig { section, key: "connect_timeout", reason: "must be greater than zero" });
        }
        if self.user_agent.is_empty() || reqwest::header::HeaderValue::from_str(&self.user_agent).is_err() {
            return Err(HttpClientError::InvalidConfig {
                section,
                key: "user_agent",
                reason: "must be a non-empty, printable ASCII header value",
            });
        }
        Ok(())
    }

    /// The channel's client: pooled, redirects never followed (a redirect is classified, see
    /// [`crate::http_classify`]), names resolved to public addresses only unless allowed.
    pub fn build(&self, section: &'static str) -> Result<reqwest::Client, HttpClientError> {
        self.validate(section)?;
        let builder = reqwest::Client::builder()
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .pool_idle_timeout(self.pool_idle_timeout)
            .connect_timeout(self.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(self.user_agent.clone());
        egress::guard(builder, self.allow_private_destinations).build().map_err(|source| HttpClientError::Client { section, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_table_gives_valid_defaults() {
        let config: HttpClientConfig = serde_json::from_str("{}").expect("defaults");
        assert_eq!(config, HttpClientConfig::default());
        assert!(config.validate("webhook").is_ok());
        assert!(!config.allow_private_destinations, "private destinations are refused unless allowed");
    }

    #[test]
    fn durations_are_human_readable() {
        let config: HttpClientConfig = serde_json::from_str(
            r#"{"connect_timeout": "250ms", "pool_idle_timeout": "1m 30s", "pool_max_idle_per_host": 8}"#,
        )
        .expect("valid config");
        assert_eq!(config.connect_timeout, Duration::from_millis(250));
        assert_eq!(config.pool_idle_timeout, Duration::from_secs(90));
        assert_eq!(config.pool_max_idle_per_host, 8);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = serde_json::from_str::<HttpClientConfig>(r#"{"conect_timeout": "1s"}"#).expect_err("a typo");
        assert!(error.to_string().contains("conect_timeout"), "{error}");
    }

    #[test]
    fn validation_names_the_section_and_key() {
        let config = HttpClientConfig { connect_timeout: Duration::ZERO, ..Default::default() };
        let error = config.validate("webhook").expect_err("zero connect timeout");
        assert_eq!(error.to_string(), "webhook.connect_timeout: must be greater than zero");
        let config = HttpClientConfig { user_agent: "bad\nagent".into(), ..Default::default() };
        assert!(matches!(config.validate("chat"), Err(HttpClientError::InvalidConfig { section: "chat", key: "user_agent", .. })));
    }
}
