//! The core loop: the one writer. Each turn it takes what arrived (API commands, finished attempts,
//! dataflow outputs), commits it in one transaction (group commit), and only then acts on it:
//! acknowledges reports, feeds inputs to the dataflow at the turn's time, hands due deliveries to
//! the dispatcher. Nothing is acknowledged before it is durable.
//!
//! One exception keeps a commit off the delivery path: a report's first attempts are dispatched as
//! soon as the dataflow emits them, before their expansion is committed. The report itself is
//! durable by then, and delivery ids are deterministic, so a crash in between only means recovery
//! expands the report again and a receiver may see the same delivery id twice (at least once, never
//! a second id). What must not race ahead is the record of an attempt: an attempt that finishes
//! before its expansion is in a batch waits (`LoopState::early_finished`) and joins that batch.
//!
//! Admission control bounds everything downstream: while `max_outstanding` deliveries are
//! unfinished, no new command is taken, so the command queue fills and callers get 503.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use dataflows::delivery::{AttemptResult, DeliveryOutcome, DeliveryState, DeliveryTask};
use dataflows::output::Output;
use dataflows::report::ReportDistribution;
use dataflows::subscription::{ReportSubscription, SubscriptionStatus};
use dataflows::Time;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::clock::SequencerClock;
use super::dispatcher::{DispatchQueue, FinishedAttempt};
use super::hub::Hub;
use super::outbox;
use super::views::Views;
use super::workers::{WorkerCommand, WorkerEvent, Workers};
use super::{ReportAck, RuntimeError};
use crate::store::{
    AttemptRecord, DeadLetterRecord, ExpandedReport, NewReport, ReplayRecord, RetryRecord, Store,
    SubscriptionChange, WriteBatch,
};

/// A request from the API, answered once its effect is durable.
pub enum Command {
    Report { event: ReportDistribution, reply: oneshot::Sender<Result<ReportAck, RuntimeError>> },
    /// `publish`: also tell other instances (through the outbox), for changes made here; a change
    /// that came from the bus is not published again.
    Subscription { subscription: ReportSubscription, publish: bool, reply: oneshot::Sender<Result<(), RuntimeError>> },
    Replay { task: DeliveryTask, reply: oneshot::Sender<Result<(), RuntimeError>> },
}

pub struct Sequencer {
    pub(super) store: Arc<dyn Store>,
    pub(super) workers: Workers,
    pub(super) clock: SequencerClock,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) finished: mpsc::Receiver<FinishedAttempt>,
    pub(super) events: mpsc::UnboundedReceiver<WorkerEvent>,
    pub(super) dispatch: Arc<DispatchQueue>,
    pub(super) views: Arc<Views>,
    /// Told what each commit made durable, for the update streams.
    pub(super) hub: Arc<Hub>,
    pub(super) max_outstanding: usize,
    pub(super) max_batch: usize,
    /// Write events for Kafka to the outbox (only when a relay publishes them).
    pub(super) outbox: bool,
    /// Woken after a commit that wrote outbox rows.
    pub(super) outbox_written: Arc<tokio::sync::Notify>,
    pub(super) state: LoopState,
}

/// What the loop remembers between turns.
#[derive(Default)]
pub(super) struct LoopState {
    /// Worker frontiers: all outputs for times before the minimum have arrived.
    pub frontiers: Vec<Option<Time>>,
    /// Reports fed to the dataflow, by time, waiting for their delivery set to be complete.
    pub awaiting: BTreeMap<Time, Vec<String>>,
    /// Event id -> the time it was fed at, for telling new deliveries from retries.
    pub awaiting_events: HashMap<String, Time>,
    /// Delivery tasks of reports whose delivery set is not complete yet (already dispatched).
    pub expansions: HashMap<String, Vec<DeliveryTask>>,
    /// Attempts that finished before their report's expansion was committed, by event id.
    pub early_finished: HashMap<String, Vec<(DeliveryTask, AttemptResult, Duration)>>,
    /// Callers waiting for a report's delivery ids.
    pub acks: HashMap<String, Vec<oneshot::Sender<Result<ReportAck, RuntimeError>>>>,
    /// Deliveries neither delivered nor dead-lettered, counted for admission control.
    pub outstanding: usize,
    /// Work that a failed commit must retry (never the API commands: those callers got an error).
    pub carry: WriteBatch,
    pub carry_dispatch: Vec<DeliveryTask>,
    pub carry_outcomes: Vec<DeliveryOutcome>,
    /// Digest members and due digests of SCHEDULED subscriptions (see `digests.rs`).
    pub digests: super::digests::Digests,
    /// When the workers' time was last moved on by a turn that carried nothing (see [`IDLE_TICK`]).
    pub last_idle_advance: Option<std::time::Instant>,
}

