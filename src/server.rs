//! Starting and stopping the whole service in-process: store, runtime, HTTP and gRPC APIs.
//! `repdist serve`, `repdist demo` and the integration tests all go through [`start`].

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::bus::Bus;
use crate::config::Config;
use crate::runtime::{Runtime, RuntimeError};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("HTTP server failed: {0}")]
    Http(String),
    #[error("cache: {0}")]
    Cache(#[from] crate::cache::CacheError),
    #[error(transparent)]
    Kafka(#[from] crate::bus::kafka::KafkaBusError),
    #[error("gRPC: {0}")]
    Grpc(#[from] crate::grpc::GrpcError),
    #[error("auth: {0}")]
    Auth(String),
}

/// A running service. Dropping it without [`Server::shutdown`] stops it abruptly, as a crash would.
pub struct Server {
    http_addr: SocketAddr,
    runtime: Arc<Runtime>,
    bus: Bus,
    stop_http: CancellationToken,
    http: JoinHandle<std::io::Result<()>>,
    grpc: crate::grpc::GrpcServer,
    endpoint_status: JoinHandle<()>,
    queue_snapshot: JoinHandle<()>,
    /// The admin key the embedded default created at this start (none existed), if any.
    admin_key: Option<String>,
    data_dir: std::path::PathBuf,
}

/// Opens the store, replays unfinished work, and starts serving.
pub async fn start(config: Config) -> Result<Server, ServerError> {
    config.validate().map_err(|e| ServerError::Http(e.to_string()))?;
    let cache = config.cache.build()?;
    let store = crate::store::open(&config).await?;
    let backend = store.backend();
    let auth = Arc::new(crate::auth::Authenticator::new(store.clone(), &config.auth).map_err(|e| ServerError::Auth(e.to_string()))?);
    let admin_key = if config.auth.bootstrap_admin_key {
        crate::auth::bootstrap_admin_key(store.as_ref(), &config.data_dir).await.map_err(|e| ServerError::Auth(e.to_string()))?
    } else {
        None
    };
    let runtime = Arc::new(Runtime::start(&config, store, cache.clone()).await?);
    cache.drop_left_overs(crate::cache::keys::KEPT_FRESH_BY_CHANGES).await;
    let bus = Bus::start(&config, runtime.clone(), cache.clone()).await?;
    let state = AppState {
        runtime: runtime.clone(),
        metrics: metrics_handle()?,
        allow_private_webhooks: config.allow_private_webhooks,
        stats_window_micros: config.stats_window.as_micros() as u64,
        cache: cache.clone(),
        analytics: config.analytics.clone(),
        auth: auth.clone(),
    };
    let app = api::router(state.clone(), config.ingest.max_body_bytes);
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| ServerError::Bind { addr: config.http_addr, source })?;
    let http_addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: config.http_addr, source })?;
    let grpc = crate::grpc::start(
        config.grpc_addr,
        runtime.clone(),
        config.allow_private_webhooks,
        config.stats_window.as_micros() as u64,
        auth,
    )
    .await?;
    let stop_http = CancellationToken::new();
    let endpoint_status = api::endpoints::publish_status(state.clone(), stop_http.clone());
    let queue_snapshot = crate::runtime::queue_snapshot::publish(runtime.endpoints().clone(), cache.clone(), stop_http.clone());
    let stop = stop_http.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await
    });
    match &config.storage.database_url {
        Some(url) => {
            let database = crate::store::redacted_url(url);
            tracing::info!(%http_addr, backend, %database, workers = config.workers, bus = bus.name(), cache = cache.backend_name(), "repdist serving")
        }
        None => tracing::info!(%http_addr, backend, data_dir = %config.data_dir.display(), workers = config.workers, bus = bus.name(), cache = cache.backend_name(), "repdist serving"),
    }
    let data_dir = config.data_dir.clone();
    Ok(Server { http_addr, runtime, bus, stop_http, http, grpc, endpoint_status, queue_snapshot, admin_key, data_dir })
}

impl Server {
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.addr()
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The admin key created at this start because no key existed (also in `DATA_DIR/admin.key`).
    pub fn bootstrap_admin_key(&self) -> Option<&str> {
        self.admin_key.as_deref()
    }

    /// An admin key for in-process tools (`demo`, `bench ws`): the one created at this start, else
    /// the one in `DATA_DIR/admin.key` if it is still a valid admin key, else a new one.
    pub async fn local_admin_key(&self) -> Result<String, crate::auth::keys::KeyError> {
        if let Some(key) = &self.admin_key {
            return Ok(key.clone());
        }
        if let Ok(text) = std::fs::read_to_string(self.data_dir.join(crate::auth::ADMIN_KEY_FILE)) {
            let key = text.trim().to_string();
            let stored = self.runtime.store().api_key_by_hash(&crate::auth::keys::hash(&key)).await?;
            if stored.is_some_and(|k| k.role == crate::store::Role::Admin && k.revoked_at.is_none()) {
                return Ok(key);
            }
        }
        Ok(self.create_key(crate::store::Role::Admin, None).await?.key)
    }

    /// Creates an API key directly in the store (the CLI's and the tests' way in, beside the admin
    /// endpoint).
    pub async fn create_key(&self, role: crate::store::Role, subscriber_id: Option<String>) -> Result<crate::auth::keys::CreatedKey, crate::auth::keys::KeyError> {
        crate::auth::keys::create(self.runtime.store().as_ref(), role, subscriber_id).await
    }

    /// Graceful stop: no new connections, requests under way answered, attempts under way finished
    /// and recorded; queued deliveries stay pending for the next start.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.stop_http.cancel();
        let _ = self.endpoint_status.await;
        let _ = self.queue_snapshot.await;
        // Ends WebSocket and gRPC update streams (close code 1001), which would otherwise hold
        // their connections, and with them the graceful stop, open.
        self.runtime.hub().close();
        self.grpc.shutdown().await;
        self.bus.shutdown().await;
        let http = self.http.await.map_err(|e| ServerError::Http(e.to_string()))?;
        http.map_err(|e| ServerError::Http(e.to_string()))?;
        // Connection tasks may still hold a router clone for a moment after graceful shutdown returns.
        let mut runtime = self.runtime;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let runtime = loop {
            match Arc::try_unwrap(runtime) {
                Ok(runtime) => break runtime,
                Err(shared) if tokio::time::Instant::now() < deadline => {
                    runtime = shared;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(_) => return Err(ServerError::Http("runtime still in use by open connections".into())),
            }
        };
        runtime.shutdown().await?;
        Ok(())
    }

    /// Stops without any of the graceful steps, as close to a crash as one process can get in a test:
    /// the HTTP listener and the runtime's tasks are aborted, nothing is flushed.
    pub fn abort(self) {
        self.bus.abort();
        self.http.abort();
        self.endpoint_status.abort();
        self.queue_snapshot.abort();
        self.grpc.abort();
        drop(self.runtime);
    }
}

/// The Prometheus recorder is process-global; several servers in one process (tests) share it.
fn metrics_handle() -> Result<PrometheusHandle, ServerError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().map_err(|e| e.to_string()))
        .clone()
        .map_err(ServerError::Metrics)
}
