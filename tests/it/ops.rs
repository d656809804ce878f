//! Health, metrics, stats and the OpenAPI document.

use std::time::Duration;

use crate::helpers::{eventually, report, webhook_subscription, TestServer};
use crate::receiver::Receiver;

#[tokio::test]
async fn health_metrics_stats_and_openapi() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let (url, secret) = receiver.endpoint("a");
    server.subscribe(webhook_subscription("sub-a", "client_001", &url, &secret)).await;
    let ids = server.deliver(report("evt-1", "rep-1")).await;
    server.wait_for_state(&ids[0], "DELIVERED").await;

    let (status, health) = server.get("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");

    let window = eventually(Duration::from_secs(5), || async {
        let (_, stats) = server.get("/api/v1/reporting/stats").await;
        stats.as_array()?.iter().find(|w| w["channel"] == "API_WEBHOOK" && w["deliveries_successful"] == 1).cloned()
    })
    .await
    .expect("a stats window with the delivery");
    assert_eq!(window["report_type"], "PERFORMANCE_REPORT");
    assert_eq!(window["deliveries_attempted"], 1);
    assert_eq!(window["deliveries_failed"], 0);
    assert!(window["avg_delivery_time_ms"].as_f64().unwrap() >= 0.0);

    let (status, summary) = server.get("/api/v1/reporting/deliveries/summary").await;
    assert_eq!(status, 200);
    assert_eq!(summary["by_channel"]["API_WEBHOOK"]["DELIVERED"], 1);
    assert_eq!(summary["total"], 1);

    let metrics = server.http.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("repdist_attempts_total"), "{metrics}");
    assert!(metrics.contains("repdist_reports_accepted_total"), "{metrics}");

    let (status, doc) = server.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/api/v1/reporting/subscribe", "/api/v1/reporting/deliver", "/api/v1/reporting/delivery/{delivery_id}/status",
                 "/api/v1/reporting/dead-letters", "/api/v1/reporting/stats", "/healthz"] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    assert!(doc["components"]["schemas"].get("ReportDistribution").is_some());
}
