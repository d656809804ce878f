//! repdist's delivery channels behind one [`Sink`] trait.
//!
//! A sink knows nothing of reports or subscriptions: the dispatcher in the service renders a delivery
//! task into a [`DeliveryRequest`] (destination, payload, idempotency key, deadline) and the sink
//! answers with a [`Receipt`] or a classified [`SinkError`], which decides whether the delivery is
//! retried. Keeping this crate free of the domain model (and of `dataflows`) means a channel can be
//! written and tested against a real peer on its own.
//!
//! Adding a channel is one module here, one [`Destination`] arm, one [`SinkRegistry`] line and one
//! render arm in the service's dispatcher; `docs/adding-a-channel.md` walks through it.

pub mod chat;
pub mod dashboard;
pub mod digest;
pub mod email;
pub mod egress;
pub mod encryption;
pub mod http_classify;
pub mod http_client;
pub mod push;
pub mod registry;
pub mod sftp;
pub mod webhook;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use chat::{ChatConfig, ChatKind, ChatSetupError, ChatSink};
pub use dashboard::{BoardError, DashboardNotification, DashboardSink, NotificationBoard};
pub use push::{is_dead_token, PushConfig, PushSetupError, PushSink, PushTarget};
pub use email::{EmailConfig, EmailSetupError, EmailSink, EmailTemplate, TemplateKey, TemplateStore};
pub use registry::SinkRegistry;
pub use sftp::{SftpAuth, SftpConfig, SftpSetupError, SftpSink};
pub use webhook::{verify_signature, WebhookConfig, WebhookSetupError, WebhookSink};

/// A local file to upload over SFTP, and the name it gets in the destination directory (one path
/// component).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SftpFile {
    pub path: std::path::PathBuf,
    pub name: String,
}

/// One attempt to deliver, fully rendered by the dispatcher.
///
/// `Debug` prints the payload's size, never its bytes, and redacts destination secrets, so a request
/// can be logged as it is.
#[derive(Clone)]
pub struct DeliveryRequest {
    /// The delivery id. It is the same for every attempt of one delivery, so a receiver that
    /// deduplicates on it sees each delivery once even when an attempt is repeated.
    pub idempotency_key: String,
    pub destination: Destination,
    /// The rendered body (JSON), sent as it is.
    pub payload: Bytes,
    /// Deadline of this attempt, connecting and reading the answer included. A sink returns within
    /// it (as a transient failure if the peer is too slow).
    pub timeout: Duration,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The report's `delivery_priority`; higher is more urgent. Channels with a native notion of
    /// urgency (APNs `apns-priority`, FCM `android.priority`) map it; others may ignore it.
    pub priority: i32,
    /// Set when the report requires encryption (`metadata.encryption_required`): everything
    /// carrying the report leaves encrypted to this age recipient (see [`encryption`]). A sink that
    /// cannot do that fails permanently rather than send in clear.
    pub encrypt_to: Option<encryption::Recipient>,
}

/// Where a request goes: one arm per channel, carrying only what that channel needs.
#[derive(Clone)]
pub enum Destination {
    /// `secret` is `whsec_` followed by the base64 of the signing key (Standard Webhooks).
    Webhook {
        url: String,
        secret: String,
    },
    Dashboard {
        subscriber_id: String,
        subscription_id: String,
        report_id: String,
    },
    /// An upload to the subscriber's SFTP server: each of `files` (local paths: the report's file,
    /// or every report's of a digest) as `directory/<name>`, then the payload as a JSON manifest
    /// beside them, named `manifest_name`, or by default `<name>.manifest.json` for a single file
    /// and `<delivery id>.json` otherwise. `host_key` pins the server: an OpenSSH public key line
    /// (`ssh-ed25519 AAAA...`) or a `SHA256:...` fingerprint. `directory` may be absolute or
    /// relative to the login directory; it is created if missing.
    Sftp {
        host: String,
        port: u16,
        username: String,
        auth: SftpAuth,
        host_key: String,
        directory: String,
        files: Vec<SftpFile>,
        manifest_name: Option<String>,
    },
    /// A Slack incoming webhook or a Teams workflow webhook. `webhook_url` is a credential. `link`
    /// is where the message's button points (e.g. the report in a portal); without one, the
    /// report's file path is used when it is a web URL, else shown as text.
    Chat {
        kind: ChatKind,
        webhook_url: String,
        link: Option<String>,
    },
    /// One device or topic. Its token or URL is a credential (`PushTarget`'s `Debug` redacts it).
    Push {
        target: PushTarget,
    },
    /// `to` are addresses (`a@example.com` or `Name <a@example.com>`); `locale` and `report_type`
    /// choose the template; `attachment` is the report file, attached or (when too large) linked.
    /// The report's fields for the templates come from the payload.
    Email {
        to: Vec<String>,
        locale: Option<String>,
        report_type: String,
        attachment: Option<std::path::PathBuf>,
    },
}

