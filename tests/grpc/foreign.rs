//! A client that is not ours: Python `grpcio` + `grpcio-reflection` (from PyPI, in a venv set up by
//! `scripts/test-prerequisites.d/grpc.sh`) discovers the API by reflection and calls it. The script
//! prints JSON; this test checks it against what the server holds.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{dashboard_subscription, report, TestServer};

/// The venv with grpcio; `REPDIST_PYENV` overrides it.
fn python() -> String {
    let venv = std::env::var("REPDIST_PYENV")
        .unwrap_or_else(|_| format!("{}/.cache/repdist-tools/pyenv", std::env::var("HOME").unwrap_or_default()));
    format!("{venv}/bin/python")
}

/// Runs the (idempotent) prerequisite script; fails the test with its output if it cannot install.
fn ensure_grpcio() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-prerequisites.d/grpc.sh");
    let output = Command::new("bash").arg(&script).output().expect("bash runs");
    assert!(
        output.status.success(),
        "cannot install Python grpcio + grpcio-reflection from PyPI (is pip able to reach the index?) with {}:\n{}{}",
        script.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn python_grpcio_calls_the_api_through_reflection() {
    tokio::task::spawn_blocking(ensure_grpcio).await.unwrap();
    let server = TestServer::start().await;
    let created = server.create(dashboard_subscription("dash-py", "pm_py")).await;
    assert_eq!(created.subscription_id, "dash-py");
    let ids = server.deliver(report("evt-py", "rep-py")).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    server.wait_for_state(&ids[0], "DELIVERED").await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc/reflection_client.py");
    let address = server.server.grpc_addr().to_string();
    let delivery = ids[0].clone();
    let key = server.key.clone();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(python()).arg(script).args([address.as_str(), delivery.as_str(), "pm_py"]).env("REPDIST_TEST_API_KEY", key).output()
    });
    let output = tokio::time::timeout(Duration::from_secs(60), run).await.expect("the Python client finishes").unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "Python client failed:\n{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let out: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));

    let services: Vec<&str> = out["services"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(services.contains(&"repdist.reporting.v1.ReportingStream"), "{services:?}");
    assert!(services.contains(&"repdist.reporting.v1.DistributionQuery"), "{services:?}");

    let status = &out["delivery_status"]["ok"];
    assert_eq!(status["delivery_id"], ids[0].as_str(), "{out}");
    assert_eq!(status["subscription_id"], "dash-py");
    assert_eq!(status["report_id"], "rep-py");
    assert_eq!(status["channel"], "DASHBOARD_NOTIFICATION");
    assert_eq!(status["status"], "DELIVERED");

    assert_eq!(out["unknown_delivery"]["error"]["code"], "NOT_FOUND", "{out}");
    assert_eq!(out["no_credential"]["error"]["code"], "UNAUTHENTICATED", "{out}");

    let subscriptions = out["subscriptions"]["ok"]["subscriptions"].as_array().expect("a list");
    assert_eq!(subscriptions.len(), 1, "{out}");
    assert_eq!(subscriptions[0]["subscription_id"], "dash-py");
    assert_eq!(subscriptions[0]["status"], "active");

    let bad = &out["bad_subscription"]["error"];
    assert_eq!(bad["code"], "INVALID_ARGUMENT", "{out}");
    assert_eq!(bad["trailers"]["field"], "delivery_preferences.channels[0]", "{out}");
}
