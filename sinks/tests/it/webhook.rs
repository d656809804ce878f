//! API_WEBHOOK against a real receiver on loopback.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sinks::{DeliveryRequest, Destination, Sink, SinkError, WebhookConfig, WebhookSink};

use crate::receiver::{refused_addr, resetting_peer, Reply, TestReceiver};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Non-ASCII on purpose: the body must arrive byte for byte and be signed as sent.
const PAYLOAD: &str =
    r#"{"type":"report.distributed","data":{"report_id":"report_20250621_001","title":"Q2 – résumé"}}"#;

/// The test receivers are on loopback, which the default configuration refuses (see `egress`).
fn sink() -> WebhookSink {
    WebhookSink::new(WebhookConfig { allow_private_destinations: true, ..Default::default() }).expect("valid config")
}

fn request(url: &str, secret: &str) -> DeliveryRequest {
    DeliveryRequest {
        idempotency_key: "dlv_0f9c2a".to_string(),
        destination: Destination::Webhook { url: url.to_string(), secret: secret.to_string() },
        payload: Bytes::from_static(PAYLOAD.as_bytes()),
        timeout: Duration::from_secs(2),
        attempt: 1,
        priority: 0,
        encrypt_to: None,
    }
}

async fn deliver_once(receiver: &TestReceiver, reply: Reply) -> Result<sinks::Receipt, SinkError> {
    receiver.script([reply]);
    sink().deliver(&request(&receiver.url("/hook"), SECRET)).await
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs() as i64
}

#[tokio::test]
async fn posts_the_payload_with_every_standard_webhooks_header() {
    let receiver = TestReceiver::start().await;
    let receipt = sink().deliver(&request(&receiver.url("/hook"), SECRET)).await.expect("204 is success");
    assert_eq!(receipt.detail, "HTTP 204");

    let got = receiver.single();
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/hook");
    assert_eq!(got.body, PAYLOAD.as_bytes(), "body must arrive byte for byte");
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.header("webhook-id"), Some("dlv_0f9c2a"));
    let timestamp: i64 = got.header("webhook-timestamp").expect("webhook-timestamp").parse().expect("unix seconds");
    assert!((unix_now() - timestamp).abs() <= 5, "timestamp {timestamp} is not now");
    assert!(got.header("webhook-signature").is_some_and(|s| s.starts_with("v1,")), "{:?}", got.headers);
    assert!(got.header("user-agent").is_some_and(|ua| ua.starts_with("repdist/")), "{:?}", got.headers);
}

