//! EMAIL, SFTP, SLACK_INTEGRATION and MOBILE_PUSH end to end: a subscription over the REST API, a
//! report published over the REST API, and what the real peer on loopback (an SMTP server, sshd, an
//! HTTP receiver) actually received. Also the settings' validation, their redaction on reads and the
//! email templates API.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use dataflows::delivery::{delivery_id, DeliveryChannel};
use mail_parser::{MessageParser, MimeHeaders};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{eventually, report, server_with_relay};
use crate::smtp::SmtpPeer;
use crate::sshd::{KeyPair, Sshd};

/// Bytes that are not valid UTF-8 and contain CR/LF, so a mangled attachment cannot pass.
const PDF: &[u8] =
    b"%PDF-1.4\r\n%\xe2\xe3\xcf\xd3\r\n1 0 obj << /Type /Catalog >> endobj\n\x00\x01\x02\xff trailer\n%%EOF\n";

/// A server whose EMAIL channel uses `smtp`, and whose attempts have time for an SSH handshake.
fn subscription(id: &str, channel: &str, settings: Value) -> Value {
    json!({
        "subscription_id": id,
        "subscriber_id": format!("{id}-client"),
        "report_types": ["PERFORMANCE_REPORT"],
        "delivery_preferences": {"channels": [channel], "notification_settings": settings}
    })
}

/// The helpers' report, its file at `file_path`.
fn report_with_file(event_id: &str, report_id: &str, file_path: &str) -> Value {
    let mut body = report(event_id, report_id);
    body["report_data"]["file_path"] = json!(file_path);
    body
}

fn write_pdf(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, PDF).unwrap();
    path
}

/// Waits (at most 10 s) until the SMTP server has `count` messages.
async fn messages(peer: &SmtpPeer, count: usize) -> Vec<crate::smtp::Arrived> {
    eventually(Duration::from_secs(10), || async {
        let arrived = peer.arrived();
        (arrived.len() >= count).then_some(arrived)
    })
    .await
    .unwrap_or_else(|| panic!("expected {count} message(s), got {}", peer.arrived().len()))
}

#[tokio::test]
async fn email_arrives_with_the_report_attached() {
    let smtp = SmtpPeer::start();
    let server = server_with_relay(Some(smtp.addr)).await;
    let files = tempfile::tempdir().unwrap();
    let pdf = write_pdf(files.path(), "performance_q2.pdf");
    let settings = json!({"email": {"to": ["Ann <ann@client.test>", "bob@client.test"]}});
    server.subscribe(subscription("mail-1", "EMAIL", settings)).await;

    let ids = server.deliver(report_with_file("evt-mail-1", "rep-mail-1", pdf.to_str().unwrap())).await;
    let expected = delivery_id("rep-mail-1", "mail-1", DeliveryChannel::Email);
    assert_eq!(ids, vec![expected.clone()]);
    let status = server.wait_for_state(&expected, "DELIVERED").await;
    assert_eq!(status["channel"], "EMAIL", "{status}");

    let arrived = messages(&smtp, 1).await;
    assert_eq!(arrived.len(), 1);
    assert_eq!(arrived[0].rcpt_to, ["ann@client.test", "bob@client.test"]);
    let message = MessageParser::default().parse(&arrived[0].data).expect("a MIME message");
    let message_id = message.message_id().expect("a Message-ID");
    assert!(message_id.contains(&expected), "Message-ID {message_id} names the delivery {expected}");
    let subject = message.subject().expect("a subject");
    assert!(!subject.is_empty());
    let attachments: Vec<_> = message.attachments().collect();
    assert_eq!(attachments.len(), 1, "one attachment");
    assert_eq!(attachments[0].attachment_name(), Some("performance_q2.pdf"));
    assert_eq!(attachments[0].contents(), PDF, "the file's bytes arrive exactly");
}

