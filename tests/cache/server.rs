//! The service end to end with each cache: a real server on port 0, a fresh data directory, and for
//! Redis a direct connection to see what the service stored.

use std::time::Duration;

use repdist::config::Config;
use repdist::server::Server;
use serde_json::{json, Value};

use super::{redis_connection, redis_url, unique_prefix};

struct TestServer {
    server: Server,
    base: String,
    http: reqwest::Client,
    _data_dir: tempfile::TempDir,
}

impl TestServer {
    async fn start(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.path().to_path_buf(),
            allow_private_webhooks: true,
            ..Config::default()
        };
        config.storage.fsync = false;
        adjust(&mut config);
        let server = repdist::server::start(config).await.expect("server starts");
        let base = format!("http://{}", server.http_addr());
        let key = server.local_admin_key().await.expect("an admin key");
        let headers = repdist::auth::client_headers(&key).unwrap();
        let http = reqwest::Client::builder().default_headers(headers).timeout(Duration::from_secs(20)).build().unwrap();
        TestServer { server, base, http, _data_dir: data_dir }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn list(&self, subscriber: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/reporting/subscriptions/{subscriber}")).await;
        assert_eq!(status, 200, "list: {body}");
        body
    }

    async fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap()
    }
}

fn subscription(id: &str, subscriber: &str, report_types: &[&str]) -> Value {
    json!({
        "subscription_id": id,
        "subscriber_id": subscriber,
        "report_types": report_types,
        "delivery_preferences": {
            "channels": ["API_WEBHOOK"],
            "notification_settings": {"webhook": {"url": "http://127.0.0.1:9/hook", "secret": "whsec_c2VjcmV0LW5vdC1pbi1jYWNoZQ=="}}
        }
    })
}

fn counter(metrics: &str, name: &str) -> f64 {
    metrics.lines().find_map(|line| line.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0.0)
}

async fn redis_get(connection: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query_async(connection).await.unwrap()
}