/// Replies owed to API callers once the turn's batch is durable.
#[derive(Default)]
struct Replies {
    reports: Vec<(String, oneshot::Sender<Result<ReportAck, RuntimeError>>)>,
    others: Vec<oneshot::Sender<Result<(), RuntimeError>>>,
}

enum Wake {
    Command(Command),
    Finished(FinishedAttempt),
    Event(WorkerEvent),
    Tick,
    Shutdown,
}

/// How often the loop turns with nothing arriving while deliveries are under way, so retries due
/// in dataflow time are released on time.
const TICK: Duration = Duration::from_millis(2);
/// The same with nothing under way: time still moves on (stats windows close, digests fall due)
/// but the workers are not woken 500 times a second for nothing. Moving the workers' time makes
/// them report progress, which wakes this loop again; pacing the advances of empty turns is what
/// keeps an idle service idle.
const IDLE_TICK: Duration = Duration::from_millis(100);

impl Sequencer {
    pub async fn run(mut self, shutdown: CancellationToken, dispatcher_done: CancellationToken) -> Result<(), RuntimeError> {
        let mut shutting_down = false;
        loop {
            let admitting = !shutting_down && self.state.outstanding < self.max_outstanding;
            let tick = self.tick();
            let wake = tokio::select! {
                biased;
                _ = shutdown.cancelled(), if !shutting_down => Wake::Shutdown,
                Some(event) = self.events.recv() => Wake::Event(event),
                Some(done) = self.finished.recv() => Wake::Finished(done),
                Some(command) = self.commands.recv(), if admitting => Wake::Command(command),
                _ = tokio::time::sleep(tick) => Wake::Tick,
            };
            if let Wake::Shutdown = wake {
                shutting_down = true;
                self.commands.close();
                while let Ok(command) = self.commands.try_recv() {
                    refuse(command, RuntimeError::ShuttingDown);
                }
                continue;
            }
            self.turn(wake, admitting).await?;
            if shutting_down && dispatcher_done.is_cancelled() && self.finished.is_empty() {
                // One more turn so that the last finished attempts are durable.
                self.turn(Wake::Tick, false).await?;
                return Ok(());
            }
        }
    }

