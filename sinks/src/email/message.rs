//! Turning a template context into a MIME message: the context templates see, the report file
//! (attached, or linked when too large), and the message itself (text + HTML alternatives, the
//! attachment, a Message-ID derived from the idempotency key).
//!
//! [`build_message`] knows nothing of a single report's payload beyond the context it is given, so
//! a digest (one message listing several reports) can reuse it with its own context and template.

use std::path::Path;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::Message;
use serde_json::{Map, Value};
use tokio::io::AsyncReadExt;

use super::templates::{RenderedEmail, TemplateError, TemplateStore};
use crate::SinkError;

/// The values a template sees: the delivery payload as it is (`type`, `timestamp`, `data`), plus
/// short aliases so that templates need not spell out the envelope:
///
/// - `report`: `data.report.report_data` (`report_id`, `report_type`, `title`, ...);
/// - `event`: `data.report` (`event_id`, `routing`, `metadata`, ...);
/// - `delivery_id`, `subscriber_id`, `subscription_id`, `attempt`: from `data`;
/// - `attachment_name`, `attachment_size_bytes` when the file is attached, `attachment_link` when it
///   was too large (set by [`build_message`]);
/// - `subject`, in the bodies only: the rendered subject.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateContext {
    fields: Map<String, Value>,
}

impl TemplateContext {
    /// The context of a delivery payload. Fails unless the payload is a JSON object.
    pub fn from_payload(payload: &Value) -> Result<Self, ComposeError> {
        let Value::Object(fields) = payload else {
            return Err(ComposeError::Payload("the payload is not a JSON object".into()));
        };
        let mut fields = fields.clone();
        let data = payload.get("data");
        let event = data.and_then(|d| d.get("report"));
        let report = event.and_then(|e| e.get("report_data")).cloned().unwrap_or_else(|| Value::Object(Map::new()));
        let mut alias = |name: &str, value: Option<&Value>| {
            if let Some(value) = value {
                fields.entry(name.to_string()).or_insert_with(|| value.clone());
            }
        };
        alias("report", Some(&report));
        alias("event", event);
        for name in ["delivery_id", "subscriber_id", "subscription_id", "attempt"] {
            alias(name, data.and_then(|d| d.get(name)));
        }
        Ok(TemplateContext { fields })
    }

    /// Sets (or replaces) one top-level value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) {
        self.fields.insert(name.into(), value.into());
    }

    pub fn set_attachment_name(&mut self, name: &str) {
        self.insert("attachment_name", name);
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.fields)
    }
}

/// Why a message could not be composed. Each is permanent: the same request composes the same way.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("invalid payload: {0}")]
    Payload(String),
    #[error("no recipients")]
    NoRecipients,
    #[error("invalid recipient {address:?}: {reason}")]
    Recipient { address: String, reason: String },
    #[error("attachment {path}: {reason}")]
    Attachment { path: String, reason: String },
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("cannot build the message: {0}")]
    Build(#[from] lettre::error::Error),
}

impl From<ComposeError> for SinkError {
    fn from(error: ComposeError) -> Self {
        SinkError::permanent(error.to_string())
    }
}

/// A report file read for attaching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentFile {
    pub file_name: String,
    /// From the file's extension (`application/pdf`, `text/csv`, ...); `application/octet-stream`
    /// when the extension is unknown.
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// What becomes of the report file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportFile {
    Attached(AttachmentFile),
    /// Too large to attach: the message carries this link instead.
    Linked {
        link: String,
        size_bytes: u64,
    },
}

