//! EMAIL against a real SMTP server on loopback.
//!
//! The server is mailin's RFC 5321 session state machine (the core of `mailin-embedded`) behind a
//! blocking `127.0.0.1:0` listener, one thread per connection: lettre speaks real SMTP to it over a
//! real socket. Its [`Capture`] handler records the envelope and the DATA bytes and answers
//! scripted reply codes. What arrived is parsed with `mail-parser`, an independent MIME parser.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mail_parser::{MessageParser, MimeHeaders};
use mailin::{Action, AuthMechanism, Handler, Response, SessionBuilder};
use sinks::email::{EmailConfig, EmailTemplate, SmtpAuth, TemplateError, TemplateKey, TemplatePart, TlsMode};
use sinks::{DeliveryRequest, Destination, EmailSink, Sink, SinkError};

use crate::receiver::refused_addr;

// ---------------------------------------------------------------------------------------------
// The SMTP peer

/// Reply codes to answer instead of 250 at each step; `None` accepts.
#[derive(Clone, Debug, Default)]
struct Script {
    rcpt: Option<(u16, &'static str)>,
    data_start: Option<(u16, &'static str)>,
    data_end: Option<(u16, &'static str)>,
    /// AUTH PLAIN is offered (over plain text, for the test) and these credentials accepted.
    auth: Option<(&'static str, &'static str)>,
}

/// One message the server accepted: the envelope and the DATA bytes (dot-unstuffed).
#[derive(Clone, Debug)]
struct Arrived {
    mail_from: String,
    rcpt_to: Vec<String>,
    data: Vec<u8>,
}

#[derive(Default)]
struct Shared {
    script: Script,
    arrived: Vec<Arrived>,
    /// (username, password) of every AUTH attempt.
    logins: Vec<(String, String)>,
    /// Envelopes rejected at the end of DATA (their bytes did arrive).
    rejected: usize,
}

struct SmtpPeer {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

/// A connection's handler: mailin calls it for each command.
struct Capture {
    shared: Arc<Mutex<Shared>>,
    mail_from: String,
    rcpt_to: Vec<String>,
    data: Vec<u8>,
}

fn reply(scripted: Option<(u16, &'static str)>) -> Option<Response> {
    scripted.map(|(code, text)| Response::custom(code, text.to_string()))
}

impl Capture {
    fn script(&self) -> Script {
        self.shared.lock().unwrap().script.clone()
    }
}

impl Handler for Capture {
    fn mail(&mut self, _ip: std::net::IpAddr, _domain: &str, from: &str) -> Response {
        self.mail_from = from.to_string();
        self.rcpt_to.clear();
        self.data.clear();
        mailin::response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        reply(self.script().rcpt).unwrap_or_else(|| {
            self.rcpt_to.push(to.to_string());
            mailin::response::OK
        })
    }

    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, _to: &[String]) -> Response {
        reply(self.script().data_start).unwrap_or(mailin::response::OK)
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mut shared = self.shared.lock().unwrap();
        if let Some(rejection) = reply(shared.script.data_end) {
            shared.rejected += 1;
            return rejection;
        }
        shared.arrived.push(Arrived {
            mail_from: self.mail_from.clone(),
            rcpt_to: self.rcpt_to.clone(),
            data: std::mem::take(&mut self.data),
        });
        Response::custom(250, "2.0.0 Ok: queued as T1".to_string())
    }

    fn auth_plain(&mut self, _authorization_id: &str, username: &str, password: &str) -> Response {
        let mut shared = self.shared.lock().unwrap();
        shared.logins.push((username.to_string(), password.to_string()));
        match shared.script.auth {
            Some((u, p)) if (u, p) == (username, password) => mailin::response::AUTH_OK,
            _ => mailin::response::INVALID_CREDENTIALS,
        }
    }
}

impl SmtpPeer {
    fn start(script: Script) -> SmtpPeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let shared = Arc::new(Mutex::new(Shared { script: script.clone(), ..Default::default() }));
        let mut builder = SessionBuilder::new("mx.test");
        if script.auth.is_some() {
            builder.enable_auth(AuthMechanism::Plain);
            builder.insecure_enable_plaintext_auth();
        }
        let accepting = Arc::clone(&shared);
        // Detached: it ends with the test binary. Each connection has its own thread and a read
        // timeout, so a client that goes away never leaves a thread blocked for long.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let handler = Capture {
                    shared: Arc::clone(&accepting),
                    mail_from: String::new(),
                    rcpt_to: Vec::new(),
                    data: Vec::new(),
                };
                let builder = builder.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &builder, handler);
                });
            }
        });
        SmtpPeer { addr, shared }
    }

    fn arrived(&self) -> Vec<Arrived> {
        self.shared.lock().unwrap().arrived.clone()
    }

    fn single(&self) -> Arrived {
        let arrived = self.arrived();
        assert_eq!(arrived.len(), 1, "expected exactly one message, got {}", arrived.len());
        arrived.into_iter().next().unwrap()
    }
}

