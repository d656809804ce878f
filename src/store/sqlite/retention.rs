//! The retention purge on SQLite (see [`crate::store::retention`]): one transaction on the writer
//! connection per batch of reports, so it interleaves with the group commits.

use sqlx::{Sqlite, SqlitePool, Transaction};

use crate::store::retention::Purged;
use crate::store::StoreError;

/// Deliveries in one of these states have ended.
const ENDED: &str = "('DELIVERED', 'DEAD_LETTERED')";

pub(super) async fn purge(pool: &SqlitePool, now: i64, limit: u32) -> Result<Purged, StoreError> {
    let mut tx = pool.begin().await?;
    let events: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT e.event_id FROM report_events e
         WHERE e.expanded = 1 AND e.purge_after <= ?1
           AND NOT EXISTS (SELECT 1 FROM delivery_history h WHERE h.event_id = e.event_id AND h.status NOT IN {ENDED})
           AND NOT EXISTS (SELECT 1 FROM digest_members m JOIN delivery_history d ON d.delivery_id = m.digest_id
                           WHERE m.event_id = e.event_id AND d.status NOT IN {ENDED})
         ORDER BY e.purge_after LIMIT ?2"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let events_json = serde_json::to_string(&events).unwrap_or_else(|_| "[]".into());
    let mut deliveries: Vec<String> =
        sqlx::query_scalar("SELECT delivery_id FROM delivery_history WHERE event_id IN (SELECT value FROM json_each(?))")
            .bind(&events_json)
            .fetch_all(&mut *tx)
            .await?;
    sqlx::query("DELETE FROM digest_members WHERE event_id IN (SELECT value FROM json_each(?))")
        .bind(&events_json)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM report_events WHERE event_id IN (SELECT value FROM json_each(?))")
        .bind(&events_json)
        .execute(&mut *tx)
        .await?;
    // Digests (their history row carries the digest id as event id) that have ended and hold no
    // report still within its retention.
    let digests: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT h.delivery_id FROM delivery_history h
         WHERE h.event_id = h.delivery_id AND h.status IN {ENDED}
           AND NOT EXISTS (SELECT 1 FROM digest_members m JOIN report_events e ON e.event_id = m.event_id
                           WHERE m.digest_id = h.delivery_id AND (e.purge_after IS NULL OR e.purge_after > ?1))
         LIMIT ?2"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    deliveries.extend(digests);
    delete_deliveries(&mut tx, &deliveries).await?;
    tx.commit().await?;
    Ok(Purged { reports: events.len() as u64, deliveries })
}

/// A delivery taken back from its dead letter by a replay committed meanwhile keeps its history
/// row (the status condition) and its pending task (never touched here).
async fn delete_deliveries(tx: &mut Transaction<'_, Sqlite>, deliveries: &[String]) -> Result<(), StoreError> {
    let ids = serde_json::to_string(deliveries).unwrap_or_else(|_| "[]".into());
    for statement in [
        "DELETE FROM dead_letters WHERE delivery_id IN (SELECT value FROM json_each(?))",
        "DELETE FROM notifications WHERE notification_id IN (SELECT value FROM json_each(?))",
        "DELETE FROM digest_members WHERE digest_id IN (SELECT value FROM json_each(?))",
        "DELETE FROM delivery_history WHERE delivery_id IN (SELECT value FROM json_each(?)) AND status IN ('DELIVERED', 'DEAD_LETTERED')",
    ] {
        sqlx::query(statement).bind(&ids).execute(&mut **tx).await?;
    }
    Ok(())
}
