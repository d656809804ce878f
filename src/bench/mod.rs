//! `repdist bench ws`: the update streams under many clients. The service runs in this process
//! on embedded defaults; the clients run in a child process of the same binary (`bench
//! ws-clients`), because 10,000 connections need 10,000 descriptors at each end and one process
//! may not hold 20,000 here. Reports are published over REST on a fixed schedule (open loop);
//! latency runs from a report's *scheduled* publish time to a client's receipt of its update, on
//! the wall clock both processes share.

mod clients;

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use crate::config::Config;
use crate::demo::workload;
pub use clients::{run_clients, ClientArgs, ClientReport};

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Update-stream fan-out: N WebSocket (or, with --grpc, StreamReports) clients, reports
    /// published at a fixed rate; prints delivered messages/s and publish-to-receipt latency.
    Ws(WsArgs),
    /// The client side of `bench ws`, run by it as a child process.
    #[command(hide = true)]
    WsClients(ClientArgs),
}

#[derive(Clone, Debug, clap::Args)]
pub struct WsArgs {
    /// Clients to connect.
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// DASHBOARD_NOTIFICATION subscriptions; client i follows subscription i % subscriptions.
    /// Default: one per client (each client sees only its own subscription's updates).
    #[arg(long)]
    pub subscriptions: Option<usize>,
    /// Reports to publish; report j goes to subscription j % subscriptions.
    #[arg(long, default_value_t = 2_000)]
    pub reports: usize,
    /// Reports per second, on a fixed schedule.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Clients are gRPC StreamReports streams (one connection each) instead of WebSockets.
    #[arg(long)]
    pub grpc: bool,
    /// Publish requests in flight at most.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ws(args) => ws(args).await,
        BenchCommand::WsClients(args) => {
            let report = run_clients(args).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
    }
}

/// Raises the soft limit on open files to the hard one: each connection is a descriptor.
pub fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

