//! Distribution analytics end to end: real deliveries to a webhook receiver (one endpoint healthy,
//! one failing once then recovering, one refusing with 404) and the dashboard, then the analyses,
//! the SQL endpoint in its three formats, and `repdist export`, checked against the counts this
//! test set up (latencies vary from run to run, so only their presence is checked here; the
//! figures themselves are checked on a fixed data set in tests/analytics/main.rs).
//!
//! Two reports (PERFORMANCE 2025-06, RISK 2025-05), each to four deliveries:
//! client_ok: API_WEBHOOK (204) + DASHBOARD_NOTIFICATION; client_flaky: API_WEBHOOK (503 once, then
//! 204); client_gone: API_WEBHOOK (404: dead-lettered at once). So API_WEBHOOK has 6 deliveries and
//! 7 attempts (4 delivered, 3 failed: one 503, two 404), DASHBOARD_NOTIFICATION 2 and 2.

use std::process::Command;
use std::time::Duration;

use repdist::analytics::arrow_ipc;
use repdist::analytics::duckdb;
use serde_json::{json, Value};

use crate::helpers::{eventually, report, webhook_subscription, TestServer};
use crate::receiver::Receiver;

const B: &str = "/api/v1/reporting";

async fn run_deliveries(server: &TestServer) {
    let receiver = Receiver::start().await;
    let (ok_url, ok_secret) = receiver.endpoint("ok");
    let (flaky_url, flaky_secret) = receiver.endpoint("flaky");
    let (gone_url, gone_secret) = receiver.endpoint("gone");
    receiver.script("flaky", vec![(503, None), (204, None)]);
    receiver.script("gone", vec![(404, None)]);
    let mut ok = webhook_subscription("sub-ok", "client_ok", &ok_url, &ok_secret);
    ok["delivery_preferences"]["channels"] = json!(["API_WEBHOOK", "DASHBOARD_NOTIFICATION"]);
    server.subscribe(ok).await;
    server.subscribe(webhook_subscription("sub-flaky", "client_flaky", &flaky_url, &flaky_secret)).await;
    server.subscribe(webhook_subscription("sub-gone", "client_gone", &gone_url, &gone_secret)).await;

    let mut risk = report("evt-2", "rep-2");
    risk["data_type"] = json!("RISK_REPORT");
    risk["report_data"]["report_type"] = json!("RISK_REPORT");
    risk["report_data"]["report_period"] = json!("2025-05");
    for event in [report("evt-1", "rep-1"), risk] {
        let ids = server.deliver(event).await;
        assert_eq!(ids.len(), 4);
        for id in &ids {
            let finished = eventually(Duration::from_secs(10), || async {
                let status = server.status_of(id).await;
                (status["status"] == "DELIVERED" || status["status"] == "DEAD_LETTERED").then_some(())
            })
            .await;
            assert!(finished.is_some(), "delivery {id} did not finish");
        }
    }
}

async fn analysis(server: &TestServer, query: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("{B}/analytics/{query}")).await;
    assert_eq!(status, 200, "{query}: {body}");
    assert_eq!(body["complete"], true, "{body}");
    body["rows"].as_array().unwrap().clone()
}

/// `fields` of each row, in order.
fn pick(rows: &[Value], fields: &[&str]) -> Vec<Value> {
    rows.iter().map(|row| Value::Array(fields.iter().map(|f| row[*f].clone()).collect())).collect()
}

