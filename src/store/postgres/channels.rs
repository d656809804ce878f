//! `delivery_channels` on PostgreSQL: written directly (not through the group commit).

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::Row;

use crate::store::channels::decode;
use crate::store::{NewChannel, StoreError, StoredChannel};

const COLUMNS: &str = "channel_id, channel_type, channel_config::text AS channel_config, COALESCE(enabled, true) AS enabled,
    COALESCE(created_at, now()) AS created_at";

fn from_row(row: &PgRow) -> Result<StoredChannel, StoreError> {
    let channel_type: String = row.try_get("channel_type")?;
    let config: String = row.try_get("channel_config")?;
    let created_at: DateTime<Utc> = row.try_get("created_at")?;
    decode(row.try_get("channel_id")?, &channel_type, &config, row.try_get("enabled")?, created_at)
}

pub(super) async fn list(pool: &PgPool) -> Result<Vec<StoredChannel>, StoreError> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM delivery_channels ORDER BY channel_id COLLATE \"C\""))
        .fetch_all(pool)
        .await?;
    rows.iter().map(from_row).collect()
}

pub(super) async fn get(pool: &PgPool, channel_id: &str) -> Result<Option<StoredChannel>, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM delivery_channels WHERE channel_id = $1"))
        .bind(channel_id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub(super) async fn create(pool: &PgPool, channel: &NewChannel) -> Result<Option<StoredChannel>, StoreError> {
    let row = sqlx::query(&format!(
        "INSERT INTO delivery_channels (channel_id, channel_type, channel_config, enabled) VALUES ($1, $2, $3::jsonb, $4)
         ON CONFLICT (channel_id) DO NOTHING RETURNING {COLUMNS}"
    ))
    .bind(&channel.channel_id)
    .bind(channel.channel_type.as_str())
    .bind(serde_json::Value::Object(channel.channel_config.clone()).to_string())
    .bind(channel.enabled)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(from_row).transpose()
}

pub(super) async fn set_enabled(pool: &PgPool, channel_id: &str, enabled: bool) -> Result<Option<StoredChannel>, StoreError> {
    let row = sqlx::query(&format!("UPDATE delivery_channels SET enabled = $1 WHERE channel_id = $2 RETURNING {COLUMNS}"))
        .bind(enabled)
        .bind(channel_id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(from_row).transpose()
}
