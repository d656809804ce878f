//! The running service: timely workers for the dataflow, the sequencer (the one writer), the
//! dispatcher (the sinks), wired with bounded queues and one shutdown signal.

pub mod board;
pub mod clock;
pub mod dispatcher;
pub mod hub;
pub mod outbox;
mod recovery;
mod render;
pub mod sequencer;
pub mod views;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use dataflows::dataflow::DataflowConfig;
use dataflows::delivery::DeliveryTask;
use dataflows::report::ReportDistribution;
use dataflows::subscription::ReportSubscription;
use serde::Serialize;
use sinks::{SinkRegistry, TemplateStore};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::Store;
use dispatcher::{DispatchQueue, DispatcherConfig};
use hub::Hub;
use sequencer::{Command, Sequencer};
use views::Views;
use workers::Workers;

/// What a report's publisher gets back once the report and its delivery set are durable.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ReportAck {
    pub event_id: String,
    pub delivery_ids: Vec<String>,
    /// True when this event id had been accepted before: nothing new was created.
    pub duplicate: bool,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the service is saturated; retry later")]
    Overloaded,
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("the service is unavailable: {0}")]
    Unavailable(String),
}

pub struct Runtime {
    commands: mpsc::Sender<Command>,
    queue_timeout: Duration,
    views: Arc<Views>,
    outbox_written: Arc<tokio::sync::Notify>,
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    sinks: Arc<SinkRegistry>,
    templates: Arc<TemplateStore>,
    shutdown: CancellationToken,
    sequencer: Option<JoinHandle<Result<(), RuntimeError>>>,
    dispatcher: Option<JoinHandle<()>>,
}

impl Runtime {
    /// Starts workers, replays what the last run left unfinished, then starts taking requests.
    pub async fn start(config: &Config, store: Arc<dyn Store>) -> Result<Runtime, RuntimeError> {
        let hub = Arc::new(Hub::new(4096));
        let default_locale = config.email.as_ref().map_or("en", |email| email.default_locale.as_str());
        let templates = Arc::new(TemplateStore::new(default_locale));
        let sinks = Arc::new(build_sinks(config, store.clone(), hub.clone(), templates.clone())?);
        let dataflow_config = DataflowConfig {
            retry: config.retry.policy(),
            stats_window: config.stats_window.as_micros() as u64,
            ..DataflowConfig::default()
        };
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let workers = Workers::start(config.workers, dataflow_config, event_tx)
            .map_err(|e| RuntimeError::Unavailable(e.to_string()))?;
        let (command_tx, command_rx) = mpsc::channel(config.ingest.queue_capacity);
        let (finished_tx, finished_rx) = mpsc::channel(config.delivery.max_in_flight);
        let dispatch = Arc::new(DispatchQueue::default());
        let views = Arc::new(Views::default());
        let outbox_written = Arc::new(tokio::sync::Notify::new());

        let recovered = recovery::recover(store.as_ref(), &workers, &dispatch)
            .await
            .map_err(|e| RuntimeError::Unavailable(format!("recovery failed: {e}")))?;
        let sequencer = Sequencer {
            store: store.clone(),
            workers,
            clock: recovered.clock,
            commands: command_rx,
            finished: finished_rx,
            events: event_rx,
            dispatch: dispatch.clone(),
            views: views.clone(),
            max_outstanding: config.delivery.max_outstanding,
            max_batch: config.ingest.max_batch,
            outbox: config.kafka.is_enabled(),
            outbox_written: outbox_written.clone(),
            state: recovered.state,
        };

        let shutdown = CancellationToken::new();
        let dispatcher_done = CancellationToken::new();
        let dispatcher = {
            let (sinks, dispatch, shutdown, done) = (sinks.clone(), dispatch.clone(), shutdown.clone(), dispatcher_done.clone());
            let dispatcher_config = DispatcherConfig {
                max_in_flight: config.delivery.max_in_flight,
                attempt_timeout: config.delivery.attempt_timeout,
            };
            tokio::spawn(async move {
                dispatcher::run(dispatch, sinks, dispatcher_config, finished_tx, shutdown).await;
                done.cancel();
            })
        };
        let sequencer = tokio::spawn(sequencer.run(shutdown.clone(), dispatcher_done));
        Ok(Runtime {
            commands: command_tx,
            queue_timeout: config.ingest.queue_timeout,
            views,
            outbox_written,
            hub,
            store,
            sinks,
            templates,
            shutdown,
            sequencer: Some(sequencer),
            dispatcher: Some(dispatcher),
        })
    }

    /// Accepts a report; answers once it and its delivery set are durable.
    pub async fn submit_report(&self, event: ReportDistribution) -> Result<ReportAck, RuntimeError> {
        self.call(|reply| Command::Report { event, reply }).await?
    }

