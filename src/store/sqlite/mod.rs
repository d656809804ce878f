//! The embedded store: SQLite in WAL mode under the data directory. One writer connection takes
//! the group commits; a pool of read-only connections serves queries without queueing behind it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dataflows::delivery::{DeliveryChannel, DeliveryState, DeliveryTask};
use dataflows::report::ReportDistribution;
use dataflows::subscription::{ReportSubscription, SubscriptionStatus};
use dataflows::Time;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row;

use super::codec::{corrupt, parse_json, to_datetime};
use super::*;

mod auth;
mod channels;
mod digests;
mod outbox;
mod retention;
mod templates;
mod write;

#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// `synchronous=FULL` (fsync per commit) when true, `NORMAL` otherwise.
    pub synchronous_full: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions { synchronous_full: true }
    }
}

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

/// Rows per multi-row INSERT (SQLite allows 32766 bound parameters; our widest row binds 9).
const CHUNK: usize = 500;

fn micros_to_text(time: Time) -> String {
    to_datetime(time).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl SqliteStore {
    pub async fn open(data_dir: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Corrupt(format!("cannot create {}: {e}", data_dir.display())))?;
        let path = data_dir.join("repdist.db");
        let connect = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if options.synchronous_full { SqliteSynchronous::Full } else { SqliteSynchronous::Normal })
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new().max_connections(1).connect_with(connect.clone()).await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new().max_connections(4).connect_with(connect.read_only(true)).await?;
        Ok(SqliteStore { writer, reader })
    }
}

