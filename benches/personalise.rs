//! Personalising one tabular report for many subscribers: a 1,000,000-row CSV report (6 columns,
//! 100 portfolios, 4 regions) for 1,000 subscribers, each with its own portfolio, a region
//! predicate, 3 of the 6 columns and an output format (CSV, JSON lines, Parquet; every tenth XLSX).
//! One iteration produces every subscriber's file (nothing cached: a new report id each time).
//! Prints rows scanned per second and the process's peak resident memory (VmHWM).
//!
//! Run: `cargo bench --bench personalise`. Under `cargo test` (no `--bench` argument) it runs once
//! on 10,000 rows for 5 subscribers, so the suite stays fast; `REPDIST_TEST_PERSONALISE_ROWS` and
//! `REPDIST_TEST_PERSONALISE_SUBSCRIBERS` override either size, and
//! `REPDIST_TEST_PERSONALISE_STAGE_MIN_BYTES` the size from which the CSV is staged as Parquet first
//! (a huge value: every subscriber's query parses the CSV itself, as before staging existed).

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataflows::content::{ContentSpec, OutputFormat, RowPredicate};
use dataflows::report::ReportDistribution;
use repdist::content::ContentStore;

const REGIONS: [&str; 4] = ["EMEA", "APAC", "AMER", "LATAM"];
const PORTFOLIOS: usize = 100;
const COLUMNS: [&str; 6] = ["portfolio_id", "region", "instrument", "exposure", "var_99", "pnl"];

fn sizes() -> (usize, usize) {
    let measuring = std::env::args().any(|a| a == "--bench");
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    let rows = env("REPDIST_TEST_PERSONALISE_ROWS").unwrap_or(if measuring { 1_000_000 } else { 10_000 });
    let subscribers = env("REPDIST_TEST_PERSONALISE_SUBSCRIBERS").unwrap_or(if measuring { 1_000 } else { 5 });
    (rows, subscribers)
}

fn write_report(path: &std::path::Path, rows: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "{}", COLUMNS.join(",")).unwrap();
    for i in 0..rows {
        writeln!(
            out,
            "portfolio_{:03},{},inst-{i},{}.{},{}.{},{}",
            i % PORTFOLIOS,
            REGIONS[(i / PORTFOLIOS) % REGIONS.len()],
            (i * 7919) % 1_000_000,
            i % 100,
            (i * 31) % 100,
            i % 10,
            (i as i64 * 13) % 20_001 - 10_000,
        )
        .unwrap();
    }
    out.flush().unwrap();
}

fn spec(i: usize) -> ContentSpec {
    let format = match i % 10 {
        9 => OutputFormat::Xlsx,
        k => [OutputFormat::Csv, OutputFormat::Json, OutputFormat::Parquet][k % 3],
    };
    let region: RowPredicate = serde_json::from_value(serde_json::json!({"column": "region", "in": [REGIONS[i % REGIONS.len()]]})).unwrap();
    ContentSpec {
        portfolio_ids: vec![format!("portfolio_{:03}", i % PORTFOLIOS)],
        rows: vec![region],
        columns: (0..3).map(|k| COLUMNS[(i + k * 2) % COLUMNS.len()].to_string()).collect(),
        format: Some(format),
    }
}

/// Peak resident memory of this process so far, in MiB (Linux).
fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn personalise(c: &mut Criterion) {
    let (rows, subscribers) = sizes();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("positions.csv");
    write_report(&source, rows);
    let specs: Vec<ContentSpec> = (0..subscribers).map(spec).collect();
    let mut store = ContentStore::new(dir.path().join("cache"));
    if let Some(bytes) = std::env::var("REPDIST_TEST_PERSONALISE_STAGE_MIN_BYTES").ok().and_then(|v| v.parse().ok()) {
        store = store.with_staging_threshold(bytes);
    }
    let iteration = AtomicUsize::new(0);
    let before = peak_memory_mib();

    let mut group = c.benchmark_group("personalise");
    group.sample_size(10).measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Elements((rows * subscribers) as u64));
    group.bench_function(format!("{rows}_rows_x_{subscribers}_subscribers"), |b| {
        b.iter(|| {
            let n = iteration.fetch_add(1, Ordering::Relaxed);
            let report: ReportDistribution = serde_json::from_value(serde_json::json!({
                "event_id": format!("evt-{n}"), "timestamp": "2025-06-21T10:00:00Z", "data_type": "RISK_REPORT",
                "report_data": {"report_id": format!("rep-{n}"), "file_path": source.to_str().unwrap()}
            }))
            .unwrap();
            let mut bytes = 0u64;
            for spec in &specs {
                let file = store.personalise(&report, spec).expect("personalised").expect("a tabular report");
                bytes += std::fs::metadata(&file.path).map(|m| m.len()).unwrap_or(0);
            }
            // Each iteration's files are dropped so the disk holds one round at a time.
            let _ = std::fs::remove_dir_all(dir.path().join("cache"));
            bytes
        })
    });
    group.finish();
    match (before, peak_memory_mib()) {
        (Some(before), Some(after)) => {
            eprintln!("peak resident memory (VmHWM): {after:.0} MiB (before personalising: {before:.0} MiB)")
        }
        _ => eprintln!("peak resident memory: not available on this platform"),
    }
}

criterion_group!(benches, personalise);
criterion_main!(benches);
