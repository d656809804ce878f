//! `GET /api/v1/reporting/stream`: live dashboard notifications of one subscription over WebSocket.
//! A client that cannot keep up is closed with code 4008 rather than buffered without bound.

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::extract::State;
use axum::response::Response;
use dataflows::report::ReportDataType;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::error::{ApiError, ErrorBody};
use super::body::Params;
use super::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    /// The subscription whose notifications to stream.
    pub subscription_id: String,
    /// Comma-separated report types to keep, e.g. `RISK_REPORT,ALERT_REPORT`; all when absent.
    pub report_types: Option<String>,
}

/// Close code for a client that fell behind the live buffer (private range 4000-4999).
pub const CLOSE_LAGGED: u16 = 4008;
const PING_EVERY: Duration = Duration::from_secs(20);

#[utoipa::path(get, path = "/api/v1/reporting/stream", tag = "stream", params(StreamParams),
    responses((status = 101, description = "WebSocket of `{seq, type: \"notification\", delivery_id, subscription_id, subscriber_id, report}` text frames"),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn stream(
    State(app): State<AppState>,
    Params(params): Params<StreamParams>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let report_types = parse_report_types(params.report_types.as_deref())?;
    if app.runtime.store().subscription(&params.subscription_id).await?.is_none() {
        return Err(ApiError::not_found("subscription", &params.subscription_id));
    }
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(StatusCode::UPGRADE_REQUIRED, "websocket_required", format!("this endpoint speaks WebSocket: {rejection}"))
    })?;
    let hub = app.runtime.hub().clone();
    Ok(upgrade.on_upgrade(move |socket| serve(socket, hub, params.subscription_id, report_types)))
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

async fn serve(mut socket: WebSocket, hub: std::sync::Arc<crate::runtime::hub::Hub>, subscription_id: String, report_types: Vec<ReportDataType>) {
    let mut live = hub.subscribe();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            message = live.recv() => match message {
                Ok(message) => {
                    let wanted = message.subscription_id == subscription_id
                        && (report_types.is_empty() || message.report_type.is_some_and(|t| report_types.contains(&t)));
                    if wanted && socket.send(Message::Text(message.text.clone())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    let reason = format!("fell behind by {missed} messages; reconnect");
                    let frame = CloseFrame { code: CLOSE_LAGGED, reason: reason.into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    }
}
