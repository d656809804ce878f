//! Crash and restart: `repdist serve` is killed (SIGKILL) mid-run and started again on the same
//! data directory. Every report acknowledged before the crash is delivered to every subscription
//! active at its time, under the delivery id of its 202 answer; nothing arrives under another id.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{eventually, report, webhook_subscription};
use crate::receiver::Receiver;

struct Serve {
    child: Child,
    base: String,
}

fn serve(data_dir: &std::path::Path) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_repdist"))
        .arg("serve")
        .env("REPDIST_HTTP_ADDR", "127.0.0.1:0")
        .env("REPDIST_GRPC_ADDR", "127.0.0.1:0")
        .env("REPDIST_DATA_DIR", data_dir)
        .env("REPDIST_ALLOW_PRIVATE_WEBHOOKS", "true")
        .env("REPDIST_RETRY__INITIAL_BACKOFF", "50ms")
        .env("REPDIST_RETRY__MAX_BACKOFF", "200ms")
        .env("REPDIST_DELIVERY__MAX_IN_FLIGHT", "8")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("repdist serve starts");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("reads the listening line");
    let base = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line: {line}")).to_string();
    Serve { child, base }
}

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
    let http = reqwest::Client::new();

    let first = serve(data_dir.path());
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
            let mut server = first.take().unwrap();
            server.child.kill().expect("SIGKILL");
            server.child.wait().unwrap();
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

    let mut second = serve(data_dir.path());
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
    second.child.kill().unwrap();
    second.child.wait().unwrap();
}
