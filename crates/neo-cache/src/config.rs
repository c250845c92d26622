//! Configuration of one named cache.

use serde::Deserialize;
use std::time::Duration;

/// How one named cache behaves. Every field has a default; load it from `NEO_CACHE_*`
/// variables with [`CacheConfig::from_env`] (feature `env`), e.g. `NEO_CACHE_TTL=10m`,
/// `NEO_CACHE_L1__CAPACITY=50000`, `NEO_CACHE_FAIL_SAFE__MAX_STALE_AGE=1h`.
///
/// # Example
/// ```
/// use neo_cache::CacheConfig;
/// use std::time::Duration;
/// let config = CacheConfig {
///     ttl: Duration::from_secs(300),
///     ..CacheConfig::named("organizations")
/// };
/// assert_eq!(config.name, "organizations");
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CacheConfig {
    /// The cache's name: its keys live under `{key_prefix}{name}:` in Redis, and its metrics
    /// carry `cache={name}`.
    pub name: String,
    /// Prefix of every Redis key and channel of this service (e.g. the service name).
    pub key_prefix: String,
    /// How long an entry is fresh (the default for [`EntryOptions`](crate::EntryOptions)).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// A random fraction (0.0 – 1.0) of the TTL added to each entry, so entries written
    /// together do not expire together.
    pub ttl_jitter: f64,
    /// How long a "not found" from the loader is remembered.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// In-process tier.
    pub l1: L1Config,
    /// Redis tier.
    pub l2: L2Config,
    /// Serving the last known value when loading or Redis fails.
    pub fail_safe: FailSafeConfig,
    /// After this long, a load that has a stale value to fall back on returns it and finishes
    /// in the background (`None`: wait up to the hard timeout).
    #[serde(with = "humantime_serde")]
    pub soft_timeout: Option<Duration>,
    /// A load never takes longer than this for the caller.
    #[serde(with = "humantime_serde")]
    pub hard_timeout: Duration,
    /// Reload in the background when a hit finds less than this fraction of the TTL left
    /// (`0.0` disables eager refresh; e.g. `0.2` refreshes in the last 20 %).
    pub eager_refresh: f64,
    /// Compress encoded values of at least this many bytes.
    pub compression_threshold: usize,
    /// The compression used above the threshold.
    pub compression: Compression,
    /// Refuse values whose encoded (and compressed) size is larger than this.
    pub max_payload_bytes: usize,
    /// Cross-instance invalidation through Redis pub/sub.
    pub backplane: BackplaneConfig,
    /// A short Redis lock so only one instance loads a missing key at a time.
    pub distributed_lock: DistributedLockConfig,
    /// Concurrent loads of [`warm`](crate::HybridCache::warm).
    pub warm_concurrency: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            name: "default".to_owned(),
            key_prefix: "neo:".to_owned(),
            ttl: Duration::from_secs(300),
            ttl_jitter: 0.1,
            negative_ttl: Duration::from_secs(30),
            l1: L1Config::default(),
            l2: L2Config::default(),
            fail_safe: FailSafeConfig::default(),
            soft_timeout: None,
            hard_timeout: Duration::from_secs(10),
            eager_refresh: 0.0,
            compression_threshold: 1024,
            compression: Compression::Lz4,
            max_payload_bytes: 4 * 1024 * 1024,
            backplane: BackplaneConfig::default(),
            distributed_lock: DistributedLockConfig::default(),
            warm_concurrency: 16,
        }
    }
}

impl CacheConfig {
    /// The defaults with `name` set.
    pub fn named(name: impl Into<String>) -> Self {
        CacheConfig {
            name: name.into(),
            ..CacheConfig::default()
        }
    }

    /// Loads the configuration from `NEO_CACHE_*` environment variables over the defaults.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) naming the variable that could not be parsed.
    #[cfg(feature = "env")]
    pub fn from_env() -> crate::Result<Self> {
        Ok(neo_core::config::from_env("NEO_CACHE_")?)
    }
}

