//! The outbox on SQLite: rows appended inside the group commit (in batch order, so `seq` is commit
//! order), read and deleted by the relay.

use sqlx::sqlite::SqlitePool;
use sqlx::{Row, Sqlite, Transaction};

use crate::store::{OutboxRecord, StoreError, WriteBatch};

pub(super) async fn write(tx: &mut Transaction<'_, Sqlite>, batch: &WriteBatch) -> Result<(), StoreError> {
    for message in &batch.outbox {
        sqlx::query("INSERT INTO outbox (topic, key, payload) VALUES (?, ?, ?)")
            .bind(message.topic.as_str())
            .bind(&message.key)
            .bind(message.payload.as_deref())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub(super) async fn peek(pool: &SqlitePool, limit: u32) -> Result<Vec<OutboxRecord>, StoreError> {
    let rows = sqlx::query("SELECT seq, topic, key, payload FROM outbox ORDER BY seq LIMIT ?").bind(i64::from(limit)).fetch_all(pool).await?;
    rows.iter()
        .map(|row| {
            let topic: String = row.try_get("topic")?;
            OutboxRecord::from_row(row.try_get("seq")?, &topic, row.try_get("key")?, row.try_get("payload")?)
        })
        .collect()
}

pub(super) async fn remove(pool: &SqlitePool, seqs: &[i64]) -> Result<(), StoreError> {
    // One statement per chunk, under SQLite's bound-parameter limit.
    for chunk in seqs.chunks(500) {
        let placeholders = vec!["?"; chunk.len()].join(",");
        let sql = format!("DELETE FROM outbox WHERE seq IN ({placeholders})");
        let mut query = sqlx::query(&sql);
        for seq in chunk {
            query = query.bind(seq);
        }
        query.execute(pool).await?;
    }
    Ok(())
}
