//! The same cases against each backend: what one stores, the other must store the same way.

use std::sync::Arc;
use std::time::Duration;

use repdist::cache::memory::MemoryCache;
use repdist::cache::redis::RedisCache;
use repdist::cache::{Cache, CacheClient};

use super::{redis_connection, redis_url, unique_prefix};

const TIMEOUT: Duration = Duration::from_millis(500);

/// Runs one case against the in-process backend and against Redis, each with its own key prefix.
macro_rules! on_each_backend {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test]
            async fn memory() {
                super::$case(super::memory(), &super::unique_prefix()).await;
            }

            #[tokio::test]
            async fn redis() {
                super::$case(super::redis().await, &super::unique_prefix()).await;
            }
        }
    )*};
}

on_each_backend!(
    stores_and_replaces_values,
    entries_expire_after_their_ttl,
    deleted_entries_are_gone,
    prefix_deletion_spares_other_keys,
    client_serves_json_and_invalidates,
    fill_after_an_invalidation_is_dropped,
    left_overs_of_an_earlier_process_are_not_served,
);

fn memory() -> Arc<dyn Cache> {
    Arc::new(MemoryCache::new(1 << 20))
}

async fn redis() -> Arc<dyn Cache> {
    Arc::new(RedisCache::new(&redis_url().await, TIMEOUT).unwrap())
}

async fn stores_and_replaces_values(cache: Arc<dyn Cache>, prefix: &str) {
    cache.health().await.expect("backend answers");
    let key = format!("{prefix}a");
    assert_eq!(cache.get(&key).await.unwrap(), None, "absent key");
    cache.set(&key, b"first", Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get(&key).await.unwrap().as_deref(), Some(&b"first"[..]));
    cache.set(&key, &[0, 159, 146, 150], Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get(&key).await.unwrap().as_deref(), Some(&[0u8, 159, 146, 150][..]), "replaced, bytes kept as they are");
    assert_eq!(cache.get(&format!("{prefix}b")).await.unwrap(), None, "another key is untouched");
}

async fn entries_expire_after_their_ttl(cache: Arc<dyn Cache>, prefix: &str) {
    let short = format!("{prefix}short");
    let long = format!("{prefix}long");
    cache.set(&short, b"x", Duration::from_millis(300)).await.unwrap();
    cache.set(&long, b"y", Duration::from_secs(60)).await.unwrap();
    assert!(cache.get(&short).await.unwrap().is_some(), "alive before its TTL");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while cache.get(&short).await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "entry with a 300 ms TTL still there after 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cache.get(&long).await.unwrap().as_deref(), Some(&b"y"[..]), "a longer TTL is not cut short");
}

async fn deleted_entries_are_gone(cache: Arc<dyn Cache>, prefix: &str) {
    let key = format!("{prefix}d");
    cache.set(&key, b"x", Duration::from_secs(60)).await.unwrap();
    cache.delete(&key).await.unwrap();
    assert_eq!(cache.get(&key).await.unwrap(), None);
    cache.delete(&key).await.expect("deleting an absent key is not an error");
}

/// Glob characters in the prefix are literals, not patterns.
async fn prefix_deletion_spares_other_keys(cache: Arc<dyn Cache>, prefix: &str) {
    let ttl = Duration::from_secs(60);
    let keys = ["sub*[a]:1", "sub*[a]:2", "sub*[a]:3"].map(|k| format!("{prefix}{k}"));
    for key in &keys {
        cache.set(key, b"x", ttl).await.unwrap();
    }
    let spared = [format!("{prefix}subX[a]:1"), format!("{prefix}sub*a:1"), format!("{prefix}other")];
    for key in &spared {
        cache.set(key, b"y", ttl).await.unwrap();
    }
    cache.delete_prefix(&format!("{prefix}sub*[a]:")).await.unwrap();
    for key in &keys {
        assert_eq!(cache.get(key).await.unwrap(), None, "{key} deleted");
    }
    for key in &spared {
        assert!(cache.get(key).await.unwrap().is_some(), "{key} spared");
    }
}

