//! Which endpoint a delivery goes to: its channel and the authority (`host:port`) of the peer it
//! reaches, derived from the same destination the sink will be given. Two subscriptions whose
//! webhooks live on one server share an endpoint, and with it that server's limits and breaker; a
//! URL's path, query and user info (where channels keep their secrets: Slack's webhook path, an ntfy
//! topic) never become part of a key, so keys can be shown and used as metric labels.

use std::fmt;

use dataflows::delivery::{DeliveryChannel, DeliveryTask};
use serde_json::{Map, Value};
use sinks::{Destination, PushTarget};

use crate::config::Config;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKey {
    pub channel: DeliveryChannel,
    /// `host:port`, the host lower-cased, IPv6 literals in brackets.
    pub authority: String,
}

impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.channel.as_str(), self.authority)
    }
}

/// Maps tasks to endpoint keys. Channels whose peer is set by the service rather than the
/// subscription (the SMTP relay, FCM, APNs) take it from the configuration.
#[derive(Clone, Debug, Default)]
pub struct EndpointResolver {
    email_relay: Option<String>,
    fcm: Option<String>,
    apns: Option<String>,
}

impl EndpointResolver {
    pub fn new(config: &Config) -> EndpointResolver {
        let push = &config.push;
        EndpointResolver {
            email_relay: config.email.as_ref().map(|email| host_port(&email.host, email.effective_port())),
            // Without its credentials a provider refuses every delivery at once: no endpoint to protect.
            fcm: push.fcm.as_ref().and_then(|fcm| url_authority(&fcm.api_base)),
            apns: push.apns.as_ref().and_then(|apns| url_authority(&apns.api_base)),
        }
    }

    /// The endpoint `task` goes to; `None` when it has no remote peer (DASHBOARD_NOTIFICATION is
    /// written to the store) or its destination cannot be rendered (the attempt then fails
    /// permanently, with the reason, without waiting for any endpoint).
    pub fn key(&self, task: &DeliveryTask) -> Option<EndpointKey> {
        let destination = super::super::render::destination(task).ok()?;
        let authority = match destination {
            Destination::Webhook { url, .. } => url_authority(&url),
            Destination::Chat { webhook_url, .. } => url_authority(&webhook_url),
            Destination::Sftp { host, port, .. } => Some(host_port(&host, port)),
            Destination::Email { .. } => self.email_relay.clone(),
            Destination::Push { target: PushTarget::Fcm { .. } } => self.fcm.clone(),
            Destination::Push { target: PushTarget::Apns { .. } } => self.apns.clone(),
            Destination::Push { target: PushTarget::Ntfy { topic_url } } => url_authority(&topic_url),
            Destination::Dashboard { .. } => None,
        }?;
        Some(EndpointKey { channel: task.channel, authority })
    }
}

