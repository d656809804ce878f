//! Bad input at the gRPC decoders, against a real server: arbitrary bytes as the request message
//! of every method (decoded by the generated code's codec), and well-formed messages with
//! arbitrary field values (decoded by the service's own conversions: enum values, ids, the
//! subscription JSON). Every answer must be a success or a client-error status; an
//! `INVALID_ARGUMENT` must name the field in its `field` metadata. A panic in a handler would show
//! as `UNKNOWN`/`INTERNAL` or a reset stream, and the server must still answer at the end.

use bytes::{Buf, BufMut};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use repdist::grpc::proto::{self, SubscriptionAction};
use serde_json::Value;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::helpers::{dashboard_subscription, TestServer};

/// A client codec that sends the given bytes as the message and reads the answer as bytes.
#[derive(Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; buf.remaining()];
        buf.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

const UNARY: &[&str] = &[
    "/repdist.reporting.v1.ReportingStream/ManageSubscription",
    "/repdist.reporting.v1.ReportingStream/GetDeliveryStatus",
    "/repdist.reporting.v1.DistributionQuery/GetStats",
    "/repdist.reporting.v1.DistributionQuery/ListDeliveriesOfReport",
    "/repdist.reporting.v1.DistributionQuery/ListSubscriptions",
    "/repdist.reporting.v1.DistributionQuery/ListDeadLetters",
];
const STREAMING: &[&str] =
    &["/repdist.reporting.v1.ReportingStream/StreamReports", "/repdist.reporting.v1.DistributionQuery/WatchStats"];

/// Statuses that blame the request or its target, never the server.
const CLIENT_ERRORS: &[Code] =
    &[Code::InvalidArgument, Code::NotFound, Code::AlreadyExists, Code::FailedPrecondition, Code::OutOfRange];

/// A success, or a client error; `INVALID_ARGUMENT` names the field.
fn check(answer: Result<(), Status>, what: &str) -> Result<(), TestCaseError> {
    let Err(status) = answer else { return Ok(()) };
    prop_assert!(CLIENT_ERRORS.contains(&status.code()), "{what}: {:?} {}", status.code(), status.message());
    if status.code() == Code::InvalidArgument {
        let field = status.metadata().get("field").and_then(|v| v.to_str().ok()).unwrap_or_default();
        prop_assert!(!field.is_empty(), "{what}: INVALID_ARGUMENT without a field: {}", status.message());
    }
    Ok(())
}

/// Calls `path` with `bytes` as the request message, as an admin (`key`), so that only the
/// message decides the answer.
async fn raw_call(key: &str, channel: Channel, path: &'static str, bytes: Vec<u8>) -> Result<(), Status> {
    let mut request = tonic::Request::new(bytes);
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().expect("ASCII"));
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let path = PathAndQuery::from_static(path);
    if STREAMING.contains(&path.as_str()) {
        // The first answer decides: an error status, or an open stream (dropped here).
        grpc.server_streaming(request, path, RawCodec).await.map(drop)
    } else {
        grpc.unary(request, path, RawCodec).await.map(drop)
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(RunnerConfig { cases, failure_persistence: None, ..RunnerConfig::default() })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Still serving after the run: the server survived everything it was sent.
async fn still_serving(server: &TestServer) {
    let stats = server.query().await.get_stats(proto::GetStatsRequest {}).await;
    assert!(stats.is_ok(), "the server answers after the run: {stats:?}");
}

#[test]
fn arbitrary_bytes_as_any_request_are_refused_as_invalid_argument_never_internal() {
    let rt = runtime();
    let server = rt.block_on(TestServer::start());
    let channel = rt.block_on(server.channel());
    let methods: Vec<&'static str> = UNARY.iter().chain(STREAMING).copied().collect();
    let strategy = (prop::sample::select(methods), prop::collection::vec(any::<u8>(), 0..96));
    runner(384)
        .run(&strategy, |(path, bytes)| check(rt.block_on(raw_call(&server.key, channel.clone(), path, bytes.clone())), path))
        .unwrap();

    // Bytes that are not protobuf at all, and a string field that is not UTF-8, each named.
    let answer = rt.block_on(raw_call(&server.key, channel.clone(), UNARY[1], vec![0x0f]));
    let status = answer.expect_err("not protobuf");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let answer = rt.block_on(raw_call(&server.key, channel.clone(), UNARY[1], vec![0x0a, 0x02, 0xff, 0xfe]));
    let status = answer.expect_err("delivery_id is not UTF-8");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.metadata().get("field").and_then(|v| v.to_str().ok()), Some("delivery_id"), "{status:?}");
    rt.block_on(still_serving(&server));
    rt.block_on(async move { drop(server) });
}

