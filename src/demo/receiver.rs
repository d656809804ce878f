//! The demo's webhook receiver: a real HTTP server on loopback that verifies every Standard Webhooks
//! signature, counts each delivery id once (a second arrival is a duplicate), measures latency from
//! the report's publication, and plays the endpoint's role: healthy, flaky (transient failures on
//! the first attempt, then success) or broken (always 410, so dead-lettered).
//!
//! Flaky endpoints listen on a port of their own, as if on another server: a `429` with
//! `Retry-After` pauses every delivery to its `host:port` (see `[delivery.endpoints]`), which is how
//! a real rate-limiting server is treated, and would otherwise hold back the healthy endpoints too.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hdrhistogram::Histogram;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Healthy,
    /// 503 on odd endpoints, 429 with `Retry-After: 1` on even ones, for the first attempt only.
    Flaky,
    /// 410 Gone, always: a permanent failure.
    Broken,
}

#[derive(Default)]
struct Tally {
    endpoints: HashMap<String, (String, Behaviour)>,
    published: HashMap<String, Instant>,
    first_seen: HashSet<String>,
    duplicates: u64,
    bad_signatures: u64,
    latency_us: Option<Histogram<u64>>,
    last_receipt: Option<Instant>,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    /// Where the flaky endpoints are served (same handler, another port).
    pub flaky_addr: SocketAddr,
    tally: Arc<Mutex<Tally>>,
}

/// What the receiver saw, once the run is over.
pub struct Observed {
    pub delivered: HashSet<String>,
    pub duplicates: u64,
    pub bad_signatures: u64,
    pub latency_us: Histogram<u64>,
    pub last_receipt: Option<Instant>,
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Receiver> {
        let tally = Arc::new(Mutex::new(Tally { latency_us: Some(Histogram::new(3)?), ..Tally::default() }));
        let app = Router::new().route("/hooks/{endpoint}", post(hook)).with_state(tally.clone());
        let mut addrs = Vec::new();
        for _ in 0..2 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            addrs.push(listener.local_addr()?);
            let app = app.clone();
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        Ok(Receiver { addr: addrs[0], flaky_addr: addrs[1], tally })
    }

    pub fn add_endpoint(&self, name: &str, secret: &str, behaviour: Behaviour) -> String {
        if let Ok(mut tally) = self.tally.lock() {
            tally.endpoints.insert(name.to_string(), (secret.to_string(), behaviour));
        }
        let addr = if behaviour == Behaviour::Flaky { self.flaky_addr } else { self.addr };
        format!("http://{addr}/hooks/{name}")
    }

    /// Records when an event was sent, the start of its deliveries' latency.
    pub fn published(&self, event_id: &str, at: Instant) {
        if let Ok(mut tally) = self.tally.lock() {
            tally.published.insert(event_id.to_string(), at);
        }
    }

    pub fn observed(&self) -> Observed {
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        Observed {
            delivered: std::mem::take(&mut tally.first_seen),
            duplicates: tally.duplicates,
            bad_signatures: tally.bad_signatures,
            latency_us: tally.latency_us.take().unwrap_or_else(|| Histogram::new(3).expect("3 significant figures is valid")),
            last_receipt: tally.last_receipt,
        }
    }
}

async fn hook(State(tally): State<Arc<Mutex<Tally>>>, Path(endpoint): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let now = Instant::now();
    let Ok(mut tally) = tally.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let Some((secret, behaviour)) = tally.endpoints.get(&endpoint).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if crate::demo::verify(&secret, &headers, &body).is_err() {
        tally.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let envelope: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let attempt = envelope.pointer("/data/attempt").and_then(|v| v.as_u64()).unwrap_or(1);
    match behaviour {
        Behaviour::Broken => return StatusCode::GONE.into_response(),
        Behaviour::Flaky if attempt == 1 => {
            return if endpoint.len() % 2 == 0 {
                (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response()
            } else {
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            };
        }
        _ => {}
    }
    let delivery_id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    if !tally.first_seen.insert(delivery_id) {
        tally.duplicates += 1;
        return StatusCode::NO_CONTENT.into_response();
    }
    let event_id = envelope.pointer("/data/report/event_id").and_then(|v| v.as_str()).unwrap_or_default();
    // Latency of first attempts only: retried deliveries wait out their backoff by design.
    if let (Some(sent), 1) = (tally.published.get(event_id).copied(), attempt) {
        let micros = now.duration_since(sent).as_micros() as u64;
        if let Some(histogram) = tally.latency_us.as_mut() {
            let _ = histogram.record(micros.max(1));
        }
    }
    tally.last_receipt = Some(now);
    StatusCode::NO_CONTENT.into_response()
}
