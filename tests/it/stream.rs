//! The WebSocket update stream: what a client receives, resuming with `last_seq` (without a gap,
//! and past the replay buffer with an explicit gap), report-type filtering, and a client that stops
//! reading being closed with 4008 while another keeps receiving.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{report, TestServer};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Long enough to never fire on a working server; a test that hits it has failed anyway.
const WAIT: Duration = Duration::from_secs(20);

fn subscription(id: &str, subscriber: &str, report_types: &[&str]) -> Value {
    json!({
        "subscription_id": id,
        "subscriber_id": subscriber,
        "report_types": report_types,
        "delivery_preferences": {"channels": ["DASHBOARD_NOTIFICATION"], "notification_settings": {"dashboard": {}}}
    })
}

fn typed_report(event_id: &str, report_id: &str, report_type: &str) -> Value {
    let mut body = report(event_id, report_id);
    body["data_type"] = json!(report_type);
    body["report_data"]["report_type"] = json!(report_type);
    body
}

/// The stream's URL with the admin key as the `token` query parameter (as a browser sends it).
fn url(server: &TestServer, query: &str) -> String {
    format!("ws://{}/api/v1/reporting/stream?{query}&token={}", server.server.http_addr(), server.key)
}

/// Connects and waits for the `hello`, after which the client is attached to the hub.
async fn connect(server: &TestServer, query: &str) -> (Socket, Value) {
    let (mut socket, _) = tokio_tungstenite::connect_async(url(server, query)).await.expect("websocket connects");
    let hello = next_json(&mut socket).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    (socket, hello)
}

/// The next text frame as JSON (pings are answered by the client library and skipped here).
async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next()).await.expect("a frame in time").expect("open").expect("readable");
        match frame {
            Message::Text(text) => return serde_json::from_str(text.as_str()).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Reads until the DELIVERED update of `report_id`, returning every message read (that one included).
async fn read_until_delivered(socket: &mut Socket, report_id: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let message = next_json(socket).await;
        let done = message["type"] == "delivery" && message["report_id"] == report_id && message["status"] == "DELIVERED";
        seen.push(message);
        if done {
            return seen;
        }
    }
}

fn seqs(messages: &[Value]) -> Vec<u64> {
    messages.iter().filter_map(|m| m["seq"].as_u64()).collect()
}

fn assert_increasing(seqs: &[u64]) {
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "sequence numbers must increase: {seqs:?}");
}

