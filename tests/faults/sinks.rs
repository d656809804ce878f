//! Sink faults: receivers that reset connections, hang past the attempt timeout, answer 500 for a
//! while, or 429 with `Retry-After`, and then recover, get everything; a receiver that answers 410
//! gets its deliveries dead-lettered, and after it is fixed a replay delivers them all.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use crate::flaky::{Fault, FlakyProxy};
use crate::helpers::{report, webhook_subscription, TestServer};
use crate::receiver::Receiver;
use crate::stream::tally;
use crate::summary::{setting, Trial};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_receivers_get_everything_once_they_recover_and_dead_letters_replay() {
    let reports = setting("REPDIST_TEST_FAULT_REPORTS", 20);
    let receiver = Receiver::start().await;
    let resets = FlakyProxy::start(receiver.addr, vec![Fault::Reset; 3]).await;
    let hangs = FlakyProxy::start(receiver.addr, vec![Fault::Hang; 2]).await;
    receiver.script("e500", vec![(500, None), (500, None), (500, None), (204, None)]);
    receiver.script("e429", vec![(429, Some("1")), (204, None)]);
    receiver.script("gone", vec![(410, None)]);

    let server = TestServer::start_with(|config| {
        config.delivery.attempt_timeout = Duration::from_millis(500);
        config.retry.max_attempts = 6;
    })
    .await;
    let mut subscriptions = Vec::new();
    for (name, via) in [("reset", Some(resets.addr)), ("hang", Some(hangs.addr)), ("e500", None), ("e429", None), ("gone", None)] {
        let (mut url, secret) = receiver.endpoint(name);
        if let Some(proxy) = via {
            url = url.replace(&receiver.addr.to_string(), &proxy.to_string());
        }
        server.subscribe(webhook_subscription(&format!("sub_{name}"), &format!("client_{name}"), &url, &secret)).await;
        subscriptions.push(name);
    }
    let mut ids_by_endpoint: HashMap<String, Vec<String>> = HashMap::new();
    for n in 0..reports {
        let ids = server.deliver(report(&format!("evt_s{n}"), &format!("report_s{n}"))).await;
        assert_eq!(ids.len(), subscriptions.len());
        for id in ids {
            let status = server.status_of(&id).await;
            let endpoint = status["subscription_id"].as_str().unwrap().trim_start_matches("sub_").to_string();
            ids_by_endpoint.entry(endpoint).or_default().push(id);
        }
    }

    // The recovering receivers: every delivery DELIVERED.
    for name in ["reset", "hang", "e500", "e429"] {
        for id in &ids_by_endpoint[name] {
            server.wait_for_state_within(id, "DELIVERED", Duration::from_secs(30)).await;
        }
    }
    assert_eq!(resets.faults_left() + hangs.faults_left(), 0, "every injected connection fault was hit");
    // The 410 receiver: every delivery dead-lettered with the reason; fixed, then replayed.
    for id in &ids_by_endpoint["gone"] {
        let status = server.wait_for_state_within(id, "DEAD_LETTERED", Duration::from_secs(30)).await;
        assert!(status["error_details"].as_str().is_some_and(|e| e.contains("410")), "{status}");
    }
    receiver.script("gone", vec![(204, None)]);
    for id in &ids_by_endpoint["gone"] {
        let (code, body) = server.post(&format!("/api/v1/reporting/dead-letters/{id}/replay"), &Value::Null).await;
        assert_eq!(code, 202, "{body}");
    }
    for id in &ids_by_endpoint["gone"] {
        server.wait_for_state_within(id, "DELIVERED", Duration::from_secs(30)).await;
    }

    let expected: HashSet<String> = ids_by_endpoint.values().flatten().cloned().collect();
    let tally = tally(&receiver.received(), &expected);
    let injected = 3 + 2 + 3 + 1 + reports;
    Trial {
        fault: "sink: connection resets, hangs past the timeout, 500s, 429 + Retry-After; 410 dead-lettered, then replayed",
        trials: injected,
        reports,
        deliveries: expected.len(),
        lost: tally.lost.len(),
        duplicates: tally.duplicates,
    }
    .record();
    assert!(tally.lost.is_empty(), "every delivery reached its receiver; lost: {:?}", tally.lost);
    assert!(tally.foreign.is_empty(), "nothing arrived under an unknown id: {:?}", tally.foreign);
}
