//! The retention purge: every `retention.purge_interval`, reports past their
//! `metadata.retention_days` whose deliveries have all ended are purged from the store of record
//! (payload, delivery history, dead letters, notifications; see [`crate::store::retention`]), in
//! batches of `retention.batch` reports, one transaction each.
//!
//! What else held them, and what happens there:
//! - the dataflow keeps no per-delivery state once a delivery has ended (only pending deliveries and
//!   retries), so nothing is left in it; its event-id deduplication remembers ids (not payloads) for
//!   its horizon of one day, and its stats windows are aggregates;
//! - no cache entry holds per-delivery data (subscriptions, channel status and stats are cached);
//! - the live streams' replay buffer is a bounded ring of the latest updates, overwritten in
//!   turn, not a store;
//! - the analytics store (DuckDB) deletes the purged deliveries' rows (deliveries, attempts, dead
//!   letters) after each purge; its stats windows are aggregates and stay.
//!
//! Each run also prunes the personalised-file cache ([`ContentStore::prune`]) of reports whose last
//! file is `retention.content_cache_ttl` old, whatever their retention: those files are derived.
//!
//! After a purge, `GET /deliveries/{id}` (and gRPC `GetDeliveryStatus`) answer 404 / `NOT_FOUND`,
//! the dead letter is gone from the list and cannot be replayed, the notification is gone from the
//! subscriber's inbox, and a re-sent event id (or the same report id published again) is no longer
//! recognised: it is accepted and delivered as new.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::clock::wall_micros;
use super::analytics_feed::AnalyticsFeed;
use crate::config::RetentionConfig;
use crate::content::ContentStore;
use crate::store::retention::Purged;
use crate::store::{Store, StoreError};

/// Runs [`purge_all`] and prunes `content` every `retention.purge_interval` until shutdown. A
/// failed run is logged and tried again at the next interval: nothing depends on it being prompt.
pub(super) fn spawn(
    store: Arc<dyn Store>,
    analytics: Option<Arc<AnalyticsFeed>>,
    content: Arc<ContentStore>,
    retention: RetentionConfig,
    shutdown: CancellationToken,
) -> Option<JoinHandle<()>> {
    if retention.purge_interval.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(retention.purge_interval) => {}
            }
            let run = purge_all(store.as_ref(), wall_micros(), retention.batch, &shutdown);
            match run.await {
                Ok(purged) if !purged.is_empty() => {
                    tracing::info!(reports = purged.reports, deliveries = purged.deliveries.len(), "retention: purged");
                    if let Some(analytics) = &analytics {
                        forget_in_analytics(analytics.clone(), purged.deliveries).await;
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "retention: purge failed; trying again at the next interval"),
            }
            let (content, ttl) = (content.clone(), retention.content_cache_ttl);
            match tokio::task::spawn_blocking(move || content.prune(ttl)).await {
                Ok(Ok(pruned)) if pruned.reports > 0 => {
                    metrics::counter!("repdist_content_cache_pruned_bytes_total").increment(pruned.bytes);
                    tracing::info!(reports = pruned.reports, bytes = pruned.bytes, "retention: personalised files pruned");
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(%error, "retention: pruning personalised files failed; trying again at the next interval"),
                Err(error) => tracing::warn!(%error, "retention: the pruning task failed"),
            }
        }
    }))
}

/// Deletes the purged deliveries' rows from the analytics store; a failure leaves them there, logged.
async fn forget_in_analytics(analytics: Arc<AnalyticsFeed>, delivery_ids: Vec<String>) {
    let forgotten = tokio::task::spawn_blocking(move || {
        analytics.store().ingest().forget(delivery_ids, std::time::Duration::from_secs(30))
    });
    match forgotten.await {
        Ok(Ok(rows)) => tracing::debug!(rows, "retention: analytics rows of the purged deliveries deleted"),
        Ok(Err(error)) => tracing::warn!(%error, "retention: the purged deliveries' analytics rows stay"),
        Err(error) => tracing::warn!(%error, "retention: the analytics deletion task failed"),
    }
}

/// Purges in batches until a batch purges nothing (or shutdown), and counts what went.
pub async fn purge_all(store: &dyn Store, now: dataflows::Time, batch: u32, shutdown: &CancellationToken) -> Result<Purged, StoreError> {
    let mut total = Purged::default();
    while !shutdown.is_cancelled() {
        let purged = store.purge_expired(now, batch).await?;
        if purged.is_empty() {
            break;
        }
        metrics::counter!("repdist_retention_purged_reports_total").increment(purged.reports);
        metrics::counter!("repdist_retention_purged_deliveries_total").increment(purged.deliveries.len() as u64);
        total.reports += purged.reports;
        total.deliveries.extend(purged.deliveries);
    }
    Ok(total)
}
