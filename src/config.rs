//! Typed, layered configuration: defaults, then `repdist.toml` (or `--config FILE`), then `REPDIST_*`
//! environment variables (`__` separates nested keys: `REPDIST_RETRY__MAX_ATTEMPTS=5`; `REPDIST_DATABASE_URL`
//! is `storage.database_url`), then
//! command-line flags. Every key is checked at load; an error names it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dataflows::retry::RetryPolicy;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the REST and WebSocket APIs listen.
    pub http_addr: SocketAddr,
    /// Where the gRPC API (ReportingStream, DistributionQuery, health, reflection) listens.
    pub grpc_addr: SocketAddr,
    /// Embedded SQLite database and other local state live here.
    pub data_dir: PathBuf,
    /// Timely worker threads running the dataflow.
    pub workers: usize,
    pub retry: RetryConfig,
    pub delivery: DeliveryConfig,
    pub ingest: IngestConfig,
    pub storage: StorageConfig,
    /// Length of a `distribution_stats` window.
    #[serde(with = "humantime_serde")]
    pub stats_window: Duration,
    /// Accept webhook URLs on loopback, private and link-local addresses (for local receivers and
    /// tests). Off by default: such URLs are refused when a subscription is created or updated.
    pub allow_private_webhooks: bool,
    /// Kafka in and out; off unless `kafka.brokers` (env `REPDIST_KAFKA_BROKERS`) is set.
    pub kafka: crate::bus::kafka::KafkaConfig,
    /// The read cache: in-process unless `cache.redis_url` (env `REPDIST_REDIS_URL`) is set.
    pub cache: crate::cache::CacheConfig,
    /// EMAIL: the SMTP relay every message goes through. EMAIL is enabled only when `email.host` is
    /// set (env `REPDIST_EMAIL__HOST`); a table without it is an error rather than a silent relay on
    /// `localhost:25`. Not serialized: it may hold the relay password.
    #[serde(skip_serializing)]
    pub email: Option<sinks::email::EmailConfig>,
    /// SFTP: dialling, keepalive and sessions per server. Always enabled; destinations and
    /// credentials come with each subscription.
    pub sftp: sinks::SftpConfig,
    /// SLACK_INTEGRATION (Slack and Teams webhooks): the shared HTTP client. Always enabled.
    pub chat: sinks::ChatConfig,
    /// MOBILE_PUSH: the FCM service account and APNs key (either may be left out, which disables that
    /// provider; ntfy needs nothing). Always enabled. Not serialized: it holds private keys.
    #[serde(skip_serializing)]
    pub push: sinks::PushConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("./data"),
            workers: 1,
            retry: RetryConfig::default(),
            delivery: DeliveryConfig::default(),
            ingest: IngestConfig::default(),
            storage: StorageConfig::default(),
            stats_window: Duration::from_secs(60),
            allow_private_webhooks: false,
            kafka: crate::bus::kafka::KafkaConfig::default(),
            cache: crate::cache::CacheConfig::default(),
            email: None,
            sftp: sinks::SftpConfig::default(),
            chat: sinks::ChatConfig::default(),
            push: sinks::PushConfig::default(),
        }
    }
}

/// The retry schedule for transient failures (see [`RetryPolicy`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    pub multiplier: u32,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    pub max_attempts: u32,
    pub jitter_percent: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let policy = RetryPolicy::default();
        RetryConfig {
            initial_backoff: Duration::from_micros(policy.initial_backoff),
            multiplier: policy.multiplier,
            max_backoff: Duration::from_micros(policy.max_backoff),
            max_attempts: policy.max_attempts,
            jitter_percent: policy.jitter_percent,
        }
    }
}

