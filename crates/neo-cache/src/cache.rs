//! The engine behind every configuration: L1, L2, loading, fail-safe, invalidation.

use crate::codec::{Codec, MessagePackCodec, frame, unframe};
use crate::config::CacheConfig;
use crate::redis_tier::{RedisTier, Write};
use crate::stats::{CacheStats, Stats};
use crate::{BoxError, Error, Result};
use futures_util::StreamExt;
use neo_core::Clock;
use rand::RngExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, watch};
use tokio::task::JoinHandle;

/// Longest accepted key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Per-write options: TTL override and tags.
///
/// # Example
/// ```
/// use neo_cache::EntryOptions;
/// use std::time::Duration;
/// let options = EntryOptions::default()
///     .ttl(Duration::from_secs(60))
///     .tag("org:42")
///     .tag("plan:pro");
/// assert_eq!(options.tags().len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryOptions {
    ttl: Option<Duration>,
    tags: Vec<String>,
}

impl EntryOptions {
    /// Freshness of this entry instead of the cache's `ttl`.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Attaches a tag; [`Cache::invalidate_tag`] removes every entry carrying it.
    #[must_use]
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// The tags attached.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }
}

/// What [`HybridCache::warm`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WarmReport {
    /// Keys now cached (loaded, or already fresh).
    pub cached: usize,
    /// Keys whose load failed.
    pub failed: usize,
}

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

/// An entry's tags, behind one thin pointer (see [`Entry`]).
type Tags = Arc<Box<[String]>>;

/// One cached entry. Cloned on every L1 read, so everything but the value is `Copy` or
/// shared: an untagged hit costs the value's clone and nothing else.
///
/// `repr(C)` keeps the value first, where moka's `get` writes it, so moving it out of a hit
/// copies in the same chunks moka stored (a copy straddling those stores stalls on store
/// forwarding); the tags are one thin pointer for the same reason. Measured: the L1 hit
/// without these two went from 1.12-1.13x raw moka to 1.17-1.20x.
#[derive(Debug, Clone)]
#[repr(C)]
struct Entry<V> {
    value: Option<V>,
    fresh_until_ms: u64,
    stale_until_ms: u64,
    ttl_ms: u64,
    tags: Option<Tags>,
    epoch: u64,
}

impl<V> Entry<V> {
    /// Fresh at `now` and written in the current `epoch` (entries of an older epoch may have
    /// missed invalidations while the backplane was down).
    #[inline(always)]
    fn is_fresh(&self, now: u64, epoch: u64) -> bool {
        Self::fresh(self.epoch, self.fresh_until_ms, now, epoch)
    }

    /// [`is_fresh`](Self::is_fresh) on the two fields it reads, for a caller that has moved
    /// them out of the entry.
    #[inline(always)]
    fn fresh(written_in: u64, fresh_until_ms: u64, now: u64, epoch: u64) -> bool {
        written_in == epoch && now < fresh_until_ms
    }

    /// Within the last `eager` share of its TTL at `now`: a read should refresh it in the
    /// background. Only for a fresh entry.
    fn refresh_due(&self, now: u64, eager: f64) -> bool {
        eager > 0.0 && ((self.fresh_until_ms - now) as f64) < eager * self.ttl_ms as f64
    }

    fn has_tag(&self, tag: &str) -> bool {
        self.tags
            .as_ref()
            .is_some_and(|t| t.iter().any(|x| x == tag))
    }
}

enum L1<V> {
    /// Keys hash with foldhash, seeded per process (hashbrown's default), not SipHash: the
    /// hash is a good part of a hit, and namespaced keys give an attacker no seed to aim at.
    Moka(moka::sync::Cache<String, Entry<V>, foldhash::fast::RandomState>),
    Manual(Mutex<HashMap<String, Entry<V>>>),
}

impl<V: Clone + Send + Sync + 'static> L1<V> {
    #[inline(always)]
    fn get(&self, key: &str) -> Option<Entry<V>> {
        match self {
            L1::Moka(cache) => cache.get(key),
            L1::Manual(map) => manual_get(map, key),
        }
    }

    fn insert(&self, key: String, entry: Entry<V>) {
        match self {
            L1::Moka(cache) => cache.insert(key, entry),
            L1::Manual(map) => {
                lock(map).insert(key, entry);
            }
        }
    }

    fn remove(&self, key: &str) {
        match self {
            L1::Moka(cache) => cache.invalidate(key),
            L1::Manual(map) => {
                lock(map).remove(key);
            }
        }
    }

    fn remove_if(&self, predicate: impl Fn(&str, &Entry<V>) -> bool + Send + Sync + 'static) {
        match self {
            // A scan instead of moka's invalidation closures, which would tax every read;
            // tag and pattern invalidations are rare next to hits.
            L1::Moka(cache) => {
                for (key, entry) in cache.iter() {
                    if predicate(&key, &entry) {
                        cache.invalidate(key.as_str());
                    }
                }
            }
            L1::Manual(map) => lock(map).retain(|k, e| !predicate(k, e)),
        }
    }

    fn clear(&self) {
        match self {
            L1::Moka(cache) => cache.invalidate_all(),
            L1::Manual(map) => lock(map).clear(),
        }
    }
}

