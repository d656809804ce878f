//! MOBILE_PUSH against real peers on loopback: `provider` stands in for Google's token endpoint, FCM
//! and APNs (verifying the JWTs with the fixture keys' public halves, HTTP/2 for APNs), and the
//! plain `TestReceiver` for ntfy.

mod provider;

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use sinks::push::{apns_id, ApnsConfig, FcmConfig};
use sinks::{
    is_dead_token, DeliveryRequest, Destination, PushConfig, PushSetupError, PushSink, PushTarget, Sink, SinkError,
};

use crate::chat::ENVELOPE;
use crate::receiver::{Reply, TestReceiver};
use provider::{Answer, Provider, CLIENT_EMAIL, FIXTURES, KEY_ID, PROJECT_ID, TEAM_ID, TOPIC};

const FCM_TOKEN: &str = "fcm-registration-token-0123456789";
const APNS_TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const DELIVERY_UUID: &str = "0F9C2A1E-8B3D-4C5E-9F6A-7B8C9D0E1F2A";

fn config(provider: &Provider) -> PushConfig {
    PushConfig {
        fcm: Some(FcmConfig {
            project_id: None,
            service_account_json_path: Some(format!("{FIXTURES}/fcm-service-account.json").into()),
            client_email: None,
            private_key: None,
            token_uri: Some(provider.url("/token")),
            api_base: provider.url(""),
        }),
        apns: Some(ApnsConfig {
            team_id: TEAM_ID.into(),
            key_id: KEY_ID.into(),
            private_key: None,
            private_key_path: Some(format!("{FIXTURES}/apns-auth-key.p8").into()),
            topic: TOPIC.into(),
            api_base: provider.url(""),
        }),
        ..PushConfig::default()
    }
}

fn sink(provider: &Provider) -> PushSink {
    PushSink::new(config(provider)).expect("valid push config")
}

fn request(target: PushTarget, priority: i32) -> DeliveryRequest {
    DeliveryRequest {
        idempotency_key: DELIVERY_UUID.into(),
        destination: Destination::Push { target },
        payload: Bytes::from_static(ENVELOPE.as_bytes()),
        timeout: Duration::from_secs(3),
        attempt: 1,
        priority,
        encrypt_to: None,
    }
}

fn fcm(priority: i32) -> DeliveryRequest {
    request(PushTarget::Fcm { device_token: FCM_TOKEN.into() }, priority)
}

fn apns(priority: i32) -> DeliveryRequest {
    request(PushTarget::Apns { device_token: APNS_TOKEN.into() }, priority)
}

fn fcm_error(status: u16, code: &str, detail: serde_json::Value) -> Answer {
    Answer::new(status, json!({"error": {"code": status, "message": "scripted", "status": code, "details": [detail]}}))
}

