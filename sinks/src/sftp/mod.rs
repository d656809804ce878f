//! SFTP: the report file and a JSON manifest uploaded to the subscriber's SFTP server, over SSH with a
//! pinned host key.
//!
//! One attempt connects (or takes the idle session of its server and account, see `pool`), checks
//! the host key, authenticates (password or private key), makes sure the directory exists, uploads the report file (when the delivery has one; a digest's every report
//! file) and then the manifest (the request payload, the JSON envelope every channel sends), each
//! through a part file renamed into place. The manifest goes last, so a reader that waits for it
//! always finds every file it names. A retry writes the same names again and replaces them.
//!
//! - `config`: dial, keepalive, sessions per server, chunking;
//! - `host_key`: parsing pins and comparing presented keys;
//! - `connection`: SSH handshake, authentication, the `sftp` subsystem, their error classes;
//! - `pool`: idle sessions kept for the next upload to the same server and account;
//! - `upload`: directories, part files, renames, SFTP status classes;
//! - this file: the destination's credentials and the delivery.
//!
//! Tests against a real OpenSSH server live in `sinks/tests/it/sftp.rs`.

mod config;
mod connection;
mod host_key;
mod pool;
mod upload;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use russh::keys::{decode_secret_key, Algorithm};
use tokio::sync::Semaphore;

pub use config::{SftpConfig, SftpSetupError, MAX_CHUNK_SIZE};
pub use host_key::{HostKeyPin, InvalidHostKey};

use connection::{Credentials, SftpConnection, Target};
use pool::{SessionKey, SessionPool};
use upload::Remote;

use crate::{DeliveryRequest, Destination, Receipt, Sink, SinkError};

/// How an SFTP destination authenticates. `Debug` shows the method, never the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum SftpAuth {
    Password(String),
    /// An OpenSSH (`-----BEGIN OPENSSH PRIVATE KEY-----`) or PEM private key, as text; ed25519 or
    /// ECDSA. `passphrase` decrypts it when it is encrypted.
    PrivateKey {
        pem: String,
        passphrase: Option<String>,
    },
}

impl fmt::Debug for SftpAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SftpAuth::Password(_) => f.write_str("Password(<redacted>)"),
            SftpAuth::PrivateKey { .. } => f.write_str("PrivateKey(<redacted>)"),
        }
    }
}

/// Uploads to SFTP servers. Holds the channel's settings and one semaphore per `host:port`, so that
/// deliveries to one server never hold more than `max_sessions_per_host` sessions at once however
/// many run in parallel, and the idle sessions kept between uploads.
pub struct SftpSink {
    config: SftpConfig,
    sessions_per_host: Mutex<HashMap<String, Arc<Semaphore>>>,
    idle: SessionPool,
    opened: AtomicU64,
}

impl SftpSink {
    /// The channel name this sink registers under.
    pub const CHANNEL: &'static str = "SFTP";

    /// Fails on an invalid `config`, naming the key.
    pub fn new(config: SftpConfig) -> Result<Self, SftpSetupError> {
        config.validate()?;
        let idle = SessionPool::new(config.idle_timeout, config.max_sessions_per_host);
        Ok(SftpSink { config, sessions_per_host: Mutex::new(HashMap::new()), idle, opened: AtomicU64::new(0) })
    }

    /// SSH sessions this sink has opened so far (the rest of its uploads reused one).
    pub fn sessions_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    fn session_slots(&self, endpoint: &str) -> Arc<Semaphore> {
        // A poisoned lock only means another delivery panicked while inserting; the map is still valid.
        let mut slots = self.sessions_per_host.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        slots
            .entry(endpoint.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.max_sessions_per_host)))
            .clone()
    }
}

/// A destination checked before any connection: everything wrong here is permanent.
struct Plan<'a> {
    target: Target<'a>,
    directory: &'a str,
    /// The report files (one, or a digest's several) and the names they get on the server.
    reports: Vec<(Upload, String)>,
    manifest_name: String,
    /// The manifest as uploaded: the payload, or its age ciphertext.
    manifest: Vec<u8>,
    /// The delivery id as it appears in part file names.
    delivery: String,
}

