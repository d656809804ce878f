//! SFTP against a real OpenSSH server on loopback (`sshd.rs`): what arrives is read back from the
//! server's disk and compared byte for byte.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use sinks::{DeliveryRequest, Destination, Receipt, SftpAuth, SftpConfig, SftpFile, SftpSink, Sink, SinkError};

use crate::receiver::refused_addr;
use crate::sshd::{KeyPair, Sshd};

/// Non-ASCII on purpose: the manifest must arrive byte for byte.
const PAYLOAD: &str =
    r#"{"type":"report.distributed","data":{"report_id":"report_20250621_001","title":"Q2 – résumé"}}"#;
const DELIVERY: &str = "dlv_0f9c2a";

/// A server with one authorized client key.
struct Fixture {
    sshd: Sshd,
    client: KeyPair,
}

impl Fixture {
    fn start() -> Fixture {
        let keys = tempfile::tempdir().expect("temp dir");
        let client = KeyPair::generate(keys.path(), "client", "");
        let sshd = Sshd::start(&[&client.public_line]);
        Fixture { sshd, client }
    }

    /// A report file with `contents` in the scratch directory.
    fn report(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.sshd.scratch().join(name);
        std::fs::write(&path, contents).expect("write report");
        path
    }

    fn request(&self, directory: &Path, file: Option<PathBuf>) -> DeliveryRequest {
        DeliveryRequest {
            idempotency_key: DELIVERY.to_string(),
            destination: Destination::Sftp {
                host: "127.0.0.1".to_string(),
                port: self.sshd.port,
                username: "root".to_string(),
                auth: SftpAuth::PrivateKey { pem: self.client.private_pem.clone(), passphrase: None },
                host_key: self.sshd.host_key_line(),
                directory: directory.display().to_string(),
                files: file.map(|path| SftpFile { path, name: "q2-report.pdf".to_string() }).into_iter().collect(),
                manifest_name: None,
            },
            payload: Bytes::from_static(PAYLOAD.as_bytes()),
            timeout: Duration::from_secs(20),
            attempt: 1,
            priority: 0,
            encrypt_to: None,
        }
    }
}

fn sink() -> SftpSink {
    SftpSink::new(SftpConfig::default()).expect("default config is valid")
}

fn with_destination(mut request: DeliveryRequest, change: impl FnOnce(&mut Destination)) -> DeliveryRequest {
    change(&mut request.destination);
    request
}

fn set_host_key(request: DeliveryRequest, pin: String) -> DeliveryRequest {
    with_destination(request, |d| {
        if let Destination::Sftp { host_key, .. } = d {
            *host_key = pin;
        }
    })
}

fn set_auth(request: DeliveryRequest, new: SftpAuth) -> DeliveryRequest {
    with_destination(request, |d| {
        if let Destination::Sftp { auth, .. } = d {
            *auth = new;
        }
    })
}

/// The names in `dir`, or nothing if it does not exist.
fn listing(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => BTreeSet::new(),
    }
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn deliver(request: &DeliveryRequest) -> Result<Receipt, SinkError> {
    sink().deliver(request).await
}

