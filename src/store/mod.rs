//! Durable state behind one trait, two backends run by one test suite (`tests/store/`): the
//! embedded SQLite store (the default, under the data directory) and PostgreSQL (`database_url`).
//!
//! The runtime's core loop is the only writer of delivery state: each turn it hands one
//! [`WriteBatch`] to [`Store::apply`], which commits it in one transaction (group commit). Reads may
//! come from anywhere. Delivery channel configs, email templates and notifications are written
//! directly.

pub mod auth;
pub mod channels;
mod codec;
pub mod postgres;
pub mod retention;
pub mod sqlite;
mod templates;
mod versions;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dataflows::delivery::{DeliveryChannel, DeliveryState, DeliveryTask};
use dataflows::digest::DigestMember;
use dataflows::report::ReportDistribution;
use dataflows::stats::{StatsKey, StatsRow};
use dataflows::subscription::ReportSubscription;
use dataflows::Time;
use serde::Serialize;

pub use auth::{ApiKeyRecord, AuditEntry, AuditQuery, AuditRecord, Role};
pub use channels::{NewChannel, StoredChannel};
pub use templates::EmailTemplateRecord;

use crate::config::Config;

/// Failures of the storage layer. Callers treat them as "not durable": nothing is acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("invalid database URL {url}: {message}")]
    Url { url: String, message: String },
}

/// Opens the configured backend, applying pending migrations: PostgreSQL when `storage.database_url`
/// is set, else the embedded SQLite database under `data_dir`.
pub async fn open(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    match &config.storage.database_url {
        Some(url) => {
            let options = postgres::PostgresOptions { max_connections: config.storage.pool_size };
            Ok(Arc::new(postgres::PostgresStore::open(url, options).await?))
        }
        None => {
            let options = sqlite::SqliteOptions { synchronous_full: config.storage.fsync };
            Ok(Arc::new(sqlite::SqliteStore::open(&config.data_dir, options).await?))
        }
    }
}

/// A database URL fit for logs: the password (in the authority or a `password=` parameter) masked.
pub fn redacted_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else { return "<unparseable database URL>".to_string() };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("********"));
    }
    if parsed.query_pairs().any(|(k, _)| k.eq_ignore_ascii_case("password")) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") { "********".to_string() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// A report accepted by the sequencer at dataflow time `accepted_at`.
#[derive(Clone, Debug)]
pub struct NewReport {
    pub event: ReportDistribution,
    pub accepted_at: Time,
}

/// A subscription version that takes effect at `changed_at` (a cancel or pause is a version too).
#[derive(Clone, Debug)]
pub struct SubscriptionChange {
    pub subscription: ReportSubscription,
    pub changed_at: Time,
}

/// The delivery set the dataflow produced for one accepted report.
#[derive(Clone, Debug)]
pub struct ExpandedReport {
    pub event_id: String,
    pub deliveries: Vec<DeliveryTask>,
    /// The digests (of SCHEDULED subscriptions) the report joined instead of being delivered alone.
    pub digest_members: Vec<DigestMember>,
}

/// The end of one attempt (success or failure), as reported by a sink.
#[derive(Clone, Debug)]
pub struct AttemptRecord {
    pub delivery_id: String,
    pub attempt: u32,
    /// `Delivered` for a success; for a failure the state it leaves (`Pending` until the dataflow
    /// decides between retry and dead letter).
    pub state: DeliveryState,
    pub error: Option<String>,
    pub finished_at: Time,
}

/// A retry the dataflow scheduled: `task.attempt` is the attempt that will run at `due`.
#[derive(Clone, Debug)]
pub struct RetryRecord {
    pub task: DeliveryTask,
    pub due: Time,
    pub error: String,
}

#[derive(Clone, Debug)]
pub struct DeadLetterRecord {
    pub task: DeliveryTask,
    pub reason: String,
    pub at: Time,
}