/// The test-clock L1's read, out of line so the moka hit path stays small (inlined, the map
/// lookup and its lock grew the hit's stack frame).
#[inline(never)]
fn manual_get<V: Clone>(map: &Mutex<HashMap<String, Entry<V>>>, key: &str) -> Option<Entry<V>> {
    lock(map).get(key).cloned()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How often the `neo-cache-clock` thread refreshes the time that freshness checks read.
const CLOCK_TICK: std::time::Duration = std::time::Duration::from_millis(2);

/// Unix milliseconds as of the last tick of the `neo-cache-clock` thread: one atomic load on
/// the L1 hit path instead of a clock read, at most [`CLOCK_TICK`] (plus scheduling delay) old,
/// which is precise enough for cache freshness. The thread starts with the first read and
/// lives as long as the process; if it cannot start, every read asks the clock itself.
#[inline]
fn system_now_ms() -> u64 {
    static RECENT_MS: AtomicU64 = AtomicU64::new(0);
    static TICKER: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let recent = RECENT_MS.load(Ordering::Relaxed);
    if recent != 0 {
        return recent;
    }
    TICKER.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("neo-cache-clock".to_owned())
            .spawn(|| {
                loop {
                    RECENT_MS.store(precise_now_ms(), Ordering::Relaxed);
                    std::thread::sleep(CLOCK_TICK);
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "could not start the neo-cache-clock thread; reading the clock on every lookup");
        }
    });
    precise_now_ms()
}

/// Unix milliseconds of a test clock, out of line: the calendar arithmetic would otherwise
/// sit in (and grow) every L1 hit.
#[cold]
#[inline(never)]
fn clock_now_ms(clock: &dyn Clock) -> u64 {
    u64::try_from(clock.now().timestamp_millis()).unwrap_or(0)
}

/// Unix milliseconds from a monotonic clock anchored to the wall clock once per process, so
/// freshness never moves backwards when the wall clock is adjusted.
fn precise_now_ms() -> u64 {
    static ANCHOR: std::sync::OnceLock<(std::time::Instant, u64)> = std::sync::OnceLock::new();
    let (start, unix_ms) = ANCHOR.get_or_init(|| {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        (std::time::Instant::now(), unix_ms)
    });
    unix_ms + u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The future `get` returns. Its first poll reads L1 and, on a hit, hands the value straight
/// to the caller: no state machine is built and the value is moved once. A miss starts the
/// lookup, boxed behind `dyn` (owning a handle and the key) so the hit path neither carries
/// the (large) future nor calls its destructor; its Redis round trip dwarfs the allocations
/// and the dynamic call.
struct GetFuture<'c, 'k, V> {
    cache: &'c HybridCache<V>,
    key: &'k str,
    started: bool,
    miss: Option<MissFuture<V>>,
}

type MissFuture<V> = Pin<Box<dyn Future<Output = Result<Option<V>>> + Send>>;

/// Builds and boxes the miss future outside `poll`, so the hit path's stack frame does not
/// hold the (large) future while it is built.
#[cold]
#[inline(never)]
fn start_miss<V>(cache: &HybridCache<V>, key: &str) -> MissFuture<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let (cache, key) = (cache.clone(), key.to_owned());
    Box::pin(async move { cache.get_miss(&key).await })
}

impl<V> Future for GetFuture<'_, '_, V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Output = Result<Option<V>>;

    #[inline]
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        if !this.started {
            this.started = true;
            let hit = this.cache.l1_poll(this.key);
            if hit.is_ready() {
                return hit;
            }
            this.miss = Some(start_miss(this.cache, this.key));
        }
        match &mut this.miss {
            Some(miss) => miss.as_mut().poll(cx),
            None => panic!("the future of HybridCache::get was polled after it completed"),
        }
    }
}

type Flight<V> = Arc<OnceCell<Result<Option<V>>>>;

struct Inner<V> {
    config: CacheConfig,
    /// `{key_prefix}{name}:`
    namespace: String,
    channel: String,
    l1: Option<L1<V>>,
    l2: Option<RedisTier>,
    codec: Arc<dyn Codec<V>>,
    clock: Option<Arc<dyn Clock>>,
    flights: Mutex<HashMap<String, Flight<V>>>,
    stats: Stats,
    /// Bumped when the backplane loses Redis: L1 entries of older epochs are not fresh.
    epoch: AtomicU64,
    /// Redis is skipped until this time (ms) after an error.
    l2_down_until_ms: AtomicU64,
    instance: String,
    shutdown: watch::Sender<bool>,
    backplane: Mutex<Option<JoinHandle<()>>>,
    backplane_connected: watch::Sender<u64>,
}

/// A typed, named cache: moka in process (L1), Redis shared (L2), or both.
///
/// Cheap to clone; all clones share the tiers, the in-flight loads and the statistics. Call
/// [`shutdown`](HybridCache::shutdown) to stop the backplane task.
///
/// # Example
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> neo_cache::Result<()> {
/// use neo_cache::{Cache, CacheConfig, HybridCache};
/// let cache = HybridCache::<String>::memory(CacheConfig::named("greetings"))?;
/// let value = cache
///     .get_or_load("en", || async { Ok::<_, std::io::Error>(Some("hello".to_owned())) })
///     .await?;
/// assert_eq!(value.as_deref(), Some("hello"));
/// assert_eq!(cache.get("en").await?.as_deref(), Some("hello"));
/// # Ok(()) }
/// ```
pub struct HybridCache<V> {
    inner: Arc<Inner<V>>,
}

impl<V> Clone for HybridCache<V> {
    fn clone(&self) -> Self {
        HybridCache {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<V> std::fmt::Debug for HybridCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HybridCache")
            .field("name", &self.inner.config.name)
            .field("l1", &self.inner.l1.is_some())
            .field("l2", &self.inner.l2.is_some())
            .finish_non_exhaustive()
    }
}

impl<V> Drop for Inner<V> {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.backplane).take() {
            task.abort();
        }
    }
}

