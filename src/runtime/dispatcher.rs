//! Turns due delivery tasks into sink requests and runs them, at most `max_in_flight` at once,
//! highest `delivery_priority` first. Each finished attempt goes back to the sequencer carrying its
//! in-flight permit, so attempts under way plus outcomes not yet consumed never exceed the limit.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dataflows::delivery::{AttemptResult, DeliveryTask};
use sinks::{SinkError, SinkRegistry};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

pub use super::render::render;

/// One attempt's end, on its way back to the sequencer.
#[derive(Debug)]
pub struct FinishedAttempt {
    pub task: DeliveryTask,
    pub result: AttemptResult,
    pub elapsed: Duration,
    /// Released when the sequencer has taken the outcome in.
    pub permit: OwnedSemaphorePermit,
}

/// Tasks waiting for an in-flight slot. Unbounded as a structure, bounded in practice by the
/// sequencer's admission control (`delivery.max_outstanding`): no report is admitted past it.
#[derive(Default)]
pub struct DispatchQueue {
    heap: Mutex<BinaryHeap<Queued>>,
    ready: Notify,
    sequence: std::sync::atomic::AtomicU64,
}

struct Queued {
    priority: i32,
    sequence: u64,
    task: DeliveryTask,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    /// Higher priority first; within a priority, first in first out.
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority.cmp(&other.priority).then_with(|| other.sequence.cmp(&self.sequence))
    }
}

impl DispatchQueue {
    pub fn push(&self, task: DeliveryTask) {
        let sequence = self.sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let queued = Queued { priority: task.priority(), sequence, task };
        if let Ok(mut heap) = self.heap.lock() {
            heap.push(queued);
        }
        self.ready.notify_one();
    }

    pub fn len(&self) -> usize {
        self.heap.lock().map(|h| h.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn pop(&self) -> Option<DeliveryTask> {
        self.heap.lock().ok().and_then(|mut heap| heap.pop()).map(|q| q.task)
    }

    async fn next(&self, shutdown: &CancellationToken) -> Option<DeliveryTask> {
        loop {
            let notified = self.ready.notified();
            if let Some(task) = self.pop() {
                return Some(task);
            }
            tokio::select! {
                _ = notified => {}
                _ = shutdown.cancelled() => return None,
            }
        }
    }
}

pub struct DispatcherConfig {
    pub max_in_flight: usize,
    pub attempt_timeout: Duration,
}

/// Runs until `shutdown`; then stops taking tasks and waits for the attempts under way.
/// Tasks still queued stay pending in the store and resume on the next start.
pub async fn run(
    queue: Arc<DispatchQueue>,
    sinks: Arc<SinkRegistry>,
    config: DispatcherConfig,
    finished: mpsc::Sender<FinishedAttempt>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(config.max_in_flight));
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            _ = shutdown.cancelled() => break,
        };
        let Some(task) = queue.next(&shutdown).await else { break };
        let sinks = sinks.clone();
        let finished = finished.clone();
        let timeout = config.attempt_timeout;
        in_flight.spawn(async move {
            let started = Instant::now();
            let result = attempt(&sinks, &task, timeout).await;
            let elapsed = started.elapsed();
            let _ = finished.send(FinishedAttempt { task, result, elapsed, permit }).await;
        });
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

async fn attempt(sinks: &SinkRegistry, task: &DeliveryTask, timeout: Duration) -> AttemptResult {
    let Some(sink) = sinks.get(task.channel.as_str()) else {
        return AttemptResult::Permanent { error: format!("no sink is configured for channel {}", task.channel.as_str()) };
    };
    let request = match render(task, timeout) {
        Ok(request) => request,
        Err(error) => return AttemptResult::Permanent { error },
    };
    // The sink enforces the timeout itself; this outer bound only guards against a sink that doesn't.
    match tokio::time::timeout(timeout + Duration::from_secs(1), sink.deliver(&request)).await {
        Ok(Ok(_receipt)) => AttemptResult::Delivered,
        Ok(Err(SinkError::Transient { reason, retry_after })) => {
            AttemptResult::Transient { error: reason, retry_after: retry_after.map(|d| d.as_micros() as u64) }
        }
        Ok(Err(SinkError::Permanent { reason })) => AttemptResult::Permanent { error: reason },
        Err(_) => AttemptResult::Transient { error: format!("timed out after {timeout:?}"), retry_after: None },
    }
}
