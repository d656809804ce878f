//! `email_templates` on PostgreSQL: written directly (not through the group commit).

use sqlx::postgres::PgPool;
use sqlx::Row;

use crate::store::{EmailTemplateRecord, StoreError};

pub(super) async fn list(pool: &PgPool) -> Result<Vec<EmailTemplateRecord>, StoreError> {
    // COLLATE "C": the same byte order as SQLite, whatever the database's locale.
    let rows = sqlx::query(
        "SELECT report_type, locale, subject, html, text FROM email_templates
         ORDER BY report_type COLLATE \"C\", locale COLLATE \"C\"",
    )
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

pub(super) async fn put(pool: &PgPool, template: &EmailTemplateRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO email_templates (report_type, locale, subject, html, text) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (report_type, locale) DO UPDATE SET subject = excluded.subject, html = excluded.html,
           text = excluded.text, updated_at = now()",
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

pub(super) async fn delete(pool: &PgPool, report_type: &str, locale: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM email_templates WHERE report_type = $1 AND locale = $2")
        .bind(report_type)
        .bind(locale)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}