impl fmt::Debug for Destination {
    /// Written by hand so that secrets never reach a log line or an error message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Webhook { url, secret: _ } => {
                f.debug_struct("Webhook").field("url", url).field("secret", &"<redacted>").finish()
            }
            Destination::Dashboard { subscriber_id, subscription_id, report_id } => f
                .debug_struct("Dashboard")
                .field("subscriber_id", subscriber_id)
                .field("subscription_id", subscription_id)
                .field("report_id", report_id)
                .finish(),
            Destination::Sftp { host, port, username, auth, host_key, directory, files, manifest_name } => f
                .debug_struct("Sftp")
                .field("host", host)
                .field("port", port)
                .field("username", username)
                // SftpAuth's Debug names the method and redacts the password or key.
                .field("auth", auth)
                .field("host_key", host_key)
                .field("directory", directory)
                .field("files", files)
                .field("manifest_name", manifest_name)
                .finish(),
            Destination::Chat { kind, webhook_url: _, link } => f
                .debug_struct("Chat")
                .field("kind", kind)
                .field("webhook_url", &"<redacted>")
                .field("link", link)
                .finish(),
            Destination::Push { target } => f.debug_struct("Push").field("target", target).finish(),
            Destination::Email { to, locale, report_type, attachment } => f
                .debug_struct("Email")
                .field("to", to)
                .field("locale", locale)
                .field("report_type", report_type)
                .field("attachment", attachment)
                .finish(),
        }
    }
}

impl fmt::Debug for DeliveryRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryRequest")
            .field("idempotency_key", &self.idempotency_key)
            .field("destination", &self.destination)
            .field("payload_bytes", &self.payload.len())
            .field("timeout", &self.timeout)
            .field("attempt", &self.attempt)
            .field("priority", &self.priority)
            .field("encrypt_to", &self.encrypt_to)
            .finish()
    }
}

/// A successful attempt: the peer has the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// From sending the request to the peer's answer.
    pub elapsed: Duration,
    /// What the peer said, for the delivery history, e.g. `HTTP 204`.
    pub detail: String,
}

/// A failed attempt, classified so that the retry schedule knows what to do with it.
///
/// Reasons are meant for the delivery history and the subscriber: they name the peer's status and a
/// short excerpt of its answer, never a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The peer may accept a later attempt (it was down, slow, overloaded or rate limiting).
    /// `retry_after` is the peer's own hint, when it gave one; the schedule should not retry sooner.
    #[error("transient: {reason}")]
    Transient { reason: String, retry_after: Option<Duration> },
    /// Retrying cannot help (the peer refused this request, or the destination is unusable).
    #[error("permanent: {reason}")]
    Permanent { reason: String },
}

impl SinkError {
    /// A transient failure without a retry hint.
    pub fn transient(reason: impl Into<String>) -> Self {
        SinkError::Transient { reason: reason.into(), retry_after: None }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        SinkError::Permanent { reason: reason.into() }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, SinkError::Transient { .. })
    }

    pub fn reason(&self) -> &str {
        match self {
            SinkError::Transient { reason, .. } | SinkError::Permanent { reason } => reason,
        }
    }
}

/// A delivery channel.
///
/// Guarantees every implementation keeps, so the dispatcher can treat sinks alike:
/// - `deliver` returns within `request.timeout` (give or take scheduling), a slow peer being a
///   [`SinkError::Transient`];
/// - the peer is given `request.idempotency_key`, so repeating an attempt is harmless;
/// - `deliver` does not panic on anything the peer or the request contains, and its errors never
///   contain a destination secret.
#[async_trait]
pub trait Sink: Send + Sync {
    /// The channel this sink serves, as the service names it, e.g. `API_WEBHOOK`. The registry keys
    /// sinks by it.
    fn name(&self) -> &'static str;

    /// Makes one attempt. A request whose destination belongs to another channel is a permanent
    /// failure (a dispatcher bug that no retry fixes).
    async fn deliver(&self, request: &DeliveryRequest) -> Result<Receipt, SinkError>;
}
