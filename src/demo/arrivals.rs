//! Evidence that a delivery reached its peer, whatever the channel: the delivery id as the peer
//! saw it (an email header, a chat message, a push header, an uploaded manifest) and when.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone, Default)]
pub struct Arrivals {
    inner: Arc<Mutex<HashMap<String, Arrival>>>,
}

#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    pub channel: &'static str,
    pub first: Instant,
    pub times: u32,
}

impl Arrivals {
    /// Records that `delivery_id` arrived over `channel` (again, if it had before).
    pub fn record(&self, channel: &'static str, delivery_id: &str) {
        let now = Instant::now();
        if let Ok(mut map) = self.inner.lock() {
            map.entry(delivery_id.to_string()).and_modify(|a| a.times += 1).or_insert(Arrival { channel, first: now, times: 1 });
        }
    }

    pub fn snapshot(&self) -> HashMap<String, Arrival> {
        self.inner.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// The first UUID-shaped token after `marker` in `text` (delivery ids are UUIDs).
pub fn uuid_after(text: &str, marker: &str) -> Option<String> {
    let start = text.find(marker)? + marker.len();
    let candidate: String = text[start..].chars().skip_while(|c| !c.is_ascii_hexdigit()).take(36).collect();
    uuid::Uuid::parse_str(&candidate).ok().map(|u| u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_id_after_its_marker() {
        let id = "0b8f3f2e-6a1c-5d4e-9f00-1234567890ab";
        assert_eq!(uuid_after(&format!("X-Repdist-Delivery-Id: {id}\r\n"), "X-Repdist-Delivery-Id:"), Some(id.to_string()));
        assert_eq!(uuid_after(&format!("Delivery `{id}`"), "Delivery "), Some(id.to_string()));
        assert_eq!(uuid_after("Delivery `nope`", "Delivery "), None);
        assert_eq!(uuid_after("nothing", "Delivery "), None);
    }
}
