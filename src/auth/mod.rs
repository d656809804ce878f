//! Access control: who is calling (an API key or a JWT, [`Authenticator`]), what each role may do
//! ([`policy`]), and the audit trail of what was done and refused ([`Auditor`]).
//!
//! Roles: `admin` may do everything; `publisher` may submit reports (`POST /deliver`) and follow
//! their deliveries; `subscriber` may manage and read only its own subscriptions, deliveries,
//! notifications and stream. Another subscriber's data answers 404 (gRPC `NOT_FOUND`), never the
//! data, so a subscriber cannot even learn which ids exist.
//!
//! Open without a credential: `/healthz` (load balancers and orchestrators probe it), `/metrics`
//! (scraped by Prometheus inside the deployment; it holds counts, no report data), the OpenAPI
//! document (the API's shape is public), and the gRPC health and reflection services (the
//! standard probes and schema discovery, again without data).

pub mod http;
pub mod jwt;
pub mod keys;
pub mod policy;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::store::{AuditEntry, Role, Store, StoreError};

/// Who a request acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// How the audit trail names it: `key:<key_id>` or `jwt:<sub>`.
    pub actor: String,
    pub role: Role,
    /// Set exactly for role subscriber.
    pub subscriber_id: Option<String>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether this principal may see and change `subscriber_id`'s subscriptions and deliveries.
    pub fn owns(&self, subscriber_id: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Publisher => false,
            Role::Subscriber => self.subscriber_id.as_deref() == Some(subscriber_id),
        }
    }
}

/// Why a call is refused: 401 (`UNAUTHENTICATED`) for a missing or bad credential, 403
/// (`PERMISSION_DENIED`) for a role that may not make it, 503 when the key store cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("a credential is required: send `Authorization: Bearer <key>`")]
    Missing,
    #[error("the credential is not valid")]
    Invalid(String),
    #[error("the credential was revoked")]
    Revoked,
    #[error("this credential may not {0}")]
    Forbidden(String),
    #[error("credentials cannot be checked now")]
    Store(#[from] StoreError),
}

impl AuthError {
    /// The audit trail's outcome for a refusal.
    pub fn outcome(&self) -> &'static str {
        match self {
            AuthError::Missing | AuthError::Invalid(_) | AuthError::Revoked => "unauthenticated",
            AuthError::Forbidden(_) => "forbidden",
            AuthError::Store(_) => "unavailable",
        }
    }

    /// What the audit trail records about it (more than the client is told).
    pub fn detail(&self) -> String {
        match self {
            AuthError::Invalid(reason) => format!("invalid credential: {reason}"),
            other => other.to_string(),
        }
    }
}

/// Checks credentials: API keys against the store (hashed), JWTs against `[auth.jwt]`.
pub struct Authenticator {
    store: Arc<dyn Store>,
    jwt: Option<jwt::JwtVerifier>,
    auditor: Auditor,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>, config: &crate::config::AuthConfig) -> Result<Authenticator, jwt::JwtSetupError> {
        let jwt = config.jwt.as_ref().map(jwt::JwtVerifier::new).transpose()?;
        let auditor = Auditor::start(store.clone());
        Ok(Authenticator { store, jwt, auditor })
    }

    pub fn auditor(&self) -> &Auditor {
        &self.auditor
    }

    /// The principal behind a bearer credential (`None`: none was sent).
    pub async fn authenticate(&self, credential: Option<&str>) -> Result<Principal, AuthError> {
        let credential = credential.map(str::trim).filter(|c| !c.is_empty()).ok_or(AuthError::Missing)?;
        if credential.starts_with(keys::KEY_PREFIX) {
            let Some(key) = self.store.api_key_by_hash(&keys::hash(credential)).await? else {
                return Err(AuthError::Invalid("unknown API key".to_string()));
            };
            if key.revoked_at.is_some() {
                return Err(AuthError::Revoked);
            }
            return Ok(Principal { actor: format!("key:{}", key.key_id), role: key.role, subscriber_id: key.subscriber_id });
        }
        match &self.jwt {
            Some(verifier) => verifier.verify(credential).map_err(|e| AuthError::Invalid(e.to_string())),
            None => Err(AuthError::Invalid("not an API key (JWTs are not configured)".to_string())),
        }
    }
}

/// `Bearer <credential>` from an `Authorization` value (the scheme is case-insensitive).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, credential) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(credential.trim())
}

