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
    /// The live update streams (WebSocket `/stream`, gRPC `StreamReports`).
    pub stream: StreamConfig,
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
    /// The analytics store (DuckDB under `data_dir`), its analyses and the operators' SQL endpoint.
    pub analytics: AnalyticsConfig,
    /// Credentials: API keys (always) and, optionally, JWT bearer tokens.
    pub auth: AuthConfig,
    /// The background purge that enforces each report's `metadata.retention_days`.
    pub retention: RetentionConfig,
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
            stream: StreamConfig::default(),
            stats_window: Duration::from_secs(60),
            allow_private_webhooks: false,
            kafka: crate::bus::kafka::KafkaConfig::default(),
            cache: crate::cache::CacheConfig::default(),
            email: None,
            sftp: sinks::SftpConfig::default(),
            chat: sinks::ChatConfig::default(),
            push: sinks::PushConfig::default(),
            analytics: AnalyticsConfig::default(),
            auth: AuthConfig::default(),
            retention: RetentionConfig::default(),
        }
    }
}

/// Who may call the APIs. Every REST, gRPC and WebSocket call carries `Authorization: Bearer
/// <credential>`: an API key (`repdist keys create`), or a JWT when `[auth.jwt]` is configured.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// When no API key exists at start, create an admin key, print it once and write it to
    /// `DATA_DIR/admin.key` (mode 0600): the embedded default stays usable without a setup step.
    pub bootstrap_admin_key: bool,
    /// JWT bearer tokens; off unless this table is present. Not serialized: it may hold a secret.
    #[serde(skip_serializing)]
    pub jwt: Option<JwtConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { bootstrap_admin_key: true, jwt: None }
    }
}

/// How JWTs are verified and what their claims mean. Exactly one key source: `jwks_file`,
/// `public_key_file` (PEM: RSA, EC or Ed25519) or `secret` (HMAC, at least 32 bytes).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    pub jwks_file: Option<PathBuf>,
    pub public_key_file: Option<PathBuf>,
    pub secret: Option<String>,
    /// Accepted `alg` values, e.g. `["RS256"]`. Default: RS256, ES256 and EdDSA with a public key or
    /// JWKS, HS256 with a secret.
    pub algorithms: Vec<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// The claim holding the role: `admin`, `publisher` or `subscriber`.
    pub role_claim: String,
    /// The claim holding the subscriber id (required when the role is `subscriber`).
    pub subscriber_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            jwks_file: None,
            public_key_file: None,
            secret: None,
            algorithms: Vec::new(),
            issuer: None,
            audience: None,
            role_claim: "role".to_string(),
            subscriber_claim: "subscriber_id".to_string(),
            leeway: Duration::from_secs(30),
        }
    }
}

/// `[retention]`: how the purge of reports past their `metadata.retention_days` runs (see
/// `store::retention` for what is purged and what never is).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// How often the purge runs; its first run is one interval after start. `0s` turns it off.
    #[serde(with = "humantime_serde")]
    pub purge_interval: Duration,
    /// Reports purged per transaction, so that a purge never holds the store (and the group
    /// commits queued behind it on SQLite) for long; a run repeats batches until none is left.
    pub batch: u32,
    /// Personalised report files (`{data_dir}/content/`) are removed, at each purge, this long
    /// after their report's last one was produced. The cache is derived: a delivery that needs a
    /// removed file produces it again. `0s` removes them at every purge.
    #[serde(with = "humantime_serde")]
    pub content_cache_ttl: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { purge_interval: Duration::from_secs(3600), batch: 500, content_cache_ttl: Duration::from_secs(24 * 3600) }
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
    /// Limits and circuit breaker per endpoint (`[delivery.endpoints]`).
    pub endpoints: EndpointsConfig,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            attempt_timeout: Duration::from_secs(10),
            max_in_flight: 512,
            max_outstanding: 200_000,
            webhook_pool_per_host: 64,
            endpoints: EndpointsConfig::default(),
        }
    }
}