#[tokio::test]
async fn fcm_sends_a_v1_message_and_exchanges_the_assertion_once_for_many_deliveries() {
    let provider = Provider::start().await;
    let sink = std::sync::Arc::new(sink(&provider));
    let receipt = sink.deliver(&fcm(2)).await.expect("delivered");
    assert_eq!(receipt.detail, format!("HTTP 200 projects/{PROJECT_ID}/messages/1"));
    sink.deliver(&fcm(0)).await.expect("delivered");
    // Concurrent deliveries reuse the cached token too.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let sink = sink.clone();
            tokio::spawn(async move { sink.deliver(&fcm(1)).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("joined").expect("delivered");
    }
    assert_eq!(provider.violations(), Vec::<String>::new());
    assert_eq!(provider.token_requests(), 1, "the access token is cached");

    let received = provider.fcm_received();
    assert_eq!(received.len(), 6);
    assert!(received.iter().all(|r| r.header("authorization") == Some("Bearer ya29.test-access-token-1")));
    let message = &received[0].body["message"];
    assert_eq!(message["token"], FCM_TOKEN);
    assert_eq!(message["notification"]["title"], "Performance report report_20250621_001");
    assert_eq!(message["notification"]["body"], "Portfolio portfolio_<001>, period 2025-Q2");
    assert_eq!(message["data"]["delivery_id"], DELIVERY_UUID);
    assert_eq!(message["data"]["report_id"], "report_20250621_001");
    assert_eq!(message["android"]["priority"], "HIGH");
    assert_eq!(received[1].body["message"]["android"]["priority"], "NORMAL");
}

#[tokio::test]
async fn a_401_drops_the_access_token_and_the_next_attempt_fetches_a_new_one() {
    let provider = Provider::start().await;
    let sink = sink(&provider);
    sink.deliver(&fcm(0)).await.expect("delivered");
    provider.revoke_access_tokens();
    let error = sink.deliver(&fcm(0)).await.expect_err("revoked token");
    assert!(error.is_transient() && error.reason().contains("401"), "{error:?}");
    assert!(!error.reason().contains("ya29"), "no access token in a reason: {error:?}");
    sink.deliver(&fcm(0)).await.expect("a fresh token works");
    assert_eq!(provider.token_requests(), 2);
    let last = provider.fcm_received().pop().expect("received");
    assert_eq!(last.header("authorization"), Some("Bearer ya29.test-access-token-2"));
    assert_eq!(provider.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn fcm_errors_are_classified_and_dead_tokens_marked() {
    let provider = Provider::start().await;
    let sink = sink(&provider);
    let fcm_code =
        |code: &str| json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code});
    provider.script_fcm([
        fcm_error(404, "NOT_FOUND", fcm_code("UNREGISTERED")),
        fcm_error(
            400,
            "INVALID_ARGUMENT",
            json!({"@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}]}),
        ),
        fcm_error(429, "RESOURCE_EXHAUSTED", fcm_code("QUOTA_EXCEEDED")).header("retry-after", "7"),
        fcm_error(503, "UNAVAILABLE", fcm_code("UNAVAILABLE")).header("retry-after", "30"),
        fcm_error(500, "INTERNAL", fcm_code("INTERNAL")),
        fcm_error(400, "INVALID_ARGUMENT", fcm_code("INVALID_ARGUMENT")),
    ]);
    let mut results = Vec::new();
    for _ in 0..6 {
        results.push(sink.deliver(&fcm(0)).await.expect_err("scripted failure"));
    }
    assert!(is_dead_token(&results[0]), "{:?}", results[0]);
    assert_eq!(results[0].reason(), "dead device token: FCM HTTP 404 UNREGISTERED: scripted");
    assert!(is_dead_token(&results[1]), "{:?}", results[1]);
    assert_eq!(
        results[2],
        SinkError::Transient {
            reason: "FCM HTTP 429 QUOTA_EXCEEDED: scripted".into(),
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert!(matches!(&results[3], SinkError::Transient { retry_after: Some(d), .. } if *d == Duration::from_secs(30)));
    assert!(results[4].is_transient());
    assert!(!results[5].is_transient() && !is_dead_token(&results[5]), "not about the token: {:?}", results[5]);
    assert!(results.iter().all(|e| !e.reason().contains(FCM_TOKEN)));
    assert_eq!(provider.token_requests(), 1, "errors other than 401 keep the access token");
}

#[tokio::test]
async fn a_refused_assertion_fails_the_attempt_without_leaking_credentials() {
    let provider = Provider::start().await;
    let mut config = config(&provider);
    let fcm = config.fcm.as_mut().expect("fcm");
    // Inline credentials, with an e-mail the token endpoint does not expect.
    fcm.service_account_json_path = None;
    fcm.project_id = Some(PROJECT_ID.into());
    fcm.client_email = Some("someone-else@repdist-test.iam.gserviceaccount.com".into());
    fcm.private_key = Some(std::fs::read_to_string(format!("{FIXTURES}/fcm-service-account-key.pem")).expect("key"));
    let sink = PushSink::new(config).expect("valid config");
    let error =
        sink.deliver(&request(PushTarget::Fcm { device_token: FCM_TOKEN.into() }, 0)).await.expect_err("refused");
    assert!(error.reason().starts_with("FCM token exchange: HTTP 400"), "{error:?}");
    assert!(!error.reason().contains("PRIVATE KEY") && !error.reason().contains("eyJ"), "{error:?}");
    assert!(provider.fcm_received().is_empty());
    assert_eq!(provider.violations().len(), 1, "the provider saw the wrong issuer: {:?}", provider.violations());
    assert!(provider.violations()[0].contains("InvalidIssuer"), "{:?}", provider.violations());
    let _ = CLIENT_EMAIL;
}

#[tokio::test]
async fn apns_gets_http2_with_a_verified_provider_token_and_the_required_headers() {
    let provider = Provider::start().await;
    let sink = sink(&provider);
    let receipt = sink.deliver(&apns(2)).await.expect("delivered");
    assert_eq!(receipt.detail, format!("HTTP 200 apns-id {}", DELIVERY_UUID.to_ascii_lowercase()));
    let mut low = apns(0);
    low.idempotency_key = "dlv_0f9c2a".into();
    sink.deliver(&low).await.expect("delivered");
    assert_eq!(provider.violations(), Vec::<String>::new());

    let received = provider.apns_received();
    assert_eq!(received.len(), 2);
    for r in &received {
        assert_eq!(r.version, axum::http::Version::HTTP_2);
        assert_eq!(r.path, format!("/3/device/{APNS_TOKEN}"));
        assert_eq!(r.header("apns-topic"), Some(TOPIC));
        assert_eq!(r.header("apns-push-type"), Some("alert"));
        assert_eq!(r.body["aps"]["alert"]["title"], "Performance report report_20250621_001");
    }
    assert_eq!(received[0].header("apns-priority"), Some("10"));
    assert_eq!(received[1].header("apns-priority"), Some("5"));
    assert_eq!(received[0].header("apns-id"), Some(DELIVERY_UUID.to_ascii_lowercase().as_str()));
    assert_eq!(received[1].header("apns-id"), Some(apns_id("dlv_0f9c2a").as_str()));
    assert_eq!(received[1].body["delivery_id"], "dlv_0f9c2a");
    assert_eq!(received[0].header("authorization"), received[1].header("authorization"), "provider token reused");
}

#[tokio::test]
async fn apns_errors_are_classified_and_dead_tokens_marked() {
    let provider = Provider::start().await;
    let sink = sink(&provider);
    provider.script_apns([
        Answer::new(410, json!({"reason": "Unregistered", "timestamp": 1750000000000u64})),
        Answer::new(400, json!({"reason": "BadDeviceToken"})),
        Answer::new(429, json!({"reason": "TooManyRequests"})).header("retry-after", "7"),
        Answer::new(500, json!({"reason": "InternalServerError"})),
        Answer::new(503, json!({"reason": "ServiceUnavailable"})),
        Answer::new(403, json!({"reason": "ExpiredProviderToken"})),
        Answer::new(400, json!({"reason": "BadTopic"})),
    ]);
    let mut results = Vec::new();
    for _ in 0..7 {
        results.push(sink.deliver(&apns(1)).await.expect_err("scripted failure"));
    }
    assert_eq!(results[0], SinkError::permanent("dead device token: APNs HTTP 410 Unregistered"));
    assert_eq!(results[1], SinkError::permanent("dead device token: APNs HTTP 400 BadDeviceToken"));
    assert_eq!(
        results[2],
        SinkError::Transient {
            reason: "APNs HTTP 429 TooManyRequests".into(),
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert!(results[3].is_transient() && results[4].is_transient(), "{results:?}");
    assert_eq!(results[5], SinkError::transient("APNs HTTP 403 ExpiredProviderToken (provider token renewed)"));
    assert_eq!(results[6], SinkError::permanent("APNs HTTP 400 BadTopic"));
    sink.deliver(&apns(1)).await.expect("works again after renewing the provider token");
    assert_eq!(provider.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_malformed_apns_token_is_dead_and_nothing_is_sent() {
    let provider = Provider::start().await;
    let sink = sink(&provider);
    for token in ["", "../../3/device/x", "not-hex-at-all"] {
        let error = sink.deliver(&request(PushTarget::Apns { device_token: token.into() }, 0)).await.expect_err("bad");
        assert!(is_dead_token(&error), "{token:?}: {error:?}");
    }
    assert!(provider.apns_received().is_empty() && provider.violations().is_empty());
}

#[tokio::test]
async fn a_slow_provider_is_a_transient_failure_within_the_deadline() {
    let provider = Provider::start().await;
    provider.script_apns([Answer::new(200, json!({})).after(Duration::from_secs(5))]);
    let mut slow = apns(0);
    slow.timeout = Duration::from_millis(300);
    let error = tokio::time::timeout(Duration::from_secs(3), sink(&provider).deliver(&slow))
        .await
        .expect("deliver honours its deadline")
        .expect_err("too slow");
    assert!(error.is_transient(), "{error:?}");
}

#[tokio::test]
async fn ntfy_gets_a_short_text_with_title_priority_and_delivery_id() {
    let receiver = TestReceiver::start().await;
    let topic_url = receiver.url("/repdist-secret-topic");
    let sink = PushSink::new(PushConfig { allow_private_destinations: true, ..PushConfig::default() }).expect("ntfy needs no config");
    let receipt = sink.deliver(&request(PushTarget::Ntfy { topic_url: topic_url.clone() }, 2)).await.expect("sent");
    assert_eq!(receipt.detail, "HTTP 204");
    let got = receiver.single();
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/repdist-secret-topic");
    assert_eq!(got.header("title"), Some("Performance report report_20250621_001"));
    assert_eq!(got.header("priority"), Some("5"));
    assert_eq!(got.header("x-delivery-id"), Some(DELIVERY_UUID));
    assert_eq!(got.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(got.body, "Portfolio portfolio_<001>, period 2025-Q2".as_bytes());

    receiver.script([
        Reply::status(404),
        Reply::status(410),
        Reply::status(429).header("retry-after", "7"),
        Reply::status(500).body(format!("cannot publish to {topic_url}")),
    ]);
    let mut results = Vec::new();
    for _ in 0..4 {
        results.push(
            sink.deliver(&request(PushTarget::Ntfy { topic_url: topic_url.clone() }, 0)).await.expect_err("scripted"),
        );
    }
    assert!(is_dead_token(&results[0]) && is_dead_token(&results[1]), "{results:?}");
    assert_eq!(
        results[2],
        SinkError::Transient { reason: "ntfy: HTTP 429".into(), retry_after: Some(Duration::from_secs(7)) }
    );
    assert_eq!(results[3], SinkError::transient("ntfy: HTTP 500: cannot publish to <redacted>"));
    assert_eq!(receiver.recorded()[1].header("priority"), Some("3"));
}

/// A subscriber chooses the ntfy topic URL, so by default it is guarded like a webhook URL: a
/// literal private address is refused before any request, a name resolving to one is never
/// dialled, and a redirect is not followed. Nothing reaches the loopback receiver.
#[tokio::test]
async fn ntfy_refuses_private_destinations_by_default_and_follows_no_redirect() {
    let receiver = TestReceiver::start().await;
    let sink = PushSink::new(PushConfig::default()).expect("ntfy needs no config");
    let literal = receiver.url("/topic");
    let by_name = literal.replace("127.0.0.1", "localhost");
    assert_ne!(literal, by_name, "the receiver is on 127.0.0.1: {literal}");
    for topic_url in [literal, by_name] {
        let error = sink.deliver(&request(PushTarget::Ntfy { topic_url: topic_url.clone() }, 0)).await.expect_err("refused");
        assert!(!error.is_transient() && !is_dead_token(&error), "{topic_url}: {error:?}");
        assert!(error.to_string().contains("refused"), "{topic_url}: {error}");
        assert!(!error.to_string().contains("/topic"), "the topic URL is a credential: {error}");
    }
    assert!(receiver.recorded().is_empty(), "nothing was sent");

    let allowed = PushSink::new(PushConfig { allow_private_destinations: true, ..PushConfig::default() }).expect("config");
    receiver.script([Reply::status(302).header("location", "http://127.0.0.1:9/elsewhere")]);
    let error = allowed.deliver(&request(PushTarget::Ntfy { topic_url: receiver.url("/topic") }, 0)).await.expect_err("a redirect");
    assert!(!error.is_transient() && error.to_string().contains("redirect not followed"), "{error:?}");
    assert_eq!(receiver.recorded().len(), 1, "one request, the redirect not followed");
}

#[tokio::test]
async fn unconfigured_providers_and_bad_keys_fail_clearly() {
    let sink = PushSink::new(PushConfig::default()).expect("empty config");
    let error = sink.deliver(&fcm(0)).await.expect_err("no fcm");
    assert_eq!(error, SinkError::permanent("FCM is not configured on this server (push.fcm)"));
    assert!(!sink.deliver(&apns(0)).await.expect_err("no apns").is_transient());
    let wrong = DeliveryRequest {
        destination: Destination::Webhook { url: "http://x".into(), secret: "whsec_s3cr3t".into() },
        ..fcm(0)
    };
    let error = sink.deliver(&wrong).await.expect_err("wrong channel");
    assert!(!error.is_transient() && !error.reason().contains("s3cr3t"), "{error:?}");

    let provider = Provider::start().await;
    let mut config = config(&provider);
    config.apns.as_mut().expect("apns").private_key_path =
        Some(format!("{FIXTURES}/fcm-service-account-key.pem").into());
    match PushSink::new(config) {
        Err(PushSetupError::InvalidConfig { key, reason }) => {
            assert_eq!(key, "apns.private_key_path");
            assert!(!reason.contains("BEGIN"), "{reason}");
        }
        other => panic!("an RSA key is no APNs key: {:?}", other.err()),
    }
    let printed = format!("{:?}", apns(0));
    assert!(!printed.contains(APNS_TOKEN), "{printed}");
}
