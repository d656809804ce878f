//! The group commit's steps on PostgreSQL, in the order [`Store::apply`](crate::store::Store::apply)
//! runs them, inside its one transaction. A batch may carry thousands of rows, so each step is one
//! statement over `UNNEST`ed arrays, not a statement per row. Repeats of a key within one batch are
//! folded first, to what running the rows one by one (as the SQLite store does) would leave.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use chrono::{DateTime, Utc};
use dataflows::delivery::{DeliveryState, DeliveryTask};
use sqlx::{Postgres, Transaction};

use crate::store::codec::{to_datetime, to_json};
use crate::store::{StoreError, WriteBatch, WriteOutcome};

type Tx<'a> = Transaction<'a, Postgres>;

/// The items with one per key: at the position of the key's first occurrence, the last value given.
fn last_per_key<'a, T, K: Eq + Hash>(items: impl IntoIterator<Item = &'a T>, key: impl Fn(&T) -> K) -> Vec<&'a T> {
    let mut position: HashMap<K, usize> = HashMap::new();
    let mut out: Vec<&T> = Vec::new();
    for item in items {
        match position.get(&key(item)) {
            Some(&i) => out[i] = item,
            None => {
                position.insert(key(item), out.len());
                out.push(item);
            }
        }
    }
    out
}

/// Splits `ids` (in batch order) into those `inserted` created, first occurrence only, and the rest.
fn first_inserted<'a>(ids: impl IntoIterator<Item = &'a str>, mut inserted: HashSet<String>) -> (Vec<usize>, Vec<String>) {
    let (mut fresh, mut existing) = (Vec::new(), Vec::new());
    for (i, id) in ids.into_iter().enumerate() {
        if inserted.remove(id) {
            fresh.push(i);
        } else {
            existing.push(id.to_string());
        }
    }
    (fresh, existing)
}

fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

pub(super) async fn reports(tx: &mut Tx<'_>, batch: &WriteBatch, outcome: &mut WriteOutcome) -> Result<(), StoreError> {
    if batch.reports.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = batch.reports.iter().map(|r| r.event.event_id.as_str()).collect();
    let report_ids: Vec<&str> = batch.reports.iter().map(|r| r.event.report_data.report_id.as_str()).collect();
    let accepted: Vec<i64> = batch.reports.iter().map(|r| r.accepted_at as i64).collect();
    let payloads: Vec<String> = batch.reports.iter().map(|r| to_json(&r.event)).collect();
    let purge_after: Vec<i64> = batch
        .reports
        .iter()
        .map(|r| crate::store::retention::purge_after(r.accepted_at, r.event.metadata.retention_days))
        .collect();
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO report_events (event_id, report_id, accepted_at, payload, purge_after)
         SELECT e, r, a, p::jsonb, x FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::int8[]) WITH ORDINALITY AS t(e, r, a, p, x, n) ORDER BY n
         ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
    )
    .bind(&ids)
    .bind(&report_ids)
    .bind(&accepted)
    .bind(&payloads)
    .bind(&purge_after)
    .fetch_all(&mut **tx)
    .await?;
    let (_, duplicates) = first_inserted(ids.iter().copied(), inserted.into_iter().collect());
    outcome.duplicate_events.extend(duplicates);
    Ok(())
}

