//! API_WEBHOOK: an HTTP POST of the payload to the subscriber's URL, signed per the Standard Webhooks
//! spec (`webhook-id`, `webhook-timestamp`, `webhook-signature`), classified by
//! [`crate::http_classify`].
//!
//! - [`crate::http_client`]: the shared client's pool and dial settings;
//! - `signing`: secrets, signatures, and [`verify_signature`] for receivers;
//! - this file: the delivery.
//!
//! Tests against a real receiver live in `sinks/tests/it/webhook.rs`.

mod signing;

use std::time::Instant;

use async_trait::async_trait;
use reqwest::header::CONTENT_TYPE;
use standardwebhooks::{HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP};

pub use crate::http_client::{HttpClientConfig as WebhookConfig, HttpClientError as WebhookSetupError};
pub use signing::{verify_signature, InvalidSecret};

use crate::egress;
use crate::http_classify::{classify, read_body_excerpt, transport_error};
use crate::{DeliveryRequest, Destination, Receipt, Sink, SinkError};

/// Delivers to webhook endpoints through one shared HTTP client, so that connections to a busy
/// endpoint are pooled and kept alive across deliveries instead of dialled per request.
///
/// Redirects are never followed (see [`crate::http_classify`]); there is no client-wide timeout,
/// each request carries its own deadline.
pub struct WebhookSink {
    client: reqwest::Client,
    allow_private_destinations: bool,
}

impl WebhookSink {
    /// The channel name this sink registers under.
    pub const CHANNEL: &'static str = "API_WEBHOOK";

    /// Builds the shared client. Fails on an invalid `config` or when the TLS backend cannot start.
    pub fn new(config: WebhookConfig) -> Result<Self, WebhookSetupError> {
        let client = config.build("webhook")?;
        Ok(WebhookSink { client, allow_private_destinations: config.allow_private_destinations })
    }
}

#[async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &'static str {
        Self::CHANNEL
    }

    async fn deliver(&self, request: &DeliveryRequest) -> Result<Receipt, SinkError> {
        let Destination::Webhook { url, secret } = &request.destination else {
            return Err(SinkError::permanent(format!("{} cannot deliver to {:?}", Self::CHANNEL, request.destination)));
        };
        egress::check_literal(url, self.allow_private_destinations).map_err(|e| SinkError::permanent(e.to_string()))?;
        let signer = signing::signer(secret).map_err(|e| SinkError::permanent(e.to_string()))?;
        // An encrypted delivery sends the (armored) age ciphertext of the JSON envelope; the
        // signature covers the body as sent, so a receiver verifies before it decrypts.
        let (body, content_type) = match &request.encrypt_to {
            Some(recipient) => (bytes::Bytes::from(recipient.encrypt_armored(&request.payload)?), crate::encryption::CONTENT_TYPE),
            None => (request.payload.clone(), "application/json"),
        };
        let signed = signing::sign(&signer, &request.idempotency_key, &body).map_err(SinkError::permanent)?;

        let started = Instant::now();
        let response = self
            .client
            .post(url)
            .timeout(request.timeout)
            .header(CONTENT_TYPE, content_type)
            .header(HEADER_WEBHOOK_ID, signed.id)
            .header(HEADER_WEBHOOK_TIMESTAMP, signed.timestamp.to_string())
            .header(HEADER_WEBHOOK_SIGNATURE, signed.signature)
            .body(body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        // Read even on success: a drained body lets the connection return to the pool.
        let body = read_body_excerpt(response).await;
        let elapsed = started.elapsed();
        tracing::debug!(
            delivery_id = %request.idempotency_key,
            attempt = request.attempt,
            status = status.as_u16(),
            elapsed_ms = elapsed.as_millis() as u64,
            "webhook answered"
        );
        classify(status, &headers, &body)?;
        Ok(Receipt { elapsed, detail: format!("HTTP {}", status.as_u16()) })
    }
}
