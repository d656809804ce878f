//! Digest members of SCHEDULED subscriptions: written with their report's delivery set, read back
//! to answer a re-sent event and to resume digests after a restart.

use dataflows::delivery::DeliveryState;
use dataflows::digest::{digest_label, DigestMember};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use crate::store::codec::{parse_json, to_json};
use crate::store::{StoreError, WriteBatch};

/// Each member, and its digest's delivery_history row (PENDING until the tick) if it is the first.
pub(super) async fn write(tx: &mut Transaction<'_, Sqlite>, batch: &WriteBatch) -> Result<(), StoreError> {
    for member in batch.expanded.iter().flat_map(|e| e.digest_members.iter()) {
        sqlx::query(
            "INSERT INTO digest_members (digest_id, member_id, event_id, report_id, tick, accepted_at, member) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (digest_id, member_id) DO NOTHING",
        )
        .bind(&member.digest_id)
        .bind(&member.member_id)
        .bind(&member.report.event_id)
        .bind(&member.report.report_data.report_id)
        .bind(member.tick as i64)
        .bind(member.accepted_at as i64)
        .bind(to_json(member))
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO delivery_history (delivery_id, subscription_id, report_id, channel, status, retry_count, event_id)
             VALUES (?, ?, ?, ?, ?, 0, ?) ON CONFLICT (delivery_id) DO NOTHING",
        )
        .bind(&member.digest_id)
        .bind(&member.subscription_id)
        .bind(digest_label(member.tick))
        .bind(member.channel.as_str())
        .bind(DeliveryState::Pending.as_str())
        .bind(&member.digest_id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The digests that the report of `event_id` (or another event of the same report) joined.
pub(super) async fn of_event(pool: &SqlitePool, event_id: &str, report_id: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT DISTINCT digest_id FROM digest_members WHERE event_id = ? OR report_id = ?")
        .bind(event_id)
        .bind(report_id)
        .fetch_all(pool)
        .await?)
}

/// Members of digests that have not gone out: still PENDING, with no retry scheduled.
pub(super) async fn pending(pool: &SqlitePool) -> Result<Vec<DigestMember>, StoreError> {
    let rows = sqlx::query(
        "SELECT m.digest_id, m.member FROM digest_members m JOIN delivery_history h ON h.delivery_id = m.digest_id
         WHERE h.status = ? AND NOT EXISTS (SELECT 1 FROM pending_deliveries p WHERE p.delivery_id = m.digest_id)
         ORDER BY m.accepted_at, m.member_id",
    )
    .bind(DeliveryState::Pending.as_str())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let id: String = row.try_get("digest_id")?;
            parse_json("digest member", &id, &row.try_get::<String, _>("member")?)
        })
        .collect()
}
