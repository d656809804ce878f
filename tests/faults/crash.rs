//! Crash: reports flow in through Kafka, state lives in PostgreSQL, and `repdist serve` is killed
//! with SIGKILL at random points (`REPDIST_TEST_FAULT_KILLS`, at least 10) and started again each
//! time, while the publisher keeps producing. A report is in Kafka before the service sees it, so
//! none may be missing at the end, whatever the kill interrupted: consuming, committing the
//! expansion, attempting, or recording an outcome.

use std::collections::HashSet;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::backend::Postgres;
use crate::helpers::eventually;
use crate::kafka_peer::{brokers, unique_prefix};
use crate::process::Serve;
use crate::receiver::Receiver;
use crate::stream::{expected_ids, service_env, subscribe, tally, Publisher};
use crate::summary::{setting, Trial};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_through_kafka_and_postgres_loses_no_delivery() {
    let kills = setting("REPDIST_TEST_FAULT_KILLS", 10).max(10);
    let seed = setting("REPDIST_TEST_FAULT_SEED", rand::random::<u32>() as usize) as u64;
    eprintln!("crash test: {kills} kills, seed {seed} (REPDIST_TEST_FAULT_SEED={seed} repeats the schedule)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let database = Postgres::new().await;
    let prefix = unique_prefix("faults");
    let env = service_env(&prefix, database.url(), &brokers());
    let data_dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    // Slow enough that deliveries are in flight when the kill comes.
    receiver.set_delay(Duration::from_millis(5));

    let mut server = Serve::start(data_dir.path(), &env);
    let subscriptions = subscribe(&server.base, &server.key, &receiver, &prefix, 3).await;
    let publisher = Publisher::start(&brokers(), &prefix);

    // Each server is killed mid-stream: once it has delivered something (a restarted consumer
    // first waits for the group to drop its killed predecessor), a random moment later.
    let mut progress_per_life = Vec::new();
    for life in 0..kills {
        let before = receiver.received().len();
        let resumed = eventually(Duration::from_secs(60), || async { (receiver.received().len() > before).then_some(()) }).await;
        assert!(resumed.is_some(), "server {life} delivered nothing within 60 s of its start");
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
        progress_per_life.push(receiver.received().len() - before);
        server.kill();
        server = Serve::start(data_dir.path(), &env);
    }
    eprintln!("deliveries during each killed server's life: {progress_per_life:?}");
    let reports = publisher.stop().await;

    let expected = expected_ids(&prefix, reports, &subscriptions);
    let arrived = eventually(Duration::from_secs(120), || async {
        let seen: HashSet<String> = receiver.received().into_iter().map(|r| r.delivery_id).collect();
        expected.is_subset(&seen).then_some(())
    })
    .await;
    server.kill();
    let received = receiver.received();
    let tally = tally(&received, &expected);
    let fault = "SIGKILL of repdist serve (Kafka + PostgreSQL)";
    Trial { fault, trials: kills, reports, deliveries: expected.len(), lost: tally.lost.len(), duplicates: tally.duplicates }.record();

    assert!(reports > kills, "the publisher must have kept producing through the kills ({reports} reports)");
    assert!(arrived.is_some() && tally.lost.is_empty(), "{} of {} deliveries never arrived, e.g. {:?}", tally.lost.len(), expected.len(), &tally.lost[..tally.lost.len().min(3)]);
    assert!(tally.foreign.is_empty(), "deliveries under ids that are not (report, subscription, channel): {:?}", tally.foreign);
    assert!(received.iter().all(|r| r.signature_ok), "every delivery is signed");
}
