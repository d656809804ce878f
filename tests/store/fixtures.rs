//! Records and batches the cases build on, and small read helpers.

use chrono::{DateTime, Utc};
use dataflows::delivery::{delivery_id, DeliveryChannel, DeliveryState, DeliveryTask};
use dataflows::report::ReportDistribution;
use dataflows::subscription::ReportSubscription;
use dataflows::Time;
use repdist::store::*;
use serde_json::json;

/// 2023-11-14T22:13:20Z in microseconds: dataflow times in the suite are offsets from it.
pub const T0: Time = 1_700_000_000_000_000;
pub const SEC: Time = 1_000_000;

pub fn at(time: Time) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time as i64).unwrap()
}

pub fn report(event_id: &str, report_id: &str) -> ReportDistribution {
    serde_json::from_value(json!({
        "event_id": event_id,
        "timestamp": "2024-05-01T12:00:00.123456Z",
        "data_type": "PERFORMANCE_REPORT",
        "report_data": {"report_id": report_id, "report_type": "monthly", "portfolio_id": "portfolio_001",
                        "report_period": "2024-04", "file_path": "/reports/r\u{e9}sum\u{e9} \"q\".pdf", "file_size_bytes": 2048},
        "routing": {"topic": "reports", "routing_key": "portfolio_001.performance.monthly", "priority": 3},
        "metadata": {"source_service": "report-generator", "delivery_priority": 5, "encryption_required": true}
    }))
    .expect("report fixture")
}

pub fn subscription(id: &str, subscriber: &str, status: &str, channels: &[&str]) -> ReportSubscription {
    serde_json::from_value(json!({
        "subscription_id": id,
        "subscriber_id": subscriber,
        "subscriber_type": "USER",
        "subscription_type": "REAL_TIME",
        "report_types": ["PERFORMANCE_REPORT", "RISK_REPORT"],
        "delivery_preferences": {
            "channels": channels,
            "format_preferences": ["pdf"],
            "notification_settings": {
                "webhook": {"url": format!("https://hooks.example.com/{id}"), "secret": "whsec_c2VjcmV0c2VjcmV0c2VjcmV0"},
                "email": {"to": ["ops@example.com"]},
                "mobile_push": {"provider": "NTFY", "topic_url": format!("https://ntfy.example.com/{id}")},
                "sftp": {"host": "sftp.example.com", "port": 2222, "username": "u", "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\n-----END OPENSSH PRIVATE KEY-----\n",
                         "passphrase": "pässphrase", "host_key": "SHA256:3l2WbMFMFMLFrwrRXKFHaZZgYmra8EyDYG+Rg8EoIxg", "directory": "/inbox/résumés"}
            }
        },
        "filters": {"portfolio_ids": ["portfolio_001"], "routing_key": "portfolio_001.*", "min_priority": 1},
        "status": status
    }))
    .expect("subscription fixture")
}

pub fn task(report: &ReportDistribution, sub: &ReportSubscription, channel: DeliveryChannel, accepted_at: Time) -> DeliveryTask {
    DeliveryTask {
        delivery_id: delivery_id(&report.report_data.report_id, &sub.subscription_id, channel),
        subscription_id: sub.subscription_id.clone(),
        subscriber_id: sub.subscriber_id.clone(),
        channel,
        settings: sub.delivery_preferences.notification_settings.clone(),
        report: report.clone(),
        accepted_at,
        attempt: 1,
        digest: None,
        content: None,
    }
}

pub fn with_attempt(task: &DeliveryTask, attempt: u32) -> DeliveryTask {
    DeliveryTask { attempt, ..task.clone() }
}

pub fn reports(list: &[(&ReportDistribution, Time)]) -> WriteBatch {
    WriteBatch {
        reports: list.iter().map(|(event, accepted_at)| NewReport { event: (*event).clone(), accepted_at: *accepted_at }).collect(),
        ..Default::default()
    }
}

pub fn changes(list: &[(&ReportSubscription, Time)]) -> WriteBatch {
    WriteBatch {
        subscription_changes: list
            .iter()
            .map(|(sub, changed_at)| SubscriptionChange { subscription: (*sub).clone(), changed_at: *changed_at })
            .collect(),
        ..Default::default()
    }
}