    async fn turn(&mut self, first: Wake, admitting: bool) -> Result<(), RuntimeError> {
        let time = self.clock.tick();
        let mut batch = std::mem::take(&mut self.state.carry);
        let mut dispatch = std::mem::take(&mut self.state.carry_dispatch);
        let mut outcomes = std::mem::take(&mut self.state.carry_outcomes);
        let mut commands = Vec::new();
        match first {
            Wake::Command(c) => commands.push(c),
            Wake::Finished(f) => self.take_finished(f, time, &mut batch, &mut outcomes),
            Wake::Event(e) => self.take_event(e, &mut batch, &mut dispatch)?,
            Wake::Tick | Wake::Shutdown => {}
        }
        while let Ok(event) = self.events.try_recv() {
            self.take_event(event, &mut batch, &mut dispatch)?;
        }
        while let Ok(done) = self.finished.try_recv() {
            self.take_finished(done, time, &mut batch, &mut outcomes);
        }
        for event_id in self.complete_expansions(&mut batch) {
            for (task, result, elapsed) in self.state.early_finished.remove(&event_id).unwrap_or_default() {
                self.record_finished(task, result, elapsed, time, &mut batch, &mut outcomes);
            }
        }
        for digest in self.state.digests.release(&self.state.frontiers) {
            self.state.outstanding += 1;
            dispatch.push(digest);
        }
        if admitting {
            while commands.len() < self.max_batch {
                match self.commands.try_recv() {
                    Ok(command) => commands.push(command),
                    Err(_) => break,
                }
            }
        }
        let mut replies = Replies::default();
        let mut batch_events = std::collections::HashSet::new();
        for command in commands {
            match command {
                Command::Report { event, reply } => {
                    replies.reports.push((event.event_id.clone(), reply));
                    // The same event twice in one turn is stored and fed once; both callers get its ids.
                    if batch_events.insert(event.event_id.clone()) {
                        batch.reports.push(NewReport { event, accepted_at: time });
                    }
                }
                Command::Subscription { subscription, publish, reply } => {
                    replies.others.push(reply);
                    if publish && self.outbox {
                        batch.outbox.push(outbox::subscription_change(&subscription));
                    }
                    batch.subscription_changes.push(SubscriptionChange { subscription, changed_at: time });
                }
                Command::Replay { task, reply } => {
                    replies.others.push(reply);
                    batch.replays.push(ReplayRecord { task, at: time });
                }
            }
        }

        if self.outbox {
            let now = chrono::Utc::now();
            for expanded in &batch.expanded {
                batch.outbox.extend(outbox::report_distributed(&expanded.deliveries, now));
            }
        }
        if batch.is_empty() && dispatch.is_empty() && outcomes.is_empty() {
            let tick = self.tick();
            if self.state.last_idle_advance.is_none_or(|last| last.elapsed() >= tick) {
                self.state.last_idle_advance = Some(std::time::Instant::now());
                self.workers.advance_all(time);
            }
            return Ok(());
        }
        let commit_started = std::time::Instant::now();
        let applied = self.store.apply(&batch).await;
        let commit_elapsed = commit_started.elapsed();
        metrics::histogram!("repdist_commit_duration_seconds").record(commit_elapsed.as_secs_f64());
        tracing::debug!(
            elapsed_us = commit_elapsed.as_micros() as u64,
            reports = batch.reports.len(),
            expanded = batch.expanded.len(),
            attempts = batch.attempts.len(),
            retries = batch.retries.len(),
            stats = batch.stats.len(),
            "committed"
        );
        let written = match applied {
            Ok(written) => written,
            Err(error) => {
                tracing::error!(%error, "commit failed; will retry the dataflow's work, refusing this turn's requests");
                metrics::counter!("repdist_commit_failures_total").increment(1);
                for (_, reply) in replies.reports {
                    let _ = reply.send(Err(RuntimeError::Unavailable(error.to_string())));
                }
                for reply in replies.others {
                    let _ = reply.send(Err(RuntimeError::Unavailable(error.to_string())));
                }
                batch.reports.clear();
                batch.subscription_changes.clear();
                batch.replays.clear();
                self.state.carry = batch;
                self.state.carry_dispatch = dispatch;
                self.state.carry_outcomes = outcomes;
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Ok(());
            }
        };
        self.views.record_commit(&batch);
        self.hub.publish_commit(&batch, &outcomes);
        if !batch.outbox.is_empty() {
            self.outbox_written.notify_one();
        }

        // Durable: now act. Inputs of this turn enter the dataflow at `time`, then time moves on.
        self.workers.advance_all(time);
        for outcome in outcomes {
            let worker = self.workers.route(&outcome.task.delivery_id);
            self.workers.send(worker, WorkerCommand::Outcome(outcome));
        }
        for change in &batch.subscription_changes {
            let sub = &change.subscription;
            let worker = self.workers.route(&sub.subscription_id);
            let command = if sub.status == SubscriptionStatus::Active {
                WorkerCommand::UpsertSubscription(sub.clone())
            } else {
                WorkerCommand::RemoveSubscription(sub.subscription_id.clone())
            };
            self.workers.send(worker, command);
        }
        for replay in &batch.replays {
            self.state.outstanding += 1;
            let worker = self.workers.route(&replay.task.delivery_id);
            self.workers.send(worker, WorkerCommand::Resume(replay.task.clone(), time));
        }
        let duplicates: std::collections::HashSet<&str> = written.duplicate_events.iter().map(String::as_str).collect();
        for report in &batch.reports {
            let event_id = &report.event.event_id;
            if duplicates.contains(event_id.as_str()) || self.state.awaiting_events.contains_key(event_id) {
                continue;
            }
            self.state.awaiting.entry(time).or_default().push(event_id.clone());
            self.state.awaiting_events.insert(event_id.clone(), time);
            self.state.expansions.insert(event_id.clone(), Vec::new());
            let worker = self.workers.route(event_id);
            self.workers.send(worker, WorkerCommand::Report(report.event.clone()));
        }
        self.workers.advance_all(time + 1);

        for reply in replies.others {
            let _ = reply.send(Ok(()));
        }
        for (event_id, reply) in replies.reports {
            if self.state.awaiting_events.contains_key(&event_id) {
                self.state.acks.entry(event_id).or_default().push(reply);
            } else {
                // A re-sent event whose delivery set is already durable: answer from the store.
                let answer = match self.store.deliveries_of_event(&event_id).await {
                    Ok(Some(delivery_ids)) => Ok(ReportAck { event_id, delivery_ids, duplicate: true }),
                    Ok(None) => Err(RuntimeError::Unavailable("event is known but its delivery set is not".into())),
                    Err(e) => Err(RuntimeError::Unavailable(e.to_string())),
                };
                let _ = reply.send(answer);
            }
        }
        if !written.existing_deliveries.is_empty() {
            // Only a report expanded twice gets here (e.g. recovery after the expansion was committed
            // but not marked); those deliveries went out again under their own ids.
            tracing::warn!(count = written.existing_deliveries.len(), "deliveries expanded again were dispatched again");
        }
        for expanded in &batch.expanded {
            let mut delivery_ids: Vec<String> = expanded.deliveries.iter().map(|task| task.delivery_id.clone()).collect();
            // A SCHEDULED subscription's share is the digest the report joined.
            delivery_ids.extend(expanded.digest_members.iter().map(|member| member.digest_id.clone()));
            // Sorted, as the store answers a re-sent event, so both answers compare equal.
            delivery_ids.sort();
            delivery_ids.dedup();
            for reply in self.state.acks.remove(&expanded.event_id).unwrap_or_default() {
                let ack = ReportAck { event_id: expanded.event_id.clone(), delivery_ids: delivery_ids.clone(), duplicate: false };
                let _ = reply.send(Ok(ack));
            }
        }
        for task in dispatch {
            self.dispatch.push(task);
        }
        self.views.set_outstanding(self.state.outstanding, self.dispatch.len());
        Ok(())
    }

