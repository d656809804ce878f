//! `api_keys` and `audit_log` on PostgreSQL. Keys and request-level audit rows are written directly on
//! the writer connection; the delivery machinery's audit rows go in with the group commit.

use sqlx::postgres::{PgPool, PgRow};
use sqlx::{QueryBuilder, Row, Postgres, Transaction};

/// Rows per multi-row INSERT (PostgreSQL allows 65535 bound parameters; a row binds 6).
const CHUNK: usize = 1000;
use crate::store::auth::{batch_entries, ApiKeyRecord, AuditEntry, AuditQuery, AuditRecord};
use crate::store::{StoreError, WriteBatch};

const KEY_COLUMNS: &str = "key_id, key_hash, role, subscriber_id, created_at, revoked_at";

fn key_from_row(row: &PgRow) -> Result<ApiKeyRecord, StoreError> {
    ApiKeyRecord::from_parts(
        row.try_get("key_id")?,
        row.try_get("key_hash")?,
        row.try_get("role")?,
        row.try_get("subscriber_id")?,
        row.try_get("created_at")?,
        row.try_get("revoked_at")?,
    )
}

pub(super) async fn create_key(pool: &PgPool, key: &ApiKeyRecord) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO api_keys (key_id, key_hash, role, subscriber_id, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&key.key_id)
        .bind(&key.key_hash)
        .bind(key.role.as_str())
        .bind(&key.subscriber_id)
        .bind(key.created_at)
        .bind(key.revoked_at)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn key_by_hash(pool: &PgPool, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
    let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1")).bind(hash).fetch_optional(pool).await?;
    row.as_ref().map(key_from_row).transpose()
}

pub(super) async fn keys(pool: &PgPool) -> Result<Vec<ApiKeyRecord>, StoreError> {
    let rows = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, key_id COLLATE \"C\"")).fetch_all(pool).await?;
    rows.iter().map(key_from_row).collect()
}

pub(super) async fn revoke_key(pool: &PgPool, key_id: &str, at: i64) -> Result<Option<ApiKeyRecord>, StoreError> {
    sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE key_id = $2 AND revoked_at IS NULL").bind(at).bind(key_id).execute(pool).await?;
    let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = $1")).bind(key_id).fetch_optional(pool).await?;
    row.as_ref().map(key_from_row).transpose()
}

pub(super) async fn active_keys(pool: &PgPool) -> Result<u64, StoreError> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL").fetch_one(pool).await?;
    Ok(count.max(0) as u64)
}

async fn insert<'e, E>(executor: E, entries: &[AuditEntry]) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let mut builder = QueryBuilder::<Postgres>::new("INSERT INTO audit_log (at, actor, action, target, outcome, detail) ");
    builder.push_values(entries, |mut row, entry| {
        row.push_bind(entry.at)
            .push_bind(&entry.actor)
            .push_bind(&entry.action)
            .push_bind(&entry.target)
            .push_bind(&entry.outcome)
            .push_bind(&entry.detail);
    });
    builder.build().execute(executor).await?;
    Ok(())
}

pub(super) async fn append(pool: &PgPool, entries: &[AuditEntry]) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for chunk in entries.chunks(CHUNK) {
        insert(&mut *tx, chunk).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The batch's own audit rows, inside the group commit's transaction.
pub(super) async fn write(tx: &mut Transaction<'_, Postgres>, batch: &WriteBatch) -> Result<(), StoreError> {
    let entries = batch_entries(batch);
    for chunk in entries.chunks(CHUNK) {
        insert(&mut **tx, chunk).await?;
    }
    Ok(())
}

pub(super) async fn query(pool: &PgPool, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
    let mut builder = QueryBuilder::<Postgres>::new("SELECT seq, at, actor, action, target, outcome, detail FROM audit_log WHERE 1 = 1");
    if let Some(actor) = &query.actor {
        builder.push(" AND actor = ").push_bind(actor);
    }
    if let Some(action) = &query.action {
        builder.push(" AND action = ").push_bind(action);
    }
    if let Some(since) = query.since {
        builder.push(" AND at >= ").push_bind(since);
    }
    if let Some(until) = query.until {
        builder.push(" AND at < ").push_bind(until);
    }
    if let Some(after) = query.after {
        builder.push(" AND seq > ").push_bind(after);
    }
    builder.push(" ORDER BY seq LIMIT ").push_bind(query.limit as i64);
    let rows = builder.build().fetch_all(pool).await?;
    rows.iter()
        .map(|row| {
            Ok(AuditRecord::from_parts(
                row.try_get("seq")?,
                row.try_get("at")?,
                row.try_get("actor")?,
                row.try_get("action")?,
                row.try_get("target")?,
                row.try_get("outcome")?,
                row.try_get("detail")?,
            ))
        })
        .collect()
}
