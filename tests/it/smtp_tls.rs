//! EMAIL over TLS: the loopback SMTP peer speaks STARTTLS or implicit TLS with a certificate from a
//! throwaway CA (rcgen), and the EMAIL sink trusts that CA through `email.tls_ca_file`. The peer
//! records whether the session carrying each message was TLS, so "delivered" also means "delivered
//! encrypted". A certificate the sink cannot trust fails the attempt, classified transient (see
//! `sinks/src/email/classify.rs`: the relay is the operator's own, so a bad certificate is an outage
//! of the whole channel that the operator fixes, after which the same messages go through).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use dataflows::delivery::{delivery_id, DeliveryChannel};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::json;
use sinks::email::{EmailConfig, TlsMode};
use sinks::{DeliveryRequest, Destination, EmailSink, Sink, SinkError};

use crate::helpers::{report, TestServer};
use crate::smtp::{PeerTls, SmtpPeer};

/// A CA and one server certificate it signed.
struct Pki {
    ca_pem: String,
    server_chain_pem: String,
    server_key_pem: String,
}

/// A fresh CA named `ca_name`, and a certificate it signed for `names` (IP addresses or DNS names).
fn pki(ca_name: &str, names: &[&str]) -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca.self_signed(&ca_key).expect("self-signed CA");
    let issuer = Issuer::new(ca, ca_key);

    let mut server = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("names");
    server.distinguished_name.push(DnType::CommonName, names[0]);
    let server_key = KeyPair::generate().expect("server key");
    let server_cert = server.signed_by(&server_key, &issuer).expect("signed by the CA");
    Pki { ca_pem: ca_cert.pem(), server_chain_pem: server_cert.pem(), server_key_pem: server_key.serialize_pem() }
}

impl Pki {
    fn peer(&self, mode: TlsMode) -> SmtpPeer {
        let config = PeerTls::server_config(self.server_chain_pem.as_bytes(), self.server_key_pem.as_bytes())
            .expect("a TLS server config");
        SmtpPeer::start_with(match mode {
            TlsMode::Starttls => PeerTls::Starttls(config),
            TlsMode::Implicit => PeerTls::Implicit(config),
            TlsMode::None => PeerTls::None,
        })
    }

    fn ca_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("relay-ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("CA file written");
        path
    }
}

fn relay(peer: &SmtpPeer, tls: TlsMode, ca_file: Option<PathBuf>) -> EmailConfig {
    EmailConfig {
        // An IP address: the certificate is checked against its IP SAN.
        host: peer.addr.ip().to_string(),
        port: Some(peer.addr.port()),
        tls,
        tls_ca_file: ca_file,
        from: "Reports <reports@repdist.test>".to_string(),
        ..Default::default()
    }
}

fn request(delivery: &str) -> DeliveryRequest {
    let payload = json!({"type": "report.distributed", "timestamp": "2025-06-21T08:00:05Z",
        "data": {"delivery_id": delivery, "report": {"report_data": {"report_id": "rep-tls", "report_type": "PERFORMANCE_REPORT"}}}});
    DeliveryRequest {
        idempotency_key: delivery.to_string(),
        destination: Destination::Email {
            to: vec!["ann@client.test".into()],
            locale: None,
            report_type: "PERFORMANCE_REPORT".into(),
            attachment: None,
        },
        payload: Bytes::from(payload.to_string()),
        timeout: Duration::from_secs(5),
        attempt: 1,
        priority: 0,
        encrypt_to: None,
    }
}

