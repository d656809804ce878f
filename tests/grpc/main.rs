//! The gRPC API against a real server started in-process: the generated tonic clients, the
//! standard health and reflection services, and (in `foreign`) a Python grpcio client.

mod foreign;
mod helpers;
#[path = "../it/helpers.rs"]
#[allow(dead_code)]
mod it_helpers;

use std::time::Duration;

use dataflows::delivery::{delivery_id, DeliveryChannel};
use repdist::grpc::proto::{self, SubscriptionAction};
use tonic::Code;

use helpers::{dashboard_subscription, report, TestServer};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_subscription_made_over_grpc_streams_reports_published_over_rest() {
    let server = TestServer::start().await;
    let created = server.create(dashboard_subscription("dash-1", "pm_001")).await;
    assert_eq!(created.subscription_id, "dash-1");
    assert_eq!(created.status, "active");
    assert_eq!(created.channels, vec![proto::DeliveryChannel::DashboardNotification as i32]);
    server.create(dashboard_subscription("dash-2", "pm_002")).await;

    let request = proto::StreamRequest { subscription_id: "dash-1".into(), report_types: vec![], after_sequence: None };
    let mut stream = server.reporting().await.stream_reports(request).await.expect("stream opens").into_inner();

    let ids = server.deliver(report("evt-1", "rep-1")).await;
    let mine = delivery_id("rep-1", "dash-1", DeliveryChannel::DashboardNotification);
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&mine), "{ids:?}");

    let message = tokio::time::timeout(WAIT, stream.message()).await.expect("a report arrives in time").unwrap().unwrap();
    assert_eq!(message.delivery_id, mine);
    assert_eq!(message.subscription_id, "dash-1");
    assert_eq!(message.subscriber_id, "pm_001");
    assert_eq!(message.report_type, proto::ReportDataType::PerformanceReport as i32);
    assert_eq!(message.report_id, "rep-1");
    assert_eq!(message.event_id, "evt-1");
    assert!(message.sequence >= 1);
    let report: serde_json::Value = serde_json::from_str(&message.report_json).unwrap();
    assert_eq!(report["report_data"]["portfolio_id"], "portfolio_001");
    let other = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(other.is_err(), "dash-2's report must not reach dash-1's stream: {other:?}");

    // The status of a delivery id taken from the REST acknowledgement.
    let status = server.wait_for_state(&mine, "DELIVERED").await;
    assert_eq!(status.subscription_id, "dash-1");
    assert_eq!(status.report_id, "rep-1");
    assert_eq!(status.channel, proto::DeliveryChannel::DashboardNotification as i32);
    assert_eq!(status.retry_count, 0);
    assert!(status.delivery_time.is_some());
    assert_eq!(status.error_details, None);

    let request = proto::ListDeliveriesOfReportRequest { event_id: "evt-1".into() };
    let listed = server.query().await.list_deliveries_of_report(request).await.unwrap().into_inner();
    let mut listed_ids: Vec<_> = listed.deliveries.iter().map(|d| d.delivery_id.clone()).collect();
    listed_ids.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed_ids, expected);
}

