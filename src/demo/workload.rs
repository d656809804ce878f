//! The demo's generated workload and its HTTP calls.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;

use base64::Engine as _;
use futures::stream::{self, StreamExt, TryStreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::http_peers::HttpPeers;
use super::receiver::{Behaviour, Receiver};
use super::sftp_peer::SftpPeer;
use super::DemoArgs;
use dataflows::report::ReportDataType;

const PORTFOLIOS: usize = 1000;

pub struct Plan {
    pub subscriptions: Vec<Value>,
    pub reports: Vec<Value>,
    pub dashboard_subscriptions: Vec<String>,
    /// (subscription id, subscriber id) of dashboard subscriptions, for reading their inboxes.
    pub dashboard_subscribers: Vec<String>,
    /// Subscriptions whose webhook endpoint always answers 410: their deliveries must dead-letter.
    pub broken_subscriptions: HashSet<String>,
}

/// The local peers a subscription may point at, besides the webhook receiver.
pub struct Peers<'a> {
    pub receiver: &'a Receiver,
    pub http: &'a HttpPeers,
    /// `None` when sshd is not installed: no SFTP subscriptions then.
    pub sftp: Option<&'a SftpPeer>,
    /// Where the demo's report files are (EMAIL attaches them, SFTP uploads them).
    pub report_dir: &'a std::path::Path,
}