/// A JSON value of any shape, small.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `value` with the `pick`-th of its parts (depth first) replaced by `replacement`.
fn replace_part(mut value: Value, pick: usize, replacement: Value) -> Value {
    fn pointers(value: &Value, prefix: String, out: &mut Vec<String>) {
        let children: Vec<(String, &Value)> = match value {
            Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
            Value::Array(items) => items.iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect(),
            _ => Vec::new(),
        };
        for (key, child) in children {
            let pointer = format!("{prefix}/{key}");
            out.push(pointer.clone());
            pointers(child, pointer, out);
        }
    }
    let mut all = Vec::new();
    pointers(&value, String::new(), &mut all);
    if let Some(pointer) = all.get(pick % all.len().max(1)) {
        *value.pointer_mut(pointer).expect("a listed pointer") = replacement;
    }
    value
}

/// `subscription_json` values: valid, broken in one place, any JSON, any text.
fn subscription_json() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(dashboard_subscription("prop-sub", "prop-client").to_string()),
        (any::<usize>(), any_json())
            .prop_map(|(pick, replacement)| replace_part(dashboard_subscription("prop-sub", "prop-client"), pick, replacement).to_string()),
        any_json().prop_map(|v| v.to_string()),
        ".{0,40}",
    ]
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), Just("prop-sub".to_string()), "[a-z_0-9-]{1,12}", ".{0,24}"]
}

#[derive(Debug, Clone)]
enum Call {
    Manage(proto::SubscriptionRequest),
    Stream(proto::StreamRequest),
    Status(proto::DeliveryStatusRequest),
    Subscriptions(proto::ListSubscriptionsRequest),
    DeadLetters(proto::ListDeadLettersRequest),
    DeliveriesOf(proto::ListDeliveriesOfReportRequest),
}

fn any_call() -> impl Strategy<Value = Call> {
    let action = prop_oneof![0..7i32, any::<i32>()];
    let report_type = prop_oneof![0..8i32, any::<i32>()];
    prop_oneof![
        (action, any_text(), subscription_json()).prop_map(|(action, subscription_id, subscription_json)| {
            Call::Manage(proto::SubscriptionRequest { action, subscription_id, subscription_json })
        }),
        (any_text(), prop::collection::vec(report_type, 0..4), prop::option::of(any::<u64>())).prop_map(
            |(subscription_id, report_types, after_sequence)| {
                Call::Stream(proto::StreamRequest { subscription_id, report_types, after_sequence })
            }
        ),
        any_text().prop_map(|delivery_id| Call::Status(proto::DeliveryStatusRequest { delivery_id })),
        (any_text(), any::<bool>()).prop_map(|(subscriber_id, include_inactive)| {
            Call::Subscriptions(proto::ListSubscriptionsRequest { subscriber_id, include_inactive })
        }),
        (any::<u32>(), any_text()).prop_map(|(limit, after)| Call::DeadLetters(proto::ListDeadLettersRequest { limit, after })),
        any_text().prop_map(|event_id| Call::DeliveriesOf(proto::ListDeliveriesOfReportRequest { event_id })),
    ]
}

async fn typed_call(server: &TestServer, call: Call) -> Result<(), Status> {
    match call {
        Call::Manage(request) => server.reporting().await.manage_subscription(request).await.map(drop),
        Call::Stream(request) => server.reporting().await.stream_reports(request).await.map(drop),
        Call::Status(request) => server.reporting().await.get_delivery_status(request).await.map(drop),
        Call::Subscriptions(request) => server.query().await.list_subscriptions(request).await.map(drop),
        Call::DeadLetters(request) => server.query().await.list_dead_letters(request).await.map(drop),
        Call::DeliveriesOf(request) => server.query().await.list_deliveries_of_report(request).await.map(drop),
    }
}

#[test]
fn arbitrary_field_values_are_served_or_refused_naming_the_field() {
    let rt = runtime();
    let server = rt.block_on(TestServer::start());
    runner(384)
        .run(&any_call(), |call| {
            let what = format!("{call:?}");
            check(rt.block_on(typed_call(&server, call)), &what)
        })
        .unwrap();

    // Some known refusals, each naming its field.
    let cases = [
        (Call::Manage(proto::SubscriptionRequest { action: 99, ..Default::default() }), "action"),
        (
            Call::Manage(proto::SubscriptionRequest {
                action: SubscriptionAction::Create as i32,
                subscription_json: "{\"subscriber_id\": 7}".into(),
                ..Default::default()
            }),
            "subscriber_id",
        ),
        (Call::Stream(proto::StreamRequest { report_types: vec![99], ..Default::default() }), "report_types[0]"),
        (Call::Status(proto::DeliveryStatusRequest::default()), "delivery_id"),
    ];
    for (call, field) in cases {
        let status = rt.block_on(typed_call(&server, call.clone())).expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{call:?}: {status:?}");
        assert_eq!(status.metadata().get("field").and_then(|v| v.to_str().ok()), Some(field), "{call:?}: {status:?}");
    }
    rt.block_on(still_serving(&server));
    rt.block_on(async move { drop(server) });
}
