//! The replay buffer: the most recent messages of every stream in one bounded ring, indexed by
//! subscription and by report type, so a client reconnecting with the last `seq` it saw is sent
//! exactly what it missed, or told which range of sequence numbers it can no longer get.
//!
//! Sequence numbers are dense within a server run (one per message, all subscriptions together),
//! so a message's place in the ring is `seq - oldest`. Per key, `lost_upto` remembers the newest
//! message of that key that left the ring (or, for a key first seen after some messages had
//! already left, the newest message that had left then: they might have been this key's).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use dataflows::report::ReportDataType;

use super::HubMessage;

/// Sequence numbers `from..=to` may have held messages for the stream that will never be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub from: u64,
    pub to: u64,
}

/// What a resuming client is owed.
#[derive(Debug, Default)]
pub struct Missed {
    pub gap: Option<Gap>,
    /// Buffered messages after the client's `last_seq`, in order (not yet filtered by report type).
    pub messages: Vec<Arc<HubMessage>>,
}

#[derive(Debug, Default)]
struct Trail {
    /// Sequence numbers of this key's messages still in the ring, oldest first.
    seqs: VecDeque<u64>,
    lost_upto: u64,
}

/// Which messages a stream follows: one subscription, or report types across subscriptions.
#[derive(Clone, Copy, Debug)]
pub enum Key<'a> {
    Subscription(&'a str),
    ReportType(ReportDataType),
}

pub struct ReplayBuffer {
    capacity: usize,
    ring: VecDeque<Arc<HubMessage>>,
    by_subscription: HashMap<Arc<str>, Trail>,
    by_type: [Trail; 6],
    /// The newest sequence number no longer in the ring (before this run: the run's first - 1).
    lost_upto: u64,
}

fn type_index(t: ReportDataType) -> usize {
    ReportDataType::ALL.iter().position(|x| *x == t).unwrap_or(0)
}

impl ReplayBuffer {
    /// `first_seq` is the first number this run will give; anything before it is from an earlier
    /// run and counts as lost.
    pub fn new(capacity: usize, first_seq: u64) -> ReplayBuffer {
        let lost_upto = first_seq.saturating_sub(1);
        let by_type = std::array::from_fn(|_| Trail { seqs: VecDeque::new(), lost_upto });
        ReplayBuffer { capacity, ring: VecDeque::with_capacity(capacity.min(1 << 16)), by_subscription: HashMap::new(), by_type, lost_upto }
    }

    /// The oldest sequence number still held (`None` when empty).
    pub fn oldest(&self) -> Option<u64> {
        self.ring.front().map(|m| m.seq)
    }

    /// Appends the next message (its `seq` one past the previous one) and evicts past capacity.
    pub fn push(&mut self, message: Arc<HubMessage>) {
        debug_assert!(self.ring.back().is_none_or(|last| last.seq + 1 == message.seq));
        let lost_upto = self.lost_upto;
        self.by_subscription
            .entry(message.update.subscription_id.clone())
            .or_insert_with(|| Trail { seqs: VecDeque::new(), lost_upto })
            .seqs
            .push_back(message.seq);
        self.by_type[type_index(message.update.report_type)].seqs.push_back(message.seq);
        self.ring.push_back(message);
        while self.ring.len() > self.capacity {
            let Some(old) = self.ring.pop_front() else { break };
            self.lost_upto = old.seq;
            let subscription = &old.update.subscription_id;
            if let Some(trail) = self.by_subscription.get_mut(subscription) {
                trail.seqs.pop_front();
                trail.lost_upto = old.seq;
                if trail.seqs.is_empty() {
                    // Forgetting the key is safe: a later lookup falls back to the ring-wide
                    // `lost_upto`, which is at least this one.
                    self.by_subscription.remove(subscription);
                }
            }
            let trail = &mut self.by_type[type_index(old.update.report_type)];
            trail.seqs.pop_front();
            trail.lost_upto = old.seq;
        }
    }

