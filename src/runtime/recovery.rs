//! Restart: feed the dataflow what the last run left unfinished, at the times it happened, so
//! un-expanded reports meet the subscriptions that were active when they were accepted, and pending
//! deliveries resume. The same delivery ids come out as before: receivers see at most a repeat.
//! Members of digests that had not gone out are fed back at their reports' times, so each digest
//! comes due again at its own tick (at once if the tick passed while the service was down).

use dataflows::Time;

use super::clock::SequencerClock;
use super::dispatcher::DispatchQueue;
use super::sequencer::LoopState;
use super::workers::{WorkerCommand, Workers};
use crate::store::{Store, StoreError};

pub(super) struct Recovered {
    pub clock: SequencerClock,
    pub state: LoopState,
}

/// Ordering of replayed inputs that share a time: a version ends before its successor begins, and
/// both before a report at that time is matched.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    End,
    Begin,
    Report,
    Member,
}

pub(super) async fn recover(store: &dyn Store, workers: &Workers, _dispatch: &DispatchQueue) -> Result<Recovered, StoreError> {
    let recovery = store.recovery_state().await?;
    let mut state = LoopState { frontiers: vec![Some(0); workers.count()], ..LoopState::default() };

    let mut steps: Vec<(Time, Step, usize)> = Vec::new();
    for (index, (_, from, until)) in recovery.subscription_versions.iter().enumerate() {
        steps.push((*from, Step::Begin, index));
        if let Some(until) = until {
            steps.push((*until, Step::End, index));
        }
    }
    for (index, report) in recovery.unexpanded_reports.iter().enumerate() {
        steps.push((report.accepted_at, Step::Report, index));
    }
    for (index, member) in recovery.pending_digest_members.iter().enumerate() {
        steps.push((member.accepted_at, Step::Member, index));
    }
    steps.sort();

    for (time, step, index) in steps {
        workers.advance_all(time);
        match step {
            Step::Begin => {
                let sub = &recovery.subscription_versions[index].0;
                workers.send(workers.route(&sub.subscription_id), WorkerCommand::UpsertSubscription(sub.clone()));
            }
            Step::End => {
                let id = &recovery.subscription_versions[index].0.subscription_id;
                workers.send(workers.route(id), WorkerCommand::RemoveSubscription(id.clone()));
            }
            Step::Report => {
                let report = &recovery.unexpanded_reports[index];
                let event_id = report.event.event_id.clone();
                state.awaiting.entry(time).or_default().push(event_id.clone());
                state.awaiting_events.insert(event_id.clone(), time);
                state.expansions.insert(event_id.clone(), Vec::new());
                workers.send(workers.route(&event_id), WorkerCommand::Report(report.event.clone()));
            }
            Step::Member => {
                let member = &recovery.pending_digest_members[index];
                workers.send(workers.route(&member.digest_id), WorkerCommand::ResumeMember(member.clone()));
            }
        }
    }

    let mut clock = SequencerClock::starting_after(recovery.last_time);
    let now = clock.tick();
    workers.advance_all(now);
    state.outstanding = recovery.pending_deliveries.len();
    for (task, due) in recovery.pending_deliveries {
        let worker = workers.route(&task.delivery_id);
        workers.send(worker, WorkerCommand::Resume(task, due.max(now)));
    }
    workers.advance_all(now + 1);
    if !recovery.unexpanded_reports.is_empty() || state.outstanding > 0 || !recovery.pending_digest_members.is_empty() {
        tracing::info!(
            reports = recovery.unexpanded_reports.len(),
            deliveries = state.outstanding,
            digest_members = recovery.pending_digest_members.len(),
            "resuming work left unfinished by the previous run"
        );
    }
    Ok(Recovered { clock, state })
}