enum Lookup<V> {
    Fresh { value: Option<V>, refresh_due: bool },
    Miss { stale: Option<Option<V>> },
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
        Self::build(config, None, None, true)
    }

    /// Redis only: every read is one round trip, nothing is kept in process.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid name, prefix or URL.
    pub fn redis(config: CacheConfig, redis_url: &str) -> Result<Self> {
        let l2 = RedisTier::connect(redis_url, &config)?;
        Self::build(config, Some((l2, redis_url)), None, false)
    }

    /// Both tiers, with the pub/sub backplane when `config.backplane.enabled` (must be called
    /// inside a tokio runtime, which runs the backplane task).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid name, prefix or URL, or no tokio runtime.
    pub fn tiered(config: CacheConfig, redis_url: &str) -> Result<Self> {
        let l2 = RedisTier::connect(redis_url, &config)?;
        Self::build(config, Some((l2, redis_url)), None, true)
    }

    /// In process with a clock you control ([`neo_core::ManualClock`]): for your own unit
    /// tests, where TTLs and stale ages should pass at the turn of a hand.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid name or prefix.
    pub fn in_memory(config: CacheConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        Self::build(config, None, Some(clock), true)
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
        l2: Option<(RedisTier, &str)>,
        clock: Option<Arc<dyn Clock>>,
        with_l1: bool,
    ) -> Result<Self> {
        validate_config(&config)?;
        let stats = Stats::new(&config.name);
        let namespace = format!("{}{}:", config.key_prefix, config.name);
        let channel = format!("{}{}#invalidations", config.key_prefix, config.name);
        let l1 = match (with_l1, &clock) {
            (false, _) => None,
            (true, Some(_)) => Some(L1::Manual(Mutex::new(HashMap::new()))),
            (true, None) => None, // built below, once the eviction listener can reach the stats
        };
        let (shutdown, _) = watch::channel(false);
        let (backplane_connected, _) = watch::channel(0);
        let backplane_url = match &l2 {
            Some((_, url)) if with_l1 && config.backplane.enabled => Some((*url).to_owned()),
            _ => None,
        };
        // No moka TTL: each entry's own freshness and hard limit are checked on read (one
        // clock read instead of two on the hit path), and `l1.capacity` bounds what lingers.
        let inner = Arc::new_cyclic(|weak: &Weak<Inner<V>>| {
            let l1 = l1.or_else(|| {
                with_l1.then(|| {
                    let listener_cache = weak.clone();
                    L1::Moka(
                        moka::sync::Cache::builder()
                            .max_capacity(config.l1.capacity)
                            .eviction_listener(move |_key, _value, cause| {
                                if cause == moka::notification::RemovalCause::Size
                                    && let Some(inner) = listener_cache.upgrade()
                                {
                                    inner.stats.eviction();
                                }
                            })
                            .build_with_hasher(foldhash::fast::RandomState::default()),
                    )
                })
            });
            Inner {
                namespace,
                channel,
                l1,
                l2: l2.map(|(tier, _)| tier),
                codec: Arc::new(MessagePackCodec),
                clock,
                flights: Mutex::new(HashMap::new()),
                stats,
                epoch: AtomicU64::new(0),
                l2_down_until_ms: AtomicU64::new(0),
                instance: uuid::Uuid::now_v7().to_string(),
                shutdown,
                backplane: Mutex::new(None),
                backplane_connected,
                config,
            }
        });
        if let Some(url) = backplane_url {
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                Error::Config(
                    "a tiered cache with a backplane must be built inside a tokio runtime".into(),
                )
            })?;
            let client = redis::Client::open(url.as_str()).map_err(|_| {
                Error::Config("the Redis URL is not valid (its text is not shown)".into())
            })?;
            let task = runtime.spawn(backplane(Arc::downgrade(&inner), client));
            *lock(&inner.backplane) = Some(task);
        }
        Ok(HybridCache { inner })
    }

    /// The configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
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

    /// Removes `keys` from both tiers in one Redis round trip, and from every other
    /// instance's L1 with one backplane message.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad key (nothing is removed then); a Redis error only when
    /// the cache is configured to surface them.
    ///
    /// # Example
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> neo_cache::Result<()> {
    /// use neo_cache::{Cache, CacheConfig, EntryOptions, HybridCache};
    /// let cache = HybridCache::<u32>::memory(CacheConfig::named("counts"))?;
    /// cache.set("a", 1, &EntryOptions::default()).await?;
    /// cache.set("b", 2, &EntryOptions::default()).await?;
    /// cache.remove_many(&["a", "b"]).await?;
    /// assert_eq!(cache.get("a").await?, None);
    /// # Ok(()) }
    /// ```
    pub async fn remove_many<K: AsRef<str> + Sync>(&self, keys: &[K]) -> Result<()> {
        keys.iter().try_for_each(|key| validate_key(key.as_ref()))?;
        if keys.is_empty() {
            return Ok(());
        }
        for key in keys {
            if let Some(l1) = &self.inner.l1 {
                l1.remove(key.as_ref());
            }
            self.inner.stats.invalidation(false);
        }
        if let Some(l2) = self.l2_available() {
            let names: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
            let message = self.message('m', &names.join("\n"));
            let publish = self
                .publishes()
                .then_some((self.inner.channel.as_str(), message.as_str()));
            let stored: Vec<String> = names.iter().map(|key| self.redis_key(key)).collect();
            if let Err(error) = l2.delete(&stored, publish).await {
                self.l2_failed(error)?;
            }
        }
        Ok(())
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

    #[inline]
    fn now_ms(&self) -> u64 {
        match &self.inner.clock {
            None => system_now_ms(),
            Some(clock) => clock_now_ms(clock.as_ref()),
        }
    }

    fn l2_available(&self) -> Option<&RedisTier> {
        let tier = self.inner.l2.as_ref()?;
        (self.inner.l2_down_until_ms.load(Ordering::Relaxed) <= system_now_ms()).then_some(tier)
    }

    /// Records a Redis failure; returns the error when callers should see it.
    fn l2_failed(&self, error: Error) -> Result<()> {
        self.inner.stats.l2_error();
        let retry = self.inner.config.l2.retry_after;
        self.inner.l2_down_until_ms.store(
            system_now_ms() + u64::try_from(retry.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        tracing::warn!(cache = %self.inner.config.name, error = %error, "redis (L2) failed; carrying on without it");
        if self.inner.config.l2.fail_on_error {
            Err(error)
        } else {
            Ok(())
        }
    }

    fn redis_key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.inner.namespace.len() + key.len());
        full.push_str(&self.inner.namespace);
        full.push_str(key);
        full
    }

    fn tag_key(&self, tag: &str) -> String {
        format!(
            "{}{}#tag:{tag}",
            self.inner.config.key_prefix, self.inner.config.name
        )
    }

    fn lock_key(&self, key: &str) -> String {
        format!(
            "{}{}#lock:{key}",
            self.inner.config.key_prefix, self.inner.config.name
        )
    }

    /// The L1 hit path of `get_or_load` (through [`l1_fresh`](Self::l1_fresh)), synchronous
    /// so callers do not build the (large) lookup future for it: a fresh, current-epoch entry,
    /// counted as a hit, and the time it was judged fresh at. The time and epoch are read
    /// before the lookup, so their loads overlap it. `get` has its own,
    /// [`l1_poll`](Self::l1_poll).
    #[inline(always)]
    fn l1_hit(&self, key: &str) -> Option<(Entry<V>, u64)> {
        let l1 = self.inner.l1.as_ref()?;
        let (now, epoch) = (self.now_ms(), self.inner.epoch.load(Ordering::Relaxed));
        let entry = l1.get(key).filter(|entry| entry.is_fresh(now, epoch))?;
        self.inner.stats.l1(true);
        Some((entry, now))
    }

    /// The L1 hit path of `get`: [`l1_hit`](Self::l1_hit) shaped as `get`'s own poll result
    /// (`Pending`: no fresh entry), so that a hit moves the value once, straight into the
    /// caller's result, and the rest of the entry is never copied.
    #[inline(always)]
    fn l1_poll(&self, key: &str) -> std::task::Poll<Result<Option<V>>> {
        use std::task::Poll;
        let Some(l1) = self.inner.l1.as_ref() else {
            return Poll::Pending;
        };
        let (now, epoch) = (self.now_ms(), self.inner.epoch.load(Ordering::Relaxed));
        match l1.get(key) {
            // `tags` stays bound, so it is dropped after the value has moved out.
            Some(Entry {
                value,
                fresh_until_ms,
                epoch: written_in,
                tags: _tags,
                ..
            }) if Entry::<V>::fresh(written_in, fresh_until_ms, now, epoch) => {
                self.inner.stats.l1(true);
                Poll::Ready(Ok(value))
            }
            _ => Poll::Pending,
        }
    }

    /// [`l1_hit`](Self::l1_hit) for `get_or_load`: the value and whether it is due for an
    /// eager refresh.
    #[inline]
    fn l1_fresh(&self, key: &str) -> Option<(Option<V>, bool)> {
        let (entry, now) = self.l1_hit(key)?;
        let refresh_due = entry.refresh_due(now, self.inner.config.eager_refresh);
        Some((entry.value, refresh_due))
    }

    /// `get` after an L1 miss. L1 only ever holds valid keys (every write validates), so a
    /// hit needs no check; a miss validates before anything reaches Redis.
    async fn get_miss(&self, key: &str) -> Result<Option<V>> {
        validate_key(key)?;
        self.get_slow(key).await
    }

    async fn get_slow(&self, key: &str) -> Result<Option<V>> {
        match self.lookup(key).await? {
            Lookup::Fresh { value, .. } => Ok(value),
            Lookup::Miss { stale: Some(value) }
                if self.inner.l2.is_some() && self.l2_available().is_none() =>
            {
                // Redis is down: the last known value beats nothing.
                self.inner.stats.stale_served();
                Ok(value)
            }
            Lookup::Miss { .. } => Ok(None),
        }
    }

    fn refresh_in_background<F, Fut, E>(&self, key: &str, loader: F, current: Option<V>)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        let cache = self.clone();
        let key = key.to_owned();
        tokio::spawn(async move {
            let _ = cache.load_once(&key, loader, Some(current)).await;
        });
    }

    async fn get_or_load_slow<F, Fut, E>(&self, key: &str, loader: F) -> Result<Option<V>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        match self.lookup(key).await? {
            Lookup::Fresh { value, refresh_due } => {
                if refresh_due {
                    self.refresh_in_background(key, loader, value.clone());
                }
                Ok(value)
            }
            Lookup::Miss { stale } => self.load_once(key, loader, stale).await,
        }
    }

    async fn lookup(&self, key: &str) -> Result<Lookup<V>> {
        let now = self.now_ms();
        let mut stale: Option<Option<V>> = None;
        let mut stale_fresh_until = 0;
        if let Some(l1) = &self.inner.l1 {
            if let Some(entry) = l1.get(key) {
                if entry.is_fresh(now, self.inner.epoch.load(Ordering::Relaxed)) {
                    self.inner.stats.l1(true);
                    return Ok(Lookup::Fresh {
                        value: entry.value.clone(),
                        refresh_due: entry.refresh_due(now, self.inner.config.eager_refresh),
                    });
                }
                if now < entry.stale_until_ms {
                    stale = Some(entry.value.clone());
                    stale_fresh_until = entry.fresh_until_ms;
                }
            }
            self.inner.stats.l1(false);
        }
        if let Some(l2) = self.l2_available() {
            match l2.get(&self.redis_key(key)).await {
                Ok(Some(bytes)) => match self.decode(&bytes) {
                    Ok((fresh_until, value)) if now < fresh_until => {
                        self.inner.stats.l2(true);
                        self.fill_l1_from(key, &value, fresh_until, now);
                        return Ok(Lookup::Fresh {
                            value,
                            refresh_due: false,
                        });
                    }
                    Ok((fresh_until, value)) => {
                        self.inner.stats.l2(false);
                        if fresh_until > stale_fresh_until {
                            stale = Some(value);
                        }
                    }
                    Err(error) => {
                        self.inner.stats.l2(false);
                        tracing::warn!(cache = %self.inner.config.name, key, %error, "unreadable entry in redis treated as a miss");
                    }
                },
                Ok(None) => self.inner.stats.l2(false),
                Err(error) => self.l2_failed(error)?,
            }
        }
        if !self.inner.config.fail_safe.enabled {
            stale = None;
        }
        Ok(Lookup::Miss { stale })
    }

    fn decode(&self, bytes: &[u8]) -> Result<(u64, Option<V>)> {
        let frame = unframe(bytes, self.inner.config.max_payload_bytes)?;
        let value = match frame.payload {
            Some(payload) => Some(self.inner.codec.decode(&payload)?),
            None => None,
        };
        Ok((frame.fresh_until_ms, value))
    }

    fn stale_until(&self, fresh_until: u64) -> u64 {
        let fail_safe = &self.inner.config.fail_safe;
        if fail_safe.enabled {
            fresh_until.saturating_add(
                u64::try_from(fail_safe.max_stale_age.as_millis()).unwrap_or(u64::MAX),
            )
        } else {
            fresh_until
        }
    }

    /// [`fill_l1`](Self::fill_l1) with a copy of `value`, made only when there is an L1.
    fn fill_l1_from(&self, key: &str, value: &Option<V>, fresh_until: u64, now: u64) {
        if self.inner.l1.is_some() {
            self.fill_l1(key, value.clone(), fresh_until, now, None);
        }
    }

    fn fill_l1(&self, key: &str, value: Option<V>, fresh_until: u64, now: u64, tags: Option<Tags>) {
        let Some(l1) = &self.inner.l1 else { return };
        let l1_fresh = match self.inner.config.l1.ttl {
            Some(ttl) => fresh_until.min(now + u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            None => fresh_until,
        };
        l1.insert(
            key.to_owned(),
            Entry {
                value,
                fresh_until_ms: l1_fresh,
                stale_until_ms: self.stale_until(fresh_until),
                ttl_ms: l1_fresh.saturating_sub(now).max(1),
                tags,
                epoch: self.inner.epoch.load(Ordering::Relaxed),
            },
        );
    }

    fn ttl_for(&self, value_present: bool, options: &EntryOptions) -> Duration {
        let base = match (options.ttl, value_present) {
            (Some(ttl), _) => ttl,
            (None, true) => self.inner.config.ttl,
            (None, false) => self.inner.config.negative_ttl,
        };
        let jitter = self.inner.config.ttl_jitter.clamp(0.0, 1.0);
        if jitter > 0.0 {
            base.mul_f64(1.0 + rand::rng().random_range(0.0..jitter))
        } else {
            base
        }
    }

    /// Writes entries to L2 (one round trip, with one backplane message) and L1.
    async fn store(&self, entries: Vec<(String, Option<V>)>, options: &EntryOptions) -> Result<()> {
        let now = self.now_ms();
        let tags: Option<Tags> =
            (!options.tags.is_empty()).then(|| Arc::new(options.tags.clone().into_boxed_slice()));
        let mut writes = Vec::with_capacity(entries.len());
        let mut prepared = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let ttl = self.ttl_for(value.is_some(), options);
            let fresh_until = now + u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            if self.inner.l2.is_some() {
                let payload = value
                    .as_ref()
                    .map(|v| self.inner.codec.encode(v))
                    .transpose()?;
                let (bytes, sizes) = frame(
                    payload.as_deref(),
                    fresh_until,
                    self.inner.config.compression,
                    self.inner.config.compression_threshold,
                )?;
                if bytes.len() > self.inner.config.max_payload_bytes {
                    return Err(Error::PayloadTooLarge {
                        key,
                        size: bytes.len(),
                        max: self.inner.config.max_payload_bytes,
                    });
                }
                self.inner.stats.stored(sizes.encoded, sizes.stored);
                writes.push(Write {
                    key: self.redis_key(&key),
                    bytes,
                    ttl: Duration::from_millis(self.stale_until(fresh_until) - now),
                    tag_keys: options.tags.iter().map(|t| self.tag_key(t)).collect(),
                });
            }
            prepared.push((key, value, fresh_until));
        }
        if let Some(l2) = self.l2_available() {
            let message = match prepared.as_slice() {
                [(key, _, _)] => self.message('k', key),
                _ => self.message(
                    'm',
                    &prepared
                        .iter()
                        .map(|(k, _, _)| k.as_str())
                        .collect::<Vec<_>>()
                        .join("\n"),
                ),
            };
            let publish = self
                .publishes()
                .then_some((self.inner.channel.as_str(), message.as_str()));
            if let Err(error) = l2.write(&writes, publish).await {
                self.l2_failed(error)?;
            }
        }
        for (key, value, fresh_until) in prepared {
            self.fill_l1(&key, value, fresh_until, now, tags.clone());
        }
        Ok(())
    }

    fn publishes(&self) -> bool {
        self.inner.l1.is_some() && self.inner.config.backplane.enabled
    }

    fn message(&self, kind: char, payload: &str) -> String {
        format!("{}\n{kind}\n{payload}", self.inner.instance)
    }

    /// Runs the loader in its own task, so a caller that stops waiting (soft timeout) does
    /// not stop the load; the task stores what it loads.
    fn spawn_load<F, Fut, E>(&self, key: &str, loader: F) -> JoinHandle<Result<Option<V>>>
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
                    let store = cache
                        .store(vec![(key.clone(), value.clone())], &EntryOptions::default())
                        .await;
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

    async fn load<F, Fut, E>(
        &self,
        key: &str,
        loader: F,
        stale: Option<Option<V>>,
    ) -> Result<Option<V>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
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
        let result = self.load_with_timeouts(key, loader, stale).await;
        if let (Some((lock_key, token)), Some(l2)) = (held_lock, &self.inner.l2)
            && let Err(error) = l2.unlock(&lock_key, &token).await
        {
            let _ = self.l2_failed(error);
        }
        result
    }

    /// Polls Redis while another instance holds the load lock.
    async fn wait_for_other_instance(&self, key: &str) -> Result<Option<Option<V>>> {
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

    async fn load_with_timeouts<F, Fut, E>(
        &self,
        key: &str,
        loader: F,
        stale: Option<Option<V>>,
    ) -> Result<Option<V>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        let config = &self.inner.config;
        let started = Instant::now();
        let mut task = self.spawn_load(key, loader);
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

    fn settle(
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

    /// One load per key at a time in this process; every caller gets its outcome.
    async fn load_once<F, Fut, E>(
        &self,
        key: &str,
        loader: F,
        stale: Option<Option<V>>,
    ) -> Result<Option<V>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        let flight = {
            let mut flights = lock(&self.inner.flights);
            Arc::clone(flights.entry(key.to_owned()).or_default())
        };
        let mut ran = false;
        let outcome = flight
            .get_or_init(|| {
                ran = true;
                self.load(key, loader, stale)
            })
            .await
            .clone();
        if ran {
            let mut flights = lock(&self.inner.flights);
            if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                flights.remove(key);
            }
        } else {
            self.inner.stats.coalesced();
        }
        outcome
    }

    fn apply_remote(&self, kind: &str, payload: &str) {
        let Some(l1) = &self.inner.l1 else { return };
        match kind {
            "k" => l1.remove(payload),
            "m" => payload.split('\n').for_each(|k| l1.remove(k)),
            "t" => {
                let tag = payload.to_owned();
                l1.remove_if(move |_, e| e.has_tag(&tag));
            }
            "p" => {
                let pattern = payload.to_owned();
                l1.remove_if(move |k, _| glob_match(&pattern, k));
            }
            "c" => l1.clear(),
            other => {
                tracing::warn!(cache = %self.inner.config.name, kind = other, "unknown backplane message");
                return;
            }
        }
        self.inner.stats.invalidation(true);
    }

    async fn publish_invalidation(&self, kind: char, payload: &str) -> Result<()> {
        if !self.publishes() {
            return Ok(());
        }
        if let Some(l2) = self.l2_available()
            && let Err(error) = l2
                .publish(&self.inner.channel, &self.message(kind, payload))
                .await
        {
            self.l2_failed(error)?;
        }
        Ok(())
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
                Some((value, refresh_due)) => {
                    if refresh_due {
                        self.refresh_in_background(key, loader, value.clone());
                    }
                    Ok(value)
                }
                None => Box::pin(self.get_or_load_slow(key, loader)).await,
            }
        }
    }

    async fn get_or_load_many<F, Fut, E>(
        &self,
        keys: &[String],
        loader: F,
    ) -> Vec<Result<Option<V>>>
    where
        F: FnOnce(Vec<String>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<HashMap<String, V>, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        let mut results: Vec<Option<Result<Option<V>>>> = vec![None; keys.len()];
        let mut stale: HashMap<&str, Option<V>> = HashMap::new();
        let now = self.now_ms();
        let epoch = self.inner.epoch.load(Ordering::Relaxed);
        let fail_safe = self.inner.config.fail_safe.enabled;
        for (i, key) in keys.iter().enumerate() {
            if let Err(error) = validate_key(key) {
                results[i] = Some(Err(error));
                continue;
            }
            let Some(entry) = self.inner.l1.as_ref().and_then(|l1| l1.get(key)) else {
                if self.inner.l1.is_some() {
                    self.inner.stats.l1(false);
                }
                continue;
            };
            if entry.is_fresh(now, epoch) {
                self.inner.stats.l1(true);
                results[i] = Some(Ok(entry.value.clone()));
            } else {
                self.inner.stats.l1(false);
                if fail_safe && now < entry.stale_until_ms {
                    stale.insert(key, entry.value.clone());
                }
            }
        }
        // The positions still unresolved, in input order. A key asked for twice is read twice
        // from Redis: cheaper than hashing every key to find the rare repeat.
        let mut missing: Vec<(usize, &str)> = results
            .iter()
            .enumerate()
            .filter(|(_, result)| result.is_none())
            .map(|(i, _)| (i, keys[i].as_str()))
            .collect();
        if let (Some(l2), false) = (self.l2_available(), missing.is_empty()) {
            let names: Vec<&str> = missing.iter().map(|&(_, key)| key).collect();
            match l2.mget(&self.inner.namespace, &names).await {
                Ok(values) => {
                    let mut still = Vec::new();
                    for (&(i, key), bytes) in missing.iter().zip(values) {
                        match bytes.map(|b| self.decode(&b)) {
                            Some(Ok((fresh_until, value))) if now < fresh_until => {
                                self.fill_l1_from(key, &value, fresh_until, now);
                                results[i] = Some(Ok(value));
                            }
                            Some(Ok((_, value))) => {
                                if fail_safe {
                                    stale.entry(key).or_insert(value);
                                }
                                still.push((i, key));
                            }
                            _ => still.push((i, key)),
                        }
                    }
                    let misses = still.len() as u64;
                    self.inner
                        .stats
                        .l2_counts(missing.len() as u64 - misses, misses);
                    missing = still;
                }
                Err(error) => {
                    if let Err(error) = self.l2_failed(error) {
                        for &(i, _) in &missing {
                            results[i] = Some(Err(error.clone()));
                        }
                        missing.clear();
                    }
                }
            }
        }
        if !missing.is_empty() {
            // The loader is asked for each key once.
            let mut asked: HashSet<&str, foldhash::fast::RandomState> =
                HashSet::with_capacity_and_hasher(
                    missing.len(),
                    foldhash::fast::RandomState::default(),
                );
            let wanted: Vec<String> = missing
                .iter()
                .filter(|&&(_, key)| asked.insert(key))
                .map(|&(_, key)| key.to_owned())
                .collect();
            let started = Instant::now();
            let loaded =
                tokio::time::timeout(self.inner.config.hard_timeout, loader(wanted.clone())).await;
            let ok = matches!(loaded, Ok(Ok(_)));
            self.inner.stats.load(started.elapsed(), ok);
            match loaded {
                Ok(Ok(mut found)) => {
                    for &(i, key) in &missing {
                        results[i] = Some(Ok(found.get(key).cloned()));
                    }
                    let entries: Vec<(String, Option<V>)> = wanted
                        .into_iter()
                        .map(|key| {
                            let value = found.remove(&key);
                            (key, value)
                        })
                        .collect();
                    if !found.is_empty() {
                        tracing::warn!(cache = %self.inner.config.name, extra = found.len(), "batch loader returned keys that were not asked for; ignored");
                    }
                    if let Err(error) = self.store(entries, &EntryOptions::default()).await {
                        tracing::warn!(cache = %self.inner.config.name, %error, "loaded values not cached");
                    }
                }
                failed => {
                    let error = match failed {
                        Ok(Err(error)) => Error::Loader {
                            key: wanted.join(","),
                            source: Arc::new(error.into()),
                        },
                        _ => Error::LoaderTimeout {
                            key: wanted.join(","),
                            after: self.inner.config.hard_timeout,
                        },
                    };
                    for &(i, key) in &missing {
                        let outcome = match stale.get(key) {
                            Some(value) => {
                                self.inner.stats.stale_served();
                                Ok(value.clone())
                            }
                            None => Err(error.clone()),
                        };
                        results[i] = Some(outcome);
                    }
                }
            }
        }
        results.into_iter().map(|r| r.unwrap_or(Ok(None))).collect()
    }

    async fn invalidate_tag(&self, tag: &str) -> Result<u64> {
        validate_name("tag", tag)?;
        if let Some(l1) = &self.inner.l1 {
            let owned = tag.to_owned();
            l1.remove_if(move |_, e| e.has_tag(&owned));
        }
        self.inner.stats.invalidation(false);
        let mut removed = 0;
        if let Some(l2) = self.l2_available() {
            let set = self.tag_key(tag);
            let outcome = async {
                let members = l2.members(&set).await?;
                // Other instances may hold these entries without their tags (read from
                // Redis), so they are told the keys, not the tag.
                let keys: Vec<&str> = members
                    .iter()
                    .filter_map(|m| m.strip_prefix(self.inner.namespace.as_str()))
                    .collect();
                if let Some(l1) = &self.inner.l1 {
                    keys.iter().for_each(|k| l1.remove(k));
                }
                let message = self.message('m', &keys.join("\n"));
                let publish = (self.publishes() && !keys.is_empty())
                    .then_some((self.inner.channel.as_str(), message.as_str()));
                let mut doomed = members.clone();
                doomed.push(set.clone());
                let deleted = l2.delete(&doomed, publish).await?;
                Ok::<_, Error>(deleted.saturating_sub(1))
            }
            .await;
            match outcome {
                Ok(n) => removed = n,
                Err(error) => self.l2_failed(error)?,
            }
        }
        Ok(removed)
    }

    async fn invalidate_pattern(&self, pattern: &str) -> Result<u64> {
        validate_pattern(pattern)?;
        if let Some(l1) = &self.inner.l1 {
            let owned = pattern.to_owned();
            l1.remove_if(move |k, _| glob_match(&owned, k));
        }
        self.inner.stats.invalidation(false);
        let mut removed = 0;
        if let Some(l2) = self.l2_available() {
            match l2.scan_delete(&self.redis_key(pattern)).await {
                Ok(n) => removed = n,
                Err(error) => self.l2_failed(error)?,
            }
            self.publish_invalidation('p', pattern).await?;
        }
        Ok(removed)
    }

    async fn clear(&self) -> Result<u64> {
        if let Some(l1) = &self.inner.l1 {
            l1.clear();
        }
        self.inner.stats.invalidation(false);
        let mut removed = 0;
        if let Some(l2) = self.l2_available() {
            let everything = format!("{}*", escape_glob(&self.inner.namespace));
            match l2.scan_delete(&everything).await {
                Ok(n) => removed = n,
                Err(error) => self.l2_failed(error)?,
            }
            self.publish_invalidation('c', "").await?;
        }
        Ok(removed)
    }

    fn stats(&self) -> CacheStats {
        self.inner.stats.snapshot()
    }
}

