//! Bad input: schemathesis (PyPI) generates requests from the served OpenAPI document, valid and
//! invalid, against a real server with data in it. No answer may be a 5xx, and none may take
//! longer than 5 s (a hang). The Rust decoders behind it have their own property tests.

use std::path::Path;
use std::process::Command;

use crate::helpers::{report, webhook_subscription, TestServer};

fn schemathesis() -> String {
    let venv = std::env::var("REPDIST_PYENV")
        .unwrap_or_else(|_| format!("{}/.cache/repdist-tools/pyenv", std::env::var("HOME").unwrap_or_default()));
    format!("{venv}/bin/schemathesis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_from_the_openapi_document_get_no_server_error() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-prerequisites.d/schemathesis.sh");
    let installed = Command::new("bash").arg(&script).output().expect("bash runs");
    assert!(installed.status.success(), "cannot install schemathesis from PyPI: {}", String::from_utf8_lossy(&installed.stderr));

    let server = TestServer::start().await;
    server.subscribe(webhook_subscription("sub_fuzz", "client_fuzz", "http://127.0.0.1:9/hooks/fuzz", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).await;
    server.deliver(report("evt_fuzz", "report_fuzz")).await;
    let schema = format!("{}/api/v1/openapi.json", server.base);
    // The server answers on this test's runtime; schemathesis blocks a thread of its own.
    // schemathesis keeps a case database in its working directory; keep it out of the checkout.
    let workdir = tempfile::tempdir().expect("temp dir");
    let cwd = workdir.path().to_path_buf();
    // As admin, so that every operation is reached (without a credential all would answer 401).
    let authorization = format!("Authorization: Bearer {}", server.key);
    let run = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis())
            .current_dir(cwd)
            .args(["run", &schema, "--checks", "not_a_server_error", "--max-response-time", "5"])
            .args(["-H", &authorization])
            .args(["--max-examples", "25", "--workers", "2", "--suppress-health-check", "all", "--no-color"])
            .output()
            .expect("schemathesis runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let summary: Vec<&str> = stdout.lines().filter(|l| l.contains("generated") || l.contains("Seed")).collect();
    eprintln!("schemathesis: {}", summary.join("; "));
    assert!(run.status.success(), "schemathesis found failures:\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(summary.iter().any(|l| l.contains("generated")), "schemathesis ran no test cases:\n{stdout}");
}
