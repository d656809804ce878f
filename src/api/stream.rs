//! `GET /api/v1/reporting/stream`: one subscription's `ReportUpdate`s over WebSocket.
//!
//! Protocol (text frames, JSON):
//! - first `{"type":"hello","epoch","head_seq","oldest_seq"}`: the client is attached;
//! - then, when resuming (`last_seq`) past what the replay buffer holds,
//!   `{"type":"gap","from","to"}`: sequence numbers `from..=to` may have carried messages this
//!   client will never get;
//! - then `{"type":"report",seq,...}` and `{"type":"delivery",seq,...}` messages, `seq` increasing.
//!
//! Close codes: 4008 the client's queue overflowed (it read too slowly; reconnect with `last_seq`),
//! 4009 nothing heard from the client (not even a pong) for `stream.idle_timeout`, 1001 the server
//! is shutting down. Frames from the client other than pongs and close are ignored.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::Extension;
use axum::http::StatusCode;
use axum::response::Response;
use dataflows::report::ReportDataType;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;

use super::body::Params;
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::auth::Principal;
use crate::runtime::hub::{Attachment, Hub, Selection};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    /// The subscription whose updates to stream.
    pub subscription_id: String,
    /// Comma-separated report types to keep, e.g. `RISK_REPORT,ALERT_REPORT`; all when absent.
    pub report_types: Option<String>,
    /// Resume after this `seq` (the last one received): buffered messages after it are sent
    /// first, or a `gap` message says which could not be kept. Absent: from now on.
    pub last_seq: Option<u64>,
    /// The credential, for clients that cannot set `Authorization` on a WebSocket handshake
    /// (browsers). The header wins when both are sent.
    pub token: Option<String>,
}

/// The client read too slowly and its queue overflowed; it may reconnect with `last_seq`.
pub const CLOSE_LAGGED: u16 = 4008;
/// Nothing was heard from the client (not even a pong) for the idle timeout.
pub const CLOSE_IDLE: u16 = 4009;
const CLOSE_GOING_AWAY: u16 = 1001;
/// Clients only send control frames; anything large is refused by the WebSocket layer.
const MAX_CLIENT_MESSAGE: usize = 4096;

#[utoipa::path(get, path = "/api/v1/reporting/stream", tag = "stream", params(StreamParams),
    responses((status = 101, description = "WebSocket of JSON text frames: `hello`, then `gap` when resuming past the replay buffer, then `report` and `delivery` updates with increasing `seq`. Close codes: 4008 too slow (resume with last_seq), 4009 idle, 1001 shutdown."),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn stream(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Params(params): Params<StreamParams>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let report_types = parse_report_types(params.report_types.as_deref())?;
    let hub = app.runtime.hub().clone();
    if let Some(last_seq) = params.last_seq {
        hub.check_resume(last_seq).map_err(|e| ApiError::invalid("last_seq", e.to_string()))?;
    }
    // Another subscriber's subscription is refused exactly like one that does not exist.
    let owned = app.runtime.store().subscription(&params.subscription_id).await?.is_some_and(|s| principal.owns(&s.subscription.subscriber_id));
    if !owned {
        return Err(ApiError::not_found("subscription", &params.subscription_id));
    }
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(StatusCode::UPGRADE_REQUIRED, "websocket_required", format!("this endpoint speaks WebSocket: {rejection}"))
    })?;
    let selection = Selection::Subscription { subscription_id: params.subscription_id, report_types };
    let last_seq = params.last_seq;
    Ok(upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| serve(socket, hub, selection, last_seq)))
}

fn parse_report_types(raw: Option<&str>) -> Result<Vec<ReportDataType>, ApiError> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    raw.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|name| {
            ReportDataType::ALL
                .into_iter()
                .find(|t| t.as_str() == name.trim())
                .ok_or_else(|| ApiError::invalid("report_types", format!("unknown report type `{}`", name.trim())))
        })
        .collect()
}

/// Field order as documented: `type` first.
#[derive(serde::Serialize)]
struct HelloWire {
    #[serde(rename = "type")]
    kind: &'static str,
    epoch: u64,
    head_seq: u64,
    oldest_seq: u64,
}

#[derive(serde::Serialize)]
struct GapWire {
    #[serde(rename = "type")]
    kind: &'static str,
    from: u64,
    to: u64,
}

/// Why a client's stream ended.
enum End {
    /// The client closed, went away, or a write failed.
    Gone,
    Lagged,
    Idle,
    ShuttingDown,
}

async fn serve(socket: WebSocket, hub: Arc<Hub>, selection: Selection, last_seq: Option<u64>) {
    let (ping_every, idle_timeout) = (hub.config().ping_interval, hub.config().idle_timeout);
    let (mut sink, mut source) = socket.split();
    let attachment = match hub.attach(&selection, last_seq) {
        Ok(attachment) => attachment,
        Err(error) => {
            // Checked before the upgrade; only a hub replaced in between could get here.
            let _ = sink.send(close(1008, error.to_string())).await;
            return;
        }
    };
    let mut attachment: Attachment = attachment;
    let (hello, gap, backlog) = (attachment.hello, attachment.gap.take(), std::mem::take(&mut attachment.backlog));
    let (kicked, closed) = (attachment.kicked.clone(), attachment.closed.clone());
    let live = &mut attachment.live;
    let end = {
        let writer = async {
            let hello = HelloWire { kind: "hello", epoch: hello.epoch, head_seq: hello.head_seq, oldest_seq: hello.oldest_seq };
            sink.send(Message::Text(serde_json::to_string(&hello).unwrap_or_default().into())).await?;
            if let Some(gap) = gap {
                let gap = GapWire { kind: "gap", from: gap.from, to: gap.to };
                sink.send(Message::Text(serde_json::to_string(&gap).unwrap_or_default().into())).await?;
            }
            for message in backlog {
                sink.send(Message::Text(message.text.clone())).await?;
            }
            let mut ping = tokio::time::interval(ping_every);
            ping.tick().await;
            loop {
                tokio::select! {
                    message = live.recv() => match message {
                        Some(message) => sink.send(Message::Text(message.text.clone())).await?,
                        // Kicked or closed: the select below tells which.
                        None => std::future::pending().await,
                    },
                    _ = ping.tick() => sink.send(Message::Ping(Default::default())).await?,
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), axum::Error>(())
        };
        let reader = async {
            loop {
                match tokio::time::timeout(idle_timeout, source.next()).await {
                    Err(_) => return End::Idle,
                    Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return End::Gone,
                    Ok(Some(Ok(_))) => {}
                }
            }
        };
        tokio::select! {
            biased;
            _ = kicked.cancelled() => End::Lagged,
            _ = closed.cancelled() => End::ShuttingDown,
            end = reader => end,
            _ = writer => End::Gone,
        }
    };
    let frame = match end {
        End::Gone => return,
        End::Lagged => close(CLOSE_LAGGED, format!("too slow: more than {} messages queued; reconnect with last_seq", hub.config().client_queue)),
        End::Idle => close(CLOSE_IDLE, format!("nothing heard for {}", humantime(idle_timeout))),
        End::ShuttingDown => close(CLOSE_GOING_AWAY, "server shutting down".to_string()),
    };
    // A client that is not reading may never take the close frame: give up after the idle timeout.
    let _ = tokio::time::timeout(idle_timeout, sink.send(frame)).await;
}

fn close(code: u16, reason: String) -> Message {
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason) }))
}

fn humantime(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}
