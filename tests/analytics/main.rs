//! The analyses on a small data set whose figures are worked out by hand below, the SQL endpoint's
//! guard and formats, and the Parquet export, each read back.
//!
//! The data set (2025-06-21, UTC; latency = accepted -> answered):
//!
//! | delivery | report (type, period)      | subscriber | channel   | accepted | attempts                                              |
//! |----------|----------------------------|------------|-----------|----------|-------------------------------------------------------|
//! | d1       | r1 PERFORMANCE 2025-06     | alice      | WEBHOOK   | 10:00    | ok +100 ms (took 80 ms)                               |
//! | d2       | r1                         | bob        | EMAIL     | 10:00    | 503 +200 ms (200), ok +1500 ms (300)                  |
//! | d6       | r1                         | carol      | DASHBOARD | 10:00    | ok +10 ms (5)                                         |
//! | d3       | r2 RISK 2025-05            | alice      | WEBHOOK   | 10:30    | ok +50 ms (40)                                        |
//! | d4       | r2                         | bob        | EMAIL     | 10:30    | 404 permanent +300 ms (100) -> dead letter            |
//! | d5       | r3 RISK 2025-06            | bob        | SFTP      | 11:10    | timeout +10 s, timeout +20 s, refused +40 s -> dead   |

use std::path::Path;
use std::time::Duration;

use repdist::analytics;
use repdist::analytics::rows::{AttemptRow, DeadLetterRow, DeliveryRow, ErrorKind, Micros, StatsWindowRow};
use repdist::analytics::{Analysis, AnalyticsError, AnalyticsStore, Batching, Chunk, Filter, Format, Limits, StoreOptions, Tuning};
use serde_json::{json, Value};

const T10: Micros = 1_750_500_000_000_000; // 2025-06-21T10:00:00Z
const MIN: Micros = 60_000_000;
const MS: Micros = 1_000;

struct Delivery {
    id: &'static str,
    report: &'static str,
    report_type: &'static str,
    period: &'static str,
    subscriber: &'static str,
    channel: &'static str,
    accepted: Micros,
}

const D1: Delivery = Delivery { id: "d1", report: "r1", report_type: "PERFORMANCE_REPORT", period: "2025-06", subscriber: "alice", channel: "API_WEBHOOK", accepted: T10 };
const D2: Delivery = Delivery { id: "d2", report: "r1", report_type: "PERFORMANCE_REPORT", period: "2025-06", subscriber: "bob", channel: "EMAIL", accepted: T10 };
const D6: Delivery = Delivery { id: "d6", report: "r1", report_type: "PERFORMANCE_REPORT", period: "2025-06", subscriber: "carol", channel: "DASHBOARD_NOTIFICATION", accepted: T10 };
const D3: Delivery = Delivery { id: "d3", report: "r2", report_type: "RISK_REPORT", period: "2025-05", subscriber: "alice", channel: "API_WEBHOOK", accepted: T10 + 30 * MIN };
const D4: Delivery = Delivery { id: "d4", report: "r2", report_type: "RISK_REPORT", period: "2025-05", subscriber: "bob", channel: "EMAIL", accepted: T10 + 30 * MIN };
const D5: Delivery = Delivery { id: "d5", report: "r3", report_type: "RISK_REPORT", period: "2025-06", subscriber: "bob", channel: "SFTP", accepted: T10 + 70 * MIN };

fn created(d: &Delivery) -> DeliveryRow {
    DeliveryRow {
        delivery_id: d.id.into(),
        event_id: format!("event-{}", d.report),
        report_id: d.report.into(),
        report_type: d.report_type,
        report_period: d.period.into(),
        portfolio_id: "portfolio_001".into(),
        subscription_id: format!("sub-{}-{}", d.subscriber, d.channel),
        subscriber_id: d.subscriber.into(),
        channel: d.channel,
        delivery_priority: 1,
        accepted_at: d.accepted,
    }
}

