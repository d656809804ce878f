//! The demo's chat and push peers: a Slack incoming webhook, a Teams workflow webhook and an ntfy
//! topic, on one loopback HTTP server. Each records the delivery id it received.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

use super::arrivals::{uuid_after, Arrivals};

pub struct HttpPeers {
    pub addr: SocketAddr,
}

impl HttpPeers {
    pub async fn start(arrivals: Arrivals) -> anyhow::Result<HttpPeers> {
        let app = Router::new()
            .route("/slack/{name}", post(slack))
            .route("/teams/{name}", post(teams))
            .route("/ntfy/{topic}", post(ntfy))
            .with_state(arrivals);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(HttpPeers { addr })
    }

    pub fn slack_url(&self, name: &str) -> String {
        format!("http://{}/slack/{name}", self.addr)
    }

    pub fn teams_url(&self, name: &str) -> String {
        format!("http://{}/teams/{name}", self.addr)
    }

    pub fn ntfy_url(&self, topic: &str) -> String {
        format!("http://{}/ntfy/{topic}", self.addr)
    }
}

/// Slack answers `ok` to a message it accepted.
async fn slack(State(arrivals): State<Arrivals>, body: Bytes) -> (StatusCode, &'static str) {
    let text = String::from_utf8_lossy(&body);
    match uuid_after(&text, "Delivery ") {
        Some(id) => {
            arrivals.record("SLACK_INTEGRATION", &id);
            (StatusCode::OK, "ok")
        }
        None => (StatusCode::BAD_REQUEST, "invalid_payload"),
    }
}

/// A Teams workflow answers 202 once it has the card; the delivery id is one of the card's facts.
async fn teams(State(arrivals): State<Arrivals>, body: Bytes) -> StatusCode {
    let card: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(card) => card,
        Err(_) => return StatusCode::BAD_REQUEST,
    };
    let facts = card.pointer("/attachments/0/content/body").and_then(|b| b.as_array()).cloned().unwrap_or_default();
    let id = facts
        .iter()
        .filter_map(|element| element.get("facts").and_then(|f| f.as_array()))
        .flatten()
        .find(|fact| fact["title"] == "Delivery")
        .and_then(|fact| fact["value"].as_str().map(str::to_string));
    match id {
        Some(id) => {
            arrivals.record("SLACK_INTEGRATION", &id);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn ntfy(State(arrivals): State<Arrivals>, headers: HeaderMap) -> StatusCode {
    match headers.get("x-delivery-id").and_then(|v| v.to_str().ok()) {
        Some(id) => {
            arrivals.record("MOBILE_PUSH", id);
            StatusCode::OK
        }
        None => StatusCode::BAD_REQUEST,
    }
}
