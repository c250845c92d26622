//! Cross-process coordination on Redis.
//!
//! - [`Coordinator::lock`]: a lock with a TTL, released only by its owner (compare-and-delete),
//!   extended automatically while its [`LockGuard`] lives, and a fencing token per
//!   acquisition that increases monotonically: pass it to the resource you protect so a
//!   holder that lost the lock (paused, partitioned) is refused there.
//! - [`Coordinator::campaign`]: leader election on a Redis lease renewed by a watchdog, with an
//!   epoch taken atomically with the lease, so two leaders never share an epoch; events say
//!   when leadership is won or lost, and [`Leadership::resign`] steps down.
//! - [`Coordinator::rate_limiter`]: a GCRA rate limit in one Lua script, per key (tenant, user).
//!
//! - [`postgres`]: PostgreSQL lock diagnostics, who blocks whom (from `pg_locks` and
//!   `pg_stat_activity`).
//!
//! # Where Redis is
//! [`Coordinator::connect`] takes one server's URL; [`Coordinator::connect_redis`] takes a
//! [`RedisConfig`]: one server (`redis://`, or `rediss://` with a CA file and an optional
//! client certificate), a Redis Cluster (seed nodes) or a master found through Redis Sentinel.
//! The scripts are the same in every mode. Each writes at most two keys (a lock and its fence
//! counter, a lease and its epoch counter); on a Redis Cluster the lock or election name is
//! both keys' hash tag (`<prefix>lock:{<name>}` and `<prefix>lock:{<name>}:fence`), so they
//! share a slot. Names hold only `a-z A-Z 0-9 _ - : .` (anything else, braces, `*` and
//! spaces included, is refused before anything is sent), and on a cluster the key prefix may
//! not hold braces, so the tag is always exactly the name. Standalone and Sentinel keep the
//! untagged keys they always had.
//!
//! # What a failover can lose
//! Redis replicates asynchronously. When a master crashes (a Sentinel or Cluster failover), the
//! writes it acknowledged in its last moments may not have reached the replica that is promoted:
//! **a lock or lease granted just before the crash can be lost**, so a second holder can take it
//! while the first still believes it holds it; the same goes for the last extensions, a release
//! (the lock then stays taken until its TTL runs out) and the last rate-limit slots (a key may
//! briefly allow a few calls more than its limit).
//!
//! The fencing token is what keeps this safe: on a Redis Cluster or Sentinel it is the lock's
//! counter (`INCR`) raised to at least the master's clock in microseconds at the grant, so a
//! grant on the promoted master gets a higher token than the lost one, even though the counter
//! itself was lost with it, as long as the new master's clock is not behind the old one's by
//! more than the failover took (seconds: Sentinel waits `down-after-milliseconds` before it
//! even starts). A protected resource that refuses writes with a token lower than the highest
//! it has seen therefore refuses the stale holder. Leader epochs are taken the same way. On one
//! server (plain or TLS) the token is the plain counter, which lives as long as that server's
//! data (keep it persistent if a restart must not start the tokens over). The stale holder
//! also learns it lost the lock at its next extension ([`LockGuard::is_held`] turns false;
//! [`LockGuard::extend`] returns
//! [`Error::Lost`]). Calls during the failover fail with [`Error::Unavailable`]; retry them:
//! the connections reach the new master by themselves (the Sentinel connection asks the
//! sentinels again after a failover, the Cluster connection refreshes its slot map).
//!
//! # Example
//! ```no_run
//! # async fn demo() -> neo_coord::Result<()> {
//! use neo_coord::{CoordConfig, Coordinator};
//! let coord = Coordinator::connect("redis://127.0.0.1:6379", CoordConfig::default())?;
//! let guard = coord.lock("invoice:42").await?;
//! // ... write with guard.fence() so a stale holder is refused ...
//! guard.release().await?;
//! # Ok(()) }
//! ```
//!
//! # Features
//! | feature | what it adds |
//! |---|---|
//! | `env` | `CoordConfig::from_env()` (reads `NEO_COORD_*`) |

/// PostgreSQL lock diagnostics (re-exported from `neo-db`).
pub mod postgres {
    pub use neo_db::diagnostics::{LockWait, lock_waits};
}

mod backend;
mod error;
mod leader;
mod lock;
pub mod metric_names;
mod rate;

pub use error::{Error, Result};
pub use leader::{Leadership, Role};
pub use lock::LockGuard;
pub use neo_redis::RedisConfig;
pub use rate::DistributedRateLimiter;

use backend::Backend;

use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Coordination settings. Load from `NEO_COORD_*` with [`CoordConfig::from_env`] (feature
/// `env`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct CoordConfig {
    /// Prefix of every key this crate writes.
    pub key_prefix: String,
    /// Every Redis call gives up after this long.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Lifetime of a lock (extended by the guard while it lives).
    #[serde(with = "humantime_serde")]
    pub lock_ttl: Duration,
    /// How long [`Coordinator::lock`] keeps trying before [`Error::Busy`].
    #[serde(with = "humantime_serde")]
    pub lock_wait: Duration,
    /// Base pause between attempts (jittered up to twice this).
    #[serde(with = "humantime_serde")]
    pub lock_retry: Duration,
    /// Lifetime of a leader's lease (renewed every third of it).
    #[serde(with = "humantime_serde")]
    pub leader_ttl: Duration,
    /// Shared multiplexed Redis connections, used round robin (each carries many calls at
    /// once; see [`neo_redis::RedisConnections`]).
    pub pool_size: usize,
}

impl Default for CoordConfig {
    fn default() -> Self {
        CoordConfig {
            key_prefix: "neo:coord:".to_owned(),
            timeout: Duration::from_millis(500),
            lock_ttl: Duration::from_secs(10),
            lock_wait: Duration::from_secs(5),
            lock_retry: Duration::from_millis(20),
            leader_ttl: Duration::from_secs(10),
            pool_size: 8,
        }
    }
}

