//! Dependency faults, on private instances of each dependency: PostgreSQL restarted (every
//! connection cut), the Kafka broker killed and restarted, Redis killed and started again, each
//! while reports keep flowing. The service must recover by itself, lose nothing, and say in
//! `/healthz` when its cache is down.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::eventually;
use crate::kafka_peer::unique_prefix;
use crate::peers::{PrivatePostgres, Restartable};
use crate::process::Serve;
use crate::receiver::Receiver;
use crate::stream::{expected_ids, service_env, subscribe, tally, Publisher};
use crate::summary::Trial;

const RECOVERY: Duration = Duration::from_secs(60);

/// Waits until more deliveries arrived than `before`: the service is making progress again.
async fn progress(receiver: &Receiver, after: &str) {
    let before = receiver.received().len();
    let resumed = eventually(RECOVERY, || async { (receiver.received().len() > before).then_some(()) }).await;
    assert!(resumed.is_some(), "no delivery within {RECOVERY:?} after {after}");
}

async fn health(base: &str) -> Value {
    let response = reqwest::get(format!("{base}/healthz")).await.expect("healthz answers");
    serde_json::from_str(&response.text().await.expect("healthz answers")).expect("healthz is JSON")
}

async fn cache_state_becomes(base: &str, state: &str) -> Value {
    eventually(RECOVERY, || async {
        let health = health(base).await;
        (health["cache"]["state"] == state).then_some(health)
    })
    .await
    .unwrap_or_else(|| panic!("/healthz never reported the cache {state}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kafka_and_redis_restarts_mid_stream_lose_no_delivery() {
    let postgres = PrivatePostgres::start();
    let mut kafka = Restartable::tansu();
    let mut redis = Restartable::redis();
    let brokers = format!("127.0.0.1:{}", kafka.port);
    let prefix = unique_prefix("deps");
    let mut env = service_env(&prefix, &postgres.url(), &brokers);
    env.push(("REPDIST_REDIS_URL", format!("redis://127.0.0.1:{}", redis.port)));
    let data_dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;

    let server = Serve::start(data_dir.path(), &env);
    assert_eq!(health(&server.base).await["cache"]["state"], "up");
    let subscriptions = subscribe(&server.base, &server.key, &receiver, &prefix, 3).await;
    let publisher = Publisher::start(&brokers, &prefix);
    progress(&receiver, "the start").await;

    postgres.restart();
    progress(&receiver, "PostgreSQL restarted").await;

    kafka.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    kafka.resume();
    progress(&receiver, "the Kafka broker restarted").await;

    redis.kill();
    let down = cache_state_becomes(&server.base, "down").await;
    assert_eq!(down["status"], "ok", "a cache outage does not make the service unhealthy: {down}");
    progress(&receiver, "Redis stopped").await;
    redis.resume();
    cache_state_becomes(&server.base, "up").await;
    progress(&receiver, "Redis started again").await;

    let reports = publisher.stop().await;
    let expected = expected_ids(&prefix, reports, &subscriptions);
    let arrived = eventually(Duration::from_secs(120), || async {
        let seen: HashSet<String> = receiver.received().into_iter().map(|r| r.delivery_id).collect();
        expected.is_subset(&seen).then_some(())
    })
    .await;
    assert_eq!(health(&server.base).await["status"], "ok");
    server.kill();
    let tally = tally(&receiver.received(), &expected);
    let fault = "dependencies: PostgreSQL restarted, Kafka broker killed and restarted, Redis killed and restarted";
    Trial { fault, trials: 3, reports, deliveries: expected.len(), lost: tally.lost.len(), duplicates: tally.duplicates }.record();

    assert!(arrived.is_some() && tally.lost.is_empty(), "{} of {} deliveries never arrived, e.g. {:?}", tally.lost.len(), expected.len(), &tally.lost[..tally.lost.len().min(3)]);
    assert!(tally.foreign.is_empty(), "unknown delivery ids: {:?}", tally.foreign);
}