#[tokio::test]
async fn streams_select_by_report_type_and_refuse_resume_and_empty_selections() {
    let server = TestServer::start().await;
    server.create(dashboard_subscription("dash-1", "pm_001")).await;
    let mut client = server.reporting().await;

    let request = proto::StreamRequest {
        subscription_id: String::new(),
        report_types: vec![proto::ReportDataType::PerformanceReport as i32],
        after_sequence: None,
    };
    let mut by_type = client.stream_reports(request).await.unwrap().into_inner();
    let request = proto::StreamRequest {
        subscription_id: String::new(),
        report_types: vec![proto::ReportDataType::RiskReport as i32],
        after_sequence: None,
    };
    let mut other_type = client.stream_reports(request).await.unwrap().into_inner();
    server.deliver(report("evt-1", "rep-1")).await;
    let message = tokio::time::timeout(WAIT, by_type.message()).await.expect("a report arrives in time").unwrap().unwrap();
    assert_eq!(message.report_id, "rep-1");
    let none = tokio::time::timeout(Duration::from_millis(300), other_type.message()).await;
    assert!(none.is_err(), "a RISK_REPORT stream must not see a PERFORMANCE_REPORT: {none:?}");

    let resume = proto::StreamRequest { subscription_id: "dash-1".into(), report_types: vec![], after_sequence: Some(3) };
    let error = client.stream_reports(resume).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
    assert!(error.message().contains("replay buffer"), "{error:?}");

    let empty = proto::StreamRequest::default();
    let error = client.stream_reports(empty).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert_eq!(error.metadata().get("field").unwrap(), "subscription_id");

    let unknown = proto::StreamRequest { subscription_id: "nope".into(), ..Default::default() };
    assert_eq!(client.stream_reports(unknown).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn bad_subscriptions_are_invalid_argument_naming_the_field() {
    let server = TestServer::start().await;
    let mut client = server.reporting().await;
    let create = |json: String| proto::SubscriptionRequest {
        action: SubscriptionAction::Create as i32,
        subscription_id: String::new(),
        subscription_json: json,
    };

    // A channel this server has no sink for (EMAIL without a relay): refused by the same check as
    // the REST API.
    let mut body = dashboard_subscription("s-1", "pm_001");
    body["delivery_preferences"]["channels"] = serde_json::json!(["EMAIL"]);
    body["delivery_preferences"]["notification_settings"] = serde_json::json!({"email": {"to": ["pm@example.com"]}});
    let error = client.manage_subscription(create(body.to_string())).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert_eq!(error.metadata().get("field").unwrap(), "delivery_preferences.channels[0]");
    assert!(error.message().contains("delivery_preferences.channels[0]"), "{error:?}");

    // A value of the wrong shape: named by the REST body's parser.
    let mut body = dashboard_subscription("s-1", "pm_001");
    body["report_types"] = serde_json::json!(["GOSSIP_REPORT"]);
    let error = client.manage_subscription(create(body.to_string())).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    let field = error.metadata().get("field").unwrap().to_str().unwrap().to_string();
    assert!(field.starts_with("report_types"), "{field}");

    let error = client.manage_subscription(create("{not json".into())).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert_eq!(error.metadata().get("field").unwrap(), "subscription_json");

    let error = client.manage_subscription(proto::SubscriptionRequest::default()).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert_eq!(error.metadata().get("field").unwrap(), "action");

    // Nothing was stored by the refused requests.
    let request = proto::ListSubscriptionsRequest { subscriber_id: "pm_001".into(), include_inactive: true };
    assert!(server.query().await.list_subscriptions(request).await.unwrap().into_inner().subscriptions.is_empty());

    // Taken ids and unknown ids.
    server.create(dashboard_subscription("s-1", "pm_001")).await;
    let error = client.manage_subscription(create(dashboard_subscription("s-1", "pm_001").to_string())).await.unwrap_err();
    assert_eq!(error.code(), Code::AlreadyExists, "{error:?}");
    let pause = proto::SubscriptionRequest { action: SubscriptionAction::Pause as i32, subscription_id: "nope".into(), ..Default::default() };
    assert_eq!(client.manage_subscription(pause).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn an_unknown_delivery_is_not_found() {
    let server = TestServer::start().await;
    let mut client = server.reporting().await;
    let error = client
        .get_delivery_status(proto::DeliveryStatusRequest { delivery_id: "no-such-delivery".into() })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound, "{error:?}");
    assert!(error.message().contains("no-such-delivery"), "{error:?}");
    let error = server
        .query()
        .await
        .list_deliveries_of_report(proto::ListDeliveriesOfReportRequest { event_id: "no-such-event".into() })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound, "{error:?}");
}

#[tokio::test]
async fn list_subscriptions_shows_the_active_ones_and_follows_pause_resume_cancel() {
    let server = TestServer::start().await;
    server.create(dashboard_subscription("a", "pm_001")).await;
    server.create(dashboard_subscription("b", "pm_001")).await;
    server.create(dashboard_subscription("c", "pm_002")).await;
    let mut reporting = server.reporting().await;
    let mut query = server.query().await;
    let list = |include_inactive| proto::ListSubscriptionsRequest { subscriber_id: "pm_001".into(), include_inactive };
    let act = |action: SubscriptionAction| proto::SubscriptionRequest {
        action: action as i32,
        subscription_id: "b".into(),
        subscription_json: String::new(),
    };
    let ids = |response: proto::ListSubscriptionsResponse| {
        let mut ids: Vec<_> = response.subscriptions.into_iter().map(|s| (s.subscription_id, s.status)).collect();
        ids.sort();
        ids
    };

    assert_eq!(ids(query.list_subscriptions(list(false)).await.unwrap().into_inner()), [("a".into(), "active".into()), ("b".into(), "active".into())]);
    let paused = reporting.manage_subscription(act(SubscriptionAction::Pause)).await.unwrap().into_inner();
    assert_eq!(paused.subscription.unwrap().status, "paused");
    assert_eq!(ids(query.list_subscriptions(list(false)).await.unwrap().into_inner()), [("a".into(), "active".into())]);
    assert_eq!(
        ids(query.list_subscriptions(list(true)).await.unwrap().into_inner()),
        [("a".into(), "active".into()), ("b".into(), "paused".into())]
    );
    reporting.manage_subscription(act(SubscriptionAction::Resume)).await.unwrap();
    assert_eq!(query.list_subscriptions(list(false)).await.unwrap().into_inner().subscriptions.len(), 2);
    let cancelled = reporting.manage_subscription(act(SubscriptionAction::Cancel)).await.unwrap().into_inner();
    assert_eq!(cancelled.subscription.unwrap().status, "cancelled");
    let error = reporting.manage_subscription(act(SubscriptionAction::Resume)).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");

    // UPDATE takes the REST body; the change is visible to REST readers too.
    let mut body = dashboard_subscription("a", "pm_001");
    body["report_types"] = serde_json::json!(["RISK_REPORT", "ALERT_REPORT"]);
    let update = proto::SubscriptionRequest {
        action: SubscriptionAction::Update as i32,
        subscription_id: "a".into(),
        subscription_json: body.to_string(),
    };
    let updated = reporting.manage_subscription(update).await.unwrap().into_inner().subscription.unwrap();
    assert_eq!(updated.report_types, vec![proto::ReportDataType::RiskReport as i32, proto::ReportDataType::AlertReport as i32]);
    let rest = server.http.get(format!("{}/api/v1/reporting/subscriptions/pm_001", server.base)).send().await.unwrap();
    let rest: serde_json::Value = serde_json::from_str(&rest.text().await.unwrap()).unwrap();
    let a = rest.as_array().unwrap().iter().find(|s| s["subscription_id"] == "a").unwrap();
    assert_eq!(a["report_types"], serde_json::json!(["RISK_REPORT", "ALERT_REPORT"]));
}

#[tokio::test]
async fn webhook_secrets_never_leave_through_grpc() {
    let server = TestServer::start().await;
    let body = serde_json::json!({
        "subscription_id": "hook-1",
        "subscriber_id": "client_001",
        "report_types": ["PERFORMANCE_REPORT"],
        "delivery_preferences": {
            "channels": ["API_WEBHOOK"],
            "notification_settings": {"webhook": {"url": "http://127.0.0.1:9/hook", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}
        }
    });
    let created = server.create(body).await;
    assert!(!created.subscription_json.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "{}", created.subscription_json);
    let request = proto::ListSubscriptionsRequest { subscriber_id: "client_001".into(), include_inactive: false };
    let listed = server.query().await.list_subscriptions(request).await.unwrap().into_inner();
    assert_eq!(listed.subscriptions.len(), 1);
    assert!(!listed.subscriptions[0].subscription_json.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
}

#[tokio::test]
async fn watch_stats_yields_an_update_after_a_delivery() {
    let server = TestServer::start().await;
    server.create(dashboard_subscription("dash-1", "pm_001")).await;
    let mut watch = server.query().await.watch_stats(proto::WatchStatsRequest { max_updates: 0 }).await.unwrap().into_inner();
    let first = tokio::time::timeout(WAIT, watch.message()).await.expect("the current snapshot comes first").unwrap().unwrap();
    assert!(first.windows.iter().all(|w| w.deliveries_successful == 0), "{first:?}");

    let ids = server.deliver(report("evt-1", "rep-1")).await;
    server.wait_for_state(&ids[0], "DELIVERED").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let updated = loop {
        let next = tokio::time::timeout_at(deadline, watch.message()).await.expect("an update after the delivery").unwrap().unwrap();
        let dashboard = next.windows.iter().find(|w| {
            w.channel == proto::DeliveryChannel::DashboardNotification as i32 && w.deliveries_successful >= 1
        });
        if let Some(window) = dashboard {
            break window.clone();
        }
    };
    assert_eq!(updated.report_type, proto::ReportDataType::PerformanceReport as i32);
    assert_eq!(updated.deliveries_failed, 0);

    // GetStats answers the same windows, as the REST endpoint computes them.
    let stats = server.query().await.get_stats(proto::GetStatsRequest {}).await.unwrap().into_inner();
    let rest = server.http.get(format!("{}/api/v1/reporting/stats", server.base)).send().await.unwrap();
    let rest: serde_json::Value = serde_json::from_str(&rest.text().await.unwrap()).unwrap();
    assert_eq!(stats.windows.len(), rest.as_array().unwrap().len(), "{stats:?} vs {rest}");
    assert!(stats.windows.iter().any(|w| w.deliveries_successful >= 1));

    // max_updates bounds the stream: it ends after that many snapshots.
    let mut bounded = server.query().await.watch_stats(proto::WatchStatsRequest { max_updates: 1 }).await.unwrap().into_inner();
    assert!(tokio::time::timeout(WAIT, bounded.message()).await.unwrap().unwrap().is_some());
    assert!(tokio::time::timeout(WAIT, bounded.message()).await.expect("the stream ends").unwrap().is_none());
}

#[tokio::test]
async fn dead_letters_page_and_validate_the_limit() {
    let server = TestServer::start().await;
    let mut query = server.query().await;
    let page = query.list_dead_letters(proto::ListDeadLettersRequest { limit: 0, after: String::new() }).await.unwrap().into_inner();
    assert!(page.items.is_empty());
    assert_eq!(page.next, "");
    let error = query.list_dead_letters(proto::ListDeadLettersRequest { limit: 5000, after: String::new() }).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(error.metadata().get("field").unwrap(), "limit");
}

#[tokio::test]
async fn health_reports_serving() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "repdist.reporting.v1.ReportingStream", "repdist.reporting.v1.DistributionQuery"] {
        let answer = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(answer.status(), tonic_health::pb::health_check_response::ServingStatus::Serving, "{service:?}");
    }
    let error = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_both_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let server = TestServer::start().await;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
    let mut answers = reflection.server_reflection_info(futures::stream::iter([request])).await.unwrap().into_inner();
    let answer = tokio::time::timeout(WAIT, answers.message()).await.unwrap().unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else { panic!("{answer:?}") };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["repdist.reporting.v1.ReportingStream", "repdist.reporting.v1.DistributionQuery", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let server = TestServer::start().await;
    server.create(dashboard_subscription("dash-1", "pm_001")).await;
    let request = proto::StreamRequest { subscription_id: "dash-1".into(), ..Default::default() };
    let mut stream = server.reporting().await.stream_reports(request).await.unwrap().into_inner();
    let mut watch = server.query().await.watch_stats(proto::WatchStatsRequest { max_updates: 0 }).await.unwrap().into_inner();
    tokio::time::timeout(WAIT, server.server.shutdown()).await.expect("shutdown does not wait on open streams").unwrap();
    let ended = tokio::time::timeout(WAIT, stream.message()).await.expect("the report stream ends");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    while let Ok(Some(_)) = tokio::time::timeout(WAIT, watch.message()).await.expect("the stats stream ends") {}
}
