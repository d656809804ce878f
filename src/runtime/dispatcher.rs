//! Turns due delivery tasks into sink requests and runs them, at most `max_in_flight` at once,
//! highest `delivery_priority` first among the tasks whose endpoint can take one now (its
//! concurrency and rate limits, pause and circuit breaker; see [`super::endpoints`]). Each finished
//! attempt goes back to the sequencer carrying its in-flight permit, so attempts under way plus
//! outcomes not yet consumed never exceed the limit.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dataflows::delivery::{AttemptResult, DeliveryChannel, DeliveryTask};
use sinks::{SinkError, SinkRegistry};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::digest_payload::MemberContent;
use super::endpoints::{self, EndpointResolver, LaneStatus, Lanes, Next, Ticket};
use crate::config::EndpointsConfig;
use crate::content::ContentStore;

pub use super::render::render;
use super::dead_tokens::DeadTokenReporter;

/// One attempt's end, on its way back to the sequencer.
#[derive(Debug)]
pub struct FinishedAttempt {
    pub task: DeliveryTask,
    pub result: AttemptResult,
    pub elapsed: Duration,
    /// Released when the sequencer has taken the outcome in.
    pub permit: OwnedSemaphorePermit,
}

/// Tasks waiting to be attempted, in one lane per endpoint (see [`super::endpoints`]): an endpoint
/// at its concurrency or rate limit, paused by its peer's `Retry-After`, or behind an open breaker
/// holds back only its own tasks, and those hold no in-flight slot while they wait. Unbounded as a
/// structure, bounded in practice by the sequencer's admission control (`delivery.max_outstanding`):
/// no report is admitted past it.
pub struct DispatchQueue {
    lanes: Mutex<Lanes>,
    resolver: EndpointResolver,
    ready: Notify,
    changes: watch::Sender<u64>,
}

impl DispatchQueue {
    pub fn new(resolver: EndpointResolver, config: EndpointsConfig) -> DispatchQueue {
        DispatchQueue { lanes: Mutex::new(Lanes::new(config)), resolver, ready: Notify::new(), changes: watch::Sender::new(0) }
    }

    /// A poisoned lock still holds every task: go on with it rather than lose them.
    fn lanes(&self) -> MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn push(&self, task: DeliveryTask) {
        let key = self.resolver.key(&task);
        self.lanes().push(key, task, Instant::now());
        self.ready.notify_one();
    }

    pub fn len(&self) -> usize {
        self.lanes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waiting tasks by priority: their number and the `oldest` (see [`Lanes::waiting_by_priority`]).
    pub fn waiting_by_priority(&self, oldest: usize) -> std::collections::BTreeMap<i32, (usize, Vec<DeliveryTask>)> {
        self.lanes().waiting_by_priority(oldest)
    }

    /// Every endpoint with its limits, breaker state and queue.
    pub fn endpoints(&self) -> Vec<LaneStatus> {
        self.lanes().statuses()
    }

    /// Changes whenever an endpoint's breaker changes state or a pause starts or ends.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn announce(&self, lanes: &Lanes) {
        let version = lanes.version();
        self.changes.send_if_modified(|seen| std::mem::replace(seen, version) != version);
    }

    fn take(&self) -> Next {
        let mut lanes = self.lanes();
        let next = lanes.next(Instant::now());
        self.announce(&lanes);
        next
    }

    fn finish(&self, ticket: Ticket, result: &AttemptResult) {
        let (verdict, pause, failure) = endpoints::verdict(result);
        let mut lanes = self.lanes();
        lanes.finish(ticket, verdict, pause, failure, Instant::now());
        self.announce(&lanes);
        drop(lanes);
        self.ready.notify_one();
    }

