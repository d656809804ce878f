//! The running service: timely workers for the dataflow, the sequencer (the one writer), the
//! dispatcher (the sinks), wired with bounded queues and one shutdown signal.

pub mod analytics_feed;
pub mod board;
pub mod clock;
pub mod dead_tokens;
mod digest_payload;
mod digests;
pub mod dispatcher;
pub mod email_relay;
pub mod endpoints;
pub mod hub;
pub mod outbox;
pub mod queue_snapshot;
mod recovery;
pub(crate) mod render;
pub mod retention;
pub mod sequencer;
pub mod templates;
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

use crate::cache::CacheClient;
use crate::content::ContentStore;
use crate::config::Config;
use crate::store::Store;
use analytics_feed::AnalyticsFeed;
use dispatcher::{DispatchQueue, DispatcherConfig};
use hub::Hub;
use sequencer::{Command, Sequencer};
use templates::EmailTemplates;
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
    email_relay: Arc<email_relay::EmailRelay>,
    templates: EmailTemplates,
    /// Shared by every subscription change; taken exclusively by the dead-token keeper, which
    /// derives its change from the current version (see `dead_tokens`).
    subscription_writes: Arc<tokio::sync::RwLock<()>>,
    dispatch: Arc<DispatchQueue>,
    shutdown: CancellationToken,
    sequencer: Option<JoinHandle<Result<(), RuntimeError>>>,
    dispatcher: Option<JoinHandle<()>>,
    dead_tokens: Option<JoinHandle<()>>,
    retention: Option<JoinHandle<()>>,
}

impl Runtime {
    /// Starts workers, replays what the last run left unfinished, then starts taking requests.
    /// `cache` is the API's read cache: changes the runtime makes on its own (a dead push token
    /// marked on a subscription) invalidate what they change in it.
    pub async fn start(config: &Config, store: Arc<dyn Store>, cache: CacheClient) -> Result<Runtime, RuntimeError> {
        let hub = Arc::new(Hub::new(config.stream.clone()));
        let default_locale = config.email.as_ref().map_or("en", |email| email.default_locale.as_str());
        let templates = EmailTemplates::load(Arc::new(TemplateStore::new(default_locale)), store.clone())
            .await
            .map_err(|e| RuntimeError::Unavailable(format!("cannot load the email templates: {e}")))?;
        let email_relay = email_relay::EmailRelay::new(config.email.clone(), templates.live().clone())
            .map_err(|e| RuntimeError::Unavailable(e.to_string()))?;
        email_relay
            .reload(store.as_ref())
            .await
            .map_err(|e| RuntimeError::Unavailable(format!("cannot read the delivery channels: {e}")))?;
        let email_relay = Arc::new(email_relay);
        let sinks = Arc::new(build_sinks(config, store.clone(), email_relay.clone())?);
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
        let dispatch = Arc::new(DispatchQueue::new(
            endpoints::EndpointResolver::new(config),
            config.delivery.endpoints.clone(),
        ));
        let views = Arc::new(Views::new(open_analytics(config).await));
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
            hub: hub.clone(),
            max_outstanding: config.delivery.max_outstanding,
            max_batch: config.ingest.max_batch,
            outbox: config.kafka.is_enabled(),
            outbox_written: outbox_written.clone(),
            state: recovered.state,
        };

