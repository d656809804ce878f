//! `StreamReports`' response stream: a hub attachment as `ReportMessage`s. The gap (if any) and
//! the buffered backlog come first, then live updates; a client whose queue overflowed gets
//! `ABORTED` (with the last sequence it was sent, to resume after), and shutdown ends the stream.

use std::collections::VecDeque;
use std::pin::Pin;

use dataflows::delivery::DeliveryState;
use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::messages;
use super::proto;
use crate::runtime::clock::to_datetime;
use crate::runtime::hub::update::Change;
use crate::runtime::hub::{Attachment, HubMessage};

pub type ReportStream = Pin<Box<dyn Stream<Item = Result<proto::ReportMessage, Status>> + Send>>;

struct State {
    first: VecDeque<proto::ReportMessage>,
    attachment: Attachment,
    shutdown: CancellationToken,
    last_sent: Option<u64>,
    done: bool,
}

pub fn stream(attachment: Attachment, shutdown: CancellationToken) -> ReportStream {
    let mut first = VecDeque::new();
    let epoch = attachment.hello.epoch;
    if let Some(gap) = attachment.gap {
        first.push_back(proto::ReportMessage {
            kind: proto::UpdateKind::Gap as i32,
            gap: Some(proto::Gap { from_sequence: gap.from, to_sequence: gap.to }),
            epoch,
            ..Default::default()
        });
    }
    first.extend(attachment.backlog.iter().map(|m| report_message(m)));
    let last_sent = attachment.backlog.last().map(|m| m.seq);
    let state = State { first, attachment, shutdown, last_sent, done: false };
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        if let Some(message) = state.first.pop_front() {
            return Some((Ok(message), state));
        }
        if state.done {
            return None;
        }
        tokio::select! {
            biased;
            _ = state.attachment.kicked.cancelled() => {
                state.done = true;
                let after = state.last_sent.map_or("the last sequence you received".to_string(), |s| s.to_string());
                let status = Status::aborted(format!("fell behind: more than the client queue of updates waited; resume with after_sequence = {after}"));
                Some((Err(status), state))
            }
            _ = state.shutdown.cancelled() => None,
            _ = state.attachment.closed.cancelled() => None,
            message = state.attachment.live.recv() => {
                let message = message?;
                state.last_sent = Some(message.seq);
                Some((Ok(report_message(&message)), state))
            }
        }
    }))
}

/// The protobuf form of a hub message (built per stream; the hub shares the data, not the bytes).
pub fn report_message(message: &HubMessage) -> proto::ReportMessage {
    let update = &message.update;
    let mut out = proto::ReportMessage {
        sequence: message.seq,
        subscription_id: update.subscription_id.to_string(),
        subscriber_id: update.subscriber_id.clone(),
        report_type: messages::report_type(update.report_type.as_str()),
        report_id: update.report_id.clone(),
        event_id: update.event_id.clone(),
        epoch: message.epoch,
        at: messages::timestamp(to_datetime(update.at)),
        ..Default::default()
    };
    match &update.change {
        Change::Report { deliveries, report } => {
            out.kind = proto::UpdateKind::Report as i32;
            out.report_json = report.get().to_string();
            out.deliveries = deliveries
                .iter()
                .map(|(id, channel)| proto::DeliveryRef { delivery_id: id.clone(), channel: messages::channel(channel.as_str()) })
                .collect();
        }
        Change::Delivery { delivery_id, channel, status, attempt, error, next_attempt_at } => {
            out.kind = proto::UpdateKind::Delivery as i32;
            out.delivery_id = delivery_id.clone();
            out.delivery = Some(proto::DeliveryChange {
                channel: messages::channel(channel.as_str()),
                status: DeliveryState::as_str(*status).to_string(),
                attempt: *attempt,
                error: error.clone(),
                next_attempt_at: next_attempt_at.map(|t| messages::timestamp(to_datetime(t))),
            });
        }
    }
    out
}