impl RetryConfig {
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial_backoff: self.initial_backoff.as_micros() as u64,
            multiplier: self.multiplier,
            max_backoff: self.max_backoff.as_micros() as u64,
            max_attempts: self.max_attempts,
            jitter_percent: self.jitter_percent,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Deadline of one attempt, connection included.
    #[serde(with = "humantime_serde")]
    pub attempt_timeout: Duration,
    /// Attempts under way at once, all channels together.
    pub max_in_flight: usize,
    /// Deliveries not yet delivered nor dead-lettered. Past this, new reports wait (backpressure).
    pub max_outstanding: usize,
    /// Idle HTTP connections kept per webhook host.
    pub webhook_pool_per_host: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            attempt_timeout: Duration::from_secs(10),
            max_in_flight: 512,
            max_outstanding: 200_000,
            webhook_pool_per_host: 64,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Requests waiting for the sequencer. When full, callers wait up to `queue_timeout`.
    pub queue_capacity: usize,
    /// How long a request may wait for room before it is answered 503 with `Retry-After`.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Most requests committed in one group commit.
    pub max_batch: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            queue_capacity: 4096,
            queue_timeout: Duration::from_secs(5),
            max_body_bytes: 1 << 20,
            max_batch: 2048,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `true`: every commit is fsynced (durable across power loss). `false`: WAL `synchronous=NORMAL`,
    /// durable across process crashes only, faster. (Embedded SQLite only.)
    pub fsync: bool,
    /// `postgres://user:password@host:5432/db`: keep state in PostgreSQL. Unset: the embedded SQLite
    /// database under `data_dir`. Also read from `REPDIST_DATABASE_URL`. Never logged with its password.
    pub database_url: Option<String>,
    /// Most PostgreSQL connections held open (the group commit takes one, reads share the rest).
    pub pool_size: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { fsync: true, database_url: None, pool_size: 10 }
    }
}

/// By hand so that the database password never reaches a log through `{:?}`.
impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("fsync", &self.fsync)
            .field("database_url", &self.database_url.as_deref().map(crate::store::redacted_url))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// A configuration that cannot be used, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl Config {
    /// Loads defaults, then `file` (or `./repdist.toml` if present), then `REPDIST_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None => figment = figment.merge(Toml::file("repdist.toml")),
        }
        let figment = figment.merge(env());
        let config: Config = figment.extract().map_err(Box::new)?;
        // `[email]` without a host would be a relay on localhost:25 nobody asked for.
        if config.email.is_some() && figment.find_value("email.host").is_err() {
            return Err(ConfigError::Invalid {
                key: "email.host".to_string(),
                message: "is required to enable the EMAIL channel (leave out [email] to disable it)".to_string(),
            });
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err(message) = self.kafka.validate() {
            let (key, message) = message.split_once(": ").unwrap_or(("kafka", &message));
            return Err(ConfigError::Invalid { key: key.to_string(), message: message.to_string() });
        }
        let invalid = |key: &str, message: &str| {
            Err(ConfigError::Invalid { key: key.to_string(), message: message.to_string() })
        };
        if self.workers == 0 || self.workers > 64 {
            return invalid("workers", "must be between 1 and 64");
        }
        if let Err(e) = self.retry.policy().validate() {
            return invalid(&format!("retry.{}", e.field), &e.message);
        }
        if self.delivery.max_in_flight == 0 {
            return invalid("delivery.max_in_flight", "must be at least 1");
        }
        if self.delivery.max_outstanding < self.delivery.max_in_flight {
            return invalid("delivery.max_outstanding", "must be at least delivery.max_in_flight");
        }
        if self.delivery.attempt_timeout.is_zero() {
            return invalid("delivery.attempt_timeout", "must be positive");
        }
        if self.ingest.queue_capacity == 0 || self.ingest.max_batch == 0 {
            return invalid("ingest", "queue_capacity and max_batch must be at least 1");
        }
        if self.stats_window < Duration::from_secs(1) {
            return invalid("stats_window", "must be at least 1s");
        }
        if let Some(url) = &self.storage.database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) || url::Url::parse(url).is_err() {
                return invalid("storage.database_url", "must be a postgres:// URL (leave it unset for the embedded SQLite database)");
            }
        }
        if let Err((key, message)) = self.cache.validate() {
            return invalid(key, message);
        }
        if self.storage.pool_size == 0 {
            return invalid("storage.pool_size", "must be at least 1");
        }
        // The channels' own checks name the key as `section.key: message`.
        let channel_errors = [
            self.email.as_ref().and_then(|email| email.validate().err()).map(|e| e.to_string()),
            self.sftp.validate().err().map(|e| e.to_string()),
            self.chat.validate().err().map(|e| e.to_string()),
            self.push.validate().err().map(|e| e.to_string()),
        ];
        if let Some(message) = channel_errors.into_iter().flatten().next() {
            let (key, message) = message.split_once(": ").unwrap_or(("channels", &message));
            return invalid(key, message);
        }
        Ok(())
    }
}