/// Subscribes to the cache's channel and applies other instances' invalidations; on every
/// (re)connection and disconnection, L1 entries become stale (they may have missed some).
async fn backplane<V>(cache: Weak<Inner<V>>, client: redis::Client)
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let (channel, delay, mut shutdown) = match cache.upgrade() {
        Some(inner) => (
            inner.channel.clone(),
            inner.config.backplane.reconnect_delay,
            inner.shutdown.subscribe(),
        ),
        None => return,
    };
    let mut connections = 0_u64;
    loop {
        let session = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            _ = shutdown.changed() => return,
            s = session => s,
        };
        match pubsub {
            Ok(pubsub) => {
                let Some(inner) = cache.upgrade() else { return };
                connections += 1;
                if connections > 1 {
                    inner.epoch.fetch_add(1, Ordering::Relaxed);
                }
                inner.backplane_connected.send_replace(connections);
                let (ping_every, ping_timeout) = (
                    delay.max(Duration::from_millis(100)) * 4,
                    inner.config.l2.timeout,
                );
                drop(inner);
                // The message stream does not always end when the connection drops, so the
                // subscription is also pinged; a failed ping means Redis is gone.
                let (mut sink, mut messages) = pubsub.split();
                let mut ping = tokio::time::interval(ping_every);
                ping.tick().await;
                loop {
                    let message = tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = ping.tick() => {
                            let alive = tokio::time::timeout(ping_timeout, sink.ping::<redis::Value>()).await;
                            if matches!(alive, Ok(Ok(_))) {
                                continue;
                            }
                            break;
                        }
                        m = messages.next() => m,
                    };
                    let Some(message) = message else { break };
                    let Some(inner) = cache.upgrade() else { return };
                    let text: String = message.get_payload().unwrap_or_default();
                    let mut parts = text.splitn(3, '\n');
                    let (Some(origin), Some(kind)) = (parts.next(), parts.next()) else {
                        continue;
                    };
                    if origin != inner.instance {
                        HybridCache { inner }.apply_remote(kind, parts.next().unwrap_or(""));
                    }
                }
                if let Some(inner) = cache.upgrade() {
                    inner.epoch.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(cache = %inner.config.name, "backplane lost redis; in-process entries are stale until it is back");
                }
            }
            Err(error) => {
                tracing::debug!(%error, "backplane could not subscribe; retrying");
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

fn validate_config(config: &CacheConfig) -> Result<()> {
    validate_name("cache name", &config.name).map_err(|e| Error::Config(e.to_string()))?;
    if config
        .key_prefix
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '*' | '?' | '[' | ']' | '\\'))
    {
        return Err(Error::Config(format!(
            "key_prefix {:?} may not hold whitespace or glob characters",
            config.key_prefix
        )));
    }
    if config.ttl.is_zero() || config.hard_timeout.is_zero() {
        return Err(Error::Config(
            "ttl and hard_timeout must be greater than zero".into(),
        ));
    }
    if config.l1.capacity == 0 {
        return Err(Error::Config("l1.capacity must be at least 1".into()));
    }
    if !(0.0..1.0).contains(&config.eager_refresh) {
        return Err(Error::Config("eager_refresh must be in [0.0, 1.0)".into()));
    }
    Ok(())
}

fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid("key", "the key is empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::invalid(
            "key",
            format!("{} bytes, at most {MAX_KEY_LEN}", key.len()),
        ));
    }
    if key.bytes().any(|b| b.is_ascii_control()) {
        return Err(Error::invalid("key", "control characters are not allowed"));
    }
    Ok(())
}

fn validate_name(what: &'static str, name: &str) -> Result<()> {
    if neo_core::is_resource_name(name) {
        Ok(())
    } else {
        Err(Error::invalid(
            what,
            format!("{name:?}: {}", neo_core::RESOURCE_NAME_RULE),
        ))
    }
}

fn validate_pattern(pattern: &str) -> Result<()> {
    validate_key(pattern)?;
    if pattern.contains(['[', ']', '\\']) {
        return Err(Error::invalid(
            "pattern",
            "only * and ? are supported (no [ ] or \\)",
        ));
    }
    Ok(())
}

fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `*` matches any run, `?` one character; the same rules Redis applies to these two.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn glob() {
        assert!(glob_match("org:*", "org:1"));
        assert!(glob_match("*:1", "org:1"));
        assert!(glob_match("o?g:*", "org:42"));
        assert!(!glob_match("org:?", "org:42"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*b", "acd"));
    }
}
