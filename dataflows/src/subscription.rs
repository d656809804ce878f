//! Subscriptions: who wants which reports, on which channels, with which filters.

use serde::{Deserialize, Serialize};

pub use crate::channel_settings::{
    ChatKind, DashboardSettings, EmailSettings, EncryptionSettings, MobilePushSettings, NotificationSettings, PushProvider, SftpSettings,
    SlackSettings, WebhookSettings,
};
use crate::content::{ContentSpec, RowPredicate, Trigger};
use crate::delivery::DeliveryChannel;
use crate::report::{ReportDataType, ReportDistribution};
use crate::validation::{identifier, FieldError, Validate};

/// How a subscription is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubscriptionType {
    /// Every matching report, as soon as it is published.
    #[default]
    RealTime,
    /// Matching reports collected into a digest per `delivery_preferences.schedule` (cron).
    Scheduled,
    /// Only reports that name this subscriber in `routing.target_subscribers`.
    OnDemand,
    /// Matching reports whose content or metadata satisfies the subscription's condition.
    Triggered,
}

/// Lifecycle of a subscription. Lowercase, as the schema's `status` default (`'active'`) spells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionStatus {
    #[default]
    Active,
    Paused,
    Cancelled,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Paused => "paused",
            SubscriptionStatus::Cancelled => "cancelled",
        }
    }
}

/// The seed's `ReportSubscription` plus `subscriber_type` and `subscription_type`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportSubscription {
    pub subscription_id: String,
    pub subscriber_id: String,
    #[serde(default = "default_subscriber_type")]
    pub subscriber_type: String,
    #[serde(default)]
    pub subscription_type: SubscriptionType,
    pub report_types: Vec<ReportDataType>,
    pub delivery_preferences: DeliveryPreferences,
    #[serde(default)]
    pub filters: SubscriptionFilters,
    #[serde(default)]
    pub status: SubscriptionStatus,
}

fn default_subscriber_type() -> String {
    "USER".to_string()
}

/// The seed's `DeliveryPreferences`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeliveryPreferences {
    pub channels: Vec<DeliveryChannel>,
    /// Cron expression for SCHEDULED subscriptions.
    #[serde(default)]
    pub schedule: Option<String>,
    /// The first of `CSV`, `JSON` (JSON lines), `PARQUET`, `XLSX` is the format of a tabular
    /// report's personalised file; `PDF`, `HTML`, `ORIGINAL` mean the file as published.
    #[serde(default)]
    pub format_preferences: Vec<String>,
    #[serde(default)]
    pub notification_settings: NotificationSettings,
}

/// Which reports of the subscribed types are wanted. Empty or absent means "no restriction".
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubscriptionFilters {
    #[serde(default)]
    pub portfolio_ids: Vec<String>,
    /// Glob over the report's `routing.routing_key`, e.g. `portfolio_001.performance.*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    /// Only reports whose `routing.priority` is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_priority: Option<i32>,
    /// Rows of a tabular report this subscriber gets (all must hold), e.g.
    /// `{"column": "region", "in": ["EMEA"]}`. `portfolio_ids` also selects rows by the file's
    /// `portfolio_id` column when it has one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<RowPredicate>,
    /// Columns of a tabular report this subscriber gets, in this order; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// The condition of a TRIGGERED subscription (required for it, refused for other types).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
}

impl ReportSubscription {
    /// Whether this subscription wants `report` at all (type, filters, targeting, status).
    /// Channel selection is separate: see [`ReportSubscription::channels_for`].
    pub fn matches(&self, report: &ReportDistribution) -> bool {
        if self.status != SubscriptionStatus::Active || !self.report_types.contains(&report.data_type) {
            return false;
        }
        let targets = &report.routing.target_subscribers;
        if !targets.is_empty() && !targets.iter().any(|t| t == &self.subscriber_id) {
            return false;
        }
        if self.subscription_type == SubscriptionType::OnDemand && targets.is_empty() {
            return false;
        }
        let filters = &self.filters;
        if !filters.portfolio_ids.is_empty()
            && !filters.portfolio_ids.iter().any(|p| p == &report.report_data.portfolio_id)
        {
            return false;
        }
        if let Some(min) = filters.min_priority {
            if report.routing.priority < min {
                return false;
            }
        }
        if self.subscription_type == SubscriptionType::Triggered {
            // Refused at subscribe time without a trigger; a stored version without one fires never.
            if !filters.trigger.as_ref().is_some_and(|trigger| trigger.fires(report)) {
                return false;
            }
        }
        if let Some(glob) = &filters.routing_key {
            // Validated at subscribe time, so a parse failure here means "matches nothing".
            match glob::Pattern::new(glob) {
                Ok(pattern) if pattern.matches(&report.routing.routing_key) => {}
                _ => return false,
            }
        }
        true
    }