impl Plan {
    pub fn generate(args: &DemoArgs, peers: &Peers<'_>) -> Plan {
        let receiver = peers.receiver;
        let mut rng = StdRng::seed_from_u64(args.seed);
        let mut plan = Plan {
            subscriptions: Vec::with_capacity(args.subscriptions),
            reports: Vec::with_capacity(args.reports),
            dashboard_subscriptions: Vec::new(),
            dashboard_subscribers: Vec::new(),
            broken_subscriptions: HashSet::new(),
        };
        for i in 0..args.subscriptions {
            let id = format!("demo-sub-{i:05}");
            let subscriber = format!("subscriber_{i:05}");
            let mut types: Vec<&str> = Vec::new();
            while types.len() < 2 {
                let t = ReportDataType::ALL[rng.random_range(0..6)].as_str();
                if !types.contains(&t) {
                    types.push(t);
                }
            }
            let portfolios: Vec<String> = (0..rng.random_range(1..=3)).map(|_| portfolio(rng.random_range(0..PORTFOLIOS))).collect();
            let roll = rng.random_range(0..100);
            let (webhook, dashboard) = match roll {
                0..50 => (true, false),
                50..70 => (false, true),
                70..80 => (true, true),
                _ => (false, false),
            };
            let mut channels = Vec::new();
            let mut settings = serde_json::Map::new();
            // The other channels, each on a few percent of subscriptions, against local peers.
            match roll {
                80..86 => {
                    channels.push("EMAIL");
                    settings.insert("email".into(), json!({"to": [format!("{subscriber}@demo.local")], "locale": "en"}));
                }
                86..92 => {
                    channels.push("SLACK_INTEGRATION");
                    let (kind, url) = if i % 2 == 0 { ("SLACK", peers.http.slack_url(&id)) } else { ("TEAMS", peers.http.teams_url(&id)) };
                    settings.insert("slack".into(), json!({"kind": kind, "webhook_url": url}));
                }
                92..96 => {
                    channels.push("MOBILE_PUSH");
                    settings.insert("mobile_push".into(), json!({"provider": "NTFY", "topic_url": peers.http.ntfy_url(&id)}));
                }
                96..100 => match peers.sftp {
                    Some(sftp) => {
                        channels.push("SFTP");
                        settings.insert(
                            "sftp".into(),
                            json!({"host": "127.0.0.1", "port": sftp.port, "username": "root", "private_key": sftp.client_key,
                                   "host_key": sftp.host_key, "directory": sftp.upload_dir.join(&id).display().to_string()}),
                        );
                    }
                    None => {
                        channels.push("DASHBOARD_NOTIFICATION");
                        settings.insert("dashboard".into(), json!({}));
                        plan.dashboard_subscriptions.push(id.clone());
                        plan.dashboard_subscribers.push(subscriber.clone());
                    }
                },
                _ => {}
            }
            if webhook {
                channels.push("API_WEBHOOK");
                let key: [u8; 24] = rng.random();
                let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key));
                let behaviour = match rng.random_range(0..1000) {
                    0..5 => Behaviour::Broken,
                    5..35 => Behaviour::Flaky,
                    _ => Behaviour::Healthy,
                };
                if behaviour == Behaviour::Broken {
                    plan.broken_subscriptions.insert(id.clone());
                }
                let url = receiver.add_endpoint(&format!("ep{i}"), &secret, behaviour);
                settings.insert("webhook".into(), json!({"url": url, "secret": secret}));
            }
            if dashboard {
                channels.push("DASHBOARD_NOTIFICATION");
                settings.insert("dashboard".into(), json!({}));
                plan.dashboard_subscriptions.push(id.clone());
                plan.dashboard_subscribers.push(subscriber.clone());
            }
            let mut filters = json!({"portfolio_ids": portfolios});
            match rng.random_range(0..10) {
                0 => filters["min_priority"] = json!(5),
                1 => filters["routing_key"] = json!(format!("{}.*", portfolios[0])),
                _ => {}
            }
            let subscription_type = if rng.random_range(0..10) == 0 { "ON_DEMAND" } else { "REAL_TIME" };
            plan.subscriptions.push(json!({
                "subscription_id": id,
                "subscriber_id": subscriber,
                "subscriber_type": "CLIENT",
                "subscription_type": subscription_type,
                "report_types": types,
                "delivery_preferences": {"channels": channels, "format_preferences": ["PDF"], "notification_settings": settings},
                "filters": filters,
            }));
        }
        for n in 0..args.reports {
            let report_type = ReportDataType::ALL[rng.random_range(0..6)].as_str();
            let p = portfolio(rng.random_range(0..PORTFOLIOS));
            let targets: Vec<String> = if rng.random_range(0..20) == 0 && args.subscriptions > 0 {
                (0..2).map(|_| format!("subscriber_{:05}", rng.random_range(0..args.subscriptions))).collect()
            } else {
                Vec::new()
            };
            plan.reports.push(json!({
                "event_id": format!("demo-evt-{n:06}"),
                "timestamp": chrono::Utc::now(),
                "data_type": report_type,
                "report_data": {
                    "report_id": format!("demo-report-{n:06}"),
                    "report_type": report_type,
                    "portfolio_id": p,
                    "report_period": "2025-06",
                    "file_path": peers.report_dir.join(format!("{p}_{n}.pdf")).display().to_string(),
                    "file_size_bytes": rng.random_range(10_000..5_000_000)
                },
                "routing": {
                    "topic": "reporting/demo",
                    "routing_key": format!("{p}.{}.monthly", report_type.to_ascii_lowercase()),
                    "target_subscribers": targets,
                    "delivery_channels": [],
                    "priority": rng.random_range(0..10)
                },
                "metadata": {"source_service": "repdist-demo", "delivery_priority": rng.random_range(0..3), "encryption_required": false, "retention_days": 30}
            }));
        }
        plan
    }
}

fn portfolio(i: usize) -> String {
    format!("portfolio_{i:04}")
}

/// Runs `work` on every item with at most `limit` at once; the first error stops the run.
pub async fn for_each_concurrently<I, F, Fut>(items: I, limit: usize, work: F) -> anyhow::Result<()>
where
    I: Iterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    stream::iter(items).map(work).buffer_unordered(limit.max(1)).try_collect::<Vec<()>>().await?;
    Ok(())
}

