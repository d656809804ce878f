//! Server-side delivery channel configs (the spec's `delivery_channels` table): the SMTP relay, SFTP
//! hosts, push credentials a channel needs, kept by `channel_id`. They hold secrets, so every read
//! that leaves the server goes through [`StoredChannel::redacted`].

use chrono::{DateTime, Utc};
use dataflows::delivery::DeliveryChannel;
use serde::Serialize;
use serde_json::{Map, Value};

use super::StoreError;

/// A channel config to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewChannel {
    pub channel_id: String,
    pub channel_type: DeliveryChannel,
    pub channel_config: Map<String, Value>,
    pub enabled: bool,
}

/// A channel config as stored.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StoredChannel {
    pub channel_id: String,
    pub channel_type: DeliveryChannel,
    /// The channel's settings; secrets (`password`, `private_key`, `secret`, `token`, ...) read back masked.
    #[schema(value_type = Object)]
    pub channel_config: Map<String, Value>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
}

/// What a masked secret reads as.
pub const REDACTED: &str = "********";

/// Key names (or `_`-suffixes: `smtp_password`, `api_token`) whose values are secrets.
const SECRET_KEYS: [&str; 6] = ["password", "passphrase", "private_key", "secret", "token", "api_key"];

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|secret| key == *secret || key.ends_with(&format!("_{secret}")))
}

fn redact_value(value: &mut Value) {
    match value {
        Value::Object(map) => redact_map(map),
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        _ => {}
    }
}

fn redact_map(map: &mut Map<String, Value>) {
    for (key, value) in map.iter_mut() {
        if is_secret_key(key) && !value.is_null() {
            *value = Value::String(REDACTED.to_string());
        } else {
            redact_value(value);
        }
    }
}

impl StoredChannel {
    /// The channel with every secret value masked, at any depth: what the API shows.
    pub fn redacted(mut self) -> StoredChannel {
        redact_map(&mut self.channel_config);
        self
    }
}

/// Decodes the stored columns of one channel row (both backends store the same text forms).
pub(crate) fn decode(
    channel_id: String,
    channel_type: &str,
    channel_config: &str,
    enabled: bool,
    created_at: DateTime<Utc>,
) -> Result<StoredChannel, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt(format!("delivery channel `{channel_id}`: {message}"));
    let channel_type = DeliveryChannel::parse(channel_type).ok_or_else(|| corrupt(format!("unknown channel type {channel_type}")))?;
    let channel_config = match serde_json::from_str::<Value>(channel_config) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(corrupt("channel_config is not a JSON object".to_string())),
        Err(e) => return Err(corrupt(e.to_string())),
    };
    Ok(StoredChannel { channel_id, channel_type, channel_config, enabled, created_at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_at_any_depth_and_the_rest_is_kept() {
        let Value::Object(config) = json!({
            "host": "smtp.example.com", "port": 587, "username": "mailer", "password": "p4ss",
            "tls": {"client_private_key": "-----BEGIN", "verify": true},
            "accounts": [{"token": "t0k", "name": "a"}], "Secret": "s", "token_url": "https://x", "api_key": null
        }) else { unreachable!() };
        let channel = StoredChannel {
            channel_id: "smtp-main".into(),
            channel_type: DeliveryChannel::Email,
            channel_config: config,
            enabled: true,
            created_at: Utc::now(),
        };
        let shown = Value::Object(channel.redacted().channel_config);
        assert_eq!(
            shown,
            json!({
                "host": "smtp.example.com", "port": 587, "username": "mailer", "password": REDACTED,
                "tls": {"client_private_key": REDACTED, "verify": true},
                "accounts": [{"token": REDACTED, "name": "a"}], "Secret": REDACTED, "token_url": "https://x", "api_key": null
            })
        );
    }
}
