//! The public face: the [`Cache`] contract, [`HybridCache`]'s constructors and its
//! implementation of the contract, which hands each call to the module of its concern.

use super::admission::Doorkeeper;
use super::backplane;
use super::get::GetFuture;
use super::hybrid::{HybridCache, Inner};
use super::l1::{L1, lock};
use super::l2::RedisTier;
use super::options::{EntryOptions, WarmReport};
use super::validate::{validate_config, validate_key, validate_name};
use crate::codec::{Codec, MessagePackCodec};
use crate::config::CacheConfig;
use crate::stats::{CacheStats, Stats};
use crate::{BoxError, Error, Result};
use futures_util::StreamExt;
use neo_core::Clock;
use neo_redis::Subscribers;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The cache contract: typed values under string keys, with loading, tags and statistics.
///
/// Implemented by [`HybridCache`] in each of its configurations ([`HybridCache::memory`],
/// [`HybridCache::redis`], [`HybridCache::tiered`], [`HybridCache::in_memory`]); all of them
/// pass the same contract test suite.
pub trait Cache<V>: Send + Sync {
    /// The value under `key`, if fresh (a remembered "not found" is `Ok(None)` too).
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<V>>> + Send;

    /// Stores `value` in every tier and evicts other instances' in-process copies.
    fn set(
        &self,
        key: &str,
        value: V,
        options: &EntryOptions,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes `key` from every tier and from other instances' L1.
    fn remove(&self, key: &str) -> impl Future<Output = Result<()>> + Send;

    /// The cached value, or `loader`'s: concurrent misses of one key in this process run the
    /// loader once. `Ok(None)` from the loader is remembered for `negative_ttl`.
    fn get_or_load<F, Fut, E>(
        &self,
        key: &str,
        loader: F,
    ) -> impl Future<Output = Result<Option<V>>> + Send
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static;

    /// One result per key, in order: L1, then one MGET for the L1 misses, then one call of
    /// `loader` with the keys still missing (keys it leaves out are remembered as "not found").
    fn get_or_load_many<F, Fut, E>(
        &self,
        keys: &[String],
        loader: F,
    ) -> impl Future<Output = Vec<Result<Option<V>>>> + Send
    where
        F: FnOnce(Vec<String>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<HashMap<String, V>, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static;

    /// Removes every entry written with `tag`, in every tier and instance; returns how many
    /// Redis entries were removed.
    fn invalidate_tag(&self, tag: &str) -> impl Future<Output = Result<u64>> + Send;

    /// Removes every key matching the glob `pattern` (`*`, `?`), using SCAN in Redis.
    fn invalidate_pattern(&self, pattern: &str) -> impl Future<Output = Result<u64>> + Send;

    /// Removes every entry of this named cache.
    fn clear(&self) -> impl Future<Output = Result<u64>> + Send;

    /// The counters so far.
    fn stats(&self) -> CacheStats;
}

impl<V> HybridCache<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// In process only (moka): for data one instance may cache on its own.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid name or prefix.
    pub fn memory(config: CacheConfig) -> Result<Self> {
        Self::build(config, None, None, None, true)
    }

    /// Redis only: every read is one round trip, nothing is kept in process.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid name, prefix or URL.
    pub fn redis(config: CacheConfig, redis_url: &str) -> Result<Self> {
        let l2 = RedisTier::connect(redis_url, &config)?;
        Self::build(config, Some(l2), None, None, false)
    }

    /// Redis only, on the Redis `redis` describes: one server (`redis://`), TLS (`rediss://`
    /// with its CA file and client certificate) or a Redis Cluster (`cluster.nodes`). The pool
    /// size and the timeout of every call are `config.l2`'s (`redis.pool_size` and
    /// `redis.timeout` are not used).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid name or prefix, or settings `redis` refuses (conflicting
    /// modes, an unreadable TLS file; see [`neo_redis::RedisConfig::mode`]).
    pub fn redis_on(config: CacheConfig, redis: &neo_redis::RedisConfig) -> Result<Self> {
        let (l2, _) = RedisTier::connect_with(redis, &config)?;
        Self::build(config, Some(l2), None, None, false)
    }

    /// Both tiers, with the pub/sub backplane when `config.backplane.enabled` (must be called
    /// inside a tokio runtime, which runs the backplane task).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid name, prefix or URL, or no tokio runtime.
    pub fn tiered(config: CacheConfig, redis_url: &str) -> Result<Self> {
        let l2 = RedisTier::connect(redis_url, &config)?;
        let subscribers = Subscribers::new(&neo_redis::RedisConfig::new(redis_url))?;
        Self::build(config, Some(l2), Some(subscribers), None, true)
    }

    /// Both tiers on the Redis `redis` describes (see [`redis_on`](Self::redis_on)), with the
    /// backplane when `config.backplane.enabled` (on a cluster it subscribes on one node, the
    /// next one when that node fails).
    ///
    /// # Errors
    /// As [`redis_on`](Self::redis_on), and [`Error::Config`] without a tokio runtime.
    pub fn tiered_on(config: CacheConfig, redis: &neo_redis::RedisConfig) -> Result<Self> {
        let (l2, backplane) = RedisTier::connect_with(redis, &config)?;
        Self::build(config, Some(l2), Some(backplane), None, true)
    }

    /// In process with a clock you control ([`neo_core::ManualClock`]): for your own unit
    /// tests, where TTLs and stale ages should pass at the turn of a hand.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid name or prefix.
    pub fn in_memory(config: CacheConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        Self::build(config, None, None, Some(clock), true)
    }

    /// Uses `codec` instead of MessagePack for values stored in Redis (e.g. [`JsonCodec`]
    /// to read them in `redis-cli`).
    ///
    /// [`JsonCodec`]: crate::JsonCodec
    ///
    /// # Errors
    /// [`Error::Config`] when the cache is already shared (cloned) or in use.
    pub fn with_codec(mut self, codec: impl Codec<V>) -> Result<Self> {
        let inner = Arc::get_mut(&mut self.inner)
            .ok_or_else(|| Error::Config("set the codec before cloning the cache".into()))?;
        inner.codec = Arc::new(codec);
        Ok(self)
    }

    fn build(
        config: CacheConfig,
        l2: Option<RedisTier>,
        subscribers: Option<Subscribers>,
        clock: Option<Arc<dyn Clock>>,
        with_l1: bool,
    ) -> Result<Self> {
        validate_config(&config)?;
        let stats = Stats::new(&config.name);
        let namespace = format!("{}{}:", config.key_prefix, config.name);
        let channel = format!("{}{}#invalidations", config.key_prefix, config.name);
        // No moka TTL: each entry's own freshness and hard limit are checked on read (one
        // clock read instead of two on the hit path), and `l1.capacity` bounds what lingers.
        // No eviction listener either (see `L1::insert`).
        let l1 = match (with_l1, &clock) {
            (false, _) => None,
            (true, Some(_)) => Some(L1::Manual(Mutex::new(HashMap::new()))),
            (true, None) => Some(L1::Moka(
                moka::sync::Cache::builder()
                    .max_capacity(config.l1.capacity)
                    .build_with_hasher(foldhash::fast::RandomState::default()),
            )),
        };
        let (shutdown, _) = watch::channel(false);
        let (backplane_connected, _) = watch::channel(0);
        let backplane_subscribers =
            subscribers.filter(|_| with_l1 && config.backplane.enabled && l2.is_some());
        let doorkeeper =
            matches!(l1, Some(L1::Moka(_))).then(|| Doorkeeper::new(config.l1.capacity));
        let inner = Arc::new(Inner {
            namespace,
            channel,
            l1,
            doorkeeper,
            l2,
            codec: Arc::new(MessagePackCodec),
            clock,
            flights: Mutex::new(HashMap::new()),
            stats,
            epoch: AtomicU64::new(0),
            l2_down_until_ms: AtomicU64::new(0),
            instance: uuid::Uuid::now_v7().to_string(),
            own_in_flight: AtomicU64::new(0),
            shutdown,
            backplane: Mutex::new(None),
            backplane_connected,
            config,
        });
        if let Some(subscribers) = backplane_subscribers {
            backplane::start(&inner, subscribers)?;
        }
        Ok(HybridCache { inner })
    }

    /// The configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// Entries in L1 now (0 without an L1). Applies moka's pending writes first, so it costs
    /// more than a lookup: for a metrics sampler, not a request path.
    pub fn l1_entries(&self) -> u64 {
        match &self.inner.l1 {
            Some(super::l1::L1::Moka(cache)) => {
                cache.run_pending_tasks();
                cache.entry_count()
            }
            Some(super::l1::L1::Manual(map)) => super::l1::lock(map).len() as u64,
            None => 0,
        }
    }

    /// Waits until the backplane has subscribed (at least `times` times in total: reconnects
    /// count), or `timeout` passes; returns whether it happened. For tests and readiness checks.
    pub async fn backplane_ready(&self, times: u64, timeout: Duration) -> bool {
        let mut connected = self.inner.backplane_connected.subscribe();
        tokio::time::timeout(timeout, connected.wait_for(|n| *n >= times))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops the backplane task. Reads and writes keep working; other instances' invalidations
    /// are no longer applied here.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        let task = lock(&self.inner.backplane).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Loads every key not already fresh, at most `warm_concurrency` at a time.
    pub async fn warm<F, Fut, E>(&self, keys: Vec<String>, loader: F) -> WarmReport
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        let loader = Arc::new(loader);
        let results = futures_util::stream::iter(keys)
            .map(|key| {
                let loader = Arc::clone(&loader);
                let cache = self.clone();
                async move {
                    let for_loader = key.clone();
                    cache.get_or_load(&key, move || loader(for_loader)).await
                }
            })
            .buffer_unordered(self.inner.config.warm_concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        WarmReport {
            cached: results.len() - failed,
            failed,
        }
    }
}

impl<V> Cache<V> for HybridCache<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<V>>> + Send {
        GetFuture {
            cache: self,
            key,
            started: false,
            miss: None,
        }
    }

    async fn set(&self, key: &str, value: V, options: &EntryOptions) -> Result<()> {
        validate_key(key)?;
        options
            .tags
            .iter()
            .try_for_each(|t| validate_name("tag", t))?;
        self.store(vec![(key.to_owned(), Some(value))], options)
            .await
    }

    async fn remove(&self, key: &str) -> Result<()> {
        self.remove_many(std::slice::from_ref(&key)).await
    }

    fn get_or_load<F, Fut, E>(
        &self,
        key: &str,
        loader: F,
    ) -> impl Future<Output = Result<Option<V>>> + Send
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        let fast = validate_key(key).map(|()| self.l1_fresh(key));
        async move {
            match fast? {
                Ok((value, refresh_due)) => {
                    if refresh_due {
                        self.refresh_in_background(key, loader, value.clone());
                    }
                    Ok(value)
                }
                // The lookup goes on from what the L1 read found, without reading L1 again.
                Err(l1) => Box::pin(self.get_or_load_slow(key, loader, l1)).await,
            }
        }
    }

    fn get_or_load_many<F, Fut, E>(
        &self,
        keys: &[String],
        loader: F,
    ) -> impl Future<Output = Vec<Result<Option<V>>>> + Send
    where
        F: FnOnce(Vec<String>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<HashMap<String, V>, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        self.load_many(keys, loader)
    }

    fn invalidate_tag(&self, tag: &str) -> impl Future<Output = Result<u64>> + Send {
        self.remove_tagged(tag)
    }

    fn invalidate_pattern(&self, pattern: &str) -> impl Future<Output = Result<u64>> + Send {
        self.remove_matching(pattern)
    }

    fn clear(&self) -> impl Future<Output = Result<u64>> + Send {
        self.remove_all()
    }

    fn stats(&self) -> CacheStats {
        self.inner.stats.snapshot()
    }
}
