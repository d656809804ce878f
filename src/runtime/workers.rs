//! Timely workers on their own threads. The sequencer talks to them through one command queue per
//! worker; they answer with dataflow outputs and progress. Workers never block on the host: what
//! they emit is bounded by the sequencer's admission control (see `sequencer.rs`).

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::Duration;

use dataflows::dataflow::{Dataflow, DataflowConfig};
use dataflows::delivery::{DeliveryOutcome, DeliveryTask};
use dataflows::digest::DigestMember;
use dataflows::output::Output;
use dataflows::report::ReportDistribution;
use dataflows::subscription::ReportSubscription;
use dataflows::Time;
use tokio::sync::mpsc::UnboundedSender;

/// An input for one worker. Inputs carry no time: a worker inserts them at its current input time,
/// which the sequencer sets with `AdvanceTo` before and after.
#[derive(Debug)]
pub enum WorkerCommand {
    AdvanceTo(Time),
    Report(ReportDistribution),
    UpsertSubscription(ReportSubscription),
    RemoveSubscription(String),
    Outcome(DeliveryOutcome),
    Resume(DeliveryTask, Time),
    /// A digest member from the store, after a restart (see `Dataflow::resume_member`).
    ResumeMember(DigestMember),
    Shutdown,
}

#[derive(Debug)]
pub enum WorkerEvent {
    Output(Time, Output),
    /// All outputs for times before `frontier` have been sent by this worker (None: all done).
    Progress { worker: usize, frontier: Option<Time> },
    /// The worker stopped (on shutdown, or because the dataflow panicked).
    Stopped { worker: usize },
}

/// The sequencer's side of the workers.
pub struct Workers {
    senders: Vec<mpsc::Sender<WorkerCommand>>,
    threads: Vec<Thread>,
    guard: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkersError {
    #[error("could not start timely workers: {0}")]
    Start(String),
}

impl Workers {
    pub fn start(count: usize, config: DataflowConfig, events: UnboundedSender<WorkerEvent>) -> Result<Workers, WorkersError> {
        let mut senders = Vec::with_capacity(count);
        let mut receivers = Vec::with_capacity(count);
        for _ in 0..count {
            let (tx, rx) = mpsc::channel();
            senders.push(tx);
            receivers.push(Some(rx));
        }
        let receivers = Arc::new(Mutex::new(receivers));
        let (thread_tx, thread_rx) = mpsc::channel::<(usize, Thread)>();
        let timely_config = timely::Config::process(count);
        let guard = std::thread::Builder::new()
            .name("timely-root".into())
            .spawn(move || {
                let result = timely::execute(timely_config, move |worker| {
                    let index = worker.index();
                    let receiver = receivers.lock().ok().and_then(|mut r| r[index].take());
                    let Some(receiver) = receiver else { return };
                    let _ = thread_tx.send((index, std::thread::current()));
                    let out = events.clone();
                    let dataflow = dataflows::dataflow::build(worker, config.clone(), move |time, output| {
                        let _ = out.send(WorkerEvent::Output(time, output));
                    });
                    run_worker(worker, dataflow, receiver, index, &events);
                    let _ = events.send(WorkerEvent::Stopped { worker: index });
                });
                match result {
                    Ok(guards) => drop(guards.join()),
                    Err(e) => tracing::error!(error = %e, "timely workers failed to start"),
                }
            })
            .map_err(|e| WorkersError::Start(e.to_string()))?;
        let mut threads: Vec<Option<Thread>> = vec![None; count];
        for _ in 0..count {
            let (index, thread) = thread_rx
                .recv_timeout(Duration::from_secs(30))
                .map_err(|_| WorkersError::Start("workers did not report in".into()))?;
            threads[index] = Some(thread);
        }
        let threads = threads.into_iter().flatten().collect();
        Ok(Workers { senders, threads, guard: Some(guard) })
    }

    pub fn count(&self) -> usize {
        self.senders.len()
    }

    /// Queues a command for one worker and wakes it.
    pub fn send(&self, worker: usize, command: WorkerCommand) {
        if self.senders[worker].send(command).is_ok() {
            self.threads[worker].unpark();
        }
    }

    /// Advances every worker's inputs to `time`.
    pub fn advance_all(&self, time: Time) {
        for worker in 0..self.count() {
            self.send(worker, WorkerCommand::AdvanceTo(time));
        }
    }

    /// The worker that owns `key` (subscriptions by id, outcomes by delivery id), stable for a run.
    pub fn route(&self, key: &str) -> usize {
        (fnv1a(key.as_bytes()) % self.count() as u64) as usize
    }

    /// Stops the workers and waits for their threads.
    pub fn shutdown(&mut self) {
        for worker in 0..self.count() {
            self.send(worker, WorkerCommand::Shutdown);
        }
        if let Some(guard) = self.guard.take() {
            let _ = guard.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

fn run_worker(
    worker: &mut timely::worker::Worker,
    mut dataflow: Dataflow,
    receiver: mpsc::Receiver<WorkerCommand>,
    index: usize,
    events: &UnboundedSender<WorkerEvent>,
) {
    let mut reported: Option<Option<Time>> = None;
    loop {
        loop {
            match receiver.try_recv() {
                Ok(WorkerCommand::AdvanceTo(time)) => dataflow.advance_to(time),
                Ok(WorkerCommand::Report(report)) => dataflow.insert_report(report),
                Ok(WorkerCommand::UpsertSubscription(sub)) => dataflow.upsert_subscription(sub),
                Ok(WorkerCommand::RemoveSubscription(id)) => dataflow.remove_subscription(&id),
                Ok(WorkerCommand::Outcome(outcome)) => dataflow.insert_outcome(outcome),
                Ok(WorkerCommand::Resume(task, due)) => dataflow.resume(task, due),
                Ok(WorkerCommand::ResumeMember(member)) => dataflow.resume_member(member),
                Ok(WorkerCommand::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => return,
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        // Parks until a command unparks this thread, timely has work, or the timeout passes.
        worker.step_or_park(Some(Duration::from_millis(20)));
        let frontier = dataflow.frontier();
        if reported != Some(frontier) {
            reported = Some(frontier);
            let _ = events.send(WorkerEvent::Progress { worker: index, frontier });
        }
    }
}
