//! The client side of `repdist bench ws`: opens the connections, prints `{"connected","failed"}`
//! once all are attached, then counts every update each client receives and measures latency from
//! the scheduled publish time carried in the report id. Prints one JSON result line at the end:
//! when every client has all it expects, or when told to stop (a line or EOF on stdin).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::grpc::proto;
use crate::runtime::clock::wall_micros;

#[derive(Clone, Debug, clap::Args)]
pub struct ClientArgs {
    /// `ws://host:port` (WebSocket) or `http://host:port` (gRPC).
    #[arg(long)]
    pub target: String,
    #[arg(long)]
    pub clients: usize,
    #[arg(long)]
    pub subscriptions: usize,
    #[arg(long)]
    pub reports: usize,
    #[arg(long)]
    pub grpc: bool,
    /// A file holding the API key the clients present.
    #[arg(long)]
    pub token_file: Option<std::path::PathBuf>,
    #[arg(skip)]
    pub token: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ClientReport {
    pub connected: usize,
    pub failed: usize,
    pub expected: u64,
    pub received: u64,
    pub closed_lagged: usize,
    pub closed_other: usize,
    pub last_receipt_us: u64,
    pub report_latency: Latency,
    pub delivered_latency: Latency,
}

/// How one client's stream ended.
enum End {
    Done,
    Stopped,
    Lagged,
    Other,
}

#[derive(Default)]
struct Seen {
    received: u64,
    report_us: Vec<u64>,
    delivered_us: Vec<u64>,
    last_receipt_us: u64,
}

impl Seen {
    fn record(&mut self, kind: &str, report_id: &str, delivered: bool) {
        let now = wall_micros();
        self.received += 1;
        self.last_receipt_us = now;
        let Some(scheduled) = report_id.rsplit_once('-').and_then(|(_, t)| t.parse::<u64>().ok()) else { return };
        let latency = now.saturating_sub(scheduled).max(1);
        match kind {
            "report" => self.report_us.push(latency),
            _ if delivered => self.delivered_us.push(latency),
            _ => {}
        }
    }
}

/// Updates client `i` should get: two (report, DELIVERED) per report of its subscription.
fn expected_for(i: usize, args: &ClientArgs) -> u64 {
    let s = i % args.subscriptions;
    let reports = args.reports / args.subscriptions + usize::from(s < args.reports % args.subscriptions);
    2 * reports as u64
}

pub async fn run_clients(mut args: ClientArgs) -> anyhow::Result<ClientReport> {
    super::raise_fd_limit();
    if let Some(path) = &args.token_file {
        args.token = std::fs::read_to_string(path)?.trim().to_string();
    }
    anyhow::ensure!(args.subscriptions > 0, "--subscriptions must be positive");
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            stop.cancel();
        });
    }
    let attached = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let all_in = Arc::new(tokio::sync::Notify::new());
    // Handshakes at once: enough to connect quickly without a connect storm.
    let handshakes = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let (args, stop, attached, failed, all_in, handshakes) =
            (args.clone(), stop.clone(), attached.clone(), failed.clone(), all_in.clone(), handshakes.clone());
        tasks.push(tokio::spawn(async move {
            let expected = expected_for(i, &args);
            let subscription = super::subscription_id(i % args.subscriptions);
            let mut seen = Seen::default();
            let counted = |ok: bool| {
                let counter = if ok { &attached } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
                if attached.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) == args.clients {
                    all_in.notify_one();
                }
            };
            let end = if args.grpc {
                grpc_client(&args.target, &args.token, subscription, expected, &mut seen, &stop, &handshakes, counted).await
            } else {
                ws_client(&args.target, &args.token, &subscription, expected, &mut seen, &stop, &handshakes, counted).await
            };
            (end, seen, expected)
        }));
    }
    all_in.notified().await;
    let connected = attached.load(Ordering::Relaxed);
    let failures = failed.load(Ordering::Relaxed);
    println!("{}", serde_json::json!({"connected": connected, "failed": failures}));

    let mut report = ClientReport { connected, failed: failures, ..ClientReport::default() };
    let mut report_hist = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut delivered_hist = hdrhistogram::Histogram::<u64>::new(3)?;
    for task in tasks {
        let (end, seen, expected) = task.await?;
        report.expected += expected;
        report.received += seen.received;
        report.last_receipt_us = report.last_receipt_us.max(seen.last_receipt_us);
        match end {
            End::Lagged => report.closed_lagged += 1,
            End::Other => report.closed_other += 1,
            End::Done | End::Stopped => {}
        }
        for v in seen.report_us {
            let _ = report_hist.record(v);
        }
        for v in seen.delivered_us {
            let _ = delivered_hist.record(v);
        }
    }
    report.report_latency = latency(&report_hist);
    report.delivered_latency = latency(&delivered_hist);
    Ok(report)
}

