//! Dead device tokens: from a push provider's "this token is gone" to a subscription version that
//! says so, so later reports are not sent to it.
//!
//! The push sink stays I/O only: it classifies FCM `UNREGISTERED`, APNs 410 and the like as a
//! permanent failure marked with [`sinks::is_dead_token`]. The dispatcher, which knows the task
//! (subscription and the token it used), hands such a failure to [`DeadTokenReporter::observe`];
//! the keeper task here adds the token to the current version's `mobile_push.dead_tokens` and
//! applies it as a subscription change through the sequencer, published to the subscription topic
//! like any change made here, and drops the subscriber's cached subscription list. Reports matched
//! from then on render to an immediate permanent failure without contacting the provider.
//!
//! The change is made against the subscription's *current* version: if the subscriber has
//! replaced the token meanwhile, there is nothing to mark. Reading the current version and applying
//! the marked one happen under the runtime's subscription write lock (exclusively), so a change
//! arriving over the API or the bus in between cannot be overwritten with the older version.
//!
//! The reporter's queue is bounded. A notice that does not fit is counted and logged, not waited
//! for (the dispatcher must not block on it); nothing is lost for good, because the next delivery to
//! that token fails the same way and reports it again.

use std::sync::Arc;

use dataflows::delivery::DeliveryTask;
use dataflows::subscription::{MobilePushSettings, ReportSubscription, SubscriptionStatus};
use sinks::{is_dead_token, SinkError};
use tokio::sync::{mpsc, oneshot, RwLock};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::sequencer::Command;
use crate::cache::CacheClient;
use crate::store::Store;

/// Notices waiting for the keeper; past this, notices are dropped (and counted).
const QUEUE: usize = 1024;

/// One token found dead while delivering for a subscription.
#[derive(Debug)]
struct DeadToken {
    subscription_id: String,
    /// A credential: never logged.
    token: String,
}

/// The dispatcher's side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct DeadTokenReporter {
    notices: mpsc::Sender<DeadToken>,
}

