//! Single flight: one load per key at a time in this process (callers coalesce onto it),
//! optionally one across instances behind a short Redis lock; eager refresh of hot keys.

use super::fail_safe::{Announce, Loading};
use super::get::{L1Stale, Lookup};
use super::hybrid::HybridCache;
use super::l1::lock;
use crate::{BoxError, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl<V> HybridCache<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    pub(super) fn refresh_in_background<F, Fut, E>(&self, key: &str, loader: F, current: Option<V>)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        let cache = self.clone();
        let key = key.to_owned();
        tokio::spawn(async move {
            let start = || cache.start_load(&key, loader, Announce::Yes);
            let _ = cache.load_once(&key, start, Some(current)).await;
        });
    }

    /// `get_or_load` after an L1 miss. Callers of one key coalesce *before* Redis: the first
    /// one reads Redis and, on a miss there, loads; the others wait for its outcome, so a
    /// stampede on a missing key costs one GET, not one per caller.
    pub(super) async fn get_or_load_slow<F, Fut, E>(
        &self,
        key: &str,
        loader: F,
        l1: L1Stale<V>,
    ) -> Result<Option<V>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        self.count_l1_miss();
        self.coalesce(key, || async move {
            match self.lookup_l2(key, l1).await? {
                Lookup::Fresh { value, refresh_due } => {
                    if refresh_due {
                        self.refresh_in_background(key, loader, value.clone());
                    }
                    Ok(value)
                }
                Lookup::Miss { stale } => {
                    self.load(key, || self.start_load(key, loader, Announce::No), stale)
                        .await
                }
            }
        })
        .await
    }

    /// One load per key at a time in this process; every caller gets its outcome. `start`
    /// starts the load ([`start_load`](Self::start_load)) if this caller is the one to run it.
    pub(super) async fn load_once(
        &self,
        key: &str,
        start: impl FnOnce() -> Loading<V> + Send,
        stale: Option<Option<V>>,
    ) -> Result<Option<V>> {
        self.coalesce(key, || self.load(key, start, stale)).await
    }

    /// Runs `work` once per key at a time in this process: the first caller runs it, callers
    /// that come while it runs wait for and share its outcome.
    async fn coalesce<Fut>(&self, key: &str, work: impl FnOnce() -> Fut) -> Result<Option<V>>
    where
        Fut: Future<Output = Result<Option<V>>>,
    {
        let flight = {
            let mut flights = lock(&self.inner.flights);
            Arc::clone(flights.entry(key.to_owned()).or_default())
        };
        let mut ran = false;
        flight
            .get_or_init(|| {
                ran = true;
                work()
            })
            .await;
        if ran {
            let mut flights = lock(&self.inner.flights);
            if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                flights.remove(key);
            }
        } else {
            self.inner.stats.coalesced();
        }
        // The last holder of the flight takes its outcome without copying it (a load nobody
        // else waited for: no clone of the value); the others clone it.
        match Arc::try_unwrap(flight) {
            Ok(cell) => cell.into_inner(),
            Err(flight) => flight.get().cloned(),
        }
        .unwrap_or_else(|| {
            Err(crate::Error::invalid(
                "coalesce",
                "a load's outcome was missing after it finished",
            ))
        })
    }

    pub(super) async fn load(
        &self,
        key: &str,
        start: impl FnOnce() -> Loading<V> + Send,
        stale: Option<Option<V>>,
    ) -> Result<Option<V>> {
        let config = &self.inner.config;
        let mut held_lock = None;
        if config.distributed_lock.enabled
            && let Some(l2) = self.l2_available()
        {
            let lock_key = self.lock_key(key);
            let token = uuid::Uuid::now_v7().to_string();
            match l2
                .try_lock(&lock_key, &token, config.distributed_lock.ttl)
                .await
            {
                Ok(true) => held_lock = Some((lock_key, token)),
                Ok(false) => {
                    if let Some(value) = self.wait_for_other_instance(key).await? {
                        return Ok(value);
                    }
                }
                Err(error) => self.l2_failed(error)?,
            }
        }
        let result = self.load_with_timeouts(key, start, stale).await;
        if let (Some((lock_key, token)), Some(l2)) = (held_lock, &self.inner.l2)
            && let Err(error) = l2.unlock(&lock_key, &token).await
        {
            let _ = self.l2_failed(error);
        }
        result
    }

    /// Polls Redis while another instance holds the load lock.
    pub(super) async fn wait_for_other_instance(&self, key: &str) -> Result<Option<Option<V>>> {
        let deadline = Instant::now() + self.inner.config.distributed_lock.wait;
        let pause = Duration::from_millis(10);
        while Instant::now() < deadline {
            tokio::time::sleep(pause).await;
            if let Lookup::Fresh { value, .. } = self.lookup(key).await? {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }
}
