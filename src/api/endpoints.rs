//! Endpoints as the outside sees them: `GET /api/v1/reporting/endpoints` (every endpoint's limits,
//! queue and circuit breaker), the breaker's state in the seed's `channel_status:{channel_id}` cache
//! entry of each configured channel that describes an endpoint, and Prometheus gauges.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use dataflows::delivery::DeliveryChannel;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::channels::ChannelStatus;
use super::error::ApiError;
use super::AppState;
use crate::cache::keys;
use crate::runtime::endpoints::key::describes;
use crate::runtime::endpoints::{BreakerState, EndpointKey, LaneStatus};
use crate::store::StoredChannel;

/// One endpoint: a channel and the `host:port` its deliveries go to.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct EndpointStatus {
    pub channel: DeliveryChannel,
    /// `host:port`, e.g. `hooks.example.com:443`, or the SMTP relay for EMAIL.
    pub endpoint: String,
    /// The circuit breaker: `CLOSED` (deliveries flow), `OPEN` (deliveries wait until
    /// `open_until`), `HALF_OPEN` (one probe under way or about to be).
    pub state: BreakerState,
    /// Transient failures in a row, the last success resetting it.
    pub consecutive_failures: u32,
    pub in_flight: usize,
    /// Deliveries waiting for this endpoint (delayed, not dropped).
    pub waiting: usize,
    pub max_concurrency: usize,
    /// Null: no rate limit.
    pub rate_per_second: Option<f64>,
    pub open_until: Option<DateTime<Utc>>,
    /// Set while the endpoint is paused by its peer's `Retry-After`.
    pub paused_until: Option<DateTime<Utc>>,
    /// The breaker's last change of state, if any since the endpoint was first used.
    pub state_changed_at: Option<DateTime<Utc>>,
    /// The last transient failure, as the sink reported it.
    pub last_failure: Option<String>,
    /// Configured `delivery_channels` that describe this endpoint (same type, host and port).
    pub channel_ids: Vec<String>,
}

/// The breaker part of a `channel_status:{channel_id}` entry (and of `GET /channels/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChannelBreaker {
    pub endpoint: String,
    pub state: BreakerState,
    pub consecutive_failures: u32,
    pub open_until: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/api/v1/reporting/endpoints", tag = "endpoints",
    responses((status = 200, description = "Every endpoint in use, by channel and host:port", body = [EndpointStatus]),
              (status = 503, description = "Storage unavailable (the configured channels could not be read)", body = super::error::ErrorBody)))]
pub async fn list(State(app): State<AppState>) -> Result<Json<Vec<EndpointStatus>>, ApiError> {
    let lanes = app.runtime.endpoints().endpoints();
    let channels = app.runtime.store().channels().await?;
    let clock = Clock::now();
    let statuses = lanes
        .iter()
        .map(|lane| EndpointStatus {
            channel: lane.key.channel,
            endpoint: lane.key.authority.clone(),
            state: lane.state,
            consecutive_failures: lane.consecutive_failures,
            in_flight: lane.in_flight,
            waiting: lane.waiting,
            max_concurrency: lane.limits.max_concurrency,
            rate_per_second: (lane.limits.rate_per_second > 0.0).then_some(lane.limits.rate_per_second),
            open_until: lane.open_until.map(|at| clock.wall(at)),
            paused_until: lane.paused_until.filter(|at| *at > clock.instant).map(|at| clock.wall(at)),
            state_changed_at: lane.changed_at.map(|at| clock.wall(at)),
            last_failure: lane.last_failure.clone(),
            channel_ids: channels
                .iter()
                .filter(|c| describes(c.channel_type, &c.channel_config, &lane.key))
                .map(|c| c.channel_id.clone())
                .collect(),
        })
        .collect();
    Ok(Json(statuses))
}

