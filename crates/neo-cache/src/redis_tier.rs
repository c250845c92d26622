//! The Redis tier: shared multiplexed connections, every call bounded by `l2.timeout`.

use crate::config::CacheConfig;
use crate::{Error, Result};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tracing::Instrument;

/// Releases a lock only when it still holds our token.
const UNLOCK: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// A key argument `namespace + key`, without an intermediate `String`.
struct Namespaced<'a>(&'a str, &'a str);

impl redis::ToRedisArgs for Namespaced<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        let mut writer = out.writer_for_next_arg();
        std::io::Write::write_all(&mut writer, self.0.as_bytes()).unwrap_or(());
        std::io::Write::write_all(&mut writer, self.1.as_bytes()).unwrap_or(());
    }
}

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
/// # async fn demo() -> neo_cache::Result<()> {
/// use std::time::Duration;
/// let timeout = Duration::from_millis(500);
/// let redis = neo_cache::redis_connections("redis://127.0.0.1:6379", 4, timeout)?;
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

/// One entry to write: key, framed bytes, lifetime, tag set keys.
pub(crate) struct Write {
    pub(crate) key: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) ttl: Duration,
    pub(crate) tag_keys: Vec<String>,
}

/// `size` shared multiplexed connections to `url` (see [`RedisConnections`]) whose connects
/// and answers each give up after `timeout`: the recipe neo-cache and neo-coord share.
/// Nothing connects until the first call.
///
/// # Errors
/// [`Error::Config`] for an invalid URL (its text, which may hold a password, is not shown).
pub fn redis_connections(url: &str, size: usize, timeout: Duration) -> Result<RedisConnections> {
    let client = redis::Client::open(url)
        .map_err(|_| Error::Config("the Redis URL is not valid (its text is not shown)".into()))?;
    // A failed reconnection is not retried in the background: the next call that needs the
    // connection tries again, so a call fails fast while Redis is down, as it would on a fresh
    // connect, and the first call after Redis returns reconnects.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(0);
    Ok(RedisConnections {
        inner: Arc::new(Connections {
            client,
            config,
            slots: (0..size.max(1)).map(|_| OnceLock::new()).collect(),
            next: AtomicUsize::new(0),
        }),
    })
}

#[derive(Clone, Debug)]
pub(crate) struct RedisTier {
    connections: RedisConnections,
    timeout: Duration,
    scan_count: usize,
}

impl RedisTier {
    pub(crate) fn connect(url: &str, config: &CacheConfig) -> Result<Self> {
        Ok(RedisTier {
            connections: redis_connections(url, config.l2.pool_size, config.l2.timeout)?,
            timeout: config.l2.timeout,
            scan_count: config.l2.scan_count.max(1),
        })
    }

    /// Runs one Redis exchange in a `cache.l2` span (field `cache.op`), bounded by the timeout.
    async fn run<T>(
        &self,
        name: &'static str,
        op: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let call = async {
            let mut conn = self.connections.get()?;
            op(&mut conn).await.map_err(|e| Error::redis(&e))
        };
        let span = tracing::debug_span!("cache.l2", cache.op = name);
        // Boxed: the connection's futures are large, and every future that awaits this one
        // (lookup, get's miss path) would otherwise hold and copy them on each move. One
        // allocation instead: with the deadpool-redis pool used before, an L2 hit went from
        // about 41,900 to 40,000 client instructions (callgrind; a raw GET was 33,500).
        match tokio::time::timeout(self.timeout, Box::pin(call).instrument(span)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Unavailable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.run("get", async |c| c.get(key).await).await
    }

    /// MGET of `namespace + key` for each key, written straight into the command.
    pub(crate) async fn mget(
        &self,
        namespace: &str,
        keys: &[&str],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(Namespaced(namespace, key));
        }
        self.run("mget", async |c| cmd.query_async(c).await).await
    }

    /// Writes every entry, its tag memberships and an optional publish, in one round trip.
    pub(crate) async fn write(
        &self,
        writes: &[Write],
        publish: Option<(&str, &str)>,
    ) -> Result<()> {
        let mut pipe = redis::pipe();
        for w in writes {
            let ms = u64::try_from(w.ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            pipe.cmd("SET")
                .arg(&w.key)
                .arg(&w.bytes)
                .arg("PX")
                .arg(ms)
                .ignore();
            for tag in &w.tag_keys {
                pipe.cmd("SADD").arg(tag).arg(&w.key).ignore();
                pipe.cmd("PEXPIRE").arg(tag).arg(ms).arg("NX").ignore();
                pipe.cmd("PEXPIRE").arg(tag).arg(ms).arg("GT").ignore();
            }
        }
        if let Some((channel, message)) = publish {
            pipe.cmd("PUBLISH").arg(channel).arg(message).ignore();
        }
        self.run("write", async |c| pipe.query_async::<()>(c).await)
            .await
    }

    pub(crate) async fn delete(
        &self,
        keys: &[String],
        publish: Option<(&str, &str)>,
    ) -> Result<u64> {
        let mut pipe = redis::pipe();
        if !keys.is_empty() {
            pipe.cmd("DEL").arg(keys);
        }
        if let Some((channel, message)) = publish {
            pipe.cmd("PUBLISH").arg(channel).arg(message).ignore();
        }
        if keys.is_empty() {
            self.run("delete", async |c| pipe.query_async::<()>(c).await)
                .await?;
            return Ok(0);
        }
        let (deleted,): (u64,) = self
            .run("delete", async |c| pipe.query_async(c).await)
            .await?;
        Ok(deleted)
    }

    pub(crate) async fn members(&self, set: &str) -> Result<Vec<String>> {
        self.run("smembers", async |c| c.smembers(set).await).await
    }

    /// SCAN (never KEYS) for `pattern`, deleting each page; returns the keys deleted.
    pub(crate) async fn scan_delete(&self, pattern: &str) -> Result<u64> {
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .run("scan", async |c| {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(self.scan_count)
                        .query_async(c)
                        .await
                })
                .await?;
            if !keys.is_empty() {
                deleted += self.delete(&keys, None).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    pub(crate) async fn publish(&self, channel: &str, message: &str) -> Result<()> {
        self.run("publish", async |c| {
            c.publish::<_, _, ()>(channel, message).await
        })
        .await
    }

    pub(crate) async fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = self
            .run("lock", async |c| {
                redis::cmd("SET")
                    .arg(key)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(c)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    pub(crate) async fn unlock(&self, key: &str, token: &str) -> Result<()> {
        self.run("unlock", async |c| {
            redis::Script::new(UNLOCK)
                .key(key)
                .arg(token)
                .invoke_async::<i64>(c)
                .await
                .map(|_| ())
        })
        .await
    }
}