/// What one endpoint (a channel and the `host:port` it delivers to: a webhook server, the SMTP
/// relay, an SFTP server, Slack, an ntfy server) is sent at most, and when its circuit breaker opens.
/// A delivery that an endpoint cannot take now waits in that endpoint's queue, most urgent first; it
/// is never dropped, and it holds none of `max_in_flight` while it waits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointsConfig {
    /// Attempts under way at once to one endpoint. The default matches `webhook_pool_per_host`, so
    /// every attempt to a host can reuse a pooled connection.
    pub max_concurrency: usize,
    /// Attempts started per second to one endpoint, on average; 0: no rate limit.
    pub rate_per_second: f64,
    /// Attempts that may start at once after a quiet spell, within the rate; 0: the rate rounded up.
    pub burst: u32,
    /// Consecutive transient failures (timeouts, refused connections, 5xx) that open an endpoint's
    /// breaker; 0: the breaker never opens. A `Retry-After` answer pauses the endpoint instead.
    pub failure_threshold: u32,
    /// How long an open breaker keeps deliveries waiting before one probe is let through.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// The longest pause a peer's `Retry-After` imposes on its endpoint.
    #[serde(with = "humantime_serde")]
    pub max_pause: Duration,
    /// Per-channel overrides of the keys above, by channel name, e.g.
    /// `[delivery.endpoints.channels.SLACK_INTEGRATION] rate_per_second = 1`.
    pub channels: std::collections::BTreeMap<String, EndpointOverride>,
}

impl Default for EndpointsConfig {
    fn default() -> Self {
        EndpointsConfig {
            max_concurrency: 64,
            rate_per_second: 0.0,
            burst: 0,
            failure_threshold: 10,
            open_for: Duration::from_secs(30),
            max_pause: Duration::from_secs(300),
            channels: Default::default(),
        }
    }
}

/// One channel's exceptions to `[delivery.endpoints]`; a key left out keeps the general value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointOverride {
    pub max_concurrency: Option<usize>,
    pub rate_per_second: Option<f64>,
    pub burst: Option<u32>,
    pub failure_threshold: Option<u32>,
    #[serde(with = "humantime_serde::option")]
    pub open_for: Option<Duration>,
}

/// The limits in force for one channel's endpoints, overrides applied.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointLimits {
    pub max_concurrency: usize,
    pub rate_per_second: f64,
    pub burst: u32,
    pub failure_threshold: u32,
    pub open_for: Duration,
}

impl EndpointsConfig {
    /// The limits of `channel`'s endpoints. Override keys are matched without regard to case, since
    /// environment variables arrive lower-cased (`REPDIST_DELIVERY__ENDPOINTS__CHANNELS__EMAIL__BURST`).
    pub fn limits(&self, channel: dataflows::delivery::DeliveryChannel) -> EndpointLimits {
        let exception = self.channels.iter().find(|(name, _)| name.eq_ignore_ascii_case(channel.as_str())).map(|(_, o)| o);
        let exception = exception.cloned().unwrap_or_default();
        EndpointLimits {
            max_concurrency: exception.max_concurrency.unwrap_or(self.max_concurrency),
            rate_per_second: exception.rate_per_second.unwrap_or(self.rate_per_second),
            burst: exception.burst.unwrap_or(self.burst),
            failure_threshold: exception.failure_threshold.unwrap_or(self.failure_threshold),
            open_for: exception.open_for.unwrap_or(self.open_for),
        }
    }

