//! Publishing reports and following their deliveries.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use dataflows::report::ReportDistribution;
use dataflows::validation::Validate;

use super::body::JsonBody;
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::auth::Principal;
use crate::runtime::ReportAck;
use crate::store::{DeliverySummary, DeliveryStatus};

#[utoipa::path(post, path = "/api/v1/reporting/deliver", tag = "deliveries",
    request_body = ReportDistribution,
    responses((status = 202, description = "The report and its delivery set are durable; deliveries are under way", body = ReportAck),
              (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, description = "Saturated or shutting down: retry after `Retry-After` seconds", body = ErrorBody)))]
pub async fn deliver(
    State(app): State<AppState>,
    JsonBody(event): JsonBody<ReportDistribution>,
) -> Result<(StatusCode, Json<ReportAck>), ApiError> {
    event.validate()?;
    let ack = app.runtime.submit_report(event).await?;
    Ok((StatusCode::ACCEPTED, Json(ack)))
}

#[utoipa::path(get, path = "/api/v1/reporting/delivery/{delivery_id}/status", tag = "deliveries",
    params(("delivery_id" = String, Path)),
    responses((status = 200, body = DeliveryStatus), (status = 404, body = ErrorBody)))]
pub async fn status(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(delivery_id): Path<String>,
) -> Result<Json<DeliveryStatus>, ApiError> {
    let Some(status) = app.runtime.store().delivery_status(&delivery_id).await? else {
        return Err(ApiError::not_found("delivery", &delivery_id));
    };
    if principal.role == crate::store::Role::Subscriber {
        // A subscriber sees its own deliveries only; anyone else's is "not found".
        let owner = app.runtime.store().subscription(&status.subscription_id).await?;
        if !owner.is_some_and(|s| principal.owns(&s.subscription.subscriber_id)) {
            return Err(ApiError::not_found("delivery", &delivery_id));
        }
    }
    Ok(Json(status))
}

#[utoipa::path(get, path = "/api/v1/reporting/deliveries/summary", tag = "deliveries",
    responses((status = 200, description = "Deliveries by channel and state, and retries so far", body = DeliverySummary)))]
pub async fn summary(State(app): State<AppState>) -> Result<Json<DeliverySummary>, ApiError> {
    Ok(Json(app.runtime.store().delivery_summary().await?))
}
