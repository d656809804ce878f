//! Report content per subscriber: rows and columns selected from a tabular report, each output
//! format read back with an independent reader, the cache, content facts; then end to end, the
//! personalised file arriving through the real SMTP peer, sshd and webhook receiver, and TRIGGERED
//! subscriptions firing and not firing on a report's content and metadata.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use calamine::{Data, Reader, Xlsx};
use dataflows::content::{ContentSpec, OutputFormat, RowPredicate};
use dataflows::delivery::{delivery_id, DeliveryChannel};
use dataflows::report::ReportDistribution;
use mail_parser::{MessageParser, MimeHeaders};
use polars::prelude::*;
use repdist::content::{ContentError, ContentStore, Pruned};
use serde_json::{json, Value};

use crate::helpers::{eventually, report, server_with_relay, TestServer};
use crate::receiver::Receiver;
use crate::smtp::SmtpPeer;
use crate::sshd::{KeyPair, Sshd};

/// Six positions over two portfolios and three regions.
const POSITIONS: &str = "\
portfolio_id,region,instrument,exposure,var_99
portfolio_001,EMEA,bond-a,100.5,1.5
portfolio_001,APAC,bond-b,250,2.5
portfolio_001,EMEA,equity-c,900,7.25
portfolio_002,EMEA,bond-d,400,3
portfolio_002,AMER,equity-e,50,0.5
portfolio_001,AMER,fx-f,75,1
";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn report_at(report_id: &str, file: &Path) -> ReportDistribution {
    let mut body = report(&format!("evt-{report_id}"), report_id);
    body["report_data"]["file_path"] = json!(file.to_str().unwrap());
    serde_json::from_value(body).unwrap()
}

fn predicate(json: Value) -> RowPredicate {
    serde_json::from_value(json).unwrap()
}

/// portfolio_001, EMEA, exposure above 100: rows bond-a and equity-c; three columns.
fn emea_spec(format: Option<OutputFormat>) -> ContentSpec {
    ContentSpec {
        portfolio_ids: vec!["portfolio_001".into()],
        rows: vec![predicate(json!({"column": "region", "in": ["EMEA"]})), predicate(json!({"column": "exposure", "gt": 100}))],
        columns: vec!["instrument".into(), "exposure".into(), "region".into()],
        format,
    }
}

/// Read on a thread of its own: Polars refuses to block inside a current-thread tokio runtime, which
/// an async test is (the service does the same, see `content::off_runtime`).
fn read_parquet(path: &Path) -> DataFrame {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        LazyFrame::scan_parquet(PlRefPath::try_from_path(&path).unwrap(), ScanArgsParquet::default()).unwrap().collect().unwrap()
    })
    .join()
    .expect("the parquet file reads")
}

fn read_xlsx(path: &Path) -> Vec<Vec<Data>> {
    let mut workbook: Xlsx<_> = calamine::open_workbook(path).unwrap();
    let sheet = workbook.worksheet_range_at(0).expect("one sheet").unwrap();
    sheet.rows().map(|row| row.to_vec()).collect()
}

