//! Report events: the seed's `ReportDistribution` and its parts, exactly as published by producers.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::delivery::DeliveryChannel;
use crate::validation::{FieldError, Validate};

/// The kind of report an event carries. Spelled as in the service spec (`"PERFORMANCE_REPORT"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReportDataType {
    GeneratedReport,
    ScheduledReport,
    AlertReport,
    ComplianceReport,
    PerformanceReport,
    RiskReport,
}

impl ReportDataType {
    pub const ALL: [ReportDataType; 6] = [
        ReportDataType::GeneratedReport,
        ReportDataType::ScheduledReport,
        ReportDataType::AlertReport,
        ReportDataType::ComplianceReport,
        ReportDataType::PerformanceReport,
        ReportDataType::RiskReport,
    ];

    /// The wire spelling, e.g. `PERFORMANCE_REPORT`; also used as a storage and metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportDataType::GeneratedReport => "GENERATED_REPORT",
            ReportDataType::ScheduledReport => "SCHEDULED_REPORT",
            ReportDataType::AlertReport => "ALERT_REPORT",
            ReportDataType::ComplianceReport => "COMPLIANCE_REPORT",
            ReportDataType::PerformanceReport => "PERFORMANCE_REPORT",
            ReportDataType::RiskReport => "RISK_REPORT",
        }
    }
}

/// A report event as published by a report producer (POST /deliver, later Kafka).
///
/// `event_id` identifies the publication (a re-sent event carries the same one); `report_data.report_id`
/// identifies the report, and with the subscription and channel fixes each `delivery_id`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReportDistribution {
    pub event_id: String,
    pub timestamp: DateTime<Utc>,
    pub data_type: ReportDataType,
    pub report_data: ReportDataInfo,
    #[serde(default)]
    pub routing: DistributionRouting,
    #[serde(default)]
    pub metadata: ReportMetadata,
}

/// Where a report should go. Empty lists mean "no restriction".
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DistributionRouting {
    #[serde(default)]
    pub topic: String,
    /// Dotted key such as `portfolio_001.performance.monthly`, matched by subscription globs.
    #[serde(default)]
    pub routing_key: String,
    /// When non-empty, only subscriptions of these subscriber ids receive the report.
    #[serde(default)]
    pub target_subscribers: Vec<String>,
    /// When non-empty, deliveries go only on these channels (intersected with each subscription's).
    #[serde(default)]
    pub delivery_channels: Vec<DeliveryChannel>,
    /// Importance of the report; subscriptions may ask for `min_priority`. Higher is more important.
    #[serde(default)]
    pub priority: i32,
}

/// The seed's `ReportDataInfo`: which report, and where its file is.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReportDataInfo {
    pub report_id: String,
    #[serde(default)]
    pub report_type: String,
    #[serde(default)]
    pub portfolio_id: String,
    #[serde(default)]
    pub report_period: String,
    #[serde(default)]
    pub file_path: String,
    #[serde(default)]
    pub file_size_bytes: i64,
    /// Aggregates of the file's content (`max(exposure)`, `count(*)`...), computed by the service
    /// when it accepts the report (a publisher's own value is replaced) and stored with it; what
    /// TRIGGERED subscriptions' content conditions are decided on. Empty for non-tabular files.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub content_facts: crate::content::ContentFacts,
}

/// The seed's `ReportMetadata`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReportMetadata {
    #[serde(default)]
    pub source_service: String,
    /// Dispatch order when a channel is saturated: higher goes first.
    #[serde(default)]
    pub delivery_priority: i32,
    #[serde(default)]
    pub encryption_required: bool,
    #[serde(default = "default_retention_days")]
    pub retention_days: i32,
}

fn default_retention_days() -> i32 {
    90
}

impl Default for ReportMetadata {
    fn default() -> Self {
        ReportMetadata {
            source_service: String::new(),
            delivery_priority: 0,
            encryption_required: false,
            retention_days: default_retention_days(),
        }
    }
}

/// Longest identifier accepted anywhere; matches the `max_length: 100` columns of the schema.
pub const MAX_ID_LEN: usize = 100;

impl Validate for ReportDistribution {
    fn validate(&self) -> Result<(), FieldError> {
        crate::validation::identifier("event_id", &self.event_id)?;
        crate::validation::identifier("report_data.report_id", &self.report_data.report_id)?;
        if self.report_data.file_size_bytes < 0 {
            return Err(FieldError::new("report_data.file_size_bytes", "must not be negative"));
        }
        if self.metadata.retention_days < 0 {
            return Err(FieldError::new("metadata.retention_days", "must not be negative"));
        }
        for (i, s) in self.routing.target_subscribers.iter().enumerate() {
            crate::validation::identifier(&format!("routing.target_subscribers[{i}]"), s)?;
        }
        Ok(())
    }
}