fn host_port(host: &str, port: u16) -> String {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn url_authority(url: &str) -> Option<String> {
    let url = url::Url::parse(url.trim()).ok()?;
    Some(host_port(url.host_str()?, url.port_or_known_default()?))
}

/// Whether a configured `delivery_channels` row describes this endpoint: the same channel type, and
/// the host of its `host` key or of a URL under `url`, `webhook_url`, `topic_url` or `api_base`,
/// with the same port when the row names one.
pub fn describes(channel_type: DeliveryChannel, config: &Map<String, Value>, key: &EndpointKey) -> bool {
    if channel_type != key.channel {
        return false;
    }
    let Some((key_host, key_port)) = key.authority.rsplit_once(':') else { return false };
    let port_matches = |port: Option<u16>| port.is_none_or(|port| port.to_string() == key_port);
    if let Some(host) = config.get("host").and_then(Value::as_str) {
        let port = config.get("port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok());
        let row = host_port(host, 0);
        let row_host = row.strip_suffix(":0").unwrap_or(&row);
        return row_host == key_host && port_matches(port);
    }
    ["url", "webhook_url", "topic_url", "api_base"].iter().filter_map(|name| config.get(*name).and_then(Value::as_str)).any(|url| {
        url_authority(url).is_some_and(|authority| authority == key.authority)
    })
}

#[cfg(test)]
mod tests {
    use dataflows::subscription::{NotificationSettings, SftpSettings, WebhookSettings};
    use serde_json::json;

    use super::*;

    fn task(channel: DeliveryChannel, settings: NotificationSettings) -> DeliveryTask {
        DeliveryTask {
            delivery_id: "d".into(),
            subscription_id: "s".into(),
            subscriber_id: "c".into(),
            channel,
            settings,
            report: dataflows::report::ReportDistribution {
                event_id: "e".into(),
                timestamp: chrono::DateTime::from_timestamp(0, 0).unwrap(),
                data_type: dataflows::report::ReportDataType::PerformanceReport,
                report_data: Default::default(),
                routing: Default::default(),
                metadata: Default::default(),
            },
            accepted_at: 0,
            attempt: 1,
            digest: None,
            content: None,
        }
    }

    fn webhook(url: &str) -> DeliveryTask {
        let settings = NotificationSettings {
            webhook: Some(WebhookSettings { url: url.into(), secret: "whsec_x".into() }),
            ..Default::default()
        };
        task(DeliveryChannel::ApiWebhook, settings)
    }

    #[test]
    fn keys_are_channel_and_authority_without_secrets() {
        let resolver = EndpointResolver::default();
        let key = resolver.key(&webhook("https://user:pw@Hooks.Example.com/a/b?token=t")).unwrap();
        assert_eq!(key.authority, "hooks.example.com:443");
        assert_eq!(key, resolver.key(&webhook("https://hooks.example.com:443/other")).unwrap(), "paths share the host");
        assert_ne!(key, resolver.key(&webhook("http://hooks.example.com/a")).unwrap(), "another port is another endpoint");
        assert_eq!(resolver.key(&webhook("http://[::1]:8080/h")).unwrap().authority, "[::1]:8080");
        assert_eq!(resolver.key(&webhook("not a url")), None);
        assert_eq!(resolver.key(&task(DeliveryChannel::DashboardNotification, Default::default())), None);
        let sftp = SftpSettings {
            host: "SFTP.example.com".into(),
            port: 2222,
            username: "u".into(),
            password: Some("p".into()),
            private_key: None,
            passphrase: None,
            host_key: "SHA256:x".into(),
            directory: "in".into(),
        };
        let settings = NotificationSettings { sftp: Some(Box::new(sftp)), ..Default::default() };
        let key = resolver.key(&task(DeliveryChannel::Sftp, settings)).unwrap();
        assert_eq!(key.to_string(), "SFTP sftp.example.com:2222");
    }

    #[test]
    fn email_goes_to_the_configured_relay() {
        let mut config = Config::default();
        let settings = NotificationSettings {
            email: Some(dataflows::subscription::EmailSettings { to: vec!["a@example.com".into()], locale: None }),
            ..Default::default()
        };
        let email = task(DeliveryChannel::Email, settings);
        assert_eq!(EndpointResolver::new(&config).key(&email), None, "no relay, no endpoint");
        config.email = Some(sinks::EmailConfig { host: "SMTP.example.com".into(), ..Default::default() });
        assert_eq!(EndpointResolver::new(&config).key(&email).unwrap().authority, "smtp.example.com:25");
    }

    #[test]
    fn channel_rows_describe_endpoints_by_host_and_port() {
        let key = EndpointKey { channel: DeliveryChannel::Email, authority: "smtp.example.com:587".into() };
        let row = |value: serde_json::Value| value.as_object().unwrap().clone();
        assert!(describes(DeliveryChannel::Email, &row(json!({"host": "smtp.example.com", "port": 587})), &key));
        assert!(describes(DeliveryChannel::Email, &row(json!({"host": "SMTP.example.com"})), &key), "no port: any port");
        assert!(!describes(DeliveryChannel::Email, &row(json!({"host": "smtp.example.com", "port": 25})), &key));
        assert!(!describes(DeliveryChannel::Sftp, &row(json!({"host": "smtp.example.com"})), &key));
        let hook = EndpointKey { channel: DeliveryChannel::ApiWebhook, authority: "127.0.0.1:9000".into() };
        assert!(describes(DeliveryChannel::ApiWebhook, &row(json!({"url": "http://127.0.0.1:9000/x"})), &hook));
        assert!(!describes(DeliveryChannel::ApiWebhook, &row(json!({"url": "http://127.0.0.1:9001/x"})), &hook));
        assert!(!describes(DeliveryChannel::ApiWebhook, &row(json!({})), &hook));
    }
}
