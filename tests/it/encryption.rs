//! `metadata.encryption_required` end to end: what arrives at the real peers (the webhook receiver,
//! sshd) is age ciphertext that the subscriber's identity decrypts to the delivery; channels that
//! cannot carry ciphertext, and subscriptions without a key, fail permanently and send nothing; a
//! key that is not an age recipient is refused when the subscription is written. EMAIL is in
//! `smtp_tls` (it needs a TLS relay).

use age::secrecy::ExposeSecret;
use std::str::FromStr;
use std::time::Duration;

use dataflows::delivery::{delivery_id, DeliveryChannel};
use serde_json::{json, Value};

use crate::helpers::{eventually, report, webhook_subscription, TestServer};
use crate::receiver::Receiver;
use crate::sshd::{KeyPair, Sshd};

/// A fresh age identity (the subscriber's secret key) and its public key, as `age-keygen` makes them.
pub fn identity() -> (age::x25519::Identity, String) {
    let identity = age::x25519::Identity::generate();
    let public = identity.to_public().to_string();
    (identity, public)
}

/// Decrypts `ciphertext` with `identity`, panicking if it is not an age file for it.
pub fn decrypt(identity: &age::x25519::Identity, ciphertext: &[u8]) -> Vec<u8> {
    age::decrypt(identity, ciphertext).expect("decrypts with the subscriber's identity")
}

/// The helpers' report, marked as requiring encryption.
pub fn secret_report(event_id: &str, report_id: &str) -> Value {
    let mut body = report(event_id, report_id);
    body["metadata"]["encryption_required"] = json!(true);
    body
}

fn with_key(mut subscription: Value, public: &str) -> Value {
    subscription["delivery_preferences"]["notification_settings"]["encryption"] = json!({"age_recipient": public});
    subscription
}

async fn final_state(server: &TestServer, delivery: &str) -> Value {
    eventually(Duration::from_secs(20), || async {
        let status = server.status_of(delivery).await;
        (status["status"] == "DELIVERED" || status["status"] == "DEAD_LETTERED").then_some(status)
    })
    .await
    .unwrap_or_else(|| panic!("delivery {delivery} never finished"))
}

#[tokio::test]
async fn an_encrypted_webhook_body_is_signed_and_decrypts_to_the_envelope() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let (identity, public) = identity();
    let (url, secret) = receiver.endpoint("sealed");
    server.subscribe(with_key(webhook_subscription("sub-sealed", "client_001", &url, &secret), &public)).await;
    let ids = server.deliver(secret_report("evt-sealed", "rep-sealed")).await;
    let status = final_state(&server, &ids[0]).await;
    assert_eq!(status["status"], "DELIVERED", "{status}");

    let got = receiver.received_by("sealed");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].content_type.as_deref(), Some("application/age"));
    assert!(got[0].signature_ok, "the signature covers the ciphertext as sent");
    assert!(got[0].body.is_null(), "the body is not JSON in clear");
    assert!(!String::from_utf8_lossy(&got[0].raw).contains("rep-sealed"), "nothing of the report in clear");
    let envelope: Value = serde_json::from_slice(&decrypt(&identity, &got[0].raw)).expect("JSON inside");
    assert_eq!(envelope["type"], "report.distributed");
    assert_eq!(envelope["data"]["delivery_id"], ids[0].as_str());
    assert_eq!(envelope["data"]["report"]["report_data"]["report_id"], "rep-sealed");

    // The same subscription still gets reports that do not require encryption in clear.
    let ids = server.deliver(report("evt-clear", "rep-clear")).await;
    server.wait_for_state(&ids[0], "DELIVERED").await;
    let clear = &receiver.received_by("sealed")[1];
    assert_eq!(clear.content_type.as_deref(), Some("application/json"));
    assert_eq!(clear.body["data"]["report"]["report_data"]["report_id"], "rep-clear");
}