/// Default headers for an HTTP client acting with `key` (the demo's and the bench's clients).
pub fn client_headers(key: &str) -> Result<axum::http::HeaderMap, axum::http::header::InvalidHeaderValue> {
    let mut value = axum::http::HeaderValue::from_str(&format!("Bearer {key}"))?;
    value.set_sensitive(true);
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(axum::http::header::AUTHORIZATION, value);
    Ok(headers)
}

/// Appends to the audit trail. Changes (subscriptions, replays, admin actions) are recorded before
/// their answer ([`Auditor::record`]); refusals go through a bounded queue to a writer that appends
/// them in batches ([`Auditor::denied`]), so a flood of bad requests costs no write each and never
/// waits on the database. Delivery attempts are not written here at all: the store appends their
/// rows inside the sequencer's group commit.
#[derive(Clone)]
pub struct Auditor {
    store: Arc<dyn Store>,
    denials: mpsc::Sender<AuditEntry>,
}

/// Refusals queued for the writer; past this they are counted (`repdist_audit_dropped_total`) and dropped.
const DENIAL_QUEUE: usize = 4096;
/// Rows per append of the denial writer.
const DENIAL_BATCH: usize = 256;

impl Auditor {
    fn start(store: Arc<dyn Store>) -> Auditor {
        let (denials, mut queue) = mpsc::channel::<AuditEntry>(DENIAL_QUEUE);
        let writer = store.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(DENIAL_BATCH);
            while queue.recv_many(&mut batch, DENIAL_BATCH).await > 0 {
                if let Err(error) = writer.append_audit(&batch).await {
                    tracing::error!(%error, rows = batch.len(), "audit rows for refused requests could not be written");
                }
                batch.clear();
            }
        });
        Auditor { store, denials }
    }

    /// Appends one row now, before the caller answers. The change it records is already committed,
    /// so a failed append is logged and counted (`repdist_audit_failed_total`) rather than turned
    /// into an error for a change that did happen; subscription changes and replays are recorded
    /// again by the group commit itself (actor `system`), atomically with the change.
    pub async fn record(&self, entry: AuditEntry) {
        if let Err(error) = self.store.append_audit(std::slice::from_ref(&entry)).await {
            metrics::counter!("repdist_audit_failed_total").increment(1);
            tracing::error!(%error, action = %entry.action, target = ?entry.target, "audit row could not be written");
        }
    }

    /// Records `action` on `target` by `principal`, outcome `ok`.
    pub async fn done(&self, principal: &Principal, action: &str, target: &str) {
        self.record(AuditEntry::now(principal.actor.clone(), action, Some(target.to_string()), "ok")).await
    }

    /// Queues a refusal's row.
    pub fn denied(&self, actor: Option<&Principal>, target: String, error: &AuthError) {
        let actor = actor.map(|p| p.actor.clone()).unwrap_or_else(|| "anonymous".to_string());
        let mut entry = AuditEntry::now(actor, "request.denied", Some(target), error.outcome());
        entry.detail = Some(error.detail());
        if self.denials.try_send(entry).is_err() {
            metrics::counter!("repdist_audit_dropped_total").increment(1);
        }
    }
}

/// The embedded default: with no key at all, create an admin key and write it to
/// `DATA_DIR/admin.key` (0600) so local tools (and `demo`) can use it. Returns the new key.
pub async fn bootstrap_admin_key(store: &dyn Store, data_dir: &std::path::Path) -> Result<Option<String>, BootstrapError> {
    if store.active_api_keys().await? > 0 {
        return Ok(None);
    }
    let created = keys::create(store, Role::Admin, None).await.map_err(|e| match e {
        keys::KeyError::Store(e) => BootstrapError::Store(e),
        other => BootstrapError::Io(std::io::Error::other(other.to_string())),
    })?;
    write_key_file(&data_dir.join(ADMIN_KEY_FILE), &created.key)?;
    let entry = AuditEntry::now("system", "keys.create", Some(created.record.key_id.clone()), "ok");
    store.append_audit(&[AuditEntry { detail: Some("bootstrap admin key".to_string()), ..entry }]).await?;
    Ok(Some(created.key))
}

/// Where the bootstrap admin key is written under the data directory.
pub const ADMIN_KEY_FILE: &str = "admin.key";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the admin key file: {0}")]
    Io(#[from] std::io::Error),
}

fn write_key_file(path: &std::path::Path, key: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        // An existing file keeps its mode on open: narrow it too.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    std::io::Write::write_all(&mut file, format!("{key}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn bearer_credentials_are_recognised() {
        assert_eq!(bearer("Bearer rd_abc"), Some("rd_abc"));
        assert_eq!(bearer("bearer  rd_abc "), Some("rd_abc"));
        assert_eq!(bearer("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer("rd_abc"), None);
    }
}