#[test]
fn rows_and_columns_are_selected_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let source = write(dir.path(), "positions.csv", POSITIONS);
    let store = ContentStore::new(dir.path().join("cache"));
    let report = report_at("rep-formats", &source);

    let csv = store.personalise(&report, &emea_spec(Some(OutputFormat::Csv))).unwrap().unwrap();
    assert_eq!(csv.file_name, "positions.csv");
    assert_eq!(std::fs::read_to_string(&csv.path).unwrap(), "instrument,exposure,region\nbond-a,100.5,EMEA\nequity-c,900.0,EMEA\n");

    let jsonl = store.personalise(&report, &emea_spec(Some(OutputFormat::Json))).unwrap().unwrap();
    assert_eq!(jsonl.file_name, "positions.jsonl");
    let rows: Vec<Value> = std::fs::read_to_string(&jsonl.path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        rows,
        vec![
            json!({"instrument": "bond-a", "exposure": 100.5, "region": "EMEA"}),
            json!({"instrument": "equity-c", "exposure": 900.0, "region": "EMEA"})
        ]
    );

    let parquet = store.personalise(&report, &emea_spec(Some(OutputFormat::Parquet))).unwrap().unwrap();
    let table = read_parquet(&parquet.path);
    let names: Vec<&str> = table.get_column_names().into_iter().map(|n| n.as_str()).collect();
    assert_eq!(names, ["instrument", "exposure", "region"]);
    let instruments: Vec<Option<&str>> = table.column("instrument").unwrap().str().unwrap().iter().collect();
    assert_eq!(instruments, [Some("bond-a"), Some("equity-c")]);
    let exposures: Vec<Option<f64>> = table.column("exposure").unwrap().f64().unwrap().iter().collect();
    assert_eq!(exposures, [Some(100.5), Some(900.0)]);

    let xlsx = store.personalise(&report, &emea_spec(Some(OutputFormat::Xlsx))).unwrap().unwrap();
    assert_eq!(xlsx.file_name, "positions.xlsx");
    assert_eq!(
        read_xlsx(&xlsx.path),
        vec![
            vec![Data::String("instrument".into()), Data::String("exposure".into()), Data::String("region".into())],
            vec![Data::String("bond-a".into()), Data::Float(100.5), Data::String("EMEA".into())],
            vec![Data::String("equity-c".into()), Data::Float(900.0), Data::String("EMEA".into())],
        ]
    );
}

#[test]
fn parquet_and_json_lines_sources_and_the_other_predicates() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(dir.path(), "positions.csv", POSITIONS);
    let store = ContentStore::new(dir.path().join("cache"));
    // A Parquet and a JSON-lines copy of the whole file, made by the store itself (no filter).
    let all = |format| ContentSpec { format: Some(format), columns: vec![], ..Default::default() };
    let parquet = store.personalise(&report_at("rep-copy", &csv), &all(OutputFormat::Parquet)).unwrap().unwrap();
    let jsonl = store.personalise(&report_at("rep-copy", &csv), &all(OutputFormat::Json)).unwrap().unwrap();
    assert_eq!(read_parquet(&parquet.path).height(), 6, "no filter: every row");

    for (name, path) in [("positions.parquet", &parquet.path), ("positions.jsonl", &jsonl.path)] {
        let source = dir.path().join(name);
        std::fs::copy(path, &source).unwrap();
        let spec = ContentSpec {
            rows: vec![
                predicate(json!({"column": "region", "not_in": ["APAC", "AMER"]})),
                predicate(json!({"column": "var_99", "lte": 3})),
                predicate(json!({"column": "portfolio_id", "ne": "portfolio_003"})),
            ],
            columns: vec!["instrument".into()],
            format: Some(OutputFormat::Csv),
            ..Default::default()
        };
        let out = store.personalise(&report_at(&format!("rep-{name}"), &source), &spec).unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(&out.path).unwrap(), "instrument\nbond-a\nbond-d\n", "from {name}");
        // No format named: the source's own.
        let own = ContentSpec { format: None, ..spec };
        let out = store.personalise(&report_at(&format!("rep-{name}"), &source), &own).unwrap().unwrap();
        assert_eq!(out.format, if name.ends_with("parquet") { OutputFormat::Parquet } else { OutputFormat::Json });
    }
}