/// The breaker of the endpoint `channel` describes; the most severe state when it describes several
/// (a host without a port). `None` until a delivery has gone to such an endpoint.
pub fn breaker_for(lanes: &[LaneStatus], channel: &StoredChannel) -> Option<ChannelBreaker> {
    let clock = Clock::now();
    lanes
        .iter()
        .filter(|lane| describes(channel.channel_type, &channel.channel_config, &lane.key))
        .max_by_key(|lane| severity(lane.state))
        .map(|lane| ChannelBreaker {
            endpoint: lane.key.authority.clone(),
            state: lane.state,
            consecutive_failures: lane.consecutive_failures,
            open_until: lane.open_until.map(|at| clock.wall(at)),
        })
}

fn severity(state: BreakerState) -> u8 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    }
}

/// Tokio instants shown as wall-clock times.
struct Clock {
    instant: Instant,
    wall: DateTime<Utc>,
}

impl Clock {
    fn now() -> Clock {
        Clock { instant: Instant::now(), wall: Utc::now() }
    }

    fn wall(&self, at: Instant) -> DateTime<Utc> {
        let ahead = chrono::Duration::from_std(at.saturating_duration_since(self.instant)).unwrap_or_default();
        let behind = chrono::Duration::from_std(self.instant.saturating_duration_since(at)).unwrap_or_default();
        self.wall + ahead - behind
    }
}

/// How often the gauges are sampled (breaker changes are exported as they happen).
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How often the `channel_status` entries of endpoints that are not closed are written again, so
/// that they outlive their 5 min TTL for as long as the breaker stays open.
const REWRITE_EVERY: Duration = Duration::from_secs(60);

/// Follows the endpoints' changes until `stop`: writes `channel_status:{channel_id}` for every
/// configured channel whose endpoint's breaker changed state, and samples the Prometheus gauges
/// `repdist_endpoint_breaker_state` (0 closed, 1 half-open, 2 open), `repdist_endpoint_in_flight` and
/// `repdist_endpoint_waiting`, labelled by channel and endpoint.
pub fn publish_status(app: AppState, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = app.runtime.endpoints().changes();
        let mut sample = tokio::time::interval(SAMPLE_EVERY);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut published: HashMap<EndpointKey, BreakerState> = HashMap::new();
        let mut last_rewrite = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                changed = changes.changed() => if changed.is_err() { break },
                _ = sample.tick() => {}
            }
            let lanes = app.runtime.endpoints().endpoints();
            for lane in &lanes {
                let labels = [("channel", lane.key.channel.as_str().to_string()), ("endpoint", lane.key.authority.clone())];
                metrics::gauge!("repdist_endpoint_breaker_state", &labels).set(lane.state.gauge());
                metrics::gauge!("repdist_endpoint_in_flight", &labels).set(lane.in_flight as f64);
                metrics::gauge!("repdist_endpoint_waiting", &labels).set(lane.waiting as f64);
            }
            let rewrite = last_rewrite.elapsed() >= REWRITE_EVERY;
            if rewrite {
                last_rewrite = Instant::now();
            }
            let changed: Vec<&LaneStatus> = lanes
                .iter()
                .filter(|lane| {
                    let before = published.get(&lane.key).copied().unwrap_or(BreakerState::Closed);
                    before != lane.state || (rewrite && lane.state != BreakerState::Closed)
                })
                .collect();
            if changed.is_empty() {
                continue;
            }
            let channels = match app.runtime.store().channels().await {
                Ok(channels) => channels,
                // Tried again at the next change or sample; the REST answer is live meanwhile.
                Err(error) => {
                    tracing::warn!(%error, "could not read the channel configs to publish endpoint status");
                    continue;
                }
            };
            for channel in channels.into_iter().filter(|c| changed.iter().any(|lane| describes(c.channel_type, &c.channel_config, &lane.key))) {
                let channel = channel.redacted();
                let breaker = breaker_for(&lanes, &channel);
                let status = ChannelStatus { channel: &channel, status_changed_at: Some(Utc::now()), breaker };
                app.cache.write_through_json(&keys::channel_status(&channel.channel_id), &status, keys::CHANNEL_STATUS_TTL).await;
            }
            for lane in changed {
                published.insert(lane.key.clone(), lane.state);
            }
            published.retain(|key, _| lanes.iter().any(|lane| &lane.key == key));
        }
    })
}
