//! Bad input at the decoders: arbitrary bytes, and valid records with one part broken (a field
//! removed, a value of the wrong type, a string where an enum is expected), fed to the Kafka
//! record decoders (which share the REST body decoder and validation). Each must answer, never
//! panic: either a decoded value that passes validation, or a refusal with a message.

use proptest::prelude::*;
use repdist::bus::kafka::{reports, subscriptions};
use serde_json::Value;

use crate::helpers::{report, webhook_subscription, TestServer};

/// A JSON value of any shape, small.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::from(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path to a value inside `value` (object keys and array indices).
fn paths(value: &Value, prefix: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = format!("{prefix}/{key}");
                out.push(path.clone());
                paths(child, path, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let path = format!("{prefix}/{i}");
                out.push(path.clone());
                paths(child, path, out);
            }
        }
        _ => {}
    }
}

/// `value` with the part at the `pick`-th path removed (`remove`) or replaced by `replacement`.
fn mutate(mut value: Value, pick: usize, remove: bool, replacement: Value) -> Value {
    let mut all = Vec::new();
    paths(&value, String::new(), &mut all);
    let path = &all[pick % all.len()];
    let (parent, last) = path.rsplit_once('/').unwrap();
    match value.pointer_mut(parent) {
        Some(Value::Object(map)) if remove => {
            map.remove(last);
        }
        Some(Value::Array(items)) if remove => {
            items.remove(last.parse::<usize>().unwrap());
        }
        _ => *value.pointer_mut(path).unwrap() = replacement,
    }
    value
}

fn valid_subscription() -> Value {
    webhook_subscription("sub_prop", "client_prop", "https://example.com/hooks/p", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_refused_with_a_reason(bytes in prop::collection::vec(any::<u8>(), 0..256), key in prop::option::of(prop::collection::vec(any::<u8>(), 0..16))) {
        if let Err(refusal) = reports::decode(Some(&bytes)) {
            prop_assert!(!refusal.message.is_empty());
        }
        if let Err(refusal) = subscriptions::decode(key.as_deref(), Some(&bytes)) {
            prop_assert!(!refusal.message.is_empty());
        }
    }

    #[test]
    fn a_broken_report_is_refused_or_still_valid(pick in any::<usize>(), remove in any::<bool>(), replacement in any_json()) {
        let broken = mutate(report("evt_prop", "report_prop"), pick, remove, replacement);
        match reports::decode(Some(broken.to_string().as_bytes())) {
            Ok(event) => prop_assert_eq!(event.event_id.is_empty(), false),
            Err(refusal) => prop_assert!(!refusal.message.is_empty()),
        }
    }

    #[test]
    fn a_broken_subscription_is_refused_or_still_valid(pick in any::<usize>(), remove in any::<bool>(), replacement in any_json()) {
        let broken = mutate(valid_subscription(), pick, remove, replacement);
        let key = broken["subscription_id"].as_str().unwrap_or("sub_prop").to_string();
        match subscriptions::decode(Some(key.as_bytes()), Some(broken.to_string().as_bytes())) {
            Ok(_) => {}
            Err(refusal) => prop_assert!(!refusal.message.is_empty()),
        }
    }
}

#[test]
fn the_unbroken_records_decode() {
    assert!(reports::decode(Some(report("evt_prop", "report_prop").to_string().as_bytes())).is_ok());
    let subscription = valid_subscription().to_string();
    assert!(subscriptions::decode(Some(b"sub_prop"), Some(subscription.as_bytes())).is_ok());
}

/// The WebSocket endpoint's query parameters (`subscription_id`, `report_types`, `last_seq`,
/// `token`, and any other): sent without an upgrade, every answer is a 4xx JSON error. A refusal of
/// a parameter (400/422) names one that was sent or a required one; valid parameters for a
/// subscription that exists end at the upgrade (426), never at a 5xx.
#[test]
fn websocket_query_parameters_are_refused_naming_the_parameter() {
    use proptest::test_runner::{Config, TestRunner};
    const PARAMETERS: [&str; 4] = ["subscription_id", "report_types", "last_seq", "token"];
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let server = rt.block_on(TestServer::start());
    let subscription = webhook_subscription("sub_ws", "client_ws", "http://127.0.0.1:9/hook", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    rt.block_on(server.subscribe(subscription));

    let key = prop_oneof![4 => prop::sample::select(PARAMETERS.to_vec()).prop_map(str::to_string), 1 => "[a-z_]{1,8}"];
    let value = prop_oneof![
        Just("sub_ws".to_string()),
        Just("RISK_REPORT,ALERT_REPORT".to_string()),
        Just(",,".to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_string()),
        ".{0,16}",
    ];
    // Either well-formed pairs (encoded), or a raw query string of printable ASCII.
    let query = prop_oneof![
        3 => prop::collection::vec((key, value), 0..5).prop_map(|pairs| {
            form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
        }),
        1 => "[ -~]{0,40}",
    ];
    let mut runner = TestRunner::new(Config { cases: 512, failure_persistence: None, ..Config::default() });
    runner
        .run(&query, |query| {
            let (status, body) = rt.block_on(server.get(&format!("/api/v1/reporting/stream?{query}")));
            prop_assert!((400..500).contains(&status), "{query}: {status} {body}");
            prop_assert!(body["error"]["code"].is_string(), "{query}: not the JSON error shape: {body}");
            if status == 400 || status == 422 {
                let field = body["error"]["field"].as_str().unwrap_or_default().to_string();
                // What the server received is the query as the URL parser sends it: it ends at a `#`
                // (the fragment is not sent) and loses surrounding spaces, for instance.
                let url = reqwest::Url::parse(&format!("{}/api/v1/reporting/stream?{query}", server.base)).expect("the request was sent");
                let sent_query = url.query().unwrap_or_default();
                let sent: Vec<String> = form_urlencoded::parse(sent_query.as_bytes()).map(|(k, _)| k.into_owned()).collect();
                prop_assert!(
                    // A parameter without a name can only be blamed on the query as a whole.
                    PARAMETERS.contains(&field.as_str()) || sent.contains(&field) || (field == "query" && sent.iter().any(String::is_empty)),
                    "{query}: the refusal names `{field}`, not a parameter: {body}"
                );
            }
            Ok(())
        })
        .unwrap();

    for (query, status, field) in [
        ("", 422, Some("subscription_id")),
        ("subscription_id=sub_ws&last_seq=-1", 422, Some("last_seq")),
        ("subscription_id=sub_ws&report_types=GOSSIP", 422, Some("report_types")),
        ("subscription_id=sub_ws&last_seq=1&last_seq=2", 422, Some("last_seq")),
        ("subscription_id=nope", 404, None),
        ("subscription_id=sub_ws&report_types=RISK_REPORT", 426, None),
    ] {
        let (got, body) = rt.block_on(server.get(&format!("/api/v1/reporting/stream?{query}")));
        assert_eq!(got, status, "{query}: {body}");
        assert_eq!(body["error"]["field"].as_str(), field, "{query}: {body}");
    }
    rt.block_on(async move { drop(server) });
}
