//! `metadata.retention_days`: how long a report's traces are kept. A report's stored payload, the
//! delivery history of its deliveries, their dead letters and dashboard notifications, and its
//! digest memberships are purged once its retention has passed *and* every delivery it caused has
//! ended (DELIVERED or DEAD_LETTERED): a delivery still pending or retrying is never purged, so
//! retention can never lose a delivery. A digest is purged once it has ended and every report in
//! it has passed its retention. Subscriptions, their versions and the aggregated
//! `distribution_stats` windows are not per-report data and are kept.

use dataflows::Time;

/// One day in dataflow time (microseconds).
const DAY: Time = 86_400_000_000;
/// Retention is capped at 100 years so that the purge time fits a signed 64-bit column.
const MAX_DAYS: Time = 36_500;

/// The dataflow time after which a report accepted at `accepted_at` may be purged. 0 days: as soon
/// as its deliveries have ended.
pub fn purge_after(accepted_at: Time, retention_days: i32) -> i64 {
    let days = Time::try_from(retention_days.max(0)).unwrap_or(0).min(MAX_DAYS);
    i64::try_from(accepted_at.saturating_add(days * DAY)).unwrap_or(i64::MAX)
}

/// What one purge removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// Reports (their stored payloads) removed.
    pub reports: u64,
    /// Deliveries (including digests) whose history, dead letter and notification were removed.
    pub deliveries: Vec<String>,
}

impl Purged {
    pub fn is_empty(&self) -> bool {
        self.reports == 0 && self.deliveries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_times() {
        assert_eq!(purge_after(5, 0), 5);
        assert_eq!(purge_after(5, -3), 5);
        assert_eq!(purge_after(0, 1), 86_400_000_000);
        assert_eq!(purge_after(0, i32::MAX), 36_500 * 86_400_000_000);
        assert_eq!(purge_after(u64::MAX, 1), i64::MAX);
    }
}
