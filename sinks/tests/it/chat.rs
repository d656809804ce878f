//! SLACK_INTEGRATION (Slack Block Kit and Teams Adaptive Cards) against a real receiver on loopback.
//! What arrived is checked against the documented structure of each format, not against our own
//! renderer's output.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use sinks::{ChatConfig, ChatKind, ChatSink, DeliveryRequest, Destination, Sink, SinkError};

use crate::receiver::{refused_addr, Reply, TestReceiver};

pub const ENVELOPE: &str = r#"{"type":"report.distributed","timestamp":"2025-06-21T10:00:00Z","data":{
    "delivery_id":"dlv_0f9c2a","subscription_id":"sub_42","subscriber_id":"acme","channel":"SLACK_INTEGRATION",
    "attempt":1,"report":{"event_id":"evt_1","timestamp":"2025-06-21T09:59:00Z","data_type":"report",
    "report_data":{"report_id":"report_20250621_001","report_type":"performance","portfolio_id":"portfolio_<001>",
    "report_period":"2025-Q2","file_path":"/reports/2025/q2.pdf","file_size_bytes":2048576},
    "routing":{"topic":"reports","routing_key":"portfolio_001.performance.quarterly","priority":2},
    "metadata":{"source_service":"reporting","delivery_priority":2}}}}"#;

/// The test receivers are on loopback, which the default configuration refuses.
fn sink() -> ChatSink {
    ChatSink::new(ChatConfig { allow_private_destinations: true, ..Default::default() }).expect("valid config")
}

fn request(kind: ChatKind, url: &str, link: Option<&str>) -> DeliveryRequest {
    DeliveryRequest {
        idempotency_key: "dlv_0f9c2a".into(),
        destination: Destination::Chat { kind, webhook_url: url.into(), link: link.map(String::from) },
        payload: Bytes::from_static(ENVELOPE.as_bytes()),
        timeout: Duration::from_secs(2),
        attempt: 1,
        priority: 2,
        encrypt_to: None,
    }
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("the receiver got JSON")
}

/// Block Kit as documented for incoming webhooks: a `text` fallback and `blocks`, each of a known
/// type with that type's required fields and limits.
fn assert_block_kit(message: &Value) {
    assert!(message["text"].as_str().is_some_and(|t| !t.is_empty()), "fallback text: {message}");
    let blocks = message["blocks"].as_array().expect("blocks array");
    assert!(!blocks.is_empty() && blocks.len() <= 50, "{message}");
    let text_object = |t: &Value, kind: &str, max: usize| {
        assert_eq!(t["type"], kind, "{t}");
        let text = t["text"].as_str().expect("text string");
        assert!(!text.is_empty() && text.chars().count() <= max, "{t}");
    };
    for block in blocks {
        match block["type"].as_str().expect("block type") {
            "header" => text_object(&block["text"], "plain_text", 150),
            "section" => {
                let fields = block.get("fields").and_then(Value::as_array);
                assert!(fields.is_some() || block.get("text").is_some(), "section needs text or fields: {block}");
                if let Some(fields) = fields {
                    assert!(fields.len() <= 10, "{block}");
                    fields.iter().for_each(|f| text_object(f, "mrkdwn", 2000));
                }
                if let Some(text) = block.get("text") {
                    text_object(text, "mrkdwn", 3000);
                }
            }
            "actions" => {
                for element in block["elements"].as_array().expect("elements") {
                    assert_eq!(element["type"], "button", "{element}");
                    text_object(&element["text"], "plain_text", 75);
                    let url = element["url"].as_str().expect("button url");
                    assert!(url.starts_with("https://") || url.starts_with("http://"), "{url}");
                }
            }
            "context" => {
                let elements = block["elements"].as_array().expect("elements");
                assert!(!elements.is_empty() && elements.len() <= 10, "{block}");
                elements.iter().for_each(|e| text_object(e, "mrkdwn", 3000));
            }
            other => panic!("unknown block type {other}: {block}"),
        }
    }
}