        let shutdown = CancellationToken::new();
        let subscription_writes = Arc::new(tokio::sync::RwLock::new(()));
        let keeper = dead_tokens::Keeper {
            store: store.clone(),
            commands: command_tx.clone(),
            cache,
            subscription_writes: subscription_writes.clone(),
        };
        let (dead_token_reporter, dead_tokens) = keeper.spawn(shutdown.clone());
        let content = Arc::new(ContentStore::new(config.data_dir.join("content")));
        let dispatcher_done = CancellationToken::new();
        let dispatcher = {
            let (sinks, dispatch, shutdown, done) = (sinks.clone(), dispatch.clone(), shutdown.clone(), dispatcher_done.clone());
            let dispatcher_config = DispatcherConfig {
                max_in_flight: config.delivery.max_in_flight,
                attempt_timeout: config.delivery.attempt_timeout,
                dead_tokens: dead_token_reporter,
                content: content.clone(),
            };
            tokio::spawn(async move {
                dispatcher::run(dispatch, sinks, dispatcher_config, finished_tx, shutdown).await;
                done.cancel();
            })
        };
        let sequencer = tokio::spawn(sequencer.run(shutdown.clone(), dispatcher_done));
        let analytics = views.analytics().cloned();
        let retention = retention::spawn(store.clone(), analytics, content, config.retention.clone(), shutdown.clone());
        Ok(Runtime {
            commands: command_tx,
            queue_timeout: config.ingest.queue_timeout,
            views,
            outbox_written,
            hub,
            store,
            sinks,
            email_relay,
            templates,
            subscription_writes,
            dispatch,
            shutdown,
            sequencer: Some(sequencer),
            dispatcher: Some(dispatcher),
            dead_tokens: Some(dead_tokens),
            retention,
        })
    }

    /// Accepts a report; answers once it and its delivery set are durable.
    pub async fn submit_report(&self, event: ReportDistribution) -> Result<ReportAck, RuntimeError> {
        let event = self.with_content_facts(event).await;
        self.call(|reply| Command::Report { event, reply }).await?
    }

    /// Queues a report for the sequencer, waiting (without a deadline) while the queue is full, and
    /// returns the pending acknowledgement. Reports queued one after another are accepted in that
    /// order; the Kafka consumer relies on it to keep a partition's order while pipelining.
    pub async fn enqueue_report(
        &self,
        event: ReportDistribution,
    ) -> Result<oneshot::Receiver<Result<ReportAck, RuntimeError>>, RuntimeError> {
        let event = self.with_content_facts(event).await;
        let permit = self.commands.reserve().await.map_err(|_| RuntimeError::ShuttingDown)?;
        let (reply, answer) = oneshot::channel();
        permit.send(Command::Report { event, reply });
        Ok(answer)
    }

    /// The report with its content facts (see `dataflows::content::ContentFacts`) computed from its
    /// tabular file, replacing whatever the publisher sent: decided here, before the report enters
    /// the sequencer, so they are durable with it and a TRIGGERED subscription's content condition
    /// is decided in the dataflow (a replay after a crash decides the same). A file that cannot be
    /// read yields no facts (content conditions then do not hold) and is logged; the report is
    /// still accepted, as every other subscription may want it.
    async fn with_content_facts(&self, mut event: ReportDistribution) -> ReportDistribution {
        event.report_data.content_facts.clear();
        if ContentStore::tabular_source(&event).is_none() {
            return event;
        }
        let probe = event.clone();
        let error = match crate::content::off_runtime(move || ContentStore::facts(&probe)).await {
            Some(Ok(facts)) => {
                event.report_data.content_facts = facts;
                return event;
            }
            Some(Err(error)) => error.to_string(),
            None => "the computation failed inside Polars".to_string(),
        };
        tracing::warn!(event_id = %event.event_id, file_path = %event.report_data.file_path, %error,
            "no content facts for the report: its content conditions do not hold");
        event
    }

    /// Applies a subscription version (create, update, pause, cancel) from now on.
    pub async fn change_subscription(&self, subscription: ReportSubscription) -> Result<(), RuntimeError> {
        let _shared = self.subscription_writes.read().await;
        self.call(|reply| Command::Subscription { subscription, publish: true, reply }).await?
    }

    /// Applies a subscription version that arrived from the bus (another instance's change): the
    /// same as [`Runtime::change_subscription`] but not published again.
    pub async fn apply_subscription_from_bus(&self, subscription: ReportSubscription) -> Result<(), RuntimeError> {
        let _shared = self.subscription_writes.read().await;
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

    /// Channel names with a configured sink, e.g. `API_WEBHOOK`: EMAIL while there is a relay.
    pub fn enabled_channels(&self) -> Vec<&'static str> {
        let mut channels = self.sinks.channels();
        if self.email_relay.source().is_none() {
            channels.retain(|channel| *channel != sinks::EmailSink::CHANNEL);
        }
        channels
    }

    /// The EMAIL channel's SMTP relay (from `delivery_channels` or `[email]`).
    pub fn email_relay(&self) -> &email_relay::EmailRelay {
        &self.email_relay
    }

    /// The email templates: the set the EMAIL sink renders with, and the database behind it (the
    /// templates API changes them through this). Held even when EMAIL is disabled, so templates can
    /// be prepared before a relay is configured.
    pub fn templates(&self) -> &EmailTemplates {
        &self.templates
    }

    /// The deliveries waiting to be attempted, by endpoint, with each endpoint's limits and breaker.
    pub fn endpoints(&self) -> &Arc<DispatchQueue> {
        &self.dispatch
    }

    /// Whether the core loop is still running.
    pub fn is_healthy(&self) -> bool {
        self.sequencer.as_ref().is_some_and(|s| !s.is_finished())
    }

    /// Stops taking requests, lets attempts under way finish and makes their outcomes durable.
    /// Deliveries still queued stay pending in the store and resume on the next start.
    pub async fn shutdown(mut self) -> Result<(), RuntimeError> {
        self.shutdown.cancel();
        self.hub.close();
        if let Some(dispatcher) = self.dispatcher.take() {
            let _ = dispatcher.await;
        }
        if let Some(dead_tokens) = self.dead_tokens.take() {
            let _ = dead_tokens.await;
        }
        if let Some(retention) = self.retention.take() {
            let _ = retention.await;
        }
        let stopped = match self.sequencer.take() {
            Some(sequencer) => sequencer.await.map_err(|e| RuntimeError::Unavailable(e.to_string()))?,
            None => Ok(()),
        };
        // Every outcome is durable and shipped by now: write the rest and close the file.
        if let Some(feed) = self.views.analytics().cloned() {
            let _ = tokio::task::spawn_blocking(move || feed.close()).await;
        }
        stopped
    }

    /// The analytics store, when it is on and open.
    pub fn analytics(&self) -> Option<&Arc<AnalyticsFeed>> {
        self.views.analytics()
    }
}