fn attempt(d: &Delivery, n: u32, after: Micros, took_ms: i64, error: Option<(ErrorKind, &str)>) -> AttemptRow {
    AttemptRow {
        delivery_id: d.id.into(),
        report_id: d.report.into(),
        report_type: d.report_type,
        report_period: d.period.into(),
        subscription_id: format!("sub-{}-{}", d.subscriber, d.channel),
        subscriber_id: d.subscriber.into(),
        channel: d.channel,
        attempt: n,
        error: error.map(|(kind, text)| (kind, text.to_string())),
        accepted_at: d.accepted,
        finished_at: d.accepted + after,
        attempt_micros: took_ms * MS,
    }
}

fn dead(d: &Delivery, attempts: u32, after: Micros, reason: &str) -> DeadLetterRow {
    DeadLetterRow {
        delivery_id: d.id.into(),
        report_id: d.report.into(),
        report_type: d.report_type,
        subscription_id: format!("sub-{}-{}", d.subscriber, d.channel),
        subscriber_id: d.subscriber.into(),
        channel: d.channel,
        attempts,
        reason: reason.into(),
        accepted_at: d.accepted,
        dead_lettered_at: d.accepted + after,
    }
}

fn data_set() -> Chunk {
    use ErrorKind::{Permanent, Transient};
    let s = 1_000 * MS;
    Chunk {
        deliveries: [&D1, &D2, &D6, &D3, &D4, &D5].into_iter().map(created).collect(),
        attempts: vec![
            attempt(&D1, 1, 100 * MS, 80, None),
            attempt(&D2, 1, 200 * MS, 200, Some((Transient, "HTTP 503: busy"))),
            attempt(&D2, 2, 1500 * MS, 300, None),
            attempt(&D6, 1, 10 * MS, 5, None),
            attempt(&D3, 1, 50 * MS, 40, None),
            attempt(&D4, 1, 300 * MS, 100, Some((Permanent, "HTTP 404: no mailbox"))),
            attempt(&D5, 1, 10 * s, 10_000, Some((Transient, "timed out after 10.0s"))),
            attempt(&D5, 2, 20 * s, 10_000, Some((Transient, "timed out after 10.0s"))),
            attempt(&D5, 3, 40 * s, 5_000, Some((Transient, "connection to sftp.example.com:22 failed: refused"))),
        ],
        dead_letters: vec![
            dead(&D4, 1, 300 * MS, "HTTP 404: no mailbox"),
            dead(&D5, 3, 40 * s, "exhausted 3 attempts; last error: connection to sftp.example.com:22 failed: refused"),
        ],
        stats: vec![StatsWindowRow {
            window_start: T10,
            window_end: T10 + MIN,
            report_type: "PERFORMANCE_REPORT",
            channel: "API_WEBHOOK",
            attempted: 1,
            successful: 1,
            failed: 0,
            avg_delivery_time_ms: Some(100.0),
            p99_delivery_time_ms: Some(100.0),
        }],
    }
}

fn open(dir: &Path) -> AnalyticsStore {
    let options = StoreOptions {
        dir: dir.to_path_buf(),
        threads: 1,
        memory_limit: "256MB".into(),
        queue_capacity: 16,
        batching: Batching { max_rows: 1000, interval: Duration::from_secs(60) },
    };
    AnalyticsStore::open(options, Duration::from_secs(5)).expect("opens")
}

fn loaded() -> (tempfile::TempDir, AnalyticsStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(store.ingest().offer(data_set()));
    (dir, store)
}

const TIMEOUT: Duration = Duration::from_secs(30);

fn rows(store: &AnalyticsStore, analysis: Analysis, filter: &Filter, tuning: &Tuning) -> Vec<Value> {
    let answer = store.analysis(analysis, filter, tuning, TIMEOUT).expect("analysis runs");
    assert!(answer.complete());
    answer.rows.iter().map(|row| serde_json::from_str(row).expect("a JSON object")).collect()
}

