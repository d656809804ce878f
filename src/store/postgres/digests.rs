//! Digest members of SCHEDULED subscriptions: written with their report's delivery set, read back
//! to answer a re-sent event and to resume digests after a restart.

use dataflows::delivery::DeliveryState;
use dataflows::digest::{digest_label, DigestMember};
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::store::codec::{parse_json, to_json};
use crate::store::{StoreError, WriteBatch};

/// Each member, and its digest's delivery_history row (PENDING until the tick) if it is the first:
/// two `UNNEST` statements whatever the number of members.
pub(super) async fn write(tx: &mut Transaction<'_, Postgres>, batch: &WriteBatch) -> Result<(), StoreError> {
    let members: Vec<&DigestMember> = batch.expanded.iter().flat_map(|e| e.digest_members.iter()).collect();
    if members.is_empty() {
        return Ok(());
    }
    let column = |f: &dyn Fn(&DigestMember) -> String| members.iter().map(|m| f(m)).collect::<Vec<String>>();
    sqlx::query(
        "INSERT INTO digest_members (digest_id, member_id, event_id, report_id, tick, accepted_at, member)
         SELECT d, m, e, r, t, a, b::jsonb FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], $7::text[])
           AS u(d, m, e, r, t, a, b)
         ON CONFLICT (digest_id, member_id) DO NOTHING",
    )
    .bind(column(&|m| m.digest_id.clone()))
    .bind(column(&|m| m.member_id.clone()))
    .bind(column(&|m| m.report.event_id.clone()))
    .bind(column(&|m| m.report.report_data.report_id.clone()))
    .bind(members.iter().map(|m| m.tick as i64).collect::<Vec<_>>())
    .bind(members.iter().map(|m| m.accepted_at as i64).collect::<Vec<_>>())
    .bind(column(&|m| to_json(m)))
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO delivery_history (delivery_id, subscription_id, report_id, channel, status, retry_count, event_id)
         SELECT d, s, r, c, $5, 0, d FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS u(d, s, r, c)
         ON CONFLICT (delivery_id) DO NOTHING",
    )
    .bind(column(&|m| m.digest_id.clone()))
    .bind(column(&|m| m.subscription_id.clone()))
    .bind(column(&|m| digest_label(m.tick)))
    .bind(column(&|m| m.channel.as_str().to_string()))
    .bind(DeliveryState::Pending.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The digests that the report of `event_id` (or another event of the same report) joined.
pub(super) async fn of_event(pool: &PgPool, event_id: &str, report_id: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT DISTINCT digest_id FROM digest_members WHERE event_id = $1 OR report_id = $2")
        .bind(event_id)
        .bind(report_id)
        .fetch_all(pool)
        .await?)
}

/// Members of digests that have not gone out: still PENDING, with no retry scheduled.
pub(super) async fn pending(pool: &PgPool) -> Result<Vec<DigestMember>, StoreError> {
    let rows = sqlx::query(
        "SELECT m.digest_id, m.member::text AS member FROM digest_members m JOIN delivery_history h ON h.delivery_id = m.digest_id
         WHERE h.status = $1 AND NOT EXISTS (SELECT 1 FROM pending_deliveries p WHERE p.delivery_id = m.digest_id)
         ORDER BY m.accepted_at, m.member_id COLLATE \"C\"",
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