/// Everything one turn of the core loop makes durable, committed atomically by [`Store::apply`].
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    pub reports: Vec<NewReport>,
    pub subscription_changes: Vec<SubscriptionChange>,
    pub expanded: Vec<ExpandedReport>,
    pub attempts: Vec<AttemptRecord>,
    pub retries: Vec<RetryRecord>,
    pub dead_letters: Vec<DeadLetterRecord>,
    /// Dead letters taken back for another round of attempts (attempt counting restarts at 1).
    pub replays: Vec<ReplayRecord>,
    /// `None` removes the window row's in-memory counterpart only; stored rows are kept.
    pub stats: Vec<(StatsKey, Option<StatsRow>)>,
    /// Events for other systems, published by the relay after this batch commits.
    pub outbox: Vec<OutboxMessage>,
}

/// The logical topic of an outbox row; the relay maps it to the configured topic name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxTopic {
    /// Subscription versions changed over the API, for every instance's dataflow.
    Subscriptions,
    /// `report_distributed` events.
    Distributed,
    /// Final delivery outcomes.
    DeliveryStatus,
}

impl OutboxTopic {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxTopic::Subscriptions => "subscriptions",
            OutboxTopic::Distributed => "distributed",
            OutboxTopic::DeliveryStatus => "delivery_status",
        }
    }

    pub fn parse(name: &str) -> Option<OutboxTopic> {
        [OutboxTopic::Subscriptions, OutboxTopic::Distributed, OutboxTopic::DeliveryStatus].into_iter().find(|t| t.as_str() == name)
    }
}

/// One event to publish: a record key and a JSON payload (`None`: a tombstone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxMessage {
    pub topic: OutboxTopic,
    pub key: String,
    pub payload: Option<String>,
}

/// A stored outbox row, in commit order (`seq`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRecord {
    pub seq: i64,
    pub message: OutboxMessage,
}

impl OutboxRecord {
    /// A row as both backends store it (the topic by [`OutboxTopic::as_str`]).
    pub(crate) fn from_row(seq: i64, topic: &str, key: String, payload: Option<String>) -> Result<OutboxRecord, StoreError> {
        let topic = OutboxTopic::parse(topic).ok_or_else(|| StoreError::Corrupt(format!("outbox row {seq}: unknown topic {topic}")))?;
        Ok(OutboxRecord { seq, message: OutboxMessage { topic, key, payload } })
    }
}

#[derive(Clone, Debug)]
pub struct ReplayRecord {
    pub task: DeliveryTask,
    pub at: Time,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.reports.is_empty()
            && self.subscription_changes.is_empty()
            && self.expanded.is_empty()
            && self.attempts.is_empty()
            && self.retries.is_empty()
            && self.dead_letters.is_empty()
            && self.replays.is_empty()
            && self.stats.is_empty()
            && self.outbox.is_empty()
    }
}

/// What [`Store::apply`] learned while committing.
#[derive(Clone, Debug, Default)]
pub struct WriteOutcome {
    /// Event ids in `reports` that were already stored (a re-sent event): not new work.
    pub duplicate_events: Vec<String>,
    /// Delivery ids in `expanded` that already existed (same report id re-published): not dispatched again.
    pub existing_deliveries: Vec<String>,
}

/// The seed's `DeliveryStatus`, as stored.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryStatus {
    pub delivery_id: String,
    pub subscription_id: String,
    pub report_id: String,
    pub channel: DeliveryChannel,
    pub status: DeliveryState,
    /// When the delivery reached its current state's last attempt (null before the first attempt).
    pub delivery_time: Option<DateTime<Utc>>,
    /// Attempts that failed so far.
    pub retry_count: u32,
    pub error_details: Option<String>,
}

