//! Deliveries: one task per (report, subscription, channel), its attempts and their outcomes.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::report::ReportDistribution;
use crate::subscription::NotificationSettings;
use crate::Time;

/// A way of reaching a subscriber. Spelled as in the service spec (`"API_WEBHOOK"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryChannel {
    Email,
    Sftp,
    ApiWebhook,
    DashboardNotification,
    MobilePush,
    SlackIntegration,
}

impl DeliveryChannel {
    pub const ALL: [DeliveryChannel; 6] = [
        DeliveryChannel::Email,
        DeliveryChannel::Sftp,
        DeliveryChannel::ApiWebhook,
        DeliveryChannel::DashboardNotification,
        DeliveryChannel::MobilePush,
        DeliveryChannel::SlackIntegration,
    ];

    /// The wire spelling, e.g. `API_WEBHOOK`; also used as a storage and metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryChannel::Email => "EMAIL",
            DeliveryChannel::Sftp => "SFTP",
            DeliveryChannel::ApiWebhook => "API_WEBHOOK",
            DeliveryChannel::DashboardNotification => "DASHBOARD_NOTIFICATION",
            DeliveryChannel::MobilePush => "MOBILE_PUSH",
            DeliveryChannel::SlackIntegration => "SLACK_INTEGRATION",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryChannel> {
        DeliveryChannel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Namespace of repdist's UUIDv5 delivery ids. Fixed forever: changing it would change every id.
const DELIVERY_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5f0c_2a44_8f6e_4b59_9a3c_0d1e_7b2f_6c11);

/// The delivery id of `report_id` to `subscription_id` on `channel`: a UUIDv5, so the same triple
/// always yields the same id, across replays, restarts and processes. Receivers deduplicate on it.
pub fn delivery_id(report_id: &str, subscription_id: &str, channel: DeliveryChannel) -> String {
    // The unit separator cannot appear in identifiers (validation refuses control characters),
    // so distinct triples never produce the same name.
    let name = format!("{report_id}\u{1f}{subscription_id}\u{1f}{}", channel.as_str());
    Uuid::new_v5(&DELIVERY_ID_NAMESPACE, name.as_bytes()).to_string()
}

/// One delivery to perform: everything a dispatcher needs, so that it never consults the dataflow.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeliveryTask {
    pub delivery_id: String,
    pub subscription_id: String,
    pub subscriber_id: String,
    pub channel: DeliveryChannel,
    /// The subscription's destinations as they were when the report matched.
    pub settings: NotificationSettings,
    pub report: ReportDistribution,
    /// Dataflow time at which the report was accepted; latency is measured from here.
    pub accepted_at: Time,
    /// 1 for the first attempt, incremented by each retry.
    pub attempt: u32,
    /// For a SCHEDULED subscription's digest, the reports it carries (`report` then stands for the
    /// digest as a whole: see [`crate::digest::assemble`]). `None` for a single report's delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Box<crate::digest::Digest>>,
    /// How the subscriber wants a tabular report's content (rows, columns, format), when it asked
    /// for anything; the host personalises the file at dispatch (see [`crate::content`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Box<crate::content::ContentSpec>>,
}

impl DeliveryTask {
    /// Dispatch order when saturated: higher first.
    pub fn priority(&self) -> i32 {
        self.report.metadata.delivery_priority
    }
}

/// How an attempt ended, as classified by the channel's sink.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AttemptResult {
    Delivered,
    /// Worth retrying; `retry_after` (microseconds) is the receiver's own hint, if it gave one.
    Transient { error: String, retry_after: Option<u64> },
    /// Retrying cannot help (a 4xx, a bad destination): dead-letter at once.
    Permanent { error: String },
}

/// An attempt's outcome, fed back into the dataflow at the time it completed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeliveryOutcome {
    pub task: DeliveryTask,
    pub result: AttemptResult,
    /// Dataflow time at which the attempt finished.
    pub finished_at: Time,
}

/// The state of a delivery as stored and reported (`DeliveryStatus.status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryState {
    /// Created, not yet attempted (or attempt under way).
    Pending,
    /// An attempt failed transiently; another is scheduled.
    Retrying,
    Delivered,
    DeadLettered,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "PENDING",
            DeliveryState::Retrying => "RETRYING",
            DeliveryState::Delivered => "DELIVERED",
            DeliveryState::DeadLettered => "DEAD_LETTERED",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        [DeliveryState::Pending, DeliveryState::Retrying, DeliveryState::Delivered, DeliveryState::DeadLettered]
            .into_iter()
            .find(|st| st.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(self, DeliveryState::Delivered | DeliveryState::DeadLettered)
    }
}