fn all(store: &AnalyticsStore, analysis: Analysis) -> Vec<Value> {
    rows(store, analysis, &Filter::default(), &Tuning::default())
}

#[test]
fn success_rate_and_latency_percentiles_by_channel_and_hour() {
    let (_dir, store) = loaded();
    let expected = json!([
        {"channel": "API_WEBHOOK", "hour": "2025-06-21T10:00:00Z", "attempts": 2, "delivered": 2, "failed_attempts": 0,
         "dead_lettered": 0, "success_rate": 1.0, "attempt_success_rate": 1.0,
         "p50_latency_ms": 50.0, "p95_latency_ms": 100.0, "p99_latency_ms": 100.0},
        {"channel": "DASHBOARD_NOTIFICATION", "hour": "2025-06-21T10:00:00Z", "attempts": 1, "delivered": 1, "failed_attempts": 0,
         "dead_lettered": 0, "success_rate": 1.0, "attempt_success_rate": 1.0,
         "p50_latency_ms": 10.0, "p95_latency_ms": 10.0, "p99_latency_ms": 10.0},
        {"channel": "EMAIL", "hour": "2025-06-21T10:00:00Z", "attempts": 3, "delivered": 1, "failed_attempts": 2,
         "dead_lettered": 1, "success_rate": 0.5, "attempt_success_rate": 0.3333,
         "p50_latency_ms": 1500.0, "p95_latency_ms": 1500.0, "p99_latency_ms": 1500.0},
        {"channel": "SFTP", "hour": "2025-06-21T11:00:00Z", "attempts": 3, "delivered": 0, "failed_attempts": 3,
         "dead_lettered": 1, "success_rate": 0.0, "attempt_success_rate": 0.0,
         "p50_latency_ms": null, "p95_latency_ms": null, "p99_latency_ms": null},
    ]);
    assert_eq!(Value::Array(all(&store, Analysis::SuccessRateLatency)), expected);

    // The time range keeps only the 11:00 hour.
    let eleven = Filter { from: Some(T10 + 60 * MIN), to: Some(T10 + 120 * MIN), ..Filter::default() };
    let only = rows(&store, Analysis::SuccessRateLatency, &eleven, &Tuning::default());
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["channel"], "SFTP");
}

#[test]
fn channel_effectiveness_per_channel() {
    let (_dir, store) = loaded();
    let expected = json!([
        {"channel": "API_WEBHOOK", "deliveries_attempted": 2, "attempts": 2, "delivered": 2, "dead_lettered": 0,
         "success_rate": 1.0, "first_attempt_success_rate": 1.0, "retries": 0, "avg_attempts_to_deliver": 1.0,
         "avg_time_to_deliver_ms": 75.0, "p95_time_to_deliver_ms": 100.0, "avg_attempt_ms": 60.0},
        {"channel": "DASHBOARD_NOTIFICATION", "deliveries_attempted": 1, "attempts": 1, "delivered": 1, "dead_lettered": 0,
         "success_rate": 1.0, "first_attempt_success_rate": 1.0, "retries": 0, "avg_attempts_to_deliver": 1.0,
         "avg_time_to_deliver_ms": 10.0, "p95_time_to_deliver_ms": 10.0, "avg_attempt_ms": 5.0},
        {"channel": "EMAIL", "deliveries_attempted": 2, "attempts": 3, "delivered": 1, "dead_lettered": 1,
         "success_rate": 0.5, "first_attempt_success_rate": 0.0, "retries": 1, "avg_attempts_to_deliver": 2.0,
         "avg_time_to_deliver_ms": 1500.0, "p95_time_to_deliver_ms": 1500.0, "avg_attempt_ms": 200.0},
        {"channel": "SFTP", "deliveries_attempted": 1, "attempts": 3, "delivered": 0, "dead_lettered": 1,
         "success_rate": 0.0, "first_attempt_success_rate": 0.0, "retries": 2, "avg_attempts_to_deliver": null,
         "avg_time_to_deliver_ms": null, "p95_time_to_deliver_ms": null, "avg_attempt_ms": 8333.333},
    ]);
    assert_eq!(Value::Array(all(&store, Analysis::ChannelEffectiveness)), expected);

    let email = Filter { channel: Some("EMAIL".into()), ..Filter::default() };
    let only = rows(&store, Analysis::ChannelEffectiveness, &email, &Tuning::default());
    assert_eq!(only, vec![expected[2].clone()]);
}

