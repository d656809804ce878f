//! What the API holds: a backend plus the rules that keep a cache from ever failing a request or
//! serving data older than the database's.
//!
//! - Every backend failure reads as a miss (the caller goes to the database), is counted, and marks the
//!   cache `down`; for `retry_after` calls skip the backend entirely, so a dead Redis costs one timeout
//!   per `retry_after`, not one per request.
//! - An invalidation that could not reach the backend is remembered and replayed before the backend is
//!   read again. If too many pile up, reads skip the backend until every entry written before the
//!   outage has expired ([`keys::MAX_TTL`]).
//! - A fill after a database read is dropped, or undone, if an invalidation ran meanwhile (the
//!   invalidation epoch moved), so a slow reader cannot put back what a writer just invalidated.
//!   Within one process this is exact; between processes sharing Redis a lost race lasts at most the
//!   entry's TTL.
//! - A process that stopped between a commit and its invalidation leaves a stale entry behind, so a
//!   starting service drops the entries kept fresh by changes, and reads nothing until that is done.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{keys, Cache, CacheError};

/// Invalidations kept for replay while the backend is unreachable.
const MAX_PENDING: usize = 10_000;

/// The cache as `/healthz` shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CacheHealth {
    /// `memory` or `redis`.
    pub backend: &'static str,
    /// `up`, or `down` after a failed call (requests are then served from the database).
    pub state: &'static str,
    /// The most recent failure, kept after recovery.
    pub last_error: Option<String>,
}

#[derive(Clone)]
pub struct CacheClient {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Cache>,
    prefix: String,
    retry_after: Duration,
    /// Moves on every invalidation and write-through.
    epoch: AtomicU64,
    state: Mutex<State>,
}

struct State {
    up: bool,
    last_error: Option<String>,
    /// Calls skip the backend until then.
    skip_until: Option<Instant>,
    /// Reads skip the backend until then (lost invalidations).
    reads_unsafe_until: Option<Instant>,
    /// Keys whose invalidation failed, with the epoch it failed at.
    pending: HashMap<String, u64>,
    /// False until entries a previous process may have left stale are dropped.
    left_overs_dropped: bool,
}