#[tokio::test]
async fn the_signature_verifies_with_standardwebhooks_and_an_independent_hmac() {
    let receiver = TestReceiver::start().await;
    sink().deliver(&request(&receiver.url("/hook"), SECRET)).await.expect("delivered");
    let got = receiver.single();

    // 1. The reference library, as Standard Webhooks receivers do it.
    standardwebhooks::Webhook::new(SECRET)
        .expect("secret")
        .verify(&got.body, &got.headers)
        .expect("signature verifies");

    // 2. From scratch: HMAC-SHA256 over "{id}.{timestamp}.{body}" with the base64-decoded key.
    let key = base64::engine::general_purpose::STANDARD.decode(&SECRET["whsec_".len()..]).expect("base64 key");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(got.header("webhook-id").expect("id").as_bytes());
    mac.update(b".");
    mac.update(got.header("webhook-timestamp").expect("timestamp").as_bytes());
    mac.update(b".");
    mac.update(&got.body);
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(got.header("webhook-signature"), Some(expected.as_str()));

    // 3. The helper the service's receiver uses accepts it, and rejects a tampered body or another key.
    assert_eq!(sinks::verify_signature(SECRET, &got.headers, &got.body), Ok(()));
    assert!(sinks::verify_signature(SECRET, &got.headers, b"{\"tampered\":true}").is_err());
    assert!(sinks::verify_signature("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &got.headers, &got.body).is_err());
}

#[tokio::test]
async fn any_2xx_is_success() {
    let receiver = TestReceiver::start().await;
    for status in [200, 202] {
        let receipt = deliver_once(&receiver, Reply::status(status).body("ok")).await.expect("2xx is success");
        assert_eq!(receipt.detail, format!("HTTP {status}"));
    }
}

#[tokio::test]
async fn a_server_error_is_transient_and_quotes_the_body() {
    let receiver = TestReceiver::start().await;
    let result = deliver_once(&receiver, Reply::status(500).body("database is down")).await;
    assert_eq!(result, Err(SinkError::Transient { reason: "HTTP 500: database is down".into(), retry_after: None }));
}

#[tokio::test]
async fn a_long_error_body_is_cut_to_an_excerpt() {
    let receiver = TestReceiver::start().await;
    let result = deliver_once(&receiver, Reply::status(502).body(vec![b'x'; 10_000])).await;
    let Err(SinkError::Transient { reason, .. }) = result else { panic!("502 must be transient: {result:?}") };
    assert_eq!(reason.len(), "HTTP 502: ".len() + sinks::http_classify::BODY_EXCERPT_BYTES, "{reason}");
}

#[tokio::test]
async fn request_timeout_408_is_transient() {
    let receiver = TestReceiver::start().await;
    let result = deliver_once(&receiver, Reply::status(408)).await;
    assert_eq!(result, Err(SinkError::Transient { reason: "HTTP 408".into(), retry_after: None }));
}

#[tokio::test]
async fn a_429_honours_retry_after_in_seconds() {
    let receiver = TestReceiver::start().await;
    let result = deliver_once(&receiver, Reply::status(429).header("retry-after", "7").body("slow down")).await;
    assert_eq!(
        result,
        Err(SinkError::Transient { reason: "HTTP 429: slow down".into(), retry_after: Some(Duration::from_secs(7)) })
    );
}

#[tokio::test]
async fn a_503_honours_retry_after_as_an_http_date() {
    let receiver = TestReceiver::start().await;
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    let result = deliver_once(&receiver, Reply::status(503).header("retry-after", date)).await;
    let Err(SinkError::Transient { retry_after: Some(hint), .. }) = result else {
        panic!("expected a hint: {result:?}")
    };
    // The date has one-second resolution and a little time passes on the way.
    assert!(hint > Duration::from_secs(110) && hint <= Duration::from_secs(120), "{hint:?}");
}

#[tokio::test]
async fn a_404_is_permanent() {
    let receiver = TestReceiver::start().await;
    let result = deliver_once(&receiver, Reply::status(404).body("no such hook")).await;
    assert_eq!(result, Err(SinkError::Permanent { reason: "HTTP 404: no such hook".into() }));
}

#[tokio::test]
async fn a_redirect_is_permanent_and_not_followed() {
    let receiver = TestReceiver::start().await;
    let moved_to = receiver.url("/moved");
    let result = deliver_once(&receiver, Reply::status(301).header("location", moved_to.clone())).await;
    assert_eq!(
        result,
        Err(SinkError::Permanent { reason: format!("HTTP 301 redirect not followed (location: {moved_to})") })
    );
    // Had the redirect been followed, the receiver would have seen a request for /moved.
    assert_eq!(receiver.single().path, "/hook");
}

#[tokio::test]
async fn a_peer_slower_than_the_deadline_is_a_transient_timeout() {
    let receiver = TestReceiver::start().await;
    receiver.script([Reply::status(200).after(Duration::from_millis(1500))]);
    let mut slow = request(&receiver.url("/hook"), SECRET);
    slow.timeout = Duration::from_millis(200);
    let started = Instant::now();
    let result = sink().deliver(&slow).await;
    assert!(started.elapsed() < Duration::from_millis(1000), "the deadline was not enforced: {:?}", started.elapsed());
    let Err(SinkError::Transient { reason, retry_after: None }) = result else {
        panic!("expected transient: {result:?}")
    };
    assert!(reason.starts_with("timed out"), "{reason}");
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let url = format!("http://{}/hook", refused_addr());
    let result = sink().deliver(&request(&url, SECRET)).await;
    let Err(SinkError::Transient { reason, retry_after: None }) = result else {
        panic!("expected transient: {result:?}")
    };
    assert!(reason.starts_with("connection failed"), "{reason}");
    assert!(!reason.contains(&url), "the URL must not be echoed: {reason}");
}

#[tokio::test]
async fn a_connection_reset_is_transient() {
    let url = format!("http://{}/hook", resetting_peer().await);
    let result = sink().deliver(&request(&url, SECRET)).await;
    let Err(SinkError::Transient { reason, retry_after: None }) = result else {
        panic!("expected transient: {result:?}")
    };
    // Connected, then lost: neither a connect failure nor a timeout.
    assert!(reason.starts_with("request failed"), "{reason}");
}

#[tokio::test]
async fn a_malformed_url_is_permanent() {
    for url in ["not a url", "http://"] {
        let result = sink().deliver(&request(url, SECRET)).await;
        assert!(matches!(result, Err(SinkError::Permanent { .. })), "{url}: {result:?}");
    }
}

#[tokio::test]
async fn a_bad_secret_is_permanent_sends_nothing_and_is_never_echoed() {
    let receiver = TestReceiver::start().await;
    for secret in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_hunter2!!", "whsec_"] {
        let result = sink().deliver(&request(&receiver.url("/hook"), secret)).await;
        let Err(SinkError::Permanent { reason }) = result else { panic!("{secret}: expected permanent: {result:?}") };
        assert!(reason.contains("whsec_"), "{reason}");
        assert!(!reason.contains("hunter2") && !reason.contains("MfKQ9r8"), "secret leaked: {reason}");
    }
    assert!(receiver.recorded().is_empty(), "nothing may be sent unsigned");
}

#[tokio::test]
async fn a_payload_that_is_not_utf8_is_permanent() {
    let receiver = TestReceiver::start().await;
    let mut bad = request(&receiver.url("/hook"), SECRET);
    bad.payload = Bytes::from_static(b"\xff\xfe");
    let result = sink().deliver(&bad).await;
    assert!(matches!(result, Err(SinkError::Permanent { .. })), "{result:?}");
    assert!(receiver.recorded().is_empty());
}

#[tokio::test]
async fn another_channels_destination_is_permanent() {
    let mut wrong = request("http://127.0.0.1:9/hook", SECRET);
    wrong.destination =
        Destination::Dashboard { subscriber_id: "s".into(), subscription_id: "sub".into(), report_id: "r".into() };
    let result = sink().deliver(&wrong).await;
    assert!(matches!(result, Err(SinkError::Permanent { .. })), "{result:?}");
}

#[tokio::test]
async fn every_attempt_of_a_delivery_carries_the_same_webhook_id() {
    let receiver = TestReceiver::start().await;
    receiver.script([Reply::status(503)]);
    let sink = sink();
    let mut attempt = request(&receiver.url("/hook"), SECRET);
    assert!(sink.deliver(&attempt).await.is_err_and(|e| e.is_transient()));
    attempt.attempt = 2;
    sink.deliver(&attempt).await.expect("second attempt succeeds");
    let ids: Vec<_> = receiver.recorded().iter().map(|r| r.header("webhook-id").map(str::to_string)).collect();
    assert_eq!(ids, vec![Some("dlv_0f9c2a".to_string()), Some("dlv_0f9c2a".to_string())]);
}

#[tokio::test]
async fn connections_are_kept_alive_across_deliveries() {
    let receiver = TestReceiver::start().await;
    let sink = sink();
    for _ in 0..3 {
        sink.deliver(&request(&receiver.url("/hook"), SECRET)).await.expect("delivered");
    }
    // An answer with a body larger than one socket read (but under the drain limit) must be read to
    // its end, or the connection cannot go back to the pool.
    receiver.script([Reply::status(200).body(vec![b'k'; 40 * 1024])]);
    sink.deliver(&request(&receiver.url("/hook"), SECRET)).await.expect("delivered");
    sink.deliver(&request(&receiver.url("/hook"), SECRET)).await.expect("delivered");
    let peers: std::collections::BTreeSet<_> = receiver.recorded().iter().map(|r| r.peer).collect();
    assert_eq!(peers.len(), 1, "one pooled connection expected, saw {peers:?}");
}

#[tokio::test]
async fn debug_output_redacts_the_secret() {
    let shown = format!("{:?}", request("http://127.0.0.1:9/hook", SECRET));
    assert!(!shown.contains("MfKQ9r8"), "{shown}");
    assert!(shown.contains("<redacted>") && shown.contains("dlv_0f9c2a"), "{shown}");
    assert!(!shown.contains("résumé"), "the payload is summarised, not printed: {shown}");
}

#[test]
fn an_invalid_config_is_refused_naming_the_key() {
    let config = WebhookConfig { connect_timeout: Duration::ZERO, ..Default::default() };
    let Err(error) = WebhookSink::new(config) else { panic!("zero connect timeout must be refused") };
    assert!(error.to_string().contains("connect_timeout"), "{error}");
}

#[tokio::test]
async fn private_destinations_are_refused_unless_allowed_and_nothing_is_sent() {
    let receiver = TestReceiver::start().await;
    let guarded = WebhookSink::new(WebhookConfig::default()).expect("default config is valid");
    let url = receiver.url("/hook");
    for url in [url.clone(), url.replace("127.0.0.1", "localhost"), "http://169.254.169.254/latest/meta-data".to_string()] {
        match guarded.deliver(&request(&url, SECRET)).await {
            Err(SinkError::Permanent { reason }) => assert!(reason.contains("refused"), "{url}: {reason}"),
            other => panic!("{url} must be refused permanently, got {other:?}"),
        }
    }
    assert_eq!(receiver.recorded().len(), 0, "nothing reached the private receiver");
    sink().deliver(&request(&receiver.url("/hook"), SECRET)).await.expect("allowed when configured");
    receiver.single();
}

#[tokio::test]
async fn a_name_that_resolves_only_to_private_addresses_is_refused_by_the_resolver() {
    use reqwest::dns::Resolve;
    use std::str::FromStr;
    let refused = sinks::egress::PublicOnly.resolve(reqwest::dns::Name::from_str("localhost").unwrap()).await;
    let Err(error) = refused else { panic!("localhost resolves only to loopback addresses") };
    assert!(sinks::egress::is_refusal(error.as_ref()), "{error}");
}