#[tokio::test]
async fn encrypted_sftp_uploads_decrypt_to_the_report_and_its_manifest() {
    let keys = tempfile::tempdir().unwrap();
    let client = KeyPair::generate(keys.path(), "client", "");
    let sshd = Sshd::start(&[&client.public_line]);
    let server = TestServer::start_with(|config| config.delivery.attempt_timeout = Duration::from_secs(10)).await;
    let (identity, public) = identity();
    let pdf = keys.path().join("q2_risk.pdf");
    let content = b"%PDF-1.4\r\n\x00\xff confidential figures\n%%EOF\n";
    std::fs::write(&pdf, content).unwrap();
    let directory = sshd.upload_dir().join("sealed");
    let subscription = json!({
        "subscription_id": "sftp-sealed", "subscriber_id": "sftp-sealed-client", "report_types": ["PERFORMANCE_REPORT"],
        "delivery_preferences": {"channels": ["SFTP"], "notification_settings": {
            "sftp": {"host": "127.0.0.1", "port": sshd.port, "username": "root", "private_key": client.private_pem,
                     "host_key": sshd.host_key_line(), "directory": directory.display().to_string()},
            "encryption": {"age_recipient": public}}}
    });
    server.subscribe(subscription).await;
    let mut event = secret_report("evt-sftp-sealed", "rep-sftp-sealed");
    event["report_data"]["file_path"] = json!(pdf.to_str().unwrap());
    server.deliver(event).await;
    let expected = delivery_id("rep-sftp-sealed", "sftp-sealed", DeliveryChannel::Sftp);
    let status = final_state(&server, &expected).await;
    assert_eq!(status["status"], "DELIVERED", "{status}\nsshd log:\n{}", sshd.log());

    let mut names: Vec<String> =
        std::fs::read_dir(&directory).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, vec!["q2_risk.pdf.age", "q2_risk.pdf.manifest.json.age"], "only ciphertext on the server");
    let uploaded = std::fs::read(directory.join("q2_risk.pdf.age")).unwrap();
    assert!(!uploaded.windows(12).any(|w| w == b"confidential"), "the file is not in clear");
    assert_eq!(decrypt(&identity, &uploaded), content, "the report decrypts byte for byte");
    let manifest: Value =
        serde_json::from_slice(&decrypt(&identity, &std::fs::read(directory.join("q2_risk.pdf.manifest.json.age")).unwrap()))
            .unwrap();
    assert_eq!(manifest["data"]["delivery_id"], expected.as_str());
}

#[tokio::test]
async fn without_a_key_or_on_a_channel_that_cannot_carry_ciphertext_nothing_is_sent() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let (url, secret) = receiver.endpoint("keyless");
    server.subscribe(webhook_subscription("sub-keyless", "client_001", &url, &secret)).await;
    let (_, public) = identity();
    let dashboard = json!({
        "subscription_id": "dash-sealed", "subscriber_id": "pm_sealed", "report_types": ["PERFORMANCE_REPORT"],
        "delivery_preferences": {"channels": ["DASHBOARD_NOTIFICATION"],
            "notification_settings": {"dashboard": {}, "encryption": {"age_recipient": public}}}
    });
    server.subscribe(dashboard).await;
    let ids = server.deliver(secret_report("evt-refused", "rep-refused")).await;
    assert_eq!(ids.len(), 2);
    for id in &ids {
        let status = final_state(&server, id).await;
        assert_eq!(status["status"], "DEAD_LETTERED", "{status}");
        let reason = status["error_details"].as_str().unwrap_or_default();
        assert!(reason.contains("requires encryption") && reason.contains("nothing was sent"), "{reason}");
    }
    let keyless = delivery_id("rep-refused", "sub-keyless", DeliveryChannel::ApiWebhook);
    assert!(server.status_of(&keyless).await["error_details"].as_str().unwrap().contains("encryption.age_recipient"));
    assert!(receiver.received().is_empty(), "nothing went out in clear");
    let (_, inbox) = server.get("/api/v1/reporting/notifications/pm_sealed").await;
    assert_eq!(inbox, json!([]), "no notification stored in clear");
}

#[tokio::test]
async fn a_key_that_is_not_an_age_recipient_is_refused_naming_the_field() {
    let server = TestServer::start().await;
    let (_, public) = identity();
    let base = webhook_subscription("sub-k", "client_001", "http://127.0.0.1:9/hook", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let field = "delivery_preferences.notification_settings.encryption.age_recipient";
    let ssh_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    let secret_key: String = age::x25519::Identity::generate().to_string().expose_secret().to_string();
    for bad in ["", "age1notakey", ssh_key, secret_key.as_str(), &public[..public.len() - 1]] {
        let (status, answer) = server.post("/api/v1/reporting/subscribe", &with_key(base.clone(), bad)).await;
        assert_eq!(status, 422, "{bad:?}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{bad:?}: {answer}");
        assert!(!answer.to_string().contains("AGE-SECRET-KEY"), "a pasted secret key is never echoed: {answer}");
    }
    let (status, answer) = server.post("/api/v1/reporting/subscribe", &with_key(base, &public)).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["delivery_preferences"]["notification_settings"]["encryption"]["age_recipient"], public.as_str());
    assert!(age::x25519::Recipient::from_str(&public).is_ok());
}
