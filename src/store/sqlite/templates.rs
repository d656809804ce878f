//! `email_templates` on SQLite: written directly (not through the group commit) on the writer
//! connection, read from the read-only pool.

use sqlx::sqlite::SqlitePool;
use sqlx::Row;

use crate::store::{EmailTemplateRecord, StoreError};

pub(super) async fn list(pool: &SqlitePool) -> Result<Vec<EmailTemplateRecord>, StoreError> {
    let rows = sqlx::query("SELECT report_type, locale, subject, html, text FROM email_templates ORDER BY report_type, locale")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(EmailTemplateRecord {
                report_type: row.try_get("report_type")?,
                locale: row.try_get("locale")?,
                subject: row.try_get("subject")?,
                html: row.try_get("html")?,
                text: row.try_get("text")?,
            })
        })
        .collect()
}

pub(super) async fn put(pool: &SqlitePool, template: &EmailTemplateRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO email_templates (report_type, locale, subject, html, text) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (report_type, locale) DO UPDATE SET subject = excluded.subject, html = excluded.html,
           text = excluded.text, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
    )
    .bind(&template.report_type)
    .bind(&template.locale)
    .bind(&template.subject)
    .bind(&template.html)
    .bind(&template.text)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn delete(pool: &SqlitePool, report_type: &str, locale: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM email_templates WHERE report_type = ? AND locale = ?")
        .bind(report_type)
        .bind(locale)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}