#[test]
fn subscriber_engagement_per_subscriber() {
    let (_dir, store) = loaded();
    let expected = json!([
        {"subscriber_id": "alice", "deliveries": 2, "delivered": 2, "failed_attempts": 0, "dead_lettered": 0,
         "dashboard_notifications": 0, "webhook_acknowledgements": 2, "channels": ["API_WEBHOOK"],
         "last_delivered_at": "2025-06-21T10:30:00Z"},
        {"subscriber_id": "bob", "deliveries": 3, "delivered": 1, "failed_attempts": 5, "dead_lettered": 2,
         "dashboard_notifications": 0, "webhook_acknowledgements": 0, "channels": ["EMAIL", "SFTP"],
         "last_delivered_at": "2025-06-21T10:00:01Z"},
        {"subscriber_id": "carol", "deliveries": 1, "delivered": 1, "failed_attempts": 0, "dead_lettered": 0,
         "dashboard_notifications": 1, "webhook_acknowledgements": 0, "channels": ["DASHBOARD_NOTIFICATION"],
         "last_delivered_at": "2025-06-21T10:00:00Z"},
    ]);
    assert_eq!(Value::Array(all(&store, Analysis::SubscriberEngagement)), expected);

    let bob = Filter { subscriber_id: Some("bob".into()), ..Filter::default() };
    assert_eq!(rows(&store, Analysis::SubscriberEngagement, &bob, &Tuning::default()), vec![expected[1].clone()]);
}

#[test]
fn failure_classification_ranks_reasons_per_channel() {
    let (_dir, store) = loaded();
    let expected = json!([
        {"channel": "EMAIL", "rank": 1, "error_class": "HTTP_4XX", "error_kind": "PERMANENT", "reason": "HTTP 404: no mailbox",
         "failures": 1, "share_of_channel_failures": 0.5},
        {"channel": "EMAIL", "rank": 2, "error_class": "HTTP_5XX", "error_kind": "TRANSIENT", "reason": "HTTP 503: busy",
         "failures": 1, "share_of_channel_failures": 0.5},
        {"channel": "SFTP", "rank": 1, "error_class": "TIMEOUT", "error_kind": "TRANSIENT", "reason": "timed out after 10.0s",
         "failures": 2, "share_of_channel_failures": 0.6667},
        {"channel": "SFTP", "rank": 2, "error_class": "CONNECTION", "error_kind": "TRANSIENT",
         "reason": "connection to sftp.example.com:22 failed: refused", "failures": 1, "share_of_channel_failures": 0.3333},
    ]);
    assert_eq!(Value::Array(all(&store, Analysis::FailureClassification)), expected);

    let top_one = Tuning { top: 1, ..Tuning::default() };
    let firsts = rows(&store, Analysis::FailureClassification, &Filter::default(), &top_one);
    assert_eq!(firsts, vec![expected[0].clone(), expected[2].clone()]);
}