    /// The next task some endpoint admits, waiting (without holding anything) until there is one.
    async fn next(&self, shutdown: &CancellationToken) -> Option<(DeliveryTask, Ticket)> {
        loop {
            let notified = self.ready.notified();
            let wake = match self.take() {
                Next::Task(task, ticket) => return Some((task, ticket)),
                Next::Wait(wake) => wake,
            };
            let timer = async move {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = notified => {}
                _ = timer => {}
                _ = shutdown.cancelled() => return None,
            }
        }
    }
}

pub struct DispatcherConfig {
    pub max_in_flight: usize,
    pub attempt_timeout: Duration,
    /// Told about push failures that say the device token is dead.
    pub dead_tokens: DeadTokenReporter,
    /// Personalised report files (a subscription's rows, columns and format).
    pub content: Arc<ContentStore>,
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
        let Some((task, ticket)) = queue.next(&shutdown).await else { break };
        let sinks = sinks.clone();
        let finished = finished.clone();
        let timeout = config.attempt_timeout;
        let dead_tokens = config.dead_tokens.clone();
        let content = config.content.clone();
        let queue = queue.clone();
        in_flight.spawn(async move {
            let started = std::time::Instant::now();
            let result = attempt(&sinks, &task, timeout, &dead_tokens, &content).await;
            let elapsed = started.elapsed();
            // The endpoint learns the result at once; the in-flight permit waits for the sequencer.
            queue.finish(ticket, &result);
            let _ = finished.send(FinishedAttempt { task, result, elapsed, permit }).await;
        });
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

async fn attempt(
    sinks: &SinkRegistry,
    task: &DeliveryTask,
    timeout: Duration,
    dead_tokens: &DeadTokenReporter,
    content: &Arc<ContentStore>,
) -> AttemptResult {
    let Some(sink) = sinks.get(task.channel.as_str()) else {
        return AttemptResult::Permanent { error: format!("no sink is configured for channel {}", task.channel.as_str()) };
    };
    let request = match &task.digest {
        Some(digest) => match personalise_digest(content, task, digest).await {
            Ok(contents) => super::digest_payload::render(task, digest, &contents, timeout),
            Err(failed) => return failed,
        },
        None => render(task, timeout),
    };
    let mut request = match request {
        Ok(request) => request,
        Err(error) => return AttemptResult::Permanent { error },
    };
    if let Err(failed) = personalise(content, task, &mut request).await {
        return failed;
    }
    // The sink enforces the timeout itself; this outer bound only guards against a sink that doesn't.
    let outcome = tokio::time::timeout(timeout + Duration::from_secs(1), sink.deliver(&request)).await;
    if let Ok(Err(error)) = &outcome {
        dead_tokens.observe(task, error);
    }
    match outcome {
        Ok(Ok(_receipt)) => AttemptResult::Delivered,
        Ok(Err(SinkError::Transient { reason, retry_after })) => {
            AttemptResult::Transient { error: reason, retry_after: retry_after.map(|d| d.as_micros() as u64) }
        }
        Ok(Err(SinkError::Permanent { reason })) => AttemptResult::Permanent { error: reason },
        Err(_) => AttemptResult::Transient { error: format!("timed out after {timeout:?}"), retry_after: None },
    }
}

/// Each digest member's file personalised with the digest's selection (see
/// [`MemberContent`]), where the channel carries files: SFTP uploads them, webhooks carry them
/// inline. Empty when nothing is personalised. A transient failure (a file not there yet) retries
/// the whole digest; a selection that does not fit one report is that member's `content_error`,
/// and the others go.
async fn personalise_digest(
    content: &Arc<ContentStore>,
    task: &DeliveryTask,
    digest: &dataflows::digest::Digest,
) -> Result<Vec<MemberContent>, AttemptResult> {
    let Some(spec) = task.content.clone() else { return Ok(Vec::new()) };
    let inline = match task.channel {
        DeliveryChannel::ApiWebhook => true,
        DeliveryChannel::Sftp => false,
        _ => return Ok(Vec::new()),
    };
    let (store, reports) = (content.clone(), digest.members.iter().map(|m| m.report.clone()).collect::<Vec<_>>());
    let produced = crate::content::off_runtime(move || {
        reports
            .iter()
            .map(|report| match store.personalise(report, &spec) {
                Ok(None) => Ok(MemberContent::AsPublished),
                Ok(Some(file)) => {
                    let inline = if inline { Some(file.inline()?) } else { None };
                    Ok(MemberContent::Personalised { file, inline })
                }
                Err(error) if error.is_transient() => Err(error),
                Err(error) => {
                    let report_id = &report.report_data.report_id;
                    tracing::warn!(%report_id, %error, "a digest member goes without its file: the selection does not fit it");
                    Ok(MemberContent::Refused(error.to_string()))
                }
            })
            .collect::<Result<Vec<_>, crate::content::ContentError>>()
    })
    .await;
    match produced {
        Some(Ok(contents)) => Ok(contents),
        Some(Err(error)) => Err(AttemptResult::Transient { error: error.to_string(), retry_after: None }),
        None => Err(AttemptResult::Permanent { error: "personalising the digest failed inside Polars".to_string() }),
    }
}

/// Swaps the report's file for the subscriber's personalised one (their rows, columns and format)
/// where the channel carries the file: the EMAIL attachment, the SFTP upload, and a webhook's
/// inline `content` (JSON rows, when small enough). The file is produced once per (report,
/// content spec) and cached, so a retry or an identical subscription reuses it. A subscription that
/// names a column the report lacks fails permanently with the reason; a missing file transiently.
async fn personalise(content: &Arc<ContentStore>, task: &DeliveryTask, request: &mut sinks::DeliveryRequest) -> Result<(), AttemptResult> {
    let Some(spec) = task.content.clone() else { return Ok(()) };
    if task.digest.is_some() || ContentStore::tabular_source(&task.report).is_none() {
        return Ok(());
    }
    let carries_file = matches!(
        request.destination,
        sinks::Destination::Email { attachment: Some(_), .. } | sinks::Destination::Sftp { .. } | sinks::Destination::Webhook { .. }
    );
    if !carries_file {
        return Ok(());
    }
    let (store, report) = (content.clone(), task.report.clone());
    let inline = matches!(request.destination, sinks::Destination::Webhook { .. });
    let produced = crate::content::off_runtime(move || {
        let Some(personalised) = store.personalise(&report, &spec)? else { return Ok(None) };
        let inlined = if inline { Some(personalised.inline()?) } else { None };
        Ok::<_, crate::content::ContentError>(Some((personalised, inlined)))
    })
    .await;
    let (personalised, inlined) = match produced {
        Some(Ok(Some(personalised))) => personalised,
        Some(Ok(None)) => return Ok(()),
        Some(Err(error)) if error.is_transient() => {
            return Err(AttemptResult::Transient { error: error.to_string(), retry_after: None });
        }
        Some(Err(error)) => return Err(AttemptResult::Permanent { error: error.to_string() }),
        None => return Err(AttemptResult::Permanent { error: "personalising the report failed inside Polars".to_string() }),
    };
    match &mut request.destination {
        sinks::Destination::Email { attachment, .. } => *attachment = Some(personalised.path),
        sinks::Destination::Sftp { files, .. } => {
            *files = vec![sinks::SftpFile { path: personalised.path, name: personalised.file_name }];
        }
        sinks::Destination::Webhook { .. } => {
            let mut body: serde_json::Value = serde_json::from_slice(&request.payload)
                .map_err(|e| AttemptResult::Permanent { error: format!("could not render payload: {e}") })?;
            body["data"]["content"] = inlined.unwrap_or_default();
            let body = serde_json::to_vec(&body).map_err(|e| AttemptResult::Permanent { error: format!("could not render payload: {e}") })?;
            request.payload = body.into();
        }
        _ => {}
    }
    Ok(())
}
