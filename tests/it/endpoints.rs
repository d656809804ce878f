//! Per-endpoint limits end to end, against a real HTTP receiver on loopback that counts the
//! requests it is answering at once, can hold them, and can fail: the concurrency limit, the rate
//! limit, the circuit breaker (open, delayed not dropped, closed by a probe) and priority order
//! behind a saturated endpoint.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::helpers::{eventually, report, webhook_subscription, TestServer};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Default)]
struct Seen {
    current: usize,
    max: usize,
    /// Report ids in the order their requests arrived, and when.
    arrived: Vec<String>,
    arrived_at: Vec<std::time::Instant>,
    /// Report ids whose request was answered 2xx.
    delivered: Vec<String>,
}

/// A webhook receiver on loopback. Requests wait while it is held; it answers `status`.
#[derive(Clone)]
struct Peer {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Seen>>,
    open: Arc<watch::Sender<bool>>,
    status: Arc<AtomicU16>,
}

impl Peer {
    async fn start() -> Peer {
        let peer = Peer {
            addr: "127.0.0.1:0".parse().unwrap(),
            seen: Arc::default(),
            open: Arc::new(watch::Sender::new(true)),
            status: Arc::new(AtomicU16::new(204)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = Peer { addr: listener.local_addr().unwrap(), ..peer };
        let app = Router::new().route("/hooks/{name}", post(answer)).with_state(peer.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        peer
    }

    fn url(&self, name: &str) -> String {
        format!("http://{}/hooks/{name}", self.addr)
    }

    fn hold(&self) {
        self.open.send_replace(false);
    }

    fn release(&self) {
        self.open.send_replace(true);
    }

    fn answer_with(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn seen<T>(&self, read: impl FnOnce(&Seen) -> T) -> T {
        read(&self.seen.lock().unwrap())
    }
}

async fn answer(State(peer): State<Peer>, body: Bytes) -> StatusCode {
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let report_id = body["data"]["report"]["report_data"]["report_id"].as_str().unwrap_or_default().to_string();
    {
        let mut seen = peer.seen.lock().unwrap();
        seen.current += 1;
        seen.max = seen.max.max(seen.current);
        seen.arrived.push(report_id.clone());
        seen.arrived_at.push(std::time::Instant::now());
    }
    let mut open = peer.open.subscribe();
    let _ = open.wait_for(|open| *open).await;
    let status = StatusCode::from_u16(peer.status.load(Ordering::SeqCst)).unwrap();
    let mut seen = peer.seen.lock().unwrap();
    seen.current -= 1;
    if status.is_success() {
        seen.delivered.push(report_id);
    }
    status
}

/// `GET /endpoints`' entry for the peer's webhook endpoint, once there is one.
async fn endpoint(server: &TestServer, peer: &Peer) -> Option<Value> {
    let (status, endpoints) = server.get("/api/v1/reporting/endpoints").await;
    assert_eq!(status, 200, "{endpoints}");
    let authority = peer.addr.to_string();
    endpoints.as_array()?.iter().find(|e| e["channel"] == "API_WEBHOOK" && e["endpoint"] == authority.as_str()).cloned()
}

async fn wait_for_endpoint(server: &TestServer, peer: &Peer, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let found = eventually(Duration::from_secs(15), || async { endpoint(server, peer).await.filter(|e| check(e)) }).await;
    match found {
        Some(found) => found,
        None => panic!("the endpoint never showed {what}; it is {:?}", endpoint(server, peer).await),
    }
}

fn report_with_priority(report_id: &str, priority: i32) -> Value {
    let mut body = report(&format!("evt-{report_id}"), report_id);
    body["metadata"]["delivery_priority"] = json!(priority);
    body
}

#[tokio::test]
async fn an_endpoint_never_gets_more_than_its_concurrency_and_every_delivery_arrives() {
    let server = TestServer::start_with(|config| {
        config.delivery.endpoints.max_concurrency = 3;
        config.delivery.attempt_timeout = Duration::from_secs(10);
    })
    .await;
    let peer = Peer::start().await;
    peer.hold();
    // Four subscriptions on one server (different paths): one endpoint.
    for i in 0..4 {
        server.subscribe(webhook_subscription(&format!("sub-{i}"), &format!("client-{i}"), &peer.url(&format!("h{i}")), SECRET)).await;
    }
    let mut ids = Vec::new();
    for r in 0..5 {
        ids.extend(server.deliver(report(&format!("evt-{r}"), &format!("rep-{r}"))).await);
    }
    assert_eq!(ids.len(), 20);

    let held = eventually(Duration::from_secs(10), || async { (peer.seen(|s| s.current) == 3).then_some(()) }).await;
    assert!(held.is_some(), "three requests should reach the held receiver, saw {}", peer.seen(|s| s.current));
    let status = wait_for_endpoint(&server, &peer, "17 waiting", |e| e["waiting"] == 17).await;
    assert_eq!((status["in_flight"].as_u64(), status["max_concurrency"].as_u64()), (Some(3), Some(3)), "{status}");
    assert_eq!(status["state"], "CLOSED");
    // A dispatcher that ignored the limit would have sent more of the 17 by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(peer.seen(|s| s.current), 3);

    peer.release();
    for id in &ids {
        server.wait_for_state(id, "DELIVERED").await;
    }
    let (max, delivered) = peer.seen(|s| (s.max, s.delivered.len()));
    assert_eq!(max, 3, "never more than max_concurrency at once");
    assert_eq!(delivered, 20);

    let (_, doc) = server.get("/api/v1/openapi.json").await;
    assert!(doc["paths"].get("/api/v1/reporting/endpoints").is_some(), "openapi lacks /endpoints");
    assert!(doc["components"]["schemas"].get("EndpointStatus").is_some());
}

#[tokio::test]
async fn a_rate_limited_endpoint_gets_its_requests_spread_out_and_every_one_arrives() {
    let server = TestServer::start_with(|config| {
        config.delivery.endpoints.rate_per_second = 5.0;
        config.delivery.endpoints.burst = 1;
    })
    .await;
    let peer = Peer::start().await;
    server.subscribe(webhook_subscription("sub-rate", "client-rate", &peer.url("rate"), SECRET)).await;
    let mut ids = Vec::new();
    for r in 0..6 {
        ids.extend(server.deliver(report(&format!("evt-rate-{r}"), &format!("rep-rate-{r}"))).await);
    }
    let limited = wait_for_endpoint(&server, &peer, "deliveries waiting for the rate", |e| e["waiting"].as_u64() > Some(0)).await;
    assert_eq!(limited["state"], "CLOSED", "held back by the rate, not by a breaker: {limited}");
    for id in &ids {
        server.wait_for_state(id, "DELIVERED").await;
    }
    let arrivals = peer.seen(|s| s.arrived_at.clone());
    assert_eq!(arrivals.len(), 6, "each delivery once: none dropped, none retried");
    // 5 per second with a burst of 1: the sixth request at least a second after the first. Without
    // the limit all six arrive within a few milliseconds. (A lower bound, so a slow machine cannot
    // fail it; 300 ms of slack for the first request's connection setup.)
    let spread = arrivals[5] - arrivals[0];
    assert!(spread >= Duration::from_millis(700), "six requests within {spread:?}");
}

#[tokio::test]
async fn an_open_breaker_delays_deliveries_until_a_probe_succeeds() {
    let server = TestServer::start_with(|config| {
        config.delivery.endpoints.failure_threshold = 3;
        config.delivery.endpoints.open_for = Duration::from_secs(4);
        // Enough attempts that only the breaker, not the retry budget, decides when they go.
        config.retry.max_attempts = 30;
    })
    .await;
    let peer = Peer::start().await;
    peer.answer_with(500);
    let (status, channel) = server
        .post(
            "/api/v1/reporting/channels",
            &json!({"channel_id": "hooks", "channel_type": "API_WEBHOOK", "channel_config": {"url": peer.url("any")}}),
        )
        .await;
    assert_eq!(status, 201, "{channel}");
    server.subscribe(webhook_subscription("sub-b", "client-b", &peer.url("b"), SECRET)).await;
    let mut ids = Vec::new();
    for r in 0..4 {
        ids.extend(server.deliver(report(&format!("evt-{r}"), &format!("rep-{r}"))).await);
    }

    let open = wait_for_endpoint(&server, &peer, "an open breaker", |e| e["state"] == "OPEN").await;
    assert!(open["consecutive_failures"].as_u64().unwrap() >= 3, "{open}");
    assert!(open["last_failure"].as_str().unwrap().contains("500"), "{open}");
    assert_eq!(open["channel_ids"], json!(["hooks"]));
    let cached = eventually(Duration::from_secs(5), || async {
        let (_, channel) = server.get("/api/v1/reporting/channels/hooks").await;
        (channel["breaker"]["state"] == "OPEN").then_some(channel)
    })
    .await
    .expect("channel_status:hooks shows the open breaker");
    assert_eq!(cached["breaker"]["endpoint"], peer.addr.to_string());

    // Every delivery waits in the endpoint's queue; none is attempted while the breaker is open, and
    // none is dropped or dead-lettered.
    let waiting = wait_for_endpoint(&server, &peer, "all four waiting", |e| e["waiting"] == 4).await;
    let hits = peer.seen(|s| s.arrived.len());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = endpoint(&server, &peer).await.unwrap();
    if later["state"] == "OPEN" && later["open_until"] == waiting["open_until"] {
        assert_eq!(peer.seen(|s| s.arrived.len()), hits, "an attempt was made while the breaker was open");
    }
    for id in &ids {
        let status = server.status_of(id).await;
        assert_ne!(status["status"], "DEAD_LETTERED", "{status}");
        assert_ne!(status["status"], "DELIVERED", "{status}");
    }

    // The receiver recovers: the half-open probe succeeds, the breaker closes, everything arrives.
    peer.answer_with(204);
    for id in &ids {
        eventually(Duration::from_secs(20), || async { (server.status_of(id).await["status"] == "DELIVERED").then_some(()) })
            .await
            .unwrap_or_else(|| panic!("{id} was never delivered"));
    }
    let closed = wait_for_endpoint(&server, &peer, "a closed breaker", |e| e["state"] == "CLOSED").await;
    assert_eq!(closed["consecutive_failures"], 0);
    let mut delivered = peer.seen(|s| s.delivered.clone());
    delivered.sort();
    assert_eq!(delivered, ["rep-0", "rep-1", "rep-2", "rep-3"], "each delivery arrives once it succeeds");
    let cached = eventually(Duration::from_secs(5), || async {
        let (_, channel) = server.get("/api/v1/reporting/channels/hooks").await;
        (channel["breaker"]["state"] == "CLOSED").then_some(())
    })
    .await;
    assert!(cached.is_some(), "channel_status:hooks is rewritten when the breaker closes");
    let gauge = format!("repdist_endpoint_breaker_state{{channel=\"API_WEBHOOK\",endpoint=\"{}\"}} 0", peer.addr);
    let exported = eventually(Duration::from_secs(10), || async {
        let (_, text) = server.get("/metrics").await;
        text.as_str().is_some_and(|t| t.contains(&gauge)).then_some(())
    })
    .await;
    assert!(exported.is_some(), "/metrics exports the breaker state");
}

#[tokio::test]
async fn deliveries_waiting_for_a_saturated_endpoint_go_most_urgent_first() {
    let server = TestServer::start_with(|config| {
        config.delivery.endpoints.max_concurrency = 1;
        config.delivery.attempt_timeout = Duration::from_secs(10);
    })
    .await;
    let peer = Peer::start().await;
    peer.hold();
    server.subscribe(webhook_subscription("sub-p", "client-p", &peer.url("p"), SECRET)).await;
    let mut ids = server.deliver(report_with_priority("first", 1)).await;
    let held = eventually(Duration::from_secs(10), || async { (peer.seen(|s| s.current) == 1).then_some(()) }).await;
    assert!(held.is_some(), "the first delivery should be held at the receiver");
    for (report_id, priority) in [("a", 1), ("b", 5), ("c", 3), ("d", 5), ("e", 9), ("f", 1)] {
        ids.extend(server.deliver(report_with_priority(report_id, priority)).await);
    }
    wait_for_endpoint(&server, &peer, "six waiting", |e| e["waiting"] == 6).await;
    peer.release();
    for id in &ids {
        server.wait_for_state(id, "DELIVERED").await;
    }
    let arrived = peer.seen(|s| s.arrived.clone());
    assert_eq!(arrived, ["first", "e", "b", "d", "c", "a", "f"], "highest delivery_priority first, first come first within one");
}