    /// Checks the section; the error is `(key, message)`.
    pub fn validate(&self) -> Result<(), (String, &'static str)> {
        let key = |name: &str| format!("delivery.endpoints.{name}");
        if self.max_pause.is_zero() {
            return Err((key("max_pause"), "must be positive"));
        }
        for name in self.channels.keys() {
            if !dataflows::delivery::DeliveryChannel::ALL.iter().any(|c| name.eq_ignore_ascii_case(c.as_str())) {
                return Err((key(&format!("channels.{name}")), "is not a delivery channel (API_WEBHOOK, EMAIL, SFTP, ...)"));
            }
        }
        for channel in dataflows::delivery::DeliveryChannel::ALL {
            let limits = self.limits(channel);
            let prefix = |name: &str| match self.channels.keys().find(|n| n.eq_ignore_ascii_case(channel.as_str())) {
                Some(n) => key(&format!("channels.{n}.{name}")),
                None => key(name),
            };
            if limits.max_concurrency == 0 {
                return Err((prefix("max_concurrency"), "must be at least 1"));
            }
            if !(limits.rate_per_second.is_finite() && (0.0..=1e6).contains(&limits.rate_per_second)) {
                return Err((prefix("rate_per_second"), "must be between 0 (no limit) and 1000000"));
            }
            if limits.open_for.is_zero() {
                return Err((prefix("open_for"), "must be positive"));
            }
        }
        Ok(())
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

/// The update streams: how much history a reconnecting client can resume from, how far a client
/// may fall behind before it is closed, and how a dead connection is noticed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Most recent messages kept (all subscriptions together) for clients resuming with `last_seq`.
    /// Memory is about this many times a message's size (a report message carries its report).
    pub replay_buffer: usize,
    /// Messages queued for one client before it counts as too slow and is closed (code 4008).
    pub client_queue: usize,
    /// How often the server pings an idle connection.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A client that sends nothing (not even a pong) for this long is closed (code 4009).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            replay_buffer: 16_384,
            client_queue: 1024,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Delivery outcomes into `analytics.duckdb` under the data directory, named analyses over them at
/// `/analytics/{name}`, and (off unless asked for) operators' read-only SQL at `/analytics/query`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Feed outcomes to the analytics store and serve the analyses.
    pub enabled: bool,
    /// Serve `POST /analytics/query` (also `repdist serve --enable-sql-analytics`). Off by default:
    /// anyone who can reach the API could run queries until access control exists.
    pub sql_enabled: bool,
    /// Longest an analysis or a query may run before it is interrupted.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Most rows a query answers (the rest are cut and the answer says so).
    pub max_rows: usize,
    /// Commits' worth of rows the writer may be behind; past that, rows are dropped from analytics
    /// (counted and recorded as a gap), never waited for.
    pub queue_capacity: usize,
    /// Rows the writer gathers before appending them as one batch...
    pub batch_rows: usize,
    /// ...or this long after its last append, whichever comes first.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// DuckDB worker threads.
    pub threads: u32,
    /// DuckDB's memory limit, e.g. "512MB".
    pub memory_limit: String,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            enabled: true,
            sql_enabled: false,
            query_timeout: Duration::from_secs(10),
            max_rows: 10_000,
            queue_capacity: 4096,
            batch_rows: 8192,
            flush_interval: Duration::from_secs(1),
            threads: 2,
            memory_limit: "512MB".to_string(),
        }
    }
}

impl AnalyticsConfig {
    pub fn store_options(&self, data_dir: &Path) -> crate::analytics::StoreOptions {
        crate::analytics::StoreOptions {
            dir: data_dir.to_path_buf(),
            threads: self.threads,
            memory_limit: self.memory_limit.clone(),
            queue_capacity: self.queue_capacity,
            batching: crate::analytics::Batching { max_rows: self.batch_rows, interval: self.flush_interval },
        }
    }

    fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.query_timeout.is_zero() {
            return Err(("analytics.query_timeout", "must be positive"));
        }
        if !(1..=1_000_000).contains(&self.max_rows) {
            return Err(("analytics.max_rows", "must be between 1 and 1000000"));
        }
        if self.queue_capacity == 0 || self.batch_rows == 0 {
            return Err(("analytics", "queue_capacity and batch_rows must be at least 1"));
        }
        if self.flush_interval.is_zero() {
            return Err(("analytics.flush_interval", "must be positive"));
        }
        if !(1..=64).contains(&self.threads) {
            return Err(("analytics.threads", "must be between 1 and 64"));
        }
        let limit = self.memory_limit.trim();
        let digits = limit.trim_end_matches(|c: char| c.is_ascii_alphabetic()).trim();
        if digits.is_empty() || digits.parse::<f64>().is_err() {
            return Err(("analytics.memory_limit", "must be a size such as \"512MB\" or \"2GB\""));
        }
        Ok(())
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
        if let Err((key, message)) = self.delivery.endpoints.validate() {
            return invalid(&key, message);
        }
        if self.ingest.queue_capacity == 0 || self.ingest.max_batch == 0 {
            return invalid("ingest", "queue_capacity and max_batch must be at least 1");
        }
        if self.stream.client_queue == 0 {
            return invalid("stream.client_queue", "must be at least 1");
        }
        if self.stream.ping_interval.is_zero() || self.stream.idle_timeout <= self.stream.ping_interval {
            return invalid("stream.idle_timeout", "must be longer than stream.ping_interval (which must be positive)");
        }
        if self.retention.batch == 0 {
            return invalid("retention.batch", "must be at least 1");
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
        if let Err((key, message)) = self.analytics.validate() {
            return invalid(key, message);
        }
        if let Some(jwt) = &self.auth.jwt {
            if let Err(e) = crate::auth::jwt::JwtVerifier::new(jwt) {
                let message = e.to_string();
                let (key, message) = message.split_once(": ").unwrap_or(("auth.jwt", &message));
                return invalid(key, message);
            }
        }
        if self.storage.pool_size == 0 {
            return invalid("storage.pool_size", "must be at least 1");
        }
        // The channels' own checks name the key as `section.key: message`.
        let channel_errors = [
            self.email.as_ref().and_then(|email| email.validate().err()).map(|e| e.to_string()),
            self.sftp.validate().err().map(|e| e.to_string()),
            self.chat.validate("chat").err().map(|e| e.to_string()),
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
    #[allow(clippy::result_large_err)] // figment's Jail closures return its (large) error type
    fn endpoint_limits_have_per_channel_overrides_from_file_and_environment() {
        use dataflows::delivery::DeliveryChannel;
        let config = load(
            "[delivery.endpoints]\nmax_concurrency = 8\nopen_for = \"5s\"\n\
             [delivery.endpoints.channels.SLACK_INTEGRATION]\nrate_per_second = 1\nburst = 2\n",
        )
        .expect("valid");
        let slack = config.delivery.endpoints.limits(DeliveryChannel::SlackIntegration);
        assert_eq!((slack.max_concurrency, slack.rate_per_second, slack.burst), (8, 1.0, 2));
        assert_eq!(slack.open_for, Duration::from_secs(5));
        let webhook = config.delivery.endpoints.limits(DeliveryChannel::ApiWebhook);
        assert_eq!((webhook.rate_per_second, webhook.failure_threshold), (0.0, 10));

        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("REPDIST_DELIVERY__ENDPOINTS__CHANNELS__EMAIL__MAX_CONCURRENCY", "2");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.delivery.endpoints.limits(DeliveryChannel::Email).max_concurrency, 2);
            Ok(())
        });

        let error = load("[delivery.endpoints.channels.FAX]\nburst = 1\n").expect_err("no such channel");
        assert!(error.to_string().contains("`delivery.endpoints.channels.FAX`"), "{error}");
        let error = load("[delivery.endpoints.channels.SFTP]\nmax_concurrency = 0\n").expect_err("zero");
        assert!(error.to_string().contains("`delivery.endpoints.channels.SFTP.max_concurrency`"), "{error}");
        let error = load("[delivery.endpoints]\nrate_per_second = -1\n").expect_err("negative");
        assert!(error.to_string().contains("`delivery.endpoints.rate_per_second`"), "{error}");
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