async fn client_serves_json_and_invalidates(cache: Arc<dyn Cache>, prefix: &str) {
    let client = CacheClient::new(cache.clone(), prefix.to_string(), Duration::from_secs(1));
    client.write_through_json("k", &serde_json::json!({"enabled": true}), Duration::from_secs(60)).await;
    assert_eq!(cache.get(&format!("{prefix}k")).await.unwrap().as_deref(), Some(&br#"{"enabled":true}"#[..]), "stored under the prefix");
    assert_eq!(client.get_json::<serde_json::Value>("k").await, Some(serde_json::json!({"enabled": true})));
    client.invalidate("k").await;
    assert_eq!(client.get("k").await, None);
    let health = client.health().await;
    assert_eq!((health.state, health.last_error), ("up", None));
}

/// A reader that read the database before a change must not put its stale answer back.
async fn fill_after_an_invalidation_is_dropped(cache: Arc<dyn Cache>, prefix: &str) {
    let client = CacheClient::new(cache, prefix.to_string(), Duration::from_secs(1));
    let before_change = client.epoch();
    client.invalidate("list").await;
    client.fill("list", b"stale", Duration::from_secs(60), before_change).await;
    assert_eq!(client.get("list").await, None, "stale fill dropped");
    client.fill("list", b"fresh", Duration::from_secs(60), client.epoch()).await;
    assert_eq!(client.get("list").await.as_deref(), Some(&b"fresh"[..]));
}

/// What a stopped process may have left stale is dropped before anything is read.
async fn left_overs_of_an_earlier_process_are_not_served(cache: Arc<dyn Cache>, prefix: &str) {
    cache.set(&format!("{prefix}subscriptions:s1"), b"stale", Duration::from_secs(60)).await.unwrap();
    cache.set(&format!("{prefix}dist_metrics:RISK_REPORT"), b"snapshot", Duration::from_secs(60)).await.unwrap();
    let client = CacheClient::new(cache, prefix.to_string(), Duration::from_secs(1));
    client.drop_left_overs(repdist::cache::keys::KEPT_FRESH_BY_CHANGES).await;
    assert_eq!(client.get("subscriptions:s1").await, None);
    assert_eq!(client.get("dist_metrics:RISK_REPORT").await.as_deref(), Some(&b"snapshot"[..]), "snapshots are kept");
}

#[tokio::test]
async fn redis_entries_carry_their_ttl() {
    let url = redis_url().await;
    let prefix = unique_prefix();
    let cache = RedisCache::new(&url, TIMEOUT).unwrap();
    cache.set(&format!("{prefix}t"), b"x", Duration::from_secs(90)).await.unwrap();
    let mut direct = redis_connection(&url).await;
    let ttl: i64 = redis::cmd("PTTL").arg(format!("{prefix}t")).query_async(&mut direct).await.unwrap();
    assert!(ttl > 80_000 && ttl <= 90_000, "PTTL {ttl}");
}

/// Nothing listens on port 1: every call fails fast, the client reads it as a miss and reports down,
/// and an invalidation it could not deliver is not forgotten.
#[tokio::test]
async fn unreachable_redis_reads_as_misses_and_reports_down() {
    let cache = Arc::new(RedisCache::new("redis://:hunter2@127.0.0.1:1", TIMEOUT).unwrap());
    let started = tokio::time::Instant::now();
    assert!(cache.get("k").await.is_err());
    assert!(cache.set("k", b"v", Duration::from_secs(1)).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(30), "calls are bounded");
    let client = CacheClient::new(cache, unique_prefix(), Duration::from_secs(60));
    assert_eq!(client.get("k").await, None);
    client.invalidate("k").await;
    let health = client.health().await;
    assert_eq!((health.backend, health.state), ("redis", "down"));
    let error = health.last_error.expect("the failure is reported");
    assert!(!error.contains("hunter2"), "no password in {error}");
}

/// Invalidations lost while Redis was unreachable are replayed before Redis is read again.
#[tokio::test]
async fn invalidations_lost_in_an_outage_are_replayed() {
    let url = redis_url().await;
    let prefix = unique_prefix();
    let good: Arc<dyn Cache> = Arc::new(RedisCache::new(&url, TIMEOUT).unwrap());
    good.set(&format!("{prefix}subscriptions:s1"), b"old", Duration::from_secs(60)).await.unwrap();
    // Same prefix, a backend that fails while the change happens, then the real one again.
    let flaky = Arc::new(Flaky { real: good.clone(), failing: std::sync::atomic::AtomicBool::new(true) });
    let client = CacheClient::new(flaky.clone(), prefix.clone(), Duration::from_millis(10));
    client.invalidate("subscriptions:s1").await;
    assert_eq!(client.health().await.state, "down");
    flaky.failing.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(client.get("subscriptions:s1").await, None, "the old value is not served after recovery");
    assert_eq!(good.get(&format!("{prefix}subscriptions:s1")).await.unwrap(), None, "and was deleted in Redis");
    assert_eq!(client.health().await.state, "up");
}

/// A backend that fails while `failing` is set: an outage switched on and off by the test.
struct Flaky {
    real: Arc<dyn Cache>,
    failing: std::sync::atomic::AtomicBool,
}

impl Flaky {
    fn check(&self) -> Result<(), repdist::cache::CacheError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(repdist::cache::CacheError::Unavailable("switched off by the test".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Cache for Flaky {
    fn name(&self) -> &'static str {
        "redis"
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, repdist::cache::CacheError> {
        self.check()?;
        self.real.get(key).await
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), repdist::cache::CacheError> {
        self.check()?;
        self.real.set(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), repdist::cache::CacheError> {
        self.check()?;
        self.real.delete(key).await
    }
    async fn delete_prefix(&self, prefix: &str) -> Result<(), repdist::cache::CacheError> {
        self.check()?;
        self.real.delete_prefix(prefix).await
    }
    async fn health(&self) -> Result<(), repdist::cache::CacheError> {
        self.check()?;
        self.real.health().await
    }
}