#[tokio::test]
async fn email_templates_are_managed_over_rest_and_used_for_the_next_message() {
    let smtp = SmtpPeer::start();
    let server = server_with_relay(Some(smtp.addr)).await;
    let path = "/api/v1/reporting/templates/PERFORMANCE_REPORT/en";
    let template = json!({
        "subject": "Perf {{ report.report_id }} for {{ report.portfolio_id }}",
        "html": "<p>{{ report.report_period }}</p>",
        "text": "Period {{ report.report_period }}"
    });
    let (status, stored) = server.send(Method::PUT, path, Some(&template)).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["report_type"], "PERFORMANCE_REPORT");
    let (status, list) = server.get("/api/v1/reporting/templates").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["templates"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["email_enabled"], true);

    // Broken parts are refused, naming the part, and leave the stored template alone.
    for (part, source) in
        [("subject", "{{ report.report_id | no_such_filter }}"), ("html", "{% if %}"), ("text", "{{ unclosed")]
    {
        let mut broken = template.clone();
        broken[part] = json!(source);
        let (status, answer) = server.send(Method::PUT, path, Some(&broken)).await;
        assert_eq!(status, 422, "{part}: {answer}");
        assert_eq!(answer["error"]["field"], part, "{answer}");
    }
    let (status, answer) = server.send(Method::PUT, "/api/v1/reporting/templates/NOT_A_TYPE/en", Some(&template)).await;
    assert_eq!((status, answer["error"]["field"].clone()), (422, json!("report_type")), "{answer}");
    let (status, answer) =
        server.send(Method::PUT, "/api/v1/reporting/templates/*/en", Some(&json!({"subject": "x"}))).await;
    assert_eq!(status, 422, "{answer}");

    server
        .subscribe(subscription("mail-2", "EMAIL", json!({"email": {"to": ["ann@client.test"], "locale": "en"}})))
        .await;
    // No file: the helpers' report names one that does not exist here (a missing file fails for good).
    let delivery = server.deliver(report_with_file("evt-mail-2", "rep-mail-2", "")).await.remove(0);
    server.wait_for_state(&delivery, "DELIVERED").await;
    let arrived = messages(&smtp, 1).await;
    let message = MessageParser::default().parse(&arrived[0].data).expect("a MIME message");
    assert_eq!(message.subject(), Some("Perf rep-mail-2 for portfolio_001"));
    assert_eq!(message.body_text(0).as_deref().map(str::trim), Some("Period 2025-06"));

    let (status, _) = server.send(Method::DELETE, path, None).await;
    assert_eq!(status, 204);
    let (status, answer) = server.send(Method::DELETE, path, None).await;
    assert_eq!(status, 404, "{answer}");
    let (status, _) = server.send(Method::DELETE, "/api/v1/reporting/templates/*/en", None).await;
    assert_eq!(status, 404);
}

