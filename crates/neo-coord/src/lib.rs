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

/// PostgreSQL lock diagnostics (re-exported from `neo-db`).
pub mod postgres {
    pub use neo_db::diagnostics::{LockWait, lock_waits};
}

mod error;
mod leader;
mod lock;
mod rate;

pub use error::{Error, Result};
pub use leader::{Leadership, Role};
pub use lock::LockGuard;
pub use rate::DistributedRateLimiter;

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
    redis: neo_redis::RedisConnections,
    config: CoordConfig,
}

/// The entry point: locks, leader election and rate limits on one Redis; cheap to clone.
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
        if config.lock_ttl < Duration::from_millis(30)
            || config.leader_ttl < Duration::from_millis(30)
        {
            return Err(Error::Config(
                "lock_ttl and leader_ttl must be at least 30 ms (they are renewed every third)"
                    .into(),
            ));
        }
        if config
            .key_prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::Config("key_prefix may not hold whitespace".into()));
        }
        let redis = neo_redis::redis_connections(redis_url, config.pool_size, config.timeout)
            .map_err(|_| {
                Error::Config("the Redis URL is not valid (its text is not shown)".into())
            })?;
        Ok(Coordinator {
            shared: Arc::new(Shared { redis, config }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &CoordConfig {
        &self.shared.config
    }

    fn key(&self, kind: &str, name: &str) -> Result<String> {
        validate_name(name)?;
        Ok(format!("{}{kind}:{name}", self.shared.config.key_prefix))
    }

    /// Runs one script call bounded by the timeout.
    async fn script<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T> {
        let call = async {
            let mut conn = self.shared.redis.get().map_err(Error::from)?;
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(*key);
            }
            for arg in args {
                invocation.arg(*arg);
            }
            invocation
                .invoke_async(&mut conn)
                .await
                .map_err(|e| Error::Unavailable(e.to_string()))
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
