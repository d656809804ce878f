//! A cached bearer token, shared by every delivery of one provider.
//!
//! FCM access tokens cost a round trip to the token endpoint and APNs provider tokens must not be
//! regenerated more than about once every 20 minutes (Apple answers `TooManyProviderTokenUpdates`),
//! so both are kept until shortly before they expire. The slot is an async mutex held while a
//! token is fetched: callers that arrive during a refresh wait for it and reuse its result, so a
//! burst of deliveries refreshes once. A caller's own deadline (the sink wraps the whole attempt in
//! `request.timeout`) bounds that wait.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::SinkError;

/// A token and how long it may be used.
pub struct Issued {
    pub value: String,
    pub lifetime: Duration,
}

struct Cached {
    value: Arc<str>,
    refresh_at: Instant,
}

pub struct TokenCache {
    slot: Mutex<Option<Cached>>,
    /// How long before the end of its lifetime a token is replaced, so that a token is never sent
    /// in its last seconds and rejected on arrival.
    refresh_before: Duration,
}

impl TokenCache {
    pub fn new(refresh_before: Duration) -> TokenCache {
        TokenCache { slot: Mutex::new(None), refresh_before }
    }

    /// The cached token, or a new one from `issue` when there is none or it is due for refresh.
    /// A failed `issue` leaves the slot empty, so the next caller tries again.
    pub async fn get<F, Fut>(&self, issue: F) -> Result<Arc<str>, SinkError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Issued, SinkError>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some(cached) = slot.as_ref() {
            if Instant::now() < cached.refresh_at {
                return Ok(cached.value.clone());
            }
        }
        *slot = None;
        let issued = issue().await?;
        let value: Arc<str> = issued.value.into();
        let keep = issued.lifetime.saturating_sub(self.refresh_before.min(issued.lifetime / 2));
        *slot = Some(Cached { value: value.clone(), refresh_at: Instant::now() + keep });
        Ok(value)
    }

    /// Forgets `rejected`, which the provider refused. Only that exact token is dropped: if another
    /// delivery already replaced it, the newer token stays.
    pub async fn invalidate(&self, rejected: &str) {
        let mut slot = self.slot.lock().await;
        if slot.as_ref().is_some_and(|cached| &*cached.value == rejected) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    async fn issuer(count: &AtomicUsize, lifetime: Duration) -> Result<Issued, SinkError> {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(Issued { value: format!("token-{n}"), lifetime })
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_refresh_and_it_is_renewed_before_expiry() {
        let cache = Arc::new(TokenCache::new(Duration::from_secs(300)));
        let count = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let (cache, count) = (cache.clone(), count.clone());
                tokio::spawn(async move {
                    cache.get(|| issuer(&count, Duration::from_secs(3600))).await.map(|t| t.to_string())
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("joined").expect("issued"), "token-1");
        }
        assert_eq!(count.load(Ordering::SeqCst), 1);

        tokio::time::advance(Duration::from_secs(3600 - 301)).await;
        assert_eq!(&*cache.get(|| issuer(&count, Duration::from_secs(3600))).await.expect("ok"), "token-1");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(&*cache.get(|| issuer(&count, Duration::from_secs(3600))).await.expect("ok"), "token-2");
    }

    #[tokio::test(start_paused = true)]
    async fn invalidation_drops_only_the_rejected_token_and_failures_are_not_cached() {
        let cache = TokenCache::new(Duration::from_secs(60));
        let count = AtomicUsize::new(0);
        let failed = cache.get(|| async { Err(SinkError::transient("token endpoint down")) }).await;
        assert!(failed.is_err());
        let first = cache.get(|| issuer(&count, Duration::from_secs(3600))).await.expect("issued");
        cache.invalidate("some-older-token").await;
        assert_eq!(cache.get(|| issuer(&count, Duration::from_secs(3600))).await.expect("cached"), first);
        cache.invalidate(&first).await;
        assert_eq!(&*cache.get(|| issuer(&count, Duration::from_secs(3600))).await.expect("new"), "token-2");
    }
}