/// One request an HTTP peer (a chat webhook, an ntfy topic) received.
#[derive(Clone, Debug)]
struct Hit {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A real HTTP server on `127.0.0.1:0` that records every request and answers `200 ok` (what a
/// Slack incoming webhook answers).
struct HttpPeer {
    base: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl HttpPeer {
    async fn start() -> HttpPeer {
        async fn record(
            State(hits): State<Arc<Mutex<Vec<Hit>>>>,
            uri: Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> &'static str {
            hits.lock().unwrap().push(Hit { path: uri.path().to_string(), headers, body });
            "ok"
        }
        let hits = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new().fallback(record).with_state(hits.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        HttpPeer { base, hits }
    }

    /// Waits (at most 10 s) for a request to `path`.
    async fn hit(&self, path: &str) -> Hit {
        eventually(Duration::from_secs(10), || async {
            self.hits.lock().unwrap().iter().find(|h| h.path == path).cloned()
        })
        .await
        .unwrap_or_else(|| panic!("nothing arrived at {path}"))
    }
}

#[tokio::test]
async fn slack_and_teams_webhooks_get_their_message_formats() {
    let peer = HttpPeer::start().await;
    let server = server_with_relay(None).await;
    let slack = json!({"slack": {"webhook_url": format!("{}/services/T0/B0/slack-secret", peer.base)}});
    let teams = json!({"slack": {"kind": "TEAMS", "webhook_url": format!("{}/workflows/teams-secret", peer.base),
                                 "link": "https://portal.example.com/reports/rep-chat-1"}});
    server.subscribe(subscription("chat-slack", "SLACK_INTEGRATION", slack)).await;
    server.subscribe(subscription("chat-teams", "SLACK_INTEGRATION", teams)).await;
    server.deliver(report("evt-chat-1", "rep-chat-1")).await;
    for id in ["chat-slack", "chat-teams"] {
        server.wait_for_state(&delivery_id("rep-chat-1", id, DeliveryChannel::SlackIntegration), "DELIVERED").await;
    }

    let hit = peer.hit("/services/T0/B0/slack-secret").await;
    assert_eq!(hit.headers["content-type"], "application/json");
    let message: Value = serde_json::from_slice(&hit.body).expect("JSON");
    assert!(message["text"].as_str().is_some_and(|t| !t.is_empty()), "fallback text: {message}");
    let blocks = message["blocks"].as_array().expect("Block Kit blocks");
    assert!(!blocks.is_empty() && blocks.iter().all(|b| b["type"].is_string()), "{message}");
    assert!(message.to_string().contains("rep-chat-1"), "the report is named: {message}");

    let hit = peer.hit("/workflows/teams-secret").await;
    let message: Value = serde_json::from_slice(&hit.body).expect("JSON");
    assert_eq!(message["type"], "message", "{message}");
    let card = &message["attachments"][0];
    assert_eq!(card["contentType"], "application/vnd.microsoft.card.adaptive", "{message}");
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    assert!(card.to_string().contains("https://portal.example.com/reports/rep-chat-1"), "the link: {card}");
}

#[tokio::test]
async fn ntfy_push_arrives_at_the_topic() {
    let peer = HttpPeer::start().await;
    let server = server_with_relay(None).await;
    let settings = json!({"mobile_push": {"provider": "NTFY", "topic_url": format!("{}/reports-topic", peer.base)}});
    server.subscribe(subscription("push-1", "MOBILE_PUSH", settings)).await;
    server.deliver(report("evt-push-1", "rep-push-1")).await;
    let expected = delivery_id("rep-push-1", "push-1", DeliveryChannel::MobilePush);
    server.wait_for_state(&expected, "DELIVERED").await;

    let hit = peer.hit("/reports-topic").await;
    assert_eq!(hit.headers["x-delivery-id"], expected.as_str());
    let title = hit.headers["title"].to_str().unwrap();
    assert!(title.contains("rep-push-1"), "{title}");
    let body = String::from_utf8(hit.body.to_vec()).unwrap();
    assert!(body.contains("portfolio_001"), "{body}");
}

#[tokio::test]
async fn sftp_uploads_the_report_and_its_manifest() {
    let keys = tempfile::tempdir().unwrap();
    let client = KeyPair::generate(keys.path(), "client", "");
    let sshd = Sshd::start(&[&client.public_line]);
    let server = server_with_relay(None).await;
    let pdf = write_pdf(keys.path(), "risk_q2.pdf");
    let directory = sshd.upload_dir().join("inbox");
    let settings = json!({"sftp": {
        "host": "127.0.0.1", "port": sshd.port, "username": "root",
        "private_key": client.private_pem, "host_key": sshd.host_key_line(),
        "directory": directory.display().to_string()
    }});
    server.subscribe(subscription("sftp-1", "SFTP", settings)).await;
    server.deliver(report_with_file("evt-sftp-1", "rep-sftp-1", pdf.to_str().unwrap())).await;
    let expected = delivery_id("rep-sftp-1", "sftp-1", DeliveryChannel::Sftp);
    let status = eventually(Duration::from_secs(20), || async {
        let status = server.status_of(&expected).await;
        (status["status"] == "DELIVERED" || status["status"] == "DEAD_LETTERED").then_some(status)
    })
    .await
    .unwrap_or_else(|| panic!("the SFTP delivery never finished; sshd log:\n{}", sshd.log()));
    assert_eq!(status["status"], "DELIVERED", "{status}\nsshd log:\n{}", sshd.log());

    assert_eq!(std::fs::read(directory.join("risk_q2.pdf")).unwrap(), PDF, "the report arrives byte for byte");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(directory.join("risk_q2.pdf.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["type"], "report.distributed");
    assert_eq!(manifest["data"]["delivery_id"], expected.as_str());
    assert_eq!(manifest["data"]["report"]["report_data"]["report_id"], "rep-sftp-1");
}

fn with(object: &Value, key: &str, value: Value) -> Value {
    let mut object = object.clone();
    object[key] = value;
    object
}

#[tokio::test]
async fn channel_settings_are_validated_naming_the_field() {
    let server = server_with_relay(None).await;
    let host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJO+rYgqfW01X4GFoveyekcWNRYZ3k+sSJm+dwUJSINY host";
    let sftp =
        json!({"host": "sftp.example.com", "username": "u", "password": "p", "host_key": host_key, "directory": "in"});
    let prefix = "delivery_preferences.notification_settings";
    let cases: Vec<(&str, Value, String)> = vec![
        ("SFTP", json!({}), format!("{prefix}.sftp")),
        (
            "SFTP",
            json!({"sftp": {"host": "h", "username": "u", "password": "p", "directory": "in"}}),
            format!("{prefix}.sftp.host_key"),
        ),
        ("SFTP", json!({"sftp": with(&sftp, "host_key", json!("not a key"))}), format!("{prefix}.sftp.host_key")),
        (
            "SFTP",
            json!({"sftp": with(&sftp, "private_key", json!("-----BEGIN OPENSSH PRIVATE KEY-----"))}),
            format!("{prefix}.sftp.private_key"),
        ),
        ("SLACK_INTEGRATION", json!({"email": {"to": ["a@example.com"]}}), format!("{prefix}.slack")),
        (
            "SLACK_INTEGRATION",
            json!({"slack": {"webhook_url": "hooks.slack.com/x"}}),
            format!("{prefix}.slack.webhook_url"),
        ),
        (
            "SLACK_INTEGRATION",
            json!({"slack": {"kind": "IRC", "webhook_url": "https://x.example/w"}}),
            format!("{prefix}.slack.kind"),
        ),
        ("MOBILE_PUSH", json!({"mobile_push": {"provider": "FCM"}}), format!("{prefix}.mobile_push.device_token")),
        (
            "MOBILE_PUSH",
            json!({"mobile_push": {"provider": "NTFY", "topic_url": "ntfy.sh/x"}}),
            format!("{prefix}.mobile_push.topic_url"),
        ),
        // EMAIL is disabled on this server (no relay configured): the channel itself is refused.
        ("EMAIL", json!({"email": {"to": ["a@example.com"]}}), "delivery_preferences.channels[0]".to_string()),
    ];
    for (channel, settings, field) in cases {
        let (status, answer) =
            server.post("/api/v1/reporting/subscribe", &subscription("bad", channel, settings)).await;
        assert_eq!(status, 422, "{field}: {answer}");
        assert_eq!(answer["error"]["field"], field.as_str(), "{answer}");
    }
    let (status, answer) =
        server.post("/api/v1/reporting/subscribe", &subscription("ok", "SFTP", json!({"sftp": sftp}))).await;
    assert_eq!(status, 201, "{answer}");
}

#[tokio::test]
async fn reads_never_show_channel_secrets() {
    let server = server_with_relay(None).await;
    let host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJO+rYgqfW01X4GFoveyekcWNRYZ3k+sSJm+dwUJSINY host";
    let secrets = ["sftp-password-hunter2", "T0SECRET/B0SECRET/slackpath", "fcm-token-0123456789"];
    let body = json!({
        "subscription_id": "secretive",
        "subscriber_id": "secretive-client",
        "report_types": ["RISK_REPORT"],
        "delivery_preferences": {
            "channels": ["SFTP", "SLACK_INTEGRATION", "MOBILE_PUSH"],
            "notification_settings": {
                "sftp": {"host": "sftp.example.com", "username": "u", "password": secrets[0], "host_key": host_key, "directory": "in"},
                "slack": {"webhook_url": format!("https://hooks.slack.com/services/{}", secrets[1])},
                "mobile_push": {"provider": "FCM", "device_token": secrets[2]}
            }
        }
    });
    let (status, created) = server.post("/api/v1/reporting/subscribe", &body).await;
    assert_eq!(status, 201, "{created}");
    let (status, listed) = server.get("/api/v1/reporting/subscriptions/secretive-client").await;
    assert_eq!(status, 200, "{listed}");
    for answer in [&created, &listed] {
        let text = answer.to_string();
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
    let settings = &listed[0]["delivery_preferences"]["notification_settings"];
    assert_eq!(settings["sftp"]["password"], "********", "{settings}");
    assert_eq!(settings["sftp"]["host_key"], host_key, "the pin is public: {settings}");
    assert_eq!(settings["slack"]["webhook_url"], "https://hooks.slack.com/********", "{settings}");
    assert_eq!(settings["mobile_push"]["device_token"], "********", "{settings}");
}

#[tokio::test]
async fn an_email_delivery_channel_becomes_the_relay_and_disabling_it_falls_back_to_the_config() {
    let file_relay = SmtpPeer::start();
    let channel_relay = SmtpPeer::start();
    let server = server_with_relay(Some(file_relay.addr)).await;
    let settings = json!({"email": {"to": ["ann@client.test"]}});
    server.subscribe(subscription("mail-relay", "EMAIL", settings.clone())).await;
    let files = tempfile::tempdir().unwrap();
    let pdf = write_pdf(files.path(), "q2.pdf");
    let send = |n: u32| {
        let server = &server;
        let pdf = pdf.to_str().unwrap().to_string();
        async move {
            let report_id = format!("rep-relay-{n}");
            server.deliver(report_with_file(&format!("evt-relay-{n}"), &report_id, &pdf)).await;
            let id = delivery_id(&report_id, "mail-relay", DeliveryChannel::Email);
            server.wait_for_state(&id, "DELIVERED").await;
        }
    };
    send(1).await;
    assert_eq!(messages(&file_relay, 1).await.len(), 1, "the [email] section's relay");

    let relay = json!({"channel_id": "smtp-ops", "channel_type": "EMAIL", "channel_config": {
        "host": channel_relay.addr.ip().to_string(), "port": channel_relay.addr.port(), "from": "Ops <ops@repdist.test>"}});
    let (status, created) = server.post("/api/v1/reporting/channels", &relay).await;
    assert_eq!(status, 201, "{created}");
    send(2).await;
    let arrived = messages(&channel_relay, 1).await;
    let message = MessageParser::default().parse(&arrived[0].data).expect("a MIME message");
    let from = message.from().and_then(|from| from.first()).and_then(|from| from.address()).map(str::to_string);
    assert_eq!(from.as_deref(), Some("ops@repdist.test"), "the channel's From");
    assert_eq!(file_relay.arrived().len(), 1, "nothing more through the [email] relay");

    let (status, _) = server.post("/api/v1/reporting/channels/smtp-ops/disable", &json!({})).await;
    assert_eq!(status, 200);
    send(3).await;
    assert_eq!(messages(&file_relay, 2).await.len(), 2, "back on the [email] relay");
    assert_eq!(channel_relay.arrived().len(), 1);

    // With no [email] section, EMAIL is offered once a channel names a relay.
    let bare = server_with_relay(None).await;
    let (status, refused) = bare.post("/api/v1/reporting/subscribe", &subscription("mail-bare", "EMAIL", settings.clone())).await;
    assert_eq!((status, refused["error"]["field"].as_str()), (422, Some("delivery_preferences.channels[0]")), "{refused}");
    let (status, created) = bare.post("/api/v1/reporting/channels", &relay).await;
    assert_eq!(status, 201, "{created}");
    bare.subscribe(subscription("mail-bare", "EMAIL", settings)).await;
}

#[tokio::test]
async fn a_relay_that_defers_is_retried_and_one_that_rejects_dead_letters_at_once() {
    let smtp = SmtpPeer::start();
    let server = server_with_relay(Some(smtp.addr)).await;
    let mailbox = |local: &str| json!({"email": {"to": [format!("{local}@client.test")]}});
    server.subscribe(subscription("mail-defer", "EMAIL", mailbox(repdist::demo::smtp_peer::DEFER_MAILBOX))).await;
    server.subscribe(subscription("mail-reject", "EMAIL", mailbox(repdist::demo::smtp_peer::REJECT_MAILBOX))).await;
    let files = tempfile::tempdir().unwrap();
    let pdf = write_pdf(files.path(), "q2.pdf");
    server.deliver(report_with_file("evt-mail-fail", "rep-mail-fail", pdf.to_str().unwrap())).await;

    // The test config allows 4 attempts: a 451 is retried until they are spent.
    let deferred = server.wait_for_state(&delivery_id("rep-mail-fail", "mail-defer", DeliveryChannel::Email), "DEAD_LETTERED").await;
    // retry_count counts failed attempts.
    assert_eq!(deferred["retry_count"], 4, "{deferred}");
    let reason = deferred["error_details"].as_str().unwrap_or_default();
    assert!(reason.contains("exhausted 4 attempts") && reason.contains("451"), "{deferred}");
    let rejected = server.wait_for_state(&delivery_id("rep-mail-fail", "mail-reject", DeliveryChannel::Email), "DEAD_LETTERED").await;
    assert_eq!(rejected["retry_count"], 1, "one attempt: a 550 is not retried: {rejected}");
    let reason = rejected["error_details"].as_str().unwrap_or_default();
    assert!(reason.contains("550") && !reason.contains("exhausted"), "{rejected}");
    assert!(smtp.arrived().is_empty(), "nothing was accepted");
}