/// Reads the report file at `path` for attaching, or decides on a link when it is larger than
/// `max_bytes`. The link is `link_base_url` followed by the (percent-encoded) file name, or the
/// path itself when there is no base URL.
///
/// A missing or unreadable file is an error naming the path: the report is not where its event
/// said, and retrying will not put it there.
pub async fn read_report_file(
    path: &Path,
    max_bytes: u64,
    link_base_url: Option<&str>,
) -> Result<ReportFile, ComposeError> {
    let failed = |reason: String| ComposeError::Attachment { path: path.display().to_string(), reason };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| failed("the path does not name a file".into()))?;
    let file = tokio::fs::File::open(path).await.map_err(|e| failed(format!("cannot open: {e}")))?;
    let metadata = file.metadata().await.map_err(|e| failed(format!("cannot read: {e}")))?;
    if !metadata.is_file() {
        return Err(failed("not a regular file".into()));
    }
    // Read at most one byte past the limit, so a file that grew since `metadata` is still bounded.
    let mut bytes = Vec::with_capacity(metadata.len().min(max_bytes) as usize);
    if metadata.len() <= max_bytes {
        file.take(max_bytes + 1).read_to_end(&mut bytes).await.map_err(|e| failed(format!("cannot read: {e}")))?;
    }
    if metadata.len() > max_bytes || bytes.len() as u64 > max_bytes {
        let link = match link_base_url {
            Some(base) => format!("{}/{}", base.trim_end_matches('/'), percent_encode(&file_name)),
            None => path.display().to_string(),
        };
        return Ok(ReportFile::Linked { link, size_bytes: metadata.len().max(bytes.len() as u64) });
    }
    let content_type = mime_guess::from_path(path).first_or_octet_stream().essence_str().to_string();
    Ok(ReportFile::Attached(AttachmentFile { file_name, content_type, bytes }))
}

/// Percent-encodes all but RFC 3986's unreserved characters, for a file name in a URL path.
fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `X-Repdist-Delivery-Id`: the idempotency key, for receivers and support to trace a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryIdHeader(pub String);

impl Header for DeliveryIdHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Repdist-Delivery-Id")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(DeliveryIdHeader(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `<{key}@repdist>`: the same on every attempt of a delivery, so that a mailbox or relay that
/// deduplicates on Message-ID (and every threading client) sees one message. Characters not allowed
/// in a Message-ID's left part (RFC 5322 dot-atom text), and `=`, become `=XX`, so distinct keys
/// stay distinct.
pub fn message_id(idempotency_key: &str) -> String {
    let bytes = idempotency_key.as_bytes();
    let mut left = String::with_capacity(bytes.len());
    let mut after_dot = false;
    for (i, &byte) in bytes.iter().enumerate() {
        // A dot-atom may not start or end with a dot, nor hold two in a row: encode those dots.
        let dot_ok = byte == b'.' && i > 0 && i + 1 < bytes.len() && !after_dot;
        if dot_ok || (byte != b'.' && (byte.is_ascii_alphanumeric() || b"!#$%&'*+-/?^_`{|}~".contains(&byte))) {
            left.push(byte as char);
            after_dot = byte == b'.';
        } else {
            left.push_str(&format!("={byte:02X}"));
            after_dot = false;
        }
    }
    if left.is_empty() {
        left.push('=');
    }
    format!("<{left}@repdist>")
}

/// Who a message is from and to, and what identifies it.
#[derive(Clone, Debug)]
pub struct Addressing<'a> {
    pub from: &'a Mailbox,
    pub to: &'a [String],
    /// The delivery id (or a digest's id): the Message-ID and `X-Repdist-Delivery-Id`.
    pub idempotency_key: &'a str,
}

/// Which template renders the message.
#[derive(Clone, Copy, Debug)]
pub struct TemplateChoice<'a> {
    pub report_type: &'a str,
    pub locale: Option<&'a str>,
}

/// A composed message and the template that rendered it.
#[derive(Debug)]
pub struct Composed {
    pub message: Message,
    pub rendered: RenderedEmail,
}

/// Parses each recipient as a mailbox (`a@example.com` or `Name <a@example.com>`).
pub fn recipients(to: &[String]) -> Result<Vec<Mailbox>, ComposeError> {
    if to.is_empty() {
        return Err(ComposeError::NoRecipients);
    }
    to.iter()
        .map(|address| {
            address
                .trim()
                .parse::<Mailbox>()
                .map_err(|e| ComposeError::Recipient { address: address.clone(), reason: e.to_string() })
        })
        .collect()
}

