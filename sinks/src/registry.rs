//! Which sink serves which channel. Keyed by the channel's name (`API_WEBHOOK`, ...) rather than by
//! the service's channel enum, so this crate stays independent of the domain model: the dispatcher
//! looks sinks up with `channel.as_str()`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::Sink;

/// The enabled channels and their sinks. A channel without a sink is disabled: its deliveries fail
/// permanently in the dispatcher.
#[derive(Default, Clone)]
pub struct SinkRegistry {
    sinks: BTreeMap<&'static str, Arc<dyn Sink>>,
}

impl SinkRegistry {
    /// Registers `sink` under its own [`Sink::name`], replacing any sink registered under that name
    /// before (the last registration wins, so a test can swap one channel).
    pub fn register(&mut self, sink: Arc<dyn Sink>) {
        self.sinks.insert(sink.name(), sink);
    }

    /// The sink for `channel`, if that channel is enabled.
    pub fn get(&self, channel: &str) -> Option<&Arc<dyn Sink>> {
        self.sinks.get(channel)
    }

    /// The enabled channels' names, sorted.
    pub fn channels(&self) -> Vec<&'static str> {
        self.sinks.keys().copied().collect()
    }
}

impl fmt::Debug for SinkRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkRegistry").field("channels", &self.channels()).finish()
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::{DeliveryRequest, Receipt, SinkError};

    struct Named(&'static str, &'static str);

    #[async_trait]
    impl Sink for Named {
        fn name(&self) -> &'static str {
            self.0
        }
        async fn deliver(&self, _: &DeliveryRequest) -> Result<Receipt, SinkError> {
            Ok(Receipt { elapsed: std::time::Duration::ZERO, detail: self.1.to_string() })
        }
    }

    #[tokio::test]
    async fn sinks_are_found_by_channel_name_and_the_last_registration_wins() {
        let mut registry = SinkRegistry::default();
        assert!(registry.channels().is_empty());
        registry.register(Arc::new(Named("SLACK_INTEGRATION", "slack")));
        registry.register(Arc::new(Named("API_WEBHOOK", "first")));
        registry.register(Arc::new(Named("API_WEBHOOK", "second")));
        assert_eq!(registry.channels(), vec!["API_WEBHOOK", "SLACK_INTEGRATION"]);
        assert!(registry.get("EMAIL").is_none());

        let request = DeliveryRequest {
            idempotency_key: "d".into(),
            destination: crate::Destination::Dashboard {
                subscriber_id: "s".into(),
                subscription_id: "s".into(),
                report_id: "r".into(),
            },
            payload: bytes::Bytes::new(),
            timeout: std::time::Duration::from_secs(1),
            attempt: 1,
            priority: 0,
            encrypt_to: None,
        };
        let sink = registry.get("API_WEBHOOK").expect("registered");
        let receipt = sink.deliver(&request).await.expect("always ok");
        assert_eq!(receipt.detail, "second");
        assert_eq!(format!("{registry:?}"), r#"SinkRegistry { channels: ["API_WEBHOOK", "SLACK_INTEGRATION"] }"#);
    }
}