async fn ws(args: WsArgs) -> anyhow::Result<()> {
    let fd_limit = raise_fd_limit();
    let subscriptions = args.subscriptions.unwrap_or(args.clients).clamp(1, args.clients.max(1));
    let data_dir = std::env::temp_dir().join(format!("repdist-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&data_dir)?;
    let config = Config {
        http_addr: "127.0.0.1:0".parse()?,
        grpc_addr: "127.0.0.1:0".parse()?,
        data_dir: data_dir.clone(),
        workers: 2,
        ..Config::default()
    };
    let server = crate::server::start(config).await.context("starting the service")?;
    let base = format!("http://{}", server.http_addr());
    let admin_key = server.local_admin_key().await.context("an admin key for the bench's requests")?;
    let http = reqwest::Client::builder()
        .default_headers(crate::auth::client_headers(&admin_key)?)
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    // The client process reads the key from a file (not its command line, which `ps` shows).
    let token_file = data_dir.join("bench-clients.key");
    std::fs::write(&token_file, &admin_key)?;

    eprintln!("creating {subscriptions} subscriptions");
    workload::for_each_concurrently(0..subscriptions, args.concurrency, |s| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let body = json!({
                "subscription_id": subscription_id(s),
                "subscriber_id": format!("bench-subscriber-{s}"),
                "report_types": ["PERFORMANCE_REPORT"],
                "delivery_preferences": {"channels": ["DASHBOARD_NOTIFICATION"], "notification_settings": {"dashboard": {}}},
                "filters": {"portfolio_ids": [portfolio(s)]}
            });
            let (status, answer) = workload::post(&http, &format!("{base}/api/v1/reporting/subscribe"), &body).await?;
            anyhow::ensure!(status == 201, "subscribe answered {status}: {answer}");
            Ok(())
        }
    })
    .await?;

    let target = if args.grpc { format!("http://{}", server.grpc_addr()) } else { format!("ws://{}", server.http_addr()) };
    eprintln!("connecting {} {} clients (child process)", args.clients, if args.grpc { "gRPC" } else { "WebSocket" });
    let mut child = Command::new(std::env::current_exe()?)
        .args(["bench", "ws-clients", "--target", &target])
        .args(["--clients", &args.clients.to_string(), "--subscriptions", &subscriptions.to_string()])
        .args(["--reports", &args.reports.to_string()])
        .arg("--token-file")
        .arg(&token_file)
        .args(if args.grpc { vec!["--grpc"] } else { vec![] })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the client process")?;
    let stdout = child.stdout.take().context("client stdout")?;
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready: Value = serde_json::from_str(&lines.recv().await.context("the client process ended before connecting")?)?;
    let connected = ready["connected"].as_u64().unwrap_or(0);
    eprintln!("{connected} clients connected ({} failed); publishing {} reports at {}/s", ready["failed"], args.reports, args.rate);

    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let started = Instant::now();
    let started_wall = crate::runtime::clock::wall_micros();
    workload::for_each_concurrently(0..args.reports, args.concurrency, |j| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let offset = period * j as u32;
            tokio::time::sleep_until((started + offset).into()).await;
            let scheduled = started_wall + offset.as_micros() as u64;
            let body = report(j, subscriptions, scheduled);
            let (status, answer) = workload::post(&http, &format!("{base}/api/v1/reporting/deliver"), &body).await?;
            anyhow::ensure!(status == 202, "deliver answered {status}: {answer}");
            Ok(())
        }
    })
    .await?;
    let publish_elapsed = started.elapsed();
    // Every delivery finished means every update was published; the clients then have a moment
    // to read what is still on its way.
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let summary = workload::summary(&http, &base).await?;
        if summary.open() == 0 && summary.total as usize >= args.reports {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let result_line = tokio::select! {
        line = lines.recv() => line,
        _ = tokio::time::sleep(Duration::from_secs(5)) => {
            // Not everything arrived: stop the clients and take what they have.
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(b"stop\n");
            }
            lines.recv().await
        }
    };
    drop(child.stdin.take());
    let _ = child.wait();
    let clients: ClientReport = serde_json::from_str(&result_line.context("the client process ended without a result")?)?;
    server.shutdown().await.context("stopping the service")?;
    let _ = std::fs::remove_dir_all(&data_dir);

    let span_us = clients.last_receipt_us.saturating_sub(started_wall).max(1);
    let summary = json!({
        "transport": if args.grpc { "grpc" } else { "websocket" },
        "clients": args.clients,
        "connected": clients.connected,
        "subscriptions": subscriptions,
        "reports": args.reports,
        "rate": args.rate,
        "publish_seconds": publish_elapsed.as_secs_f64(),
        "messages_expected": clients.expected,
        "messages_received": clients.received,
        "clients_closed_lagged": clients.closed_lagged,
        "clients_closed_otherwise": clients.closed_other,
        "delivered_messages_per_s": clients.received as f64 / (span_us as f64 / 1e6),
        "report_latency_ms": clients.report_latency.clone(),
        "delivered_latency_ms": clients.delivered_latency.clone(),
        "fd_limit": fd_limit,
    });
    if args.json {
        println!("{summary}");
    } else {
        println!("transport          {}", summary["transport"].as_str().unwrap_or_default());
        println!("clients            {} connected of {} ({} subscriptions)", clients.connected, args.clients, subscriptions);
        println!("reports            {} at {}/s (published in {:.1} s)", args.reports, args.rate, publish_elapsed.as_secs_f64());
        println!("messages           {} received of {} expected", clients.received, clients.expected);
        println!("closed             {} too slow (4008/ABORTED), {} otherwise", clients.closed_lagged, clients.closed_other);
        println!("throughput         {:.0} delivered messages/s", summary["delivered_messages_per_s"].as_f64().unwrap_or_default());
        for (name, l) in [("report update", &clients.report_latency), ("DELIVERED update", &clients.delivered_latency)] {
            println!("latency {name:<18} p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n={})", l.p50, l.p99, l.max, l.count);
        }
    }
    anyhow::ensure!(clients.received == clients.expected, "{} of {} messages did not arrive", clients.expected - clients.received, clients.expected);
    Ok(())
}

pub(crate) fn subscription_id(s: usize) -> String {
    format!("bench-sub-{s:05}")
}

fn portfolio(s: usize) -> String {
    format!("bench_portfolio_{s}")
}

/// Report `j`, for subscription `j % subscriptions`; its report id carries its scheduled publish
/// time (wall clock, microseconds) for the clients to measure latency from.
fn report(j: usize, subscriptions: usize, scheduled_us: u64) -> Value {
    json!({
        "event_id": format!("bench-evt-{j}"),
        "timestamp": "2025-06-21T10:00:00.000Z",
        "data_type": "PERFORMANCE_REPORT",
        "report_data": {
            "report_id": format!("bench-{j}-{scheduled_us}"),
            "report_type": "PERFORMANCE_REPORT",
            "portfolio_id": portfolio(j % subscriptions),
            "report_period": "2025-06",
            "file_path": "/reports/bench.pdf",
            "file_size_bytes": 2048
        },
        "routing": {"topic": "reporting/performance/delivered", "routing_key": "bench", "target_subscribers": [], "delivery_channels": [], "priority": 1},
        "metadata": {"source_service": "bench", "delivery_priority": 1, "encryption_required": false, "retention_days": 1}
    })
}