    /// How often an empty turn moves the workers' time on.
    fn tick(&self) -> Duration {
        if self.state.outstanding > 0 || !self.state.awaiting.is_empty() {
            TICK
        } else {
            IDLE_TICK
        }
    }

    fn take_finished(&mut self, done: FinishedAttempt, time: Time, batch: &mut WriteBatch, outcomes: &mut Vec<DeliveryOutcome>) {
        let FinishedAttempt { task, result, elapsed, permit } = done;
        drop(permit);
        if self.is_early(&task) {
            self.state.early_finished.entry(task.report.event_id.clone()).or_default().push((task, result, elapsed));
            return;
        }
        self.record_finished(task, result, elapsed, time, batch, outcomes);
    }

    /// A first attempt of a report whose expansion is not in a batch yet.
    fn is_early(&self, task: &DeliveryTask) -> bool {
        task.attempt == 1 && self.state.awaiting_events.get(&task.report.event_id) == Some(&task.accepted_at)
    }

    fn record_finished(
        &mut self,
        task: DeliveryTask,
        result: AttemptResult,
        elapsed: Duration,
        time: Time,
        batch: &mut WriteBatch,
        outcomes: &mut Vec<DeliveryOutcome>,
    ) {
        let (state, error) = match &result {
            AttemptResult::Delivered => {
                self.state.outstanding = self.state.outstanding.saturating_sub(1);
                (DeliveryState::Delivered, None)
            }
            AttemptResult::Transient { error, .. } | AttemptResult::Permanent { error } => {
                (DeliveryState::Retrying, Some(error.clone()))
            }
        };
        self.views.record_attempt(&task, &result, elapsed, time);
        if self.outbox && state == DeliveryState::Delivered {
            batch.outbox.push(outbox::delivery_status(&task, state, None, chrono::Utc::now()));
        }
        batch.attempts.push(AttemptRecord {
            delivery_id: task.delivery_id.clone(),
            attempt: task.attempt,
            state,
            error,
            finished_at: time,
        });
        outcomes.push(DeliveryOutcome { task, result, finished_at: time });
    }