    /// What the subscriber asked of a tabular report's content, if anything: rows, columns, or a
    /// tabular output format. `None` delivers the report's file as published.
    pub fn content_spec(&self) -> Option<ContentSpec> {
        let format = self
            .delivery_preferences
            .format_preferences
            .iter()
            .find_map(|f| crate::content::parse_format(f).ok().flatten());
        let filters = &self.filters;
        if filters.rows.is_empty() && filters.columns.is_empty() && filters.portfolio_ids.is_empty() && format.is_none() {
            return None;
        }
        Some(ContentSpec {
            portfolio_ids: filters.portfolio_ids.clone(),
            rows: filters.rows.clone(),
            columns: filters.columns.clone(),
            format,
        })
    }

    /// The channels a matching report goes out on: the subscription's, narrowed by the report's
    /// `routing.delivery_channels` when that is non-empty. Deduplicated, in the subscription's order.
    pub fn channels_for(&self, report: &ReportDistribution) -> Vec<DeliveryChannel> {
        let wanted = &report.routing.delivery_channels;
        let mut out: Vec<DeliveryChannel> = Vec::with_capacity(self.delivery_preferences.channels.len());
        for channel in &self.delivery_preferences.channels {
            if (wanted.is_empty() || wanted.contains(channel)) && !out.contains(channel) {
                out.push(*channel);
            }
        }
        out
    }
}

