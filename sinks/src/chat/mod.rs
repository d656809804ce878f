//! SLACK_INTEGRATION: a human-readable message about the report, posted to a Slack incoming webhook
//! (Block Kit) or a Microsoft Teams workflow webhook (Adaptive Card), classified by
//! [`crate::http_classify`].
//!
//! - [`crate::http_client`]: the shared client's pool and dial settings;
//! - `envelope`: reading the report envelope into what a message shows (also used by `push`);
//! - `digest`: a SCHEDULED subscription's digest as one message listing its reports;
//! - `slack`, `teams`: one message format each;
//! - `redaction`: webhook URLs are credentials, kept out of reasons;
//! - this file: the delivery.
//!
//! Tests against a real receiver live in `sinks/tests/it/chat.rs`.

pub mod digest;
pub mod envelope;
pub(crate) mod redaction;
pub mod slack;
pub mod teams;

use std::time::Instant;

use async_trait::async_trait;
use reqwest::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};

pub use crate::http_client::{HttpClientConfig as ChatConfig, HttpClientError as ChatSetupError};
pub use envelope::ReportSummary;

use crate::http_classify::{classify, read_body_excerpt, transport_error};
use crate::{DeliveryRequest, Destination, Receipt, Sink, SinkError};
use redaction::redacted;

/// Which chat service a webhook URL belongs to; it decides the message format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatKind {
    Slack,
    Teams,
}

/// Posts report messages to chat webhooks through one shared HTTP client. Redirects are never
/// followed (a webhook URL is a credential; see [`crate::http_classify`]).
pub struct ChatSink {
    client: reqwest::Client,
    allow_private_destinations: bool,
}

impl ChatSink {
    pub const CHANNEL: &'static str = "SLACK_INTEGRATION";

    pub fn new(config: ChatConfig) -> Result<ChatSink, ChatSetupError> {
        let client = config.build("chat")?;
        Ok(ChatSink { client, allow_private_destinations: config.allow_private_destinations })
    }
}

#[async_trait]
impl Sink for ChatSink {
    fn name(&self) -> &'static str {
        Self::CHANNEL
    }

    async fn deliver(&self, request: &DeliveryRequest) -> Result<Receipt, SinkError> {
        if request.encrypt_to.is_some() {
            return Err(crate::encryption::unsupported(Self::CHANNEL));
        }
        let Destination::Chat { kind, webhook_url, link } = &request.destination else {
            return Err(SinkError::permanent(format!("{} cannot deliver to {:?}", Self::CHANNEL, request.destination)));
        };
        crate::egress::check_literal(webhook_url, self.allow_private_destinations).map_err(|e| SinkError::permanent(e.to_string()))?;
        let body = match crate::digest::DigestSummary::parse(&request.payload)? {
            Some(digest) => match kind {
                ChatKind::Slack => digest::slack(&digest, link.as_deref()),
                ChatKind::Teams => digest::teams(&digest, link.as_deref()),
            },
            None => {
                let summary = ReportSummary::parse(&request.payload)?;
                let link = summary.link(link.as_deref());
                match kind {
                    ChatKind::Slack => slack::render(&summary, request.priority, link.as_deref()),
                    ChatKind::Teams => teams::render(&summary, request.priority, link.as_deref()),
                }
            }
        };
        let body =
            serde_json::to_vec(&body).map_err(|e| SinkError::permanent(format!("cannot encode message: {e}")))?;

        let started = Instant::now();
        let outcome = async {
            let response = self
                .client
                .post(webhook_url)
                .timeout(request.timeout)
                .header(CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .map_err(transport_error)?;
            let status = response.status();
            let headers = response.headers().clone();
            let answer = read_body_excerpt(response).await;
            classify(status, &headers, &answer)?;
            if *kind == ChatKind::Slack {
                if let Some(error) = slack::error_in_success_body(&answer) {
                    return Err(error);
                }
            }
            Ok(status)
        }
        .await;
        let elapsed = started.elapsed();
        tracing::debug!(
            delivery_id = %request.idempotency_key,
            attempt = request.attempt,
            kind = ?kind,
            ok = outcome.is_ok(),
            elapsed_ms = elapsed.as_millis() as u64,
            "chat webhook answered"
        );
        let status = outcome.map_err(|error| redacted(error, webhook_url))?;
        Ok(Receipt { elapsed, detail: format!("HTTP {}", status.as_u16()) })
    }
}
