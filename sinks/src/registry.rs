//! Which sink serves which channel. Keyed by channel name so this crate stays independent of the
//! domain model.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::Sink;

#[derive(Default)]
pub struct SinkRegistry {
    sinks: BTreeMap<&'static str, Arc<dyn Sink>>,
}

impl SinkRegistry {
    /// Registers `sink` for its own channel name.
    pub fn register(&mut self, sink: Arc<dyn Sink>) {
        self.sinks.insert(sink.name(), sink);
    }

    pub fn get(&self, channel: &str) -> Option<&Arc<dyn Sink>> {
        self.sinks.get(channel)
    }

    /// Channel names with a sink, sorted.
    pub fn channels(&self) -> Vec<&'static str> {
        self.sinks.keys().copied().collect()
    }
}
