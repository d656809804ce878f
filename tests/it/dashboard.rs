//! DASHBOARD_NOTIFICATION: stored per subscriber, and announced live over the WebSocket stream.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use crate::helpers::{eventually, report, TestServer};

fn dashboard_subscription(id: &str, subscriber: &str) -> serde_json::Value {
    json!({
        "subscription_id": id,
        "subscriber_id": subscriber,
        "report_types": ["PERFORMANCE_REPORT"],
        "delivery_preferences": {"channels": ["DASHBOARD_NOTIFICATION"], "notification_settings": {"dashboard": {}}}
    })
}

async fn next(socket: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>) -> serde_json::Value {
    let frame = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("a frame arrives").unwrap().unwrap();
    serde_json::from_str(frame.to_text().unwrap()).unwrap()
}

#[tokio::test]
async fn notifications_are_stored_and_streamed_to_the_subscription_only() {
    let server = TestServer::start().await;
    server.subscribe(dashboard_subscription("dash-1", "pm_001")).await;
    server.subscribe(dashboard_subscription("dash-2", "pm_002")).await;

    let ws_url = format!("ws://{}/api/v1/reporting/stream?subscription_id=dash-1&report_types=PERFORMANCE_REPORT", server.server.http_addr());
    // The credential in the handshake's Authorization header.
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url).unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {}", server.key).parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("websocket connects");
    assert_eq!(next(&mut socket).await["type"], "hello");

    let ids = server.deliver(report("evt-1", "rep-1")).await;
    assert_eq!(ids.len(), 2);
    let mine = dataflows::delivery::delivery_id("rep-1", "dash-1", dataflows::delivery::DeliveryChannel::DashboardNotification);
    server.wait_for_state(&mine, "DELIVERED").await;

    // The report, then its delivery once DELIVERED is durable; dash-2's never come here.
    let message = next(&mut socket).await;
    assert_eq!(message["type"], "report");
    assert_eq!(message["subscription_id"], "dash-1");
    assert_eq!(message["deliveries"][0]["delivery_id"], mine);
    assert_eq!(message["report"]["event_id"], "evt-1");
    let delivered = next(&mut socket).await;
    assert_eq!(delivered["type"], "delivery");
    assert_eq!(delivered["delivery_id"], mine);
    assert_eq!(delivered["status"], "DELIVERED");
    assert!(delivered["seq"].as_u64().unwrap() > message["seq"].as_u64().unwrap());

    let listed = eventually(Duration::from_secs(5), || async {
        let (_, list) = server.get("/api/v1/reporting/notifications/pm_001").await;
        (list.as_array().map(|a| a.len()) == Some(1)).then_some(list)
    })
    .await
    .expect("one stored notification");
    assert_eq!(listed[0]["notification_id"], mine);
    assert_eq!(listed[0]["report_id"], "rep-1");
}

#[tokio::test]
async fn the_stream_refuses_unknown_subscriptions_and_bad_parameters() {
    let server = TestServer::start().await;
    let (status, body) = server.get("/api/v1/reporting/stream?subscription_id=nope").await;
    assert_eq!(status, 404, "{body}");
    server.subscribe(dashboard_subscription("dash-1", "pm_001")).await;
    let (status, body) = server.get("/api/v1/reporting/stream?subscription_id=dash-1&report_types=GOSSIP").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "report_types");
    let (status, body) = server.get("/api/v1/reporting/stream").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "subscription_id");
}

/// `metadata.retention_days` end to end: a report kept for 0 days is purged by the background job
/// once delivered (its delivery status answers 404, its notification leaves the inbox, its rows
/// leave the analytics store), while a report kept for 30 days stays.
#[tokio::test]
async fn reports_past_their_retention_are_purged_by_the_background_job() {
    let server = TestServer::start_with(|c| {
        c.retention.purge_interval = Duration::from_millis(100);
        c.analytics.sql_enabled = true;
    })
    .await;
    server.subscribe(dashboard_subscription("dash-r", "pm_r")).await;
    let mut brief = report("evt-brief", "rep-brief");
    brief["metadata"]["retention_days"] = json!(0);
    let mut kept = report("evt-kept", "rep-kept");
    kept["metadata"]["retention_days"] = json!(30);
    let brief_id = server.deliver(brief).await.remove(0);
    let kept_id = server.deliver(kept).await.remove(0);
    server.wait_for_state(&kept_id, "DELIVERED").await;

    let purged = eventually(Duration::from_secs(10), || async {
        let (status, _) = server.get(&format!("/api/v1/reporting/delivery/{brief_id}/status")).await;
        (status == 404).then_some(())
    })
    .await;
    assert!(purged.is_some(), "the 0-day report's delivery is purged once delivered");
    let (_, inbox) = server.get("/api/v1/reporting/notifications/pm_r").await;
    let reports: Vec<&str> = inbox.as_array().unwrap().iter().map(|n| n["report_id"].as_str().unwrap()).collect();
    assert_eq!(reports, vec!["rep-kept"], "{inbox}");
    assert_eq!(server.status_of(&kept_id).await["status"], "DELIVERED");

    let sql = "SELECT report_id, count(*) AS n FROM (SELECT report_id FROM deliveries UNION ALL SELECT report_id FROM delivery_attempts) GROUP BY report_id ORDER BY report_id";
    let in_analytics = eventually(Duration::from_secs(10), || async {
        let (status, body) = server.post("/api/v1/reporting/analytics/query", &json!({"sql": sql})).await;
        assert_eq!(status, 200, "{body}");
        let ids: Vec<String> = body["rows"].as_array()?.iter().filter_map(|r| r["report_id"].as_str().map(str::to_string)).collect();
        (ids == ["rep-kept"]).then_some(body)
    })
    .await;
    assert!(in_analytics.is_some(), "the purged report's rows leave the analytics store, the kept one's stay");
}