impl<'a> Plan<'a> {
    async fn new(request: &'a DeliveryRequest) -> Result<Plan<'a>, SinkError> {
        let Destination::Sftp { host, port, username, auth, host_key, directory, files, manifest_name } =
            &request.destination
        else {
            return Err(SinkError::permanent(format!(
                "{} cannot deliver to {:?}",
                SftpSink::CHANNEL,
                request.destination
            )));
        };
        if host.is_empty() || *port == 0 {
            return Err(SinkError::permanent("the sftp destination needs a host and a non-zero port"));
        }
        if username.is_empty() {
            return Err(SinkError::permanent("the sftp destination needs a username"));
        }
        if directory.contains('\0') {
            return Err(SinkError::permanent(format!("invalid sftp directory {directory:?}")));
        }
        let pin = HostKeyPin::parse(host_key).map_err(|e| SinkError::permanent(e.to_string()))?;
        let credentials = credentials(auth)?;
        let delivery = file_safe(&request.idempotency_key);
        let manifest_name = match (manifest_name, files.as_slice()) {
            (Some(name), _) => name.clone(),
            (None, [only]) => format!("{}.manifest.json", only.name),
            (None, _) => format!("{delivery}.json"),
        };
        let mut names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        names.push(&manifest_name);
        for name in &names {
            if name.is_empty() || *name == "." || *name == ".." || name.contains(['/', '\0']) {
                return Err(SinkError::permanent(format!("invalid sftp file name {name:?}: one path component is required")));
            }
        }
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(SinkError::permanent(format!("two uploads share the sftp file name {:?}", pair[0])));
        }
        // Every file is opened before connecting: a missing report fails the attempt at once.
        // Encrypted deliveries read each file whole and upload its ciphertext as `<name>.age`
        // (and the manifest as `<manifest>.age`): nothing of the report reaches the server in clear.
        let mut reports = Vec::with_capacity(files.len());
        for file in files {
            let opened = open_report(&file.path).await?;
            reports.push(match &request.encrypt_to {
                None => (Upload::File(opened), file.name.clone()),
                Some(recipient) => {
                    let plain = read_whole(opened, &file.path).await?;
                    (Upload::Bytes(recipient.encrypt(&plain)?), format!("{}{}", file.name, crate::encryption::FILE_SUFFIX))
                }
            });
        }
        let (manifest_name, manifest) = match &request.encrypt_to {
            None => (manifest_name, request.payload.to_vec()),
            Some(recipient) => {
                (format!("{manifest_name}{}", crate::encryption::FILE_SUFFIX), recipient.encrypt(&request.payload)?)
            }
        };
        let target = Target { host, port: *port, username, credentials, pin };
        Ok(Plan { target, directory, reports, manifest_name, manifest, delivery })
    }
}

/// Parses the destination's credentials. Key errors say what is wrong without quoting the key.
fn credentials(auth: &SftpAuth) -> Result<Credentials, SinkError> {
    match auth {
        SftpAuth::Password(password) => Ok(Credentials::Password(password.clone())),
        SftpAuth::PrivateKey { pem, passphrase } => {
            let key = decode_secret_key(pem, passphrase.as_deref()).map_err(|error| {
                SinkError::permanent(match (error, passphrase) {
                    (russh::keys::Error::KeyIsEncrypted, None) => {
                        "the sftp private key is encrypted and no passphrase is configured".to_string()
                    }
                    _ => {
                        "the sftp private key cannot be read (not an OpenSSH or PEM private key, or a wrong passphrase)"
                            .to_string()
                    }
                })
            })?;
            if matches!(key.algorithm(), Algorithm::Rsa { .. }) {
                return Err(SinkError::permanent(
                    "RSA private keys are not supported for sftp (built without RSA): use an ed25519 or ECDSA key",
                ));
            }
            Ok(Credentials::Key(Arc::new(key)))
        }
    }
}

/// Opens the local report. A report that is missing or unreadable stays so: permanent.
async fn open_report(path: &Path) -> Result<tokio::fs::File, SinkError> {
    use std::io::ErrorKind;
    let shown = path.display();
    let file = tokio::fs::File::open(path).await.map_err(|error| match error.kind() {
        ErrorKind::NotFound => SinkError::permanent(format!("the report file {shown} does not exist")),
        ErrorKind::PermissionDenied => SinkError::permanent(format!("the report file {shown} cannot be read: {error}")),
        _ => SinkError::transient(format!("the report file {shown} cannot be opened: {error}")),
    })?;
    let metadata = file
        .metadata()
        .await
        .map_err(|e| SinkError::transient(format!("the report file {shown} cannot be opened: {e}")))?;
    if !metadata.is_file() {
        return Err(SinkError::permanent(format!("the report file {shown} is not a regular file")));
    }
    Ok(file)
}

/// What one report file is uploaded from.
enum Upload {
    /// The local file, streamed.
    File(tokio::fs::File),
    /// Bytes prepared in memory (the file's ciphertext).
    Bytes(Vec<u8>),
}

async fn read_whole(mut file: tokio::fs::File, path: &Path) -> Result<Vec<u8>, SinkError> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .await
        .map_err(|e| SinkError::transient(format!("the report file {} cannot be read: {e}", path.display())))?;
    Ok(bytes)
}