impl CacheClient {
    pub fn new(backend: Arc<dyn Cache>, prefix: String, retry_after: Duration) -> CacheClient {
        metrics::gauge!("repdist_cache_up").set(1.0);
        let state = State { up: true, last_error: None, skip_until: None, reads_unsafe_until: None, pending: HashMap::new(), left_overs_dropped: true };
        CacheClient { inner: Arc::new(Inner { backend, prefix, retry_after, epoch: AtomicU64::new(0), state: Mutex::new(state) }) }
    }

    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// Take before a database read whose result will be [`CacheClient::fill`]ed.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::SeqCst)
    }

    /// The cached bytes under `key`, or `None` (absent, expired, or the backend failing).
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        if !self.readable() || !self.replay_pending().await {
            metrics::counter!("repdist_cache_misses_total").increment(1);
            return None;
        }
        match self.inner.backend.get(&self.full(key)).await {
            Ok(found) => {
                self.record_ok();
                let counter = if found.is_some() { "repdist_cache_hits_total" } else { "repdist_cache_misses_total" };
                metrics::counter!(counter).increment(1);
                found
            }
            Err(e) => {
                self.record_failure(&e);
                metrics::counter!("repdist_cache_misses_total").increment(1);
                None
            }
        }
    }

    /// [`CacheClient::get`], decoded from JSON; a value that does not decode counts as an error and a miss.
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let bytes = self.get(key).await?;
        match serde_json::from_slice(&bytes) {
            Ok(value) => Some(value),
            Err(e) => {
                metrics::counter!("repdist_cache_errors_total").increment(1);
                tracing::warn!(key, error = %CacheError::Codec(e.to_string()), "cache value ignored");
                None
            }
        }
    }

    /// Caches what a database read returned, unless an invalidation ran since `epoch` was taken.
    pub async fn fill(&self, key: &str, value: &[u8], ttl: Duration, epoch: u64) {
        if self.epoch() != epoch || !self.writable() {
            return;
        }
        self.put(key, value, ttl, epoch).await;
    }

    /// Writes a value that is current as of now (the database change it reflects is durable).
    pub async fn write_through(&self, key: &str, value: &[u8], ttl: Duration) {
        let epoch = self.inner.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        if !self.writable() {
            // The backend may hold an older value that can no longer be overwritten: forget it.
            self.remember(key, epoch);
            return;
        }
        self.put(key, value, ttl, epoch).await;
    }

    /// [`CacheClient::write_through`] of a value as JSON.
    pub async fn write_through_json<T: Serialize>(&self, key: &str, value: &T, ttl: Duration) {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.write_through(key, &bytes, ttl).await,
            Err(_) => self.invalidate(key).await,
        }
    }

    /// Stores a snapshot where an older value is harmless until it expires (metrics): no epoch, no
    /// replay; a failure only marks the backend down.
    pub async fn set_snapshot(&self, key: &str, value: &[u8], ttl: Duration) {
        if !self.writable() {
            return;
        }
        match self.inner.backend.set(&self.full(key), value, ttl).await {
            Ok(()) => self.record_ok(),
            Err(e) => self.record_failure(&e),
        }
    }

    /// Removes `key` after the data it caches changed. Call once the change is durable.
    pub async fn invalidate(&self, key: &str) {
        let epoch = self.inner.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        self.delete(key, epoch).await;
    }

    /// Drops every entry under `prefixes` (see [`keys::KEPT_FRESH_BY_CHANGES`]); until that succeeds
    /// reads are misses. Tries once now; if the backend fails, retries every `retry_after` in the
    /// background for as long as this cache is in use.
    pub async fn drop_left_overs(&self, prefixes: &'static [&'static str]) {
        self.state().left_overs_dropped = false;
        if self.try_drop_left_overs(prefixes).await {
            return;
        }
        let cache = Arc::downgrade(&self.inner);
        let retry_after = self.inner.retry_after.max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(retry_after).await;
                let Some(inner) = cache.upgrade() else { return };
                if (CacheClient { inner }).try_drop_left_overs(prefixes).await {
                    return;
                }
            }
        });
    }

    async fn try_drop_left_overs(&self, prefixes: &[&str]) -> bool {
        for prefix in prefixes {
            if let Err(e) = self.inner.backend.delete_prefix(&self.full(prefix)).await {
                self.record_failure(&e);
                return false;
            }
        }
        self.record_ok();
        self.state().left_overs_dropped = true;
        true
    }

    /// Probes the backend now and reports its state.
    pub async fn health(&self) -> CacheHealth {
        match self.inner.backend.health().await {
            Ok(()) => self.record_ok(),
            Err(e) => self.record_failure(&e),
        }
        let state = self.state();
        CacheHealth { backend: self.backend_name(), state: if state.up { "up" } else { "down" }, last_error: state.last_error.clone() }
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration, epoch: u64) {
        match self.inner.backend.set(&self.full(key), value, ttl).await {
            Ok(()) => {
                self.record_ok();
                if self.epoch() != epoch {
                    // An invalidation or a newer write ran meanwhile; its order against ours is unknown.
                    self.delete(key, self.epoch()).await;
                }
            }
            Err(e) => {
                self.record_failure(&e);
                // The set may still land (a timeout is not a refusal), or an older value may remain.
                self.remember(key, epoch);
            }
        }
    }

    async fn delete(&self, key: &str, epoch: u64) {
        if !self.writable() {
            self.remember(key, epoch);
            return;
        }
        match self.inner.backend.delete(&self.full(key)).await {
            Ok(()) => self.record_ok(),
            Err(e) => {
                self.record_failure(&e);
                self.remember(key, epoch);
            }
        }
    }

    /// Deletes the keys whose invalidation failed; `false` if some still could not be deleted.
    async fn replay_pending(&self) -> bool {
        let pending: Vec<(String, u64)> = {
            let state = self.state();
            if state.pending.is_empty() {
                return true;
            }
            state.pending.iter().map(|(k, e)| (k.clone(), *e)).collect()
        };
        for (key, epoch) in pending {
            if let Err(e) = self.inner.backend.delete(&self.full(&key)).await {
                self.record_failure(&e);
                return false;
            }
            let mut state = self.state();
            if state.pending.get(&key) == Some(&epoch) {
                state.pending.remove(&key);
            }
        }
        self.record_ok();
        true
    }

    fn remember(&self, key: &str, epoch: u64) {
        let mut state = self.state();
        if state.pending.len() >= MAX_PENDING && !state.pending.contains_key(key) {
            tracing::warn!(lost = state.pending.len(), "cache: too many invalidations lost; not reading the cache until its entries expire");
            state.pending.clear();
            state.reads_unsafe_until = Some(Instant::now() + keys::MAX_TTL);
            return;
        }
        state.pending.insert(key.to_string(), epoch);
    }

    fn readable(&self) -> bool {
        let now = Instant::now();
        let state = self.state();
        state.left_overs_dropped && state.skip_until.is_none_or(|t| now >= t) && state.reads_unsafe_until.is_none_or(|t| now >= t)
    }

    fn writable(&self) -> bool {
        self.state().skip_until.is_none_or(|t| Instant::now() >= t)
    }

    fn record_ok(&self) {
        let mut state = self.state();
        state.skip_until = None;
        if !state.up {
            state.up = true;
            metrics::gauge!("repdist_cache_up").set(1.0);
            tracing::info!(backend = self.backend_name(), "cache is up again");
        }
    }

    fn record_failure(&self, error: &CacheError) {
        metrics::counter!("repdist_cache_errors_total").increment(1);
        let mut state = self.state();
        state.skip_until = Some(Instant::now() + self.inner.retry_after);
        state.last_error = Some(error.to_string());
        if state.up {
            state.up = false;
            metrics::gauge!("repdist_cache_up").set(0.0);
            tracing::warn!(backend = self.backend_name(), %error, "cache is down; serving from the database");
        }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another request panicked mid-update of plain flags.
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