    /// What a client of `keys` that last saw `last_seq` has missed (the keys' messages are
    /// disjoint: one subscription, or distinct report types).
    pub fn missed_since(&self, keys: &[Key<'_>], last_seq: u64) -> Missed {
        let mut missed = Missed::default();
        let mut lost_upto = 0;
        let mut seqs: Vec<u64> = Vec::new();
        for key in keys {
            let trail = match key {
                Key::Subscription(id) => self.by_subscription.get(*id),
                Key::ReportType(t) => Some(&self.by_type[type_index(*t)]),
            };
            match trail {
                Some(trail) => {
                    lost_upto = lost_upto.max(trail.lost_upto);
                    let after = trail.seqs.partition_point(|&s| s <= last_seq);
                    seqs.extend(trail.seqs.range(after..));
                }
                None => lost_upto = lost_upto.max(self.lost_upto),
            }
        }
        if last_seq < lost_upto {
            missed.gap = Some(Gap { from: last_seq + 1, to: lost_upto });
        }
        if keys.len() > 1 {
            seqs.sort_unstable();
        }
        if let Some(oldest) = self.oldest() {
            missed.messages = seqs.into_iter().filter_map(|s| self.ring.get((s - oldest) as usize).cloned()).collect();
        }
        missed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::hub::update::{Change, Update};
    use dataflows::delivery::{DeliveryChannel, DeliveryState};

    fn message(seq: u64, subscription: &str, report_type: ReportDataType) -> Arc<HubMessage> {
        let update = Update {
            subscription_id: Arc::from(subscription),
            subscriber_id: "s".into(),
            event_id: format!("e{seq}"),
            report_id: format!("r{seq}"),
            report_type,
            at: 0,
            change: Change::Delivery {
                delivery_id: format!("d{seq}"),
                channel: DeliveryChannel::DashboardNotification,
                status: DeliveryState::Delivered,
                attempt: 1,
                error: None,
                next_attempt_at: None,
            },
        };
        Arc::new(HubMessage { seq, epoch: 100, text: update.to_text(seq, 100), update })
    }

    fn seqs(missed: &Missed) -> Vec<u64> {
        missed.messages.iter().map(|m| m.seq).collect()
    }

    const PERF: ReportDataType = ReportDataType::PerformanceReport;
    const RISK: ReportDataType = ReportDataType::RiskReport;

    #[test]
    fn a_client_gets_exactly_its_messages_after_last_seq() {
        let mut buffer = ReplayBuffer::new(10, 100);
        for (seq, sub, t) in [(100, "a", PERF), (101, "b", PERF), (102, "a", RISK), (103, "a", PERF)] {
            buffer.push(message(seq, sub, t));
        }
        let missed = buffer.missed_since(&[Key::Subscription("a")], 100);
        assert_eq!(missed.gap, None);
        assert_eq!(seqs(&missed), vec![102, 103]);
        assert_eq!(seqs(&buffer.missed_since(&[Key::Subscription("a")], 103)), Vec::<u64>::new());
        let by_type = buffer.missed_since(&[Key::ReportType(RISK), Key::ReportType(PERF)], 99);
        assert_eq!(by_type.gap, None);
        assert_eq!(seqs(&by_type), vec![100, 101, 102, 103]);
        // A client of this run that saw nothing yet: first - 1.
        assert_eq!(buffer.missed_since(&[Key::Subscription("nobody")], 99).gap, None);
    }

    #[test]
    fn evicted_messages_of_the_key_are_a_gap_and_others_are_not() {
        let mut buffer = ReplayBuffer::new(3, 100);
        for (seq, sub) in [(100, "a"), (101, "b"), (102, "b"), (103, "b"), (104, "a")] {
            buffer.push(message(seq, sub, PERF));
        }
        // 100 and 101 are gone; 100 was a's.
        let missed = buffer.missed_since(&[Key::Subscription("a")], 99);
        assert_eq!(missed.gap, Some(Gap { from: 100, to: 100 }));
        assert_eq!(seqs(&missed), vec![104]);
        // b saw 101: nothing of b's after it is gone.
        let missed = buffer.missed_since(&[Key::Subscription("b")], 101);
        assert_eq!(missed.gap, None);
        assert_eq!(seqs(&missed), vec![102, 103]);
        // b from before the run's start: an earlier run's messages are gone.
        assert_eq!(buffer.missed_since(&[Key::Subscription("b")], 50).gap, Some(Gap { from: 51, to: 101 }));
        // A key with nothing buffered falls back to the ring-wide horizon.
        assert_eq!(buffer.missed_since(&[Key::Subscription("c")], 99).gap, Some(Gap { from: 100, to: 101 }));
        assert_eq!(buffer.missed_since(&[Key::Subscription("c")], 101).gap, None);
    }

    #[test]
    fn the_ring_never_holds_more_than_its_capacity() {
        let mut buffer = ReplayBuffer::new(4, 1);
        for seq in 1..=1000 {
            buffer.push(message(seq, if seq % 2 == 0 { "a" } else { "b" }, PERF));
        }
        assert_eq!(buffer.ring.len(), 4);
        assert_eq!(buffer.oldest(), Some(997));
        assert!(buffer.by_subscription.values().map(|t| t.seqs.len()).sum::<usize>() == 4);
        assert_eq!(seqs(&buffer.missed_since(&[Key::Subscription("a")], 996)), vec![998, 1000]);
    }
}
