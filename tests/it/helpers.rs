//! Starting a real server on port 0 with a fresh data directory, and a small JSON client.

use std::future::Future;
use std::time::Duration;

use repdist::config::Config;
use repdist::server::Server;
use serde_json::{json, Value};

pub struct TestServer {
    pub server: Server,
    pub base: String,
    /// Sends the admin key with every request ([`TestServer::client_as`] for other roles).
    pub http: reqwest::Client,
    /// The admin key `http` sends.
    pub key: String,
    /// Kept so the directory lives as long as the server.
    _data_dir: Option<tempfile::TempDir>,
}

/// Fast retries so that retry and dead-letter tests take a second, not minutes.
pub fn test_config(data_dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.data_dir = data_dir.to_path_buf();
    config.allow_private_webhooks = true;
    config.retry.initial_backoff = Duration::from_millis(50);
    config.retry.max_backoff = Duration::from_millis(200);
    config.retry.max_attempts = 4;
    config.delivery.attempt_timeout = Duration::from_secs(2);
    config.storage.fsync = false;
    config
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let data_dir = tempfile::tempdir().unwrap();
        let mut server = Self::start_in(data_dir.path(), adjust).await;
        server._data_dir = Some(data_dir);
        server
    }

    /// A server on an existing data directory (kept by the caller), e.g. to restart on it.
    pub async fn start_in(data_dir: &std::path::Path, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = test_config(data_dir);
        adjust(&mut config);
        let server = repdist::server::start(config).await.expect("server starts");
        let base = format!("http://{}", server.http_addr());
        let key = server.local_admin_key().await.expect("an admin key");
        TestServer { server, base, http: client_with(Some(&key)), key, _data_dir: None }
    }

    /// A new API key for `role` (`subscriber_id` for role subscriber).
    pub async fn key_for(&self, role: repdist::store::Role, subscriber_id: Option<&str>) -> String {
        self.server.create_key(role, subscriber_id.map(str::to_string)).await.expect("key created").key
    }

    /// An HTTP client that sends a new key of `role` (and subscriber).
    pub async fn client_as(&self, role: repdist::store::Role, subscriber_id: Option<&str>) -> reqwest::Client {
        client_with(Some(&self.key_for(role, subscriber_id).await))
    }

    /// `method path` with `client` (another role's, or [`client_with`]`(None)` for no credential).
    pub async fn send_with(&self, client: &reqwest::Client, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = client.request(method, format!("{}{}", self.base, path));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.send_with(&self.http, method, path, body).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// Creates a subscription and returns its id; panics unless 201.
    pub async fn subscribe(&self, body: Value) -> String {
        let (status, stored) = self.post("/api/v1/reporting/subscribe", &body).await;
        assert_eq!(status, 201, "subscribe: {stored}");
        stored["subscription_id"].as_str().unwrap().to_string()
    }

    /// Publishes a report; returns its delivery ids; panics unless 202.
    pub async fn deliver(&self, body: Value) -> Vec<String> {
        let (status, ack) = self.post("/api/v1/reporting/deliver", &body).await;
        assert_eq!(status, 202, "deliver: {ack}");
        ack["delivery_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
    }

    pub async fn status_of(&self, delivery_id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/reporting/delivery/{delivery_id}/status")).await;
        assert_eq!(status, 200, "status: {body}");
        body
    }

    /// Waits until the delivery reaches `state` (DELIVERED, DEAD_LETTERED...), or panics after 10 s.
    pub async fn wait_for_state(&self, delivery_id: &str, state: &str) -> Value {
        self.wait_for_state_within(delivery_id, state, Duration::from_secs(10)).await
    }

    pub async fn wait_for_state_within(&self, delivery_id: &str, state: &str, limit: Duration) -> Value {
        eventually(limit, || async {
            let status = self.status_of(delivery_id).await;
            (status["status"] == state).then_some(status)
        })
        .await
        .unwrap_or_else(|| panic!("delivery {delivery_id} never reached {state}"))
    }
}

/// An HTTP client that sends `Authorization: Bearer <key>` (none when `key` is `None`).
pub fn client_with(key: Option<&str>) -> reqwest::Client {
    let headers = key.map(|key| repdist::auth::client_headers(key).expect("a header value")).unwrap_or_default();
    reqwest::Client::builder().default_headers(headers).build().expect("a client")
}

/// Polls `check` every 20 ms until it yields, or gives up after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn webhook_subscription(id: &str, subscriber: &str, url: &str, secret: &str) -> Value {
    json!({
        "subscription_id": id,
        "subscriber_id": subscriber,
        "subscriber_type": "CLIENT",
        "subscription_type": "REAL_TIME",
        "report_types": ["PERFORMANCE_REPORT", "RISK_REPORT"],
        "delivery_preferences": {
            "channels": ["API_WEBHOOK"],
            "format_preferences": ["PDF"],
            "notification_settings": {"webhook": {"url": url, "secret": secret}}
        },
        "filters": {"portfolio_ids": ["portfolio_001"]}
    })
}

pub fn report(event_id: &str, report_id: &str) -> Value {
    json!({
        "event_id": event_id,
        "timestamp": "2025-06-21T10:00:00.000Z",
        "data_type": "PERFORMANCE_REPORT",
        "report_data": {
            "report_id": report_id,
            "report_type": "PERFORMANCE_REPORT",
            "portfolio_id": "portfolio_001",
            "report_period": "2025-06",
            "file_path": "/reports/portfolio_performance_202506.pdf",
            "file_size_bytes": 2048576
        },
        "routing": {
            "topic": "reporting/performance/delivered",
            "routing_key": "portfolio_001.performance.monthly",
            "target_subscribers": [],
            "delivery_channels": [],
            "priority": 1
        },
        "metadata": {
            "source_service": "report_generation_service",
            "delivery_priority": 1,
            "encryption_required": false,
            "retention_days": 90
        }
    })
}

/// A server whose EMAIL relay is the plain SMTP server at `relay` (none: EMAIL off), with time for
/// an attempt to reach it.
pub async fn server_with_relay(relay: Option<std::net::SocketAddr>) -> TestServer {
    TestServer::start_with(move |config| {
        config.delivery.attempt_timeout = Duration::from_secs(10);
        config.email = relay.map(|addr| sinks::email::EmailConfig {
            host: addr.ip().to_string(),
            port: Some(addr.port()),
            from: "Reports <reports@repdist.test>".to_string(),
            ..Default::default()
        });
    })
    .await
}