/// Environment variables that switch a part on, with the config key each sets: the names operators
/// expect (`REPDIST_DATABASE_URL`, `REPDIST_KAFKA_BROKERS`) rather than the nested form
/// (`REPDIST_KAFKA__BROKERS`, also accepted).
const SHORT_NAMES: &[(&str, &str)] = &[("database_url", "storage.database_url"), ("kafka_brokers", "kafka.brokers"), ("redis_url", "cache.redis_url")];

/// `REPDIST_*` variables, `__` for nesting, the short names above mapped to their keys. The
/// `REPDIST_TEST_*` variables belong to the test suite, not the service.
fn env() -> Env {
    Env::prefixed("REPDIST_")
        .filter(|key| !key.as_str().to_ascii_lowercase().starts_with("test_"))
        .map(|key| match SHORT_NAMES.iter().find(|(short, _)| key == *short) {
            Some((_, nested)) => (*nested).into(),
            None => key.into(),
        })
        .split("__")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_env_names_switch_parts_on_and_test_variables_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("REPDIST_KAFKA_BROKERS", "127.0.0.1:9092");
            jail.set_env("REPDIST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/repdist");
            jail.set_env("REPDIST_RETRY__MAX_ATTEMPTS", "3");
            jail.set_env("REPDIST_TEST_DATABASE_URL", "postgres://elsewhere");
            jail.set_env("REPDIST_TEST_ANYTHING", "1");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.kafka.brokers.as_deref(), Some("127.0.0.1:9092"));
            assert!(config.kafka.is_enabled());
            assert_eq!(config.storage.database_url.as_deref(), Some("postgres://postgres@127.0.0.1:5432/repdist"));
            assert_eq!(config.retry.max_attempts, 3);
            Ok(())
        });
    }

    #[test]
    fn an_unknown_variable_is_an_error_naming_it() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("REPDIST_KAFKA__BROKRES", "x");
            let error = Config::load(None).expect_err("unknown key").to_string();
            assert!(error.contains("brokres"), "{error}");
            Ok(())
        });
    }

    /// Loads `toml` inside a figment Jail: Jails run one at a time and restore the environment, so
    /// a test that sets `REPDIST_*` variables never leaks them into this one.
    fn load(toml: &str) -> Result<Config, ConfigError> {
        let mut loaded = None;
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("repdist.toml", toml)?;
            loaded = Some(Config::load(Some(Path::new("repdist.toml"))));
            Ok(())
        });
        loaded.expect("the jail ran")
    }

    #[test]
    fn the_example_loads_and_leaves_email_off() {
        let example = include_str!("../repdist.example.toml");
        let config = load(example).expect("the example is valid");
        assert!(config.email.is_none());
        assert_eq!(config.sftp, sinks::SftpConfig::default());
        assert_eq!(config.chat, sinks::ChatConfig::default());
    }

    #[test]
    fn email_is_enabled_by_a_relay_host_only() {
        let error = load("[email]\nfrom = \"a@example.com\"\n").expect_err("no host");
        assert!(error.to_string().contains("`email.host`"), "{error}");
        let config = load("[email]\nhost = \"smtp.example.com\"\ntls = \"starttls\"\n").expect("valid");
        assert_eq!(config.email.expect("enabled").effective_port(), 587);
        let error = load("[email]\nhost = \"smtp.example.com\"\nfrom = \"nobody\"\n").expect_err("bad from");
        assert!(error.to_string().contains("`email.from`"), "{error}");
        let error = load("[sftp]\nchunk_size = 0\n").expect_err("bad chunk");
        assert!(error.to_string().contains("`sftp.chunk_size`"), "{error}");
        let error = load("[chat]\nconect_timeout = \"1s\"\n").expect_err("typo");
        assert!(error.to_string().contains("conect_timeout"), "{error}");
    }
}
