//! Webhook delivery end to end: signed, retried on transient failure, dead-lettered on permanent.

use std::time::Duration;

use crate::helpers::{eventually, report, webhook_subscription, TestServer};
use crate::receiver::Receiver;

#[tokio::test]
async fn a_report_reaches_a_matching_webhook_signed_with_its_delivery_id() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let (url, secret) = receiver.endpoint("a");
    server.subscribe(webhook_subscription("sub-a", "client_001", &url, &secret)).await;

    let ids = server.deliver(report("evt-1", "rep-1")).await;
    assert_eq!(ids, vec![dataflows::delivery::delivery_id("rep-1", "sub-a", dataflows::delivery::DeliveryChannel::ApiWebhook)]);
    let status = server.wait_for_state(&ids[0], "DELIVERED").await;
    assert_eq!(status["subscription_id"], "sub-a");
    assert_eq!(status["report_id"], "rep-1");
    assert_eq!(status["channel"], "API_WEBHOOK");
    assert_eq!(status["retry_count"], 0);

    let got = receiver.received_by("a");
    assert_eq!(got.len(), 1);
    assert!(got[0].signature_ok, "signature must verify with the subscription's secret");
    assert_eq!(got[0].delivery_id, ids[0]);
    assert_eq!(got[0].body["type"], "report.distributed");
    assert_eq!(got[0].body["data"]["report"]["event_id"], "evt-1");
    assert_eq!(got[0].body["data"]["delivery_id"], ids[0]);
}

#[tokio::test]
async fn a_re_sent_event_creates_nothing_new() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let (url, secret) = receiver.endpoint("a");
    server.subscribe(webhook_subscription("sub-a", "client_001", &url, &secret)).await;
    let first = server.deliver(report("evt-1", "rep-1")).await;
    server.wait_for_state(&first[0], "DELIVERED").await;
    let (status, again) = server.post("/api/v1/reporting/deliver", &report("evt-1", "rep-1")).await;
    assert_eq!(status, 202);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["delivery_ids"][0], first[0]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received_by("a").len(), 1, "a re-sent event must not be delivered again");
}

#[tokio::test]
async fn transient_failures_are_retried_until_delivered() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let (url, secret) = receiver.endpoint("flaky");
    receiver.script("flaky", vec![(503, None), (429, Some("0")), (204, None)]);
    server.subscribe(webhook_subscription("sub-f", "client_001", &url, &secret)).await;
    let ids = server.deliver(report("evt-1", "rep-1")).await;
    let status = server.wait_for_state(&ids[0], "DELIVERED").await;
    assert_eq!(status["retry_count"], 2);
    let got = receiver.received_by("flaky");
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|r| r.delivery_id == ids[0] && r.signature_ok), "every attempt carries the same delivery id");
    let attempts: Vec<_> = got.iter().map(|r| r.body["data"]["attempt"].as_u64().unwrap()).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
}

#[tokio::test]
async fn permanent_failure_is_dead_lettered_with_its_reason_and_can_be_replayed() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let (url, secret) = receiver.endpoint("gone");
    receiver.script("gone", vec![(410, None), (204, None)]);
    server.subscribe(webhook_subscription("sub-g", "client_001", &url, &secret)).await;
    let ids = server.deliver(report("evt-1", "rep-1")).await;
    let status = server.wait_for_state(&ids[0], "DEAD_LETTERED").await;
    assert!(status["error_details"].as_str().unwrap().contains("410"), "{status}");
    assert_eq!(receiver.received_by("gone").len(), 1, "a permanent failure is not retried");

    let (code, page) = server.get("/api/v1/reporting/dead-letters").await;
    assert_eq!(code, 200);
    assert_eq!(page["items"][0]["delivery_id"], ids[0]);
    assert!(page["items"][0]["reason"].as_str().unwrap().contains("410"));

    let (code, _) = server.post(&format!("/api/v1/reporting/dead-letters/{}/replay", ids[0]), &serde_json::json!({})).await;
    assert_eq!(code, 202);
    server.wait_for_state(&ids[0], "DELIVERED").await;
    let (_, page) = server.get("/api/v1/reporting/dead-letters").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0, "a replayed delivery leaves the dead-letter set");
    let (code, _) = server.post(&format!("/api/v1/reporting/dead-letters/{}/replay", ids[0]), &serde_json::json!({})).await;
    assert_eq!(code, 404, "only a current dead letter can be replayed");
}

#[tokio::test]
async fn exhausting_the_attempts_dead_letters_with_the_last_error() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let (url, secret) = receiver.endpoint("down");
    receiver.script("down", vec![(503, None)]);
    server.subscribe(webhook_subscription("sub-d", "client_001", &url, &secret)).await;
    let ids = server.deliver(report("evt-1", "rep-1")).await;
    let status = server.wait_for_state(&ids[0], "DEAD_LETTERED").await;
    let reason = status["error_details"].as_str().unwrap();
    assert!(reason.contains("exhausted") && reason.contains("503"), "{reason}");
    // test_config allows 4 attempts in all.
    let arrived = eventually(Duration::from_secs(2), || async {
        (receiver.received_by("down").len() == 4).then_some(())
    })
    .await;
    assert!(arrived.is_some(), "expected exactly 4 attempts, got {}", receiver.received_by("down").len());
}

#[tokio::test]
async fn one_report_fans_out_per_subscription_and_channel() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let mut expected = Vec::new();
    for name in ["x", "y", "z"] {
        let (url, secret) = receiver.endpoint(name);
        let mut sub = webhook_subscription(&format!("sub-{name}"), &format!("client-{name}"), &url, &secret);
        sub["delivery_preferences"]["channels"] = serde_json::json!(["API_WEBHOOK", "DASHBOARD_NOTIFICATION"]);
        server.subscribe(sub).await;
        for channel in [dataflows::delivery::DeliveryChannel::ApiWebhook, dataflows::delivery::DeliveryChannel::DashboardNotification] {
            expected.push(dataflows::delivery::delivery_id("rep-9", &format!("sub-{name}"), channel));
        }
    }
    let mut ids = server.deliver(report("evt-9", "rep-9")).await;
    ids.sort();
    expected.sort();
    assert_eq!(ids, expected);
    for id in &ids {
        server.wait_for_state(id, "DELIVERED").await;
    }
    assert_eq!(receiver.received().len(), 3);
}
