//! `delivery_channels` on SQLite: written directly (not through the group commit), read from the
//! read-only pool.

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::Row;

use crate::store::channels::decode;
use crate::store::{NewChannel, StoreError, StoredChannel};

const COLUMNS: &str = "channel_id, channel_type, channel_config, enabled, created_at";

fn from_row(row: &SqliteRow) -> Result<StoredChannel, StoreError> {
    let channel_id: String = row.try_get("channel_id")?;
    let created_at: String = row.try_get("created_at")?;
    let created_at = DateTime::parse_from_rfc3339(&created_at)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("delivery channel `{channel_id}`: {e}")))?;
    let channel_type: String = row.try_get("channel_type")?;
    let config: String = row.try_get("channel_config")?;
    let enabled = row.try_get::<i64, _>("enabled")? != 0;
    decode(channel_id, &channel_type, &config, enabled, created_at)
}

pub(super) async fn list(pool: &SqlitePool) -> Result<Vec<StoredChannel>, StoreError> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM delivery_channels ORDER BY channel_id")).fetch_all(pool).await?;
    rows.iter().map(from_row).collect()
}

pub(super) async fn get(pool: &SqlitePool, channel_id: &str) -> Result<Option<StoredChannel>, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM delivery_channels WHERE channel_id = ?"))
        .bind(channel_id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub(super) async fn create(pool: &SqlitePool, channel: &NewChannel) -> Result<Option<StoredChannel>, StoreError> {
    let row = sqlx::query(&format!(
        "INSERT INTO delivery_channels (channel_id, channel_type, channel_config, enabled) VALUES (?, ?, ?, ?)
         ON CONFLICT (channel_id) DO NOTHING RETURNING {COLUMNS}"
    ))
    .bind(&channel.channel_id)
    .bind(channel.channel_type.as_str())
    .bind(serde_json::Value::Object(channel.channel_config.clone()).to_string())
    .bind(channel.enabled as i64)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(from_row).transpose()
}

pub(super) async fn set_enabled(pool: &SqlitePool, channel_id: &str, enabled: bool) -> Result<Option<StoredChannel>, StoreError> {
    let row = sqlx::query(&format!("UPDATE delivery_channels SET enabled = ? WHERE channel_id = ? RETURNING {COLUMNS}"))
        .bind(enabled as i64)
        .bind(channel_id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(from_row).transpose()
}
