//! The demo end to end, small: every expected delivery accounted for, on every channel, with no
//! loss, and the JSON report carrying every channel of the spec's enum.

use repdist::demo::{run, DemoArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_delivers_everything_on_every_channel() {
    let args = DemoArgs { subscriptions: 600, reports: 800, json: true, concurrency: 32, rate: 2000, data_dir: None, seed: 11 };
    let summary = run(args).await.expect("the demo runs");
    assert!(summary.deliveries_expected > 100, "the workload must produce deliveries: {summary:?}");
    assert_eq!(summary.lost, 0, "{summary:?}");
    assert_eq!(summary.delivered + summary.dead_lettered, summary.deliveries_expected, "{summary:?}");
    assert_eq!(summary.unexpected_dead_letters, 0, "only endpoints built to fail permanently dead-letter: {summary:?}");
    assert_eq!(summary.bad_signatures, 0, "{summary:?}");
    assert_eq!(summary.resent_mismatches, 0, "a re-sent event is answered with the same ids: {summary:?}");
    assert!(summary.retries > 0, "flaky endpoints must cause retries: {summary:?}");
    assert!(summary.latency_ms.samples > 0 && summary.latency_ms.p50 > 0.0, "{summary:?}");
    let channels: Vec<&str> = summary.by_channel.keys().map(String::as_str).collect();
    assert_eq!(
        channels,
        ["API_WEBHOOK", "DASHBOARD_NOTIFICATION", "EMAIL", "MOBILE_PUSH", "SFTP", "SLACK_INTEGRATION"],
        "every channel of the spec's enum is reported"
    );
    for (name, channel) in &summary.by_channel {
        assert_eq!(channel.open, 0, "{name}: {summary:?}");
        assert!(channel.delivered > 0, "{name} must carry deliveries in the demo: {summary:?}");
        if name != "DASHBOARD_NOTIFICATION" {
            assert!(channel.p99_ms.is_some(), "{name}: the demo's peer timed its arrivals: {summary:?}");
        }
    }
}
