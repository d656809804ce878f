//! The cached entries, as the service spec's "Redis Caching" section names them, with their lifetimes.
//! Every value is the JSON the API answers with (secrets already masked), so a warm read returns the
//! cached bytes unchanged.

use std::time::Duration;

/// `GET /subscriptions/{subscriber_id}`'s answer. Invalidated by every change made through the API.
pub const SUBSCRIPTIONS_TTL: Duration = Duration::from_secs(3600);
/// A channel config with its enabled flag. Written on create, enable and disable.
pub const CHANNEL_STATUS_TTL: Duration = Duration::from_secs(300);
/// A snapshot of the deliveries waiting at one priority (see `runtime::queue_snapshot`), rewritten
/// every few seconds while any wait.
pub const DELIVERY_QUEUE_TTL: Duration = Duration::from_secs(1800);
/// One report type's stats windows, written each time `GET /stats` computes them.
pub const DIST_METRICS_TTL: Duration = Duration::from_secs(900);

/// The longest lifetime of any entry: after an outage during which invalidations were lost, nothing
/// written before it is still alive once this has passed.
pub const MAX_TTL: Duration = SUBSCRIPTIONS_TTL;

/// The entries that are kept fresh by invalidating or rewriting them after a change. A process that
/// stopped between committing a change and that step leaves one stale, so each start drops them all.
pub const KEPT_FRESH_BY_CHANGES: &[&str] = &["subscriptions:", "channel_status:"];

pub fn subscriptions(subscriber_id: &str) -> String {
    format!("subscriptions:{subscriber_id}")
}

pub fn channel_status(channel_id: &str) -> String {
    format!("channel_status:{channel_id}")
}

pub fn delivery_queue(priority: i32) -> String {
    format!("delivery_queue:{priority}")
}

pub fn dist_metrics(report_type: &str) -> String {
    format!("dist_metrics:{report_type}")
}
