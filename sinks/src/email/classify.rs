//! Classifying an SMTP exchange's failure: "could the same message succeed later?"
//!
//! - A reply code decides when the relay gave one: 4xx (RFC 5321 "transient negative completion":
//!   greylisting, mailbox busy, storage full, rate limits) is transient; 5xx (no such mailbox,
//!   policy rejection, message too large, authentication refused) is permanent. The reason carries
//!   the code and the relay's text.
//! - No answer (refused, reset, timed out, unresolvable host) is transient.
//! - TLS failures are transient, certificate errors included. The relay is the operator's own,
//!   fixed in the configuration, not chosen per subscriber: an expired or mismatched certificate is
//!   an outage of the whole channel that the operator fixes (renews the certificate), after which
//!   the very same messages go through. Dead-lettering every email during that window would lose
//!   mail that a retry delivers; the retry schedule still bounds how long it is tried.
//! - lettre's own refusals: a message needing SMTPUTF8 or 8BITMIME the relay lacks is permanent
//!   (that message fails the same way every time); the others (no STARTTLS offered although it is
//!   required, no common AUTH mechanism) are relay set-up problems, transient for the reason above.
//!   lettre has no finer error kind than "client", so the message text tells them apart.

use lettre::transport::smtp::Error as SmtpError;

use crate::SinkError;

/// How much of the relay's text goes into a reason.
pub const REPLY_EXCERPT_CHARS: usize = 256;

/// Classifies a failed send. Reasons never hold credentials: lettre's errors carry the relay's
/// reply text and I/O errors, not the AUTH exchange.
pub fn classify(error: &SmtpError) -> SinkError {
    if let Some(code) = error.status() {
        let text = std::error::Error::source(error).map(|s| s.to_string()).unwrap_or_default();
        let mut reason = format!("SMTP {code}");
        let text = excerpt(text.trim());
        if !text.is_empty() {
            reason.push(' ');
            reason.push_str(&text);
        }
        return if error.is_permanent() { SinkError::permanent(reason) } else { SinkError::transient(reason) };
    }
    let reason = excerpt(&root_cause(error));
    if error.is_timeout() {
        return SinkError::transient(format!("timed out: {reason}"));
    }
    if error.is_tls() || is_tls_failure(error) {
        return SinkError::transient(format!("TLS failed: {reason}"));
    }
    if error.is_client() && reason.contains("non-ascii") {
        return SinkError::permanent(format!("relay cannot take this message: {reason}"));
    }
    if error.is_client() {
        return SinkError::transient(format!("relay set-up: {reason}"));
    }
    // Connection, network, garbled replies, a transport shut down with the service.
    SinkError::transient(format!("connection failed: {reason}"))
}

/// The innermost error's message: "Connection refused (os error 111)" rather than lettre's nested
/// "Connection error: Connection error: ...".
fn root_cause(error: &SmtpError) -> String {
    let mut innermost: &dyn std::error::Error = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}

/// lettre reports a handshake that fails while connecting as a connection error; tokio-rustls
/// carries the TLS alert or certificate error as an `InvalidData` I/O error underneath.
fn is_tls_failure(error: &SmtpError) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        if inner.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData) {
            return true;
        }
        source = inner.source();
    }
    false
}

fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(REPLY_EXCERPT_CHARS).collect();
    out = out.replace(['\r', '\n'], " ");
    out
}
