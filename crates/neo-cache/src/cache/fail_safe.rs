//! Fail-safe loading: the loader runs in its own task; after `soft_timeout` a stale value is
//! served while the load finishes in the background, `hard_timeout` bounds every load, and a
//! failed load serves the last known value up to `max_stale_age` past its expiry.

use super::hybrid::HybridCache;
use super::options::EntryOptions;
use crate::{BoxError, Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinHandle;

/// A load running in its own task.
pub(super) type Loading<V> = JoinHandle<Result<Option<V>>>;

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
    /// Runs the loader in its own task, so a caller that stops waiting (soft timeout) does
    /// not stop the load; the task stores what it loads, telling other instances through the
    /// backplane when `announce` (see [`Announce`]).
    pub(super) fn spawn_load<F, Fut, E>(
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
        tokio::spawn(tracing::Instrument::instrument(task, span))
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
        joined: Result<Result<Option<V>>, tokio::task::JoinError>,
        stale: Option<Option<V>>,
    ) -> Result<Option<V>> {
        let outcome = joined.unwrap_or_else(|join| {
            Err(Error::Loader {
                key: key.to_owned(),
                source: Arc::new(format!("the loader panicked or was cancelled: {join}").into()),
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
