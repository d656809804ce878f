//! Payload encryption for reports whose `metadata.encryption_required` is set: what leaves the
//! service is encrypted to the subscriber's [age](https://age-encryption.org/v1) X25519 public key
//! (`age1...`), so only the holder of the matching identity can read it. The binary age format is
//! used (not ASCII armor): every channel that carries it sends it as a file or a body of its own.
//!
//! Which channels can carry it, and how, is each sink's concern (webhook: the body; SFTP: every
//! uploaded file; EMAIL: the attachments, with a body that says nothing about the report); the
//! service refuses the others before anything is sent.

use std::fmt;
use std::str::FromStr;

use crate::SinkError;

/// The suffix of an encrypted file's name (`q2.pdf` is uploaded or attached as `q2.pdf.age`).
pub const FILE_SUFFIX: &str = ".age";
/// The webhook body's content type when it is encrypted (ASCII-armored age, see
/// [`Recipient::encrypt_armored`]).
pub const CONTENT_TYPE: &str = "application/age";

/// A subscriber's age X25519 public key. Not a secret: `Debug` and `Display` show it.
#[derive(Clone)]
pub struct Recipient(age::x25519::Recipient);

/// Why a key is not an age recipient. The message is safe to show (it quotes nothing).
#[derive(Debug, thiserror::Error)]
#[error("must be an age X25519 public key (age1...): {0}")]
pub struct InvalidRecipient(&'static str);

impl FromStr for Recipient {
    type Err = InvalidRecipient;

    fn from_str(key: &str) -> Result<Recipient, InvalidRecipient> {
        age::x25519::Recipient::from_str(key.trim()).map(Recipient).map_err(InvalidRecipient)
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({})", self.0)
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for Recipient {
    fn eq(&self, other: &Recipient) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Recipient {}

impl Recipient {
    /// `plaintext` encrypted to this recipient (age v1, binary). A failure is permanent: the same
    /// bytes would fail again.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, SinkError> {
        age::encrypt(&self.0, plaintext).map_err(|e| SinkError::permanent(format!("encryption failed: {e}")))
    }

    /// The same, ASCII-armored (`-----BEGIN AGE ENCRYPTED FILE-----`): for bodies that must be text,
    /// such as a Standard Webhooks body, whose signature is computed over UTF-8. `age --decrypt`
    /// reads both forms.
    pub fn encrypt_armored(&self, plaintext: &[u8]) -> Result<String, SinkError> {
        age::encrypt_and_armor(&self.0, plaintext).map_err(|e| SinkError::permanent(format!("encryption failed: {e}")))
    }
}

/// The failure of a channel that cannot carry an encrypted payload (chat, push, dashboard): the
/// report is never sent in clear, and the same delivery would fail the same way again.
pub fn unsupported(channel: &str) -> SinkError {
    SinkError::permanent(format!(
        "the report requires encryption (metadata.encryption_required) and {channel} cannot carry an encrypted payload: nothing was sent"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_encrypted_decrypts_with_the_identity_only() {
        let identity = age::x25519::Identity::generate();
        let recipient: Recipient = identity.to_public().to_string().parse().expect("a recipient");
        let sealed = recipient.encrypt(b"the report").expect("encrypted");
        assert!(sealed.starts_with(b"age-encryption.org/v1"), "age v1 binary format");
        assert!(!sealed.windows(10).any(|w| w == b"the report"), "no plaintext inside");
        assert_eq!(age::decrypt(&identity, &sealed).expect("decrypts"), b"the report");
        let other = age::x25519::Identity::generate();
        assert!(age::decrypt(&other, &sealed).is_err(), "another identity cannot");
    }

    #[test]
    fn keys_that_are_not_age_recipients_are_refused() {
        for bad in ["", "age1", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB", "AGE-SECRET-KEY-1QQQQ", "age1qqqqqqqqqqqqqqqqqqqq"] {
            assert!(bad.parse::<Recipient>().is_err(), "{bad:?}");
        }
    }
}