#[test]
fn identical_specs_share_one_cached_file_and_mismatches_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let source = write(dir.path(), "positions.csv", POSITIONS);
    let store = ContentStore::new(dir.path().join("cache"));
    let report = report_at("rep-cache", &source);
    let first = store.personalise(&report, &emea_spec(None)).unwrap().unwrap();
    std::fs::write(&first.path, "instrument\nmarker\n").unwrap();
    let second = store.personalise(&report, &emea_spec(None)).unwrap().unwrap();
    assert_eq!(first, second, "the same (report, spec): the same file");
    assert_eq!(std::fs::read_to_string(&second.path).unwrap(), "instrument\nmarker\n", "reused, not produced again");
    let other = store.personalise(&report_at("rep-cache-2", &source), &emea_spec(None)).unwrap().unwrap();
    assert_ne!(other.path, first.path, "another report: another file");

    let unknown = ContentSpec { columns: vec!["isin".into()], ..Default::default() };
    match store.personalise(&report, &unknown) {
        Err(error @ ContentError::Mismatch(_)) => {
            assert!(!error.is_transient());
            assert!(error.to_string().contains("filters.columns[0]") && error.to_string().contains("isin"), "{error}");
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    let missing = report_at("rep-gone", &dir.path().join("gone.csv"));
    assert!(matches!(store.personalise(&missing, &emea_spec(None)), Err(ContentError::Io(_))), "a missing file may appear");
    let pdf = report_at("rep-pdf", &write(dir.path(), "q2.pdf", "%PDF"));
    assert_eq!(store.personalise(&pdf, &emea_spec(None)).unwrap(), None, "not tabular: delivered as published");
}

#[test]
fn text_sources_are_staged_once_as_parquet_and_every_spec_reads_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let source = write(dir.path(), "positions.csv", POSITIONS);
    let store = ContentStore::new(dir.path().join("cache")).with_staging_threshold(0);
    let report = report_at("rep-staged", &source);
    let csv = store.personalise(&report, &emea_spec(Some(OutputFormat::Csv))).unwrap().unwrap();
    assert_eq!(
        std::fs::read_to_string(&csv.path).unwrap(),
        "instrument,exposure,region\nbond-a,100.5,EMEA\nequity-c,900.0,EMEA\n",
        "the same rows and values as from the text"
    );
    let staged = csv.path.parent().and_then(Path::parent).unwrap().join("source.parquet");
    let copy = read_parquet(&staged);
    assert_eq!(copy.height(), 6, "every row staged");
    assert_eq!(copy.column("exposure").unwrap().dtype(), &DataType::Float64, "typed as the text scan inferred");

    // Another spec of the same report reads the staged copy, not the text: cut the copy to its
    // first row (bond-a) and only that row comes out.
    let mut first = copy.head(Some(1));
    ParquetWriter::new(std::fs::File::create(&staged).unwrap()).finish(&mut first).unwrap();
    let instruments = ContentSpec { columns: vec!["instrument".into()], format: Some(OutputFormat::Csv), ..Default::default() };
    let out = store.personalise(&report, &instruments).unwrap().unwrap();
    assert_eq!(std::fs::read_to_string(&out.path).unwrap(), "instrument\nbond-a\n");

    // Below the threshold (1 MiB by default) the text is read directly.
    let unstaged = ContentStore::new(dir.path().join("cache-small"));
    let csv = unstaged.personalise(&report, &emea_spec(Some(OutputFormat::Csv))).unwrap().unwrap();
    assert!(!csv.path.parent().and_then(Path::parent).unwrap().join("source.parquet").exists());
}

#[test]
fn pruning_removes_old_enough_entries_and_they_are_produced_again() {
    let dir = tempfile::tempdir().unwrap();
    let source = write(dir.path(), "positions.csv", POSITIONS);
    let store = ContentStore::new(dir.path().join("cache")).with_staging_threshold(0);
    assert_eq!(store.prune(Duration::ZERO).unwrap(), Pruned::default(), "no cache yet: nothing to do");
    let report = report_at("rep-prune", &source);
    let first = store.personalise(&report, &emea_spec(Some(OutputFormat::Csv))).unwrap().unwrap();
    let produced = std::fs::read(&first.path).unwrap();

    assert_eq!(store.prune(Duration::from_secs(3600)).unwrap(), Pruned::default(), "an entry made just now stays");
    assert!(first.path.exists());
    let pruned = store.prune(Duration::ZERO).unwrap();
    assert_eq!(pruned.reports, 1);
    assert!(pruned.bytes > produced.len() as u64, "the personalised file and the staged copy: {pruned:?}");
    assert!(!first.path.exists());
    assert_eq!(std::fs::read_dir(dir.path().join("cache")).unwrap().count(), 0, "the report's directory went too");

    let again = store.personalise(&report, &emea_spec(Some(OutputFormat::Csv))).unwrap().unwrap();
    assert_eq!(again.path, first.path, "the same cache entry");
    assert_eq!(std::fs::read(&again.path).unwrap(), produced, "produced again, the same");
}

