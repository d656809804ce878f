//! `DistributionQuery`: read-only questions about distribution, answered from the same views and
//! store reads as the REST API.

use std::time::Duration;

use dataflows::subscription::SubscriptionStatus;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::proto;
use super::proto::distribution_query_server::DistributionQuery;
use super::status::{invalid, not_found};
use super::auth::{ADMINS, SUBSCRIBERS};
use super::{messages, GrpcState};

/// How often `WatchStats` samples the stats view.
const WATCH_EVERY: Duration = Duration::from_millis(500);

pub struct Query {
    pub(super) state: GrpcState,
}

type SnapshotStream = ReceiverStream<Result<proto::StatsSnapshot, Status>>;

impl Query {
    fn snapshot(state: &GrpcState) -> proto::StatsSnapshot {
        let windows = crate::api::stats::windows(&state.runtime, state.stats_window_micros);
        proto::StatsSnapshot { windows: windows.into_iter().map(messages::stats_window).collect() }
    }
}

#[tonic::async_trait]
impl DistributionQuery for Query {
    type WatchStatsStream = SnapshotStream;

    async fn get_stats(&self, request: Request<proto::GetStatsRequest>) -> Result<Response<proto::StatsSnapshot>, Status> {
        self.state.caller(&request, "DistributionQuery/GetStats", ADMINS).await?;
        Ok(Response::new(Self::snapshot(&self.state)))
    }

    async fn watch_stats(&self, request: Request<proto::WatchStatsRequest>) -> Result<Response<SnapshotStream>, Status> {
        self.state.caller(&request, "DistributionQuery/WatchStats", ADMINS).await?;
        let max_updates = request.into_inner().max_updates;
        // One slot: a slow reader holds back sampling instead of queueing stale snapshots.
        let (tx, rx) = mpsc::channel(1);
        let state = self.state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_EVERY);
            tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let mut last: Option<proto::StatsSnapshot> = None;
            let mut sent = 0u32;
            loop {
                tokio::select! {
                    _ = state.shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    _ = tick.tick() => {}
                }
                let snapshot = Self::snapshot(&state);
                if last.as_ref() == Some(&snapshot) {
                    continue;
                }
                last = Some(snapshot.clone());
                tokio::select! {
                    _ = state.shutdown.cancelled() => return,
                    result = tx.send(Ok(snapshot)) => if result.is_err() { return },
                }
                sent += 1;
                if max_updates != 0 && sent >= max_updates {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_deliveries_of_report(
        &self,
        request: Request<proto::ListDeliveriesOfReportRequest>,
    ) -> Result<Response<proto::ListDeliveriesOfReportResponse>, Status> {
        self.state.caller(&request, "DistributionQuery/ListDeliveriesOfReport", ADMINS).await?;
        let event_id = request.into_inner().event_id;
        if event_id.is_empty() {
            return Err(invalid("event_id", "required"));
        }
        let store = self.state.runtime.store();
        let Some(ids) = store.deliveries_of_event(&event_id).await? else {
            return Err(not_found("report event", &event_id));
        };
        let mut deliveries = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(status) = store.delivery_status(&id).await? {
                deliveries.push(messages::delivery_status(status));
            }
        }
        Ok(Response::new(proto::ListDeliveriesOfReportResponse { event_id, deliveries }))
    }

    async fn list_subscriptions(
        &self,
        request: Request<proto::ListSubscriptionsRequest>,
    ) -> Result<Response<proto::ListSubscriptionsResponse>, Status> {
        let principal = self.state.caller(&request, "DistributionQuery/ListSubscriptions", SUBSCRIBERS).await?;
        let request = request.into_inner();
        if request.subscriber_id.is_empty() {
            return Err(invalid("subscriber_id", "required"));
        }
        if !principal.owns(&request.subscriber_id) {
            return Err(not_found("subscriber", &request.subscriber_id));
        }
        let stored = self.state.runtime.store().subscriptions_of(&request.subscriber_id).await?;
        let subscriptions = stored
            .into_iter()
            .filter(|s| request.include_inactive || s.subscription.status == SubscriptionStatus::Active)
            .map(messages::subscription)
            .collect();
        Ok(Response::new(proto::ListSubscriptionsResponse { subscriptions }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<proto::ListDeadLettersRequest>,
    ) -> Result<Response<proto::ListDeadLettersResponse>, Status> {
        self.state.caller(&request, "DistributionQuery/ListDeadLetters", ADMINS).await?;
        let request = request.into_inner();
        let limit = if request.limit == 0 { 100 } else { request.limit };
        if !(1..=1000).contains(&limit) {
            return Err(invalid("limit", "must be between 1 and 1000"));
        }
        let after = (!request.after.is_empty()).then_some(request.after.as_str());
        let items = self.state.runtime.store().dead_letters(limit, after).await?;
        let next = if items.len() == limit as usize { items.last().map(|d| d.delivery_id.clone()) } else { None };
        Ok(Response::new(proto::ListDeadLettersResponse {
            items: items.into_iter().map(messages::dead_letter).collect(),
            next: next.unwrap_or_default(),
        }))
    }
}