/// One SMTP session, as mailin-embedded runs it: greet, then answer line by line.
fn serve(stream: TcpStream, builder: &SessionBuilder, handler: Capture) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let remote = stream.peer_addr()?.ip();
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut session = builder.build(remote, handler);
    session.greeting().write_to(&mut writer)?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let response = session.process(&line);
        // mailin stays in its DATA state after rejecting a message at the final ".", so it would
        // take lettre's QUIT for message text and never answer. The reply is what is under test:
        // send it, then end the session the way the client was about to.
        if line == b".\r\n" && response.is_error {
            return response.write_to(&mut writer);
        }
        match response.action {
            Action::Reply => response.write_to(&mut writer)?,
            Action::Close => return response.write_to(&mut writer),
            Action::UpgradeTls | Action::NoReply => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

const DELIVERY_ID: &str = "dlv_0f9c2a";
const FROM: &str = "Reports <reports@repdist.test>";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The envelope the service sends on every channel. The title is non-ASCII on purpose.
fn payload(report_type: &str) -> String {
    serde_json::json!({
        "type": "report.distributed",
        "timestamp": "2025-06-21T08:00:05Z",
        "data": {
            "delivery_id": DELIVERY_ID,
            "subscription_id": "sub_42",
            "subscriber_id": "subscriber_00042",
            "channel": "EMAIL",
            "attempt": 1,
            "report": {
                "event_id": "evt_7",
                "timestamp": "2025-06-21T08:00:00Z",
                "data_type": report_type,
                "report_data": {
                    "report_id": "report_20250621_001",
                    "report_type": report_type,
                    "portfolio_id": "portfolio_0001",
                    "report_period": "2025-06",
                    "file_path": "/reports/report_q2.pdf",
                    "file_size_bytes": 601,
                    "title": "Q2 Performance – Résumé"
                },
                "routing": {"topic": "reports", "routing_key": "portfolio_0001.performance.monthly", "priority": 3},
                "metadata": {"source_service": "reporting", "delivery_priority": 2}
            }
        }
    })
    .to_string()
}

fn config(peer: SocketAddr) -> EmailConfig {
    EmailConfig {
        host: peer.ip().to_string(),
        port: Some(peer.port()),
        tls: TlsMode::None,
        from: FROM.to_string(),
        ..Default::default()
    }
}

fn sink(peer: &SmtpPeer) -> EmailSink {
    EmailSink::new(config(peer.addr)).expect("valid config")
}

fn request(to: &[&str], attachment: Option<PathBuf>) -> DeliveryRequest {
    DeliveryRequest {
        idempotency_key: DELIVERY_ID.to_string(),
        destination: Destination::Email {
            to: to.iter().map(|s| s.to_string()).collect(),
            locale: None,
            report_type: "PERFORMANCE".to_string(),
            attachment,
        },
        payload: Bytes::from(payload("PERFORMANCE")),
        timeout: Duration::from_secs(5),
        attempt: 1,
        priority: 0,
        encrypt_to: None,
    }
}

fn with_locale(mut request: DeliveryRequest, report_type: &str, wanted: Option<&str>) -> DeliveryRequest {
    if let Destination::Email { locale, report_type: t, .. } = &mut request.destination {
        *locale = wanted.map(str::to_string);
        *t = report_type.to_string();
    }
    request.payload = Bytes::from(payload(report_type));
    request
}

fn parse(arrived: &Arrived) -> mail_parser::Message<'_> {
    MessageParser::default().parse(&arrived.data).expect("a parseable message")
}