/// A Teams workflow message: one Adaptive Card attachment, with schema, version and body elements
/// of known types.
fn assert_adaptive_card_message(message: &Value) -> &Value {
    assert_eq!(message["type"], "message", "{message}");
    let attachments = message["attachments"].as_array().expect("attachments");
    assert_eq!(attachments.len(), 1, "{message}");
    assert_eq!(attachments[0]["contentType"], "application/vnd.microsoft.card.adaptive");
    let card = &attachments[0]["content"];
    assert_eq!(card["type"], "AdaptiveCard", "{card}");
    assert_eq!(card["version"], "1.4", "{card}");
    assert_eq!(card["$schema"], "http://adaptivecards.io/schemas/adaptive-card.json");
    let body = card["body"].as_array().expect("card body");
    assert!(!body.is_empty(), "{card}");
    for element in body {
        match element["type"].as_str().expect("element type") {
            "TextBlock" => assert!(element["text"].as_str().is_some_and(|t| !t.is_empty()), "{element}"),
            "FactSet" => {
                for fact in element["facts"].as_array().expect("facts") {
                    assert!(fact["title"].is_string() && fact["value"].is_string(), "{fact}");
                }
            }
            other => panic!("unexpected card element {other}: {element}"),
        }
    }
    if let Some(actions) = card.get("actions") {
        for action in actions.as_array().expect("actions array") {
            assert_eq!(action["type"], "Action.OpenUrl", "{action}");
            assert!(action["title"].is_string() && action["url"].as_str().is_some_and(|u| u.starts_with("http")));
        }
    }
    card
}

#[tokio::test]
async fn slack_gets_a_block_kit_message_with_the_report_fields_and_a_link_button() {
    let receiver = TestReceiver::start().await;
    receiver.script([Reply::status(200).body("ok")]);
    let url = receiver.url("/services/T000/B000/XXXXSECRET");
    let receipt = sink()
        .deliver(&request(ChatKind::Slack, &url, Some("https://portal.example/reports/report_20250621_001")))
        .await
        .expect("200 ok is success");
    assert_eq!(receipt.detail, "HTTP 200");

    let got = receiver.single();
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/services/T000/B000/XXXXSECRET");
    assert_eq!(got.header("content-type"), Some("application/json"));
    let message = json_of(&got.body);
    assert_block_kit(&message);
    let blocks = message["blocks"].as_array().expect("blocks");
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], "Performance report report_20250621_001");
    let fields: Vec<&str> =
        blocks[1]["fields"].as_array().expect("fields").iter().filter_map(|f| f["text"].as_str()).collect();
    assert_eq!(
        fields,
        ["*Type*\nperformance", "*Portfolio*\nportfolio_&lt;001&gt;", "*Period*\n2025-Q2", "*Priority*\n2"]
    );
    let button = blocks.iter().find(|b| b["type"] == "actions").expect("an actions block");
    assert_eq!(button["elements"][0]["url"], "https://portal.example/reports/report_20250621_001");
    assert!(message["text"].as_str().expect("text").contains("Performance report report_20250621_001"));
    assert!(got.body.windows(10).any(|w| w == b"dlv_0f9c2a"), "the delivery id is shown");
}

#[tokio::test]
async fn without_a_web_link_slack_shows_the_file_path_instead_of_a_button() {
    let receiver = TestReceiver::start().await;
    receiver.script([Reply::status(200).body("ok")]);
    sink().deliver(&request(ChatKind::Slack, &receiver.url("/hook"), None)).await.expect("delivered");
    let message = json_of(&receiver.single().body);
    assert_block_kit(&message);
    let blocks = message["blocks"].as_array().expect("blocks");
    assert!(blocks.iter().all(|b| b["type"] != "actions"), "a bare path cannot be a button: {message}");
    assert!(message.to_string().contains("/reports/2025/q2.pdf"), "{message}");
}