impl Validate for ReportSubscription {
    fn validate(&self) -> Result<(), FieldError> {
        identifier("subscription_id", &self.subscription_id)?;
        identifier("subscriber_id", &self.subscriber_id)?;
        if self.subscriber_type.is_empty() || self.subscriber_type.len() > 50 {
            return Err(FieldError::new("subscriber_type", "must be 1 to 50 bytes"));
        }
        if self.report_types.is_empty() {
            return Err(FieldError::new("report_types", "must name at least one report type"));
        }
        let prefs = &self.delivery_preferences;
        if prefs.channels.is_empty() {
            return Err(FieldError::new("delivery_preferences.channels", "must name at least one channel"));
        }
        match (&prefs.schedule, self.subscription_type) {
            (None, SubscriptionType::Scheduled) => {
                return Err(FieldError::new("delivery_preferences.schedule", "is required for SCHEDULED subscriptions"));
            }
            (Some(expression), SubscriptionType::Scheduled) => {
                crate::schedule::Schedule::parse(expression)
                    .map_err(|e| FieldError::new("delivery_preferences.schedule", e.to_string()))?;
            }
            (Some(_), _) => {
                return Err(FieldError::new("delivery_preferences.schedule", "is only used by SCHEDULED subscriptions"));
            }
            (None, _) => {}
        }
        for channel in &prefs.channels {
            prefs.notification_settings.validate_for(*channel)?;
        }
        for (i, p) in self.filters.portfolio_ids.iter().enumerate() {
            identifier(&format!("filters.portfolio_ids[{i}]"), p)?;
        }
        if let Some(glob) = &self.filters.routing_key {
            glob::Pattern::new(glob)
                .map_err(|e| FieldError::new("filters.routing_key", format!("is not a valid glob: {e}")))?;
        }
        crate::content::validate_selection(&self.filters.rows, &self.filters.columns, &prefs.format_preferences)?;
        match (&self.filters.trigger, self.subscription_type) {
            (Some(trigger), SubscriptionType::Triggered) => trigger.validate("filters.trigger")?,
            (None, SubscriptionType::Triggered) => {
                return Err(FieldError::new("filters.trigger", "is required for TRIGGERED subscriptions"));
            }
            (Some(_), _) => return Err(FieldError::new("filters.trigger", "is only used by TRIGGERED subscriptions")),
            (None, _) => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{DistributionRouting, ReportDataInfo};

    fn sub() -> ReportSubscription {
        ReportSubscription {
            subscription_id: "s".into(),
            subscriber_id: "client".into(),
            subscriber_type: "CLIENT".into(),
            subscription_type: SubscriptionType::RealTime,
            report_types: vec![ReportDataType::RiskReport],
            delivery_preferences: DeliveryPreferences {
                channels: vec![DeliveryChannel::ApiWebhook, DeliveryChannel::DashboardNotification],
                ..Default::default()
            },
            filters: SubscriptionFilters::default(),
            status: SubscriptionStatus::Active,
        }
    }

    fn report() -> ReportDistribution {
        ReportDistribution {
            event_id: "e".into(),
            timestamp: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            data_type: ReportDataType::RiskReport,
            report_data: ReportDataInfo { report_id: "r".into(), portfolio_id: "p1".into(), ..Default::default() },
            routing: DistributionRouting { routing_key: "p1.risk.daily".into(), priority: 3, ..Default::default() },
            metadata: Default::default(),
        }
    }

    #[test]
    fn each_filter_narrows_the_match() {
        let r = report();
        assert!(sub().matches(&r));
        let mut s = sub();
        s.report_types = vec![ReportDataType::PerformanceReport];
        assert!(!s.matches(&r), "report type");
        let mut s = sub();
        s.filters.portfolio_ids = vec!["p2".into()];
        assert!(!s.matches(&r), "portfolio");
        s.filters.portfolio_ids.push("p1".into());
        assert!(s.matches(&r));
        let mut s = sub();
        s.filters.routing_key = Some("p1.risk.*".into());
        assert!(s.matches(&r), "glob matches");
        s.filters.routing_key = Some("p1.performance.*".into());
        assert!(!s.matches(&r), "glob does not match");
        let mut s = sub();
        s.filters.min_priority = Some(3);
        assert!(s.matches(&r), "priority equal to the minimum");
        s.filters.min_priority = Some(4);
        assert!(!s.matches(&r), "priority below the minimum");
        let mut s = sub();
        s.status = SubscriptionStatus::Paused;
        assert!(!s.matches(&r), "paused");
    }

    #[test]
    fn triggered_subscriptions_fire_on_metadata_and_content_facts() {
        let mut s = sub();
        s.subscription_type = SubscriptionType::Triggered;
        s.report_types = vec![ReportDataType::RiskReport, ReportDataType::AlertReport];
        assert!(!s.matches(&report()), "no trigger: never");
        s.filters.trigger = Some(serde_json::from_value(serde_json::json!({
            "data_types": ["ALERT_REPORT"], "min_priority": 3,
            "content": [{"column": "exposure", "aggregate": "max", "gt": 100}]})).unwrap());
        let mut alert = report();
        alert.data_type = ReportDataType::AlertReport;
        alert.report_data.content_facts = [("max(exposure)".to_string(), crate::content::Number(101.0))].into();
        assert!(s.matches(&alert), "all parts hold");
        assert!(!s.matches(&ReportDistribution { data_type: ReportDataType::RiskReport, ..alert.clone() }), "data type");
        let mut low = alert.clone();
        low.routing.priority = 2;
        assert!(!s.matches(&low), "priority below the minimum");
        let mut calm = alert.clone();
        calm.report_data.content_facts = [("max(exposure)".to_string(), crate::content::Number(100.0))].into();
        assert!(!s.matches(&calm), "content below the threshold");
        let mut unknown = alert;
        unknown.report_data.content_facts.clear();
        assert!(!s.matches(&unknown), "no facts: the content condition does not hold");
    }

    #[test]
    fn trigger_belongs_to_triggered_subscriptions_only() {
        let mut s = sub();
        s.delivery_preferences.channels = vec![DeliveryChannel::DashboardNotification];
        s.subscription_type = SubscriptionType::Triggered;
        assert_eq!(s.validate().unwrap_err().field, "filters.trigger");
        s.filters.trigger = Some(Trigger::default());
        assert_eq!(s.validate().unwrap_err().field, "filters.trigger", "an empty condition");
        s.filters.trigger = Some(Trigger { min_priority: Some(2), ..Default::default() });
        assert!(s.validate().is_ok());
        s.subscription_type = SubscriptionType::RealTime;
        assert_eq!(s.validate().unwrap_err().field, "filters.trigger");
    }

    #[test]
    fn content_spec_only_when_asked() {
        let mut s = sub();
        assert_eq!(s.content_spec(), None);
        s.delivery_preferences.format_preferences = vec!["PDF".into()];
        assert_eq!(s.content_spec(), None, "pass-through formats ask for nothing");
        s.delivery_preferences.format_preferences.push("parquet".into());
        assert_eq!(s.content_spec().unwrap().format, Some(crate::content::OutputFormat::Parquet));
        s.delivery_preferences.format_preferences.clear();
        s.filters.columns = vec!["a".into()];
        assert_eq!(s.content_spec().unwrap().columns, vec!["a".to_string()]);
    }

    #[test]
    fn targeting_and_on_demand() {
        let mut targeted = report();
        targeted.routing.target_subscribers = vec!["someone-else".into()];
        assert!(!sub().matches(&targeted), "not named");
        targeted.routing.target_subscribers.push("client".into());
        assert!(sub().matches(&targeted), "named");
        let mut on_demand = sub();
        on_demand.subscription_type = SubscriptionType::OnDemand;
        assert!(!on_demand.matches(&report()), "ON_DEMAND needs to be named");
        assert!(on_demand.matches(&targeted));
    }

    #[test]
    fn report_channels_narrow_the_subscription_channels() {
        let mut r = report();
        assert_eq!(sub().channels_for(&r), vec![DeliveryChannel::ApiWebhook, DeliveryChannel::DashboardNotification]);
        r.routing.delivery_channels = vec![DeliveryChannel::DashboardNotification, DeliveryChannel::Email];
        assert_eq!(sub().channels_for(&r), vec![DeliveryChannel::DashboardNotification]);
    }

    #[test]
    fn validation_names_the_field() {
        let mut s = sub();
        s.delivery_preferences.channels = vec![DeliveryChannel::ApiWebhook];
        assert_eq!(s.validate().unwrap_err().field, "delivery_preferences.notification_settings.webhook");
        s.delivery_preferences.notification_settings.webhook =
            Some(WebhookSettings { url: "https://example.com/h".into(), secret: "whsec_c2hvcnQ=".into() });
        assert_eq!(s.validate().unwrap_err().field, "delivery_preferences.notification_settings.webhook.secret");
        s.delivery_preferences.notification_settings.webhook =
            Some(WebhookSettings { url: "https://example.com/h".into(), secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into() });
        assert!(s.validate().is_ok());
        s.filters.routing_key = Some("[".into());
        assert_eq!(s.validate().unwrap_err().field, "filters.routing_key");
    }

    #[test]
    fn scheduled_subscriptions_need_a_valid_schedule() {
        let mut s = sub();
        s.delivery_preferences.channels = vec![DeliveryChannel::DashboardNotification];
        s.subscription_type = SubscriptionType::Scheduled;
        assert_eq!(s.validate().unwrap_err().field, "delivery_preferences.schedule", "missing");
        s.delivery_preferences.schedule = Some("every morning".into());
        let error = s.validate().unwrap_err();
        assert_eq!(error.field, "delivery_preferences.schedule");
        assert!(error.message.contains("cron"), "{error}");
        s.delivery_preferences.schedule = Some("0 8 * * 1-5".into());
        assert!(s.validate().is_ok());
        s.subscription_type = SubscriptionType::RealTime;
        assert_eq!(s.validate().unwrap_err().field, "delivery_preferences.schedule", "a schedule that would be ignored");
    }
}
