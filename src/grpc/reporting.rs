//! `ReportingStream`: the seed's gRPC interface. Subscription changes go through the same parsing
//! and checks as the REST API (`api::body::parse`, `api::subscriptions::admissible`); the update
//! stream follows the hub the WebSocket uses (`updates`).

use dataflows::subscription::{ReportSubscription, SubscriptionStatus};
use tonic::{Request, Response, Status};

use super::proto::reporting_stream_server::ReportingStream;
use super::proto::{self, SubscriptionAction};
use super::status::{invalid, not_found};
use super::updates::{self, ReportStream};
use super::{messages, GrpcState};
use super::auth::{ANYONE, SUBSCRIBERS};
use crate::api::subscriptions::{admissible, SubscriptionRequest};
use crate::auth::Principal;
use crate::runtime::hub::Selection;
use crate::store::StoredSubscription;

pub struct Reporting {
    pub(super) state: GrpcState,
}

#[tonic::async_trait]
impl ReportingStream for Reporting {
    type StreamReportsStream = ReportStream;

    async fn stream_reports(&self, request: Request<proto::StreamRequest>) -> Result<Response<ReportStream>, Status> {
        let principal = self.state.caller(&request, "ReportingStream/StreamReports", SUBSCRIBERS).await?;
        let request = request.into_inner();
        let mut report_types = Vec::with_capacity(request.report_types.len());
        for (i, &value) in request.report_types.iter().enumerate() {
            let t = messages::domain_report_type(value)
                .ok_or_else(|| invalid(format!("report_types[{i}]"), format!("{value} is not a report type")))?;
            if !report_types.contains(&t) {
                report_types.push(t);
            }
        }
        let subscription_id = request.subscription_id;
        if subscription_id.is_empty() && report_types.is_empty() {
            return Err(invalid("subscription_id", "give a subscription_id, report_types, or both"));
        }
        if subscription_id.is_empty() && !principal.is_admin() {
            return Err(Status::permission_denied("a subscriber streams its own subscriptions: give a subscription_id"));
        }
        if !subscription_id.is_empty() {
            // Another subscriber's subscription is refused exactly like one that does not exist.
            let stored = self.state.runtime.store().subscription(&subscription_id).await?;
            if !stored.is_some_and(|s| principal.owns(&s.subscription.subscriber_id)) {
                return Err(not_found("subscription", &subscription_id));
            }
        }
        let selection = if subscription_id.is_empty() {
            Selection::ReportTypes(report_types)
        } else {
            Selection::Subscription { subscription_id, report_types }
        };
        // Attached before answering: every update published once the client has its response is seen.
        let attachment = self
            .state
            .runtime
            .hub()
            .attach(&selection, request.after_sequence)
            .map_err(|e| Status::out_of_range(format!("after_sequence: {e}")))?;
        Ok(Response::new(updates::stream(attachment, self.state.shutdown.clone())))
    }

    async fn manage_subscription(
        &self,
        request: Request<proto::SubscriptionRequest>,
    ) -> Result<Response<proto::SubscriptionResponse>, Status> {
        let principal = self.state.caller(&request, "ReportingStream/ManageSubscription", SUBSCRIBERS).await?;
        let request = request.into_inner();
        let action = SubscriptionAction::try_from(request.action).unwrap_or(SubscriptionAction::Unspecified);
        let p = &principal;
        let (stored, name) = match action {
            SubscriptionAction::Create => (self.create(p, request).await?, "subscription.create"),
            SubscriptionAction::Update => (self.update(p, request).await?, "subscription.update"),
            SubscriptionAction::Pause => (self.set_status(p, &request.subscription_id, SubscriptionStatus::Paused).await?, "subscription.pause"),
            SubscriptionAction::Resume => (self.set_status(p, &request.subscription_id, SubscriptionStatus::Active).await?, "subscription.resume"),
            SubscriptionAction::Cancel => (self.set_status(p, &request.subscription_id, SubscriptionStatus::Cancelled).await?, "subscription.cancel"),
            SubscriptionAction::Unspecified => {
                return Err(invalid("action", "must be one of CREATE, UPDATE, PAUSE, RESUME, CANCEL"));
            }
        };
        self.state.auth.auditor().done(&principal, name, &stored.subscription.subscription_id).await;
        Ok(Response::new(proto::SubscriptionResponse { subscription: Some(messages::subscription(stored)) }))
    }

    async fn get_delivery_status(
        &self,
        request: Request<proto::DeliveryStatusRequest>,
    ) -> Result<Response<proto::DeliveryStatus>, Status> {
        let principal = self.state.caller(&request, "ReportingStream/GetDeliveryStatus", ANYONE).await?;
        let delivery_id = request.into_inner().delivery_id;
        if delivery_id.is_empty() {
            return Err(invalid("delivery_id", "required"));
        }
        let store = self.state.runtime.store();
        let Some(status) = store.delivery_status(&delivery_id).await? else {
            return Err(not_found("delivery", &delivery_id));
        };
        if principal.role == crate::store::Role::Subscriber {
            let owner = store.subscription(&status.subscription_id).await?;
            if !owner.is_some_and(|s| principal.owns(&s.subscription.subscriber_id)) {
                return Err(not_found("delivery", &delivery_id));
            }
        }
        Ok(Response::new(messages::delivery_status(status)))
    }
}