#[tokio::test]
async fn starttls_and_implicit_tls_deliver_to_a_relay_trusted_through_its_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki("repdist test relay CA", &["127.0.0.1", "localhost"]);
    for mode in [TlsMode::Starttls, TlsMode::Implicit] {
        let peer = pki.peer(mode);
        let sink = EmailSink::new(relay(&peer, mode, Some(pki.ca_file(dir.path())))).expect("valid config");
        let receipt = sink.deliver(&request(&format!("dlv-{mode:?}"))).await.unwrap_or_else(|e| panic!("{mode:?}: {e:?}"));
        assert!(receipt.detail.starts_with("SMTP 250"), "{mode:?}: {receipt:?}");
        let arrived = peer.arrived();
        assert_eq!(arrived.len(), 1, "{mode:?}");
        assert!(arrived[0].tls, "{mode:?}: the message must arrive inside the TLS session");
        let message = mail_parser::MessageParser::default().parse(&arrived[0].data).expect("a MIME message");
        assert!(message.message_id().is_some_and(|id| id.contains(&format!("dlv-{mode:?}"))), "{mode:?}");
    }
}

#[tokio::test]
async fn the_plain_peer_records_plain_sessions() {
    // The other side of the `tls` flag: without TLS it is false, so the assertions above can fail.
    let peer = SmtpPeer::start();
    let sink = EmailSink::new(relay(&peer, TlsMode::None, None)).expect("valid config");
    sink.deliver(&request("dlv-plain")).await.expect("delivered");
    assert!(!peer.arrived()[0].tls);
}

#[tokio::test]
async fn a_certificate_the_sink_cannot_trust_fails_transiently_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = pki("the CA the sink trusts", &["127.0.0.1"]);
    let impostor = pki("some other CA", &["127.0.0.1"]);
    let wrong_name = pki("the CA the sink trusts, wrong name", &["mx.elsewhere.test"]);
    let cases = [
        ("a certificate from another CA", &impostor, Some(trusted.ca_file(dir.path()))),
        ("no CA file: the public roots do not know the CA", &trusted, None),
        ("a certificate for another name", &wrong_name, Some(wrong_name.ca_file(dir.path()))),
    ];
    for (case, served, ca_file) in cases {
        for mode in [TlsMode::Starttls, TlsMode::Implicit] {
            let peer = served.peer(mode);
            let sink = EmailSink::new(relay(&peer, mode, ca_file.clone())).expect("valid config");
            let error = sink.deliver(&request("dlv-bad-cert")).await.expect_err(case);
            let SinkError::Transient { reason, .. } = &error else { panic!("{case}, {mode:?}: {error:?}") };
            assert!(reason.starts_with("TLS failed: "), "{case}, {mode:?}: {reason}");
            assert!(reason.contains("certificate"), "{case}, {mode:?}: {reason}");
            assert!(peer.arrived().is_empty(), "{case}, {mode:?}: nothing may be sent to an untrusted relay");
        }
    }
}

#[tokio::test]
async fn a_missing_ca_file_is_a_setup_error_naming_the_key() {
    let config = EmailConfig {
        tls: TlsMode::Starttls,
        tls_ca_file: Some("/nonexistent/relay-ca.pem".into()),
        ..Default::default()
    };
    let error = EmailSink::new(config).err().expect("refused");
    assert!(error.to_string().starts_with("email.tls_ca_file: "), "{error}");
}

#[tokio::test]
async fn the_service_delivers_over_starttls_with_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki("repdist test relay CA", &["127.0.0.1"]);
    let peer = pki.peer(TlsMode::Starttls);
    let email = relay(&peer, TlsMode::Starttls, Some(pki.ca_file(dir.path())));
    let server = TestServer::start_with(move |config| config.email = Some(email)).await;
    server
        .subscribe(json!({
            "subscription_id": "mail-tls", "subscriber_id": "mail-tls-client", "report_types": ["PERFORMANCE_REPORT"],
            "delivery_preferences": {"channels": ["EMAIL"], "notification_settings": {"email": {"to": ["ann@client.test"]}}}
        }))
        .await;
    let mut event = report("evt-mail-tls", "rep-mail-tls");
    event["report_data"]["file_path"] = json!("");
    let ids = server.deliver(event).await;
    assert_eq!(ids, vec![delivery_id("rep-mail-tls", "mail-tls", DeliveryChannel::Email)]);
    server.wait_for_state(&ids[0], "DELIVERED").await;
    let arrived = peer.arrived();
    assert_eq!(arrived.len(), 1);
    assert!(arrived[0].tls, "upgraded with STARTTLS before the message");
}

