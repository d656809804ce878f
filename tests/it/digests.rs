//! SCHEDULED subscriptions end to end: subscribed and published over REST, collected into digests,
//! and what the real peers on loopback (a signature-checking webhook receiver, an SMTP server)
//! received at each cron tick. Ticks every second (or at a chosen second), so reports may fall into
//! one digest or, across a tick, two: every check is per digest, from the ids the 202s named.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use dataflows::delivery::{delivery_id, DeliveryChannel};
use dataflows::digest::digest_id;
use mail_parser::MessageParser;
use serde_json::{json, Value};

use crate::helpers::{eventually, report, TestServer};
use crate::receiver::{Received, Receiver};
use crate::smtp::SmtpPeer;

fn scheduled(id: &str, schedule: &str, channels: Value, settings: Value) -> Value {
    json!({
        "subscription_id": id,
        "subscriber_id": format!("{id}-client"),
        "subscription_type": "SCHEDULED",
        "report_types": ["PERFORMANCE_REPORT"],
        "delivery_preferences": {"channels": channels, "schedule": schedule, "notification_settings": settings}
    })
}

/// Publishes reports `prefix-0..n`; returns, per digest id the 202s named, the report ids in it.
async fn publish(server: &TestServer, prefix: &str, n: usize) -> BTreeMap<String, BTreeSet<String>> {
    let mut digests: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for i in 0..n {
        let report_id = format!("{prefix}-{i}");
        let ids = server.deliver(report(&format!("evt-{report_id}"), &report_id)).await;
        assert_eq!(ids.len(), 1, "one digest per report and channel: {ids:?}");
        digests.entry(ids[0].clone()).or_default().insert(report_id);
    }
    digests
}

/// Waits until the receiver has `count` requests at `endpoint`.
async fn requests(receiver: &Receiver, endpoint: &str, count: usize) -> Vec<Received> {
    eventually(Duration::from_secs(10), || async {
        let received = receiver.received_by(endpoint);
        (received.len() >= count).then_some(received)
    })
    .await
    .unwrap_or_else(|| panic!("expected {count} request(s) at {endpoint}, got {}", receiver.received_by(endpoint).len()))
}

fn tick_of(body: &Value) -> u64 {
    let tick = body["data"]["tick"].as_str().expect("a tick");
    DateTime::parse_from_rfc3339(tick).expect("RFC 3339").timestamp_micros() as u64
}

#[tokio::test]
async fn a_webhook_gets_one_signed_digest_per_tick_with_every_report_under_a_stable_id() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let (url, secret) = receiver.endpoint("digest");
    let settings = json!({"webhook": {"url": url, "secret": secret}});
    server.subscribe(scheduled("sched-1", "* * * * * *", json!(["API_WEBHOOK"]), settings)).await;

    // Usually one digest; a tick between two reports splits them, and each digest is checked alone.
    let digests = publish(&server, "rep-w", 4).await;
    for id in digests.keys() {
        let status = server.wait_for_state(id, "DELIVERED").await;
        assert_eq!(status["channel"], "API_WEBHOOK", "{status}");
        assert_eq!(status["subscription_id"], "sched-1", "{status}");
        assert!(status["report_id"].as_str().unwrap().starts_with("digest:"), "{status}");
        assert_eq!(status["retry_count"], 0, "{status}");
    }

    let received = requests(&receiver, "digest", digests.len()).await;
    assert_eq!(received.len(), digests.len(), "one request per digest, nothing per report");
    for request in &received {
        assert!(request.signature_ok, "signed like any webhook");
        let body = &request.body;
        assert_eq!(body["type"], "report.digest");
        assert_eq!(request.delivery_id, body["data"]["delivery_id"], "webhook-id is the digest's delivery id");
        let expected_id = digest_id("sched-1", DeliveryChannel::ApiWebhook, tick_of(body));
        assert_eq!(request.delivery_id, expected_id, "the id is (subscription, channel, tick)");
        let reports: BTreeSet<String> = body["data"]["reports"]
            .as_array()
            .expect("reports")
            .iter()
            .map(|entry| {
                let report_id = entry["report"]["report_data"]["report_id"].as_str().unwrap().to_string();
                let member = delivery_id(&report_id, "sched-1", DeliveryChannel::ApiWebhook);
                assert_eq!(entry["delivery_id"], member, "each report keeps the id it would have alone");
                report_id
            })
            .collect();
        assert_eq!(Some(&reports), digests.get(&request.delivery_id), "the digest holds exactly the reports its 202s named");
        assert_eq!(body["data"]["report_count"], reports.len());
        assert_eq!(body["data"]["schedule"], "* * * * * *");
    }
    let all: BTreeSet<&String> = digests.values().flatten().collect();
    assert_eq!(all.len(), 4, "every report went out");

    // Later ticks without reports send nothing more.
    let seen = receiver.received_by("digest").len();
    let later = publish(&server, "rep-w-later", 1).await;
    let (late_id, _) = later.iter().next().unwrap();
    server.wait_for_state(late_id, "DELIVERED").await;
    assert_eq!(receiver.received_by("digest").len(), seen + 1);

    // A re-sent event is answered with the same digest id.
    let ids = server.deliver(report("evt-rep-w-0", "rep-w-0")).await;
    let first: Vec<&String> = digests.iter().filter(|(_, r)| r.contains("rep-w-0")).map(|(id, _)| id).collect();
    assert_eq!(ids.iter().collect::<Vec<_>>(), first);
}