/// The in-process tier (moka).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct L1Config {
    /// Most entries kept; the least useful are evicted beyond it. Expired entries are not
    /// swept on a timer: they stay (unserved past their hard limit) until evicted or replaced.
    /// Once L1 is full, a key read from Redis enters it on its second read within about
    /// `capacity` other keys' first reads (values written or loaded here enter at once).
    pub capacity: u64,
    /// Freshness in L1 when shorter than the entry's TTL (`None`: the entry's TTL), so
    /// instances re-read Redis sooner than Redis expires.
    #[serde(with = "humantime_serde")]
    pub ttl: Option<Duration>,
}

impl Default for L1Config {
    fn default() -> Self {
        L1Config {
            capacity: 10_000,
            ttl: None,
        }
    }
}

/// The Redis tier.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct L2Config {
    /// Every Redis call gives up after this long.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// After a Redis error, skip Redis for this long instead of waiting on it for every call.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Return Redis errors to callers instead of carrying on with L1, stale values and the
    /// loader.
    pub fail_on_error: bool,
    /// Shared multiplexed connections (each carries many calls at once; see
    /// [`RedisConnections`](crate::RedisConnections)). On one server a call takes the
    /// connection the previous call took while that one has no call in flight, the next one
    /// otherwise: calls one after another stay on one warm connection, concurrent calls
    /// spread over all of them.
    pub pool_size: usize,
    /// Keys per SCAN/DEL round trip of pattern invalidation and `clear`.
    pub scan_count: usize,
}

impl Default for L2Config {
    fn default() -> Self {
        L2Config {
            timeout: Duration::from_millis(500),
            retry_after: Duration::from_secs(1),
            fail_on_error: false,
            pool_size: 16,
            scan_count: 500,
        }
    }
}

/// Serving stale values when fresh ones cannot be had.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default)]
pub struct FailSafeConfig {
    /// Whether expired entries are kept and served when loading or Redis fails.
    pub enabled: bool,
    /// How long past its expiry an entry may still be served.
    #[serde(with = "humantime_serde")]
    pub max_stale_age: Duration,
}

impl Default for FailSafeConfig {
    fn default() -> Self {
        FailSafeConfig {
            enabled: true,
            max_stale_age: Duration::from_secs(3600),
        }
    }
}

/// Compression of large values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Never compress.
    None,
    /// LZ4 (fast; the default).
    #[default]
    Lz4,
    /// Zstandard (smaller; feature `zstd`).
    Zstd,
}

/// Cross-instance invalidation.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BackplaneConfig {
    /// Whether writes and invalidations are published and other instances' are applied.
    pub enabled: bool,
    /// Wait between reconnection attempts after Redis drops the subscription.
    #[serde(with = "humantime_serde")]
    pub reconnect_delay: Duration,
    /// A write of one entry whose stored (framed, maybe compressed) bytes are at most this
    /// long sends them in its backplane message, so other instances put the new value in L1
    /// at once instead of dropping their copy and reading Redis again. Larger entries, and
    /// writes of many entries, only evict; `0` always evicts. On a Redis Cluster writes
    /// always evict (a write and its message cannot be one atomic step there).
    pub max_value_bytes: usize,
}

impl Default for BackplaneConfig {
    fn default() -> Self {
        BackplaneConfig {
            enabled: true,
            reconnect_delay: Duration::from_millis(250),
            max_value_bytes: 1024,
        }
    }
}

/// Distributed single-flight.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default)]
pub struct DistributedLockConfig {
    /// Whether a miss takes a short Redis lock before loading.
    pub enabled: bool,
    /// The lock's lifetime (it is released as soon as the value is stored).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long an instance that did not get the lock waits for the other's value before
    /// loading itself.
    #[serde(with = "humantime_serde")]
    pub wait: Duration,
}

impl Default for DistributedLockConfig {
    fn default() -> Self {
        DistributedLockConfig {
            enabled: false,
            ttl: Duration::from_secs(5),
            wait: Duration::from_secs(2),
        }
    }
}