/// `metadata.encryption_required` over EMAIL: through a STARTTLS relay, the message names only the
/// delivery, and carries the envelope and the report file as age ciphertext that the subscriber's
/// identity decrypts.
#[tokio::test]
async fn an_encrypted_report_arrives_as_ciphertext_over_starttls() {
    use mail_parser::MimeHeaders;
    let dir = tempfile::tempdir().unwrap();
    let pki = pki("repdist test relay CA", &["127.0.0.1"]);
    let peer = pki.peer(TlsMode::Starttls);
    let email = relay(&peer, TlsMode::Starttls, Some(pki.ca_file(dir.path())));
    let server = TestServer::start_with(move |config| config.email = Some(email)).await;
    let (identity, public) = crate::encryption::identity();
    server
        .subscribe(json!({
            "subscription_id": "mail-sealed", "subscriber_id": "mail-sealed-client", "report_types": ["PERFORMANCE_REPORT"],
            "delivery_preferences": {"channels": ["EMAIL"], "notification_settings": {
                "email": {"to": ["ann@client.test"]}, "encryption": {"age_recipient": public}}}
        }))
        .await;
    let file = dir.path().join("q2_secret.pdf");
    let content = b"%PDF-1.4\n\x00\xff confidential numbers\n%%EOF\n";
    std::fs::write(&file, content).unwrap();
    let mut event = crate::encryption::secret_report("evt-mail-sealed", "rep-mail-sealed");
    event["report_data"]["file_path"] = json!(file.to_str().unwrap());
    let ids = server.deliver(event).await;
    server.wait_for_state(&ids[0], "DELIVERED").await;

    let arrived = peer.arrived();
    assert_eq!(arrived.len(), 1);
    assert!(arrived[0].tls, "an encrypted report only goes through a TLS session");
    let raw = String::from_utf8_lossy(&arrived[0].data);
    assert!(!raw.contains("rep-mail-sealed") && !raw.contains("portfolio_001"), "nothing of the report in clear:\n{raw}");
    let message = mail_parser::MessageParser::default().parse(&arrived[0].data).expect("a MIME message");
    assert_eq!(message.subject(), Some(format!("Encrypted report (delivery {})", ids[0]).as_str()));
    let attachments: Vec<_> = message.attachments().collect();
    let names: Vec<_> = attachments.iter().map(|a| a.attachment_name().unwrap_or_default()).collect();
    assert_eq!(names, vec![sinks::email::ENVELOPE_ATTACHMENT, "q2_secret.pdf.age"]);
    let envelope: serde_json::Value =
        serde_json::from_slice(&crate::encryption::decrypt(&identity, attachments[0].contents())).expect("JSON inside");
    assert_eq!(envelope["data"]["report"]["report_data"]["report_id"], "rep-mail-sealed");
    assert_eq!(crate::encryption::decrypt(&identity, attachments[1].contents()), content);
}

/// A relay reached without TLS never gets an encrypted report: a permanent failure, nothing sent.
#[tokio::test]
async fn an_encrypted_report_is_refused_by_a_relay_without_tls() {
    let peer = SmtpPeer::start();
    let sink = EmailSink::new(relay(&peer, TlsMode::None, None)).expect("valid config");
    let (_, public) = crate::encryption::identity();
    let request = DeliveryRequest { encrypt_to: Some(public.parse().expect("a recipient")), ..request("dlv-sealed-plain") };
    let error = sink.deliver(&request).await.expect_err("refused");
    assert!(!error.is_transient(), "{error:?}");
    assert!(error.reason().contains("not reached over TLS"), "{error:?}");
    assert!(peer.arrived().is_empty(), "nothing was sent");
    let clear = sink.deliver(&self::request("dlv-clear-plain")).await;
    assert!(clear.is_ok(), "the same relay still takes reports that need no encryption: {clear:?}");
}