fn permanent_reason(result: Result<Receipt, SinkError>) -> String {
    match result {
        Err(SinkError::Permanent { reason }) => reason,
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

#[tokio::test]
async fn the_report_and_its_manifest_arrive_byte_identical_in_a_created_directory() {
    let fixture = Fixture::start();
    let report: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let local = fixture.report("local.pdf", &report);
    // Two levels that do not exist yet.
    let directory = fixture.sshd.upload_dir().join("acme/2025-Q2");
    let request = fixture.request(&directory, Some(local));

    let receipt = deliver(&request).await.unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", fixture.sshd.log()));
    let total = report.len() + PAYLOAD.len();
    assert_eq!(receipt.detail, format!("SFTP uploaded 2 files ({total} bytes)"));

    assert_eq!(std::fs::read(directory.join("q2-report.pdf")).expect("report"), report);
    assert_eq!(std::fs::read(directory.join("q2-report.pdf.manifest.json")).expect("manifest"), PAYLOAD.as_bytes());
    assert_eq!(listing(&directory), names(&["q2-report.pdf", "q2-report.pdf.manifest.json"]), "no part file left");
}

#[tokio::test]
async fn a_digest_uploads_every_file_then_its_named_manifest() {
    let fixture = Fixture::start();
    let first = fixture.report("a.pdf", b"%PDF-1.7 first");
    let second = fixture.report("b.csv", b"isin,qty\nX,1\n");
    let directory = fixture.sshd.upload_dir().join("digests");
    let request = with_destination(fixture.request(&directory, None), |d| {
        if let Destination::Sftp { files, manifest_name, .. } = d {
            *files = vec![
                SftpFile { path: first.clone(), name: "r1_a.pdf".into() },
                SftpFile { path: second.clone(), name: "positions.csv".into() },
            ];
            *manifest_name = Some("digest_d1.json".into());
        }
    });
    let receipt = deliver(&request).await.unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", fixture.sshd.log()));
    assert!(receipt.detail.starts_with("SFTP uploaded 3 files"), "{}", receipt.detail);
    assert_eq!(std::fs::read(directory.join("r1_a.pdf")).expect("first"), b"%PDF-1.7 first");
    assert_eq!(std::fs::read(directory.join("positions.csv")).expect("second"), b"isin,qty\nX,1\n");
    assert_eq!(std::fs::read(directory.join("digest_d1.json")).expect("manifest"), PAYLOAD.as_bytes());
    assert_eq!(listing(&directory), names(&["digest_d1.json", "positions.csv", "r1_a.pdf"]));

    // One missing file fails the whole digest before anything is uploaded, naming the file.
    let missing = with_destination(request, |d| {
        if let Destination::Sftp { files, directory, .. } = d {
            files.push(SftpFile { path: "/nonexistent/c.pdf".into(), name: "c.pdf".into() });
            *directory = format!("{directory}-2");
        }
    });
    let reason = permanent_reason(deliver(&missing).await);
    assert!(reason.contains("/nonexistent/c.pdf"), "{reason}");
}

#[tokio::test]
async fn a_retry_replaces_the_files_cleanly() {
    let fixture = Fixture::start();
    let directory = fixture.sshd.upload_dir();
    // A longer leftover from an earlier delivery: the new file must not keep its tail.
    std::fs::write(directory.join("q2-report.pdf"), vec![b'x'; 50_000]).expect("old report");
    std::fs::write(directory.join("q2-report.pdf.manifest.json"), vec![b'y'; 5_000]).expect("old manifest");
    let local = fixture.report("local.pdf", b"%PDF-1.7 first rendering");
    let request = fixture.request(&directory, Some(local.clone()));

    deliver(&request).await.expect("first attempt");
    assert_eq!(std::fs::read(directory.join("q2-report.pdf")).expect("report"), b"%PDF-1.7 first rendering");

    std::fs::write(&local, b"%PDF-1.7 second").expect("re-rendered");
    let mut retry = request.clone();
    retry.attempt = 2;
    deliver(&retry).await.expect("retry");
    assert_eq!(std::fs::read(directory.join("q2-report.pdf")).expect("report"), b"%PDF-1.7 second");
    assert_eq!(std::fs::read(directory.join("q2-report.pdf.manifest.json")).expect("manifest"), PAYLOAD.as_bytes());
    assert_eq!(listing(&directory), names(&["q2-report.pdf", "q2-report.pdf.manifest.json"]));
}

/// OpenSSH's plain SFTP rename refuses an existing target; when the server refuses
/// `posix-rename@openssh.com` (`-P posix-rename`: announced, then denied) the old file is removed
/// first. (Checked by breaking that fallback: this test then fails.)
#[tokio::test]
async fn a_retry_replaces_the_files_without_posix_rename_too() {
    let keys = tempfile::tempdir().expect("temp dir");
    let client = KeyPair::generate(keys.path(), "client", "");
    let fixture = Fixture { sshd: Sshd::start_with(&[&client.public_line], "-l VERBOSE -P posix-rename"), client };
    let directory = fixture.sshd.upload_dir();
    std::fs::write(directory.join("q2-report.pdf"), vec![b'x'; 50_000]).expect("old report");
    let local = fixture.report("local.pdf", b"%PDF-1.7 replaced");
    let request = fixture.request(&directory, Some(local));

    deliver(&request).await.unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", fixture.sshd.log()));
    deliver(&request).await.expect("retry");
    assert_eq!(std::fs::read(directory.join("q2-report.pdf")).expect("report"), b"%PDF-1.7 replaced");
    assert_eq!(std::fs::read(directory.join("q2-report.pdf.manifest.json")).expect("manifest"), PAYLOAD.as_bytes());
    assert_eq!(listing(&directory), names(&["q2-report.pdf", "q2-report.pdf.manifest.json"]));
}

#[tokio::test]
async fn without_a_file_only_the_manifest_is_written_under_the_delivery_id() {
    let fixture = Fixture::start();
    let directory = fixture.sshd.upload_dir();
    let receipt = deliver(&fixture.request(&directory, None)).await.expect("delivered");
    assert_eq!(receipt.detail, format!("SFTP uploaded 1 file ({} bytes)", PAYLOAD.len()));
    assert_eq!(listing(&directory), names(&["dlv_0f9c2a.json"]));
    assert_eq!(std::fs::read(directory.join("dlv_0f9c2a.json")).expect("manifest"), PAYLOAD.as_bytes());
}

#[tokio::test]
async fn another_host_key_is_a_permanent_mismatch_and_nothing_is_uploaded() {
    let fixture = Fixture::start();
    let impostor = KeyPair::generate(fixture.sshd.scratch(), "impostor", "");
    let local = fixture.report("local.pdf", b"report");
    let directory = fixture.sshd.upload_dir();
    let request = set_host_key(fixture.request(&directory, Some(local)), impostor.public_line.clone());

    let reason = permanent_reason(deliver(&request).await);
    let expected = format!(
        "host key mismatch for 127.0.0.1:{}, expected {}, got {}",
        fixture.sshd.port,
        impostor.fingerprint,
        fixture.sshd.host_key_fingerprint()
    );
    assert_eq!(reason, expected);
    assert!(listing(&directory).is_empty(), "nothing may reach an unverified server");
}

#[tokio::test]
async fn a_pinned_fingerprint_works_like_the_key() {
    let fixture = Fixture::start();
    let directory = fixture.sshd.upload_dir();
    let pinned = set_host_key(fixture.request(&directory, None), fixture.sshd.host_key_fingerprint());
    deliver(&pinned).await.expect("the fingerprint ssh-keygen prints pins the server");

    let other = KeyPair::generate(fixture.sshd.scratch(), "other", "");
    let wrong = set_host_key(fixture.request(&directory, None), other.fingerprint.clone());
    let reason = permanent_reason(deliver(&wrong).await);
    assert!(reason.starts_with("host key mismatch") && reason.contains(&other.fingerprint), "{reason}");
}

#[tokio::test]
async fn an_unusable_pin_is_permanent_before_connecting() {
    let fixture = Fixture::start();
    let request = set_host_key(fixture.request(&fixture.sshd.upload_dir(), None), "SHA256:tooshort".into());
    let reason = permanent_reason(deliver(&request).await);
    assert!(reason.contains("pinned host key"), "{reason}");
}

#[tokio::test]
async fn a_key_the_server_does_not_know_is_rejected_permanently() {
    let fixture = Fixture::start();
    let stranger = KeyPair::generate(fixture.sshd.scratch(), "stranger", "");
    let directory = fixture.sshd.upload_dir();
    let request = set_auth(
        fixture.request(&directory, None),
        SftpAuth::PrivateKey { pem: stranger.private_pem.clone(), passphrase: None },
    );
    let reason = permanent_reason(deliver(&request).await);
    assert!(reason.starts_with("authentication rejected for user \"root\""), "{reason}");
    assert!(listing(&directory).is_empty());
}

#[tokio::test]
async fn an_encrypted_key_works_with_its_passphrase_only() {
    let keys = tempfile::tempdir().expect("temp dir");
    let client = KeyPair::generate(keys.path(), "locked", "correct horse");
    let sshd = Sshd::start(&[&client.public_line]);
    let fixture = Fixture { sshd, client };
    let directory = fixture.sshd.upload_dir();

    let pem = fixture.client.private_pem.clone();
    let unlocked = set_auth(
        fixture.request(&directory, None),
        SftpAuth::PrivateKey { pem: pem.clone(), passphrase: Some("correct horse".into()) },
    );
    deliver(&unlocked).await.expect("the passphrase opens the key");

    let missing =
        set_auth(fixture.request(&directory, None), SftpAuth::PrivateKey { pem: pem.clone(), passphrase: None });
    assert!(permanent_reason(deliver(&missing).await).contains("no passphrase"));
    let wrong = set_auth(
        fixture.request(&directory, None),
        SftpAuth::PrivateKey { pem, passphrase: Some("battery staple".into()) },
    );
    let reason = permanent_reason(deliver(&wrong).await);
    assert!(!reason.contains("battery"), "{reason}");
}

#[tokio::test]
async fn a_password_login_uploads_and_a_wrong_password_is_rejected_permanently_and_not_echoed() {
    let keys = tempfile::tempdir().expect("temp dir");
    let client = KeyPair::generate(keys.path(), "client", "");
    let fixture = Fixture { sshd: Sshd::start_with_root_password(&[&client.public_line], "correct horse"), client };
    let directory = fixture.sshd.upload_dir();
    let report = fixture.report("q2.pdf", b"%PDF-1.7 by password");
    let request = set_auth(fixture.request(&directory, Some(report)), SftpAuth::Password("correct horse".into()));
    deliver(&request).await.expect("a password login delivers");
    assert_eq!(std::fs::read(directory.join("q2-report.pdf")).unwrap(), b"%PDF-1.7 by password");

    let uploaded = listing(&directory);
    let request = set_auth(fixture.request(&directory, None), SftpAuth::Password("hunter2-not-roots".into()));
    let reason = permanent_reason(deliver(&request).await);
    assert!(reason.starts_with("authentication rejected") && reason.contains("password"), "{reason}");
    assert!(!reason.contains("hunter2"), "{reason}");
    assert_eq!(listing(&directory), uploaded, "nothing more arrived");
}

#[tokio::test]
async fn a_server_that_is_not_listening_is_transient() {
    let fixture = Fixture::start();
    let address = refused_addr();
    let request = with_destination(fixture.request(&fixture.sshd.upload_dir(), None), |d| {
        if let Destination::Sftp { port, .. } = d {
            *port = address.port();
        }
    });
    let result = deliver(&request).await;
    let Err(SinkError::Transient { reason, retry_after: None }) = result else {
        panic!("expected transient: {result:?}")
    };
    assert!(reason.starts_with(&format!("connection to 127.0.0.1:{} failed", address.port())), "{reason}");
}

#[tokio::test]
async fn a_server_that_never_speaks_is_a_transient_timeout() {
    let fixture = Fixture::start();
    // Accepts TCP and then says nothing, like a wedged server.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = silent.local_addr().expect("address").port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let mut request = with_destination(fixture.request(&fixture.sshd.upload_dir(), None), |d| {
        if let Destination::Sftp { port: p, .. } = d {
            *p = port;
        }
    });
    request.timeout = Duration::from_millis(300);
    let result = deliver(&request).await;
    holder.abort();
    let Err(SinkError::Transient { reason, .. }) = result else { panic!("expected transient: {result:?}") };
    assert!(reason.contains("timed out"), "{reason}");
}

