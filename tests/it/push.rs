//! MOBILE_PUSH end to end against the FCM and APNs stand-ins the sinks' tests use (Google's token
//! endpoint, FCM HTTP v1 and APNs over h2c, verifying the JWTs with the fixture keys): a device
//! token the provider reports dead (FCM `UNREGISTERED`, APNs 410) is marked on the subscription as a
//! new version, later reports fail at once without contacting the provider, and a new token from
//! the subscriber is used again.

#[path = "../../sinks/tests/it/push/provider.rs"]
#[allow(dead_code)]
mod provider;

use std::time::Duration;

use dataflows::delivery::{delivery_id, DeliveryChannel};
use provider::{Answer, Provider, KEY_ID, TEAM_ID, TOPIC};
use reqwest::Method;
use serde_json::{json, Value};
use sinks::push::{ApnsConfig, FcmConfig};

use crate::helpers::{eventually, report, TestServer};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sinks/tests/fixtures/push");
const FCM_TOKEN: &str = "fcm-registration-token-0123456789";
const FCM_TOKEN_2: &str = "fcm-registration-token-after-reinstall";
const APNS_TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

async fn server(provider: &Provider) -> TestServer {
    let push = sinks::PushConfig {
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
        ..sinks::PushConfig::default()
    };
    TestServer::start_with(move |config| config.push = push).await
}

fn subscription(id: &str, provider: &str, token: &str) -> Value {
    json!({
        "subscription_id": id,
        "subscriber_id": format!("{id}-client"),
        "report_types": ["PERFORMANCE_REPORT"],
        "delivery_preferences": {"channels": ["MOBILE_PUSH"],
            "notification_settings": {"mobile_push": {"provider": provider, "device_token": token}}}
    })
}

/// The subscriber's subscription as the API shows it (through the read cache).
async fn push_settings_read(server: &TestServer, id: &str) -> Value {
    let (status, list) = server.get(&format!("/api/v1/reporting/subscriptions/{id}-client")).await;
    assert_eq!(status, 200, "{list}");
    list[0]["delivery_preferences"]["notification_settings"]["mobile_push"].clone()
}

/// The stored version's dead tokens (unmasked).
async fn dead_tokens(server: &TestServer, id: &str) -> Vec<String> {
    let stored = server.server.runtime().store().subscription(id).await.unwrap().expect("stored");
    stored.subscription.delivery_preferences.notification_settings.mobile_push.expect("push settings").dead_tokens
}

#[tokio::test]
async fn a_dead_token_is_marked_on_the_subscription_and_not_used_again() {
    let provider = Provider::start().await;
    let server = server(&provider).await;
    server.subscribe(subscription("push-fcm", "FCM", FCM_TOKEN)).await;
    server.subscribe(subscription("push-apns", "APNS", APNS_TOKEN)).await;
    for id in ["push-fcm", "push-apns"] {
        // Also fills the read cache, which the mark must invalidate.
        assert!(push_settings_read(&server, id).await.get("dead_tokens").is_none());
    }

    let fcm_unregistered = json!({"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
        "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}});
    provider.script_fcm([Answer::new(404, fcm_unregistered)]);
    provider.script_apns([Answer::new(410, json!({"reason": "Unregistered", "timestamp": 1750000000000u64}))]);
    server.deliver(report("evt-push-1", "rep-push-1")).await;
    for id in ["push-fcm", "push-apns"] {
        let delivery = delivery_id("rep-push-1", id, DeliveryChannel::MobilePush);
        let status = server.wait_for_state(&delivery, "DEAD_LETTERED").await;
        let reason = status["error_details"].as_str().unwrap_or_default();
        assert!(reason.contains("dead device token"), "{id}: {status}");
    }
    assert_eq!((provider.fcm_received().len(), provider.apns_received().len()), (1, 1));

    // The mark: a new subscription version, shown (masked) by the API once the cached list is dropped.
    for (id, token) in [("push-fcm", FCM_TOKEN), ("push-apns", APNS_TOKEN)] {
        let shown = eventually(Duration::from_secs(10), || async {
            let push = push_settings_read(&server, id).await;
            push.get("dead_tokens").is_some().then_some(push)
        })
        .await
        .unwrap_or_else(|| panic!("{id}: the dead token never showed on the subscription"));
        assert_eq!(shown["dead_tokens"], json!(["********"]), "{id}: masked like the token: {shown}");
        assert_eq!(dead_tokens(&server, id).await, [token], "{id}");
    }

    // A later report fails at once, with a reason that says what to do, and reaches no provider.
    server.deliver(report("evt-push-2", "rep-push-2")).await;
    for id in ["push-fcm", "push-apns"] {
        let delivery = delivery_id("rep-push-2", id, DeliveryChannel::MobilePush);
        let status = server.wait_for_state(&delivery, "DEAD_LETTERED").await;
        let reason = status["error_details"].as_str().unwrap_or_default();
        assert!(reason.contains("no live device") && reason.contains("mobile_push.device_token"), "{id}: {status}");
        assert!(!reason.contains(FCM_TOKEN) && !reason.contains(APNS_TOKEN), "no token in a reason: {reason}");
    }
    assert_eq!((provider.fcm_received().len(), provider.apns_received().len()), (1, 1), "dead tokens are not tried");

    // The app registered again: an update with the new token clears the mark, and delivery resumes.
    let (status, body) = server
        .send(Method::PUT, "/api/v1/reporting/subscriptions/push-fcm", Some(&subscription("push-fcm", "FCM", FCM_TOKEN_2)))
        .await;
    assert_eq!(status, 200, "{body}");
    server.deliver(report("evt-push-3", "rep-push-3")).await;
    server.wait_for_state(&delivery_id("rep-push-3", "push-fcm", DeliveryChannel::MobilePush), "DELIVERED").await;
    let last = provider.fcm_received().pop().expect("an FCM request");
    assert_eq!(last.body["message"]["token"], FCM_TOKEN_2);
    assert!(dead_tokens(&server, "push-fcm").await.is_empty());
    assert_eq!(provider.violations(), Vec::<String>::new());
}