    fn take_event(&mut self, event: WorkerEvent, batch: &mut WriteBatch, dispatch: &mut Vec<DeliveryTask>) -> Result<(), RuntimeError> {
        match event {
            WorkerEvent::Output(_, Output::Dispatch(task)) => {
                if self.is_early(&task) {
                    if let Some(tasks) = self.state.expansions.get_mut(&task.report.event_id) {
                        // The report is durable: dispatch now, record the expansion with the next batch.
                        self.state.outstanding += 1;
                        self.dispatch.push(task.clone());
                        tasks.push(task);
                        return Ok(());
                    }
                }
                dispatch.push(task);
            }
            WorkerEvent::Output(_, Output::RetryScheduled { task, due, error }) => {
                batch.retries.push(RetryRecord { task, due, error });
            }
            WorkerEvent::Output(time, Output::DeadLettered { task, reason }) => {
                self.state.outstanding = self.state.outstanding.saturating_sub(1);
                metrics::counter!("repdist_dead_letters_total", "channel" => task.channel.as_str()).increment(1);
                if self.outbox {
                    batch.outbox.push(outbox::delivery_status(&task, DeliveryState::DeadLettered, Some(&reason), chrono::Utc::now()));
                }
                batch.dead_letters.push(DeadLetterRecord { task, reason, at: time });
            }
            WorkerEvent::Output(_, Output::DigestMember(member)) => {
                if self.state.expansions.contains_key(&member.report.event_id) {
                    self.state.digests.collect(member);
                } else {
                    // Members come from reports being expanded; should one outlive that, it is
                    // recorded on its own rather than lost.
                    let event_id = member.report.event_id.clone();
                    batch.expanded.push(ExpandedReport { event_id, deliveries: Vec::new(), digest_members: vec![member] });
                }
            }
            WorkerEvent::Output(_, Output::DigestDue(digest)) => self.state.digests.hold(digest),
            WorkerEvent::Output(_, Output::Stats(key, row)) => {
                self.views.update_stats(key, row);
                batch.stats.push((key, row));
            }
            WorkerEvent::Progress { worker, frontier } => {
                if let Some(slot) = self.state.frontiers.get_mut(worker) {
                    *slot = frontier;
                }
            }
            WorkerEvent::Stopped { worker } => {
                return Err(RuntimeError::Unavailable(format!("dataflow worker {worker} stopped")));
            }
        }
        Ok(())
    }

    /// Reports whose time every worker has passed have their whole delivery set: move them to the
    /// batch. Returns their event ids.
    fn complete_expansions(&mut self, batch: &mut WriteBatch) -> Vec<String> {
        let mut completed = Vec::new();
        let done_before = self.state.frontiers.iter().map(|f| f.unwrap_or(Time::MAX)).min().unwrap_or(0);
        while let Some(entry) = self.state.awaiting.first_entry() {
            if *entry.key() >= done_before {
                break;
            }
            for event_id in entry.remove() {
                self.state.awaiting_events.remove(&event_id);
                let deliveries = self.state.expansions.remove(&event_id).unwrap_or_default();
                let digest_members = self.state.digests.members_of(&event_id);
                batch.expanded.push(ExpandedReport { event_id: event_id.clone(), deliveries, digest_members });
                completed.push(event_id);
            }
        }
        completed
    }
}

fn refuse(command: Command, error: RuntimeError) {
    match command {
        Command::Report { reply, .. } => drop(reply.send(Err(error))),
        Command::Subscription { reply, .. } | Command::Replay { reply, .. } => drop(reply.send(Err(error))),
    }
}