#[test]
fn distribution_patterns_by_type_period_and_hour() {
    let (_dir, store) = loaded();
    let expected = json!([
        {"dimension": "hour_of_day", "value": "10", "reports": 2, "deliveries": 5},
        {"dimension": "hour_of_day", "value": "11", "reports": 1, "deliveries": 1},
        {"dimension": "report_period", "value": "2025-05", "reports": 1, "deliveries": 2},
        {"dimension": "report_period", "value": "2025-06", "reports": 2, "deliveries": 4},
        {"dimension": "report_type", "value": "PERFORMANCE_REPORT", "reports": 1, "deliveries": 3},
        {"dimension": "report_type", "value": "RISK_REPORT", "reports": 2, "deliveries": 3},
    ]);
    assert_eq!(Value::Array(all(&store, Analysis::DistributionPatterns)), expected);

    let risk = Filter { report_type: Some("RISK_REPORT".into()), ..Filter::default() };
    let expected = json!([
        {"dimension": "hour_of_day", "value": "10", "reports": 1, "deliveries": 2},
        {"dimension": "hour_of_day", "value": "11", "reports": 1, "deliveries": 1},
        {"dimension": "report_period", "value": "2025-05", "reports": 1, "deliveries": 2},
        {"dimension": "report_period", "value": "2025-06", "reports": 1, "deliveries": 1},
        {"dimension": "report_type", "value": "RISK_REPORT", "reports": 2, "deliveries": 3},
    ]);
    assert_eq!(Value::Array(rows(&store, Analysis::DistributionPatterns, &risk, &Tuning::default())), expected);
}

#[test]
fn recommendations_follow_from_the_figures() {
    let (_dir, store) = loaded();
    // With the default thresholds (10 attempts before judging) the data set is too small.
    assert!(all(&store, Analysis::Recommendations).is_empty());

    let tuning = Tuning { min_attempts: 2, failure_rate: 0.25, min_improvement: 0.3, min_permanent: 1, ..Tuning::default() };
    let found = rows(&store, Analysis::Recommendations, &Filter::default(), &tuning);
    let kinds: Vec<(&str, &str, &str)> = found
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["subscriber_id"].as_str().unwrap(), r["channel"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("ENDPOINT_FAILING", "bob", "EMAIL"),
            ("ENDPOINT_FAILING", "bob", "SFTP"),
            ("FIX_DESTINATION", "bob", "EMAIL"),
            ("SWITCH_CHANNEL", "bob", "SFTP"),
        ]
    );
    assert_eq!(found[0]["evidence"], json!({"attempts": 3, "failed": 2, "failure_rate": 0.6667, "top_error": "HTTP 404: no mailbox"}));
    assert_eq!(found[1]["evidence"]["top_error"], "timed out after 10.0s");
    assert_eq!(found[2]["evidence"], json!({"permanent_failures": 1, "attempts": 3}));
    assert_eq!(
        found[3]["evidence"],
        json!({"better_channel": "EMAIL", "attempt_success_rate": 0.0, "better_attempt_success_rate": 0.3333,
               "attempts": 3, "better_channel_attempts": 3})
    );
    assert_eq!(found[3]["message"], "bob is served better by EMAIL (33.3% of attempts succeed) than by SFTP (0.0%)");

    // A stricter improvement threshold drops the switch suggestion.
    let strict = Tuning { min_improvement: 0.5, ..tuning };
    let found = rows(&store, Analysis::Recommendations, &Filter::default(), &strict);
    assert!(found.iter().all(|r| r["kind"] != "SWITCH_CHANNEL"), "{found:?}");
}

fn limits() -> Limits {
    Limits { max_rows: 3, timeout: TIMEOUT }
}

#[test]
fn sql_answers_json_with_a_row_limit() {
    let (_dir, store) = loaded();
    let answer = store
        .query("SELECT delivery_id, attempt, succeeded FROM delivery_attempts ORDER BY delivery_id, attempt", Format::Json, limits())
        .unwrap();
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        body,
        json!({
            "columns": [{"name": "delivery_id", "type": "VARCHAR"}, {"name": "attempt", "type": "INTEGER"},
                        {"name": "succeeded", "type": "BOOLEAN"}],
            "rows": [{"delivery_id": "d1", "attempt": 1, "succeeded": true},
                     {"delivery_id": "d2", "attempt": 1, "succeeded": false},
                     {"delivery_id": "d2", "attempt": 2, "succeeded": true}],
            "row_count": 3,
            "truncated": true
        })
    );
    let fits = store.query("SELECT count(*) AS n FROM dead_letters;", Format::Json, limits()).unwrap();
    let body: Value = serde_json::from_slice(&fits.body).unwrap();
    assert_eq!(body["rows"], json!([{"n": 2}]));
    assert_eq!(body["truncated"], false);
}

