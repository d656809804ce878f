//! The read cache: one suite of cases run against each backend (in-process and Redis), then the
//! service end to end with each, including a Redis that is not there.
//!
//! Redis-backed tests use `REPDIST_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`) and fail, not
//! skip, when it does not answer: start it with `eval "$(scripts/services up)"`. Every test uses its
//! own key prefix, so tests share one Redis database in parallel.

mod backends;
mod server;

use std::time::Duration;

/// The Redis the tests use; panics with how to start it if it does not answer.
pub async fn redis_url() -> String {
    let url = std::env::var("REPDIST_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let ping = async {
        let mut connection = redis::Client::open(url.as_str())?.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut connection).await
    };
    match tokio::time::timeout(Duration::from_secs(3), ping).await {
        Ok(Ok(_)) => url,
        Ok(Err(e)) => panic!("Redis at {url} does not answer ({e}); start it with: eval \"$(scripts/services up)\""),
        Err(_) => panic!("Redis at {url} did not answer within 3s; start it with: eval \"$(scripts/services up)\""),
    }
}

/// A direct connection to the test Redis, to see what the service stored.
pub async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("repdist-test:{}:", uuid::Uuid::new_v4().simple())
}