pub async fn post(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    let response = http.post(url).header("content-type", "application/json").body(body.to_string()).send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

pub async fn get(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let response = http.get(url).send().await?;
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(status.is_success(), "GET {url} answered {status}: {text}");
    Ok(serde_json::from_str(&text)?)
}

/// Publishes one report, waiting out 503s (backpressure); returns its delivery ids.
pub async fn publish(http: &reqwest::Client, base: &str, report: &Value) -> anyhow::Result<Vec<String>> {
    loop {
        let (status, answer) = post(http, &format!("{base}/api/v1/reporting/deliver"), report).await?;
        match status {
            202 => {
                let ids = answer["delivery_ids"].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect());
                return ids.ok_or_else(|| anyhow::anyhow!("202 without delivery_ids: {answer}"));
            }
            503 => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            other => anyhow::bail!("deliver answered {other}: {answer}"),
        }
    }
}

#[derive(Debug, Default)]
pub struct Summary {
    pub total: u64,
    pub retries: u64,
    pub by_channel: BTreeMap<String, BTreeMap<String, u64>>,
    pub retries_by_channel: BTreeMap<String, u64>,
}

impl Summary {
    /// Deliveries not yet delivered nor dead-lettered.
    pub fn open(&self) -> u64 {
        self.by_channel.values().map(|s| s.get("PENDING").copied().unwrap_or(0) + s.get("RETRYING").copied().unwrap_or(0)).sum()
    }
}

pub async fn summary(http: &reqwest::Client, base: &str) -> anyhow::Result<Summary> {
    let value = get(http, &format!("{base}/api/v1/reporting/deliveries/summary")).await?;
    let by_channel = serde_json::from_value(value["by_channel"].clone())?;
    let retries_by_channel = serde_json::from_value(value["retries_by_channel"].clone()).unwrap_or_default();
    Ok(Summary { total: value["total"].as_u64().unwrap_or(0), retries: value["retries"].as_u64().unwrap_or(0), by_channel, retries_by_channel })
}

/// The dead-letter set: delivery id -> (subscription id, channel, reason).
pub async fn dead_letters(http: &reqwest::Client, base: &str) -> anyhow::Result<Vec<(String, String, String, String)>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let url = match &after {
            Some(cursor) => format!("{base}/api/v1/reporting/dead-letters?limit=1000&after={cursor}"),
            None => format!("{base}/api/v1/reporting/dead-letters?limit=1000"),
        };
        let page = get(http, &url).await?;
        for item in page["items"].as_array().into_iter().flatten() {
            let field = |name: &str| item[name].as_str().unwrap_or_default().to_string();
            out.push((field("delivery_id"), field("subscription_id"), field("channel"), field("reason")));
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return Ok(out),
        }
    }
}

/// Dashboard deliveries found in the subscribers' inboxes, plus any expected id whose stored
/// status says DELIVERED on the dashboard channel but was beyond an inbox page.
pub async fn delivered_dashboard(http: &reqwest::Client, base: &str, _expected: &HashSet<String>, plan: &Plan) -> anyhow::Result<HashSet<String>> {
    let found = std::sync::Mutex::new(HashSet::new());
    for_each_concurrently(plan.dashboard_subscribers.iter(), 32, |subscriber| {
        let found = &found;
        async move {
            let list = get(http, &format!("{base}/api/v1/reporting/notifications/{subscriber}?limit=1000")).await?;
            if let Ok(mut found) = found.lock() {
                found.extend(list.as_array().into_iter().flatten().filter_map(|n| n["notification_id"].as_str().map(String::from)));
            }
            Ok(())
        }
    })
    .await?;
    Ok(found.into_inner().unwrap_or_default())
}

/// The stored status of one delivery.
pub async fn status(http: &reqwest::Client, base: &str, delivery_id: &str) -> anyhow::Result<Value> {
    get(http, &format!("{base}/api/v1/reporting/delivery/{delivery_id}/status")).await
}