/// Builds the message: renders `template` with `context` (plus the `attachment_*` values of `file`),
/// then assembles `multipart/alternative` text + HTML, inside `multipart/mixed` with the attachment
/// when there is one. When the file was too large, a link line is added to each body that does not
/// already show the link, so a custom template that ignores `attachment_link` still delivers it.
pub fn build_message(
    templates: &TemplateStore,
    addressing: &Addressing<'_>,
    template: TemplateChoice<'_>,
    context: Value,
    file: Option<&ReportFile>,
) -> Result<Composed, ComposeError> {
    let to = recipients(addressing.to)?;
    let mut context = match context {
        Value::Object(fields) => TemplateContext { fields },
        _ => return Err(ComposeError::Payload("the template context is not a JSON object".into())),
    };
    match file {
        Some(ReportFile::Attached(attachment)) => {
            context.set_attachment_name(&attachment.file_name);
            context.insert("attachment_size_bytes", attachment.bytes.len() as u64);
        }
        Some(ReportFile::Linked { link, size_bytes }) => {
            context.insert("attachment_link", link.as_str());
            context.insert("attachment_size_bytes", *size_bytes);
        }
        None => {}
    }
    let mut rendered = templates.render(template.report_type, template.locale, &context.into_value())?;
    if let Some(ReportFile::Linked { link, .. }) = file {
        add_link_line(&mut rendered, link);
    }
    assemble(addressing, to, rendered, file)
}

/// The values a digest template sees: the payload as it is (`type`, `timestamp`, `data`), plus
/// `reports` (each report's `report_data` with its own `delivery_id`, `accepted_at` and the event's
/// `data_type`), and `delivery_id` (the digest's), `subscriber_id`, `subscription_id`, `attempt`,
/// `schedule`, `tick`, `report_count` from `data`.
pub fn digest_context(payload: &Value) -> Result<Value, ComposeError> {
    let Value::Object(fields) = payload else {
        return Err(ComposeError::Payload("the payload is not a JSON object".into()));
    };
    let mut fields = fields.clone();
    let data = payload.get("data");
    let reports: Vec<Value> = data
        .and_then(|d| d.get("reports"))
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|entry| {
                    let mut report = match entry.pointer("/report/report_data") {
                        Some(Value::Object(report)) => report.clone(),
                        _ => Map::new(),
                    };
                    for (name, pointer) in [("delivery_id", "/delivery_id"), ("accepted_at", "/accepted_at"), ("data_type", "/report/data_type")] {
                        if let Some(value) = entry.pointer(pointer) {
                            report.entry(name.to_string()).or_insert_with(|| value.clone());
                        }
                    }
                    Value::Object(report)
                })
                .collect()
        })
        .unwrap_or_default();
    let count = reports.len();
    fields.entry("reports".to_string()).or_insert(Value::Array(reports));
    for name in ["delivery_id", "subscriber_id", "subscription_id", "attempt", "schedule", "tick"] {
        if let Some(value) = data.and_then(|d| d.get(name)) {
            fields.entry(name.to_string()).or_insert_with(|| value.clone());
        }
    }
    fields.entry("report_count".to_string()).or_insert(Value::from(count));
    Ok(Value::Object(fields))
}

/// Builds a digest's message: the `DIGEST` template for `locale` (see
/// [`TemplateStore::render_digest`]) rendered with `context` (from [`digest_context`]), as
/// `multipart/alternative` text + HTML, without attachments.
pub fn build_digest_message(
    templates: &TemplateStore,
    addressing: &Addressing<'_>,
    locale: Option<&str>,
    context: &Value,
) -> Result<Composed, ComposeError> {
    let to = recipients(addressing.to)?;
    let rendered = templates.render_digest(locale, context)?;
    assemble(addressing, to, rendered, None)
}

