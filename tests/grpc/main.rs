//! The gRPC API against a real server started in-process: the generated tonic clients, the
//! standard health and reflection services, and (in `foreign`) a Python grpcio client.

mod decoders;
mod foreign;
mod helpers;
mod slow_client;
#[path = "../it/helpers.rs"]
#[allow(dead_code)]
mod it_helpers;

use std::time::Duration;

use dataflows::delivery::{delivery_id, DeliveryChannel};
use repdist::grpc::proto::{self, SubscriptionAction};
use tonic::Code;

use helpers::{dashboard_subscription, report, TestServer};

pub(crate) const WAIT: Duration = Duration::from_secs(10);

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
    assert_eq!(message.kind, proto::UpdateKind::Report as i32);
    assert_eq!(message.deliveries.len(), 1, "{message:?}");
    assert_eq!(message.deliveries[0].delivery_id, mine);
    assert_eq!(message.deliveries[0].channel, proto::DeliveryChannel::DashboardNotification as i32);
    assert_eq!(message.subscription_id, "dash-1");
    assert_eq!(message.subscriber_id, "pm_001");
    assert_eq!(message.report_type, proto::ReportDataType::PerformanceReport as i32);
    assert_eq!(message.report_id, "rep-1");
    assert_eq!(message.event_id, "evt-1");
    assert!(message.sequence >= message.epoch && message.epoch > 0);
    let report: serde_json::Value = serde_json::from_str(&message.report_json).unwrap();
    assert_eq!(report["report_data"]["portfolio_id"], "portfolio_001");
    // Next comes dash-1's delivery becoming DELIVERED; dash-2's updates never reach this stream.
    let delivered = tokio::time::timeout(WAIT, stream.message()).await.expect("in time").unwrap().unwrap();
    assert_eq!(delivered.kind, proto::UpdateKind::Delivery as i32);
    assert_eq!(delivered.delivery_id, mine);
    assert_eq!(delivered.subscription_id, "dash-1");
    let change = delivered.delivery.expect("the delivery change");
    assert_eq!(change.status, "DELIVERED");
    assert_eq!(change.attempt, 1);
    assert!(delivered.sequence > message.sequence);

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
async fn streams_select_by_report_type_and_refuse_empty_selections() {
    let server = TestServer::start().await;
    server.create(dashboard_subscription("dash-1", "pm_001")).await;
    let mut risk = dashboard_subscription("risk-1", "pm_002");
    risk["report_types"] = serde_json::json!(["RISK_REPORT"]);
    server.create(risk).await;
    let mut client = server.reporting().await;

    let by_type = |t: proto::ReportDataType| proto::StreamRequest { subscription_id: String::new(), report_types: vec![t as i32], after_sequence: None };
    let mut performance = client.stream_reports(by_type(proto::ReportDataType::PerformanceReport)).await.unwrap().into_inner();
    let mut risk = client.stream_reports(by_type(proto::ReportDataType::RiskReport)).await.unwrap().into_inner();
    server.deliver(report("evt-1", "rep-1")).await;
    let message = tokio::time::timeout(WAIT, performance.message()).await.expect("a report arrives in time").unwrap().unwrap();
    assert_eq!(message.report_id, "rep-1");
    let delivered = tokio::time::timeout(WAIT, performance.message()).await.expect("in time").unwrap().unwrap();
    assert_eq!(delivered.kind, proto::UpdateKind::Delivery as i32);
    // The performance report is announced in full before the risk report is accepted: a RISK
    // stream that let it through would show it first.
    let mut risk_report = report("evt-2", "rep-2");
    risk_report["data_type"] = serde_json::json!("RISK_REPORT");
    server.deliver(risk_report).await;
    let message = tokio::time::timeout(WAIT, risk.message()).await.expect("a report arrives in time").unwrap().unwrap();
    assert_eq!(message.report_id, "rep-2", "{message:?}");
    assert_eq!(message.subscription_id, "risk-1");
    assert_eq!(message.report_type, proto::ReportDataType::RiskReport as i32);

    let empty = proto::StreamRequest::default();
    let error = client.stream_reports(empty).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert_eq!(error.metadata().get("field").unwrap(), "subscription_id");

    let unknown = proto::StreamRequest { subscription_id: "nope".into(), ..Default::default() };
    assert_eq!(client.stream_reports(unknown).await.unwrap_err().code(), Code::NotFound);
    let ahead = proto::StreamRequest { subscription_id: "dash-1".into(), after_sequence: Some(u64::MAX), ..Default::default() };
    assert_eq!(client.stream_reports(ahead).await.unwrap_err().code(), Code::OutOfRange);
}

