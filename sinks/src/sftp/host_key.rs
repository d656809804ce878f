//! Pinning the server's host key. There is no `known_hosts` file and no trust on first use: every
//! destination names the one key its server must present, so that a delivery never hands a report
//! (or a password) to a server that merely answers on the right address.
//!
//! A pin is written either as an OpenSSH public key line (`ssh-ed25519 AAAA... comment`, as in
//! `/etc/ssh/ssh_host_ed25519_key.pub` or `ssh-keyscan` output without the host) or as the SHA-256
//! fingerprint OpenSSH prints (`SHA256:...`, from `ssh-keygen -lf`). Both are compared as SHA-256
//! fingerprints of the key, which is also how a mismatch is reported.

use russh::keys::ssh_key::public::KeyData;
use russh::keys::ssh_key::{Fingerprint, PublicKey};
use russh::keys::HashAlg;

/// The key a destination's server must present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostKeyPin {
    fingerprint: Fingerprint,
}

/// Why a pin is unusable. The pin is public, so the message may quote its start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the pinned host key {shown:?} is neither an OpenSSH public key line (`ssh-ed25519 AAAA...`) nor a `SHA256:` fingerprint")]
pub struct InvalidHostKey {
    shown: String,
}

impl HostKeyPin {
    /// Parses a pin: a public key line, or a `SHA256:` fingerprint (base64 with or without padding).
    pub fn parse(pin: &str) -> Result<Self, InvalidHostKey> {
        let pin = pin.trim();
        let invalid = || InvalidHostKey { shown: pin.chars().take(60).collect() };
        if let Some(encoded) = pin.strip_prefix("SHA256:") {
            // `ssh-keygen -lf` prints it unpadded; some consoles add the padding back.
            let fingerprint: Fingerprint =
                format!("SHA256:{}", encoded.trim_end_matches('=')).parse().map_err(|_| invalid())?;
            return Ok(HostKeyPin { fingerprint });
        }
        let key = PublicKey::from_openssh(pin).map_err(|_| invalid())?;
        Ok(HostKeyPin { fingerprint: key.fingerprint(HashAlg::Sha256) })
    }

    /// Whether `presented` is the pinned key.
    pub fn matches(&self, presented: &KeyData) -> bool {
        fingerprint(presented) == self.fingerprint
    }

    /// The pinned key's fingerprint, `SHA256:...`.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }
}

/// The SHA-256 fingerprint of a key, as OpenSSH prints it.
pub fn fingerprint(key: &KeyData) -> Fingerprint {
    key.fingerprint(HashAlg::Sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway key made with `ssh-keygen -t ed25519`, and the fingerprint `ssh-keygen -lf` printed.
    const LINE: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ test@example";
    const OTHER: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJWpiAL5kUZRHS/3/ShGjuHCVVDQ0jtMuQ1V//9I16pA";
    /// `ssh-keygen -lf` of `LINE`.
    const LINE_FINGERPRINT: &str = "SHA256:T7SvZ2cslqpPj6nKzitCBHHlpVF3r3MvLwmFL0fk0IE";

    fn key(line: &str) -> KeyData {
        PublicKey::from_openssh(line).expect("valid key").key_data().clone()
    }

    #[test]
    fn a_public_key_line_pins_that_key() {
        let pin = HostKeyPin::parse(LINE).expect("valid pin");
        assert!(pin.matches(&key(LINE)));
        assert!(!pin.matches(&key(OTHER)));
        // The comment is not part of the key.
        let bare = LINE.rsplit_once(' ').expect("has a comment").0;
        assert_eq!(HostKeyPin::parse(bare), Ok(pin));
    }

    #[test]
    fn a_fingerprint_pins_the_same_key() {
        let printed = fingerprint(&key(LINE)).to_string();
        assert_eq!(printed, LINE_FINGERPRINT, "printed as OpenSSH prints it");
        let pin = HostKeyPin::parse(&printed).expect("valid pin");
        assert!(pin.matches(&key(LINE)));
        assert!(!pin.matches(&key(OTHER)));
        assert_eq!(HostKeyPin::parse(&format!("  {printed}=\n")), Ok(pin.clone()), "padding and blanks are tolerated");
        assert_eq!(HostKeyPin::parse(LINE).expect("line").fingerprint(), pin.fingerprint());
    }

    #[test]
    fn garbage_is_refused_and_quoted() {
        for bad in ["", "SHA256:", "SHA256:not base64!", "MD5:aa:bb", "ssh-ed25519", "ssh-ed25519 AAAA", "hello"] {
            let error = HostKeyPin::parse(bad).expect_err(bad);
            assert!(error.to_string().contains("pinned host key"), "{error}");
        }
        // A SHA-256 fingerprint has 32 bytes; a truncated one is not a pin.
        let printed = fingerprint(&key(LINE)).to_string();
        assert!(HostKeyPin::parse(&printed[..printed.len() - 4]).is_err());
    }
}