    /// Queues a report for the sequencer, waiting (without a deadline) while the queue is full, and
    /// returns the pending acknowledgement. Reports queued one after another are accepted in that
    /// order; the Kafka consumer relies on it to keep a partition's order while pipelining.
    pub async fn enqueue_report(
        &self,
        event: ReportDistribution,
    ) -> Result<oneshot::Receiver<Result<ReportAck, RuntimeError>>, RuntimeError> {
        let permit = self.commands.reserve().await.map_err(|_| RuntimeError::ShuttingDown)?;
        let (reply, answer) = oneshot::channel();
        permit.send(Command::Report { event, reply });
        Ok(answer)
    }

    /// Applies a subscription version (create, update, pause, cancel) from now on.
    pub async fn change_subscription(&self, subscription: ReportSubscription) -> Result<(), RuntimeError> {
        self.call(|reply| Command::Subscription { subscription, publish: true, reply }).await?
    }

    /// Applies a subscription version that arrived from the bus (another instance's change): the
    /// same as [`Runtime::change_subscription`] but not published again.
    pub async fn apply_subscription_from_bus(&self, subscription: ReportSubscription) -> Result<(), RuntimeError> {
        self.call(|reply| Command::Subscription { subscription, publish: false, reply }).await?
    }

    /// Woken after each commit that wrote outbox rows (the relay's doorbell).
    pub fn outbox_written(&self) -> &Arc<tokio::sync::Notify> {
        &self.outbox_written
    }

    /// Takes a dead letter back for a fresh round of attempts.
    pub async fn replay(&self, task: DeliveryTask) -> Result<(), RuntimeError> {
        self.call(|reply| Command::Replay { task, reply }).await?
    }

    async fn call<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, RuntimeError> {
        let (reply, answer) = oneshot::channel();
        let permit = tokio::time::timeout(self.queue_timeout, self.commands.reserve())
            .await
            .map_err(|_| RuntimeError::Overloaded)?
            .map_err(|_| RuntimeError::ShuttingDown)?;
        permit.send(command(reply));
        answer.await.map_err(|_| RuntimeError::ShuttingDown)
    }

    pub fn views(&self) -> &Views {
        &self.views
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Channel names with a configured sink, e.g. `API_WEBHOOK`.
    pub fn enabled_channels(&self) -> Vec<&'static str> {
        self.sinks.channels()
    }

    /// The email templates the EMAIL sink renders with (shared with the templates API). Held even
    /// when EMAIL is disabled, so templates can be prepared before a relay is configured.
    pub fn templates(&self) -> &Arc<TemplateStore> {
        &self.templates
    }

    /// Whether the core loop is still running.
    pub fn is_healthy(&self) -> bool {
        self.sequencer.as_ref().is_some_and(|s| !s.is_finished())
    }

    /// Stops taking requests, lets attempts under way finish and makes their outcomes durable.
    /// Deliveries still queued stay pending in the store and resume on the next start.
    pub async fn shutdown(mut self) -> Result<(), RuntimeError> {
        self.shutdown.cancel();
        if let Some(dispatcher) = self.dispatcher.take() {
            let _ = dispatcher.await;
        }
        match self.sequencer.take() {
            Some(sequencer) => sequencer.await.map_err(|e| RuntimeError::Unavailable(e.to_string()))?,
            None => Ok(()),
        }
    }
}

/// Registers every channel this configuration can serve: webhook, dashboard, SFTP, chat and push
/// always (their destinations and credentials come with each subscription), EMAIL only when a relay
/// is configured. `enabled_channels()` follows from it, and with it which channels a subscription
/// may name.
fn build_sinks(
    config: &Config,
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    templates: Arc<TemplateStore>,
) -> Result<SinkRegistry, RuntimeError> {
    let setup = |e: &dyn std::fmt::Display| RuntimeError::Unavailable(e.to_string());
    let webhook_config = sinks::webhook::WebhookConfig {
        pool_max_idle_per_host: config.delivery.webhook_pool_per_host,
        connect_timeout: config.delivery.attempt_timeout,
        ..Default::default()
    };
    let webhook = sinks::webhook::WebhookSink::new(webhook_config).map_err(|e| setup(&e))?;
    let board = Arc::new(board::StoreBoard { store, hub });
    let mut registry = SinkRegistry::default();
    registry.register(Arc::new(webhook));
    registry.register(Arc::new(sinks::dashboard::DashboardSink::new(board)));
    registry.register(Arc::new(sinks::SftpSink::new(config.sftp.clone()).map_err(|e| setup(&e))?));
    registry.register(Arc::new(sinks::ChatSink::new(config.chat.clone()).map_err(|e| setup(&e))?));
    registry.register(Arc::new(sinks::PushSink::new(config.push.clone()).map_err(|e| setup(&e))?));
    if let Some(email) = &config.email {
        let sink = sinks::EmailSink::with_templates(email.clone(), templates).map_err(|e| setup(&e))?;
        registry.register(Arc::new(sink));
    }
    Ok(registry)
}