/// A stored subscription with its bookkeeping timestamps.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StoredSubscription {
    #[serde(flatten)]
    pub subscription: ReportSubscription,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub delivery_id: String,
    pub subscription_id: String,
    pub subscriber_id: String,
    pub report_id: String,
    pub event_id: String,
    pub channel: DeliveryChannel,
    pub reason: String,
    pub attempts: u32,
    pub dead_lettered_at: DateTime<Utc>,
}

/// A dashboard notification as stored per subscriber (the DASHBOARD_NOTIFICATION channel's inbox).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Notification {
    /// The delivery id: one notification per delivery, however often it is attempted.
    pub notification_id: String,
    pub subscriber_id: String,
    pub subscription_id: String,
    pub report_id: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// A stored `distribution_stats` window.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StoredStats {
    pub timestamp: DateTime<Utc>,
    pub report_type: String,
    pub channel: String,
    pub deliveries_attempted: u64,
    pub deliveries_successful: u64,
    pub deliveries_failed: u64,
    pub avg_delivery_time_ms: Option<f64>,
    pub p99_delivery_time_ms: Option<f64>,
}

/// Counts over `delivery_history`: `by_channel["API_WEBHOOK"]["DELIVERED"] = n`. Every channel that
/// has deliveries appears, with all four states (zeros included).
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct DeliverySummary {
    pub total: u64,
    /// Failed attempts that were followed by a retry or a dead letter.
    pub retries: u64,
    pub by_channel: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
    /// `retries`, per channel.
    pub retries_by_channel: std::collections::BTreeMap<String, u64>,
}

