//! The embedded cache: an in-process map (moka) bounded in bytes, each entry with its own lifetime.
//! Nothing to run beside the service; each process has its own, so it suits a single instance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;

use super::{Cache, CacheError};

#[derive(Clone)]
struct Entry {
    value: Arc<[u8]>,
    ttl: Duration,
}

/// Each entry lives for the TTL it was set with, counted from its last write.
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _created_at: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(&self, _key: &String, entry: &Entry, _updated_at: Instant, _left: Option<Duration>) -> Option<Duration> {
        Some(entry.ttl)
    }
}

pub struct MemoryCache {
    entries: moka::future::Cache<String, Entry>,
}

impl MemoryCache {
    /// A cache holding at most about `max_bytes` of keys and values.
    pub fn new(max_bytes: u64) -> MemoryCache {
        let entries = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Entry| u32::try_from(key.len() + entry.value.len()).unwrap_or(u32::MAX))
            .expire_after(PerEntryTtl)
            .build();
        MemoryCache { entries }
    }
}

#[async_trait]
impl Cache for MemoryCache {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.entries.get(key).await.map(|entry| entry.value.to_vec()))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        self.entries.insert(key.to_string(), Entry { value: value.into(), ttl }).await;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.entries.invalidate(key).await;
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), CacheError> {
        let doomed: Vec<Arc<String>> = self.entries.iter().filter(|(key, _)| key.starts_with(prefix)).map(|(key, _)| key).collect();
        for key in doomed {
            self.entries.invalidate(key.as_str()).await;
        }
        Ok(())
    }

    async fn health(&self) -> Result<(), CacheError> {
        Ok(())
    }
}