pub(super) async fn subscriptions(tx: &mut Tx<'_>, batch: &WriteBatch) -> Result<(), StoreError> {
    let changes = &batch.subscription_changes;
    if changes.is_empty() {
        return Ok(());
    }
    // A subscription created and changed in one batch was created at its first version's time.
    let mut first_change: HashMap<&str, DateTime<Utc>> = HashMap::new();
    for change in changes {
        first_change.entry(change.subscription.subscription_id.as_str()).or_insert_with(|| to_datetime(change.changed_at));
    }
    let latest = last_per_key(changes, |c| c.subscription.subscription_id.clone());
    let subs = || latest.iter().map(|c| &c.subscription);
    sqlx::query(
        "INSERT INTO report_subscriptions (subscription_id, subscriber_id, subscriber_type, report_types, delivery_preferences, filters,
           status, created_at, subscription_type, updated_at)
         SELECT id, sub, st, rt::jsonb, dp::jsonb, f::jsonb, status, created, stype, updated
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[], $9::text[], $10::timestamptz[])
           AS t(id, sub, st, rt, dp, f, status, created, stype, updated)
         ON CONFLICT (subscription_id) DO UPDATE SET subscriber_id = excluded.subscriber_id, subscriber_type = excluded.subscriber_type,
           report_types = excluded.report_types, delivery_preferences = excluded.delivery_preferences, filters = excluded.filters,
           status = excluded.status, subscription_type = excluded.subscription_type, updated_at = excluded.updated_at",
    )
    .bind(subs().map(|s| s.subscription_id.as_str()).collect::<Vec<_>>())
    .bind(subs().map(|s| s.subscriber_id.as_str()).collect::<Vec<_>>())
    .bind(subs().map(|s| s.subscriber_type.as_str()).collect::<Vec<_>>())
    .bind(subs().map(|s| to_json(&s.report_types)).collect::<Vec<_>>())
    .bind(subs().map(|s| to_json(&s.delivery_preferences)).collect::<Vec<_>>())
    .bind(subs().map(|s| to_json(&s.filters)).collect::<Vec<_>>())
    .bind(subs().map(|s| s.status.as_str()).collect::<Vec<_>>())
    .bind(subs().map(|s| first_change[s.subscription_id.as_str()]).collect::<Vec<_>>())
    .bind(subs().map(|s| to_json(&s.subscription_type).trim_matches('"').to_string()).collect::<Vec<_>>())
    .bind(latest.iter().map(|c| to_datetime(c.changed_at)).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    // Every version is history, in batch order (recovery replays them by `seq`).
    sqlx::query(
        "INSERT INTO subscription_versions (subscription_id, changed_at, body)
         SELECT s, c, b::jsonb FROM UNNEST($1::text[], $2::int8[], $3::text[]) WITH ORDINALITY AS t(s, c, b, n) ORDER BY n",
    )
    .bind(changes.iter().map(|c| c.subscription.subscription_id.as_str()).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.changed_at as i64).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| to_json(&c.subscription)).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn expansions(tx: &mut Tx<'_>, batch: &WriteBatch, outcome: &mut WriteOutcome) -> Result<(), StoreError> {
    if batch.expanded.is_empty() {
        return Ok(());
    }
    let tasks: Vec<&DeliveryTask> = batch.expanded.iter().flat_map(|e| e.deliveries.iter()).collect();
    if !tasks.is_empty() {
        let inserted: Vec<String> = sqlx::query_scalar(
            "INSERT INTO delivery_history (delivery_id, subscription_id, report_id, channel, status, retry_count, event_id)
             SELECT d, s, r, c, $6, 0, e FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS t(d, s, r, c, e, n)
             ORDER BY n
             ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id",
        )
        .bind(tasks.iter().map(|t| t.delivery_id.as_str()).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| t.subscription_id.as_str()).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| t.report.report_data.report_id.as_str()).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| t.channel.as_str()).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| t.report.event_id.as_str()).collect::<Vec<_>>())
        .bind(DeliveryState::Pending.as_str())
        .fetch_all(&mut **tx)
        .await?;
        // Only the first occurrence of a new id is new: the same delivery twice in one batch is dispatched once.
        let (fresh, existing) = first_inserted(tasks.iter().map(|t| t.delivery_id.as_str()), inserted.into_iter().collect());
        outcome.existing_deliveries.extend(existing);
        let fresh: Vec<&DeliveryTask> = fresh.into_iter().map(|i| tasks[i]).collect();
        if !fresh.is_empty() {
            sqlx::query(
                "INSERT INTO pending_deliveries (delivery_id, task, due)
                 SELECT d, t::jsonb, due FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS x(d, t, due)
                 ON CONFLICT (delivery_id) DO NOTHING",
            )
            .bind(fresh.iter().map(|t| t.delivery_id.as_str()).collect::<Vec<_>>())
            .bind(fresh.iter().map(|t| to_json(*t)).collect::<Vec<_>>())
            .bind(fresh.iter().map(|t| t.accepted_at as i64).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
    }
    sqlx::query("UPDATE report_events SET expanded = true WHERE event_id = ANY($1)")
        .bind(batch.expanded.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What a delivery's attempts in one batch leave, applied in order: each sets the failure count and
/// time; a failure sets the error; a success marks it delivered (a later failure does not undo that).
struct AttemptsFolded<'a> {
    delivery_id: &'a str,
    delivered: bool,
    failures: i32,
    at: DateTime<Utc>,
    sets_error: bool,
    error: Option<&'a str>,
}

pub(super) async fn attempts(tx: &mut Tx<'_>, batch: &WriteBatch) -> Result<(), StoreError> {
    if batch.attempts.is_empty() {
        return Ok(());
    }
    let mut position: HashMap<&str, usize> = HashMap::new();
    let mut folded: Vec<AttemptsFolded> = Vec::new();
    for attempt in &batch.attempts {
        let failed = attempt.state != DeliveryState::Delivered;
        let failures = if failed { attempt.attempt } else { attempt.attempt.saturating_sub(1) };
        let i = *position.entry(attempt.delivery_id.as_str()).or_insert_with(|| {
            folded.push(AttemptsFolded {
                delivery_id: &attempt.delivery_id,
                delivered: false,
                failures: 0,
                at: DateTime::default(),
                sets_error: false,
                error: None,
            });
            folded.len() - 1
        });
        let entry = &mut folded[i];
        entry.failures = count(failures as u64);
        entry.at = to_datetime(attempt.finished_at);
        if failed {
            entry.sets_error = true;
            entry.error = attempt.error.as_deref();
        } else {
            entry.delivered = true;
        }
    }
    sqlx::query(
        "UPDATE delivery_history h SET
           status = CASE WHEN u.delivered THEN $7 ELSE h.status END,
           retry_count = u.failures, delivery_time = u.at,
           error_details = CASE WHEN u.sets_error THEN u.error ELSE h.error_details END
         FROM UNNEST($1::text[], $2::bool[], $3::int4[], $4::timestamptz[], $5::bool[], $6::text[]) AS u(id, delivered, failures, at, sets_error, error)
         WHERE h.delivery_id = u.id",
    )
    .bind(folded.iter().map(|f| f.delivery_id).collect::<Vec<_>>())
    .bind(folded.iter().map(|f| f.delivered).collect::<Vec<_>>())
    .bind(folded.iter().map(|f| f.failures).collect::<Vec<_>>())
    .bind(folded.iter().map(|f| f.at).collect::<Vec<_>>())
    .bind(folded.iter().map(|f| f.sets_error).collect::<Vec<_>>())
    .bind(folded.iter().map(|f| f.error).collect::<Vec<_>>())
    .bind(DeliveryState::Delivered.as_str())
    .execute(&mut **tx)
    .await?;
    let delivered: Vec<&str> = folded.iter().filter(|f| f.delivered).map(|f| f.delivery_id).collect();
    if !delivered.is_empty() {
        sqlx::query("DELETE FROM pending_deliveries WHERE delivery_id = ANY($1)").bind(&delivered).execute(&mut **tx).await?;
    }
    Ok(())
}

/// Upserts the next attempt of each task (`task`, due at `due`) into `pending_deliveries`.
async fn schedule(tx: &mut Tx<'_>, tasks: &[(&DeliveryTask, i64)]) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO pending_deliveries (delivery_id, task, due)
         SELECT d, t::jsonb, due FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS x(d, t, due)
         ON CONFLICT (delivery_id) DO UPDATE SET task = excluded.task, due = excluded.due",
    )
    .bind(tasks.iter().map(|(t, _)| t.delivery_id.as_str()).collect::<Vec<_>>())
    .bind(tasks.iter().map(|(t, _)| to_json(*t)).collect::<Vec<_>>())
    .bind(tasks.iter().map(|(_, due)| *due).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn retries_and_dead_letters(tx: &mut Tx<'_>, batch: &WriteBatch) -> Result<(), StoreError> {
    let retries = last_per_key(&batch.retries, |r| r.task.delivery_id.clone());
    if !retries.is_empty() {
        sqlx::query("UPDATE delivery_history SET status = $2 WHERE delivery_id = ANY($1) AND status != $3")
            .bind(retries.iter().map(|r| r.task.delivery_id.as_str()).collect::<Vec<_>>())
            .bind(DeliveryState::Retrying.as_str())
            .bind(DeliveryState::Delivered.as_str())
            .execute(&mut **tx)
            .await?;
        let scheduled: Vec<(&DeliveryTask, i64)> = retries.iter().map(|r| (&r.task, r.due as i64)).collect();
        schedule(tx, &scheduled).await?;
    }

    let dead = last_per_key(&batch.dead_letters, |d| d.task.delivery_id.clone());
    if !dead.is_empty() {
        let ids: Vec<&str> = dead.iter().map(|d| d.task.delivery_id.as_str()).collect();
        sqlx::query(
            "UPDATE delivery_history h SET status = $4, error_details = u.reason, delivery_time = u.at
             FROM UNNEST($1::text[], $2::text[], $3::timestamptz[]) AS u(id, reason, at) WHERE h.delivery_id = u.id",
        )
        .bind(&ids)
        .bind(dead.iter().map(|d| d.reason.as_str()).collect::<Vec<_>>())
        .bind(dead.iter().map(|d| to_datetime(d.at)).collect::<Vec<_>>())
        .bind(DeliveryState::DeadLettered.as_str())
        .execute(&mut **tx)
        .await?;
        sqlx::query("DELETE FROM pending_deliveries WHERE delivery_id = ANY($1)").bind(&ids).execute(&mut **tx).await?;
        sqlx::query(
            "INSERT INTO dead_letters (delivery_id, task, reason, attempts, dead_lettered_at)
             SELECT d, t::jsonb, r, a, at FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[], $5::int8[]) WITH ORDINALITY AS x(d, t, r, a, at, n)
             ORDER BY n
             ON CONFLICT (delivery_id) DO UPDATE SET task = excluded.task, reason = excluded.reason, attempts = excluded.attempts,
               dead_lettered_at = excluded.dead_lettered_at",
        )
        .bind(&ids)
        .bind(dead.iter().map(|d| to_json(&d.task)).collect::<Vec<_>>())
        .bind(dead.iter().map(|d| d.reason.as_str()).collect::<Vec<_>>())
        .bind(dead.iter().map(|d| count(d.task.attempt as u64)).collect::<Vec<_>>())
        .bind(dead.iter().map(|d| d.at as i64).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }

    let replays = last_per_key(&batch.replays, |r| r.task.delivery_id.clone());
    if !replays.is_empty() {
        let ids: Vec<&str> = replays.iter().map(|r| r.task.delivery_id.as_str()).collect();
        sqlx::query("DELETE FROM dead_letters WHERE delivery_id = ANY($1)").bind(&ids).execute(&mut **tx).await?;
        sqlx::query("UPDATE delivery_history SET status = $2, retry_count = 0, error_details = NULL WHERE delivery_id = ANY($1)")
            .bind(&ids)
            .bind(DeliveryState::Pending.as_str())
            .execute(&mut **tx)
            .await?;
        let scheduled: Vec<(&DeliveryTask, i64)> = replays.iter().map(|r| (&r.task, r.at as i64)).collect();
        schedule(tx, &scheduled).await?;
    }
    Ok(())
}

pub(super) async fn stats(tx: &mut Tx<'_>, batch: &WriteBatch) -> Result<(), StoreError> {
    let rows: Vec<_> = batch.stats.iter().filter_map(|(key, row)| row.as_ref().map(|row| (key, row))).collect();
    let rows = last_per_key(&rows, |(key, _)| (key.window_start, key.report_type.as_str(), key.channel.as_str()));
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO distribution_stats (timestamp, report_type, channel, deliveries_attempted, deliveries_successful, deliveries_failed,
           avg_delivery_time_ms, p99_delivery_time_ms, window_start_us)
         SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::int4[], $5::int4[], $6::int4[], $7::float8[], $8::float8[], $9::int8[])
         ON CONFLICT (window_start_us, report_type, channel) DO UPDATE SET deliveries_attempted = excluded.deliveries_attempted,
           deliveries_successful = excluded.deliveries_successful, deliveries_failed = excluded.deliveries_failed,
           avg_delivery_time_ms = excluded.avg_delivery_time_ms, p99_delivery_time_ms = excluded.p99_delivery_time_ms",
    )
    .bind(rows.iter().map(|(k, _)| to_datetime(k.window_start)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(k, _)| k.report_type.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(k, _)| k.channel.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| count(r.attempted)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| count(r.successful)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| count(r.failed)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| r.avg_delivery_time_us.map(|us| us as f64 / 1000.0)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| r.p99_delivery_time_us.map(|us| us as f64 / 1000.0)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(k, _)| k.window_start as i64).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
