//! Bad input gets a 4xx with `{"error": {"code", "message", "field"}}`, never a 500.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{report, webhook_subscription, TestServer};

fn assert_error(status: u16, body: &serde_json::Value, expected_status: u16, field: Option<&str>) {
    assert_eq!(status, expected_status, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    if let Some(field) = field {
        assert_eq!(body["error"]["field"], field, "{body}");
    }
}

#[tokio::test]
async fn subscription_errors_name_the_field() {
    let server = TestServer::start().await;
    let good = webhook_subscription("s1", "client_001", "http://127.0.0.1:9/hook", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let cases: Vec<(serde_json::Value, &str)> = vec![
        ({ let mut b = good.clone(); b["report_types"] = json!(["NOT_A_TYPE"]); b }, "report_types[0]"),
        ({ let mut b = good.clone(); b["report_types"] = json!([]); b }, "report_types"),
        ({ let mut b = good.clone(); b.as_object_mut().unwrap().remove("subscriber_id"); b }, "subscriber_id"),
        ({ let mut b = good.clone(); b["surprise"] = json!(1); b }, "surprise"),
        ({ let mut b = good.clone(); b["delivery_preferences"]["channels"] = json!(["PIGEON"]); b }, "delivery_preferences.channels[0]"),
        ({ let mut b = good.clone(); b["delivery_preferences"]["notification_settings"]["webhook"]["url"] = json!("ftp://x"); b },
            "delivery_preferences.notification_settings.webhook.url"),
        ({ let mut b = good.clone(); b["delivery_preferences"]["notification_settings"]["webhook"]["secret"] = json!("hunter2"); b },
            "delivery_preferences.notification_settings.webhook.secret"),
        ({ let mut b = good.clone(); b["delivery_preferences"]["notification_settings"] = json!({}); b },
            "delivery_preferences.notification_settings.webhook"),
        ({ let mut b = good.clone(); b["filters"]["routing_key"] = json!("[unclosed"); b }, "filters.routing_key"),
        ({ let mut b = good.clone(); b["subscriber_id"] = json!("x".repeat(101)); b }, "subscriber_id"),
        ({ let mut b = good.clone(); b["delivery_preferences"]["channels"] = json!(["EMAIL"]);
           b["delivery_preferences"]["notification_settings"]["email"] = json!({"to": ["a@example.com"]}); b },
            "delivery_preferences.channels[0]"),
        ({ let mut b = good.clone(); b["subscription_type"] = json!("TRIGGERED"); b }, "filters.trigger"),
        ({ let mut b = good.clone(); b["subscription_type"] = json!("TRIGGERED");
           b["filters"]["trigger"] = json!({"content": [{"column": "x", "aggregate": "median", "gt": 1}]}); b }, "filters.trigger.content[0].aggregate"),
        ({ let mut b = good.clone(); b["subscription_type"] = json!("TRIGGERED");
           b["filters"]["trigger"] = json!({"content": [{"column": "x", "aggregate": "max"}]}); b }, "filters.trigger.content[0]"),
        ({ let mut b = good.clone(); b["filters"]["trigger"] = json!({"min_priority": 1}); b }, "filters.trigger"),
        ({ let mut b = good.clone(); b["filters"]["rows"] = json!([{"column": "region", "in": ["EMEA"], "eq": "APAC"}]); b }, "filters.rows[0]"),
        ({ let mut b = good.clone(); b["filters"]["rows"] = json!([{"column": "region", "like": "E%"}]); b }, "filters.rows[0].like"),
        ({ let mut b = good.clone(); b["filters"]["columns"] = json!(["a", ""]); b }, "filters.columns[1]"),
        ({ let mut b = good.clone(); b["delivery_preferences"]["format_preferences"] = json!(["PDF", "DOCX"]); b },
            "delivery_preferences.format_preferences[1]"),
        ({ let mut b = good.clone(); b["subscription_type"] = json!("SCHEDULED"); b }, "delivery_preferences.schedule"),
        ({ let mut b = good.clone(); b["subscription_type"] = json!("SCHEDULED");
           b["delivery_preferences"]["schedule"] = json!("every monday at 8"); b }, "delivery_preferences.schedule"),
        ({ let mut b = good.clone(); b["subscription_type"] = json!("SCHEDULED");
           b["delivery_preferences"]["schedule"] = json!("0 0 30 2 *"); b }, "delivery_preferences.schedule"),
        ({ let mut b = good.clone(); b["delivery_preferences"]["schedule"] = json!("0 8 * * *"); b }, "delivery_preferences.schedule"),
    ];
    for (body, field) in cases {
        let (status, answer) = server.post("/api/v1/reporting/subscribe", &body).await;
        assert_error(status, &answer, 422, Some(field));
    }
}

#[tokio::test]
async fn private_webhook_targets_are_refused_unless_allowed() {
    let server = TestServer::start_with(|c| c.allow_private_webhooks = false).await;
    let body = webhook_subscription("s1", "client_001", "http://127.0.0.1:9/hook", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let (status, answer) = server.post("/api/v1/reporting/subscribe", &body).await;
    assert_error(status, &answer, 422, Some("delivery_preferences.notification_settings.webhook.url"));
    for topic_url in ["http://127.0.0.1:9/topic", "http://localhost/topic", "http://169.254.169.254/latest", "http://[::1]/t"] {
        let body = json!({"subscriber_id": "client_001", "report_types": ["PERFORMANCE_REPORT"],
            "delivery_preferences": {"channels": ["MOBILE_PUSH"],
                "notification_settings": {"mobile_push": {"provider": "NTFY", "topic_url": topic_url}}}});
        let (status, answer) = server.post("/api/v1/reporting/subscribe", &body).await;
        assert_error(status, &answer, 422, Some("delivery_preferences.notification_settings.mobile_push.topic_url"));
    }
    let public = json!({"subscriber_id": "client_001", "report_types": ["PERFORMANCE_REPORT"],
        "delivery_preferences": {"channels": ["MOBILE_PUSH"],
            "notification_settings": {"mobile_push": {"provider": "NTFY", "topic_url": "https://ntfy.example.com/topic"}}}});
    let (status, answer) = server.post("/api/v1/reporting/subscribe", &public).await;
    assert_eq!(status, 201, "{answer}");
}

#[tokio::test]
async fn report_errors_name_the_field() {
    let server = TestServer::start().await;
    let cases: Vec<(serde_json::Value, &str)> = vec![
        ({ let mut b = report("e", "r"); b["data_type"] = json!("GOSSIP"); b }, "data_type"),
        ({ let mut b = report("e", "r"); b.as_object_mut().unwrap().remove("report_data"); b }, "report_data"),
        ({ let mut b = report("e", "r"); b["report_data"]["file_size_bytes"] = json!("big"); b }, "report_data.file_size_bytes"),
        ({ let mut b = report("e", "r"); b["report_data"]["file_size_bytes"] = json!(-1); b }, "report_data.file_size_bytes"),
        ({ let mut b = report("e", "r"); b["timestamp"] = json!("yesterday"); b }, "timestamp"),
        ({ let mut b = report("", "r"); b["event_id"] = json!(""); b }, "event_id"),
        ({ let mut b = report("e", "r"); b["routing"]["delivery_channels"] = json!(["FAX"]); b }, "routing.delivery_channels[0]"),
    ];
    for (body, field) in cases {
        let (status, answer) = server.post("/api/v1/reporting/deliver", &body).await;
        assert_error(status, &answer, 422, Some(field));
    }
}

#[tokio::test]
async fn malformed_oversized_and_mistyped_bodies() {
    let server = TestServer::start().await;
    let url = format!("{}/api/v1/reporting/deliver", server.base);
    let send = |body: String, content_type: &'static str| {
        let http = server.http.clone();
        let url = url.clone();
        async move {
            let response = http.post(url).header("content-type", content_type).body(body).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json_value().await)
        }
    };
    let (status, body) = send("{\"event_id\": ".into(), "application/json").await;
    assert_error(status, &body, 400, None);
    let (status, body) = send(report("e", "r").to_string(), "text/plain").await;
    assert_error(status, &body, 415, None);
    let huge = format!("{{\"event_id\": \"{}\"}}", "x".repeat(2 << 20));
    let (status, body) = send(huge, "application/json").await;
    assert_error(status, &body, 413, None);
}

#[tokio::test]
async fn unknown_things_are_404_and_conflicts_409() {
    let server = TestServer::start().await;
    let (status, body) = server.get("/api/v1/reporting/delivery/nope/status").await;
    assert_error(status, &body, 404, None);
    let (status, body) = server.send(Method::DELETE, "/api/v1/reporting/subscriptions/nope", None).await;
    assert_error(status, &body, 404, None);
    let (status, body) = server.post("/api/v1/reporting/dead-letters/nope/replay", &json!({})).await;
    assert_error(status, &body, 404, None);
    let (status, body) = server.get("/api/v1/reporting/nothing-here").await;
    assert_error(status, &body, 404, None);
    let (status, body) = server.get("/api/v1/reporting/dead-letters?limit=abc").await;
    assert_error(status, &body, 422, Some("limit"));

    let sub = webhook_subscription("dup", "client_001", "http://127.0.0.1:9/hook", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    server.subscribe(sub.clone()).await;
    let (status, body) = server.post("/api/v1/reporting/subscribe", &sub).await;
    assert_error(status, &body, 409, None);
}

trait JsonValue {
    async fn json_value(self) -> serde_json::Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> serde_json::Value {
        let text = self.text().await.unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    }
}