#[tokio::test]
async fn an_email_digest_lists_every_report_and_carries_the_digest_id() {
    let smtp = SmtpPeer::start();
    let relay = smtp.addr;
    let server = TestServer::start_with(move |config| {
        config.email = Some(sinks::email::EmailConfig {
            host: relay.ip().to_string(),
            port: Some(relay.port()),
            from: "Reports <reports@repdist.test>".to_string(),
            ..Default::default()
        });
    })
    .await;
    let settings = json!({"email": {"to": ["Ann <ann@client.test>"]}});
    server.subscribe(scheduled("sched-mail", "* * * * * *", json!(["EMAIL"]), settings)).await;

    let digests = publish(&server, "rep-m", 3).await;
    for id in digests.keys() {
        server.wait_for_state(id, "DELIVERED").await;
    }
    let arrived = eventually(Duration::from_secs(10), || async {
        let arrived = smtp.arrived();
        (arrived.len() >= digests.len()).then_some(arrived)
    })
    .await
    .expect("the digests arrived");
    assert_eq!(arrived.len(), digests.len(), "one message per digest");
    for message in &arrived {
        assert_eq!(message.rcpt_to, ["ann@client.test"]);
        let parsed = MessageParser::default().parse(&message.data).expect("a MIME message");
        let message_id = parsed.message_id().expect("a Message-ID").to_string();
        let (id, reports) = digests
            .iter()
            .find(|(id, _)| message_id.contains(id.as_str()))
            .unwrap_or_else(|| panic!("Message-ID {message_id} names one of the digests {digests:?}"));
        let subject = parsed.subject().expect("a subject");
        let count = reports.len();
        assert!(subject.starts_with(&format!("{count} new report")), "{subject}");
        let text = parsed.body_text(0).expect("a text body");
        for report_id in reports {
            assert!(text.contains(report_id.as_str()), "{report_id} missing from:\n{text}");
        }
        assert!(text.contains(id.as_str()), "the text names the digest: {text}");
        let html = parsed.body_html(0).expect("an HTML body");
        assert_eq!(reports.iter().filter(|r| html.contains(r.as_str())).count(), count, "{html}");
        assert_eq!(parsed.attachments().count(), 0);
    }
}