#[test]
fn content_facts_aggregate_every_numeric_column() {
    let dir = tempfile::tempdir().unwrap();
    let source = write(dir.path(), "positions.csv", POSITIONS);
    let facts = ContentStore::facts(&report_at("rep-facts", &source)).unwrap();
    let fact = |key: &str| facts.get(key).map(|n| n.0);
    assert_eq!(fact("count(*)"), Some(6.0));
    assert_eq!(fact("max(exposure)"), Some(900.0));
    assert_eq!(fact("min(exposure)"), Some(50.0));
    assert_eq!(fact("sum(exposure)"), Some(1775.5));
    assert_eq!(fact("mean(var_99)"), Some(15.75 / 6.0));
    assert_eq!(fact("count(var_99)"), Some(6.0));
    assert_eq!(fact("max(region)"), None, "text columns have no facts");
}

// ---- end to end -------------------------------------------------------------------------------

fn subscription(id: &str, channel: &str, settings: Value, formats: &[&str], filters: Value) -> Value {
    json!({
        "subscription_id": id,
        "subscriber_id": format!("{id}-client"),
        "report_types": ["PERFORMANCE_REPORT", "ALERT_REPORT"],
        "delivery_preferences": {"channels": [channel], "format_preferences": formats, "notification_settings": settings},
        "filters": filters
    })
}

fn tabular_report(event_id: &str, report_id: &str, file: &Path) -> Value {
    let mut body = report(event_id, report_id);
    body["report_data"]["file_path"] = json!(file.to_str().unwrap());
    body
}

async fn finished(server: &TestServer, id: &str) -> Value {
    eventually(Duration::from_secs(20), || async {
        let status = server.status_of(id).await;
        (status["status"] == "DELIVERED" || status["status"] == "DEAD_LETTERED").then_some(status)
    })
    .await
    .unwrap_or_else(|| panic!("delivery {id} never finished"))
}

#[tokio::test]
async fn email_attaches_the_subscribers_rows_as_csv() {
    let smtp = SmtpPeer::start();
    let server = server_with_relay(Some(smtp.addr)).await;
    let files = tempfile::tempdir().unwrap();
    let source = write(files.path(), "positions.csv", POSITIONS);
    let filters = json!({"portfolio_ids": ["portfolio_001"], "rows": [{"column": "region", "eq": "APAC"}],
                         "columns": ["instrument", "exposure"]});
    let settings = json!({"email": {"to": ["ann@client.test"]}});
    server.subscribe(subscription("mail-rows", "EMAIL", settings, &["CSV"], filters)).await;
    server.deliver(tabular_report("evt-mail-rows", "rep-mail-rows", &source)).await;
    let id = delivery_id("rep-mail-rows", "mail-rows", DeliveryChannel::Email);
    assert_eq!(finished(&server, &id).await["status"], "DELIVERED");

    let arrived = eventually(Duration::from_secs(10), || async { smtp.arrived().into_iter().next() }).await.expect("a message");
    let message = MessageParser::default().parse(&arrived.data).expect("a MIME message");
    let attachments: Vec<_> = message.attachments().collect();
    assert_eq!(attachments.len(), 1);
    assert_eq!(attachments[0].attachment_name(), Some("positions.csv"));
    assert_eq!(attachments[0].contents(), b"instrument,exposure\nbond-b,250.0\n", "only the subscriber's row and columns");
}