fn addresses(address: Option<&mail_parser::Address<'_>>) -> Vec<String> {
    address
        .map(|a| a.clone().into_list().into_iter().filter_map(|a| a.address.map(|s| s.to_string())).collect())
        .unwrap_or_default()
}

fn permanent_reason(result: Result<sinks::Receipt, SinkError>) -> String {
    match result {
        Err(SinkError::Permanent { reason }) => reason,
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

fn transient_reason(result: Result<sinks::Receipt, SinkError>) -> String {
    match result {
        Err(SinkError::Transient { reason, retry_after: None }) => reason,
        other => panic!("expected a transient failure, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Success

#[tokio::test]
async fn delivers_a_rendered_message_with_the_pdf_attached() {
    let peer = SmtpPeer::start(Script::default());
    let to = ["ann@client.test", "Bob Example <bob@client.test>"];
    let receipt = sink(&peer).deliver(&request(&to, Some(fixture("report_q2.pdf")))).await.expect("accepted");
    assert_eq!(receipt.detail, "SMTP 250 2.0.0 Ok: queued as T1");

    let arrived = peer.single();
    assert_eq!(arrived.mail_from, "reports@repdist.test");
    assert_eq!(arrived.rcpt_to, ["ann@client.test", "bob@client.test"]);

    let message = parse(&arrived);
    assert_eq!(addresses(message.from()), ["reports@repdist.test"]);
    assert_eq!(addresses(message.to()), ["ann@client.test", "bob@client.test"]);
    assert_eq!(message.subject(), Some("Q2 Performance – Résumé – portfolio_0001 (2025-06)"));
    assert_eq!(message.message_id(), Some("dlv_0f9c2a@repdist"));
    assert_eq!(message.header("X-Repdist-Delivery-Id").and_then(|h| h.as_text()), Some(DELIVERY_ID));

    let text = message.body_text(0).expect("a text body");
    let html = message.body_html(0).expect("an HTML body");
    for body in [&text, &html] {
        for expected in ["Q2 Performance – Résumé", "report_20250621_001", "PERFORMANCE", "portfolio_0001", "2025-06"]
        {
            assert!(body.contains(expected), "{expected:?} missing from:\n{body}");
        }
        assert!(body.contains("report_q2.pdf"), "the attachment is named in the body:\n{body}");
        assert!(body.contains(DELIVERY_ID), "{body}");
    }
    assert!(html.contains("<table"), "{html}");
    assert!(!text.contains("<table"), "{text}");

    let attachments: Vec<_> = message.attachments().collect();
    assert_eq!(attachments.len(), 1);
    let pdf = attachments[0];
    assert_eq!(pdf.attachment_name(), Some("report_q2.pdf"));
    let content_type = pdf.content_type().expect("a content type");
    assert_eq!((content_type.ctype(), content_type.subtype()), ("application", Some("pdf")));
    assert_eq!(pdf.contents(), std::fs::read(fixture("report_q2.pdf")).unwrap(), "the bytes arrive exactly");
}

#[tokio::test]
async fn every_attempt_carries_the_same_message_id() {
    let peer = SmtpPeer::start(Script::default());
    let sink = sink(&peer);
    let mut attempt = request(&["ann@client.test"], None);
    sink.deliver(&attempt).await.expect("first attempt");
    attempt.attempt = 2;
    sink.deliver(&attempt).await.expect("second attempt");

    let arrived = peer.arrived();
    assert_eq!(arrived.len(), 2);
    let ids: Vec<_> = arrived.iter().map(|a| parse(a).message_id().map(str::to_string)).collect();
    assert_eq!(ids[0].as_deref(), Some("dlv_0f9c2a@repdist"));
    assert_eq!(ids[0], ids[1]);
    // Without a file: text and HTML alternatives, no attachment.
    let message = parse(&arrived[0]);
    assert_eq!(message.attachment_count(), 0);
    assert!(message.body_text(0).is_some() && message.body_html(0).is_some());
}

#[tokio::test]
async fn xlsx_and_csv_get_their_mime_types_and_exact_bytes() {
    let peer = SmtpPeer::start(Script::default());
    let sink = sink(&peer);
    let cases = [
        ("holdings.xlsx", "application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        ("positions.csv", "text", "csv"),
    ];
    for (name, ctype, subtype) in cases {
        sink.deliver(&request(&["ann@client.test"], Some(fixture(name)))).await.expect("accepted");
        let arrived = peer.arrived().pop().expect("a message");
        let message = parse(&arrived);
        let part = message.attachments().next().expect("an attachment");
        assert_eq!(part.attachment_name(), Some(name));
        let content_type = part.content_type().expect("a content type");
        assert_eq!((content_type.ctype(), content_type.subtype()), (ctype, Some(subtype)), "{name}");
        assert_eq!(part.contents(), std::fs::read(fixture(name)).unwrap(), "{name}: bytes differ");
    }
}

#[tokio::test]
async fn a_file_over_the_limit_is_linked_not_attached() {
    let peer = SmtpPeer::start(Script::default());
    let config = EmailConfig {
        attachment_max_bytes: 100,
        link_base_url: Some("https://files.repdist.test/reports/".into()),
        ..config(peer.addr)
    };
    let sink = EmailSink::new(config).expect("valid config");
    sink.deliver(&request(&["ann@client.test"], Some(fixture("report_q2.pdf")))).await.expect("accepted");

    let arrived = peer.single();
    let message = parse(&arrived);
    assert_eq!(message.attachment_count(), 0, "a file over the limit must not be attached");
    let link = "https://files.repdist.test/reports/report_q2.pdf";
    let text = message.body_text(0).expect("text");
    assert!(text.contains(link), "{text}");
    let html = message.body_html(0).expect("html");
    assert!(html.contains("href=\"https:&#x2f;&#x2f;files.repdist.test&#x2f;reports&#x2f;report_q2.pdf\""), "{html}");
    // The PDF's bytes are nowhere in the message.
    assert!(!arrived.data.windows(8).any(|w| w == b"%PDF-1.4"));
}

#[tokio::test]
async fn a_custom_template_that_ignores_the_link_still_gets_a_link_line() {
    let peer = SmtpPeer::start(Script::default());
    // No base URL: the link is the file's path.
    let sink = EmailSink::new(EmailConfig { attachment_max_bytes: 100, ..config(peer.addr) }).expect("config");
    sink.templates()
        .set(
            TemplateKey::new("*", "en"),
            EmailTemplate {
                subject: "Report {{ report.report_id }}".into(),
                html: "<html><body><p>See {{ report.report_id }}</p></body></html>".into(),
                text: "See {{ report.report_id }}.".into(),
            },
        )
        .expect("valid template");
    sink.deliver(&request(&["ann@client.test"], Some(fixture("report_q2.pdf")))).await.expect("accepted");

    let arrived = peer.single();
    let message = parse(&arrived);
    let path = fixture("report_q2.pdf").display().to_string();
    let text = message.body_text(0).expect("text");
    assert!(text.starts_with("See report_20250621_001."), "{text}");
    assert!(text.contains(&format!("Download it here: {path}")), "{text}");
    let html = message.body_html(0).expect("html");
    let escaped = minijinja::HtmlEscape(&path).to_string();
    assert!(html.contains(&format!("<a href=\"{escaped}\">")), "{html}");
    let (line, end) = (html.find("Download it here").expect("a link line"), html.find("</body>").expect("</body>"));
    assert!(line < end, "the line goes inside the body: {html}");
}

// ---------------------------------------------------------------------------------------------
// Templates

fn tagged(tag: &str) -> EmailTemplate {
    EmailTemplate {
        subject: format!("[{tag}] {{{{ report.title }}}}"),
        html: format!("<p>{tag}: {{{{ report.report_id }}}} for {{{{ data.subscriber_id }}}}</p>"),
        text: format!("{tag}: {{{{ report.report_id }}}} for {{{{ data.subscriber_id }}}}"),
    }
}

#[tokio::test]
async fn templates_per_report_type_and_locale_with_fallback() {
    let peer = SmtpPeer::start(Script::default());
    let sink = sink(&peer);
    let store = sink.templates();
    store.set(TemplateKey::new("PERFORMANCE", "de"), tagged("perf-de")).expect("valid");
    store.set(TemplateKey::new("PERFORMANCE", "en"), tagged("perf-en")).expect("valid");
    store.set(TemplateKey::new("*", "fr"), tagged("any-fr")).expect("valid");

    let cases = [
        ("PERFORMANCE", Some("de"), "perf-de"),
        ("PERFORMANCE", Some("it"), "perf-en"), // (type, default locale)
        ("PERFORMANCE", None, "perf-en"),
        ("RISK", Some("fr"), "any-fr"), // ("*", locale)
    ];
    for (report_type, locale, tag) in cases {
        let request = with_locale(request(&["ann@client.test"], None), report_type, locale);
        sink.deliver(&request).await.expect("accepted");
        let arrived = peer.arrived().pop().expect("a message");
        let message = parse(&arrived);
        assert_eq!(
            message.subject(),
            Some(format!("[{tag}] Q2 Performance – Résumé").as_str()),
            "{report_type}/{locale:?}"
        );
        let expected = format!("{tag}: report_20250621_001 for subscriber_00042");
        assert_eq!(message.body_text(0).as_deref(), Some(expected.as_str()));
        assert_eq!(message.body_html(0).as_deref(), Some(format!("<p>{expected}</p>").as_str()));
    }

    // No template for RISK in German, nor for any type in German: the built-in one.
    sink.deliver(&with_locale(request(&["ann@client.test"], None), "RISK", Some("de"))).await.expect("accepted");
    let arrived = peer.arrived().pop().expect("a message");
    assert_eq!(parse(&arrived).subject(), Some("Q2 Performance – Résumé – portfolio_0001 (2025-06)"));
}

#[tokio::test]
async fn a_broken_template_is_refused_by_set() {
    let peer = SmtpPeer::start(Script::default());
    let sink = sink(&peer);
    let broken = EmailTemplate { html: "<p>{% for x in %}</p>".into(), ..tagged("x") };
    let error = sink.templates().set(TemplateKey::new("PERFORMANCE", "en"), broken).expect_err("refused");
    assert!(
        matches!(&error, TemplateError::Invalid { part: TemplatePart::Html, key, .. } if key == "PERFORMANCE/en"),
        "{error:?}"
    );
    assert!(sink.templates().list().is_empty());
    // Deliveries go on with the built-in template.
    sink.deliver(&request(&["ann@client.test"], None)).await.expect("accepted");
    assert!(parse(&peer.single()).subject().is_some_and(|s| s.starts_with("Q2 Performance")));
}

#[tokio::test]
async fn a_template_failing_on_this_report_is_permanent_and_names_the_template() {
    let peer = SmtpPeer::start(Script::default());
    let sink = sink(&peer);
    // Data-dependent, so accepted by `set` (a template may be meant for another context), but it
    // fails on this report, whose size is a string.
    sink.templates()
        .set(
            TemplateKey::new("PERFORMANCE", "en"),
            EmailTemplate { text: "{{ report.file_size_bytes + 1 }}".into(), ..tagged("x") },
        )
        .expect("renders on the sample");
    let mut request = request(&["ann@client.test"], None);
    request.payload =
        Bytes::from(payload("PERFORMANCE").replace("\"file_size_bytes\":601", "\"file_size_bytes\":\"601\""));
    let reason = permanent_reason(sink.deliver(&request).await);
    assert!(reason.starts_with("template PERFORMANCE/en (text) failed to render: "), "{reason}");
    assert!(peer.arrived().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Failures that no retry fixes

#[tokio::test]
async fn a_missing_file_is_permanent_names_the_path_and_sends_nothing() {
    let peer = SmtpPeer::start(Script::default());
    let dir = tempfile::tempdir().expect("a temp dir");
    let missing = dir.path().join("gone.pdf");
    let reason = permanent_reason(sink(&peer).deliver(&request(&["ann@client.test"], Some(missing.clone()))).await);
    assert!(reason.contains(&missing.display().to_string()), "{reason}");
    assert!(reason.contains("cannot open"), "{reason}");
    // A directory is not a report file either.
    let reason = permanent_reason(sink(&peer).deliver(&request(&["ann@client.test"], Some(dir.path().into()))).await);
    assert!(reason.contains("not a regular file"), "{reason}");
    assert!(peer.arrived().is_empty());
}

#[tokio::test]
async fn invalid_recipients_are_permanent_and_nothing_is_sent() {
    let peer = SmtpPeer::start(Script::default());
    let reason = permanent_reason(sink(&peer).deliver(&request(&["ann@client.test", "not an address"], None)).await);
    assert!(reason.contains("not an address"), "{reason}");
    let reason = permanent_reason(sink(&peer).deliver(&request(&[], None)).await);
    assert_eq!(reason, "no recipients");
    assert!(peer.arrived().is_empty());
}

#[tokio::test]
async fn a_payload_that_is_not_a_json_object_is_permanent() {
    let peer = SmtpPeer::start(Script::default());
    for body in [&b"\xff\xfe"[..], b"[1,2]"] {
        let mut bad = request(&["ann@client.test"], None);
        bad.payload = Bytes::copy_from_slice(body);
        let reason = permanent_reason(sink(&peer).deliver(&bad).await);
        assert!(reason.starts_with("invalid payload"), "{reason}");
    }
    assert!(peer.arrived().is_empty());
}

#[tokio::test]
async fn another_channels_destination_is_permanent() {
    let peer = SmtpPeer::start(Script::default());
    let mut wrong = request(&["ann@client.test"], None);
    wrong.destination = Destination::Webhook { url: "http://127.0.0.1:9/".into(), secret: "whsec_x".into() };
    let reason = permanent_reason(sink(&peer).deliver(&wrong).await);
    assert!(reason.starts_with("EMAIL cannot deliver to Webhook"), "{reason}");
    assert!(!reason.contains("whsec_x"), "{reason}");
}

// ---------------------------------------------------------------------------------------------
// Reply codes

async fn answered(script: Script) -> (SmtpPeer, Result<sinks::Receipt, SinkError>) {
    let peer = SmtpPeer::start(script);
    let result = sink(&peer).deliver(&request(&["ann@client.test"], None)).await;
    (peer, result)
}

#[tokio::test]
async fn a_4xx_at_rcpt_or_data_is_transient() {
    let cases = [
        Script { rcpt: Some((451, "4.7.1 Greylisted, try again later")), ..Default::default() },
        Script { rcpt: Some((452, "4.2.2 Mailbox full")), ..Default::default() },
        Script { data_start: Some((451, "4.3.0 Local error")), ..Default::default() },
        Script { data_end: Some((452, "4.3.1 Insufficient system storage")), ..Default::default() },
    ];
    for script in cases {
        let (code, text) = script.rcpt.or(script.data_start).or(script.data_end).unwrap();
        let (peer, result) = answered(script).await;
        let reason = transient_reason(result);
        assert_eq!(reason, format!("SMTP {code} {text}"));
        assert!(peer.arrived().is_empty());
    }
}

#[tokio::test]
async fn a_5xx_at_rcpt_or_data_is_permanent() {
    let cases = [
        Script { rcpt: Some((550, "5.1.1 No such user")), ..Default::default() },
        Script { data_start: Some((554, "5.7.1 Relay access denied")), ..Default::default() },
        Script { data_end: Some((554, "5.6.0 Message rejected as spam")), ..Default::default() },
        Script { data_end: Some((552, "5.3.4 Message too big")), ..Default::default() },
    ];
    for script in cases {
        let (code, text) = script.rcpt.or(script.data_start).or(script.data_end).unwrap();
        let (peer, result) = answered(script).await;
        assert_eq!(permanent_reason(result), format!("SMTP {code} {text}"));
        assert!(peer.arrived().is_empty());
    }
}

#[tokio::test]
async fn auth_credentials_reach_the_relay_and_a_refusal_is_permanent_without_the_password() {
    let script = Script { auth: Some(("mailer", "s3cret-pass")), ..Default::default() };
    let peer = SmtpPeer::start(script);
    let with = |password: &str| EmailConfig {
        auth: Some(SmtpAuth { username: "mailer".into(), password: password.into() }),
        ..config(peer.addr)
    };
    EmailSink::new(with("s3cret-pass"))
        .expect("config")
        .deliver(&request(&["ann@client.test"], None))
        .await
        .expect("authenticated and accepted");
    assert_eq!(peer.arrived().len(), 1);

    let result =
        EmailSink::new(with("wrong-pass")).expect("config").deliver(&request(&["ann@client.test"], None)).await;
    let reason = permanent_reason(result);
    assert!(reason.starts_with("SMTP 535"), "{reason}");
    assert!(!reason.contains("wrong-pass"), "{reason}");
    let logins = peer.shared.lock().unwrap().logins.clone();
    assert_eq!(logins, [("mailer".into(), "s3cret-pass".into()), ("mailer".into(), "wrong-pass".into())]);
    assert_eq!(peer.arrived().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// No usable answer

#[tokio::test]
async fn connection_refused_is_transient() {
    let sink = EmailSink::new(config(refused_addr())).expect("config");
    let reason = transient_reason(sink.deliver(&request(&["ann@client.test"], None)).await);
    assert!(reason.starts_with("connection failed: Connection refused"), "{reason}");
}

#[tokio::test]
async fn a_relay_slower_than_the_deadline_is_a_transient_timeout() {
    // Accepts and never greets.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let sink = EmailSink::new(config(addr)).expect("config");
    let mut slow = request(&["ann@client.test"], None);
    slow.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let reason = transient_reason(sink.deliver(&slow).await);
    assert!(started.elapsed() < Duration::from_secs(3), "the deadline was not enforced: {:?}", started.elapsed());
    assert!(reason.starts_with("timed out"), "{reason}");
}

#[tokio::test]
async fn a_failed_tls_handshake_is_transient() {
    // The peer speaks plain SMTP; implicit TLS expects a TLS server hello and gets "220 ...".
    let peer = SmtpPeer::start(Script::default());
    let sink = EmailSink::new(EmailConfig { tls: TlsMode::Implicit, ..config(peer.addr) }).expect("config");
    let reason = transient_reason(sink.deliver(&request(&["ann@client.test"], None)).await);
    assert!(reason.starts_with("TLS failed"), "{reason}");
    assert!(peer.arrived().is_empty());
}

#[tokio::test]
async fn required_starttls_not_offered_is_transient_and_nothing_goes_in_the_clear() {
    let peer = SmtpPeer::start(Script::default());
    let sink = EmailSink::new(EmailConfig { tls: TlsMode::Starttls, ..config(peer.addr) }).expect("config");
    let reason = transient_reason(sink.deliver(&request(&["ann@client.test"], None)).await);
    assert!(reason.contains("STARTTLS"), "{reason}");
    assert!(peer.arrived().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Reuse for digests

#[tokio::test]
async fn a_digest_reuses_the_message_builder_with_its_own_context() {
    use sinks::email::{build_message, Addressing, TemplateChoice};

    let peer = SmtpPeer::start(Script::default());
    let sink = sink(&peer);
    sink.templates()
        .set(
            TemplateKey::new("DIGEST", "en"),
            EmailTemplate {
                subject: "{{ reports | length }} new reports for {{ subscriber_id }}".into(),
                html: "<ul>{% for r in reports %}<li>{{ r.report_id }}</li>{% endfor %}</ul>".into(),
                text: "{% for r in reports %}- {{ r.report_id }}\n{% endfor %}".into(),
            },
        )
        .expect("a digest template (not shaped like a single report) is accepted");
    let context = serde_json::json!({
        "subscriber_id": "subscriber_00042",
        "reports": [{"report_id": "r1"}, {"report_id": "r2 <&>"}],
    });
    let to = ["ann@client.test".to_string()];
    let addressing = Addressing { from: sink.from(), to: &to, idempotency_key: "digest_2025-06-21_subscriber_00042" };
    let composed = build_message(
        sink.templates(),
        &addressing,
        TemplateChoice { report_type: "DIGEST", locale: Some("en") },
        context,
        None,
    )
    .expect("composed");
    assert_eq!(composed.rendered.template, "DIGEST/en");
    sink.send(composed.message).await.expect("accepted");

    let arrived = peer.single();
    let message = parse(&arrived);
    assert_eq!(message.subject(), Some("2 new reports for subscriber_00042"));
    assert_eq!(message.message_id(), Some("digest_2025-06-21_subscriber_00042@repdist"));
    let text = message.body_text(0).expect("text").replace("\r\n", "\n");
    assert_eq!(text.trim_end(), "- r1\n- r2 <&>");
    assert_eq!(message.body_html(0).as_deref(), Some("<ul><li>r1</li><li>r2 &lt;&amp;&gt;</li></ul>"));
}

#[tokio::test]
async fn a_digest_payload_renders_the_builtin_digest_template_and_a_digest_template_wins() {
    let peer = SmtpPeer::start(Script::default());
    let sink = sink(&peer);
    // A `*` template is written for single reports: a digest must not use it.
    sink.templates().set(TemplateKey::new("*", "en"), tagged("ANY")).expect("valid");
    let digest = serde_json::json!({"type": "report.digest", "timestamp": "2025-06-21T08:00:01Z", "data": {
        "delivery_id": "dig-1", "subscription_id": "sub-1", "subscriber_id": "client-1", "channel": "EMAIL",
        "attempt": 1, "schedule": "0 8 * * *", "tick": "2025-06-21T08:00:00Z", "report_count": 2,
        "reports": [
            {"delivery_id": "m1", "accepted_at": "2025-06-21T07:10:00Z", "report": {"event_id": "e1",
                "report_data": {"report_id": "rep-1", "report_type": "PERFORMANCE", "portfolio_id": "pf-1", "report_period": "2025-06"}}},
            {"delivery_id": "m2", "accepted_at": "2025-06-21T07:20:00Z", "report": {"event_id": "e2",
                "report_data": {"report_id": "rep-<2>", "report_type": "RISK", "file_path": "/reports/r2.pdf", "file_size_bytes": 2400000}}}
        ]}});
    let mut request = request(&["ann@client.test"], None);
    request.idempotency_key = "dig-1".into();
    request.payload = Bytes::from(serde_json::to_vec(&digest).unwrap());
    if let Destination::Email { report_type, .. } = &mut request.destination {
        *report_type = sinks::email::DIGEST_TEMPLATE.to_string();
    }
    sink.deliver(&request).await.expect("delivered");
    let arrived = peer.single();
    let message = parse(&arrived);
    assert_eq!(message.subject(), Some("2 new reports (2025-06-21T08:00:00Z)"));
    assert_eq!(message.message_id(), Some("dig-1@repdist"));
    assert_eq!(message.attachments().count(), 0);
    let text = message.body_text(0).expect("text").replace("\r\n", "\n");
    for expected in ["2 new reports are available", "Report:    rep-1", "Portfolio: pf-1", "rep-<2>", "/reports/r2.pdf (2.4 MB)", "digest dig-1"] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }
    let html = message.body_html(0).expect("html");
    assert!(html.contains("rep-&lt;2&gt;") && !html.contains("rep-<2>"), "escaped: {html}");

    sink.templates()
        .set(
            TemplateKey::new("DIGEST", "en"),
            EmailTemplate {
                subject: "Digest of {{ report_count }}".into(),
                html: "<ul>{% for r in reports %}<li>{{ r.report_id }} {{ r.delivery_id }}</li>{% endfor %}</ul>".into(),
                text: "{% for r in reports %}{{ r.report_id }};{% endfor %}".into(),
            },
        )
        .expect("valid");
    request.idempotency_key = "dig-2".into();
    sink.deliver(&request).await.expect("delivered");
    let arrived = peer.arrived();
    let message = parse(&arrived[1]);
    assert_eq!(message.subject(), Some("Digest of 2"));
    assert_eq!(message.body_text(0).expect("text").trim_end(), "rep-1;rep-<2>;");
    assert_eq!(message.body_html(0).as_deref(), Some("<ul><li>rep-1 m1</li><li>rep-&lt;2&gt; m2</li></ul>"));
}