#[test]
fn sql_other_than_one_select_is_refused_and_files_are_out_of_reach() {
    let (dir, store) = loaded();
    for sql in [
        "DROP TABLE deliveries",
        "SELECT 1; DROP TABLE deliveries",
        "SELECT 1; SELECT 2",
        "COPY deliveries TO '/tmp/stolen.csv'",
        "ATTACH '/tmp/other.duckdb' AS other",
        "INSTALL httpfs",
        "LOAD httpfs",
        "PRAGMA database_list",
        "SET enable_external_access = true",
        "DELETE FROM deliveries",
        "CREATE TABLE t AS SELECT 1",
    ] {
        match store.query(sql, Format::Json, limits()) {
            Err(AnalyticsError::Refused(_)) => {}
            other => panic!("{sql:?} was not refused: {other:?}"),
        }
    }
    // SELECTs that would reach outside the database fail at run time (external access is off).
    for sql in [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM query('DROP TABLE deliveries')",
    ] {
        assert!(matches!(store.query(sql, Format::Json, limits()), Err(AnalyticsError::Duckdb(_))), "{sql}");
    }
    let stolen = dir.path().join("analytics-scratch").join("x.csv");
    let sneaky = format!("SELECT * FROM read_csv('{}')", stolen.display());
    assert!(store.query(&sneaky, Format::Json, limits()).is_err());
    // Nothing was dropped or changed.
    let count = store.query("SELECT count(*) AS n FROM deliveries", Format::Json, limits()).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&count.body).unwrap()["rows"], json!([{"n": 6}]));
}

#[test]
fn sql_answers_read_back_as_arrow_ipc_and_parquet() {
    use duckdb::arrow::array::{Array, BooleanArray, Int32Array, StringArray};

    let (_dir, store) = loaded();
    let sql = "SELECT delivery_id, attempt, succeeded FROM delivery_attempts ORDER BY delivery_id, attempt";

    let arrow = store.query(sql, Format::ArrowIpc, limits()).unwrap();
    assert!(arrow.truncated);
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow.body), None).unwrap();
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    let ids: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let column = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            (0..column.len()).map(|i| column.value(i).to_string()).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(ids, vec!["d1", "d2", "d2"]);
    let first = &batches[0];
    assert_eq!(first.column(1).as_any().downcast_ref::<Int32Array>().unwrap().value(2), 2);
    assert!(!first.column(2).as_any().downcast_ref::<BooleanArray>().unwrap().value(1));

    let parquet = store.query(sql, Format::Parquet, limits()).unwrap();
    assert_eq!((parquet.rows, parquet.truncated), (3, true));
    assert_eq!(&parquet.body[..4], b"PAR1");
    assert_eq!(&parquet.body[parquet.body.len() - 4..], b"PAR1");
    assert_eq!(read_parquet(&parquet.body), vec!["d1|1|true", "d2|1|false", "d2|2|true"]);
}

/// Rows of a Parquet file as `a|b|c` text, read by a separate in-memory DuckDB.
fn read_parquet(bytes: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("answer.parquet");
    std::fs::write(&path, bytes).unwrap();
    read_parquet_file(&path, &["delivery_id", "attempt", "succeeded"])
}

fn read_parquet_file(path: &Path, columns: &[&str]) -> Vec<String> {
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let columns: Vec<String> = columns.iter().map(|c| format!("{c}::VARCHAR")).collect();
    let sql = format!("SELECT concat_ws('|', {}) FROM read_parquet('{}')", columns.join(", "), path.display());
    let mut statement = conn.prepare(&sql).unwrap();
    statement.query_map([], |row| row.get::<_, String>(0)).unwrap().map(Result::unwrap).collect()
}