#[tokio::test]
async fn sftp_uploads_the_subscribers_rows_as_parquet() {
    let keys = tempfile::tempdir().unwrap();
    let client = KeyPair::generate(keys.path(), "client", "");
    let sshd = Sshd::start(&[&client.public_line]);
    let server = server_with_relay(None).await;
    let source = write(keys.path(), "positions.csv", POSITIONS);
    let directory = sshd.upload_dir().join("inbox");
    let settings = json!({"sftp": {
        "host": "127.0.0.1", "port": sshd.port, "username": "root",
        "private_key": client.private_pem, "host_key": sshd.host_key_line(),
        "directory": directory.display().to_string()
    }});
    let filters = json!({"rows": [{"column": "region", "in": ["EMEA"]}], "columns": ["portfolio_id", "instrument"]});
    server.subscribe(subscription("sftp-rows", "SFTP", settings, &["PDF", "PARQUET"], filters)).await;
    server.deliver(tabular_report("evt-sftp-rows", "rep-sftp-rows", &source)).await;
    let id = delivery_id("rep-sftp-rows", "sftp-rows", DeliveryChannel::Sftp);
    let status = finished(&server, &id).await;
    assert_eq!(status["status"], "DELIVERED", "{status}\nsshd log:\n{}", sshd.log());

    let table = read_parquet(&directory.join("positions.parquet"));
    let instruments: Vec<Option<&str>> = table.column("instrument").unwrap().str().unwrap().iter().collect();
    assert_eq!(instruments, [Some("bond-a"), Some("equity-c"), Some("bond-d")]);
    assert_eq!(table.width(), 2);
    assert!(!directory.join("positions.csv").exists(), "the personalised file replaces the original");
}

#[tokio::test]
async fn webhooks_carry_small_personalised_content_inline() {
    let receiver = Receiver::start().await;
    let server = TestServer::start().await;
    let files = tempfile::tempdir().unwrap();
    let source = write(files.path(), "positions.csv", POSITIONS);
    let (url, secret) = receiver.endpoint("rows");
    let settings = json!({"webhook": {"url": url, "secret": secret}});
    let filters = json!({"rows": [{"column": "exposure", "gte": 400}], "columns": ["instrument", "exposure"]});
    server.subscribe(subscription("hook-rows", "API_WEBHOOK", settings, &["JSON"], filters)).await;
    server.deliver(tabular_report("evt-hook-rows", "rep-hook-rows", &source)).await;
    let id = delivery_id("rep-hook-rows", "hook-rows", DeliveryChannel::ApiWebhook);
    assert_eq!(finished(&server, &id).await["status"], "DELIVERED");
    let received = receiver.received_by("rows");
    assert_eq!(received.len(), 1);
    assert!(received[0].signature_ok, "the signature covers the body with its content");
    let content = &received[0].body["data"]["content"];
    assert_eq!(content["format"], "JSON");
    assert_eq!(content["file_name"], "positions.jsonl");
    assert_eq!(content["inline"], true);
    assert_eq!(
        content["rows"],
        json!([{"instrument": "equity-c", "exposure": 900.0}, {"instrument": "bond-d", "exposure": 400.0}])
    );
}

#[tokio::test]
async fn a_column_the_report_lacks_dead_letters_with_the_reason() {
    let receiver = Receiver::start().await;
    let server = TestServer::start().await;
    let files = tempfile::tempdir().unwrap();
    let source = write(files.path(), "positions.csv", POSITIONS);
    let (url, secret) = receiver.endpoint("isin");
    let settings = json!({"webhook": {"url": url, "secret": secret}});
    server.subscribe(subscription("hook-isin", "API_WEBHOOK", settings, &["CSV"], json!({"columns": ["isin"]}))).await;
    server.deliver(tabular_report("evt-hook-isin", "rep-hook-isin", &source)).await;
    let id = delivery_id("rep-hook-isin", "hook-isin", DeliveryChannel::ApiWebhook);
    let status = finished(&server, &id).await;
    assert_eq!(status["status"], "DEAD_LETTERED", "{status}");
    assert!(status.to_string().contains("isin"), "the reason names the column: {status}");
    assert!(receiver.received_by("isin").is_empty(), "nothing sent");
}

