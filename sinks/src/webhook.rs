//! API_WEBHOOK: an HTTP POST of the payload, signed per the Standard Webhooks spec
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::http_classify::{classify, transport_error};
use crate::{DeliveryRequest, Destination, Receipt, Sink, SinkError};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Idle connections kept per host (keep-alive), so a busy endpoint is not re-dialled per delivery.
    pub pool_max_idle_per_host: usize,
    pub connect_timeout: Duration,
    pub user_agent: String,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            pool_max_idle_per_host: 64,
            connect_timeout: Duration::from_secs(5),
            user_agent: concat!("repdist/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the webhook HTTP client: {0}")]
pub struct WebhookSetupError(#[from] reqwest::Error);

pub struct WebhookSink {
    client: reqwest::Client,
}

impl WebhookSink {
    pub fn new(config: WebhookConfig) -> Result<Self, WebhookSetupError> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(config.user_agent)
            .build()?;
        Ok(WebhookSink { client })
    }
}

#[async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &'static str {
        "API_WEBHOOK"
    }

    async fn deliver(&self, request: &DeliveryRequest) -> Result<Receipt, SinkError> {
        let Destination::Webhook { url, secret } = &request.destination else {
            return Err(SinkError::Permanent { reason: "not a webhook destination".into() });
        };
        let signer = standardwebhooks::Webhook::new(secret)
            .map_err(|_| SinkError::Permanent { reason: "the webhook secret is not whsec_<base64>".into() })?;
        let timestamp = chrono::Utc::now().timestamp();
        let signature = signer
            .sign(&request.idempotency_key, timestamp, &request.payload)
            .map_err(|e| SinkError::Permanent { reason: format!("cannot sign: {e}") })?;
        let started = Instant::now();
        let response = self
            .client
            .post(url)
            .timeout(request.timeout)
            .header("content-type", "application/json")
            .header("webhook-id", &request.idempotency_key)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(request.payload.clone())
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_default();
        classify(status, &headers, &body)?;
        Ok(Receipt { elapsed: started.elapsed(), detail: format!("HTTP {}", status.as_u16()) })
    }
}

/// Verifies a Standard Webhooks signature, as a receiver would (used by the demo's receiver).
pub fn verify_signature(secret: &str, headers: &http::HeaderMap, body: &[u8]) -> Result<(), String> {
    let verifier = standardwebhooks::Webhook::new(secret).map_err(|e| format!("bad secret: {e}"))?;
    verifier.verify(body, headers).map_err(|e| e.to_string())
}
