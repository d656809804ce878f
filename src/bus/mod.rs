//! Where events come from and go besides the REST API. Embedded default: nothing beyond the
//! in-process path (REST → sequencer); with `kafka.brokers` set, reports and subscription changes
//! are also consumed from Kafka (see [`kafka`]).

pub mod kafka;

use std::sync::Arc;

use crate::config::Config;
use crate::runtime::Runtime;

/// The running bus connectors.
pub enum Bus {
    /// In-process only: reports and subscriptions arrive over the API.
    Local,
    Kafka(kafka::KafkaBus),
}

impl Bus {
    /// `cache` is invalidated by the subscription changes that arrive this way.
    pub async fn start(config: &Config, runtime: Arc<Runtime>, cache: crate::cache::CacheClient) -> Result<Bus, kafka::KafkaBusError> {
        if config.kafka.is_enabled() {
            Ok(Bus::Kafka(kafka::KafkaBus::start(&config.kafka, runtime, config.allow_private_webhooks, cache).await?))
        } else {
            Ok(Bus::Local)
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Bus::Local => "in-process",
            Bus::Kafka(_) => "kafka",
        }
    }

    pub fn abort(self) {
        if let Bus::Kafka(kafka) = self {
            kafka.abort();
        }
    }

    pub async fn shutdown(self) {
        if let Bus::Kafka(kafka) = self {
            kafka.shutdown().await;
        }
    }
}
