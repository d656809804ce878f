//! `repdist demo` end to end on embedded defaults, small: nothing lost, failures where built in.

use repdist::demo::{run, DemoArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_loses_nothing_and_accounts_for_every_delivery() {
    let args = DemoArgs { subscriptions: 400, reports: 800, json: true, concurrency: 32, data_dir: None, seed: 11 };
    let summary = run(args).await.expect("the demo runs");
    assert!(summary.deliveries_expected > 100, "the workload must produce deliveries: {summary:?}");
    assert_eq!(summary.lost, 0, "{summary:?}");
    assert_eq!(summary.delivered + summary.dead_lettered, summary.deliveries_expected, "{summary:?}");
    assert_eq!(summary.unexpected_dead_letters, 0, "only endpoints built to fail permanently dead-letter: {summary:?}");
    assert_eq!(summary.bad_signatures, 0, "{summary:?}");
    assert_eq!(summary.resent_mismatches, 0, "{summary:?}");
    assert_eq!(summary.resent_mismatches, 0, "a re-sent event is answered with the same ids: {summary:?}");
    assert!(summary.retries > 0, "flaky endpoints must cause retries: {summary:?}");
    assert!(summary.latency_ms.samples > 0 && summary.latency_ms.p50 > 0.0, "{summary:?}");
    let webhook = &summary.by_channel["API_WEBHOOK"];
    assert_eq!(webhook.open, 0);
    assert!(summary.by_channel.contains_key("DASHBOARD_NOTIFICATION"));
}