#[tokio::test]
async fn analyses_answer_from_the_deliveries_that_happened() {
    let server = TestServer::start().await;
    run_deliveries(&server).await;

    let (status, list) = server.get(&format!("{B}/analytics")).await;
    assert_eq!(status, 200);
    assert_eq!(list["analyses"].as_array().unwrap().len(), 6);
    assert_eq!(list["sql_enabled"], false);

    let channels = analysis(&server, "channel-effectiveness").await;
    assert_eq!(
        pick(&channels, &["channel", "deliveries_attempted", "attempts", "delivered", "dead_lettered", "success_rate",
            "first_attempt_success_rate", "retries"]),
        vec![json!(["API_WEBHOOK", 6, 7, 4, 2, 0.6667, 0.5, 1]), json!(["DASHBOARD_NOTIFICATION", 2, 2, 2, 0, 1.0, 1.0, 0])]
    );
    assert!(channels[0]["avg_time_to_deliver_ms"].as_f64().unwrap() > 0.0);

    let engagement = analysis(&server, "subscriber-engagement").await;
    assert_eq!(
        pick(&engagement, &["subscriber_id", "deliveries", "delivered", "failed_attempts", "dead_lettered",
            "dashboard_notifications", "webhook_acknowledgements", "channels"]),
        vec![
            json!(["client_flaky", 2, 2, 1, 0, 0, 2, ["API_WEBHOOK"]]),
            json!(["client_gone", 2, 0, 2, 2, 0, 0, ["API_WEBHOOK"]]),
            json!(["client_ok", 4, 4, 0, 0, 2, 2, ["API_WEBHOOK", "DASHBOARD_NOTIFICATION"]]),
        ]
    );

    let failures = analysis(&server, "failure-classification").await;
    assert_eq!(
        pick(&failures, &["channel", "rank", "error_class", "error_kind", "failures", "share_of_channel_failures"]),
        vec![json!(["API_WEBHOOK", 1, "HTTP_4XX", "PERMANENT", 2, 0.6667]), json!(["API_WEBHOOK", 2, "HTTP_5XX", "TRANSIENT", 1, 0.3333])]
    );

    let patterns = analysis(&server, "distribution-patterns?channel=API_WEBHOOK").await;
    let by = |dimension: &str| -> Vec<Value> {
        pick(&patterns.iter().filter(|r| r["dimension"] == dimension).cloned().collect::<Vec<_>>(), &["value", "reports", "deliveries"])
    };
    assert_eq!(by("report_type"), vec![json!(["PERFORMANCE_REPORT", 1, 3]), json!(["RISK_REPORT", 1, 3])]);
    assert_eq!(by("report_period"), vec![json!(["2025-05", 1, 3]), json!(["2025-06", 1, 3])]);
    let per_hour: i64 = by("hour_of_day").iter().map(|r| r[2].as_i64().unwrap()).sum();
    assert_eq!(per_hour, 6);

    let hours = analysis(&server, "success-rate-latency").await;
    let webhook_attempts: i64 = hours.iter().filter(|r| r["channel"] == "API_WEBHOOK").map(|r| r["attempts"].as_i64().unwrap()).sum();
    assert_eq!(webhook_attempts, 7);
    assert!(hours.iter().all(|r| r["p99_latency_ms"].as_f64().is_some()), "{hours:?}");

    let advice = analysis(&server, "recommendations?min_attempts=2&failure_rate=0.5&min_permanent=2").await;
    assert_eq!(
        pick(&advice, &["kind", "subscriber_id", "channel"]),
        vec![json!(["ENDPOINT_FAILING", "client_gone", "API_WEBHOOK"]), json!(["FIX_DESTINATION", "client_gone", "API_WEBHOOK"])]
    );

    // Filters narrow; a filter that matches nothing answers no rows.
    let dashboard = analysis(&server, "channel-effectiveness?channel=DASHBOARD_NOTIFICATION").await;
    assert_eq!(dashboard.len(), 1);
    assert!(analysis(&server, "channel-effectiveness?to=2020-01-01").await.is_empty());

    // Bad parameters name themselves.
    for (query, field, code) in [
        ("channel-effectiveness?channel=FAX", "channel", 422),
        ("channel-effectiveness?from=yesterday", "from", 422),
        ("channel-effectiveness?from=2025-02-01&to=2025-01-01", "to", 422),
        ("recommendations?failure_rate=2", "failure_rate", 422),
        ("channel-effectiveness?colour=blue", "colour", 422),
    ] {
        let (status, body) = server.get(&format!("{B}/analytics/{query}")).await;
        assert_eq!((status, body["error"]["field"].as_str()), (code, Some(field)), "{query}: {body}");
    }
    let (status, body) = server.get(&format!("{B}/analytics/horoscope")).await;
    assert_eq!(status, 404, "{body}");

    // SQL analytics is off unless asked for.
    let (status, body) = server.post(&format!("{B}/analytics/query"), &json!({"sql": "SELECT 1"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("sql_analytics_disabled")));
}

async fn query(server: &TestServer, sql: &str, accept: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let response = server
        .http
        .post(format!("{}{B}/analytics/query", server.base))
        .header("content-type", "application/json")
        .header("accept", accept)
        .body(json!({ "sql": sql }).to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn sql_analytics_answers_json_arrow_and_parquet_and_refuses_anything_but_select() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(data_dir.path(), |config| {
        config.analytics.sql_enabled = true;
        config.analytics.max_rows = 1;
    })
    .await;
    run_deliveries(&server).await;
    let sql = "SELECT channel, count(*) AS attempts FROM delivery_attempts GROUP BY channel ORDER BY channel";

    let (status, headers, body) = query(&server, sql, "application/json").await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["rows"], json!([{"channel": "API_WEBHOOK", "attempts": 7}]));
    assert_eq!(body["truncated"], true, "max_rows is 1");
    assert_eq!(headers["x-repdist-truncated"], "true");

    let (status, headers, body) = query(&server, sql, "application/vnd.apache.arrow.stream").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/vnd.apache.arrow.stream");
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None).unwrap();
    let schema = reader.schema();
    assert_eq!(schema.field(0).name(), "channel");
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);

    let (status, headers, body) = query(&server, sql, "application/vnd.apache.parquet").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/vnd.apache.parquet");
    let file = data_dir.path().join("answer.parquet");
    std::fs::write(&file, &body).unwrap();
    let reader = duckdb::Connection::open_in_memory().unwrap();
    let read_back: (String, i64) = reader
        .query_row(&format!("SELECT channel, attempts FROM read_parquet('{}')", file.display()), [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap();
    assert_eq!(read_back, ("API_WEBHOOK".to_string(), 7));

    for refused in [
        "DROP TABLE deliveries",
        "SELECT 1; DROP TABLE deliveries",
        "COPY deliveries TO '/tmp/stolen.csv'",
        "ATTACH '/tmp/other.duckdb'",
        "INSTALL httpfs",
        "PRAGMA database_list",
    ] {
        let (status, _, body) = query(&server, refused, "application/json").await;
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((status, body["error"]["code"].as_str(), body["error"]["field"].as_str()), (422, Some("statement_refused"), Some("sql")), "{refused}: {body}");
    }
    let (status, _, body) = query(&server, "SELECT * FROM read_csv('/etc/passwd')", "application/json").await;
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = query(&server, "SELECT 1", "text/csv").await;
    assert_eq!(status, 406);
    let (status, body) = server.post(&format!("{B}/analytics/query"), &json!({"statement": "SELECT 1"})).await;
    assert_eq!(status, 422, "{body}");
}

fn export(data_dir: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_repdist"))
        .args(["export", "--data-dir"])
        .arg(data_dir)
        .args(["--format", "parquet", "--out"])
        .arg(out)
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .expect("repdist export runs")
}

#[tokio::test]
async fn export_writes_delivery_history_and_stats_windows_to_parquet() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(data_dir.path(), |_| {}).await;
    run_deliveries(&server).await;
    let out = data_dir.path().join("history.parquet");

    // The analytics file belongs to the running server.
    let refused = export(data_dir.path(), &out, &[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("in use"), "{}", String::from_utf8_lossy(&refused.stderr));

    // Every attempt's outcome is in the live stats before stopping, so the closing windows hold them.
    let counted = eventually(Duration::from_secs(10), || async {
        let (_, windows) = server.get(&format!("{B}/stats")).await;
        let attempted: u64 = windows.as_array()?.iter().map(|w| w["deliveries_attempted"].as_u64().unwrap_or(0)).sum();
        (attempted == 9).then_some(())
    })
    .await;
    assert!(counted.is_some(), "the live stats never counted the 9 attempts");
    server.server.shutdown().await.unwrap();

    let written = export(data_dir.path(), &out, &["--since", "2000-01-01"]);
    assert!(written.status.success(), "{}", String::from_utf8_lossy(&written.stderr));
    assert!(String::from_utf8_lossy(&written.stdout).contains("wrote 9 rows"), "{}", String::from_utf8_lossy(&written.stdout));
    let reader = duckdb::Connection::open_in_memory().unwrap();
    let mut statement = reader
        .prepare(&format!(
            "SELECT channel, status, count(*) FROM read_parquet('{}') GROUP BY ALL ORDER BY ALL",
            out.display()
        ))
        .unwrap();
    let counts: Vec<(String, String, i64)> =
        statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect();
    let expected = [("API_WEBHOOK", "DEAD_LETTERED", 2), ("API_WEBHOOK", "DELIVERED", 4), ("API_WEBHOOK", "RETRYING", 1), ("DASHBOARD_NOTIFICATION", "DELIVERED", 2)];
    assert_eq!(counts, expected.map(|(c, s, n)| (c.to_string(), s.to_string(), n)));
    let ids: i64 = reader
        .query_row(&format!("SELECT count(DISTINCT delivery_id) FROM read_parquet('{}') WHERE report_id IN ('rep-1', 'rep-2') AND subscription_id LIKE 'sub-%'", out.display()), [], |r| r.get(0))
        .unwrap();
    assert_eq!(ids, 8);

    let future = export(data_dir.path(), &out, &["--since", "2999-01-01"]);
    assert!(String::from_utf8_lossy(&future.stdout).contains("wrote 0 rows"));

    let stats = data_dir.path().join("stats.parquet");
    let written = export(data_dir.path(), &stats, &["--what", "stats"]);
    assert!(written.status.success(), "{}", String::from_utf8_lossy(&written.stderr));
    let (attempted, successful): (i64, i64) = reader
        .query_row(
            &format!("SELECT sum(deliveries_attempted)::BIGINT, sum(deliveries_successful)::BIGINT FROM read_parquet('{}')", stats.display()),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((attempted, successful), (9, 6));
}