#[tokio::test]
async fn a_client_gets_the_report_then_its_delivery_state_and_resumes_without_a_gap() {
    let server = TestServer::start().await;
    server.subscribe(subscription("dash-1", "pm_001", &["PERFORMANCE_REPORT"])).await;
    let (mut socket, hello) = connect(&server, "subscription_id=dash-1").await;
    assert!(hello["epoch"].as_u64().unwrap() > 0);

    let ids = server.deliver(report("evt-1", "rep-1")).await;
    let first = read_until_delivered(&mut socket, "rep-1").await;
    assert_eq!(first.len(), 2, "{first:?}");
    let report_update = &first[0];
    assert_eq!(report_update["type"], "report");
    assert_eq!(report_update["subscription_id"], "dash-1");
    assert_eq!(report_update["subscriber_id"], "pm_001");
    assert_eq!(report_update["report"]["event_id"], "evt-1");
    assert_eq!(report_update["report_type"], "PERFORMANCE_REPORT");
    assert_eq!(report_update["deliveries"], json!([{"delivery_id": ids[0], "channel": "DASHBOARD_NOTIFICATION"}]));
    assert_eq!(first[1]["delivery_id"], ids[0].as_str());
    assert_eq!(first[1]["attempt"], 1);
    assert_eq!(report_update["epoch"], hello["epoch"]);
    assert_increasing(&seqs(&first));
    let last_seq = first[1]["seq"].as_u64().unwrap();
    assert!(last_seq > hello["head_seq"].as_u64().unwrap());
    drop(socket);

    // Published while the client is away; it resumes from the buffer. (Each report delivered
    // before the next is published, so their updates come in this order.)
    for (event, rep) in [("evt-2", "rep-2"), ("evt-3", "rep-3")] {
        let ids = server.deliver(report(event, rep)).await;
        server.wait_for_state(&ids[0], "DELIVERED").await;
    }
    let (mut socket, _) = connect(&server, &format!("subscription_id=dash-1&last_seq={last_seq}")).await;
    let mut resumed = read_until_delivered(&mut socket, "rep-2").await;
    resumed.extend(read_until_delivered(&mut socket, "rep-3").await);
    assert!(resumed.iter().all(|m| m["type"] != "gap"), "{resumed:?}");
    let kinds: Vec<(String, String)> = resumed
        .iter()
        .map(|m| (m["report_id"].as_str().unwrap().to_string(), m["type"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        kinds,
        [("rep-2", "report"), ("rep-2", "delivery"), ("rep-3", "report"), ("rep-3", "delivery")]
            .map(|(r, k)| (r.to_string(), k.to_string()))
    );
    let resumed_seqs = seqs(&resumed);
    assert_increasing(&resumed_seqs);
    assert!(resumed_seqs[0] > last_seq);

    // A resume point the server never gave out is refused before the upgrade, naming the field.
    let (status, body) = server.get(&format!("/api/v1/reporting/stream?subscription_id=dash-1&last_seq={}", u64::MAX)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "last_seq");
}

#[tokio::test]
async fn resuming_past_the_replay_buffer_is_told_as_a_gap() {
    let server = TestServer::start_with(|config| config.stream.replay_buffer = 3).await;
    server.subscribe(subscription("dash-1", "pm_001", &["PERFORMANCE_REPORT"])).await;
    let (mut socket, _) = connect(&server, "subscription_id=dash-1").await;
    server.deliver(report("evt-1", "rep-1")).await;
    let first = read_until_delivered(&mut socket, "rep-1").await;
    let last_seq = first.last().unwrap()["seq"].as_u64().unwrap();
    drop(socket);

    // Six more messages for dash-1; the buffer keeps three.
    for i in 2..=4 {
        let ids = server.deliver(report(&format!("evt-{i}"), &format!("rep-{i}"))).await;
        server.wait_for_state(&ids[0], "DELIVERED").await;
    }
    // A live client sees rep-4 fully published before the resume below.
    let (mut watcher, _) = connect(&server, "subscription_id=dash-1").await;
    let ids = server.deliver(report("evt-5", "rep-5")).await;
    read_until_delivered(&mut watcher, "rep-5").await;
    assert_eq!(ids.len(), 1);

    let (mut socket, hello) = connect(&server, &format!("subscription_id=dash-1&last_seq={last_seq}")).await;
    let gap = next_json(&mut socket).await;
    assert_eq!(gap["type"], "gap", "{gap}");
    assert_eq!(gap["from"].as_u64().unwrap(), last_seq + 1);
    let to = gap["to"].as_u64().unwrap();
    assert!(to > last_seq, "{gap}");
    assert_eq!(hello["oldest_seq"].as_u64().unwrap(), to + 1, "the gap ends where the buffer starts: {hello}");
    let rest = read_until_delivered(&mut socket, "rep-5").await;
    let rest_seqs = seqs(&rest);
    assert_increasing(&rest_seqs);
    assert!(rest_seqs[0] > to, "{rest:?}");
    assert!(rest.iter().all(|m| m["type"] != "gap"));
}

#[tokio::test]
async fn a_client_gets_only_its_subscription_and_the_report_types_it_asked_for() {
    let server = TestServer::start().await;
    server.subscribe(subscription("dash-both", "pm_001", &["PERFORMANCE_REPORT", "RISK_REPORT"])).await;
    server.subscribe(subscription("dash-risk", "pm_002", &["RISK_REPORT"])).await;
    let (mut risk_only, _) = connect(&server, "subscription_id=dash-both&report_types=RISK_REPORT").await;
    let (mut everything, _) = connect(&server, "subscription_id=dash-both").await;
    let (mut other, _) = connect(&server, "subscription_id=dash-risk").await;

    // The performance report is fully announced before the risk report is even accepted, so a
    // client that would receive it would receive it first.
    let ids = server.deliver(typed_report("evt-p", "rep-p", "PERFORMANCE_REPORT")).await;
    assert_eq!(ids.len(), 1);
    let performance = read_until_delivered(&mut everything, "rep-p").await;
    assert_eq!(performance.len(), 2);
    let ids = server.deliver(typed_report("evt-r", "rep-r", "RISK_REPORT")).await;
    assert_eq!(ids.len(), 2);

    let filtered = read_until_delivered(&mut risk_only, "rep-r").await;
    assert_eq!(filtered.len(), 2, "{filtered:?}");
    assert!(filtered.iter().all(|m| m["report_type"] == "RISK_REPORT" && m["subscription_id"] == "dash-both"), "{filtered:?}");
    let unfiltered = read_until_delivered(&mut everything, "rep-r").await;
    assert_eq!(unfiltered.len(), 2, "{unfiltered:?}");
    let others = read_until_delivered(&mut other, "rep-r").await;
    assert_eq!(others.len(), 2, "{others:?}");
    assert!(others.iter().all(|m| m["subscription_id"] == "dash-risk" && m["subscriber_id"] == "pm_002"), "{others:?}");
    // Both subscriptions' deliveries of the risk report, each seen only by its own clients.
    assert_ne!(others[1]["delivery_id"], unfiltered[1]["delivery_id"]);
}

/// A report whose updates are large (its file path is), so that a few fill a client's socket.
fn large_report(i: usize) -> Value {
    let mut body = report(&format!("evt-big-{i}"), &format!("rep-big-{i}"));
    body["report_data"]["file_path"] = json!(format!("/reports/{}", "x".repeat(256 * 1024)));
    body
}

/// A client socket with a small receive buffer, so that it fills after a few messages when the
/// client stops reading.
async fn connect_small(server: &TestServer, query: &str) -> Socket {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.server.http_addr()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(url(server, query), tokio_tungstenite::MaybeTlsStream::Plain(stream))
        .await
        .expect("websocket connects");
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    ws
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_4008_others_keep_receiving_and_it_resumes() {
    let server = TestServer::start_with(|config| {
        config.stream.client_queue = 4;
        // The slow client sends nothing while it is not reading; it must be closed for its queue,
        // not for idleness, however slowly this machine publishes.
        config.stream.idle_timeout = Duration::from_secs(600);
    })
    .await;
    server.subscribe(subscription("dash-1", "pm_001", &["PERFORMANCE_REPORT"])).await;
    let mut slow = connect_small(&server, "subscription_id=dash-1").await;
    let (mut fast, _) = connect(&server, "subscription_id=dash-1").await;
    let hub = server.server.runtime().hub().clone();

    // Publish until the hub has given up on the slow client; the fast one reads everything meanwhile.
    let mut fast_seen = Vec::new();
    let mut published = 0;
    while hub.kicked_total() == 0 {
        assert!(published < 200, "the slow client was never closed");
        server.deliver(large_report(published)).await;
        fast_seen.extend(read_until_delivered(&mut fast, &format!("rep-big-{published}")).await);
        published += 1;
    }
    // One more after the kick: the fast client is still served.
    server.deliver(large_report(published)).await;
    fast_seen.extend(read_until_delivered(&mut fast, &format!("rep-big-{published}")).await);
    published += 1;
    assert_eq!(fast_seen.len(), 2 * published, "the fast client got every update");
    assert_increasing(&seqs(&fast_seen));

    // The slow client reads again: what was already on its way, then the close frame.
    let mut slow_seen = Vec::new();
    let close = loop {
        let frame = tokio::time::timeout(WAIT, slow.next()).await.expect("a frame in time").expect("open").expect("readable");
        match frame {
            Message::Text(text) => slow_seen.push(serde_json::from_str::<Value>(text.as_str()).unwrap()),
            Message::Close(frame) => break frame.expect("a close frame with a code"),
            _ => {}
        }
    };
    assert_eq!(close.code, CloseCode::from(4008), "{close:?}");
    assert!(close.reason.contains("last_seq"), "{close:?}");
    assert!(slow_seen.len() < fast_seen.len(), "the slow client cannot have had everything");
    assert_eq!(seqs(&slow_seen), seqs(&fast_seen)[..slow_seen.len()], "what it got, it got in order and complete");

    // It resumes after the last message it got and receives the rest, without a gap.
    let last_seq = slow_seen.last().map(|m| m["seq"].as_u64().unwrap()).expect("the slow client got something first");
    let (mut resumed, _) = connect(&server, &format!("subscription_id=dash-1&last_seq={last_seq}")).await;
    let rest = read_until_delivered(&mut resumed, &format!("rep-big-{}", published - 1)).await;
    assert!(rest.iter().all(|m| m["type"] != "gap"));
    let mut all = seqs(&slow_seen);
    all.extend(seqs(&rest));
    assert_eq!(all, seqs(&fast_seen), "nothing missed, nothing twice");
}
