//! The group commit's steps, in the order [`Store::apply`](super::super::Store::apply) runs them,
//! all inside its one transaction.

use std::collections::HashSet;

use dataflows::delivery::{DeliveryState, DeliveryTask};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use super::{micros_to_text, CHUNK};
use crate::store::codec::to_json;
use crate::store::{StoreError, WriteBatch, WriteOutcome};

pub(super) async fn reports(tx: &mut Transaction<'_, Sqlite>, batch: &WriteBatch, outcome: &mut WriteOutcome) -> Result<(), StoreError> {
    for report in &batch.reports {
        let event = &report.event;
        let inserted = sqlx::query(
            "INSERT INTO report_events (event_id, report_id, accepted_at, payload, purge_after) VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&event.event_id)
        .bind(&event.report_data.report_id)
        .bind(report.accepted_at as i64)
        .bind(to_json(event))
        .bind(crate::store::retention::purge_after(report.accepted_at, event.metadata.retention_days))
        .execute(&mut **tx)
        .await?;
        if inserted.rows_affected() == 0 {
            outcome.duplicate_events.push(event.event_id.clone());
        }
    }
    Ok(())
}

pub(super) async fn subscriptions(tx: &mut Transaction<'_, Sqlite>, batch: &WriteBatch) -> Result<(), StoreError> {
    for change in &batch.subscription_changes {
        let sub = &change.subscription;
        let at = micros_to_text(change.changed_at);
        sqlx::query(
            "INSERT INTO report_subscriptions (subscription_id, subscriber_id, subscriber_type, report_types, delivery_preferences, filters, status, created_at, subscription_type, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (subscription_id) DO UPDATE SET subscriber_id = excluded.subscriber_id, subscriber_type = excluded.subscriber_type,
               report_types = excluded.report_types, delivery_preferences = excluded.delivery_preferences, filters = excluded.filters,
               status = excluded.status, subscription_type = excluded.subscription_type, updated_at = excluded.updated_at",
        )
        .bind(&sub.subscription_id)
        .bind(&sub.subscriber_id)
        .bind(&sub.subscriber_type)
        .bind(to_json(&sub.report_types))
        .bind(to_json(&sub.delivery_preferences))
        .bind(to_json(&sub.filters))
        .bind(sub.status.as_str())
        .bind(&at)
        .bind(to_json(&sub.subscription_type).trim_matches('"').to_string())
        .bind(&at)
        .execute(&mut **tx)
        .await?;
        sqlx::query("INSERT INTO subscription_versions (subscription_id, changed_at, body) VALUES (?, ?, ?)")
            .bind(&sub.subscription_id)
            .bind(change.changed_at as i64)
            .bind(to_json(sub))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub(super) async fn expansions(tx: &mut Transaction<'_, Sqlite>, batch: &WriteBatch, outcome: &mut WriteOutcome) -> Result<(), StoreError> {
    let tasks: Vec<&DeliveryTask> = batch.expanded.iter().flat_map(|e| e.deliveries.iter()).collect();
    let mut inserted: HashSet<String> = HashSet::with_capacity(tasks.len());
    for chunk in tasks.chunks(CHUNK) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO delivery_history (delivery_id, subscription_id, report_id, channel, status, retry_count, event_id) ",
        );
        insert.push_values(chunk, |mut row, task| {
            row.push_bind(&task.delivery_id)
                .push_bind(&task.subscription_id)
                .push_bind(&task.report.report_data.report_id)
                .push_bind(task.channel.as_str())
                .push_bind(DeliveryState::Pending.as_str())
                .push_bind(0i64)
                .push_bind(&task.report.event_id);
        });
        insert.push(" ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id");
        for row in insert.build().fetch_all(&mut **tx).await? {
            inserted.insert(row.try_get::<String, _>(0)?);
        }
    }
    // Only the first occurrence of a new id is new: the same delivery twice in one batch (one report
    // published twice in one turn) is dispatched once.
    let mut fresh: Vec<&&DeliveryTask> = Vec::new();
    for task in &tasks {
        if inserted.remove(&task.delivery_id) {
            fresh.push(task);
        } else {
            outcome.existing_deliveries.push(task.delivery_id.clone());
        }
    }
    for chunk in fresh.chunks(CHUNK) {
        let mut insert = QueryBuilder::<Sqlite>::new("INSERT INTO pending_deliveries (delivery_id, task, due) ");
        insert.push_values(chunk, |mut row, task| {
            row.push_bind(&task.delivery_id).push_bind(to_json(**task)).push_bind(task.accepted_at as i64);
        });
        insert.push(" ON CONFLICT (delivery_id) DO NOTHING");
        insert.build().execute(&mut **tx).await?;
    }
    for expanded in &batch.expanded {
        sqlx::query("UPDATE report_events SET expanded = 1 WHERE event_id = ?")
            .bind(&expanded.event_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub(super) async fn attempts(tx: &mut Transaction<'_, Sqlite>, batch: &WriteBatch) -> Result<(), StoreError> {
    for attempt in &batch.attempts {
        let failed = attempt.state != DeliveryState::Delivered;
        let failures = if failed { attempt.attempt } else { attempt.attempt.saturating_sub(1) } as i64;
        if failed {
            sqlx::query("UPDATE delivery_history SET retry_count = ?, delivery_time = ?, error_details = ? WHERE delivery_id = ?")
                .bind(failures)
                .bind(micros_to_text(attempt.finished_at))
                .bind(&attempt.error)
                .bind(&attempt.delivery_id)
                .execute(&mut **tx)
                .await?;
        } else {
            sqlx::query("UPDATE delivery_history SET status = ?, retry_count = ?, delivery_time = ? WHERE delivery_id = ?")
                .bind(DeliveryState::Delivered.as_str())
                .bind(failures)
                .bind(micros_to_text(attempt.finished_at))
                .bind(&attempt.delivery_id)
                .execute(&mut **tx)
                .await?;
            sqlx::query("DELETE FROM pending_deliveries WHERE delivery_id = ?")
                .bind(&attempt.delivery_id)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

pub(super) async fn retries_and_dead_letters(tx: &mut Transaction<'_, Sqlite>, batch: &WriteBatch) -> Result<(), StoreError> {
    for retry in &batch.retries {
        sqlx::query("UPDATE delivery_history SET status = ? WHERE delivery_id = ? AND status != ?")
            .bind(DeliveryState::Retrying.as_str())
            .bind(&retry.task.delivery_id)
            .bind(DeliveryState::Delivered.as_str())
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "INSERT INTO pending_deliveries (delivery_id, task, due) VALUES (?, ?, ?)
             ON CONFLICT (delivery_id) DO UPDATE SET task = excluded.task, due = excluded.due",
        )
        .bind(&retry.task.delivery_id)
        .bind(to_json(&retry.task))
        .bind(retry.due as i64)
        .execute(&mut **tx)
        .await?;
    }
    for dead in &batch.dead_letters {
        let id = &dead.task.delivery_id;
        sqlx::query("UPDATE delivery_history SET status = ?, error_details = ?, delivery_time = ? WHERE delivery_id = ?")
            .bind(DeliveryState::DeadLettered.as_str())
            .bind(&dead.reason)
            .bind(micros_to_text(dead.at))
            .bind(id)
            .execute(&mut **tx)
            .await?;
        sqlx::query("DELETE FROM pending_deliveries WHERE delivery_id = ?").bind(id).execute(&mut **tx).await?;
        sqlx::query(
            "INSERT INTO dead_letters (delivery_id, task, reason, attempts, dead_lettered_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (delivery_id) DO UPDATE SET task = excluded.task, reason = excluded.reason, attempts = excluded.attempts,
               dead_lettered_at = excluded.dead_lettered_at",
        )
        .bind(id)
        .bind(to_json(&dead.task))
        .bind(&dead.reason)
        .bind(dead.task.attempt as i64)
        .bind(dead.at as i64)
        .execute(&mut **tx)
        .await?;
    }
    for replay in &batch.replays {
        let id = &replay.task.delivery_id;
        sqlx::query("DELETE FROM dead_letters WHERE delivery_id = ?").bind(id).execute(&mut **tx).await?;
        sqlx::query("UPDATE delivery_history SET status = ?, retry_count = 0, error_details = NULL WHERE delivery_id = ?")
            .bind(DeliveryState::Pending.as_str())
            .bind(id)
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "INSERT INTO pending_deliveries (delivery_id, task, due) VALUES (?, ?, ?)
             ON CONFLICT (delivery_id) DO UPDATE SET task = excluded.task, due = excluded.due",
        )
        .bind(id)
        .bind(to_json(&replay.task))
        .bind(replay.at as i64)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub(super) async fn stats(tx: &mut Transaction<'_, Sqlite>, batch: &WriteBatch) -> Result<(), StoreError> {
    for (key, row) in &batch.stats {
        let Some(row) = row else { continue };
        sqlx::query(
            "INSERT INTO distribution_stats (timestamp, report_type, channel, deliveries_attempted, deliveries_successful, deliveries_failed,
               avg_delivery_time_ms, p99_delivery_time_ms, window_start_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (window_start_us, report_type, channel) DO UPDATE SET deliveries_attempted = excluded.deliveries_attempted,
               deliveries_successful = excluded.deliveries_successful, deliveries_failed = excluded.deliveries_failed,
               avg_delivery_time_ms = excluded.avg_delivery_time_ms, p99_delivery_time_ms = excluded.p99_delivery_time_ms",
        )
        .bind(micros_to_text(key.window_start))
        .bind(key.report_type.as_str())
        .bind(key.channel.as_str())
        .bind(row.attempted as i64)
        .bind(row.successful as i64)
        .bind(row.failed as i64)
        .bind(row.avg_delivery_time_us.map(|us| us as f64 / 1000.0))
        .bind(row.p99_delivery_time_us.map(|us| us as f64 / 1000.0))
        .bind(key.window_start as i64)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
