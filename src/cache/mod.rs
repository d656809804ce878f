//! The read cache in front of the database: one [`Cache`] trait, an embedded backend
//! ([`memory::MemoryCache`], the default) and a shared one ([`redis::RedisCache`], on when
//! `cache.redis_url` is set). The API talks to neither directly but to a [`CacheClient`], which keeps
//! the rules that make the cache an accelerator and never a dependency: every failure reads as a miss,
//! a backend that failed is left alone for a while, and invalidations that could not reach it are
//! replayed before it is read again.
//!
//! What is cached, under which key and for how long, is in [`keys`].

pub mod client;
pub mod keys;
pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use client::{CacheClient, CacheHealth};

/// A key-value store of byte values with per-entry time-to-live. Implementations bound every call
/// in time themselves; the caller treats any error as "not cached".
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// Short name shown in `/healthz`: `memory`, `redis`.
    fn name(&self) -> &'static str;

    /// The value under `key`, `None` if absent or expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;

    /// Stores `value` under `key`, replacing any value, expiring after `ttl`.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError>;

    /// Removes `key`; absent keys are not an error.
    async fn delete(&self, key: &str) -> Result<(), CacheError>;

    /// Removes every key that starts with `prefix`.
    async fn delete_prefix(&self, prefix: &str) -> Result<(), CacheError>;

    /// Whether the backend answers now.
    async fn health(&self) -> Result<(), CacheError>;
}

/// Why a cache call did not complete. Reasons never contain the backend's password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    #[error("cache did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cache unavailable: {0}")]
    Unavailable(String),
    #[error("cached value does not decode: {0}")]
    Codec(String),
}

/// Which backend to build and how it behaves (the `[cache]` configuration section).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// `redis://[:password@]host:6379[/db]`: share the cache through Redis. Unset: an in-process
    /// cache. Also read from `REPDIST_REDIS_URL`. Never logged with its password.
    pub redis_url: Option<String>,
    /// Put before every key, so several deployments can share one Redis database.
    pub key_prefix: String,
    /// Longest a single Redis call may take; past it the request goes to the database.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// After a Redis failure, how long requests skip Redis before trying it again.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Most bytes (keys and values) the in-process cache holds; least used entries go first.
    pub memory_max_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            redis_url: None,
            key_prefix: String::new(),
            timeout: Duration::from_millis(250),
            retry_after: Duration::from_secs(2),
            memory_max_bytes: 64 << 20,
        }
    }
}

/// By hand so that the Redis password never reaches a log through `{:?}`.
impl std::fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheConfig")
            .field("redis_url", &self.redis_url.as_deref().map(crate::store::redacted_url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("retry_after", &self.retry_after)
            .field("memory_max_bytes", &self.memory_max_bytes)
            .finish()
    }
}

impl CacheConfig {
    /// Checks the section; the error is `(key, message)`.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if let Some(url) = &self.redis_url {
            if !url.starts_with("redis://") || url::Url::parse(url).is_err() {
                return Err(("cache.redis_url", "must be a redis:// URL (leave it unset for the in-process cache)"));
            }
        }
        if self.timeout.is_zero() {
            return Err(("cache.timeout", "must be positive"));
        }
        if self.memory_max_bytes == 0 {
            return Err(("cache.memory_max_bytes", "must be at least 1"));
        }
        Ok(())
    }

    /// The backend this section asks for, wrapped in a [`CacheClient`]. Never connects: a Redis that
    /// is down at start is reported by `/healthz`, not a reason to refuse to start.
    pub fn build(&self) -> Result<CacheClient, CacheError> {
        let backend: std::sync::Arc<dyn Cache> = match &self.redis_url {
            Some(url) => std::sync::Arc::new(redis::RedisCache::new(url, self.timeout)?),
            None => std::sync::Arc::new(memory::MemoryCache::new(self.memory_max_bytes)),
        };
        Ok(CacheClient::new(backend, self.key_prefix.clone(), self.retry_after))
    }
}
