//! What access control keeps: API keys (hashed) and the append-only audit trail. Both backends
//! store them alike (times as microseconds since the epoch); `tests/store/auth.rs` runs on both.

use serde::Serialize;

use super::{WriteBatch, StoreError};

/// What a credential may do (see `crate::auth::policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Submits reports (`POST /deliver`).
    Publisher,
    /// Manages and reads its own subscriptions, deliveries, notifications and stream.
    Subscriber,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        [Role::Admin, Role::Publisher, Role::Subscriber].into_iter().find(|r| r.as_str() == text)
    }
}

/// A stored API key: never the key itself, only its SHA-256 (`key_hash`, lowercase hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiKeyRecord {
    pub key_id: String,
    #[serde(skip)]
    pub key_hash: String,
    pub role: Role,
    /// The subscriber a `subscriber` key acts for (required for that role, absent for the others).
    pub subscriber_id: Option<String>,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// Microseconds since the epoch; a revoked key authenticates nothing.
    pub revoked_at: Option<i64>,
}

impl ApiKeyRecord {
    pub(crate) fn from_parts(
        key_id: String,
        key_hash: String,
        role: String,
        subscriber_id: Option<String>,
        created_at: i64,
        revoked_at: Option<i64>,
    ) -> Result<ApiKeyRecord, StoreError> {
        let role = Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("api key {key_id}: unknown role {role}")))?;
        Ok(ApiKeyRecord { key_id, key_hash, role, subscriber_id, created_at, revoked_at })
    }
}

/// One audit row to append: who did what to which ids, when, and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Microseconds since the epoch.
    pub at: i64,
    /// `key:<key_id>`, `jwt:<subject>`, `anonymous`, or `system` (the delivery machinery itself).
    pub actor: String,
    /// Dotted name, e.g. `subscription.create`, `delivery.attempt`, `keys.revoke`, `request.denied`.
    pub action: String,
    /// The ids acted on (a subscription, a delivery, a key, a request path).
    pub target: Option<String>,
    /// `ok`, `denied`, `unauthenticated`, an error code, or a delivery state.
    pub outcome: String,
    pub detail: Option<String>,
}

impl AuditEntry {
    pub fn now(actor: impl Into<String>, action: impl Into<String>, target: Option<String>, outcome: impl Into<String>) -> AuditEntry {
        AuditEntry {
            at: chrono::Utc::now().timestamp_micros(),
            actor: actor.into(),
            action: action.into(),
            target,
            outcome: outcome.into(),
            detail: None,
        }
    }
}

/// A stored audit row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Increasing in append order; the paging cursor.
    pub seq: i64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
}

impl AuditRecord {
    pub(crate) fn from_parts(seq: i64, at: i64, actor: String, action: String, target: Option<String>, outcome: String, detail: Option<String>) -> AuditRecord {
        let at = chrono::DateTime::from_timestamp_micros(at).unwrap_or_default();
        AuditRecord { seq, at, actor, action, target, outcome, detail }
    }
}

/// A page of the audit trail, oldest first: rows after `after` (a `seq`), filtered.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Microseconds since the epoch, inclusive.
    pub since: Option<i64>,
    /// Microseconds since the epoch, exclusive.
    pub until: Option<i64>,
    pub after: Option<i64>,
    pub limit: u32,
}

/// The delivery machinery's own audit rows for one group commit: every attempt outcome, dead
/// letter and replay, appended in the same transaction as the batch (not one write per attempt).
pub(crate) fn batch_entries(batch: &WriteBatch) -> Vec<AuditEntry> {
    let time = |t: dataflows::Time| t as i64;
    let mut entries = Vec::with_capacity(batch.attempts.len() + batch.dead_letters.len() + batch.replays.len());
    for change in &batch.subscription_changes {
        entries.push(AuditEntry {
            at: time(change.changed_at),
            actor: "system".to_string(),
            action: "subscription.version".to_string(),
            target: Some(change.subscription.subscription_id.clone()),
            outcome: change.subscription.status.as_str().to_string(),
            detail: Some(format!("subscriber {}", change.subscription.subscriber_id)),
        });
    }
    for attempt in &batch.attempts {
        entries.push(AuditEntry {
            at: time(attempt.finished_at),
            actor: "system".to_string(),
            action: "delivery.attempt".to_string(),
            target: Some(attempt.delivery_id.clone()),
            outcome: if attempt.state == dataflows::delivery::DeliveryState::Delivered { "DELIVERED".to_string() } else { "FAILED".to_string() },
            detail: Some(match &attempt.error {
                Some(error) => format!("attempt {}: {error}", attempt.attempt),
                None => format!("attempt {}", attempt.attempt),
            }),
        });
    }
    for dead in &batch.dead_letters {
        entries.push(AuditEntry {
            at: time(dead.at),
            actor: "system".to_string(),
            action: "delivery.dead_letter".to_string(),
            target: Some(dead.task.delivery_id.clone()),
            outcome: "DEAD_LETTERED".to_string(),
            detail: Some(dead.reason.clone()),
        });
    }
    for replay in &batch.replays {
        entries.push(AuditEntry {
            at: time(replay.at),
            actor: "system".to_string(),
            action: "delivery.replay".to_string(),
            target: Some(replay.task.delivery_id.clone()),
            outcome: "PENDING".to_string(),
            detail: None,
        });
    }
    entries
}
