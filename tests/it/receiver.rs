//! A real webhook receiver on loopback: records every request, verifies its Standard Webhooks
//! signature, and answers what the test programmed per endpoint (a sequence of statuses).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;

#[derive(Clone, Debug)]
pub struct Received {
    pub endpoint: String,
    pub delivery_id: String,
    pub body: serde_json::Value,
    /// The body as it arrived (an encrypted delivery's is age ciphertext, and `body` is null).
    #[allow(dead_code)]
    pub raw: Vec<u8>,
    #[allow(dead_code)]
    pub content_type: Option<String>,
    pub signature_ok: bool,
    /// What the receiver answered (a 2xx means the delivery was taken); read by tests/faults.
    #[allow(dead_code)]
    pub answered: u16,
}

#[derive(Default)]
struct Inner {
    secrets: HashMap<String, String>,
    /// Statuses to answer, in order; the last one repeats. Default 204.
    scripts: HashMap<String, Vec<(u16, Option<&'static str>)>>,
    hits: HashMap<String, usize>,
    received: Vec<Received>,
    delay: std::time::Duration,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().route("/hooks/{endpoint}", post(hook)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, inner }
    }

    /// A new endpoint with its own secret; returns (url, secret).
    pub fn endpoint(&self, name: &str) -> (String, String) {
        use base64::Engine as _;
        let key: [u8; 24] = rand::random();
        let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key));
        self.inner.lock().unwrap().secrets.insert(name.to_string(), secret.clone());
        (format!("http://{}/hooks/{name}", self.addr), secret)
    }

    /// Answers `statuses` in order to `endpoint`, the last one from then on.
    pub fn script(&self, endpoint: &str, statuses: Vec<(u16, Option<&'static str>)>) {
        self.inner.lock().unwrap().scripts.insert(endpoint.to_string(), statuses);
    }

    /// Every answer waits this long first, so that deliveries pile up in flight.
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.inner.lock().unwrap().delay = delay;
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    pub fn received_by(&self, endpoint: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.endpoint == endpoint).collect()
    }
}

async fn hook(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let delay = inner.lock().unwrap().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut inner = inner.lock().unwrap();
    let signature_ok = inner
        .secrets
        .get(&endpoint)
        .and_then(|secret| standardwebhooks::Webhook::new(secret).ok())
        .is_some_and(|webhook| webhook.verify(&body, &headers).is_ok());
    let delivery_id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    let raw = body.to_vec();
    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let hit = {
        let hits = inner.hits.entry(endpoint.clone()).or_default();
        *hits += 1;
        *hits - 1
    };
    let (status, retry_after) = match inner.scripts.get(&endpoint) {
        Some(script) if !script.is_empty() => script[hit.min(script.len() - 1)],
        _ => (204, None),
    };
    inner.received.push(Received { endpoint: endpoint.clone(), delivery_id, body, raw, content_type, signature_ok, answered: status });
    let mut response = StatusCode::from_u16(status).unwrap().into_response();
    if let Some(value) = retry_after {
        response.headers_mut().insert("retry-after", value.parse().unwrap());
    }
    response
}
