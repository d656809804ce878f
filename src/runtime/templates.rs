//! Email templates, durable: the database holds them, the EMAIL sink's [`TemplateStore`] renders
//! with them. They are loaded from the database at start and every change over the API is written
//! through: checked first (a template that does not compile never reaches the database), stored,
//! and only then swapped into the sink, so what is rendered is always what a restart would load.
//!
//! Changes are serialised by one lock, so two concurrent changes to the same key cannot leave the
//! database holding one and the sink the other. They are rare (an operator editing a template), so
//! the lock costs nothing that matters. Another instance on the same database sees a change at its
//! next start: templates are not (yet) propagated between running instances.

use std::sync::Arc;

use sinks::email::{EmailTemplate, TemplateError, TemplateKey, TemplateStore};

use crate::store::{EmailTemplateRecord, Store, StoreError};

/// Why a template change was not made. Nothing was changed in either place.
#[derive(Debug, thiserror::Error)]
pub enum TemplateWriteError {
    #[error(transparent)]
    Invalid(#[from] TemplateError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The templates of this service: the sink's live set and the database behind it.
pub struct EmailTemplates {
    live: Arc<TemplateStore>,
    store: Arc<dyn Store>,
    writes: tokio::sync::Mutex<()>,
}

impl EmailTemplates {
    /// Loads every stored template into `live`. A stored template that no longer compiles (written
    /// by an older version with other filters, or edited in the database by hand) is logged as an
    /// error and left out, so lookup falls back past it; it stays in the database until replaced or
    /// deleted over the API.
    pub async fn load(live: Arc<TemplateStore>, store: Arc<dyn Store>) -> Result<EmailTemplates, StoreError> {
        for record in store.email_templates().await? {
            let key = TemplateKey::new(record.report_type, record.locale);
            let template = EmailTemplate { subject: record.subject, html: record.html, text: record.text };
            if let Err(error) = live.set(key.clone(), template) {
                tracing::error!(template = %key, %error, "a stored email template does not compile; it is not used");
            }
        }
        Ok(EmailTemplates { live, store, writes: tokio::sync::Mutex::new(()) })
    }

    /// The set the EMAIL sink renders with.
    pub fn live(&self) -> &Arc<TemplateStore> {
        &self.live
    }

    /// Checks, stores and applies a template (added, or replacing the one under `key`).
    pub async fn set(&self, key: TemplateKey, template: EmailTemplate) -> Result<(), TemplateWriteError> {
        self.live.check(&key, &template)?;
        let _serialised = self.writes.lock().await;
        let record = EmailTemplateRecord {
            report_type: key.report_type.clone(),
            locale: key.locale.clone(),
            subject: template.subject.clone(),
            html: template.html.clone(),
            text: template.text.clone(),
        };
        self.store.put_email_template(&record).await?;
        self.live.set(key, template)?;
        Ok(())
    }

    /// Removes the template under `key` from the database and the sink; `false` when neither had it.
    pub async fn remove(&self, key: &TemplateKey) -> Result<bool, StoreError> {
        let _serialised = self.writes.lock().await;
        let stored = self.store.delete_email_template(&key.report_type, &key.locale).await?;
        let live = self.live.remove(key).is_some();
        Ok(stored || live)
    }
}