#[tokio::test]
async fn triggered_subscriptions_fire_on_content_and_metadata() {
    let receiver = Receiver::start().await;
    let server = TestServer::start().await;
    let files = tempfile::tempdir().unwrap();
    let hot = write(files.path(), "hot.csv", POSITIONS);
    let calm = write(files.path(), "calm.csv", "portfolio_id,region,instrument,exposure,var_99\nportfolio_001,EMEA,bond-a,10,0.5\n");
    let (url, secret) = receiver.endpoint("alerts");
    let settings = json!({"webhook": {"url": url, "secret": secret}});
    let mut on_content = subscription("trig-var", "API_WEBHOOK", settings.clone(), &[],
        json!({"trigger": {"content": [{"column": "var_99", "aggregate": "max", "gt": 5}]}}));
    on_content["subscription_type"] = json!("TRIGGERED");
    let mut on_metadata = subscription("trig-alert", "API_WEBHOOK", settings, &[],
        json!({"trigger": {"data_types": ["ALERT_REPORT"], "min_priority": 3}}));
    on_metadata["subscription_type"] = json!("TRIGGERED");
    server.subscribe(on_content).await;
    server.subscribe(on_metadata).await;

    let fired = server.deliver(tabular_report("evt-hot", "rep-hot", &hot)).await;
    assert_eq!(fired, vec![delivery_id("rep-hot", "trig-var", DeliveryChannel::ApiWebhook)], "max(var_99) = 7.25 > 5");
    assert!(server.deliver(tabular_report("evt-calm", "rep-calm", &calm)).await.is_empty(), "max(var_99) = 0.5: no delivery at all");
    let missing = server.deliver(tabular_report("evt-gone", "rep-gone", &files.path().join("gone.csv"))).await;
    assert!(missing.is_empty(), "an unreadable file has no facts: the content condition does not hold");

    let mut alert = tabular_report("evt-alert", "rep-alert", &calm);
    alert["data_type"] = json!("ALERT_REPORT");
    alert["routing"]["priority"] = json!(3);
    assert_eq!(server.deliver(alert.clone()).await, vec![delivery_id("rep-alert", "trig-alert", DeliveryChannel::ApiWebhook)]);
    alert["event_id"] = json!("evt-alert-low");
    alert["report_data"]["report_id"] = json!("rep-alert-low");
    alert["routing"]["priority"] = json!(2);
    assert!(server.deliver(alert).await.is_empty(), "priority 2 < 3");

    let hot_id = delivery_id("rep-hot", "trig-var", DeliveryChannel::ApiWebhook);
    assert_eq!(finished(&server, &hot_id).await["status"], "DELIVERED");
    let received = receiver.received_by("alerts");
    let facts = &received.iter().find(|r| r.delivery_id == hot_id).expect("the fired delivery arrived").body["data"]["report"]["report_data"]["content_facts"];
    assert_eq!(facts["max(var_99)"], 7.25, "the facts it fired on travel with the report");

    // A publisher cannot forge facts: they are computed by the service.
    let mut forged = tabular_report("evt-forged", "rep-forged", &calm);
    forged["report_data"]["content_facts"] = json!({"max(var_99)": 99});
    assert!(server.deliver(forged).await.is_empty());
}

#[tokio::test]
async fn the_retention_run_prunes_personalised_files() {
    let receiver = Receiver::start().await;
    let data_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(data_dir.path(), |config| {
        config.retention.purge_interval = Duration::from_millis(200);
        config.retention.content_cache_ttl = Duration::ZERO;
    })
    .await;
    let files = tempfile::tempdir().unwrap();
    let source = write(files.path(), "positions.csv", POSITIONS);
    let (url, secret) = receiver.endpoint("pruned");
    let settings = json!({"webhook": {"url": url, "secret": secret}});
    let filters = json!({"columns": ["instrument"]});
    server.subscribe(subscription("hook-pruned", "API_WEBHOOK", settings, &["CSV"], filters)).await;
    server.deliver(tabular_report("evt-hook-pruned", "rep-hook-pruned", &source)).await;
    let id = delivery_id("rep-hook-pruned", "hook-pruned", DeliveryChannel::ApiWebhook);
    assert_eq!(finished(&server, &id).await["status"], "DELIVERED");
    let received = receiver.received_by("pruned");
    assert_eq!(received[0].body["data"]["content"]["file_name"], "positions.csv", "a personalised file was made");

    let cache = data_dir.path().join("content");
    let emptied = eventually(Duration::from_secs(10), || async {
        (std::fs::read_dir(&cache).map_or(0, |entries| entries.count()) == 0).then_some(())
    })
    .await;
    assert!(emptied.is_some(), "the retention run removes personalised files past content_cache_ttl");
}

