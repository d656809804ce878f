//! Idle SFTP sessions kept for the next upload to the same server and account.
//!
//! Opening a session costs a TCP connection, an SSH key exchange, authentication and the `sftp`
//! subsystem start: several round trips and, on the server, a forked process, far more than
//! uploading a small report. A busy subscriber's server therefore gets its session back instead of
//! a new one. A session is kept only after a complete, successful upload (one that failed may be
//! in any state), and only for the account and host key it was opened with: the key below holds
//! everything that authenticated it, so a changed password, key or pin never reuses an old session.
//!
//! A kept session may have been closed by the server meanwhile; the sink finds out with its first
//! request (making sure the directory exists, before any file is read) and opens a new one then.
//! Sessions idle longer than `idle_timeout` are closed by a sweeper task that lives as long as the
//! pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::connection::{Credentials, SftpConnection, Target};

/// Who a session was opened for: server, account, a digest of the credentials (never the secret
/// itself) and the pinned host key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SessionKey {
    endpoint: String,
    username: String,
    credentials: [u8; 32],
    pin: String,
}

impl SessionKey {
    pub fn of(target: &Target<'_>) -> SessionKey {
        let mut digest = Sha256::new();
        match &target.credentials {
            Credentials::Password(password) => {
                digest.update(b"password\0");
                digest.update(password.as_bytes());
            }
            Credentials::Key(key) => {
                digest.update(b"key\0");
                digest.update(key.public_key().to_openssh().unwrap_or_default().as_bytes());
            }
        }
        SessionKey {
            endpoint: target.endpoint(),
            username: target.username.to_string(),
            credentials: digest.finalize().into(),
            pin: target.pin.fingerprint().to_string(),
        }
    }
}

struct Idle {
    connection: SftpConnection,
    since: Instant,
}

type Sessions = Mutex<HashMap<SessionKey, Vec<Idle>>>;

/// Bounded: at most `per_key` idle sessions per key (the sink never has more than
/// `max_sessions_per_host` open to one server anyway).
pub(crate) struct SessionPool {
    idle_timeout: Duration,
    per_key: usize,
    sessions: Arc<Sessions>,
    sweeper: Mutex<bool>,
}

impl SessionPool {
    /// `idle_timeout` zero keeps nothing: every upload opens and closes its own session.
    pub fn new(idle_timeout: Duration, per_key: usize) -> SessionPool {
        SessionPool { idle_timeout, per_key, sessions: Arc::default(), sweeper: Mutex::new(false) }
    }

    /// The most recently returned live session for `key`, if any; expired ones are dropped
    /// (dropping the handle closes the connection).
    pub fn take(&self, key: &SessionKey) -> Option<SftpConnection> {
        let mut sessions = lock(&self.sessions);
        let idle = sessions.get_mut(key)?;
        let taken = loop {
            match idle.pop() {
                Some(entry) if entry.since.elapsed() < self.idle_timeout && !entry.connection.is_closed() => {
                    break Some(entry.connection)
                }
                Some(_) => continue,
                None => break None,
            }
        };
        if idle.is_empty() {
            sessions.remove(key);
        }
        taken
    }

    /// Keeps `connection` for the next upload to `key`, or closes it when the pool is off or full.
    pub async fn put(&self, key: SessionKey, connection: SftpConnection) {
        if self.idle_timeout.is_zero() || connection.is_closed() {
            connection.close().await;
            return;
        }
        let surplus = {
            let mut sessions = lock(&self.sessions);
            let idle = sessions.entry(key).or_default();
            if idle.len() < self.per_key {
                idle.push(Idle { connection, since: Instant::now() });
                None
            } else {
                Some(connection)
            }
        };
        match surplus {
            Some(connection) => connection.close().await,
            None => self.start_sweeper(),
        }
    }

    /// Spawned on the first kept session (the pool is created outside any runtime), it ends
    /// when the pool is dropped.
    fn start_sweeper(&self) {
        let mut started = self.sweeper.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if *started {
            return;
        }
        *started = true;
        let sessions: Weak<Sessions> = Arc::downgrade(&self.sessions);
        let idle_timeout = self.idle_timeout;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval((idle_timeout / 2).max(Duration::from_millis(100)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(sessions) = sessions.upgrade() else { return };
                let expired: Vec<SftpConnection> = {
                    let mut sessions = lock(&sessions);
                    let mut expired = Vec::new();
                    for idle in sessions.values_mut() {
                        let (keep, old): (Vec<Idle>, Vec<Idle>) = std::mem::take(idle)
                            .into_iter()
                            .partition(|entry| entry.since.elapsed() < idle_timeout && !entry.connection.is_closed());
                        *idle = keep;
                        expired.extend(old.into_iter().map(|entry| entry.connection));
                    }
                    sessions.retain(|_, idle| !idle.is_empty());
                    expired
                };
                for connection in expired {
                    connection.close().await;
                }
            }
        });
    }
}

/// A poisoned lock only means another delivery panicked while holding it; the map is still valid.
fn lock(sessions: &Sessions) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Vec<Idle>>> {
    sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
