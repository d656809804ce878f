//! API keys: `rd_` followed by 32 random bytes in base64url (43 characters), shown once when
//! created and stored only as a SHA-256.
//!
//! Why a plain SHA-256 and not a password hash (argon2, bcrypt): those slow hashes protect
//! low-entropy secrets people choose against guessing once the hashes leak. A key here carries 256
//! random bits, so guessing is hopeless either way; one SHA-256 makes a leaked `api_keys` table
//! useless to an attacker while keeping each request's check to a single indexed lookup, and
//! lookups by hash do not leak the key through timing (an attacker cannot steer the hash's prefix).

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::{ApiKeyRecord, Role, Store, StoreError};

/// What every key starts with, so a credential is recognisable as one of ours (and not a JWT).
pub const KEY_PREFIX: &str = "rd_";

/// A new random key and its id.
pub fn generate() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("{KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let key_id = format!("key_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    (key_id, key)
}

/// The stored form of a key: lowercase hex SHA-256.
pub fn hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// Why a key cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("subscriber_id: required for role subscriber")]
    SubscriberRequired,
    #[error("subscriber_id: only subscriber keys act for a subscriber")]
    SubscriberNotAllowed,
    #[error("subscriber_id: must be 1 to 255 bytes")]
    SubscriberInvalid,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A created key: the secret (shown once) and its stored record.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// The credential, for `Authorization: Bearer <key>`. It is not stored and cannot be shown again.
    pub key: String,
    #[serde(flatten)]
    pub record: ApiKeyRecord,
}

/// Creates and stores a key for `role` (with `subscriber_id` exactly when the role is subscriber).
pub async fn create(store: &dyn Store, role: Role, subscriber_id: Option<String>) -> Result<CreatedKey, KeyError> {
    match (role, &subscriber_id) {
        (Role::Subscriber, None) => return Err(KeyError::SubscriberRequired),
        (Role::Subscriber, Some(id)) if id.is_empty() || id.len() > 255 => return Err(KeyError::SubscriberInvalid),
        (Role::Admin | Role::Publisher, Some(_)) => return Err(KeyError::SubscriberNotAllowed),
        _ => {}
    }
    let (key_id, key) = generate();
    let record = ApiKeyRecord {
        key_id,
        key_hash: hash(&key),
        role,
        subscriber_id,
        created_at: chrono::Utc::now().timestamp_micros(),
        revoked_at: None,
    };
    store.create_api_key(&record).await?;
    Ok(CreatedKey { key, record })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_hashed() {
        let (id_a, a) = generate();
        let (id_b, b) = generate();
        assert_ne!(a, b);
        assert_ne!(id_a, id_b);
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 43);
        assert_eq!(hash(&a).len(), 64);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        // The well-known SHA-256 of "abc".
        assert_eq!(hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
