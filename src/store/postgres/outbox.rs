//! The outbox on PostgreSQL: rows appended inside the group commit (in batch order, so `seq` is
//! commit order), read and deleted by the relay.

use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::store::{OutboxRecord, StoreError, WriteBatch};

pub(super) async fn write(tx: &mut Transaction<'_, Postgres>, batch: &WriteBatch) -> Result<(), StoreError> {
    if batch.outbox.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO outbox (topic, key, payload)
         SELECT topic, key, payload FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS t(topic, key, payload, n)
         ORDER BY n",
    )
    .bind(batch.outbox.iter().map(|m| m.topic.as_str()).collect::<Vec<_>>())
    .bind(batch.outbox.iter().map(|m| m.key.as_str()).collect::<Vec<_>>())
    .bind(batch.outbox.iter().map(|m| m.payload.as_deref()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn peek(pool: &PgPool, limit: u32) -> Result<Vec<OutboxRecord>, StoreError> {
    let rows = sqlx::query("SELECT seq, topic, key, payload FROM outbox ORDER BY seq LIMIT $1")
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            let topic: String = row.try_get("topic")?;
            OutboxRecord::from_row(row.try_get("seq")?, &topic, row.try_get("key")?, row.try_get("payload")?)
        })
        .collect()
}

pub(super) async fn remove(pool: &PgPool, seqs: &[i64]) -> Result<(), StoreError> {
    if seqs.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM outbox WHERE seq = ANY($1)").bind(seqs).execute(pool).await?;
    Ok(())
}
