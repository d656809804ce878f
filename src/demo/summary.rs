//! The demo's account of what happened, as a table or one JSON object.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use comfy_table::Table;
use dataflows::delivery::DeliveryChannel;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::receiver::Observed;
use super::workload::Summary;

#[derive(Debug, Serialize)]
pub struct DemoSummary {
    pub subscriptions: usize,
    pub reports: usize,
    pub deliveries_expected: usize,
    pub delivered: usize,
    pub dead_lettered: usize,
    /// Expected deliveries neither delivered nor dead-lettered. Must be 0.
    pub lost: usize,
    /// Dead letters not explained by an endpoint built to fail permanently. Must be 0.
    pub unexpected_dead_letters: usize,
    /// Failed attempts that were retried or dead-lettered.
    pub retries: u64,
    /// Second arrivals of a delivery id at the receiver (all carry the same id by construction).
    pub duplicates: u64,
    pub bad_signatures: u64,
    /// Re-sent events whose answer differed from the first one. Must be 0.
    pub resent_mismatches: u64,
    pub websocket_messages: u64,
    /// Report sent to the API -> receiver answered, first attempts of webhook deliveries.
    pub latency_ms: LatencyMs,
    pub throughput_per_s: f64,
    pub publish_per_s: f64,
    pub by_channel: BTreeMap<String, ChannelSummary>,
    pub note: String,
}

#[derive(Debug, Serialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: u64,
}

/// One channel's outcome. `delivered` and `dead_lettered` are the service's own counts; the demo's
/// evidence (what its peers received) is what `lost` in the totals is computed from.
#[derive(Debug, Default, Serialize)]
pub struct ChannelSummary {
    pub delivered: u64,
    pub dead_lettered: u64,
    pub open: u64,
    pub retries: u64,
    /// From sending the report to the peer receiving it, first attempts and retries alike; `None`
    /// where the demo has no peer that times arrivals (the dashboard inbox) or nothing arrived.
    pub p99_ms: Option<f64>,
}

pub struct Inputs<'a> {
    pub expected: &'a HashSet<String>,
    pub observed: &'a Observed,
    pub dashboard_delivered: &'a HashSet<String>,
    pub dead_letters: &'a [(String, String, String, String)],
    pub broken_subscriptions: &'a HashSet<String>,
    pub final_summary: &'a Summary,
    pub publish_elapsed: Duration,
    pub started: Instant,
    pub subscriptions: usize,
    pub reports: usize,
    pub websocket_messages: u64,
    pub resent_mismatches: u64,
    pub note: &'a str,
    /// Per channel other than webhooks, from report sent to the peer's receipt.
    pub channel_latency_us: &'a BTreeMap<&'static str, Histogram<u64>>,
    pub sftp_available: bool,
}