fn subscription_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<StoredSubscription, StoreError> {
    let id: String = row.try_get("subscription_id")?;
    let report_types = parse_json("subscription", &id, &row.try_get::<String, _>("report_types")?)?;
    let delivery_preferences = parse_json("subscription", &id, &row.try_get::<String, _>("delivery_preferences")?)?;
    let filters = match row.try_get::<Option<String>, _>("filters")? {
        Some(text) => parse_json("subscription", &id, &text)?,
        None => Default::default(),
    };
    let status: String = row.try_get("status")?;
    let status = match status.as_str() {
        "active" => SubscriptionStatus::Active,
        "paused" => SubscriptionStatus::Paused,
        "cancelled" => SubscriptionStatus::Cancelled,
        other => return Err(corrupt("subscription", &id, format!("unknown status {other}"))),
    };
    let subscription_type = parse_json("subscription", &id, &format!("\"{}\"", row.try_get::<String, _>("subscription_type")?))?;
    let parse_time = |column: &str| -> Result<DateTime<Utc>, StoreError> {
        let text: String = row.try_get(column)?;
        DateTime::parse_from_rfc3339(&text).map(|t| t.with_timezone(&Utc)).map_err(|e| corrupt("subscription", &id, e))
    };
    Ok(StoredSubscription {
        created_at: parse_time("created_at")?,
        updated_at: parse_time("updated_at")?,
        subscription: ReportSubscription {
            subscription_id: id.clone(),
            subscriber_id: row.try_get("subscriber_id")?,
            subscriber_type: row.try_get("subscriber_type")?,
            subscription_type,
            report_types,
            delivery_preferences,
            filters,
            status,
        },
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn apply(&self, batch: &WriteBatch) -> Result<WriteOutcome, StoreError> {
        let mut outcome = WriteOutcome::default();
        let mut tx = self.writer.begin().await?;
        write::reports(&mut tx, batch, &mut outcome).await?;
        write::subscriptions(&mut tx, batch).await?;
        write::expansions(&mut tx, batch, &mut outcome).await?;
        digests::write(&mut tx, batch).await?;
        write::attempts(&mut tx, batch).await?;
        write::retries_and_dead_letters(&mut tx, batch).await?;
        write::stats(&mut tx, batch).await?;
        outbox::write(&mut tx, batch).await?;
        auth::write(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn subscription(&self, subscription_id: &str) -> Result<Option<StoredSubscription>, StoreError> {
        let row = sqlx::query("SELECT * FROM report_subscriptions WHERE subscription_id = ?")
            .bind(subscription_id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(subscription_from_row).transpose()
    }

    async fn subscriptions_of(&self, subscriber_id: &str) -> Result<Vec<StoredSubscription>, StoreError> {
        let rows = sqlx::query("SELECT * FROM report_subscriptions WHERE subscriber_id = ? ORDER BY created_at, subscription_id")
            .bind(subscriber_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(subscription_from_row).collect()
    }

    async fn delivery_status(&self, delivery_id: &str) -> Result<Option<DeliveryStatus>, StoreError> {
        let row = sqlx::query(
            "SELECT delivery_id, subscription_id, report_id, channel, status, delivery_time, retry_count, error_details FROM delivery_history WHERE delivery_id = ?",
        )
        .bind(delivery_id)
        .fetch_optional(&self.reader)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let channel: String = row.try_get("channel")?;
        let status: String = row.try_get("status")?;
        let delivery_time: Option<String> = row.try_get("delivery_time")?;
        Ok(Some(DeliveryStatus {
            delivery_id: row.try_get("delivery_id")?,
            subscription_id: row.try_get("subscription_id")?,
            report_id: row.try_get("report_id")?,
            channel: DeliveryChannel::parse(&channel).ok_or_else(|| corrupt("delivery", delivery_id, "unknown channel"))?,
            status: DeliveryState::parse(&status).ok_or_else(|| corrupt("delivery", delivery_id, "unknown status"))?,
            delivery_time: delivery_time
                .map(|t| DateTime::parse_from_rfc3339(&t).map(|t| t.with_timezone(&Utc)))
                .transpose()
                .map_err(|e| corrupt("delivery", delivery_id, e))?,
            retry_count: row.try_get::<i64, _>("retry_count")? as u32,
            error_details: row.try_get("error_details")?,
        }))
    }

    async fn deliveries_of_event(&self, event_id: &str) -> Result<Option<Vec<String>>, StoreError> {
        let expanded: Option<i64> = sqlx::query_scalar("SELECT expanded FROM report_events WHERE event_id = ?")
            .bind(event_id)
            .fetch_optional(&self.reader)
            .await?;
        if expanded != Some(1) {
            return Ok(None);
        }
        let report_id: String = sqlx::query_scalar("SELECT report_id FROM report_events WHERE event_id = ?")
            .bind(event_id)
            .fetch_one(&self.reader)
            .await?;
        // Ids come from the report, so an event for an already-published report shares its ids.
        let mut ids: Vec<String> = sqlx::query_scalar("SELECT delivery_id FROM delivery_history WHERE event_id = ? OR report_id = ? ORDER BY delivery_id")
            .bind(event_id)
            .bind(&report_id)
            .fetch_all(&self.reader)
            .await?;
        ids.extend(digests::of_event(&self.reader, event_id, &report_id).await?);
        ids.sort();
        ids.dedup();
        Ok(Some(ids))
    }

    async fn dead_letters(&self, limit: u32, after: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT delivery_id, task, reason, attempts, dead_lettered_at FROM dead_letters
             WHERE ?1 IS NULL OR rowid > COALESCE((SELECT rowid FROM dead_letters WHERE delivery_id = ?1), 0)
             ORDER BY rowid LIMIT ?2",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("delivery_id")?;
                let task: DeliveryTask = parse_json("dead letter", &id, &row.try_get::<String, _>("task")?)?;
                Ok(DeadLetter {
                    delivery_id: id,
                    subscription_id: task.subscription_id,
                    subscriber_id: task.subscriber_id,
                    report_id: task.report.report_data.report_id,
                    event_id: task.report.event_id,
                    channel: task.channel,
                    reason: row.try_get("reason")?,
                    attempts: row.try_get::<i64, _>("attempts")? as u32,
                    dead_lettered_at: to_datetime(row.try_get::<i64, _>("dead_lettered_at")? as Time),
                })
            })
            .collect()
    }

    async fn dead_letter_task(&self, delivery_id: &str) -> Result<Option<DeliveryTask>, StoreError> {
        let task: Option<String> = sqlx::query_scalar("SELECT task FROM dead_letters WHERE delivery_id = ?")
            .bind(delivery_id)
            .fetch_optional(&self.reader)
            .await?;
        task.map(|t| parse_json("dead letter", delivery_id, &t)).transpose()
    }

    async fn insert_notification(&self, notification: &Notification) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO notifications (notification_id, subscriber_id, subscription_id, report_id, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (notification_id) DO NOTHING",
        )
        .bind(&notification.notification_id)
        .bind(&notification.subscriber_id)
        .bind(&notification.subscription_id)
        .bind(&notification.report_id)
        .bind(notification.payload.to_string())
        .bind(notification.created_at.timestamp_micros())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn notifications_of(&self, subscriber_id: &str, limit: u32) -> Result<Vec<Notification>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM notifications WHERE subscriber_id = ? ORDER BY created_at DESC, notification_id LIMIT ?",
        )
        .bind(subscriber_id)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("notification_id")?;
                Ok(Notification {
                    payload: parse_json("notification", &id, &row.try_get::<String, _>("payload")?)?,
                    notification_id: id,
                    subscriber_id: row.try_get("subscriber_id")?,
                    subscription_id: row.try_get("subscription_id")?,
                    report_id: row.try_get("report_id")?,
                    created_at: to_datetime(row.try_get::<i64, _>("created_at")? as Time),
                })
            })
            .collect()
    }

    async fn delivery_summary(&self) -> Result<DeliverySummary, StoreError> {
        let rows = sqlx::query("SELECT channel, status, COUNT(*) AS n, SUM(retry_count) AS retries FROM delivery_history GROUP BY channel, status")
            .fetch_all(&self.reader)
            .await?;
        let mut summary = DeliverySummary::default();
        for row in rows {
            let channel: String = row.try_get("channel")?;
            let status: String = row.try_get("status")?;
            let n = row.try_get::<i64, _>("n")? as u64;
            summary.total += n;
            let retries = row.try_get::<Option<i64>, _>("retries")?.unwrap_or(0) as u64;
            summary.retries += retries;
            *summary.retries_by_channel.entry(channel.clone()).or_default() += retries;
            let states = summary.by_channel.entry(channel).or_insert_with(|| {
                [DeliveryState::Pending, DeliveryState::Retrying, DeliveryState::Delivered, DeliveryState::DeadLettered]
                    .iter()
                    .map(|s| (s.as_str().to_string(), 0))
                    .collect::<BTreeMap<_, _>>()
            });
            *states.entry(status).or_default() += n;
        }
        Ok(summary)
    }

    async fn stats_since(&self, since: DateTime<Utc>) -> Result<Vec<StoredStats>, StoreError> {
        let rows = sqlx::query("SELECT * FROM distribution_stats WHERE window_start_us >= ? ORDER BY window_start_us, report_type, channel")
            .bind(since.timestamp_micros())
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredStats {
                    timestamp: to_datetime(row.try_get::<i64, _>("window_start_us")? as Time),
                    report_type: row.try_get("report_type")?,
                    channel: row.try_get("channel")?,
                    deliveries_attempted: row.try_get::<i64, _>("deliveries_attempted")? as u64,
                    deliveries_successful: row.try_get::<i64, _>("deliveries_successful")? as u64,
                    deliveries_failed: row.try_get::<i64, _>("deliveries_failed")? as u64,
                    avg_delivery_time_ms: row.try_get("avg_delivery_time_ms")?,
                    p99_delivery_time_ms: row.try_get("p99_delivery_time_ms")?,
                })
            })
            .collect()
    }

    async fn recovery_state(&self) -> Result<RecoveryState, StoreError> {
        let mut state = RecoveryState::default();
        for row in sqlx::query("SELECT event_id, accepted_at, payload FROM report_events WHERE expanded = 0 ORDER BY accepted_at")
            .fetch_all(&self.writer)
            .await?
        {
            let id: String = row.try_get("event_id")?;
            let event: ReportDistribution = parse_json("report event", &id, &row.try_get::<String, _>("payload")?)?;
            state.unexpanded_reports.push(NewReport { event, accepted_at: row.try_get::<i64, _>("accepted_at")? as Time });
        }
        let earliest = state.unexpanded_reports.first().map(|r| r.accepted_at);

        // Versions by subscription, in order; each is valid until the next one.
        let mut versions: HashMap<String, Vec<(Time, ReportSubscription)>> = HashMap::new();
        for row in sqlx::query("SELECT subscription_id, changed_at, body FROM subscription_versions ORDER BY seq").fetch_all(&self.writer).await? {
            let id: String = row.try_get("subscription_id")?;
            let body: ReportSubscription = parse_json("subscription version", &id, &row.try_get::<String, _>("body")?)?;
            versions.entry(id).or_default().push((row.try_get::<i64, _>("changed_at")? as Time, body));
        }
        state.subscription_versions = super::versions::in_effect(versions, earliest);

        for row in sqlx::query("SELECT delivery_id, task, due FROM pending_deliveries ORDER BY due").fetch_all(&self.writer).await? {
            let id: String = row.try_get("delivery_id")?;
            let task: DeliveryTask = parse_json("pending delivery", &id, &row.try_get::<String, _>("task")?)?;
            state.pending_deliveries.push((task, row.try_get::<i64, _>("due")? as Time));
        }
        state.pending_digest_members = digests::pending(&self.writer).await?;
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(t) FROM (SELECT MAX(accepted_at) AS t FROM report_events UNION ALL SELECT MAX(changed_at) FROM subscription_versions
             UNION ALL SELECT MAX(due) FROM pending_deliveries UNION ALL SELECT MAX(dead_lettered_at) FROM dead_letters)",
        )
        .fetch_one(&self.writer)
        .await?;
        state.last_time = last.unwrap_or(0).max(0) as Time;
        Ok(state)
    }

    async fn channels(&self) -> Result<Vec<StoredChannel>, StoreError> {
        channels::list(&self.reader).await
    }

    async fn channel(&self, channel_id: &str) -> Result<Option<StoredChannel>, StoreError> {
        channels::get(&self.reader, channel_id).await
    }

    async fn create_channel(&self, channel: &NewChannel) -> Result<Option<StoredChannel>, StoreError> {
        channels::create(&self.writer, channel).await
    }

    async fn set_channel_enabled(&self, channel_id: &str, enabled: bool) -> Result<Option<StoredChannel>, StoreError> {
        channels::set_enabled(&self.writer, channel_id, enabled).await
    }

    async fn email_templates(&self) -> Result<Vec<EmailTemplateRecord>, StoreError> {
        templates::list(&self.reader).await
    }

    async fn put_email_template(&self, template: &EmailTemplateRecord) -> Result<(), StoreError> {
        templates::put(&self.writer, template).await
    }

    async fn delete_email_template(&self, report_type: &str, locale: &str) -> Result<bool, StoreError> {
        templates::delete(&self.writer, report_type, locale).await
    }

    async fn outbox_peek(&self, limit: u32) -> Result<Vec<OutboxRecord>, StoreError> {
        outbox::peek(&self.writer, limit).await
    }

    async fn outbox_remove(&self, seqs: &[i64]) -> Result<(), StoreError> {
        outbox::remove(&self.writer, seqs).await
    }

    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        auth::create_key(&self.writer, key).await
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        auth::key_by_hash(&self.reader, key_hash).await
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        auth::keys(&self.reader).await
    }

    async fn revoke_api_key(&self, key_id: &str, at: i64) -> Result<Option<ApiKeyRecord>, StoreError> {
        auth::revoke_key(&self.writer, key_id, at).await
    }

    async fn active_api_keys(&self) -> Result<u64, StoreError> {
        auth::active_keys(&self.reader).await
    }

    async fn append_audit(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        auth::append(&self.writer, entries).await
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        auth::query(&self.reader, query).await
    }

    async fn purge_expired(&self, now: Time, limit: u32) -> Result<crate::store::retention::Purged, StoreError> {
        retention::purge(&self.writer, i64::try_from(now).unwrap_or(i64::MAX), limit).await
    }
}
