//! EMAIL: the report as an email through one SMTP relay: a subject, text and HTML body rendered
//! from templates per report type and locale, the report file attached (or linked when too large).
//!
//! - `config`: the relay, TLS, AUTH, sender, attachment limit;
//! - `templates`: the runtime-replaceable [`TemplateStore`] and its fallback order;
//! - `message`: the template context, the report file, and [`build_message`]; a digest's context
//!   and [`build_digest_message`] (a SCHEDULED subscription's reports of one tick in one message);
//! - `classify`: SMTP reply codes and transport failures to transient / permanent;
//! - this file: the delivery.
//!
//! Tests against a real SMTP server live in `sinks/tests/it/email.rs`.

mod classify;
mod config;
mod message;
mod sealed;
pub use sealed::ENVELOPE_ATTACHMENT;
mod templates;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

pub use classify::{classify, REPLY_EXCERPT_CHARS};
pub use config::{EmailConfig, EmailSetupError, SmtpAuth, TlsMode};
pub use message::{
    build_digest_message, build_message, digest_context, message_id, read_report_file, recipients, Addressing, AttachmentFile, ComposeError, Composed,
    DeliveryIdHeader, ReportFile, TemplateChoice, TemplateContext,
};
pub use templates::{
    builtin_digest_template, builtin_template, sample_context, EmailTemplate, RenderedEmail, TemplateError, TemplateKey, TemplatePart,
    TemplateStore, ANY_REPORT_TYPE, DIGEST_TEMPLATE,
};

use crate::{DeliveryRequest, Destination, Receipt, Sink, SinkError};

/// Delivers through one pooled SMTP transport, so that a burst of deliveries reuses connections
/// (and their TLS sessions and AUTH) instead of dialling the relay for every message.
///
/// The templates are shared: [`EmailSink::templates`] is the handle the service changes them
/// through, and every delivery renders with the templates current when it starts.
pub struct EmailSink {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    templates: Arc<TemplateStore>,
    attachment_max_bytes: u64,
    link_base_url: Option<String>,
    /// How the relay is reached: encrypted reports need TLS (see `sealed`).
    tls: TlsMode,
}

impl EmailSink {
    /// The channel name this sink registers under.
    pub const CHANNEL: &'static str = "EMAIL";

    /// Builds the transport, with a template store holding only the built-in template.
    pub fn new(config: EmailConfig) -> Result<Self, EmailSetupError> {
        let templates = Arc::new(TemplateStore::new(config.default_locale.clone()));
        Self::with_templates(config, templates)
    }

