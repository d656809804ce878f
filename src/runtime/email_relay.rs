//! The EMAIL channel's SMTP relay. It comes from the spec's `delivery_channels` table when an
//! enabled `EMAIL` row is there (the first by `channel_id`), otherwise from the `[email]` section of
//! the configuration, otherwise there is none and EMAIL is not offered. A row's `channel_config`
//! names the relay (`host`, `port`, `tls`, `username` with `password`, `from`); everything else
//! (pool, attachment limit, link base, default locale) comes from `[email]` or its defaults.
//!
//! The relay is swapped whenever an EMAIL row is created, enabled or disabled, so the next attempt
//! uses it without a restart; attempts under way finish on the relay they started with.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value};
use sinks::email::{SmtpAuth, TlsMode};
use sinks::{DeliveryRequest, EmailConfig, EmailSink, Receipt, Sink, SinkError, TemplateStore};

use crate::store::{Store, StoredChannel};

/// An `EMAIL` row's `channel_config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelayChannelConfig {
    host: String,
    port: Option<u16>,
    tls: Option<TlsMode>,
    username: Option<String>,
    password: Option<String>,
    from: Option<String>,
}

/// Why a relay config was refused: the field (under `channel_config`) and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RelayConfigError {
    pub field: String,
    pub reason: String,
}

impl RelayConfigError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        RelayConfigError { field: field.into(), reason: reason.into() }
    }
}

/// Where the relay in use came from, for logs and errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelaySource {
    Channel(String),
    ConfigFile,
}

impl std::fmt::Display for RelaySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelaySource::Channel(id) => write!(f, "delivery channel `{id}`"),
            RelaySource::ConfigFile => f.write_str("the [email] section"),
        }
    }
}

/// The EMAIL sink, delegating to the relay currently configured.
pub struct EmailRelay {
    /// The `[email]` section: the relay when no row names one, and the other settings of a row's.
    base: Option<EmailConfig>,
    /// The `[email]` section's relay, built once: falling back to it keeps its connection pool.
    base_sink: Option<Arc<EmailSink>>,
    templates: Arc<TemplateStore>,
    current: RwLock<Option<(RelaySource, Arc<EmailSink>)>>,
}

impl EmailRelay {
    /// Starts with the `[email]` section's relay, if any (see [`EmailRelay::reload`] for the rows).
    pub fn new(base: Option<EmailConfig>, templates: Arc<TemplateStore>) -> Result<EmailRelay, sinks::EmailSetupError> {
        let base_sink = match &base {
            Some(config) => Some(Arc::new(EmailSink::with_templates(config.clone(), templates.clone())?)),
            None => None,
        };
        let current = base_sink.clone().map(|sink| (RelaySource::ConfigFile, sink));
        Ok(EmailRelay { base, base_sink, templates, current: RwLock::new(current) })
    }

    /// Checks an `EMAIL` row's `channel_config` as a relay, as far as it can be without dialling:
    /// the field named in the error is under `channel_config`.
    pub fn check(&self, channel_config: &Map<String, Value>) -> Result<(), RelayConfigError> {
        self.sink_of(channel_config).map(|_| ())
    }

    /// The relay an `EMAIL` row's `channel_config` stands for.
    fn sink_of(&self, channel_config: &Map<String, Value>) -> Result<EmailSink, RelayConfigError> {
        let relay: RelayChannelConfig = serde_json::from_value(Value::Object(channel_config.clone())).map_err(|e| {
            let message = e.to_string();
            // serde names the offending key in its message: `unknown field `hots``, `missing field `host``.
            let field = message.split('`').nth(1).filter(|_| message.contains("field")).unwrap_or("");
            let field = if field.is_empty() { "channel_config".to_string() } else { format!("channel_config.{field}") };
            RelayConfigError::new(field, message)
        })?;
        let auth = match (relay.username, relay.password) {
            (Some(username), Some(password)) => Some(SmtpAuth { username, password }),
            (None, None) => None,
            (Some(_), None) => return Err(RelayConfigError::new("channel_config.password", "a username needs a password")),
            (None, Some(_)) => return Err(RelayConfigError::new("channel_config.username", "a password needs a username")),
        };
        let base = self.base.clone().unwrap_or_default();
        let config = EmailConfig {
            host: relay.host,
            port: relay.port,
            tls: relay.tls.unwrap_or(base.tls),
            auth,
            from: relay.from.unwrap_or(base.from.clone()),
            ..base
        };
        // Building the sink checks the rest (the From address, TLS parameters) without connecting.
        EmailSink::with_templates(config, self.templates.clone()).map_err(|e| match e {
            sinks::EmailSetupError::InvalidConfig { key, reason } => {
                RelayConfigError::new(format!("channel_config.{}", key.strip_prefix("auth.").unwrap_or(key)), reason)
            }
            other => RelayConfigError::new("channel_config", other.to_string()),
        })
    }

    /// Picks the relay again from `store`'s `delivery_channels` (an enabled EMAIL row, the first by
    /// channel_id) or the `[email]` section. A row whose config no longer builds is skipped, logged.
    pub async fn reload(&self, store: &dyn Store) -> Result<(), crate::store::StoreError> {
        let channels = store.channels().await?;
        self.choose(&channels);
        Ok(())
    }

    fn choose(&self, channels: &[StoredChannel]) {
        let mut rows: Vec<&StoredChannel> =
            channels.iter().filter(|c| c.enabled && c.channel_type == dataflows::delivery::DeliveryChannel::Email).collect();
        rows.sort_by(|a, b| a.channel_id.cmp(&b.channel_id));
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let in_use = current.clone();
        let from_row = rows.into_iter().find_map(|row| {
            let source = RelaySource::Channel(row.channel_id.clone());
            // A row's config never changes (rows are created, enabled and disabled, not edited), so
            // the relay in use is kept, with its connections.
            if let Some((in_use_source, sink)) = &in_use {
                if *in_use_source == source {
                    return Some((source, sink.clone()));
                }
            }
            match self.sink_of(&row.channel_config) {
                Ok(sink) => Some((source, Arc::new(sink))),
                Err(error) => {
                    tracing::warn!(channel_id = %row.channel_id, %error, "an EMAIL delivery channel cannot serve as the relay; skipped");
                    None
                }
            }
        });
        let next = from_row.or_else(|| self.base_sink.clone().map(|sink| (RelaySource::ConfigFile, sink)));
        let before = in_use.map(|(source, _)| source);
        let after = next.as_ref().map(|(source, _)| source.clone());
        if before != after {
            tracing::info!(from = ?before, to = ?after, "EMAIL relay changed");
        }
        *current = next;
    }

    /// Where the relay in use comes from; `None` when there is none.
    pub fn source(&self) -> Option<RelaySource> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(source, _)| source.clone())
    }
}

#[async_trait]
impl Sink for EmailRelay {
    fn name(&self) -> &'static str {
        EmailSink::CHANNEL
    }

    async fn deliver(&self, request: &DeliveryRequest) -> Result<Receipt, SinkError> {
        let sink = self.current.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(_, sink)| sink.clone());
        match sink {
            Some(sink) => sink.deliver(request).await,
            None => Err(SinkError::permanent(
                "no SMTP relay is configured: create an enabled EMAIL delivery channel or set the [email] section",
            )),
        }
    }
}
