//! The live update hub behind the WebSocket stream and gRPC `StreamReports`.
//!
//! - **Published after durability.** The sequencer hands each committed batch to
//!   [`Hub::publish_commit`]; the hub turns it into `ReportUpdate`s (see [`update`]), numbers them
//!   (`seq`, one per message, all subscriptions together), serializes each once, keeps it in a
//!   bounded replay buffer and routes it.
//! - **Routing by key, not by scanning clients.** Clients are indexed by subscription (and, for
//!   gRPC streams selected by report type only, by report type), so a message costs one map lookup
//!   plus one queue push per client that wants it, however many clients are connected.
//! - **A slow client never slows anyone.** Each client has a bounded queue; a push that finds it
//!   full detaches the client and cancels its `kicked` token (the WebSocket closes with 4008), and
//!   the client resumes from the replay buffer with the last `seq` it saw.
//! - **Sequence numbers across restarts.** Each run starts numbering at the wall clock in
//!   microseconds (its `epoch`), so numbers keep increasing across a restart (unless the clock steps
//!   back); the buffer is memory only, so resuming across a restart is reported as a gap.

mod replay;
pub mod update;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use dataflows::delivery::DeliveryOutcome;
use dataflows::report::ReportDataType;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use crate::config::StreamConfig;
use crate::store::WriteBatch;
pub use replay::Gap;
use replay::{Key, ReplayBuffer};
use update::Update;

/// A numbered update: the data (for gRPC) and its WebSocket text (serialized once).
#[derive(Debug)]
pub struct HubMessage {
    pub seq: u64,
    pub epoch: u64,
    pub update: Update,
    pub text: Utf8Bytes,
}

/// What a client follows.
#[derive(Clone, Debug)]
pub enum Selection {
    /// One subscription's updates, optionally only of some report types (empty: all).
    Subscription { subscription_id: String, report_types: Vec<ReportDataType> },
    /// Every subscription's updates of these report types (gRPC only; at least one type).
    ReportTypes(Vec<ReportDataType>),
}

/// A resume point the hub never gave out.
#[derive(Debug, thiserror::Error)]
#[error("last_seq {requested} is ahead of this stream (its latest is {head}): not a sequence number this server issued")]
pub struct AheadOfStream {
    pub requested: u64,
    pub head: u64,
}

/// Where the stream stands when a client attaches: sent first, so a client knows it is attached
/// and, having seen no message yet, can still resume from `head_seq`.
#[derive(Clone, Copy, Debug)]
pub struct Hello {
    pub epoch: u64,
    /// The last number given out (`epoch - 1` before the first message of this run).
    pub head_seq: u64,
    /// The oldest message still in the replay buffer (`head_seq + 1` when it is empty).
    pub oldest_seq: u64,
}

/// A client's end of the hub. Dropping it detaches the client.
pub struct Attachment {
    pub hello: Hello,
    /// Set when the client asked to resume from a point whose messages are no longer buffered.
    pub gap: Option<Gap>,
    /// Buffered messages after the resume point, to send before `live`.
    pub backlog: Vec<Arc<HubMessage>>,
    /// Messages published from the moment of attaching on. Ends when the client is kicked or the
    /// hub closes.
    pub live: mpsc::Receiver<Arc<HubMessage>>,
    /// Cancelled when the client's queue overflowed (it was detached; it should resume).
    pub kicked: CancellationToken,
    /// Cancelled when the hub closes (server shutdown).
    pub closed: CancellationToken,
    _detach: Detach,
}

struct Client {
    id: u64,
    /// Report types the client wants; empty: all.
    report_types: Vec<ReportDataType>,
    queue: mpsc::Sender<Arc<HubMessage>>,
    kicked: CancellationToken,
}

impl Client {
    fn wants(&self, report_type: ReportDataType) -> bool {
        self.report_types.is_empty() || self.report_types.contains(&report_type)
    }
}