#[tokio::test]
async fn a_missing_local_file_is_permanent_and_named() {
    let fixture = Fixture::start();
    let missing = fixture.sshd.scratch().join("never-rendered.pdf");
    let directory = fixture.sshd.upload_dir();
    let reason = permanent_reason(deliver(&fixture.request(&directory, Some(missing.clone()))).await);
    assert!(reason.contains(&missing.display().to_string()), "{reason}");
    assert!(listing(&directory).is_empty(), "not even the manifest");
}

#[tokio::test]
async fn a_directory_that_is_a_file_is_permanent() {
    let fixture = Fixture::start();
    let blocker = fixture.sshd.upload_dir().join("reports");
    std::fs::write(&blocker, b"not a directory").expect("blocker");
    let reason = permanent_reason(deliver(&fixture.request(&blocker, None)).await);
    assert!(reason.contains("is not a directory"), "{reason}");
}

#[tokio::test]
async fn a_large_file_streams_through_intact() {
    let fixture = Fixture::start();
    // 20 MB of xorshift noise: incompressible, and any misplaced chunk changes the hash.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut report = Vec::with_capacity(20 * 1024 * 1024);
    while report.len() < 20 * 1024 * 1024 + 12_345 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        report.extend_from_slice(&state.to_le_bytes());
    }
    let local = fixture.report("big.bin", &report);
    let directory = fixture.sshd.upload_dir();
    let mut request = fixture.request(&directory, Some(local));
    request.timeout = Duration::from_secs(120);
    let sink = SftpSink::new(SftpConfig { chunk_size: 64 * 1024, ..Default::default() }).expect("valid");

    let receipt = sink.deliver(&request).await.unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", fixture.sshd.log()));
    assert_eq!(receipt.detail, format!("SFTP uploaded 2 files ({} bytes)", report.len() + PAYLOAD.len()));
    let arrived = std::fs::read(directory.join("q2-report.pdf")).expect("report");
    assert_eq!(arrived.len(), report.len());
    assert_eq!(Sha256::digest(&arrived), Sha256::digest(&report));
    assert_eq!(listing(&directory), names(&["q2-report.pdf", "q2-report.pdf.manifest.json"]));
}

