//! The gRPC API (tonic): `ReportingStream` (the seed's interface) and `DistributionQuery` (read-only
//! queries), defined in `proto/reporting.proto`, plus the standard health service and server
//! reflection (v1 and v1alpha) so that generic clients such as grpcurl need no `.proto` file.
//! It listens on its own address (`grpc_addr`) beside the REST API and stops with it.
//!
//! Every `ReportingStream` and `DistributionQuery` call needs `authorization: Bearer <credential>`
//! metadata (`UNAUTHENTICATED` without, `PERMISSION_DENIED` for a role that may not make it);
//! health and reflection stay open (probes and schema discovery, no data).

mod auth;
mod codec;
mod messages;
mod query;
mod reporting;
mod status;
mod updates;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::runtime::Runtime;
use proto::distribution_query_server::DistributionQueryServer;
use proto::reporting_stream_server::ReportingStreamServer;

/// Code generated from `proto/reporting.proto` by `build.rs`: messages, servers and clients.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("repdist.reporting.v1");

    /// The encoded descriptor set of `reporting.proto`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/reporting_descriptor.bin"));
}

/// How long a graceful stop waits for calls under way before cutting them off.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often health follows the runtime's own health.
const HEALTH_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// What every gRPC handler shares. `shutdown` ends streams, which would otherwise hold a graceful
/// stop open for as long as their clients stay connected.
#[derive(Clone)]
pub(crate) struct GrpcState {
    pub runtime: Arc<Runtime>,
    pub allow_private_webhooks: bool,
    pub stats_window_micros: u64,
    pub shutdown: CancellationToken,
    pub auth: Arc<crate::auth::Authenticator>,
}

/// A running gRPC listener.
pub struct GrpcServer {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Binds `addr` and serves until [`GrpcServer::shutdown`] or [`GrpcServer::abort`].
pub async fn start(
    addr: SocketAddr,
    runtime: Arc<Runtime>,
    allow_private_webhooks: bool,
    stats_window_micros: u64,
    auth: Arc<crate::auth::Authenticator>,
) -> Result<GrpcServer, GrpcError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| GrpcError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| GrpcError::Bind { addr, source })?;
    let shutdown = CancellationToken::new();
    let state = GrpcState { runtime: runtime.clone(), allow_private_webhooks, stats_window_micros, shutdown: shutdown.clone(), auth };

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ReportingStreamServer<reporting::Reporting>>().await;
    health.set_serving::<DistributionQueryServer<query::Query>>().await;
    let stream = runtime.hub().config().clone();
    tokio::spawn(follow_health(health, runtime, shutdown.clone()));

    let router = tonic::transport::Server::builder()
        // A stream client that stopped reading holds only its bounded queue; these pings find the
        // ones that are gone altogether, so their streams end.
        .http2_keepalive_interval(Some(stream.ping_interval))
        .http2_keepalive_timeout(Some(stream.idle_timeout))
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(ReportingStreamServer::new(reporting::Reporting { state: state.clone() }))
        .add_service(DistributionQueryServer::new(query::Query { state }));
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let stop = shutdown.clone();
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop.cancelled_owned()));
    tracing::info!(grpc_addr = %bound, "gRPC serving");
    Ok(GrpcServer { addr: bound, shutdown, task })
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Reports NOT_SERVING once the runtime's core loop has stopped, so load balancers stop sending.
async fn follow_health(health: tonic_health::server::HealthReporter, runtime: Arc<Runtime>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(HEALTH_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if !runtime.is_healthy() {
            break;
        }
    }
    drop(runtime);
    health.set_not_serving::<ReportingStreamServer<reporting::Reporting>>().await;
    health.set_not_serving::<DistributionQueryServer<query::Query>>().await;
    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
}

impl GrpcServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Refuses new calls, ends streams, and waits (up to a grace period) for calls under way.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let mut task = self.task;
        match tokio::time::timeout(STOP_GRACE, &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "gRPC server ended with an error"),
            Ok(Err(error)) => tracing::warn!(%error, "gRPC server task failed"),
            Err(_) => {
                tracing::warn!("gRPC calls still under way after the grace period; cutting them off");
                task.abort();
            }
        }
    }

    pub fn abort(self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}
