//! Optional JWT bearer tokens (`[auth.jwt]`), for deployments whose identity provider issues them:
//! verified against a JWKS file (the key picked by the token's `kid`), a PEM public key, or a
//! shared secret (HS256/384/512). `exp` is required; `iss` and `aud` are checked when configured.
//!
//! Claims: `sub` names the actor in the audit trail; the role is in the claim named by
//! `role_claim` (default `role`: `admin`, `publisher` or `subscriber`), and a subscriber's id in
//! `subscriber_claim` (default `subscriber_id`, required for role subscriber).

use std::collections::HashMap;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::Principal;
use crate::config::JwtConfig;
use crate::store::Role;

/// Why a JWT configuration cannot be used (at start).
#[derive(Debug, thiserror::Error)]
pub enum JwtSetupError {
    #[error("auth.jwt: set exactly one of jwks_file, public_key_file and secret")]
    KeySource,
    #[error("auth.jwt.{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Why a token is refused (answered 401; the reason goes to the audit trail, not the client).
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("token expired")]
    Expired,
    #[error("bad signature")]
    BadSignature,
    #[error("token refused: {0}")]
    Invalid(String),
}

enum Keys {
    /// One key for every token (a PEM public key or a shared secret).
    Single(Box<DecodingKey>),
    /// Keys by `kid`, each with its algorithm if the JWK names one.
    ByKid(HashMap<String, (DecodingKey, Option<Algorithm>)>),
}

pub struct JwtVerifier {
    keys: Keys,
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Option<String>,
    role_claim: String,
    subscriber_claim: String,
    leeway_secs: u64,
}

fn parse_algorithm(name: &str) -> Result<Algorithm, JwtSetupError> {
    name.parse::<Algorithm>().map_err(|_| JwtSetupError::Invalid { key: "algorithms", message: format!("unknown algorithm `{name}`") })
}

impl JwtVerifier {
    pub fn new(config: &JwtConfig) -> Result<JwtVerifier, JwtSetupError> {
        let sources = [config.jwks_file.is_some(), config.public_key_file.is_some(), config.secret.is_some()];
        if sources.iter().filter(|set| **set).count() != 1 {
            return Err(JwtSetupError::KeySource);
        }
        let read = |key: &'static str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| JwtSetupError::Invalid { key, message: format!("{}: {e}", path.display()) })
        };
        let mut algorithms = config.algorithms.iter().map(|a| parse_algorithm(a)).collect::<Result<Vec<_>, _>>()?;
        let keys = if let Some(path) = &config.jwks_file {
            let set: JwkSet = serde_json::from_slice(&read("jwks_file", path)?)
                .map_err(|e| JwtSetupError::Invalid { key: "jwks_file", message: format!("not a JWKS document: {e}") })?;
            let mut keys = HashMap::new();
            for jwk in &set.keys {
                let Some(kid) = jwk.common.key_id.clone() else { continue };
                let key = DecodingKey::from_jwk(jwk).map_err(|e| JwtSetupError::Invalid { key: "jwks_file", message: format!("key `{kid}`: {e}") })?;
                let algorithm = jwk.common.key_algorithm.as_ref().and_then(|a| a.to_string().parse::<Algorithm>().ok());
                keys.insert(kid, (key, algorithm));
            }
            if keys.is_empty() {
                return Err(JwtSetupError::Invalid { key: "jwks_file", message: "no key with a `kid`".to_string() });
            }
            Keys::ByKid(keys)
        } else if let Some(path) = &config.public_key_file {
            let pem = read("public_key_file", path)?;
            let key = DecodingKey::from_rsa_pem(&pem)
                .or_else(|_| DecodingKey::from_ec_pem(&pem))
                .or_else(|_| DecodingKey::from_ed_pem(&pem))
                .map_err(|e| JwtSetupError::Invalid { key: "public_key_file", message: format!("not an RSA, EC or Ed25519 public key: {e}") })?;
            Keys::Single(Box::new(key))
        } else {
            let secret = config.secret.as_deref().unwrap_or_default();
            if secret.len() < 32 {
                return Err(JwtSetupError::Invalid { key: "secret", message: "must be at least 32 bytes".to_string() });
            }
            if algorithms.is_empty() {
                algorithms.push(Algorithm::HS256);
            }
            Keys::Single(Box::new(DecodingKey::from_secret(secret.as_bytes())))
        };
        if algorithms.is_empty() {
            algorithms = vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
        }
        let hmac = |a: &Algorithm| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
        if config.secret.is_some() != algorithms.iter().all(hmac) {
            return Err(JwtSetupError::Invalid {
                key: "algorithms",
                message: "HS256/HS384/HS512 go with `secret`, and only with it".to_string(),
            });
        }
        Ok(JwtVerifier {
            keys,
            algorithms,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            role_claim: config.role_claim.clone(),
            subscriber_claim: config.subscriber_claim.clone(),
            leeway_secs: config.leeway.as_secs(),
        })
    }

    /// Verifies the token and maps its claims to a principal.
    pub fn verify(&self, token: &str) -> Result<Principal, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| JwtError::Invalid(e.to_string()))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(JwtError::Invalid(format!("algorithm {:?} is not accepted", header.alg)));
        }
        let key = match &self.keys {
            Keys::Single(key) => key.as_ref(),
            Keys::ByKid(keys) => {
                let kid = header.kid.as_deref().ok_or_else(|| JwtError::Invalid("no `kid` in the header".to_string()))?;
                let (key, algorithm) = keys.get(kid).ok_or_else(|| JwtError::Invalid(format!("unknown key id `{kid}`")))?;
                if algorithm.is_some_and(|a| a != header.alg) {
                    return Err(JwtError::Invalid(format!("key `{kid}` is not for {:?}", header.alg)));
                }
                key
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.leeway_secs;
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, key, &validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => JwtError::Expired,
            jsonwebtoken::errors::ErrorKind::InvalidSignature => JwtError::BadSignature,
            _ => JwtError::Invalid(e.to_string()),
        })?;
        let claims = data.claims;
        let subject = claims.get("sub").and_then(Value::as_str).ok_or_else(|| JwtError::Invalid("no `sub` claim".to_string()))?;
        let role = claims
            .get(&self.role_claim)
            .and_then(Value::as_str)
            .and_then(Role::parse)
            .ok_or_else(|| JwtError::Invalid(format!("claim `{}` must be admin, publisher or subscriber", self.role_claim)))?;
        let subscriber_id = claims.get(&self.subscriber_claim).and_then(Value::as_str).map(str::to_string);
        let subscriber_id = match role {
            Role::Subscriber => Some(subscriber_id.ok_or_else(|| JwtError::Invalid(format!("claim `{}` is required for role subscriber", self.subscriber_claim)))?),
            Role::Admin | Role::Publisher => None,
        };
        Ok(Principal { actor: format!("jwt:{subject}"), role, subscriber_id })
    }
}
