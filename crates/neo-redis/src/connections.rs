//! Shared multiplexed Redis connections.

use crate::{Error, RedisConfig, RedisMode, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Multiplexed Redis connections that every call shares, round robin: each carries any number
/// of calls at once (pipelined on one socket), so a call never waits for a free connection
/// and never pays a health-check round trip first. A pool of exclusive connections
/// (deadpool-redis) sends `UNWATCH` + `PING` on every checkout, which doubled the round trips
/// of a single `GET`.
///
/// Each connection is opened on first use (inside the caller's runtime) and reopened after a
/// failure by the next call that needs it ([`ConnectionManager`]); connecting and each answer
/// are bounded by the timeout given to [`redis_connections`]. A connection's I/O runs on the
/// runtime that opened it: if that runtime shuts down, the next call on the connection fails
/// and the one after reopens it. Cheap to clone.
///
/// # Example
/// ```no_run
/// # async fn demo() -> neo_redis::Result<()> {
/// use std::time::Duration;
/// let timeout = Duration::from_millis(500);
/// let redis = neo_redis::redis_connections("redis://127.0.0.1:6379", 4, timeout)?;
/// let mut conn = redis.get()?;
/// let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
/// # let _ = pong; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisConnections {
    inner: Arc<Connections>,
}

struct Connections {
    client: redis::Client,
    config: ConnectionManagerConfig,
    slots: Box<[OnceLock<ConnectionManager>]>,
    next: AtomicUsize,
}

impl std::fmt::Debug for RedisConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opened = self
            .inner
            .slots
            .iter()
            .filter(|s| s.get().is_some())
            .count();
        f.debug_struct("RedisConnections")
            .field("size", &self.inner.slots.len())
            .field("opened", &opened)
            .finish_non_exhaustive()
    }
}

impl RedisConnections {
    /// The next connection, round robin (a cheap handle onto it). Must be called inside a
    /// Tokio runtime: a connection opened here runs its I/O task there.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the connection cannot be set up.
    pub fn get(&self) -> Result<ConnectionManager> {
        let inner = &self.inner;
        let slot = &inner.slots[inner.next.fetch_add(1, Ordering::Relaxed) % inner.slots.len()];
        if let Some(conn) = slot.get() {
            return Ok(conn.clone());
        }
        // Lazy: nothing is sent until the first command, which connects.
        let conn =
            ConnectionManager::new_lazy_with_config(inner.client.clone(), inner.config.clone())
                .map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(slot.get_or_init(|| conn).clone())
    }
}

impl RedisConnections {
    /// The connections `config` describes (see [`redis_connections`]), after checking its
    /// settings ([`RedisConfig::mode`]). Nothing connects until the first call.
    ///
    /// # Errors
    /// The errors of [`RedisConfig::mode`]; [`Error::InvalidSetting`] for a TLS file that
    /// cannot be read or parsed; [`Error::Config`] for a Cluster or Sentinel (see
    /// [`crate::ClusterConnections`], [`crate::SentinelConnections`]).
    pub fn connect(config: &RedisConfig) -> Result<Self> {
        match config.mode()? {
            RedisMode::Standalone => {
                let client = crate::tls::client(&config.url, &config.tls)?;
                Ok(from_client(client, config.pool_size, config.timeout))
            }
            RedisMode::Cluster => Err(Error::Config(
                "cluster.nodes names a Redis Cluster: use ClusterConnections".into(),
            )),
            RedisMode::Sentinel => Err(Error::Config(
                "sentinel.addresses names Redis Sentinel: use SentinelConnections".into(),
            )),
        }
    }
}

/// `size` shared multiplexed connections to `url` (see [`RedisConnections`]) whose connects
/// and answers each give up after `timeout`: the recipe neo-cache and neo-coord share.
/// Nothing connects until the first call.
///
/// # Errors
/// [`Error::Config`] for an invalid URL (its text, which may hold a password, is not shown).
pub fn redis_connections(url: &str, size: usize, timeout: Duration) -> Result<RedisConnections> {
    // A `rediss://` URL here trusts the public roots; see RedisConfig's `tls` for a CA file.
    crate::tls::install_crypto_provider();
    let client = redis::Client::open(url)
        .map_err(|_| Error::Config("the Redis URL is not valid (its text is not shown)".into()))?;
    Ok(from_client(client, size, timeout))
}

/// `size` shared connections of `client`, each bounded by `timeout`.
fn from_client(client: redis::Client, size: usize, timeout: Duration) -> RedisConnections {
    // A failed reconnection is not retried in the background: the next call that needs the
    // connection tries again, so a call fails fast while Redis is down, as it would on a fresh
    // connect, and the first call after Redis returns reconnects.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(0);
    RedisConnections {
        inner: Arc::new(Connections {
            client,
            config,
            slots: (0..size.max(1)).map(|_| OnceLock::new()).collect(),
            next: AtomicUsize::new(0),
        }),
    }
}
