//! A `StreamReports` client that stops reading: HTTP/2 flow control stops the server's writes,
//! its bounded queue overflows, and it ends with `ABORTED` naming where to resume, while another
//! client on the same subscription keeps receiving everything. Resuming after the last sequence it
//! got fills the rest without a gap.

use std::time::Duration;

use repdist::grpc::proto;
use repdist::grpc::proto::reporting_stream_client::ReportingStreamClient;
use serde_json::{json, Value};
use tonic::transport::Endpoint;
use tonic::Code;

use crate::helpers::{dashboard_subscription, report, Bearer, TestServer};
use crate::{read_until_delivered, WAIT};

/// A report whose `REPORT` update is large (its file path is), so a few fill the client's window.
fn large_report(i: usize) -> Value {
    let mut body = report(&format!("evt-big-{i}"), &format!("rep-big-{i}"));
    body["report_data"]["file_path"] = json!(format!("/reports/{}", "x".repeat(256 * 1024)));
    body
}

fn request(after: Option<u64>) -> proto::StreamRequest {
    proto::StreamRequest { subscription_id: "dash-1".into(), report_types: vec![], after_sequence: after }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_aborted_others_keep_receiving_and_it_resumes() {
    let server = TestServer::start_with(|config| {
        config.stream.client_queue = 4;
        config.stream.idle_timeout = Duration::from_secs(600);
    })
    .await;
    server.create(dashboard_subscription("dash-1", "pm_001")).await;

    // The slow client's HTTP/2 windows are the protocol's minimum, so the server can only have a
    // few updates in flight to it before it must queue them.
    let slow_channel = Endpoint::from_shared(server.grpc_target())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("gRPC connects");
    let mut slow =
        ReportingStreamClient::with_interceptor(slow_channel, Bearer::new(&server.key)).stream_reports(request(None)).await.unwrap().into_inner();
    let mut fast = server.reporting().await.stream_reports(request(None)).await.unwrap().into_inner();
    let hub = server.server.runtime().hub().clone();

    // Publish until the hub has given up on the slow client; the fast one reads everything meanwhile.
    let mut fast_seen = Vec::new();
    let mut published = 0;
    while hub.kicked_total() == 0 {
        assert!(published < 200, "the slow client was never aborted");
        server.deliver(large_report(published)).await;
        fast_seen.extend(read_until_delivered(&mut fast, &format!("rep-big-{published}")).await);
        published += 1;
    }
    server.deliver(large_report(published)).await;
    fast_seen.extend(read_until_delivered(&mut fast, &format!("rep-big-{published}")).await);
    published += 1;
    assert_eq!(fast_seen.len(), 2 * published, "the fast client got every update");
    let fast_seqs: Vec<u64> = fast_seen.iter().map(|m| m.sequence).collect();
    assert!(fast_seqs.windows(2).all(|w| w[0] < w[1]), "{fast_seqs:?}");

    // The slow client reads again: what was already on its way, then ABORTED.
    let mut slow_seen = Vec::new();
    let status = loop {
        match tokio::time::timeout(WAIT, slow.message()).await.expect("a message in time") {
            Ok(Some(message)) => slow_seen.push(message.sequence),
            Ok(None) => panic!("the stream ended without a status after {} messages", slow_seen.len()),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.message().contains("after_sequence"), "{status:?}");
    assert!(slow_seen.len() < fast_seqs.len(), "the slow client cannot have had everything");
    assert_eq!(slow_seen, fast_seqs[..slow_seen.len()], "what it got, it got in order and complete");
    let last = *slow_seen.last().expect("the slow client got something first");
    assert!(status.message().contains(&last.to_string()), "the status names the last sequence sent: {status:?}");

    // It resumes after the last message it got and receives the rest, without a gap.
    let mut resumed = server.reporting().await.stream_reports(request(Some(last))).await.unwrap().into_inner();
    let rest = read_until_delivered(&mut resumed, &format!("rep-big-{}", published - 1)).await;
    assert!(rest.iter().all(|m| m.kind != proto::UpdateKind::Gap as i32));
    let mut all = slow_seen;
    all.extend(rest.iter().map(|m| m.sequence));
    assert_eq!(all, fast_seqs, "nothing missed, nothing twice");
}