/// The delivery id restricted to characters every file system accepts in a name.
fn file_safe(id: &str) -> String {
    let safe: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') { c } else { '_' }).collect();
    if safe.is_empty() {
        "delivery".to_string()
    } else {
        safe
    }
}

impl SftpSink {
    async fn attempt(&self, plan: Plan<'_>) -> Result<(usize, u64), SinkError> {
        let endpoint = plan.target.endpoint();
        let slots = self.session_slots(&endpoint);
        // Waiting for a slot counts against the deadline, like any other part of the attempt.
        let _slot = slots.acquire_owned().await.map_err(|_| SinkError::transient("the sftp sink is shutting down"))?;

        let key = SessionKey::of(&plan.target);
        let (connection, remote) = match self.idle.take(&key) {
            // The first request also tells whether the server still has the kept session.
            Some(kept) => match self.ready(kept, plan.directory, &endpoint).await {
                Ok(ready) => ready,
                Err(error) => {
                    tracing::debug!(%endpoint, %error, "the kept sftp session is unusable; opening a new one");
                    let fresh = self.open(plan.target).await?;
                    self.ready(fresh, plan.directory, &endpoint).await?
                }
            },
            None => {
                let fresh = self.open(plan.target).await?;
                self.ready(fresh, plan.directory, &endpoint).await?
            }
        };
        let (mut files, mut bytes) = (0, 0);
        for (upload, name) in plan.reports {
            bytes += match upload {
                Upload::File(file) => remote.put(file, plan.directory, &name, &plan.delivery).await?,
                Upload::Bytes(content) => remote.put(content.as_slice(), plan.directory, &name, &plan.delivery).await?,
            };
            files += 1;
        }
        bytes += remote.put(plan.manifest.as_slice(), plan.directory, &plan.manifest_name, &plan.delivery).await?;
        files += 1;
        drop(remote);
        self.idle.put(key, connection).await;
        Ok((files, bytes))
    }

    async fn open(&self, target: Target<'_>) -> Result<SftpConnection, SinkError> {
        let connection = connection::open(&self.config, target).await?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(connection)
    }

    /// The session with what its server supports, and the delivery's directory made sure of.
    async fn ready<'e>(
        &self,
        connection: SftpConnection,
        directory: &str,
        endpoint: &'e str,
    ) -> Result<(SftpConnection, Remote<'e>), SinkError> {
        let remote = Remote::new(
            connection.sftp.clone(),
            &connection.extensions,
            endpoint,
            self.config.chunk_size,
            self.config.writes_in_flight,
        )
        .await;
        remote.ensure_directory(directory).await?;
        Ok((connection, remote))
    }
}

#[async_trait]
impl Sink for SftpSink {
    fn name(&self) -> &'static str {
        Self::CHANNEL
    }

    async fn deliver(&self, request: &DeliveryRequest) -> Result<Receipt, SinkError> {
        let started = Instant::now();
        let plan = Plan::new(request).await?;
        let (files, bytes) = tokio::time::timeout(request.timeout, self.attempt(plan))
            .await
            .map_err(|_| SinkError::transient(format!("timed out after {:.1}s", request.timeout.as_secs_f64())))??;
        let elapsed = started.elapsed();
        tracing::debug!(
            delivery_id = %request.idempotency_key,
            attempt = request.attempt,
            files,
            bytes,
            elapsed_ms = elapsed.as_millis() as u64,
            "sftp upload complete"
        );
        Ok(Receipt {
            elapsed,
            detail: format!("SFTP uploaded {files} file{} ({bytes} bytes)", if files == 1 { "" } else { "s" }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_become_safe_file_names() {
        assert_eq!(file_safe("dlv_0f9c2a-7"), "dlv_0f9c2a-7");
        assert_eq!(file_safe("../../etc/passwd"), "______etc_passwd");
        assert_eq!(file_safe(""), "delivery");
    }

    #[test]
    fn credentials_are_never_shown() {
        let password = SftpAuth::Password("hunter2".into());
        let key =
            SftpAuth::PrivateKey { pem: "-----BEGIN OPENSSH PRIVATE KEY-----".into(), passphrase: Some("pw".into()) };
        assert_eq!(format!("{password:?}"), "Password(<redacted>)");
        assert_eq!(format!("{key:?}"), "PrivateKey(<redacted>)");
    }

    #[test]
    fn an_unreadable_key_is_permanent_and_not_quoted() {
        let auth = SftpAuth::PrivateKey { pem: "not a key s3cr3t".into(), passphrase: None };
        let Err(error) = credentials(&auth) else { panic!("garbage is not a key") };
        assert!(!error.is_transient());
        assert!(!error.reason().contains("s3cr3t"), "{error}");
    }
}