#[tokio::test]
async fn teams_gets_an_adaptive_card_with_facts_and_an_open_url_action() {
    let receiver = TestReceiver::start().await;
    receiver.script([Reply::status(202)]);
    let receipt = sink()
        .deliver(&request(
            ChatKind::Teams,
            &receiver.url("/workflows/abc/triggers/manual/paths/invoke?sig=SECRET"),
            Some("https://portal.example/r/1"),
        ))
        .await
        .expect("202 is success");
    assert_eq!(receipt.detail, "HTTP 202");
    let got = receiver.single();
    assert_eq!(got.header("content-type"), Some("application/json"));
    let message = json_of(&got.body);
    let card = assert_adaptive_card_message(&message);
    assert_eq!(card["body"][0]["type"], "TextBlock");
    assert_eq!(card["body"][0]["text"], "Performance report report_20250621_001");
    let facts = card["body"][1]["facts"].as_array().expect("facts");
    let fact = |title: &str| facts.iter().find(|f| f["title"] == title).map(|f| f["value"].clone());
    assert_eq!(fact("Portfolio"), Some("portfolio_<001>".into()), "no mrkdwn escaping in a card");
    assert_eq!(fact("Period"), Some("2025-Q2".into()));
    assert_eq!(fact("Priority"), Some("2".into()));
    assert_eq!(card["actions"][0]["url"], "https://portal.example/r/1");
}