/// What a restart must feed back into the dataflow to resume where the last run stopped.
#[derive(Clone, Debug, Default)]
pub struct RecoveryState {
    /// Subscription versions still relevant: `(version, valid_from, valid_until)`, where a version
    /// that is not active (paused, cancelled) is included only as the end of the previous one.
    pub subscription_versions: Vec<(ReportSubscription, Time, Option<Time>)>,
    /// Reports accepted but whose delivery set was not yet durable, in acceptance order.
    pub unexpanded_reports: Vec<NewReport>,
    /// Deliveries not yet delivered nor dead-lettered, with the time their next attempt is due.
    pub pending_deliveries: Vec<(DeliveryTask, Time)>,
    /// Members of digests that have not gone out yet (their first attempt never started, or never
    /// ended), in acceptance order. A digest with a retry scheduled is in `pending_deliveries` instead.
    pub pending_digest_members: Vec<DigestMember>,
    /// The highest dataflow time any stored record carries; the sequencer restarts after it.
    pub last_time: Time,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`, for health and logs.
    fn backend(&self) -> &'static str;

    /// Commits the batch in one transaction; on error nothing of it is durable.
    async fn apply(&self, batch: &WriteBatch) -> Result<WriteOutcome, StoreError>;

    async fn subscription(&self, subscription_id: &str) -> Result<Option<StoredSubscription>, StoreError>;
    /// The subscriber's subscriptions (cancelled ones included, so a client sees its history).
    async fn subscriptions_of(&self, subscriber_id: &str) -> Result<Vec<StoredSubscription>, StoreError>;

    async fn delivery_status(&self, delivery_id: &str) -> Result<Option<DeliveryStatus>, StoreError>;
    /// The delivery ids of the report carried by `event_id`, if that event was ever accepted and expanded.
    async fn deliveries_of_event(&self, event_id: &str) -> Result<Option<Vec<String>>, StoreError>;

    /// Current dead letters, oldest first, at most `limit`, after the cursor `after` (a delivery id).
    async fn dead_letters(&self, limit: u32, after: Option<&str>) -> Result<Vec<DeadLetter>, StoreError>;
    /// The task behind a current dead letter, for replay.
    async fn dead_letter_task(&self, delivery_id: &str) -> Result<Option<DeliveryTask>, StoreError>;

    /// Idempotent on `notification_id`: storing the same notification twice keeps one.
    async fn insert_notification(&self, notification: &Notification) -> Result<(), StoreError>;
    /// Newest first, at most `limit`.
    async fn notifications_of(&self, subscriber_id: &str, limit: u32) -> Result<Vec<Notification>, StoreError>;

    /// Deliveries by channel and state, and failed attempts so far (the sum of `retry_count`).
    async fn delivery_summary(&self) -> Result<DeliverySummary, StoreError>;

    /// Stored stats windows starting at or after `since`, oldest first.
    async fn stats_since(&self, since: DateTime<Utc>) -> Result<Vec<StoredStats>, StoreError>;

    async fn recovery_state(&self) -> Result<RecoveryState, StoreError>;

    /// Every configured delivery channel, by `channel_id`.
    async fn channels(&self) -> Result<Vec<StoredChannel>, StoreError>;
    async fn channel(&self, channel_id: &str) -> Result<Option<StoredChannel>, StoreError>;
    /// Stores a new channel; `None` when `channel_id` is taken (nothing is changed then).
    async fn create_channel(&self, channel: &NewChannel) -> Result<Option<StoredChannel>, StoreError>;
    /// Enables or disables a channel; `None` when there is no such channel.
    async fn set_channel_enabled(&self, channel_id: &str, enabled: bool) -> Result<Option<StoredChannel>, StoreError>;

    /// Every stored email template, by report type then locale.
    async fn email_templates(&self) -> Result<Vec<EmailTemplateRecord>, StoreError>;
    /// Stores a template, replacing the one under the same report type and locale.
    async fn put_email_template(&self, template: &EmailTemplateRecord) -> Result<(), StoreError>;
    /// Removes a template; `false` when there was none.
    async fn delete_email_template(&self, report_type: &str, locale: &str) -> Result<bool, StoreError>;

    /// The oldest `limit` outbox rows not yet published, in commit order.
    async fn outbox_peek(&self, limit: u32) -> Result<Vec<OutboxRecord>, StoreError>;
    /// Forgets published outbox rows.
    async fn outbox_remove(&self, seqs: &[i64]) -> Result<(), StoreError>;

    /// Stores a new API key (its hash; `key_id` and `key_hash` are unique).
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;
    /// The key whose SHA-256 is `key_hash`, revoked or not.
    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// Every key, revoked ones included, oldest first.
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Revokes a key at `at` (a key revoked before keeps its first revocation time); `None` when
    /// there is no such key.
    async fn revoke_api_key(&self, key_id: &str, at: i64) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// Keys not revoked: at start, none means the embedded default creates a local admin key.
    async fn active_api_keys(&self) -> Result<u64, StoreError>;

    /// Appends audit rows (requests, admin actions, denials) in one transaction.
    async fn append_audit(&self, entries: &[AuditEntry]) -> Result<(), StoreError>;
    /// A page of the audit trail, oldest first.
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;

    /// Purges at most `limit` reports whose `metadata.retention_days` ended at or before `now`
    /// (dataflow time) and whose deliveries have all ended, with their deliveries' history, dead
    /// letters and notifications, and digests that ended holding only such reports (see
    /// [`retention`]). Call again while it purges something.
    async fn purge_expired(&self, now: Time, limit: u32) -> Result<retention::Purged, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::redacted_url;

    #[test]
    fn passwords_never_reach_the_log() {
        let shown = redacted_url("postgres://repdist:s3cr3t@db.internal:5432/repdist?sslmode=require");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("repdist:********@db.internal:5432/repdist"), "{shown}");
        let shown = redacted_url("postgres://db.internal/repdist?user=a&password=hunter2");
        assert!(!shown.contains("hunter2") && shown.contains("user=a"), "{shown}");
        assert_eq!(redacted_url("postgres://postgres@127.0.0.1:5432/postgres"), "postgres://postgres@127.0.0.1:5432/postgres");
        assert!(!redacted_url("not a url with s3cr3t").contains("s3cr3t"));
    }
}