impl CoordConfig {
    /// Loads the configuration from `NEO_COORD_*` environment variables over the defaults.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable that could not be parsed.
    #[cfg(feature = "env")]
    pub fn from_env() -> Result<Self> {
        neo_core::config::from_env("NEO_COORD_").map_err(|e| Error::Config(e.to_string()))
    }
}

#[derive(Debug)]
struct Shared {
    redis: Backend,
    config: CoordConfig,
}

/// The entry point: locks, leader election and rate limits on one Redis (a server, a Redis
/// Cluster or a Sentinel-managed master); cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("key_prefix", &self.shared.config.key_prefix)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Sets up the connections (they open on first use).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid URL or settings.
    pub fn connect(redis_url: &str, config: CoordConfig) -> Result<Self> {
        check(&config)?;
        let redis = neo_redis::redis_connections(redis_url, config.pool_size, config.timeout)
            .map_err(|_| {
                Error::Config("the Redis URL is not valid (its text is not shown)".into())
            })?;
        Ok(Coordinator {
            shared: Arc::new(Shared {
                redis: Backend::Standalone(redis),
                config,
            }),
        })
    }

    /// Sets up the connections `redis` describes: one server (`redis://`, or `rediss://`
    /// with its TLS files), a Redis Cluster (`cluster.nodes`) or the master Redis Sentinel
    /// names (`sentinel.*`). The connections follow `redis` (its `pool_size` and `timeout`);
    /// `config.timeout` still bounds every call. Nothing connects until the first call.
    ///
    /// # Errors
    /// [`Error::Config`] for settings that do not work together (the error of
    /// [`RedisConfig::mode`], naming them) or a `key_prefix` holding `{` or `}` on a Redis
    /// Cluster (the keys' hash tags must be this crate's own).
    ///
    /// # Example
    /// ```no_run
    /// # fn demo() -> neo_coord::Result<()> {
    /// use neo_coord::{CoordConfig, Coordinator, RedisConfig};
    /// let redis = RedisConfig::sentinel(["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"], "main");
    /// let coord = Coordinator::connect_redis(&redis, CoordConfig::default())?;
    /// # let _ = coord; Ok(()) }
    /// ```
    pub fn connect_redis(redis: &RedisConfig, config: CoordConfig) -> Result<Self> {
        check(&config)?;
        let redis = Backend::connect(redis)?;
        if redis.is_cluster() && config.key_prefix.contains(['{', '}']) {
            return Err(Error::Config(
                "key_prefix may not hold `{` or `}` on a Redis Cluster: the keys' hash tags \
                 (which keep a lock and its fence in one slot) must be neo-coord's own"
                    .into(),
            ));
        }
        Ok(Coordinator {
            shared: Arc::new(Shared { redis, config }),
        })
    }
}

/// The settings every way of connecting checks.
fn check(config: &CoordConfig) -> Result<()> {
    if config.lock_ttl < Duration::from_millis(30) || config.leader_ttl < Duration::from_millis(30)
    {
        return Err(Error::Config(
            "lock_ttl and leader_ttl must be at least 30 ms (they are renewed every third)".into(),
        ));
    }
    if config
        .key_prefix
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::Config("key_prefix may not hold whitespace".into()));
    }
    Ok(())
}

impl Coordinator {
    /// The settings.
    pub fn config(&self) -> &CoordConfig {
        &self.shared.config
    }

    fn key(&self, kind: &str, name: &str) -> Result<String> {
        validate_name(name)?;
        Ok(format!("{}{kind}:{name}", self.shared.config.key_prefix))
    }

    /// The key of `name` and the key of its counter (`suffix`: `fence`, `epoch`), which one
    /// script writes together. On a Redis Cluster the name is the keys' hash tag
    /// (`<prefix>lock:{<name>}` and `<prefix>lock:{<name>}:fence`), so both live in one slot;
    /// names cannot hold braces (see [`neo_core::is_resource_name`]) and the prefix may not on
    /// a cluster, so the tag is exactly the name. Elsewhere the keys are as they always were
    /// (`<prefix>lock:<name>`, `<prefix>lock:<name>:fence`).
    fn key_pair(&self, kind: &str, name: &str, suffix: &str) -> Result<(String, String)> {
        validate_name(name)?;
        let prefix = &self.shared.config.key_prefix;
        let key = if self.shared.redis.is_cluster() {
            format!("{prefix}{kind}:{{{name}}}")
        } else {
            format!("{prefix}{kind}:{name}")
        };
        let counter = format!("{key}:{suffix}");
        Ok((key, counter))
    }

    /// The script that takes a lock or lease with its fence or epoch: raised to the master's
    /// clock where failovers are part of the setup (Cluster, Sentinel), the plain counter on
    /// one server (one script call less per acquisition there).
    fn acquire(&self) -> &'static redis::Script {
        if self.shared.redis.fails_over() {
            &lock::ACQUIRE_AFTER_FAILOVER
        } else {
            &lock::ACQUIRE
        }
    }

    /// Runs one script call bounded by the timeout.
    async fn script<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T> {
        let call = async {
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(*key);
            }
            for arg in args {
                invocation.arg(*arg);
            }
            self.shared.redis.invoke(&invocation).await
        };
        match tokio::time::timeout(self.shared.config.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::Unavailable(format!(
                "redis did not answer within {:?}",
                self.shared.config.timeout
            ))),
        }
    }
}

fn validate_name(name: &str) -> Result<()> {
    neo_core::validate_resource_name("name", name).map_err(Error::rejected)
}

fn millis(d: Duration) -> String {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
        .to_string()
}