#[tokio::test]
async fn deliveries_to_one_server_share_its_session_slots() {
    let fixture = Fixture::start();
    let sink = std::sync::Arc::new(
        SftpSink::new(SftpConfig { max_sessions_per_host: 1, ..Default::default() }).expect("valid"),
    );
    let mut tasks = Vec::new();
    for i in 0..4 {
        let mut request = fixture.request(&fixture.sshd.upload_dir(), None);
        request.idempotency_key = format!("dlv_{i}");
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move { sink.deliver(&request).await }));
    }
    for task in tasks {
        task.await.expect("no panic").expect("delivered one after the other");
    }
    assert_eq!(listing(&fixture.sshd.upload_dir()), names(&["dlv_0.json", "dlv_1.json", "dlv_2.json", "dlv_3.json"]));
}

#[tokio::test]
async fn uploads_to_one_server_reuse_its_session_and_replace_one_the_server_dropped() {
    let fixture = Fixture::start();
    let sink = sink();
    let upload = |i: usize| {
        let mut request = fixture.request(&fixture.sshd.upload_dir(), None);
        request.idempotency_key = format!("dlv_{i}");
        request
    };
    sink.deliver(&upload(0)).await.expect("first upload");
    sink.deliver(&upload(1)).await.expect("second upload");
    assert_eq!(sink.sessions_opened(), 1, "the second upload used the first one's session");

    // The server drops the kept session; the next upload finds out before sending and reconnects.
    fixture.sshd.drop_connections();
    sink.deliver(&upload(2)).await.expect("upload after the server dropped the session");
    assert_eq!(sink.sessions_opened(), 2);
    assert_eq!(listing(&fixture.sshd.upload_dir()), names(&["dlv_0.json", "dlv_1.json", "dlv_2.json"]));

    // Another account on the same server never gets that session.
    let keys = tempfile::tempdir().expect("temp dir");
    let other = KeyPair::generate(keys.path(), "other", "");
    let request = set_auth(upload(3), SftpAuth::PrivateKey { pem: other.private_pem.clone(), passphrase: None });
    assert!(matches!(sink.deliver(&request).await, Err(SinkError::Permanent { .. })), "an unknown key is refused, not let in by a kept session");
    assert_eq!(sink.sessions_opened(), 2, "a refused handshake opens no session");
}

