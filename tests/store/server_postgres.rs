//! The `repdist` binary on PostgreSQL, end to end: `repdist migrate --database-url`, then `repdist
//! serve` with only `REPDIST_DATABASE_URL` pointing at a fresh database; a subscription and a report
//! go in through the API, the report reaches a real webhook receiver, and the state is in PostgreSQL
//! (not in an SQLite file). The database password never appears in the logs.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, Row};

use crate::backend::Postgres;
use crate::receiver::Receiver;

const PASSWORD: &str = "s3cr3t-never-logged";

/// The test database's URL with a password in it (trust authentication ignores it), unless the
/// admin URL brings its own.
fn url_with_password(db: &Postgres) -> (String, String) {
    let mut url = url::Url::parse(db.url()).unwrap();
    if let Some(own) = url.password() {
        let own = own.to_string();
        return (url.to_string(), own);
    }
    url.set_password(Some(PASSWORD)).unwrap();
    (url.to_string(), PASSWORD.to_string())
}

/// The binary, with no `REPDIST_*` variable of the test's environment leaking in.
fn repdist() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_repdist"));
    for (key, _) in std::env::vars() {
        if key.starts_with("REPDIST_") {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "info");
    command
}

struct Serving {
    child: Child,
    base: String,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        // A failed assertion must not leave the server running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serving {
    /// SIGTERM, then waits (bounded) for the exit; true when it exited cleanly.
    async fn stop(&mut self) -> bool {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

async fn serve(database_url: &str, data_dir: &std::path::Path) -> Serving {
    let mut child = repdist()
        .args(["serve", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("REPDIST_DATABASE_URL", database_url)
        .env("REPDIST_ALLOW_PRIVATE_WEBHOOKS", "true")
        // Set by `scripts/services up` for the test suite; the service must ignore it.
        .env("REPDIST_TEST_DATABASE_URL", "postgres://not-this-one@127.0.0.1:1/nope")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("repdist serve starts");
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut err = child.stderr.take().unwrap();
    let sink = stderr.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let listening = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.recv().await {
            if let Some(base) = line.strip_prefix("listening on ") {
                return Some(base.trim().to_string());
            }
        }
        None
    })
    .await;
    let Ok(Some(base)) = listening else {
        let _ = child.kill();
        panic!("repdist serve did not report its address; stderr:\n{}", stderr.lock().unwrap());
    };
    Serving { child, base, stderr }
}

async fn call(http: &reqwest::Client, method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_runs_on_postgres_from_repdist_database_url() {
    let db = Postgres::new().await;
    let (database_url, password) = url_with_password(&db);
    let data_dir = tempfile::tempdir().unwrap();

    let mut migrate = repdist();
    migrate.args(["migrate", "--database-url", &database_url]);
    let migrated = tokio::task::spawn_blocking(move || migrate.output()).await.unwrap().expect("repdist migrate runs");
    let (out, err) = (String::from_utf8_lossy(&migrated.stdout), String::from_utf8_lossy(&migrated.stderr));
    assert!(migrated.status.success(), "repdist migrate failed: {out}\n{err}");
    assert!(out.contains("migrated postgres://") && out.contains("********"), "{out}");
    assert!(!out.contains(&password) && !err.contains(&password), "the password was printed: {out}\n{err}");

    let receiver = Receiver::start().await;
    let (hook_url, secret) = receiver.endpoint("pg");
    let mut server = serve(&database_url, data_dir.path()).await;
    // A fresh database has no key: the server created an admin key and wrote it to the data directory.
    let key = std::fs::read_to_string(data_dir.path().join("admin.key")).expect("the bootstrap admin key");
    let http = reqwest::Client::builder().default_headers(repdist::auth::client_headers(key.trim()).unwrap()).build().unwrap();
    let api = |path: &str| format!("{}/api/v1/reporting{path}", server.base);

    let subscription = json!({
        "subscription_id": "sub-pg", "subscriber_id": "client_pg", "subscriber_type": "CLIENT",
        "report_types": ["PERFORMANCE_REPORT"],
        "delivery_preferences": {"channels": ["API_WEBHOOK"], "format_preferences": ["PDF"],
                                 "notification_settings": {"webhook": {"url": hook_url, "secret": secret}}},
        "filters": {"portfolio_ids": ["portfolio_001"]}
    });
    let (status, body) = call(&http, reqwest::Method::POST, api("/subscribe"), Some(subscription)).await;
    assert_eq!(status, 201, "{body}");
    let report = json!({
        "event_id": "evt-pg-1", "timestamp": "2025-06-21T10:00:00.000Z", "data_type": "PERFORMANCE_REPORT",
        "report_data": {"report_id": "rep-pg-1", "report_type": "PERFORMANCE_REPORT", "portfolio_id": "portfolio_001",
                        "report_period": "2025-06", "file_path": "/reports/p.pdf", "file_size_bytes": 1024},
        "metadata": {"source_service": "report_generation_service", "delivery_priority": 1}
    });
    let (status, ack) = call(&http, reqwest::Method::POST, api("/deliver"), Some(report)).await;
    assert_eq!(status, 202, "{ack}");
    let delivery_id = ack["delivery_ids"][0].as_str().expect("one delivery").to_string();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, status) = call(&http, reqwest::Method::GET, api(&format!("/delivery/{delivery_id}/status")), None).await;
        if status["status"] == "DELIVERED" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not delivered in 15 s: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = receiver.received_by("pg");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].signature_ok);
    assert_eq!(got[0].delivery_id, delivery_id);
    assert_eq!(got[0].body["data"]["report"]["event_id"], "evt-pg-1");

    // Channel configs live in PostgreSQL too, secrets masked on the way out.
    let channel = json!({"channel_id": "smtp-pg", "channel_type": "EMAIL", "channel_config": {"host": "smtp.example.com", "username": "mailer", "password": "pw-in-pg"}});
    let (status, created) = call(&http, reqwest::Method::POST, api("/channels"), Some(channel)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["channel_config"]["password"], "********");

    // The state is in PostgreSQL, and no SQLite database was made.
    let mut pg = PgConnection::connect(db.url()).await.expect("test database");
    let row = sqlx::query("SELECT status, channel FROM delivery_history WHERE delivery_id = $1")
        .bind(&delivery_id)
        .fetch_one(&mut pg)
        .await
        .expect("the delivery row is in PostgreSQL");
    assert_eq!((row.get::<String, _>(0), row.get::<String, _>(1)), ("DELIVERED".to_string(), "API_WEBHOOK".to_string()));
    let stored: String = sqlx::query_scalar("SELECT channel_config->>'password' FROM delivery_channels WHERE channel_id = 'smtp-pg'")
        .fetch_one(&mut pg)
        .await
        .unwrap();
    assert_eq!(stored, "pw-in-pg", "stored as given");
    let _ = pg.close().await;
    assert!(!data_dir.path().join("repdist.db").exists(), "no SQLite database when database_url is set");

    // Graceful stop (SIGTERM), then the logs: the URL appears masked, never with its password.
    let exited = server.stop().await;
    assert!(exited, "repdist did not exit cleanly on SIGTERM:\n{}", server.stderr.lock().unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = server.stderr.lock().unwrap().clone();
    assert!(logs.contains("postgres://") && logs.contains("********"), "the masked URL is logged:\n{logs}");
    assert!(!logs.contains(&password), "the password was logged:\n{logs}");
}
