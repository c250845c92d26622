//! Fail-safe loading: a load outlives a caller that stops waiting (it carries on in its own
//! task); after `soft_timeout` a stale value is served while the load finishes in the
//! background, `hard_timeout` bounds every load, and a failed load serves the last known value
//! up to `max_stale_age` past its expiry.

use super::hybrid::HybridCache;
use super::options::EntryOptions;
use crate::{BoxError, Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// A load (the loader, then the write of what it loaded), driven by the caller that waits for
/// it, so a loader that returns at once costs no task of its own. If that caller stops waiting
/// before the load is done (a soft timeout, or the caller's own future dropped), the rest of
/// the load is handed to a task of its own ([`Drop`]): it still finishes and stores its value.
/// Only [`abort`](Self::abort) (the hard timeout) stops it. A loader that panics is an error
/// for its callers, not a panic in them.
pub(super) struct Loading<V: Send + 'static> {
    load: Option<BoxedLoad<V>>,
}

/// The boxed future of one load.
type BoxedLoad<V> = Pin<Box<dyn Future<Output = Result<Option<V>>> + Send>>;

/// A load that panicked: the panic's message.
pub(super) struct Panicked(String);

impl<V: Send + 'static> Loading<V> {
    /// Stops the load where it is.
    pub(super) fn abort(mut self) {
        self.load = None;
    }
}

impl<V: Send + 'static> Future for Loading<V> {
    type Output = std::result::Result<Result<Option<V>>, Panicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(load) = self.load.as_mut() else {
            return Poll::Ready(Err(Panicked("polled after it finished".to_owned())));
        };
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| load.as_mut().poll(cx)));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(outcome)) => {
                self.load = None;
                Poll::Ready(Ok(outcome))
            }
            Err(panic) => {
                self.load = None;
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|m| (*m).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-text panic".to_owned());
                Poll::Ready(Err(Panicked(message)))
            }
        }
    }
}

impl<V: Send + 'static> Drop for Loading<V> {
    /// A load its caller stopped waiting for carries on in a task of its own (fail-safe: the
    /// caller's soft timeout or cancellation does not stop the load or its write).
    fn drop(&mut self) {
        if let Some(load) = self.load.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                // A panic in the rest of the load has no caller left to tell; the task
                // swallows it, as it did when every load ran in its own task.
                let _ = load.await;
            });
        }
    }
}

/// Whether a load's write sends a backplane message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Announce {
    /// A refresh replaces a value other instances may hold fresh in L1: they are told.
    Yes,
    /// A load after a miss in L1 and in Redis: no instance can hold a fresh copy (L1 is never
    /// fresh longer than Redis keeps the entry), so there is nothing to tell, and the write
    /// saves the PUBLISH and its echo (a third of a miss's time).
    No,
}

impl<V> HybridCache<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// The load of `key` by `loader` (see [`Loading`]): it stores what it loads, telling
    /// other instances through the backplane when `announce` (see [`Announce`]).
    pub(super) fn start_load<F, Fut, E>(
        &self,
        key: &str,
        loader: F,
        announce: Announce,
    ) -> Loading<V>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        let cache = self.clone();
        let key = key.to_owned();
        let span = tracing::debug_span!("cache.load", cache.name = %self.inner.config.name, cache.key = %key);
        let task = async move {
            let started = Instant::now();
            let loaded = loader().await;
            cache.inner.stats.load(started.elapsed(), loaded.is_ok());
            match loaded {
                Ok(value) => {
                    let entries = vec![(key.clone(), value.clone())];
                    let store = match announce {
                        Announce::Yes => cache.store(entries, &EntryOptions::default()).await,
                        Announce::No => {
                            cache.store_quietly(entries, &EntryOptions::default()).await
                        }
                    };
                    if let Err(error) = store {
                        tracing::warn!(cache = %cache.inner.config.name, key, %error, "loaded value not cached");
                    }
                    Ok(value)
                }
                Err(error) => Err(Error::Loader {
                    key,
                    source: Arc::new(error.into()),
                }),
            }
        };
        Loading {
            load: Some(Box::pin(tracing::Instrument::instrument(task, span))),
        }
    }

    /// Waits for the load `start` starts, within the soft and hard timeouts.
    pub(super) async fn load_with_timeouts(
        &self,
        key: &str,
        start: impl FnOnce() -> Loading<V>,
        stale: Option<Option<V>>,
    ) -> Result<Option<V>> {
        let config = &self.inner.config;
        let started = Instant::now();
        let mut task = start();
        if let (Some(soft), Some(stale_value)) = (config.soft_timeout, &stale) {
            if let Ok(joined) = tokio::time::timeout(soft, &mut task).await {
                return self.settle(key, joined, stale);
            }
            // Keep the load running; it stores its value when it finishes.
            self.inner.stats.stale_served();
            return Ok(stale_value.clone());
        }
        let remaining = config.hard_timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, &mut task).await {
            Ok(joined) => self.settle(key, joined, stale),
            Err(_) => {
                task.abort();
                self.inner.stats.load(config.hard_timeout, false);
                match stale {
                    Some(value) => {
                        self.inner.stats.stale_served();
                        Ok(value)
                    }
                    None => Err(Error::LoaderTimeout {
                        key: key.to_owned(),
                        after: config.hard_timeout,
                    }),
                }
            }
        }
    }

    pub(super) fn settle(
        &self,
        key: &str,
        joined: std::result::Result<Result<Option<V>>, Panicked>,
        stale: Option<Option<V>>,
    ) -> Result<Option<V>> {
        let outcome = joined.unwrap_or_else(|Panicked(message)| {
            Err(Error::Loader {
                key: key.to_owned(),
                source: Arc::new(format!("the loader panicked: {message}").into()),
            })
        });
        match (outcome, stale) {
            (Ok(value), _) => Ok(value),
            (Err(error), Some(value)) => {
                tracing::warn!(cache = %self.inner.config.name, key, %error, "load failed; serving the stale value");
                self.inner.stats.stale_served();
                Ok(value)
            }
            (Err(error), None) => Err(error),
        }
    }
}