#[tokio::test]
async fn rate_limits_honour_retry_after_on_both_services() {
    for kind in [ChatKind::Slack, ChatKind::Teams] {
        let receiver = TestReceiver::start().await;
        receiver.script([Reply::status(429).header("retry-after", "7").body("rate_limited")]);
        let result = sink().deliver(&request(kind, &receiver.url("/hook"), None)).await;
        assert_eq!(
            result,
            Err(SinkError::Transient {
                reason: "HTTP 429: rate_limited".into(),
                retry_after: Some(Duration::from_secs(7))
            }),
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn slack_refusals_are_permanent_and_server_errors_transient() {
    let receiver = TestReceiver::start().await;
    let url = receiver.url("/hook");
    let cases = [
        (Reply::status(400).body("invalid_payload"), Err(SinkError::permanent("HTTP 400: invalid_payload"))),
        (Reply::status(404).body("no_service"), Err(SinkError::permanent("HTTP 404: no_service"))),
        (Reply::status(410).body("channel_is_archived"), Err(SinkError::permanent("HTTP 410: channel_is_archived"))),
        (
            Reply::status(200).body("channel_is_archived"),
            Err(SinkError::permanent("Slack refused the message: channel_is_archived")),
        ),
        (Reply::status(500).body("rollup_error"), Err(SinkError::transient("HTTP 500: rollup_error"))),
    ];
    for (reply, expected) in cases {
        receiver.script([reply]);
        let result = sink().deliver(&request(ChatKind::Slack, &url, None)).await.map(|r| r.detail);
        assert_eq!(result, expected);
    }
    assert_eq!(receiver.recorded().len(), 5);
}

#[tokio::test]
async fn the_webhook_url_never_reaches_a_reason_or_a_log_line() {
    let receiver = TestReceiver::start().await;
    let url = receiver.url("/services/T000/B000/XXXXSECRET");
    receiver.script([Reply::status(404).body(format!("no hook at {url}"))]);
    let error = sink().deliver(&request(ChatKind::Slack, &url, None)).await.expect_err("404");
    assert_eq!(error, SinkError::permanent("HTTP 404: no hook at <redacted>"));

    let refused = format!("http://{}/services/T000/B000/XXXXSECRET", refused_addr());
    let error = sink().deliver(&request(ChatKind::Teams, &refused, None)).await.expect_err("refused");
    assert!(error.is_transient(), "{error:?}");
    assert!(!error.reason().contains("XXXXSECRET"), "{error:?}");

    let printed = format!("{:?}", request(ChatKind::Slack, &url, None));
    assert!(!printed.contains("XXXXSECRET") && printed.contains("<redacted>"), "{printed}");
}

#[tokio::test]
async fn another_channels_destination_or_a_broken_payload_is_permanent_and_sends_nothing() {
    let receiver = TestReceiver::start().await;
    let mut wrong = request(ChatKind::Slack, &receiver.url("/hook"), None);
    wrong.destination = Destination::Webhook { url: receiver.url("/hook"), secret: "whsec_x".into() };
    let error = sink().deliver(&wrong).await.expect_err("wrong destination");
    assert!(!error.is_transient() && !error.reason().contains("whsec_x"), "{error:?}");

    let mut broken = request(ChatKind::Slack, &receiver.url("/hook"), None);
    broken.payload = Bytes::from_static(b"not json");
    assert!(!sink().deliver(&broken).await.expect_err("broken payload").is_transient());
    assert!(receiver.recorded().is_empty());
}

/// A digest body as the service renders it: three reports of one tick.
const DIGEST: &str = r#"{"type":"report.digest","timestamp":"2025-06-21T08:00:01Z","data":{
    "delivery_id":"dig_7","subscription_id":"sub_42","subscriber_id":"acme","channel":"SLACK_INTEGRATION",
    "attempt":1,"schedule":"0 8 * * *","tick":"2025-06-21T08:00:00Z","report_count":3,"reports":[
    {"delivery_id":"m1","report":{"report_data":{"report_id":"r1","report_type":"performance","portfolio_id":"portfolio_<001>","report_period":"2025-Q2"}}},
    {"delivery_id":"m2","report":{"report_data":{"report_id":"r2","report_type":"risk","file_path":"https://files.example/r2.pdf"}}},
    {"delivery_id":"m3","report":{"report_data":{"report_id":"r3","title":"Compliance & controls"}}}]}}"#;

#[tokio::test]
async fn a_digest_is_one_message_listing_its_reports_on_both_services() {
    let receiver = TestReceiver::start().await;
    receiver.script([Reply::status(200).body("ok")]);
    let mut slack = request(ChatKind::Slack, &receiver.url("/slack"), Some("https://portal.example/digests"));
    slack.payload = Bytes::from_static(DIGEST.as_bytes());
    sink().deliver(&slack).await.expect("delivered");
    let message = json_of(&receiver.single().body);
    assert_block_kit(&message);
    let blocks = message["blocks"].as_array().expect("blocks");
    assert_eq!(blocks[0]["text"]["text"], "3 new reports");
    let lines: Vec<&str> = blocks.iter().filter(|b| b["type"] == "section").filter_map(|b| b["text"]["text"].as_str()).collect();
    assert_eq!(
        lines,
        [
            "*Performance report r1*\nPortfolio portfolio_&lt;001&gt;, period 2025-Q2",
            "*<https://files.example/r2.pdf|Risk report r2>*\nA new report is available",
            "*Compliance &amp; controls*\nA new report is available",
        ]
    );
    let button = blocks.iter().find(|b| b["type"] == "actions").expect("the subscription's link");
    assert_eq!(button["elements"][0]["url"], "https://portal.example/digests");
    assert!(message.to_string().contains("dig_7"), "the digest's id is shown: {message}");

    let receiver = TestReceiver::start().await;
    receiver.script([Reply::status(202)]);
    let mut teams = request(ChatKind::Teams, &receiver.url("/teams"), None);
    teams.payload = Bytes::from_static(DIGEST.as_bytes());
    sink().deliver(&teams).await.expect("delivered");
    let message = json_of(&receiver.single().body);
    let card = assert_adaptive_card_message(&message);
    let texts: Vec<&str> = card["body"].as_array().unwrap().iter().filter_map(|e| e["text"].as_str()).collect();
    assert_eq!(texts[0], "3 new reports");
    for title in ["Performance report r1", "Risk report r2", "Compliance & controls"] {
        assert!(texts.contains(&title), "{title} in {texts:?}");
    }
}