pub fn expanded(event_id: &str, tasks: &[&DeliveryTask]) -> WriteBatch {
    WriteBatch {
        expanded: vec![ExpandedReport { event_id: event_id.to_string(), deliveries: tasks.iter().map(|t| (*t).clone()).collect(), digest_members: vec![] }],
        ..Default::default()
    }
}

pub fn attempt(task: &DeliveryTask, state: DeliveryState, error: Option<&str>, finished_at: Time) -> WriteBatch {
    WriteBatch {
        attempts: vec![AttemptRecord {
            delivery_id: task.delivery_id.clone(),
            attempt: task.attempt,
            state,
            error: error.map(str::to_string),
            finished_at,
        }],
        ..Default::default()
    }
}

pub fn retry(task: &DeliveryTask, due: Time, error: &str) -> WriteBatch {
    WriteBatch { retries: vec![RetryRecord { task: task.clone(), due, error: error.to_string() }], ..Default::default() }
}

pub fn dead_letter(task: &DeliveryTask, reason: &str, at: Time) -> WriteBatch {
    WriteBatch { dead_letters: vec![DeadLetterRecord { task: task.clone(), reason: reason.to_string(), at }], ..Default::default() }
}

pub fn replay(task: &DeliveryTask, at: Time) -> WriteBatch {
    WriteBatch { replays: vec![ReplayRecord { task: task.clone(), at }], ..Default::default() }
}

/// All of `parts` in one batch, as one turn of the core loop would commit them.
pub fn merged(parts: Vec<WriteBatch>) -> WriteBatch {
    let mut all = WriteBatch::default();
    for part in parts {
        all.reports.extend(part.reports);
        all.subscription_changes.extend(part.subscription_changes);
        all.expanded.extend(part.expanded);
        all.attempts.extend(part.attempts);
        all.retries.extend(part.retries);
        all.dead_letters.extend(part.dead_letters);
        all.replays.extend(part.replays);
        all.stats.extend(part.stats);
    }
    all
}

pub async fn apply(store: &dyn Store, batch: WriteBatch) -> WriteOutcome {
    store.apply(&batch).await.expect("batch commits")
}

pub async fn status(store: &dyn Store, delivery_id: &str) -> DeliveryStatus {
    store.delivery_status(delivery_id).await.expect("status read").expect("delivery exists")
}

/// Pending deliveries sorted by id (the store orders them by due time only).
pub async fn pending(store: &dyn Store) -> Vec<(DeliveryTask, Time)> {
    let mut pending = store.recovery_state().await.expect("recovery state").pending_deliveries;
    pending.sort_by(|a, b| (a.1, &a.0.delivery_id).cmp(&(b.1, &b.0.delivery_id)));
    pending
}

/// A report with one webhook delivery, accepted and expanded at `time`.
pub async fn one_delivery(store: &dyn Store, event_id: &str, report_id: &str, time: Time) -> DeliveryTask {
    let r = report(event_id, report_id);
    let sub = subscription("sub-w", "client-w", "active", &["API_WEBHOOK"]);
    let t = task(&r, &sub, DeliveryChannel::ApiWebhook, time);
    apply(store, reports(&[(&r, time)])).await;
    apply(store, expanded(event_id, &[&t])).await;
    t
}

pub fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// `r` as a member of sub-s's API_WEBHOOK digest at `tick`.
pub fn digest_member(r: &ReportDistribution, tick: Time, accepted_at: Time) -> dataflows::digest::DigestMember {
    let sub = subscription("sub-s", "client-s", "active", &["API_WEBHOOK"]);
    dataflows::digest::DigestMember {
        digest_id: dataflows::digest::digest_id("sub-s", DeliveryChannel::ApiWebhook, tick),
        member_id: delivery_id(&r.report_data.report_id, "sub-s", DeliveryChannel::ApiWebhook),
        subscription_id: "sub-s".into(),
        subscriber_id: "client-s".into(),
        channel: DeliveryChannel::ApiWebhook,
        settings: sub.delivery_preferences.notification_settings.clone(),
        schedule: "0 * * * * *".into(),
        tick,
        report: r.clone(),
        accepted_at,
        content: None,
    }
}