struct Routes {
    buffer: ReplayBuffer,
    /// The last sequence number inserted.
    head: u64,
    by_subscription: HashMap<Arc<str>, Vec<Client>>,
    by_type: HashMap<ReportDataType, Vec<Client>>,
    next_client: u64,
}

pub struct Hub {
    config: StreamConfig,
    epoch: u64,
    /// The next number to give out. Only publishers touch it, one at a time (`publishing`).
    next_seq: AtomicU64,
    /// Keeps publishers in sequence order while messages are serialized outside `routes`.
    publishing: Mutex<()>,
    routes: Mutex<Routes>,
    closed: CancellationToken,
    kicked_total: AtomicU64,
}

impl Hub {
    pub fn new(config: StreamConfig) -> Hub {
        let epoch = crate::runtime::clock::wall_micros().max(1);
        Hub {
            routes: Mutex::new(Routes {
                buffer: ReplayBuffer::new(config.replay_buffer, epoch),
                head: epoch - 1,
                by_subscription: HashMap::new(),
                by_type: HashMap::new(),
                next_client: 0,
            }),
            config,
            epoch,
            next_seq: AtomicU64::new(epoch),
            publishing: Mutex::new(()),
            closed: CancellationToken::new(),
            kicked_total: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &StreamConfig {
        &self.config
    }

    /// This run's first sequence number; it changes when the server restarts.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Clients detached so far because their queue overflowed.
    pub fn kicked_total(&self) -> u64 {
        self.kicked_total.load(Ordering::Relaxed)
    }

    /// Clients attached now.
    pub fn clients(&self) -> usize {
        let routes = self.routes();
        routes.by_subscription.values().map(Vec::len).sum::<usize>() + routes.by_type.values().map(Vec::len).sum::<usize>()
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        // A panic while holding the lock leaves plain data behind; carry on with it.
        self.routes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The last sequence number given out.
    pub fn head(&self) -> u64 {
        self.routes().head
    }

    /// Refuses a resume point the hub never gave out (checked before a WebSocket is upgraded, so
    /// the refusal can be a plain 422).
    pub fn check_resume(&self, last_seq: u64) -> Result<(), AheadOfStream> {
        let head = self.head();
        if last_seq > head {
            return Err(AheadOfStream { requested: last_seq, head });
        }
        Ok(())
    }

    /// Announces what a durable batch changed; called by the sequencer after each commit.
    pub fn publish_commit(&self, batch: &WriteBatch, outcomes: &[DeliveryOutcome]) {
        let updates = update::from_commit(batch, outcomes);
        if !updates.is_empty() {
            self.publish(updates);
        }
    }

    /// Numbers, serializes, buffers and routes `updates`, in order.
    pub fn publish(&self, updates: Vec<Update>) {
        let _publishing = self.publishing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let first = self.next_seq.fetch_add(updates.len() as u64, Ordering::Relaxed);
        // Serialized before taking the routing lock, so attaching clients never wait on JSON.
        let messages: Vec<Arc<HubMessage>> = updates
            .into_iter()
            .enumerate()
            .map(|(i, update)| {
                let seq = first + i as u64;
                Arc::new(HubMessage { seq, epoch: self.epoch, text: update.to_text(seq, self.epoch), update })
            })
            .collect();
        let mut kicked = 0;
        let mut routes = self.routes();
        for message in messages {
            routes.head = message.seq;
            let report_type = message.update.report_type;
            if let Some(clients) = routes.by_subscription.get_mut(&message.update.subscription_id) {
                kicked += offer(clients, &message, report_type);
                if clients.is_empty() {
                    routes.by_subscription.remove(&message.update.subscription_id);
                }
            }
            if let Some(clients) = routes.by_type.get_mut(&report_type) {
                kicked += offer(clients, &message, report_type);
            }
            routes.buffer.push(message);
        }
        drop(routes);
        if kicked > 0 {
            self.kicked_total.fetch_add(kicked, Ordering::Relaxed);
            metrics::counter!("repdist_stream_clients_kicked_total").increment(kicked);
        }
    }

    /// Attaches a client. With `last_seq`, it first gets what it missed since then (or a gap).
    pub fn attach(self: &Arc<Self>, selection: &Selection, last_seq: Option<u64>) -> Result<Attachment, AheadOfStream> {
        let (queue, live) = mpsc::channel(self.config.client_queue);
        let kicked = CancellationToken::new();
        let mut routes = self.routes();
        if let Some(last_seq) = last_seq {
            if last_seq > routes.head {
                return Err(AheadOfStream { requested: last_seq, head: routes.head });
            }
        }
        let id = routes.next_client;
        routes.next_client += 1;
        let (report_types, keys): (Vec<ReportDataType>, Vec<Key<'_>>) = match selection {
            Selection::Subscription { subscription_id, report_types } => {
                (report_types.clone(), vec![Key::Subscription(subscription_id.as_str())])
            }
            Selection::ReportTypes(types) => (Vec::new(), types.iter().map(|t| Key::ReportType(*t)).collect()),
        };
        let (gap, backlog) = match last_seq {
            Some(last_seq) => {
                let missed = routes.buffer.missed_since(&keys, last_seq);
                let backlog = missed.messages.into_iter().filter(|m| report_types.is_empty() || report_types.contains(&m.update.report_type)).collect();
                (missed.gap, backlog)
            }
            None => (None, Vec::new()),
        };
        let client = |report_types: Vec<ReportDataType>| Client { id, report_types, queue: queue.clone(), kicked: kicked.clone() };
        let detach = match selection {
            Selection::Subscription { subscription_id, report_types } => {
                let key: Arc<str> = Arc::from(subscription_id.as_str());
                routes.by_subscription.entry(key.clone()).or_default().push(client(report_types.clone()));
                Detach { hub: self.clone(), id, subscription: Some(key), report_types: Vec::new() }
            }
            Selection::ReportTypes(types) => {
                for t in types {
                    routes.by_type.entry(*t).or_default().push(client(Vec::new()));
                }
                Detach { hub: self.clone(), id, subscription: None, report_types: types.clone() }
            }
        };
        let hello = Hello {
            epoch: self.epoch,
            head_seq: routes.head,
            oldest_seq: routes.buffer.oldest().unwrap_or(routes.head + 1),
        };
        drop(routes);
        Ok(Attachment { hello, gap, backlog, live, kicked, closed: self.closed.clone(), _detach: detach })
    }

    /// Ends every client's stream (server shutdown).
    pub fn close(&self) {
        self.closed.cancel();
        let mut routes = self.routes();
        routes.by_subscription.clear();
        routes.by_type.clear();
    }
}

/// Pushes `message` to the clients that want it; detaches those whose queue is full (kicking
/// them) or gone. Returns how many were kicked.
fn offer(clients: &mut Vec<Client>, message: &Arc<HubMessage>, report_type: ReportDataType) -> u64 {
    let mut kicked = 0;
    clients.retain(|client| {
        if client.kicked.is_cancelled() {
            // Kicked through another of its report types already.
            return false;
        }
        if !client.wants(report_type) {
            return true;
        }
        match client.queue.try_send(message.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                client.kicked.cancel();
                kicked += 1;
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    });
    kicked
}

/// Removes a client from the routes when its stream ends, whatever ended it.
struct Detach {
    hub: Arc<Hub>,
    id: u64,
    subscription: Option<Arc<str>>,
    report_types: Vec<ReportDataType>,
}

impl Drop for Detach {
    fn drop(&mut self) {
        let mut routes = self.hub.routes();
        if let Some(key) = &self.subscription {
            if let Some(clients) = routes.by_subscription.get_mut(key) {
                clients.retain(|c| c.id != self.id);
                if clients.is_empty() {
                    routes.by_subscription.remove(key);
                }
            }
        }
        for t in &self.report_types {
            if let Some(clients) = routes.by_type.get_mut(t) {
                clients.retain(|c| c.id != self.id);
            }
        }
    }
}
