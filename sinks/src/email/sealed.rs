//! EMAIL for reports that require encryption (`metadata.encryption_required`): the message says
//! nothing about the report. Its subject and body are fixed text naming only the delivery id; the
//! envelope the other channels send (`report.json`) and the report file are attached as age
//! ciphertext (`report.json.age`, `<file>.age`), encrypted to the subscriber's key. The relay must
//! be reached over TLS (`email.tls` = `starttls`, which lettre requires rather than attempts, or
//! `implicit`): with `tls = "none"` the delivery fails permanently before anything is sent. A
//! report file too large to attach fails permanently too: the size limit is there to keep messages
//! deliverable, and a download link would hand the file out in clear.

use std::path::Path;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, MultiPart, SinglePart};
use lettre::Message;

use super::message::{message_id, recipients, DeliveryIdHeader, ReportFile};
use super::{EmailSink, TlsMode};
use crate::encryption::{Recipient, FILE_SUFFIX};
use crate::{DeliveryRequest, Receipt, SinkError};

/// The attachment name of the encrypted envelope.
pub const ENVELOPE_ATTACHMENT: &str = "report.json.age";

impl EmailSink {
    pub(super) async fn attempt_sealed(
        &self,
        request: &DeliveryRequest,
        recipient: &Recipient,
        to: &[String],
        attachment: Option<&std::path::PathBuf>,
    ) -> Result<Receipt, SinkError> {
        if self.tls == TlsMode::None {
            return Err(SinkError::permanent(
                "the report requires encryption (metadata.encryption_required) and the SMTP relay is not reached over TLS \
                 (email.tls must be starttls or implicit): nothing was sent",
            ));
        }
        let to = recipients(to)?;
        let mut parts = vec![sealed_part(ENVELOPE_ATTACHMENT.to_string(), recipient.encrypt(&request.payload)?)];
        if let Some(path) = attachment {
            parts.push(self.sealed_file(path, recipient).await?);
        }
        let text = format!(
            "This message carries an encrypted report (delivery {id}).\n\n\
             The attachments are encrypted to your age key: decrypt them with the matching identity, e.g.\n\
             age --decrypt -i key.txt -o report.json {ENVELOPE_ATTACHMENT}\n",
            id = request.idempotency_key
        );
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(format!("Encrypted report (delivery {})", request.idempotency_key))
            .message_id(Some(message_id(&request.idempotency_key)))
            .header(DeliveryIdHeader(request.idempotency_key.clone()));
        for mailbox in to {
            builder = builder.to(mailbox);
        }
        let mut body = MultiPart::mixed().singlepart(SinglePart::plain(text));
        for part in parts {
            body = body.singlepart(part);
        }
        let message = builder.multipart(body).map_err(|e| SinkError::permanent(format!("cannot build the message: {e}")))?;
        let receipt = self.send(message).await?;
        tracing::debug!(delivery_id = %request.idempotency_key, attempt = request.attempt, detail = %receipt.detail, "encrypted email accepted by the relay");
        Ok(receipt)
    }

    async fn sealed_file(&self, path: &Path, recipient: &Recipient) -> Result<SinglePart, SinkError> {
        match self.report_file(path).await? {
            ReportFile::Attached(file) => {
                Ok(sealed_part(format!("{}{FILE_SUFFIX}", file.file_name), recipient.encrypt(&file.bytes)?))
            }
            ReportFile::Linked { size_bytes, .. } => Err(SinkError::permanent(format!(
                "the report requires encryption and its file ({size_bytes} bytes) is larger than email.attachment_max_bytes: \
                 an encrypted report is never linked in clear; nothing was sent"
            ))),
        }
    }
}

fn sealed_part(name: String, ciphertext: Vec<u8>) -> SinglePart {
    let content_type = ContentType::parse("application/octet-stream").expect("a valid MIME type");
    Attachment::new(name).body(ciphertext, content_type)
}