/// Reads until the DELIVERED update of `report_id`; returns everything read.
pub(crate) async fn read_until_delivered(stream: &mut tonic::Streaming<proto::ReportMessage>, report_id: &str) -> Vec<proto::ReportMessage> {
    let mut seen = Vec::new();
    loop {
        let message = tokio::time::timeout(WAIT, stream.message()).await.expect("in time").expect("no error").expect("open");
        let done = message.report_id == report_id && message.delivery.as_ref().is_some_and(|d| d.status == "DELIVERED");
        seen.push(message);
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn a_stream_resumes_after_a_sequence_without_a_gap() {
    let server = TestServer::start().await;
    server.create(dashboard_subscription("dash-1", "pm_001")).await;
    let mut client = server.reporting().await;
    let request = |after: Option<u64>| proto::StreamRequest { subscription_id: "dash-1".into(), report_types: vec![], after_sequence: after };
    let mut stream = client.stream_reports(request(None)).await.unwrap().into_inner();
    server.deliver(report("evt-1", "rep-1")).await;
    let first = read_until_delivered(&mut stream, "rep-1").await;
    let last = first.last().unwrap().sequence;
    drop(stream);

    // Each report delivered before the next is published, so their updates come in this order.
    for (event, rep) in [("evt-2", "rep-2"), ("evt-3", "rep-3")] {
        let ids = server.deliver(report(event, rep)).await;
        server.wait_for_state(&ids[0], "DELIVERED").await;
    }
    let mut stream = client.stream_reports(request(Some(last))).await.unwrap().into_inner();
    let mut resumed = read_until_delivered(&mut stream, "rep-2").await;
    resumed.extend(read_until_delivered(&mut stream, "rep-3").await);
    let kinds: Vec<(String, i32)> = resumed.iter().map(|m| (m.report_id.clone(), m.kind)).collect();
    let (report_kind, delivery_kind) = (proto::UpdateKind::Report as i32, proto::UpdateKind::Delivery as i32);
    assert_eq!(
        kinds,
        vec![("rep-2".into(), report_kind), ("rep-2".into(), delivery_kind), ("rep-3".into(), report_kind), ("rep-3".into(), delivery_kind)]
    );
    assert!(resumed[0].sequence > last);
    assert!(resumed.windows(2).all(|w| w[0].sequence < w[1].sequence));
}

#[tokio::test]
async fn resuming_past_the_replay_buffer_starts_with_a_gap() {
    let server = TestServer::start_with(|config| config.stream.replay_buffer = 2).await;
    server.create(dashboard_subscription("dash-1", "pm_001")).await;
    let mut client = server.reporting().await;
    let request = |after: Option<u64>| proto::StreamRequest { subscription_id: "dash-1".into(), report_types: vec![], after_sequence: after };
    let mut live = client.stream_reports(request(None)).await.unwrap().into_inner();
    server.deliver(report("evt-1", "rep-1")).await;
    let last = read_until_delivered(&mut live, "rep-1").await.last().unwrap().sequence;
    for i in 2..=3 {
        server.deliver(report(&format!("evt-{i}"), &format!("rep-{i}"))).await;
        read_until_delivered(&mut live, &format!("rep-{i}")).await;
    }

    let mut resumed = client.stream_reports(request(Some(last))).await.unwrap().into_inner();
    let gap = tokio::time::timeout(WAIT, resumed.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(gap.kind, proto::UpdateKind::Gap as i32, "{gap:?}");
    let range = gap.gap.expect("the missed range");
    assert_eq!(range.from_sequence, last + 1);
    assert!(range.to_sequence > last);
    // Then what the buffer still holds: rep-3's two updates.
    let rest = read_until_delivered(&mut resumed, "rep-3").await;
    assert_eq!(rest.len(), 2, "{rest:?}");
    assert_eq!(rest[0].sequence, range.to_sequence + 1);
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

#[tokio::test]
async fn calls_need_credentials_and_a_subscriber_sees_only_its_own() {
    use helpers::Bearer;
    use repdist::store::Role;
    let server = TestServer::start().await;
    server.create(dashboard_subscription("dash-1", "pm_001")).await;
    server.create(dashboard_subscription("dash-2", "pm_002")).await;
    let ids = server.deliver(report("evt-1", "rep-1")).await;
    assert_eq!(ids.len(), 2);
    let mine = delivery_id("rep-1", "dash-1", DeliveryChannel::DashboardNotification);
    let theirs = delivery_id("rep-1", "dash-2", DeliveryChannel::DashboardNotification);
    server.wait_for_state(&mine, "DELIVERED").await;

    // No metadata, or a bad credential: UNAUTHENTICATED on both services.
    for bearer in [Bearer(None), Bearer::new("rd_not-a-key")] {
        let mut reporting = server.reporting_as(bearer.clone()).await;
        let error = reporting.get_delivery_status(proto::DeliveryStatusRequest { delivery_id: mine.clone() }).await.unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated, "{error:?}");
        let error = server.query_as(bearer).await.get_stats(proto::GetStatsRequest {}).await.unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated, "{error:?}");
    }

    // A publisher may not manage subscriptions nor query: PERMISSION_DENIED.
    let publisher = Bearer::new(&server.key_for(Role::Publisher, None).await);
    let create = proto::SubscriptionRequest {
        action: SubscriptionAction::Create as i32,
        subscription_id: String::new(),
        subscription_json: dashboard_subscription("dash-p", "pm_001").to_string(),
    };
    let error = server.reporting_as(publisher.clone()).await.manage_subscription(create).await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied, "{error:?}");
    let error = server.query_as(publisher).await.list_dead_letters(proto::ListDeadLettersRequest { limit: 0, after: String::new() }).await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied, "{error:?}");

    // A subscriber: its own data, and NOT_FOUND for another's.
    let me = Bearer::new(&server.key_for(Role::Subscriber, Some("pm_001")).await);
    let mut reporting = server.reporting_as(me.clone()).await;
    let own = reporting.get_delivery_status(proto::DeliveryStatusRequest { delivery_id: mine.clone() }).await.unwrap().into_inner();
    assert_eq!(own.delivery_id, mine);
    let error = reporting.get_delivery_status(proto::DeliveryStatusRequest { delivery_id: theirs.clone() }).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound, "{error:?}");
    let cancel = proto::SubscriptionRequest { action: SubscriptionAction::Cancel as i32, subscription_id: "dash-2".into(), subscription_json: String::new() };
    let error = reporting.manage_subscription(cancel).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound, "{error:?}");
    let stream = proto::StreamRequest { subscription_id: "dash-2".into(), report_types: vec![], after_sequence: None };
    let error = reporting.stream_reports(stream).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound, "{error:?}");
    let stream = proto::StreamRequest { subscription_id: String::new(), report_types: vec![proto::ReportDataType::PerformanceReport as i32], after_sequence: None };
    let error = reporting.stream_reports(stream).await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied, "a subscriber cannot follow every report of a type: {error:?}");
    let stream = proto::StreamRequest { subscription_id: "dash-1".into(), report_types: vec![], after_sequence: None };
    reporting.stream_reports(stream).await.expect("its own stream opens");
    let mut query = server.query_as(me).await;
    let listed = query.list_subscriptions(proto::ListSubscriptionsRequest { subscriber_id: "pm_001".into(), include_inactive: true }).await.unwrap().into_inner();
    assert_eq!(listed.subscriptions.len(), 1);
    let error = query.list_subscriptions(proto::ListSubscriptionsRequest { subscriber_id: "pm_002".into(), include_inactive: true }).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound, "{error:?}");
    let (status, still) = server_get(&server, "/api/v1/reporting/subscriptions/pm_002").await;
    assert_eq!((status, still[0]["status"].as_str()), (200, Some("active")), "untouched");
}

async fn server_get(server: &TestServer, path: &str) -> (u16, serde_json::Value) {
    let response = server.http.get(format!("{}{path}", server.base)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, serde_json::from_str(&response.text().await.unwrap()).unwrap_or_default())
}