#[tokio::test]
async fn collected_reports_survive_a_restart_and_go_out_at_their_tick() {
    let data_dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let (url, secret) = receiver.endpoint("after-restart");
    let first = TestServer::start_in(data_dir.path(), |_| {}).await;
    // Fires once a minute, at a second a few seconds from now: the restart fits before it.
    let at = (Utc::now() + chrono::Duration::seconds(8)).second();
    let schedule = format!("{at} * * * * *");
    let settings = json!({"webhook": {"url": url, "secret": secret}});
    first.subscribe(scheduled("sched-r", &schedule, json!(["API_WEBHOOK"]), settings)).await;
    let digests = publish(&first, "rep-r", 3).await;
    assert_eq!(digests.len(), 1, "all three fall before the one tick: {digests:?}");
    let (id, reports) = digests.into_iter().next().unwrap();
    first.server.shutdown().await.expect("clean shutdown");

    let second = TestServer::start_in(data_dir.path(), |_| {}).await;
    second.wait_for_state(&id, "DELIVERED").await;
    let received = requests(&receiver, "after-restart", 1).await;
    assert_eq!(received.len(), 1, "one digest, sent once");
    assert_eq!(received[0].delivery_id, id);
    let sent: BTreeSet<String> = received[0].body["data"]["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["report"]["report_data"]["report_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sent, reports, "every member collected before the restart");
    second.server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_digest_is_retried_dead_lettered_and_replayed_like_any_delivery() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let (flaky_url, flaky_secret) = receiver.endpoint("flaky");
    receiver.script("flaky", vec![(503, None), (204, None)]);
    let (gone_url, gone_secret) = receiver.endpoint("gone");
    receiver.script("gone", vec![(410, None), (204, None)]);
    for (id, url, secret) in [("sched-flaky", flaky_url, flaky_secret), ("sched-gone", gone_url, gone_secret)] {
        let settings = json!({"webhook": {"url": url, "secret": secret}});
        server.subscribe(scheduled(id, "* * * * * *", json!(["API_WEBHOOK"]), settings)).await;
    }
    let ids = server.deliver(report("evt-retry", "rep-retry")).await;
    assert_eq!(ids.len(), 2, "one digest per subscription: {ids:?}");
    let flaky = digest_of(&ids, "sched-flaky", &server).await;
    let gone = digest_of(&ids, "sched-gone", &server).await;

    let status = server.wait_for_state(&flaky, "DELIVERED").await;
    assert_eq!(status["retry_count"], 1, "{status}");
    let attempts = receiver.received_by("flaky");
    assert_eq!(attempts.len(), 2);
    assert!(attempts.iter().all(|a| a.delivery_id == flaky), "every attempt under the digest's id");
    assert_eq!(attempts[0].body["data"]["reports"], attempts[1].body["data"]["reports"], "the same members");
    assert_eq!((attempts[0].body["data"]["attempt"].as_u64(), attempts[1].body["data"]["attempt"].as_u64()), (Some(1), Some(2)));

    let status = server.wait_for_state(&gone, "DEAD_LETTERED").await;
    assert!(status["error_details"].as_str().unwrap_or_default().contains("410"), "{status}");
    let (code, letters) = server.get("/api/v1/reporting/dead-letters").await;
    assert_eq!(code, 200, "{letters}");
    assert!(letters["items"].as_array().unwrap().iter().any(|l| l["delivery_id"] == gone), "{letters}");
    let (code, answer) = server.post(&format!("/api/v1/reporting/dead-letters/{gone}/replay"), &json!({})).await;
    assert!(code < 300, "{code} {answer}");
    server.wait_for_state(&gone, "DELIVERED").await;
    let replayed = receiver.received_by("gone");
    assert_eq!(replayed.len(), 2);
    let member = replayed[1].body["data"]["reports"][0]["report"]["report_data"]["report_id"].clone();
    assert_eq!(member, "rep-retry", "the replay carries the members");
}

/// The digest among `ids` that belongs to `subscription_id` (from its status).
async fn digest_of(ids: &[String], subscription_id: &str, server: &TestServer) -> String {
    for id in ids {
        if server.status_of(id).await["subscription_id"] == subscription_id {
            return id.clone();
        }
    }
    panic!("no digest of {subscription_id} among {ids:?}")
}