/// Opens the analytics store under the data directory when `analytics.enabled`. A store that cannot
/// be opened (another process holds it, a disk problem) is logged and left out: deliveries never
/// depend on analytics, and the analytics endpoints then answer 503. The short wait covers a runtime
/// in this process still closing the same file (a stopped one has released it already).
async fn open_analytics(config: &Config) -> Option<Arc<AnalyticsFeed>> {
    if !config.analytics.enabled {
        return None;
    }
    let options = config.analytics.store_options(&config.data_dir);
    let opened = tokio::task::spawn_blocking(move || crate::analytics::AnalyticsStore::open(options, Duration::from_secs(2))).await;
    match opened {
        Ok(Ok(store)) => Some(Arc::new(AnalyticsFeed::new(Arc::new(store), config.stats_window.as_micros() as u64))),
        Ok(Err(error)) => {
            tracing::error!(%error, "analytics store unavailable; serving without analytics");
            None
        }
        Err(error) => {
            tracing::error!(%error, "opening the analytics store failed; serving without analytics");
            None
        }
    }
}

/// Registers every channel this configuration can serve: webhook, dashboard, SFTP, chat and push
/// always (their destinations and credentials come with each subscription), and EMAIL through its
/// relay, which is offered while a relay is configured. `enabled_channels()` follows from it, and
/// with it which channels a subscription may name.
fn build_sinks(
    config: &Config,
    store: Arc<dyn Store>,
    email_relay: Arc<email_relay::EmailRelay>,
) -> Result<SinkRegistry, RuntimeError> {
    let setup = |e: &dyn std::fmt::Display| RuntimeError::Unavailable(e.to_string());
    let webhook_config = sinks::webhook::WebhookConfig {
        pool_max_idle_per_host: config.delivery.webhook_pool_per_host,
        connect_timeout: config.delivery.attempt_timeout,
        allow_private_destinations: config.allow_private_webhooks,
        ..Default::default()
    };
    let webhook = sinks::webhook::WebhookSink::new(webhook_config).map_err(|e| setup(&e))?;
    let board = Arc::new(board::StoreBoard { store });
    let mut registry = SinkRegistry::default();
    registry.register(Arc::new(webhook));
    registry.register(Arc::new(sinks::dashboard::DashboardSink::new(board)));
    registry.register(Arc::new(sinks::SftpSink::new(config.sftp.clone()).map_err(|e| setup(&e))?));
    // One switch for every destination a subscriber names (admission checks it too).
    let chat = sinks::ChatConfig { allow_private_destinations: config.chat.allow_private_destinations || config.allow_private_webhooks, ..config.chat.clone() };
    registry.register(Arc::new(sinks::ChatSink::new(chat).map_err(|e| setup(&e))?));
    let push = sinks::PushConfig { allow_private_destinations: config.push.allow_private_destinations || config.allow_private_webhooks, ..config.push.clone() };
    registry.register(Arc::new(sinks::PushSink::new(push).map_err(|e| setup(&e))?));
    registry.register(email_relay);
    Ok(registry)
}