pub fn account(inputs: Inputs<'_>) -> DemoSummary {
    let dead: HashSet<&String> = inputs.dead_letters.iter().map(|(id, ..)| id).collect();
    let delivered = inputs.expected.iter().filter(|id| inputs.observed.delivered.contains(*id) || inputs.dashboard_delivered.contains(*id)).count();
    let dead_lettered = inputs.expected.iter().filter(|id| dead.contains(id)).count();
    let lost = inputs
        .expected
        .iter()
        .filter(|id| !inputs.observed.delivered.contains(*id) && !inputs.dashboard_delivered.contains(*id) && !dead.contains(id))
        .count();
    let unexpected_dead_letters = inputs
        .dead_letters
        .iter()
        .filter(|(_, subscription, channel, _)| channel != "API_WEBHOOK" || !inputs.broken_subscriptions.contains(subscription))
        .count();
    let histogram = &inputs.observed.latency_us;
    let ms = |q: f64| if histogram.is_empty() { 0.0 } else { (histogram.value_at_quantile(q) as f64 / 10.0).round() / 100.0 };
    let finished = inputs.observed.last_receipt.unwrap_or_else(Instant::now);
    let span = finished.saturating_duration_since(inputs.started).as_secs_f64().max(1e-3);
    let p99 = |h: &Histogram<u64>| (!h.is_empty()).then(|| (h.value_at_quantile(0.99) as f64 / 10.0).round() / 100.0);
    // Every channel of the spec's enum, those without deliveries as zeros.
    let by_channel = DeliveryChannel::ALL
        .iter()
        .map(|channel| {
            let name = channel.as_str();
            let states = inputs.final_summary.by_channel.get(name);
            let get = |s: &str| states.and_then(|states| states.get(s).copied()).unwrap_or(0);
            let p99_ms = match name {
                "API_WEBHOOK" => p99(&inputs.observed.latency_us),
                other => inputs.channel_latency_us.get(other).and_then(p99),
            };
            let summary = ChannelSummary {
                delivered: get("DELIVERED"),
                dead_lettered: get("DEAD_LETTERED"),
                open: get("PENDING") + get("RETRYING"),
                retries: inputs.final_summary.retries_by_channel.get(name).copied().unwrap_or(0),
                p99_ms,
            };
            (name.to_string(), summary)
        })
        .collect();
    DemoSummary {
        subscriptions: inputs.subscriptions,
        reports: inputs.reports,
        deliveries_expected: inputs.expected.len(),
        delivered,
        dead_lettered,
        lost,
        unexpected_dead_letters,
        retries: inputs.final_summary.retries,
        duplicates: inputs.observed.duplicates,
        bad_signatures: inputs.observed.bad_signatures,
        resent_mismatches: inputs.resent_mismatches,
        websocket_messages: inputs.websocket_messages,
        latency_ms: LatencyMs {
            p50: ms(0.5),
            p95: ms(0.95),
            p99: ms(0.99),
            max: if histogram.is_empty() { 0.0 } else { (histogram.max() as f64 / 10.0).round() / 100.0 },
            samples: histogram.len(),
        },
        throughput_per_s: ((delivered + dead_lettered) as f64 / span).round(),
        publish_per_s: (inputs.reports as f64 / inputs.publish_elapsed.as_secs_f64().max(1e-3)).round(),
        by_channel,
        note: if inputs.sftp_available {
            inputs.note.to_string()
        } else {
            format!("{}; SFTP not exercised: /usr/sbin/sshd is not installed (Debian: openssh-server)", inputs.note)
        },
    }
}

pub fn print(summary: &DemoSummary, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(summary).unwrap_or_default());
        return;
    }
    let mut channels = Table::new();
    channels.set_header(vec!["channel", "delivered", "dead-lettered", "still open", "retries", "p99 ms"]);
    for (channel, c) in &summary.by_channel {
        let p99 = c.p99_ms.map_or_else(|| "-".to_string(), |ms| ms.to_string());
        channels.add_row(vec![channel.clone(), c.delivered.to_string(), c.dead_lettered.to_string(), c.open.to_string(), c.retries.to_string(), p99]);
    }
    println!("{channels}");
    let mut totals = Table::new();
    totals.set_header(vec!["", "value"]);
    let rows: Vec<(&str, String)> = vec![
        ("subscriptions", summary.subscriptions.to_string()),
        ("reports published", summary.reports.to_string()),
        ("deliveries expected", summary.deliveries_expected.to_string()),
        ("delivered", summary.delivered.to_string()),
        ("dead-lettered", summary.dead_lettered.to_string()),
        ("LOST", summary.lost.to_string()),
        ("unexpected dead letters", summary.unexpected_dead_letters.to_string()),
        ("retries", summary.retries.to_string()),
        ("duplicates at receiver (same delivery id)", summary.duplicates.to_string()),
        ("bad signatures", summary.bad_signatures.to_string()),
        ("re-sent events answered differently", summary.resent_mismatches.to_string()),
        ("websocket updates", summary.websocket_messages.to_string()),
        ("latency p50 / p95 / p99 / max (ms)", format!("{} / {} / {} / {}", summary.latency_ms.p50, summary.latency_ms.p95, summary.latency_ms.p99, summary.latency_ms.max)),
        ("throughput (deliveries/s)", summary.throughput_per_s.to_string()),
        ("publish rate (reports/s)", summary.publish_per_s.to_string()),
    ];
    for (name, value) in rows {
        totals.add_row(vec![name.to_string(), value]);
    }
    println!("{totals}");
    println!("latency: report sent to the API -> webhook receiver answered, first attempts only ({} samples); {}", summary.latency_ms.samples, summary.note);
}