#[tokio::test]
async fn digests_carry_each_report_personalised_and_never_a_file_the_selection_does_not_fit() {
    let keys = tempfile::tempdir().unwrap();
    let client = KeyPair::generate(keys.path(), "client", "");
    let sshd = Sshd::start(&[&client.public_line]);
    let receiver = Receiver::start().await;
    let server = server_with_relay(None).await;
    let positions = write(keys.path(), "positions.csv", POSITIONS);
    let trades = write(keys.path(), "trades.csv", "instrument,quantity\nbond-a,10\n");
    let directory = sshd.upload_dir().join("digests");
    let (url, secret) = receiver.endpoint("digest-rows");
    let settings = json!({
        "webhook": {"url": url, "secret": secret},
        "sftp": {"host": "127.0.0.1", "port": sshd.port, "username": "root", "private_key": client.private_pem,
                 "host_key": sshd.host_key_line(), "directory": directory.display().to_string()}
    });
    let filters = json!({"rows": [{"column": "region", "in": ["EMEA"]}], "columns": ["instrument"]});
    let mut body = subscription("digest-rows", "API_WEBHOOK", settings, &["JSON"], filters);
    body["subscription_type"] = json!("SCHEDULED");
    body["delivery_preferences"]["schedule"] = json!("* * * * * *");
    body["delivery_preferences"]["channels"] = json!(["API_WEBHOOK", "SFTP"]);
    server.subscribe(body).await;
    let mut digests = BTreeSet::new();
    for (report_id, file) in [("rep-dg-positions", &positions), ("rep-dg-trades", &trades)] {
        digests.extend(server.deliver(tabular_report(&format!("evt-{report_id}"), report_id, file)).await);
    }
    for id in &digests {
        let status = finished(&server, id).await;
        assert_eq!(status["status"], "DELIVERED", "{status}\nsshd log:\n{}", sshd.log());
    }

    // Webhook digests (one, or two across a tick): each report's entry, by report id.
    let by_report = |bodies: Vec<Value>| -> BTreeMap<String, Value> {
        bodies
            .iter()
            .flat_map(|body| body["data"]["reports"].as_array().cloned().unwrap_or_default())
            .map(|entry| (entry["report"]["report_data"]["report_id"].as_str().unwrap().to_string(), entry))
            .collect()
    };
    let entries = by_report(receiver.received_by("digest-rows").into_iter().map(|request| request.body).collect());
    let positions_entry = &entries["rep-dg-positions"];
    assert_eq!(positions_entry["content"]["file_name"], "positions.jsonl");
    assert_eq!(
        positions_entry["content"]["rows"],
        json!([{"instrument": "bond-a"}, {"instrument": "equity-c"}, {"instrument": "bond-d"}]),
        "the subscriber's rows and columns, as a report of its own would carry"
    );
    let refused = &entries["rep-dg-trades"];
    assert!(refused.get("content").is_none(), "{refused}");
    let reason = refused["content_error"].as_str().expect("the reason in the entry");
    assert!(reason.contains("region"), "{reason}");

    // SFTP: the personalised file, and nothing for the report the selection does not fit.
    let table = std::fs::read_to_string(directory.join("positions.jsonl")).expect("the personalised file uploaded");
    let rows: Vec<Value> = table.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(rows, [json!({"instrument": "bond-a"}), json!({"instrument": "equity-c"}), json!({"instrument": "bond-d"})]);
    let uploaded: BTreeSet<String> =
        std::fs::read_dir(&directory).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!uploaded.iter().any(|name| name.starts_with("trades") || name == "positions.csv"), "{uploaded:?}");
    let manifests = uploaded
        .iter()
        .filter(|name| name.starts_with("digest_"))
        .map(|name| serde_json::from_slice(&std::fs::read(directory.join(name)).unwrap()).unwrap())
        .collect();
    let listed = by_report(manifests);
    assert_eq!(listed["rep-dg-positions"]["file_name"], "positions.jsonl", "the manifest names the personalised upload");
    assert!(listed["rep-dg-trades"]["content_error"].as_str().is_some_and(|reason| reason.contains("region")));
}