    /// Builds the transport around an existing template store (one the service already manages).
    /// The store's default locale is its own; `config.default_locale` only seeds [`EmailSink::new`].
    pub fn with_templates(config: EmailConfig, templates: Arc<TemplateStore>) -> Result<Self, EmailSetupError> {
        config.validate()?;
        let from = config.from_mailbox()?;
        let parameters = || -> Result<TlsParameters, EmailSetupError> {
            let mut builder = TlsParameters::builder(config.host.clone());
            if let Some(roots) = config.extra_roots()? {
                builder = builder.add_root_certificate(roots);
            }
            Ok(builder.build()?)
        };
        let tls = match config.tls {
            TlsMode::None => Tls::None,
            TlsMode::Starttls => Tls::Required(parameters()?),
            TlsMode::Implicit => Tls::Wrapper(parameters()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.clone())
            .port(config.effective_port())
            .tls(tls)
            .timeout(Some(config.connect_timeout))
            .pool_config(PoolConfig::new().max_size(config.pool_max_size).idle_timeout(config.pool_idle_timeout));
        if let Some(auth) = &config.auth {
            builder = builder.credentials(Credentials::new(auth.username.clone(), auth.password.clone()));
        }
        Ok(EmailSink {
            transport: builder.build(),
            from,
            templates,
            attachment_max_bytes: config.attachment_max_bytes,
            link_base_url: config.link_base_url,
            tls: config.tls,
        })
    }

    /// The templates this sink renders with; changes apply to the next delivery.
    pub fn templates(&self) -> &Arc<TemplateStore> {
        &self.templates
    }

    /// The sender every message carries.
    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// Reads the report file (or decides on a link) with this sink's size limit and link base.
    pub async fn report_file(&self, path: &std::path::Path) -> Result<ReportFile, ComposeError> {
        read_report_file(path, self.attachment_max_bytes, self.link_base_url.as_deref()).await
    }

    /// Hands a composed message to the relay. Public so that a digest, composed with
    /// [`build_message`], goes out the same way. Not bounded in time: wrap it in the caller's
    /// deadline.
    pub async fn send(&self, message: Message) -> Result<Receipt, SinkError> {
        let started = Instant::now();
        let response = self.transport.send(message).await.map_err(|e| classify(&e))?;
        let mut detail = format!("SMTP {}", response.code());
        if let Some(line) = response.message().next().filter(|l| !l.trim().is_empty()) {
            detail.push(' ');
            detail.push_str(&line.chars().take(REPLY_EXCERPT_CHARS).collect::<String>());
        }
        Ok(Receipt { elapsed: started.elapsed(), detail })
    }

    async fn attempt(
        &self,
        request: &DeliveryRequest,
        to: &[String],
        locale: Option<&str>,
        report_type: &str,
        attachment: Option<&PathBuf>,
    ) -> Result<Receipt, SinkError> {
        // Recipients first: nothing is read or rendered for a request that cannot be addressed.
        if let Some(recipient) = &request.encrypt_to {
            return self.attempt_sealed(request, recipient, to, attachment).await;
        }
        recipients(to)?;
        let payload: serde_json::Value = serde_json::from_slice(&request.payload)
            .map_err(|e| SinkError::permanent(format!("invalid payload: not JSON: {e}")))?;
        if payload.get("type").and_then(serde_json::Value::as_str) == Some(crate::digest::DIGEST_TYPE) {
            return self.attempt_digest(request, to, locale, &payload).await;
        }
        let context = TemplateContext::from_payload(&payload)?.into_value();
        let file = match attachment {
            Some(path) => Some(self.report_file(path).await?),
            None => None,
        };
        let addressing = Addressing { from: &self.from, to, idempotency_key: &request.idempotency_key };
        let composed = build_message(
            &self.templates,
            &addressing,
            TemplateChoice { report_type, locale },
            context,
            file.as_ref(),
        )?;
        let receipt = self.send(composed.message).await?;
        tracing::debug!(
            delivery_id = %request.idempotency_key,
            attempt = request.attempt,
            template = %composed.rendered.template,
            detail = %receipt.detail,
            "email accepted by the relay"
        );
        Ok(receipt)
    }
}

impl EmailSink {
    /// A digest: one message listing the reports, rendered with the `DIGEST` template.
    async fn attempt_digest(
        &self,
        request: &DeliveryRequest,
        to: &[String],
        locale: Option<&str>,
        payload: &serde_json::Value,
    ) -> Result<Receipt, SinkError> {
        let context = digest_context(payload)?;
        let addressing = Addressing { from: &self.from, to, idempotency_key: &request.idempotency_key };
        let composed = build_digest_message(&self.templates, &addressing, locale, &context)?;
        let receipt = self.send(composed.message).await?;
        tracing::debug!(
            delivery_id = %request.idempotency_key,
            attempt = request.attempt,
            template = %composed.rendered.template,
            detail = %receipt.detail,
            "email digest accepted by the relay"
        );
        Ok(receipt)
    }
}

#[async_trait]
impl Sink for EmailSink {
    fn name(&self) -> &'static str {
        Self::CHANNEL
    }

    async fn deliver(&self, request: &DeliveryRequest) -> Result<Receipt, SinkError> {
        let Destination::Email { to, locale, report_type, attachment } = &request.destination else {
            return Err(SinkError::permanent(format!("{} cannot deliver to {:?}", Self::CHANNEL, request.destination)));
        };
        let started = Instant::now();
        // Reading the file and the whole SMTP exchange share the request's deadline. Cancelling a
        // send mid-DATA leaves the relay without the final "." so it discards the partial message.
        let attempt = self.attempt(request, to, locale.as_deref(), report_type, attachment.as_ref());
        match tokio::time::timeout(request.timeout, attempt).await {
            Ok(Ok(receipt)) => Ok(Receipt { elapsed: started.elapsed(), ..receipt }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(SinkError::transient(format!("timed out after {:?}", request.timeout))),
        }
    }
}