/// The message itself, from rendered text: headers (the Message-ID from the idempotency key), the
/// two bodies, and the report file when it is attached.
fn assemble(
    addressing: &Addressing<'_>,
    to: Vec<Mailbox>,
    rendered: RenderedEmail,
    file: Option<&ReportFile>,
) -> Result<Composed, ComposeError> {
    let mut builder = Message::builder()
        .from(addressing.from.clone())
        .subject(rendered.subject.clone())
        .message_id(Some(message_id(addressing.idempotency_key)))
        .header(DeliveryIdHeader(addressing.idempotency_key.to_string()));
    for mailbox in to {
        builder = builder.to(mailbox);
    }
    let bodies = MultiPart::alternative_plain_html(rendered.text.clone(), rendered.html.clone());
    let message = match file {
        Some(ReportFile::Attached(attachment)) => {
            let content_type = ContentType::parse(&attachment.content_type)
                .unwrap_or_else(|_| ContentType::parse("application/octet-stream").expect("a valid MIME type"));
            let part: SinglePart =
                Attachment::new(attachment.file_name.clone()).body(attachment.bytes.clone(), content_type);
            builder.multipart(MultiPart::mixed().multipart(bodies).singlepart(part))?
        }
        _ => builder.multipart(bodies)?,
    };
    Ok(Composed { message, rendered })
}

fn add_link_line(rendered: &mut RenderedEmail, link: &str) {
    if !rendered.text.contains(link) {
        if !rendered.text.ends_with('\n') {
            rendered.text.push('\n');
        }
        rendered.text.push_str(&format!("\nThe report is too large to attach. Download it here: {link}\n"));
    }
    let escaped = minijinja::HtmlEscape(link).to_string();
    if !rendered.html.contains(link) && !rendered.html.contains(&escaped) {
        let line = format!(
            "<p>The report is too large to attach. Download it here: <a href=\"{escaped}\">{escaped}</a></p>\n"
        );
        match rendered.html.rfind("</body>") {
            Some(at) => rendered.html.insert_str(at, &line),
            None => rendered.html.push_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_valid_and_distinct() {
        assert_eq!(message_id("dlv_0f9c2a"), "<dlv_0f9c2a@repdist>");
        assert_eq!(message_id("dlv_0f9c2a"), message_id("dlv_0f9c2a"));
        assert_eq!(message_id("a b@c<d>"), "<a=20b=40c=3Cd=3E@repdist>");
        assert_ne!(message_id("a=20"), message_id("a "));
        assert_eq!(message_id("..x..y."), "<=2E.x.=2Ey=2E@repdist>");
        assert_ne!(message_id("x."), message_id("x"));
        assert_eq!(message_id(""), "<=@repdist>");
    }

    #[test]
    fn the_context_has_the_payload_and_short_aliases() {
        let payload = serde_json::json!({"type": "report.distributed", "data": {"delivery_id": "d1", "attempt": 2,
            "report": {"event_id": "e1", "report_data": {"report_id": "r1"}}}});
        let context = TemplateContext::from_payload(&payload).expect("object").into_value();
        assert_eq!(context["report"]["report_id"], "r1");
        assert_eq!(context["event"]["event_id"], "e1");
        assert_eq!(context["delivery_id"], "d1");
        assert_eq!(context["attempt"], 2);
        assert_eq!(context["data"]["report"]["report_data"]["report_id"], "r1");
        assert!(TemplateContext::from_payload(&serde_json::json!([1])).is_err());
    }

    #[test]
    fn recipients_must_be_addresses() {
        assert!(recipients(&["a@example.com".into(), "Ann <ann@example.com>".into()]).is_ok());
        assert!(matches!(recipients(&[]), Err(ComposeError::NoRecipients)));
        let error = recipients(&["a@example.com".into(), "not an address".into()]).expect_err("invalid");
        assert!(error.to_string().contains("not an address"), "{error}");
    }

    #[test]
    fn links_percent_encode_the_file_name() {
        assert_eq!(percent_encode("Q2 résumé.pdf"), "Q2%20r%C3%A9sum%C3%A9.pdf");
    }
}
