//! Crash and restart: `repdist serve` is killed (SIGKILL) mid-run and started again on the same
//! data directory. Every report acknowledged before the crash is delivered to every subscription
//! active at its time, under the delivery id of its 202 answer; nothing arrives under another id.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::helpers::{eventually, report, webhook_subscription};
use crate::process::Serve;
use crate::receiver::Receiver;

async fn post(http: &reqwest::Client, url: String, body: &serde_json::Value) -> Result<(u16, serde_json::Value), reqwest::Error> {
    let response = http.post(url).header("content-type", "application/json").body(body.to_string()).send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or_default()))
}

#[tokio::test]
async fn a_killed_server_resumes_every_acknowledged_delivery_under_the_same_id() {
    let data_dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(15));
    let first = Serve::start(data_dir.path(), &[]);
    // The restarted server keeps the same keys (the same data directory).
    let http = crate::helpers::client_with(Some(&first.key));
    for i in 0..5 {
        let (url, secret) = receiver.endpoint(&format!("e{i}"));
        let sub = webhook_subscription(&format!("sub-{i}"), &format!("client-{i}"), &url, &secret);
        let (status, body) = post(&http, format!("{}/api/v1/reporting/subscribe", first.base), &sub).await.unwrap();
        assert_eq!(status, 201, "{body}");
    }

    // Publish until the kill; remember what was acknowledged.
    let mut acknowledged: HashMap<String, Vec<String>> = HashMap::new();
    let mut unacknowledged = Vec::new();
    let mut first = Some(first);
    for n in 0..60 {
        let event = format!("evt-{n}");
        if n == 40 {
            first.take().unwrap().kill();
        }
        let Some(server) = first.as_ref() else {
            unacknowledged.push(event);
            continue;
        };
        match post(&http, format!("{}/api/v1/reporting/deliver", server.base), &report(&event, &format!("rep-{n}"))).await {
            Ok((202, ack)) => {
                let ids = ack["delivery_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
                acknowledged.insert(event, ids);
            }
            _ => unacknowledged.push(event),
        }
    }
    let delivered_before_restart: HashSet<String> = receiver.received().into_iter().map(|r| r.delivery_id).collect();

    let second = Serve::start(data_dir.path(), &[]);
    // The publisher re-sends what was never acknowledged (at-least-once from its side).
    for event in &unacknowledged {
        let n: usize = event.trim_start_matches("evt-").parse().unwrap();
        let (status, ack) = post(&http, format!("{}/api/v1/reporting/deliver", second.base), &report(event, &format!("rep-{n}"))).await.unwrap();
        assert_eq!(status, 202, "{ack}");
        let ids = ack["delivery_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        acknowledged.insert(event.clone(), ids);
    }
    assert_eq!(acknowledged.len(), 60);
    let expected: HashSet<String> = acknowledged.values().flatten().cloned().collect();
    assert_eq!(expected.len(), 60 * 5, "every report goes to all five subscriptions");

    let all_arrived = eventually(Duration::from_secs(30), || async {
        let seen: HashSet<String> = receiver.received().into_iter().map(|r| r.delivery_id).collect();
        expected.is_subset(&seen).then_some(())
    })
    .await;
    let received = receiver.received();
    let seen: HashSet<String> = received.iter().map(|r| r.delivery_id.clone()).collect();
    let missing: Vec<_> = expected.difference(&seen).collect();
    assert!(all_arrived.is_some(), "{} deliveries never arrived, e.g. {:?}", missing.len(), missing.iter().take(3).collect::<Vec<_>>());
    let foreign: Vec<_> = seen.difference(&expected).collect();
    assert!(foreign.is_empty(), "deliveries under ids no 202 announced: {foreign:?}");
    assert!(received.iter().all(|r| r.signature_ok));
    assert!(delivered_before_restart.len() < expected.len(), "the kill must happen mid-run for this test to mean anything");
    second.kill();
}

/// A template set over the API is in the database before the 200: a server started again on the same
/// data directory lists it and renders with it; a deleted one stays deleted.
#[tokio::test]
async fn email_templates_survive_a_restart() {
    use reqwest::Method;
    use serde_json::json;

    use crate::helpers::TestServer;
    use crate::smtp::SmtpPeer;

    let smtp = SmtpPeer::start();
    let relay = smtp.addr;
    let with_relay = move |config: &mut repdist::config::Config| {
        config.email = Some(sinks::email::EmailConfig {
            host: relay.ip().to_string(),
            port: Some(relay.port()),
            from: "Reports <reports@repdist.test>".to_string(),
            ..Default::default()
        });
    };
    let data_dir = tempfile::tempdir().unwrap();
    let kept = json!({"subject": "Kept {{ report.report_id }}", "html": "<p>{{ report.report_period }}</p>", "text": "Kept text {{ report.report_period }}"});
    let dropped = json!({"subject": "Dropped", "html": "<p>x</p>", "text": "x"});

    let first = TestServer::start_in(data_dir.path(), with_relay).await;
    let (status, body) = first.send(Method::PUT, "/api/v1/reporting/templates/PERFORMANCE_REPORT/en", Some(&kept)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = first.send(Method::PUT, "/api/v1/reporting/templates/*/en", Some(&dropped)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = first.send(Method::DELETE, "/api/v1/reporting/templates/*/en", None).await;
    assert_eq!(status, 204);
    // A refused template is not stored either.
    let broken = json!({"subject": "{{ nope", "html": "", "text": ""});
    let (status, body) = first.send(Method::PUT, "/api/v1/reporting/templates/RISK_REPORT/en", Some(&broken)).await;
    assert_eq!((status, body["error"]["field"].clone()), (422, json!("subject")), "{body}");
    first.server.shutdown().await.expect("graceful shutdown");

    let second = TestServer::start_in(data_dir.path(), with_relay).await;
    let (status, list) = second.get("/api/v1/reporting/templates").await;
    assert_eq!(status, 200, "{list}");
    let keys: Vec<String> = list["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{}/{}", t["report_type"].as_str().unwrap(), t["locale"].as_str().unwrap()))
        .collect();
    assert_eq!(keys, ["PERFORMANCE_REPORT/en"], "{list}");
    assert_eq!(list["templates"][0]["text"], kept["text"]);

    let subscription = json!({
        "subscription_id": "mail-restart", "subscriber_id": "mail-restart-client",
        "report_types": ["PERFORMANCE_REPORT"],
        "delivery_preferences": {"channels": ["EMAIL"], "notification_settings": {"email": {"to": ["ann@client.test"]}}}
    });
    second.subscribe(subscription).await;
    let mut event = report("evt-mail-restart", "rep-mail-restart");
    event["report_data"]["file_path"] = json!("");
    let delivery = second.deliver(event).await.remove(0);
    second.wait_for_state(&delivery, "DELIVERED").await;
    let arrived = smtp.arrived();
    assert_eq!(arrived.len(), 1);
    let message = mail_parser::MessageParser::default().parse(&arrived[0].data).expect("a MIME message");
    assert_eq!(message.subject(), Some("Kept rep-mail-restart"), "rendered with the template stored before the restart");
    assert_eq!(message.body_text(0).as_deref().map(str::trim), Some("Kept text 2025-06"));
    second.server.shutdown().await.expect("graceful shutdown");
}
