//! The protobuf view of the domain: conversions from what the store and the views hold to the
//! generated messages. Enum values share their names with the JSON API, so conversions go by name.

use chrono::{DateTime, SecondsFormat, Utc};

use super::proto;
use crate::api::stats::StatsWindow;
use crate::store::{DeadLetter, DeliveryStatus, StoredSubscription};

/// RFC 3339 in UTC, as the REST API writes timestamps.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub fn report_type(name: &str) -> i32 {
    proto::ReportDataType::from_str_name(name).unwrap_or(proto::ReportDataType::Unspecified) as i32
}

pub fn channel(name: &str) -> i32 {
    proto::DeliveryChannel::from_str_name(name).unwrap_or(proto::DeliveryChannel::Unspecified) as i32
}

/// The domain report type a wire value names, or `None` for unspecified and unknown values.
pub fn domain_report_type(value: i32) -> Option<dataflows::report::ReportDataType> {
    let name = proto::ReportDataType::try_from(value).ok()?.as_str_name();
    dataflows::report::ReportDataType::ALL.into_iter().find(|t| t.as_str() == name)
}

pub fn delivery_status(status: DeliveryStatus) -> proto::DeliveryStatus {
    proto::DeliveryStatus {
        delivery_id: status.delivery_id,
        subscription_id: status.subscription_id,
        report_id: status.report_id,
        channel: channel(status.channel.as_str()),
        status: status.status.as_str().to_string(),
        delivery_time: status.delivery_time.map(timestamp),
        retry_count: status.retry_count,
        error_details: status.error_details,
    }
}

/// Redacts secrets itself, so no caller can forget to.
pub fn subscription(stored: StoredSubscription) -> proto::Subscription {
    let stored = crate::api::subscriptions::redact(stored);
    let subscription = &stored.subscription;
    proto::Subscription {
        subscription_id: subscription.subscription_id.clone(),
        subscriber_id: subscription.subscriber_id.clone(),
        report_types: subscription.report_types.iter().map(|t| report_type(t.as_str())).collect(),
        channels: subscription.delivery_preferences.channels.iter().map(|c| channel(c.as_str())).collect(),
        status: subscription.status.as_str().to_string(),
        created_at: timestamp(stored.created_at),
        updated_at: timestamp(stored.updated_at),
        subscription_json: serde_json::to_string(&stored).unwrap_or_default(),
    }
}

pub fn stats_window(window: StatsWindow) -> proto::StatsWindow {
    proto::StatsWindow {
        timestamp: timestamp(window.timestamp),
        window_end: timestamp(window.window_end),
        report_type: report_type(&window.report_type),
        channel: channel(&window.channel),
        deliveries_attempted: window.deliveries_attempted,
        deliveries_successful: window.deliveries_successful,
        deliveries_failed: window.deliveries_failed,
        avg_delivery_time_ms: window.avg_delivery_time_ms,
        p99_delivery_time_ms: window.p99_delivery_time_ms,
    }
}

pub fn dead_letter(letter: DeadLetter) -> proto::DeadLetter {
    proto::DeadLetter {
        delivery_id: letter.delivery_id,
        subscription_id: letter.subscription_id,
        subscriber_id: letter.subscriber_id,
        report_id: letter.report_id,
        event_id: letter.event_id,
        channel: channel(letter.channel.as_str()),
        reason: letter.reason,
        attempts: letter.attempts,
        dead_lettered_at: timestamp(letter.dead_lettered_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataflows::delivery::DeliveryChannel;
    use dataflows::report::ReportDataType;

    #[test]
    fn every_domain_enum_value_has_a_wire_value_of_the_same_name() {
        for t in ReportDataType::ALL {
            let wire = report_type(t.as_str());
            assert_ne!(wire, 0, "{}", t.as_str());
            assert_eq!(domain_report_type(wire), Some(t));
        }
        for c in DeliveryChannel::ALL {
            assert_ne!(channel(c.as_str()), 0, "{}", c.as_str());
        }
        assert_eq!(domain_report_type(0), None);
        assert_eq!(domain_report_type(99), None);
    }
}