fn latency(h: &hdrhistogram::Histogram<u64>) -> Latency {
    let ms = |us: u64| us as f64 / 1000.0;
    Latency { count: h.len(), p50: ms(h.value_at_quantile(0.5)), p99: ms(h.value_at_quantile(0.99)), max: ms(h.max()) }
}

#[allow(clippy::too_many_arguments)]
async fn ws_client(
    target: &str,
    token: &str,
    subscription: &str,
    expected: u64,
    seen: &mut Seen,
    stop: &CancellationToken,
    handshakes: &Semaphore,
    counted: impl FnOnce(bool),
) -> End {
    // The credential as the `token` query parameter, as a browser would send it.
    let token: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
    let url = format!("{target}/api/v1/reporting/stream?subscription_id={subscription}&token={token}");
    let socket = {
        let _permit = handshakes.acquire().await;
        match tokio_tungstenite::connect_async(url).await {
            Ok((mut socket, _)) => match socket.next().await {
                Some(Ok(Message::Text(_))) => Some(socket),
                _ => None,
            },
            Err(_) => None,
        }
    };
    counted(socket.is_some());
    let Some(mut socket) = socket else { return End::Other };
    while seen.received < expected {
        let frame = tokio::select! {
            _ = stop.cancelled() => return End::Stopped,
            frame = socket.next() => frame,
        };
        match frame {
            Some(Ok(Message::Text(text))) => {
                #[derive(Deserialize)]
                struct Peek<'a> {
                    #[serde(rename = "type", borrow)]
                    kind: &'a str,
                    #[serde(borrow)]
                    report_id: Option<&'a str>,
                    #[serde(borrow)]
                    status: Option<&'a str>,
                }
                if let Ok(peek) = serde_json::from_str::<Peek<'_>>(text.as_str()) {
                    seen.record(peek.kind, peek.report_id.unwrap_or_default(), peek.status == Some("DELIVERED"));
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return if frame.is_some_and(|f| u16::from(f.code) == crate::api::stream::CLOSE_LAGGED) { End::Lagged } else { End::Other };
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return End::Other,
        }
    }
    let _ = socket.close(None).await;
    End::Done
}

#[allow(clippy::too_many_arguments)]
async fn grpc_client(
    target: &str,
    token: &str,
    subscription: String,
    expected: u64,
    seen: &mut Seen,
    stop: &CancellationToken,
    handshakes: &Semaphore,
    counted: impl FnOnce(bool),
) -> End {
    use proto::reporting_stream_client::ReportingStreamClient;
    let stream = {
        let _permit = handshakes.acquire().await;
        let mut request = tonic::Request::new(proto::StreamRequest { subscription_id: subscription, report_types: vec![], after_sequence: None });
        if let Ok(value) = format!("Bearer {token}").parse() {
            request.metadata_mut().insert("authorization", value);
        }
        match ReportingStreamClient::connect(target.to_string()).await {
            Ok(mut client) => client.stream_reports(request).await.ok().map(|r| r.into_inner()),
            Err(_) => None,
        }
    };
    counted(stream.is_some());
    let Some(mut stream) = stream else { return End::Other };
    while seen.received < expected {
        let message = tokio::select! {
            _ = stop.cancelled() => return End::Stopped,
            message = stream.message() => message,
        };
        match message {
            Ok(Some(m)) => {
                let kind = if m.kind == proto::UpdateKind::Report as i32 { "report" } else { "delivery" };
                let delivered = m.delivery.as_ref().is_some_and(|d| d.status == "DELIVERED");
                seen.record(kind, &m.report_id, delivered);
            }
            Ok(None) => return End::Other,
            Err(status) if status.code() == tonic::Code::Aborted => return End::Lagged,
            Err(_) => return End::Other,
        }
    }
    End::Done
}
