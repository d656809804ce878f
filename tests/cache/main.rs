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

/// `REPDIST_REDIS_URL` switches Redis on (the short name for `cache.redis_url`); a bad URL is refused
/// naming the key. The only test in this binary that touches the service's environment variables.
#[test]
fn redis_is_switched_on_by_its_short_environment_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("repdist.toml");
    std::fs::write(&file, "[cache]\nkey_prefix = \"blue:\"\ntimeout = \"100ms\"\n").unwrap();
    let config = repdist::config::Config::load(Some(&file)).unwrap();
    assert_eq!(config.cache.redis_url, None, "unset: the in-process cache");
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("repdist.example.toml");
    let defaults = repdist::config::Config::load(Some(&example)).expect("the example config loads");
    assert_eq!(format!("{:?}", defaults.cache), format!("{:?}", repdist::cache::CacheConfig::default()), "the example shows the defaults");

    std::env::set_var("REPDIST_REDIS_URL", "redis://:hunter2@127.0.0.1:6379/3");
    let loaded = repdist::config::Config::load(Some(&file));
    std::env::set_var("REPDIST_REDIS_URL", "http://127.0.0.1:6379");
    let refused = repdist::config::Config::load(Some(&file));
    std::env::remove_var("REPDIST_REDIS_URL");

    let config = loaded.unwrap();
    assert_eq!(config.cache.redis_url.as_deref(), Some("redis://:hunter2@127.0.0.1:6379/3"));
    assert_eq!((config.cache.key_prefix.as_str(), config.cache.timeout), ("blue:", Duration::from_millis(100)));
    assert!(!format!("{config:?}").contains("hunter2"), "the password is not in the debug output");
    let error = refused.unwrap_err().to_string();
    assert!(error.contains("cache.redis_url"), "{error}");
}