#[tokio::test]
async fn subscriptions_are_served_from_redis_and_invalidated_on_change() {
    let url = redis_url().await;
    let prefix = unique_prefix();
    let mut direct = redis_connection(&url).await;
    let key = format!("{prefix}subscriptions:client_001");
    // Left by an earlier process that stopped before invalidating it: never served.
    let _: () = redis::cmd("SET").arg(&key).arg(r#"[{"left":"over"}]"#).arg("PX").arg(60_000).query_async(&mut direct).await.unwrap();
    let (redis_url_for_server, prefix_for_server) = (url.clone(), prefix.clone());
    let api = TestServer::start(move |c| {
        c.cache.redis_url = Some(redis_url_for_server);
        c.cache.key_prefix = prefix_for_server;
    })
    .await;
    assert_eq!(redis_get(&mut direct, &key).await, None, "dropped at start");

    let (status, _) = api.send(reqwest::Method::POST, "/api/v1/reporting/subscribe", Some(&subscription("s1", "client_001", &["RISK_REPORT"]))).await;
    assert_eq!(status, 201);
    assert_eq!(redis_get(&mut direct, &key).await, None, "nothing cached before the first read");

    let first = api.list("client_001").await;
    let cached = redis_get(&mut direct, &key).await.expect("the first read fills the cache");
    assert_eq!(serde_json::from_slice::<Value>(&cached).unwrap(), first, "the cache holds exactly the answer");
    assert!(!String::from_utf8_lossy(&cached).contains("c2VjcmV0LW5vdC1pbi1jYWNoZQ"), "no secret in the cache");
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut direct).await.unwrap();
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "1 h TTL, PTTL {ttl}");

    // The second read comes from Redis: what Redis holds is what the client gets.
    let hits_before = counter(&api.metrics().await, "repdist_cache_hits_total");
    let marker = json!([{"served_from": "redis"}]);
    let _: () = redis::cmd("SET").arg(&key).arg(marker.to_string()).arg("PX").arg(60_000).query_async(&mut direct).await.unwrap();
    assert_eq!(api.list("client_001").await, marker);
    assert!(counter(&api.metrics().await, "repdist_cache_hits_total") > hits_before, "hit counted");

    // An update invalidates; the next read has the new version and fills the cache again.
    let (status, body) = api
        .send(reqwest::Method::PUT, "/api/v1/reporting/subscriptions/s1", Some(&subscription("s1", "client_001", &["PERFORMANCE_REPORT"])))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(redis_get(&mut direct, &key).await, None, "invalidated by the update");
    let after = api.list("client_001").await;
    assert_eq!(after[0]["report_types"], json!(["PERFORMANCE_REPORT"]));
    assert_eq!(serde_json::from_slice::<Value>(&redis_get(&mut direct, &key).await.unwrap()).unwrap(), after);

    // Cancel is a change too.
    let (status, _) = api.send(reqwest::Method::DELETE, "/api/v1/reporting/subscriptions/s1", None).await;
    assert_eq!(status, 200);
    assert_eq!(api.list("client_001").await[0]["status"], "cancelled");

    let (_, health) = api.get("/healthz").await;
    assert_eq!(health["cache"]["backend"], "redis");
    assert_eq!(health["cache"]["state"], "up");
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn channel_status_is_written_on_change_and_read_when_warm() {
    let url = redis_url().await;
    let prefix = unique_prefix();
    let (redis_url_for_server, prefix_for_server) = (url.clone(), prefix.clone());
    let api = TestServer::start(move |c| {
        c.cache.redis_url = Some(redis_url_for_server);
        c.cache.key_prefix = prefix_for_server;
    })
    .await;
    let mut direct = redis_connection(&url).await;
    let key = format!("{prefix}channel_status:smtp-main");
    let channel = json!({"channel_id": "smtp-main", "channel_type": "EMAIL", "channel_config": {"host": "smtp.example.com", "username": "mailer", "password": "pw-not-in-cache"}});
    let (status, created) = api.send(reqwest::Method::POST, "/api/v1/reporting/channels", Some(&channel)).await;
    assert_eq!(status, 201, "{created}");

    let stored: Value = serde_json::from_slice(&redis_get(&mut direct, &key).await.expect("written on create")).unwrap();
    assert_eq!(stored["enabled"], true);
    assert!(stored["status_changed_at"].is_string());
    assert_eq!(stored["channel_config"]["password"], "********");
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut direct).await.unwrap();
    assert!(ttl > 250_000 && ttl <= 300_000, "5 min TTL, PTTL {ttl}");

    let (status, _) = api.send(reqwest::Method::POST, "/api/v1/reporting/channels/smtp-main/disable", None).await;
    assert_eq!(status, 200);
    let stored: Value = serde_json::from_slice(&redis_get(&mut direct, &key).await.unwrap()).unwrap();
    assert_eq!(stored["enabled"], false, "written on disable");

    let (status, read) = api.get("/api/v1/reporting/channels/smtp-main").await;
    assert_eq!(status, 200);
    assert_eq!(read["enabled"], false);
    assert!(read.get("status_changed_at").is_none(), "GET answers the channel as before");
    assert_eq!(read["channel_config"]["password"], "********");

    // Served from the cache when warm: what Redis holds is what the client gets.
    let mut edited = stored.clone();
    edited["channel_config"]["host"] = json!("from-redis.example.com");
    let _: () = redis::cmd("SET").arg(&key).arg(edited.to_string()).arg("PX").arg(60_000).query_async(&mut direct).await.unwrap();
    let (_, read) = api.get("/api/v1/reporting/channels/smtp-main").await;
    assert_eq!(read["channel_config"]["host"], "from-redis.example.com");
    api.server.shutdown().await.unwrap();
}

