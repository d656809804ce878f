//! The shared cache: Redis through one multiplexed, self-reconnecting connection
//! (`ConnectionManager`). Every call is bounded by `cache.timeout`, so a Redis that hangs or is gone
//! costs a request at most that long (and [`super::CacheClient`] then skips it for a while).

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Cache, CacheError};

pub struct RedisCache {
    connection: ConnectionManager,
    timeout: Duration,
}

impl RedisCache {
    /// Prepares the connection without opening it: the first call connects, so a Redis that is down
    /// at start does not keep the service from starting. Must run inside a Tokio runtime.
    pub fn new(url: &str, timeout: Duration) -> Result<RedisCache, CacheError> {
        let client = redis::Client::open(url).map_err(|e| CacheError::Unavailable(describe(&e)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Reconnection runs in the background; a few quick tries, then the next call tries again.
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| CacheError::Unavailable(describe(&e)))?;
        Ok(RedisCache { connection, timeout })
    }

    async fn run<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, CacheError> {
        let mut connection = self.connection.clone();
        match tokio::time::timeout(self.timeout, command.query_async::<T>(&mut connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(CacheError::Unavailable(describe(&e))),
            Err(_) => Err(CacheError::Timeout(self.timeout)),
        }
    }
}

/// The error's kind and detail; the client's errors never carry the URL, so no password either.
fn describe(error: &redis::RedisError) -> String {
    error.to_string()
}

/// `prefix` as a literal in a Redis glob pattern.
fn glob_escape(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[async_trait]
impl Cache for RedisCache {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut command = redis::cmd("GET");
        command.arg(key);
        self.run(command).await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut command = redis::cmd("SET");
        command.arg(key).arg(value).arg("PX").arg(millis);
        self.run::<()>(command).await
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        let mut command = redis::cmd("DEL");
        command.arg(key);
        self.run::<i64>(command).await.map(|_| ())
    }

    /// SCAN (a page at a time, each page bounded by the timeout) and DEL; never KEYS, which blocks Redis.
    async fn delete_prefix(&self, prefix: &str) -> Result<(), CacheError> {
        let pattern = format!("{}*", glob_escape(prefix));
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
            let (next, keys): (u64, Vec<Vec<u8>>) = self.run(scan).await?;
            if !keys.is_empty() {
                let mut delete = redis::cmd("DEL");
                delete.arg(keys);
                self.run::<i64>(delete).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    async fn health(&self) -> Result<(), CacheError> {
        self.run::<String>(redis::cmd("PING")).await.map(|_| ())
    }
}