impl DeadTokenReporter {
    /// Looks at a failed attempt; a dead-token failure of a push delivery is queued for the keeper.
    pub fn observe(&self, task: &DeliveryTask, error: &SinkError) {
        if !is_dead_token(error) {
            return;
        }
        let Some(token) = task.settings.mobile_push.as_ref().and_then(MobilePushSettings::target) else { return };
        let notice = DeadToken { subscription_id: task.subscription_id.clone(), token: token.to_string() };
        match self.notices.try_send(notice) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(notice)) => {
                metrics::counter!("repdist_dead_token_notices_dropped_total").increment(1);
                tracing::warn!(
                    subscription_id = %notice.subscription_id,
                    "dead-token queue full; the token is marked when a later delivery finds it dead again"
                );
            }
            // The keeper stopped: the service is shutting down.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// What the keeper needs to turn a notice into a subscription version.
pub struct Keeper {
    pub store: Arc<dyn Store>,
    pub commands: mpsc::Sender<Command>,
    pub cache: CacheClient,
    /// Held exclusively from reading the current version to applying the marked one.
    pub subscription_writes: Arc<RwLock<()>>,
}

impl Keeper {
    /// Starts the keeper; it runs until `shutdown`. Notices still queued then are dropped (see the
    /// module docs for why that loses nothing).
    pub fn spawn(self, shutdown: CancellationToken) -> (DeadTokenReporter, JoinHandle<()>) {
        let (notices, mut queue) = mpsc::channel::<DeadToken>(QUEUE);
        let task = tokio::spawn(async move {
            loop {
                let notice = tokio::select! {
                    notice = queue.recv() => match notice { Some(notice) => notice, None => return },
                    _ = shutdown.cancelled() => return,
                };
                let subscription_id = notice.subscription_id.clone();
                tokio::select! {
                    result = self.mark(notice) => match result {
                        Ok(true) => {
                            metrics::counter!("repdist_dead_tokens_marked_total").increment(1);
                            tracing::info!(%subscription_id, "push token reported dead by the provider; marked on the subscription");
                        }
                        Ok(false) => {}
                        Err(error) => tracing::warn!(%subscription_id, %error, "could not mark a dead push token; a later delivery will report it again"),
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
        });
        (DeadTokenReporter { notices }, task)
    }

    /// Applies the mark; `Ok(false)` when there is nothing to do (no such subscription any more,
    /// cancelled, the token replaced or already marked).
    async fn mark(&self, notice: DeadToken) -> Result<bool, String> {
        let _exclusive = self.subscription_writes.write().await;
        let stored = self.store.subscription(&notice.subscription_id).await.map_err(|e| e.to_string())?;
        let Some(stored) = stored else { return Ok(false) };
        let Some(marked) = with_dead_token(stored.subscription, &notice.token) else { return Ok(false) };
        let subscriber_id = marked.subscriber_id.clone();
        let (reply, answer) = oneshot::channel();
        let command = Command::Subscription { subscription: marked, publish: true, reply };
        self.commands.send(command).await.map_err(|_| "the service is shutting down".to_string())?;
        let applied = answer.await.map_err(|_| "the service is shutting down".to_string())?;
        // Committed, or possibly committed: either way the cached list may be stale now.
        self.cache.invalidate(&crate::cache::keys::subscriptions(&subscriber_id)).await;
        applied.map_err(|e| e.to_string())?;
        Ok(true)
    }
}

/// The next version of `subscription` with `token` marked dead, or `None` when that changes
/// nothing: cancelled, no push settings, another target by now, or already marked.
fn with_dead_token(mut subscription: ReportSubscription, token: &str) -> Option<ReportSubscription> {
    if subscription.status == SubscriptionStatus::Cancelled {
        return None;
    }
    let push = subscription.delivery_preferences.notification_settings.mobile_push.as_mut()?;
    if push.target() != Some(token) || push.dead_tokens.iter().any(|dead| dead == token) {
        return None;
    }
    if push.dead_tokens.len() >= MobilePushSettings::MAX_DEAD_TOKENS {
        push.dead_tokens.remove(0);
    }
    push.dead_tokens.push(token.to_string());
    Some(subscription)
}

#[cfg(test)]
mod tests {
    use dataflows::subscription::{NotificationSettings, PushProvider};

    use super::*;

    fn subscription(provider: PushProvider, target: &str, dead: &[&str]) -> ReportSubscription {
        let (device_token, topic_url) = match provider {
            PushProvider::Ntfy => (None, Some(target.to_string())),
            _ => (Some(target.to_string()), None),
        };
        let mut subscription: ReportSubscription = serde_json::from_value(serde_json::json!({
            "subscription_id": "s1", "subscriber_id": "c1", "subscriber_type": "USER", "subscription_type": "REAL_TIME",
            "report_types": ["PERFORMANCE_REPORT"], "delivery_preferences": {"channels": ["MOBILE_PUSH"]},
            "filters": {}, "status": "active"
        }))
        .expect("a subscription");
        subscription.delivery_preferences.notification_settings = NotificationSettings {
            mobile_push: Some(MobilePushSettings {
                provider,
                device_token,
                topic_url,
                dead_tokens: dead.iter().map(|t| t.to_string()).collect(),
            }),
            ..Default::default()
        };
        subscription
    }

    fn dead_tokens(subscription: &ReportSubscription) -> Vec<String> {
        subscription.delivery_preferences.notification_settings.mobile_push.as_ref().unwrap().dead_tokens.clone()
    }

    #[test]
    fn the_current_target_is_marked_once() {
        let marked = with_dead_token(subscription(PushProvider::Fcm, "t1", &[]), "t1").expect("marked");
        assert_eq!(dead_tokens(&marked), ["t1"]);
        assert!(with_dead_token(marked, "t1").is_none(), "already marked");
        let ntfy = with_dead_token(subscription(PushProvider::Ntfy, "https://n/t", &["old"]), "https://n/t").unwrap();
        assert_eq!(dead_tokens(&ntfy), ["old", "https://n/t"]);
    }

    #[test]
    fn a_replaced_token_or_a_cancelled_subscription_is_left_alone() {
        assert!(with_dead_token(subscription(PushProvider::Apns, "ab02", &[]), "ab01").is_none());
        let mut cancelled = subscription(PushProvider::Fcm, "t1", &[]);
        cancelled.status = SubscriptionStatus::Cancelled;
        assert!(with_dead_token(cancelled, "t1").is_none());
        let mut without_push = subscription(PushProvider::Fcm, "t1", &[]);
        without_push.delivery_preferences.notification_settings.mobile_push = None;
        assert!(with_dead_token(without_push, "t1").is_none());
    }

    #[test]
    fn the_list_stays_bounded_dropping_the_oldest() {
        let full: Vec<String> = (0..MobilePushSettings::MAX_DEAD_TOKENS).map(|i| format!("old{i}")).collect();
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        let marked = with_dead_token(subscription(PushProvider::Fcm, "t1", &full), "t1").unwrap();
        let dead = dead_tokens(&marked);
        assert_eq!(dead.len(), MobilePushSettings::MAX_DEAD_TOKENS);
        assert_eq!((dead[0].as_str(), dead.last().unwrap().as_str()), ("old1", "t1"));
    }
}