#[test]
fn a_query_over_the_time_limit_is_stopped() {
    let (_dir, store) = loaded();
    let slow = "SELECT count(*) FROM range(100000000) a, range(100000000) b";
    let limits = Limits { max_rows: 10, timeout: Duration::from_millis(300) };
    assert!(matches!(store.query(slow, Format::Json, limits), Err(AnalyticsError::Timeout(_))));
}

#[test]
fn export_writes_attempt_outcomes_and_stats_to_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(store.ingest().offer(data_set()));
    store.close();
    drop(store);

    let conn = analytics::open_read_only(dir.path()).unwrap();
    let out = dir.path().join("history.parquet");
    let since = Some(T10 + 30 * MIN);
    let written = analytics::export::to_parquet(&conn, analytics::Export::Deliveries, since, &out).unwrap();
    assert_eq!(written, 5);
    assert_eq!(
        read_parquet_file(&out, &["delivery_id", "attempt", "status", "channel", "subscription_id"]),
        vec![
            "d3|1|DELIVERED|API_WEBHOOK|sub-alice-API_WEBHOOK",
            "d4|1|DEAD_LETTERED|EMAIL|sub-bob-EMAIL",
            "d5|1|RETRYING|SFTP|sub-bob-SFTP",
            "d5|2|RETRYING|SFTP|sub-bob-SFTP",
            "d5|3|DEAD_LETTERED|SFTP|sub-bob-SFTP",
        ]
    );

    let stats = dir.path().join("stats.parquet");
    assert_eq!(analytics::export::to_parquet(&conn, analytics::Export::Stats, None, &stats).unwrap(), 1);
    assert_eq!(
        read_parquet_file(&stats, &["report_type", "channel", "deliveries_attempted", "deliveries_successful", "avg_delivery_time_ms"]),
        vec!["PERFORMANCE_REPORT|API_WEBHOOK|1|1|100.0"]
    );
}

#[test]
fn a_revised_stats_window_replaces_the_earlier_figures() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let window = |attempted: i64| StatsWindowRow {
        window_start: T10,
        window_end: T10 + MIN,
        report_type: "RISK_REPORT",
        channel: "EMAIL",
        attempted,
        successful: attempted,
        failed: 0,
        avg_delivery_time_ms: None,
        p99_delivery_time_ms: None,
    };
    assert!(store.ingest().offer(Chunk { stats: vec![window(1)], ..Chunk::default() }));
    store.ingest().flush(TIMEOUT).unwrap();
    assert!(store.ingest().offer(Chunk { stats: vec![window(4)], ..Chunk::default() }));
    let answer = store.query("SELECT deliveries_attempted AS n FROM distribution_stats", Format::Json, limits()).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&answer.body).unwrap()["rows"], json!([{"n": 4}]));
}

#[test]
fn export_without_a_database_says_so() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(analytics::open_read_only(dir.path()), Err(AnalyticsError::Missing(_))));
}

#[test]
fn a_delivery_dead_lettered_replayed_and_dead_lettered_again_exports_each_attempt_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let error = Some((ErrorKind::Permanent, "HTTP 410: gone"));
    let chunk = Chunk {
        deliveries: vec![created(&D4)],
        attempts: vec![attempt(&D4, 1, 100 * MS, 10, error), attempt(&D4, 1, 10 * MIN, 10, error)],
        dead_letters: vec![dead(&D4, 1, 100 * MS, "HTTP 410: gone"), dead(&D4, 1, 10 * MIN, "HTTP 410: gone")],
        ..Chunk::default()
    };
    assert!(store.ingest().offer(chunk));
    store.close();
    drop(store);
    let conn = analytics::open_read_only(dir.path()).unwrap();
    let out = dir.path().join("history.parquet");
    assert_eq!(analytics::export::to_parquet(&conn, analytics::Export::Deliveries, None, &out).unwrap(), 2);
    assert_eq!(read_parquet_file(&out, &["delivery_id", "attempt", "status"]), vec!["d4|1|DEAD_LETTERED", "d4|1|DEAD_LETTERED"]);
}