impl Reporting {
    async fn create(&self, principal: &Principal, request: proto::SubscriptionRequest) -> Result<StoredSubscription, Status> {
        let body = parse_body(&request.subscription_json)?;
        let id = match (&body.subscription_id, request.subscription_id.is_empty()) {
            (Some(in_body), false) if *in_body != request.subscription_id => {
                return Err(invalid("subscription_id", "differs from the subscription_id in subscription_json"));
            }
            (Some(id), _) => id.clone(),
            (None, false) => request.subscription_id,
            (None, true) => format!("sub_{}", uuid::Uuid::new_v4().simple()),
        };
        let subscription = body.into_subscription(id);
        if !principal.owns(&subscription.subscriber_id) {
            return Err(Status::permission_denied("subscriber_id: a subscriber key creates subscriptions for its own subscriber only"));
        }
        self.check(&subscription)?;
        if self.state.runtime.store().subscription(&subscription.subscription_id).await?.is_some() {
            return Err(Status::already_exists(format!(
                "subscription `{}` exists; change it with action UPDATE",
                subscription.subscription_id
            )));
        }
        self.apply(subscription).await
    }

    async fn update(&self, principal: &Principal, request: proto::SubscriptionRequest) -> Result<StoredSubscription, Status> {
        if request.subscription_id.is_empty() {
            return Err(invalid("subscription_id", "required for UPDATE"));
        }
        let body = parse_body(&request.subscription_json)?;
        if body.subscription_id.as_ref().is_some_and(|id| *id != request.subscription_id) {
            return Err(invalid("subscription_id", "differs from the subscription_id in subscription_json"));
        }
        let existing = self.existing(principal, &request.subscription_id).await?;
        let subscription = body.into_subscription(request.subscription_id);
        if subscription.subscriber_id != existing.subscription.subscriber_id {
            return Err(invalid("subscriber_id", "a subscription cannot move to another subscriber"));
        }
        self.check(&subscription)?;
        self.apply(subscription).await
    }

    /// PAUSE, RESUME and CANCEL: a new version of the stored subscription with another status.
    async fn set_status(&self, principal: &Principal, subscription_id: &str, status: SubscriptionStatus) -> Result<StoredSubscription, Status> {
        if subscription_id.is_empty() {
            return Err(invalid("subscription_id", "required"));
        }
        let existing = self.existing(principal, subscription_id).await?;
        let current = existing.subscription.status;
        if current == status {
            return Ok(existing);
        }
        if current == SubscriptionStatus::Cancelled {
            return Err(Status::failed_precondition(format!(
                "subscription `{subscription_id}` is cancelled; create a new one instead"
            )));
        }
        let mut subscription = existing.subscription;
        subscription.status = status;
        if status == SubscriptionStatus::Active {
            // What this server can serve may have changed while the subscription was paused.
            self.check(&subscription)?;
        }
        self.apply(subscription).await
    }

    /// The stored subscription, if `principal` may see it (another subscriber's is "not found").
    async fn existing(&self, principal: &Principal, subscription_id: &str) -> Result<StoredSubscription, Status> {
        self.state
            .runtime
            .store()
            .subscription(subscription_id)
            .await?
            .filter(|s| principal.owns(&s.subscription.subscriber_id))
            .ok_or_else(|| not_found("subscription", subscription_id))
    }

    async fn stored(&self, subscription_id: &str) -> Result<StoredSubscription, Status> {
        self.state.runtime.store().subscription(subscription_id).await?.ok_or_else(|| not_found("subscription", subscription_id))
    }

    fn check(&self, subscription: &ReportSubscription) -> Result<(), Status> {
        Ok(admissible(&self.state.runtime, self.state.allow_private_webhooks, subscription)?)
    }

    async fn apply(&self, subscription: ReportSubscription) -> Result<StoredSubscription, Status> {
        let id = subscription.subscription_id.clone();
        self.state.runtime.change_subscription(subscription).await?;
        self.stored(&id).await
    }
}

/// The REST body's parser, with a missing or unreadable document blamed on `subscription_json`.
fn parse_body(json: &str) -> Result<SubscriptionRequest, Status> {
    if json.trim().is_empty() {
        return Err(invalid("subscription_json", "required: the subscription as the REST API takes it"));
    }
    crate::api::body::parse::<SubscriptionRequest>(json.as_bytes()).map_err(|mut error| {
        if error.field.is_none() {
            error.field = Some("subscription_json".to_string());
            error.message = format!("subscription_json: {}", error.message);
        }
        error.into()
    })
}
