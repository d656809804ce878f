//! A report goes to the subscriptions active at the time it is accepted, through the public API.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{report, webhook_subscription, TestServer};
use crate::receiver::Receiver;

fn subscription_of(id: &str, receiver: &Receiver) -> serde_json::Value {
    let (url, secret) = receiver.endpoint(id);
    webhook_subscription(id, &format!("client-{id}"), &url, &secret)
}

#[tokio::test]
async fn a_new_subscription_does_not_receive_earlier_reports() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    server.subscribe(subscription_of("early", &receiver)).await;
    let first = server.deliver(report("evt-1", "rep-1")).await;
    assert_eq!(first.len(), 1);
    server.subscribe(subscription_of("late", &receiver)).await;
    let second = server.deliver(report("evt-2", "rep-2")).await;
    assert_eq!(second.len(), 2, "both subscriptions get the later report");
    server.wait_for_state(&first[0], "DELIVERED").await;
    for id in &second {
        server.wait_for_state(id, "DELIVERED").await;
    }
    let late: Vec<_> = receiver.received_by("late").iter().map(|r| r.body["data"]["report"]["event_id"].clone()).collect();
    assert_eq!(late, vec![json!("evt-2")], "the late subscription never sees evt-1");
}

#[tokio::test]
async fn a_cancelled_subscription_receives_nothing_new() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    server.subscribe(subscription_of("c", &receiver)).await;
    assert_eq!(server.deliver(report("evt-1", "rep-1")).await.len(), 1);
    let (status, cancelled) = server.send(Method::DELETE, "/api/v1/reporting/subscriptions/c", None).await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["status"], "cancelled");
    assert!(server.deliver(report("evt-2", "rep-2")).await.is_empty());
}

#[tokio::test]
async fn pausing_and_resuming_switches_at_the_change() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let mut sub = subscription_of("p", &receiver);
    server.subscribe(sub.clone()).await;
    sub["status"] = json!("paused");
    let (status, body) = server.send(Method::PUT, "/api/v1/reporting/subscriptions/p", Some(&sub)).await;
    assert_eq!(status, 200, "{body}");
    assert!(server.deliver(report("evt-1", "rep-1")).await.is_empty(), "paused: nothing");
    sub["status"] = json!("active");
    let (status, _) = server.send(Method::PUT, "/api/v1/reporting/subscriptions/p", Some(&sub)).await;
    assert_eq!(status, 200);
    assert_eq!(server.deliver(report("evt-2", "rep-2")).await.len(), 1, "active again: delivered");
}

#[tokio::test]
async fn an_update_applies_to_later_reports_only() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let mut sub = subscription_of("u", &receiver);
    server.subscribe(sub.clone()).await;
    assert_eq!(server.deliver(report("evt-1", "rep-1")).await.len(), 1);
    sub["filters"]["portfolio_ids"] = json!(["portfolio_002"]);
    let (status, _) = server.send(Method::PUT, "/api/v1/reporting/subscriptions/u", Some(&sub)).await;
    assert_eq!(status, 200);
    assert!(server.deliver(report("evt-2", "rep-2")).await.is_empty(), "portfolio_001 no longer wanted");
    let mut other = report("evt-3", "rep-3");
    other["report_data"]["portfolio_id"] = json!("portfolio_002");
    assert_eq!(server.deliver(other).await.len(), 1);
}

#[tokio::test]
async fn filters_and_targeting_select_subscriptions() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let mut glob = subscription_of("glob", &receiver);
    glob["filters"] = json!({"routing_key": "portfolio_001.performance.*"});
    server.subscribe(glob).await;
    let mut urgent = subscription_of("urgent", &receiver);
    urgent["filters"] = json!({"min_priority": 5});
    server.subscribe(urgent).await;
    let mut on_demand = subscription_of("ondemand", &receiver);
    on_demand["subscription_type"] = json!("ON_DEMAND");
    on_demand["filters"] = json!({});
    server.subscribe(on_demand).await;

    let ids = server.deliver(report("evt-1", "rep-1")).await;
    let glob_id = dataflows::delivery::delivery_id("rep-1", "glob", dataflows::delivery::DeliveryChannel::ApiWebhook);
    assert_eq!(ids, vec![glob_id], "priority 1 < 5, and ON_DEMAND needs targeting");

    let mut targeted = report("evt-2", "rep-2");
    targeted["routing"]["priority"] = json!(7);
    targeted["routing"]["routing_key"] = json!("portfolio_001.risk.daily");
    targeted["routing"]["target_subscribers"] = json!(["client-ondemand", "client-urgent"]);
    let mut got = server.deliver(targeted).await;
    got.sort();
    let mut expected: Vec<String> = ["urgent", "ondemand"]
        .iter()
        .map(|n| dataflows::delivery::delivery_id("rep-2", n, dataflows::delivery::DeliveryChannel::ApiWebhook))
        .collect();
    expected.sort();
    assert_eq!(got, expected, "targeted report: only named subscribers; glob no longer matches the key");
}
