//! `repdist demo`: the whole service in-process on embedded defaults, driven through its public API
//! against a real signature-verifying webhook receiver and a WebSocket client, with an honest
//! account at the end: every expected delivery is delivered, dead-lettered, or counted as lost.

mod arrivals;
mod http_peers;
mod receiver;
mod sftp_peer;
pub mod smtp_peer;
mod summary;
pub(crate) mod workload;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub use summary::{print, ChannelSummary, DemoSummary, LatencyMs};

use crate::config::Config;
use receiver::Receiver;

#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// Subscriptions to create.
    #[arg(long, default_value_t = 10_000)]
    pub subscriptions: usize,
    /// Reports to publish.
    #[arg(long, default_value_t = 5_000)]
    pub reports: usize,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Publish requests in flight at most.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Reports published per second, on a fixed schedule (open loop: a slow answer does not delay
    /// the next report, and latency is measured from each report's scheduled time, so queueing in
    /// the service shows). 0: as fast as `--concurrency` allows (a throughput run).
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Data directory (default: a fresh temporary one).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Seed of the generated workload.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

pub(crate) fn verify(secret: &str, headers: &axum::http::HeaderMap, body: &[u8]) -> Result<(), String> {
    sinks::webhook::verify_signature(secret, headers, body)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<DemoSummary> {
    let temp = tempfile_dir()?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| temp.clone());
    let mut config = Config::default();
    config.http_addr = "127.0.0.1:0".parse()?;
    config.grpc_addr = "127.0.0.1:0".parse()?;
    config.data_dir = data_dir;
    config.allow_private_webhooks = true;
    // Shortened retry schedule so flaky endpoints recover within seconds (defaults: 1 s, x2, 5 min).
    config.retry.initial_backoff = Duration::from_millis(200);
    config.retry.max_backoff = Duration::from_secs(2);
    config.workers = 2;
    let retry_note = "retry schedule shortened for the demo: 200 ms, x2, max 2 s, 8 attempts";

    let receiver = Receiver::start().await?;
    // Local peers for the other channels: an SMTP relay, Slack/Teams/ntfy endpoints, and sshd
    // when it is installed. Each records the delivery ids that reach it.
    let arrivals = arrivals::Arrivals::default();
    let smtp = {
        let arrivals = arrivals.clone();
        smtp_peer::SmtpPeer::start(move |message| {
            if let Some(id) = arrivals::uuid_after(&String::from_utf8_lossy(&message.data), "X-Repdist-Delivery-Id:") {
                arrivals.record("EMAIL", &id);
            }
        })
        .context("starting the demo SMTP relay")?
    };
    let http_peers = http_peers::HttpPeers::start(arrivals.clone()).await?;
    let sftp = sftp_peer::SftpPeer::start(&temp)?;
    let sftp_watch = sftp.as_ref().map(|peer| peer.watch(arrivals.clone()));
    let report_dir = temp.join("reports");
    std::fs::create_dir_all(&report_dir)?;
    config.email = Some(demo_relay(smtp.addr));
    let config_data_dir = config.data_dir.clone();
    let server = crate::server::start(config).await.context("starting the service")?;
    let base = format!("http://{}", server.http_addr());
    let admin_key = server.local_admin_key().await.context("an admin key for the demo's requests")?;
    if let Some(key) = server.bootstrap_admin_key() {
        eprintln!("created a local admin key (also in {}): {key}", config_data_dir.join(crate::auth::ADMIN_KEY_FILE).display());
    }
    let http = reqwest::Client::builder()
        .default_headers(crate::auth::client_headers(&admin_key)?)
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let peers = workload::Peers { receiver: &receiver, http: &http_peers, sftp: sftp.as_ref(), report_dir: &report_dir };
    let plan = workload::Plan::generate(&args, &peers);
    for report in &plan.reports {
        if let Some(path) = report["report_data"]["file_path"].as_str() {
            // A small stand-in for the rendered report, attached or uploaded by EMAIL and SFTP.
            std::fs::write(path, format!("%PDF-1.4\n% repdist demo report {}\n%%EOF\n", report["report_data"]["report_id"]))?;
        }
    }
    let progress = progress_bar(args.json);

    progress.set_length(plan.subscriptions.len() as u64);
    progress.set_message("subscribing");
    workload::for_each_concurrently(plan.subscriptions.iter(), args.concurrency, |body| {
        let (http, base, progress) = (http.clone(), base.clone(), progress.clone());
        async move {
            let (status, answer) = workload::post(&http, &format!("{base}/api/v1/reporting/subscribe"), body).await?;
            anyhow::ensure!(status == 201, "subscribe answered {status}: {answer}");
            progress.inc(1);
            Ok(())
        }
    })
    .await?;

    // A WebSocket client on some dashboard subscriptions counts their live updates.
    let ws_count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for subscription_id in plan.dashboard_subscriptions.iter().take(20) {
        let url = format!("ws://{}/api/v1/reporting/stream?subscription_id={subscription_id}", server.http_addr());
        let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)?;
        request.headers_mut().extend(crate::auth::client_headers(&admin_key)?);
        let (socket, _) = tokio_tungstenite::connect_async(request).await.context("websocket")?;
        let count = ws_count.clone();
        tokio::spawn(async move {
            let (_, mut read) = socket.split();
            while let Some(Ok(message)) = read.next().await {
                // Updates (report matched, delivery state changed); not the `hello` that opens the stream.
                if message.is_text() && !message.to_text().unwrap_or_default().contains(r#""type":"hello""#) {
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    }

    progress.set_position(0);
    progress.set_length(plan.reports.len() as u64);
    progress.set_message("publishing");
    let started = Instant::now();
    let period = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    let expected = Arc::new(std::sync::Mutex::new(HashSet::<String>::new()));
    // When each delivery's report was sent, for the latency of the channels other than webhooks.
    let sent_at = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, Instant>::new()));
    let resent_mismatches = Arc::new(std::sync::atomic::AtomicU64::new(0));
    workload::for_each_concurrently(plan.reports.iter().enumerate(), args.concurrency, |(i, report)| {
        let (http, base, progress, receiver, expected) = (http.clone(), base.clone(), progress.clone(), receiver.clone(), expected.clone());
        let sent_at = sent_at.clone();
        let resend = i % 100 == 0;
        let mismatches = resent_mismatches.clone();
        async move {
            let event_id = report["event_id"].as_str().unwrap_or_default().to_string();
            let sent = match period {
                Some(period) => {
                    let scheduled = started + period * i as u32;
                    tokio::time::sleep_until(scheduled.into()).await;
                    scheduled
                }
                None => Instant::now(),
            };
            receiver.published(&event_id, sent);
            let ids = workload::publish(&http, &base, report).await?;
            if resend {
                // The same event again: the same ids, nothing new.
                let again = workload::publish(&http, &base, report).await?;
                if again != ids {
                    mismatches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            if let Ok(mut sent_at) = sent_at.lock() {
                sent_at.extend(ids.iter().map(|id| (id.clone(), sent)));
            }
            if let Ok(mut expected) = expected.lock() {
                expected.extend(ids);
            }
            progress.inc(1);
            Ok(())
        }
    })
    .await?;
    let publish_elapsed = started.elapsed();
    let expected: HashSet<String> = std::mem::take(&mut *expected.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);

    progress.set_position(0);
    progress.set_length(expected.len() as u64);
    progress.set_message("delivering");
    let deadline = Instant::now() + Duration::from_secs(60) + Duration::from_millis(expected.len() as u64);
    let final_summary = loop {
        let summary = workload::summary(&http, &base).await?;
        let open = summary.open();
        progress.set_position(expected.len().saturating_sub(open as usize) as u64);
        if open == 0 && summary.total as usize >= expected.len() {
            break summary;
        }
        if Instant::now() > deadline {
            break summary;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    progress.finish_and_clear();

    let dead_letters = workload::dead_letters(&http, &base).await?;
    let mut observed = receiver.observed();
    if let Some(watch) = sftp_watch {
        // One last look at the upload directory before counting.
        tokio::time::sleep(Duration::from_millis(100)).await;
        watch.abort();
    }
    let arrived = arrivals.snapshot();
    let sent_at = std::mem::take(&mut *sent_at.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let mut channel_latency_us: std::collections::BTreeMap<&'static str, hdrhistogram::Histogram<u64>> = Default::default();
    for (id, arrival) in &arrived {
        if !expected.contains(id) {
            continue;
        }
        if arrival.times > 1 {
            observed.duplicates += u64::from(arrival.times - 1);
        }
        observed.delivered.insert(id.clone());
        let Some(sent) = sent_at.get(id) else { continue };
        let histogram = match channel_latency_us.entry(arrival.channel) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => entry.insert(hdrhistogram::Histogram::new(3)?),
        };
        let _ = histogram.record((arrival.first.saturating_duration_since(*sent).as_micros() as u64).max(1));
    }
    let mut dashboard_delivered = workload::delivered_dashboard(&http, &base, &expected, &plan).await?;
    // Ids found nowhere yet: ask the service. A dashboard delivery beyond an inbox page counts as
    // delivered if stored so; a webhook "delivered" that the receiver never saw stays lost.
    let seen_dead: HashSet<&String> = dead_letters.iter().map(|(id, ..)| id).collect();
    let unresolved: Vec<&String> = expected
        .iter()
        .filter(|id| !observed.delivered.contains(*id) && !dashboard_delivered.contains(*id) && !seen_dead.contains(id))
        .collect();
    for id in unresolved {
        let status = workload::status(&http, &base, id).await?;
        if status["channel"] == "DASHBOARD_NOTIFICATION" && status["status"] == "DELIVERED" {
            dashboard_delivered.insert(id.clone());
        }
    }
    let summary = summary::account(summary::Inputs {
        expected: &expected,
        observed: &observed,
        dashboard_delivered: &dashboard_delivered,
        dead_letters: &dead_letters,
        broken_subscriptions: &plan.broken_subscriptions,
        final_summary: &final_summary,
        publish_elapsed,
        started,
        subscriptions: plan.subscriptions.len(),
        reports: plan.reports.len(),
        websocket_messages: ws_count.load(std::sync::atomic::Ordering::Relaxed),
        resent_mismatches: resent_mismatches.load(std::sync::atomic::Ordering::Relaxed),
        note: retry_note,
        channel_latency_us: &channel_latency_us,
        sftp_available: sftp.is_some(),
    });
    server.shutdown().await.context("stopping the service")?;
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    Ok(summary)
}

/// The service's email relay settings for the demo's own SMTP peer (plain SMTP on loopback).
fn demo_relay(addr: std::net::SocketAddr) -> sinks::EmailConfig {
    sinks::EmailConfig {
        host: addr.ip().to_string(),
        port: Some(addr.port()),
        tls: sinks::email::TlsMode::None,
        from: "repdist demo <reports@demo.local>".into(),
        ..sinks::EmailConfig::default()
    }
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("repdist-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn progress_bar(json: bool) -> ProgressBar {
    let bar = ProgressBar::new(0);
    if json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