#[tokio::test]
async fn without_an_idle_timeout_every_upload_opens_its_own_session() {
    let fixture = Fixture::start();
    let sink = SftpSink::new(SftpConfig { idle_timeout: Duration::ZERO, ..Default::default() }).expect("valid");
    for i in 0..2 {
        let mut request = fixture.request(&fixture.sshd.upload_dir(), None);
        request.idempotency_key = format!("dlv_{i}");
        sink.deliver(&request).await.expect("upload");
    }
    assert_eq!(sink.sessions_opened(), 2);
}

#[tokio::test]
async fn another_channels_destination_is_permanent() {
    let fixture = Fixture::start();
    let mut wrong = fixture.request(&fixture.sshd.upload_dir(), None);
    wrong.destination = Destination::Webhook { url: "http://127.0.0.1:9/".into(), secret: "whsec_x".into() };
    assert!(matches!(deliver(&wrong).await, Err(SinkError::Permanent { .. })));
}

#[test]
fn debug_output_redacts_the_credentials() {
    let request = DeliveryRequest {
        idempotency_key: DELIVERY.into(),
        destination: Destination::Sftp {
            host: "sftp.example.com".into(),
            port: 22,
            username: "acme".into(),
            auth: SftpAuth::Password("hunter2".into()),
            host_key: "SHA256:abc".into(),
            directory: "/in".into(),
            files: Vec::new(),
            manifest_name: None,
        },
        payload: Bytes::from_static(PAYLOAD.as_bytes()),
        timeout: Duration::from_secs(1),
        attempt: 1,
        priority: 0,
        encrypt_to: None,
    };
    let shown = format!("{request:?}");
    assert!(!shown.contains("hunter2") && shown.contains("Password(<redacted>)"), "{shown}");
    let keyed =
        set_auth(request, SftpAuth::PrivateKey { pem: "-----BEGIN s3cr3t".into(), passphrase: Some("pw1".into()) });
    let shown = format!("{keyed:?}");
    assert!(!shown.contains("s3cr3t") && !shown.contains("pw1"), "{shown}");
}

#[test]
fn an_invalid_config_is_refused_naming_the_key() {
    let Err(error) = SftpSink::new(SftpConfig { max_sessions_per_host: 0, ..Default::default() }) else {
        panic!("zero sessions must be refused")
    };
    assert_eq!(error.to_string(), "sftp.max_sessions_per_host: must be at least 1");
}