/// Nothing listens on port 1: the service starts, answers everything from the database, and says
/// the cache is down.
#[tokio::test]
async fn every_request_succeeds_with_redis_down() {
    let api = TestServer::start(|c| {
        c.cache.redis_url = Some("redis://127.0.0.1:1".to_string());
        c.cache.key_prefix = unique_prefix();
    })
    .await;
    let (status, _) = api.send(reqwest::Method::POST, "/api/v1/reporting/subscribe", Some(&subscription("s1", "client_down", &["RISK_REPORT"]))).await;
    assert_eq!(status, 201);
    assert_eq!(api.list("client_down").await[0]["report_types"], json!(["RISK_REPORT"]));
    assert_eq!(api.list("client_down").await[0]["report_types"], json!(["RISK_REPORT"]));
    let (status, _) = api
        .send(reqwest::Method::PUT, "/api/v1/reporting/subscriptions/s1", Some(&subscription("s1", "client_down", &["ALERT_REPORT"])))
        .await;
    assert_eq!(status, 200);
    assert_eq!(api.list("client_down").await[0]["report_types"], json!(["ALERT_REPORT"]));
    let channel = json!({"channel_id": "c1", "channel_type": "EMAIL", "channel_config": {"host": "smtp.example.com"}});
    assert_eq!(api.send(reqwest::Method::POST, "/api/v1/reporting/channels", Some(&channel)).await.0, 201);
    assert_eq!(api.send(reqwest::Method::POST, "/api/v1/reporting/channels/c1/disable", None).await.0, 200);
    let (status, read) = api.get("/api/v1/reporting/channels/c1").await;
    assert_eq!((status, &read["enabled"]), (200, &json!(false)));
    assert_eq!(api.get("/api/v1/reporting/stats").await.0, 200);

    let (status, health) = api.get("/healthz").await;
    assert_eq!(status, 200, "a down cache does not make the service unhealthy: {health}");
    assert_eq!(health["cache"]["backend"], "redis");
    assert_eq!(health["cache"]["state"], "down");
    assert!(health["cache"]["last_error"].is_string(), "{health}");
    let metrics = api.metrics().await;
    assert!(metrics.contains("repdist_cache_errors_total"), "errors counted");
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn in_process_cache_is_the_default_and_is_invalidated_on_change() {
    let api = TestServer::start(|_| {}).await;
    let (status, _) = api.send(reqwest::Method::POST, "/api/v1/reporting/subscribe", Some(&subscription("s1", "client_mem", &["RISK_REPORT"]))).await;
    assert_eq!(status, 201);
    let first = api.list("client_mem").await;
    assert_eq!(api.list("client_mem").await, first);
    let (status, _) = api
        .send(reqwest::Method::PUT, "/api/v1/reporting/subscriptions/s1", Some(&subscription("s1", "client_mem", &["COMPLIANCE_REPORT"])))
        .await;
    assert_eq!(status, 200);
    assert_eq!(api.list("client_mem").await[0]["report_types"], json!(["COMPLIANCE_REPORT"]), "no stale read after an update");
    let (_, health) = api.get("/healthz").await;
    assert_eq!(health["cache"], json!({"backend": "memory", "state": "up", "last_error": null}));
    api.server.shutdown().await.unwrap();
}

/// `GET /stats` leaves each report type's totals and windows under `dist_metrics:{report_type}`.
#[tokio::test]
async fn stats_are_published_per_report_type() {
    let url = redis_url().await;
    let prefix = unique_prefix();
    let (redis_url_for_server, prefix_for_server) = (url.clone(), prefix.clone());
    let api = TestServer::start(move |c| {
        c.cache.redis_url = Some(redis_url_for_server);
        c.cache.key_prefix = prefix_for_server;
    })
    .await;
    let dashboard = json!({
        "subscription_id": "dash-1",
        "subscriber_id": "pm_001",
        "report_types": ["PERFORMANCE_REPORT"],
        "delivery_preferences": {"channels": ["DASHBOARD_NOTIFICATION"], "notification_settings": {"dashboard": {}}}
    });
    assert_eq!(api.send(reqwest::Method::POST, "/api/v1/reporting/subscribe", Some(&dashboard)).await.0, 201);
    let report = json!({
        "event_id": "evt-1",
        "timestamp": "2025-06-21T10:00:00.000Z",
        "data_type": "PERFORMANCE_REPORT",
        "report_data": {
            "report_id": "rep-1", "report_type": "PERFORMANCE_REPORT", "portfolio_id": "portfolio_001",
            "report_period": "2025-06", "file_path": "/reports/p.pdf", "file_size_bytes": 1
        },
        "routing": {"topic": "t", "routing_key": "k", "target_subscribers": [], "delivery_channels": [], "priority": 1},
        "metadata": {"source_service": "s", "delivery_priority": 1, "encryption_required": false, "retention_days": 90}
    });
    let (status, ack) = api.send(reqwest::Method::POST, "/api/v1/reporting/deliver", Some(&report)).await;
    assert_eq!(status, 202, "{ack}");

    let mut direct = redis_connection(&url).await;
    let key = format!("{prefix}dist_metrics:PERFORMANCE_REPORT");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let published = loop {
        let (_, windows) = api.get("/api/v1/reporting/stats").await;
        if let Some(bytes) = redis_get(&mut direct, &key).await {
            let published: Value = serde_json::from_slice(&bytes).unwrap();
            if published["deliveries_successful"] == 1 {
                break (published, windows);
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no dist_metrics entry with the delivery after 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (published, windows) = published;
    assert_eq!(published["report_type"], "PERFORMANCE_REPORT");
    assert_eq!(published["deliveries_attempted"], 1);
    assert_eq!(published["windows"][0]["channel"], "DASHBOARD_NOTIFICATION");
    assert!(windows.as_array().unwrap().iter().any(|w| w["report_type"] == "PERFORMANCE_REPORT" && w["deliveries_successful"] == 1));
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut direct).await.unwrap();
    assert!(ttl > 800_000 && ttl <= 900_000, "15 min TTL, PTTL {ttl}");
    api.server.shutdown().await.unwrap();
}

/// A webhook receiver that accepts connections and never answers: the first attempt to it stays
/// under way, and with one attempt allowed per endpoint the rest wait in the dispatcher's queue.
async fn hanging_receiver() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn waiting_deliveries_are_published_by_priority_without_their_destinations() {
    let url = redis_url().await;
    let prefix = unique_prefix();
    let (redis_url_for_server, prefix_for_server) = (url.clone(), prefix.clone());
    let (receiver, _receiver) = hanging_receiver().await;
    let api = TestServer::start(move |c| {
        c.cache.redis_url = Some(redis_url_for_server);
        c.cache.key_prefix = prefix_for_server;
        c.delivery.endpoints.max_concurrency = 1;
        c.delivery.attempt_timeout = Duration::from_secs(60);
    })
    .await;
    let webhook = json!({
        "subscription_id": "hook-1",
        "subscriber_id": "client_q",
        "report_types": ["PERFORMANCE_REPORT"],
        "delivery_preferences": {
            "channels": ["API_WEBHOOK"],
            "notification_settings": {"webhook": {"url": format!("http://{receiver}/hook"), "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}
        }
    });
    let (status, body) = api.send(reqwest::Method::POST, "/api/v1/reporting/subscribe", Some(&webhook)).await;
    assert_eq!(status, 201, "{body}");
    // The first report's attempt hangs; the next four wait: two at priority 2, two at priority 9.
    for (i, priority) in [(0, 2), (1, 2), (2, 9), (3, 2), (4, 9)] {
        let report = json!({
            "event_id": format!("evt-q{i}"),
            "timestamp": "2025-06-21T10:00:00.000Z",
            "data_type": "PERFORMANCE_REPORT",
            "report_data": {
                "report_id": format!("rep-q{i}"), "report_type": "PERFORMANCE_REPORT", "portfolio_id": "portfolio_001",
                "report_period": "2025-06", "file_path": "/reports/p.pdf", "file_size_bytes": 1
            },
            "routing": {"topic": "t", "routing_key": "k", "target_subscribers": [], "delivery_channels": [], "priority": 1},
            "metadata": {"source_service": "s", "delivery_priority": priority, "encryption_required": false, "retention_days": 90}
        });
        let (status, ack) = api.send(reqwest::Method::POST, "/api/v1/reporting/deliver", Some(&report)).await;
        assert_eq!(status, 202, "{ack}");
    }

    let mut direct = redis_connection(&url).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let (low, high) = loop {
        let low = redis_get(&mut direct, &format!("{prefix}delivery_queue:2")).await;
        let high = redis_get(&mut direct, &format!("{prefix}delivery_queue:9")).await;
        if let (Some(low), Some(high)) = (low, high) {
            let (low, high): (Value, Value) = (serde_json::from_slice(&low).unwrap(), serde_json::from_slice(&high).unwrap());
            if low["waiting"].as_u64().unwrap() + high["waiting"].as_u64().unwrap() == 4 {
                break (low, high);
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no delivery_queue entries with the four waiting deliveries after 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reports = |entry: &Value| -> Vec<String> {
        entry["tasks"].as_array().unwrap().iter().map(|t| t["report_id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!((low["priority"].as_i64(), low["waiting"].as_u64()), (Some(2), Some(2)), "{low}");
    assert_eq!(reports(&low), ["rep-q1", "rep-q3"], "longest waiting first: {low}");
    assert_eq!((high["priority"].as_i64(), high["waiting"].as_u64()), (Some(9), Some(2)), "{high}");
    assert_eq!(reports(&high), ["rep-q2", "rep-q4"]);
    assert_eq!(high["tasks"][0]["channel"], "API_WEBHOOK");
    assert_eq!(high["tasks"][0]["subscriber_id"], "client_q");
    let raw = serde_json::to_string(&high).unwrap() + &serde_json::to_string(&low).unwrap();
    assert!(!raw.contains("whsec_") && !raw.contains("/hook"), "no destination in the cache: {raw}");
    let ttl: i64 = redis::cmd("PTTL").arg(format!("{prefix}delivery_queue:9")).query_async(&mut direct).await.unwrap();
    assert!(ttl > 1_700_000 && ttl <= 1_800_000, "30 min TTL, PTTL {ttl}");
    api.server.abort();
}
