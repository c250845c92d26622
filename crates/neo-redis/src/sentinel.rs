//! A master found through Redis Sentinel, followed across failovers.

use crate::redact::node_address;
use crate::{Error, RedisConfig, RedisMode, Result};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The master that Redis Sentinel names, through redis-rs' [`SentinelClient`]: the sentinels
/// are asked where `sentinel.master_name` is, and one multiplexed connection to it is shared
/// by every call (it carries many calls at once, so `pool_size` does not apply).
///
/// After a failover the old connection fails (the old master died: the socket breaks or the
/// call times out; or it came back demoted: `READONLY`). That call fails, and the failure
/// drops the shared connection, so the next [`get`](SentinelConnections::get) asks the
/// sentinels again and connects to the master they name now. Callers that retry a failed
/// call therefore follow the master without doing anything else.
///
/// Connecting (asking the sentinels, then the master) gives up after the configured timeout
/// per sentinel; each answer after `timeout`. Cheap to clone.
///
/// # Example
/// ```no_run
/// # async fn demo() -> neo_redis::Result<()> {
/// use neo_redis::{RedisConfig, SentinelConnections};
/// let config = RedisConfig::sentinel(["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"], "main");
/// let redis = SentinelConnections::connect(&config)?;
/// let mut conn = redis.get().await?;
/// let () = redis::cmd("SET").arg("k").arg("v").query_async(&mut conn).await.unwrap();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SentinelConnections {
    inner: Arc<Inner>,
}

struct Inner {
    /// Serialises the lookups: one caller asks the sentinels, the others wait for its answer.
    client: tokio::sync::Mutex<SentinelClient>,
    /// `host:port` of every sentinel, for errors.
    sentinels: Vec<String>,
    master_name: String,
    timeout: Duration,
    config: AsyncConnectionConfig,
    current: RwLock<Option<Current>>,
    generation: AtomicU64,
}

#[derive(Clone)]
struct Current {
    conn: MultiplexedConnection,
    generation: u64,
}

impl std::fmt::Debug for SentinelConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelConnections")
            .field("sentinels", &self.inner.sentinels)
            .field("master_name", &self.inner.master_name)
            .field("opened", &self.current().is_some())
            .finish_non_exhaustive()
    }
}

impl SentinelConnections {
    /// The master `config.sentinel` names, after checking the settings ([`RedisConfig::mode`]
    /// must say [`RedisMode::Sentinel`]). Nothing connects until the first
    /// [`get`](SentinelConnections::get). A user and password in the sentinel URLs are used
    /// for the sentinels and for the master; with `rediss://` sentinels the master is reached
    /// over TLS too, with the certificates of `tls`.
    ///
    /// # Errors
    /// The errors of [`RedisConfig::mode`]; [`Error::Config`] when the settings name another
    /// mode; [`Error::InvalidSetting`] for a TLS file that cannot be read or parsed, or
    /// settings redis-rs refuses.
    pub fn connect(config: &RedisConfig) -> Result<Self> {
        let mode = config.mode()?;
        if mode != RedisMode::Sentinel {
            return Err(Error::Config(format!(
                "SentinelConnections needs sentinel.addresses and sentinel.master_name; these settings are {mode:?}"
            )));
        }
        let master_name = config.sentinel.master_name.clone().unwrap_or_default();
        let refused = |e: redis::RedisError| Error::InvalidSetting {
            setting: "sentinel.addresses".into(),
            reason: format!(
                "refused by the sentinel client: {}",
                e.detail().unwrap_or("")
            ),
        };
        let infos = config
            .sentinel
            .addresses
            .iter()
            .map(|url| url.as_str().into_connection_info().map_err(refused))
            .collect::<Result<Vec<_>>>()?;
        let tls = infos
            .first()
            .is_some_and(|i| matches!(i.addr(), redis::ConnectionAddr::TcpTls { .. }));
        let mut builder = SentinelClientBuilder::new(
            infos.iter().map(|i| i.addr().clone()),
            &master_name,
            SentinelServerType::Master,
        )
        .map_err(refused)?;
        if let Some(first) = infos.first() {
            let settings = first.redis_settings();
            if let Some(user) = settings.username() {
                builder = builder
                    .set_client_to_sentinel_username(user)
                    .set_client_to_redis_username(user);
            }
            if let Some(password) = settings.password() {
                builder = builder
                    .set_client_to_sentinel_password(password)
                    .set_client_to_redis_password(password);
            }
        }
        if tls {
            builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
            if let Some(certs) = crate::tls::certificates(&config.tls)? {
                builder = builder
                    .set_client_to_sentinel_certificates(certs.clone())
                    .set_client_to_redis_certificates(certs);
            } else {
                crate::tls::install_crypto_provider();
            }
        }
        let client = builder.build().map_err(refused)?;
        let sentinels = config
            .sentinel
            .addresses
            .iter()
            .map(|a| node_address(a))
            .collect();
        Ok(SentinelConnections {
            inner: Arc::new(Inner {
                client: tokio::sync::Mutex::new(client),
                sentinels,
                master_name,
                timeout: config.timeout,
                config: AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(config.timeout))
                    .set_response_timeout(Some(config.timeout)),
                current: RwLock::new(None),
                generation: AtomicU64::new(0),
            }),
        })
    }

    fn current(&self) -> Option<Current> {
        self.inner
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A connection to the master (a cheap handle onto the shared one), found through the
    /// sentinels by the first call and again by the first call after a connection failure.
    ///
    /// # Errors
    /// [`Error::SentinelUnreachable`] naming every sentinel (`host:port`) and the master name
    /// when no sentinel named a master that answered within the timeout.
    pub async fn get(&self) -> Result<SentinelConnection> {
        if let Some(current) = self.current() {
            return Ok(self.handle(current));
        }
        let inner = &self.inner;
        let mut client = inner.client.lock().await;
        // Another caller may have reconnected while this one waited for the lock.
        if let Some(current) = self.current() {
            return Ok(self.handle(current));
        }
        let limit = inner.lookup_limit();
        let unreachable = |reason: String| inner.unreachable(reason);
        let conn = match tokio::time::timeout(
            limit,
            client.get_async_connection_with_config(&inner.config),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable(format!("no master within {limit:?}"))),
        };
        let current = Current {
            conn,
            generation: inner.generation.fetch_add(1, Ordering::Relaxed) + 1,
        };
        *inner
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(current.clone());
        Ok(self.handle(current))
    }

    /// A client for the master the sentinels name now, for what cannot share the multiplexed
    /// connection (a pub/sub subscription); asked anew on every call.
    ///
    /// # Errors
    /// [`Error::SentinelUnreachable`] as [`get`](SentinelConnections::get).
    pub async fn master_client(&self) -> Result<redis::Client> {
        let inner = &self.inner;
        let mut client = inner.client.lock().await;
        let limit = inner.lookup_limit();
        let unreachable = |reason: String| inner.unreachable(reason);
        match tokio::time::timeout(limit, client.async_get_client()).await {
            Ok(Ok(master)) => Ok(master),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Err(_) => Err(unreachable(format!("no master within {limit:?}"))),
        }
    }

    fn handle(&self, current: Current) -> SentinelConnection {
        SentinelConnection {
            conn: current.conn,
            generation: current.generation,
            inner: Arc::clone(&self.inner),
        }
    }
}

impl Inner {
    /// How long asking the sentinels may take: the timeout for each sentinel and the master.
    fn lookup_limit(&self) -> Duration {
        let sentinels = u32::try_from(self.sentinels.len()).unwrap_or(u32::MAX);
        self.timeout.saturating_mul(sentinels.saturating_add(1))
    }

    fn unreachable(&self, reason: String) -> Error {
        Error::SentinelUnreachable {
            sentinels: self.sentinels.clone(),
            master_name: self.master_name.clone(),
            reason,
        }
    }

    /// Drops the shared connection if it is still the one of `generation`, so the next
    /// [`SentinelConnections::get`] asks the sentinels again.
    fn forget(&self, generation: u64) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.as_ref().is_some_and(|c| c.generation == generation) {
            *current = None;
        }
    }
}

/// A connection to the master [`SentinelConnections`] found. A call that fails because the
/// master is gone or demoted (connection lost, timeout, `READONLY`) returns its error and
/// makes the next [`SentinelConnections::get`] ask the sentinels again.
#[derive(Clone)]
pub struct SentinelConnection {
    conn: MultiplexedConnection,
    generation: u64,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SentinelConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelConnection")
            .field("master_name", &self.inner.master_name)
            .finish_non_exhaustive()
    }
}

/// Whether `error` says the master is gone or no longer the master.
fn master_lost(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_timeout()
        || error.is_unrecoverable_error()
        || matches!(
            error.kind(),
            redis::ErrorKind::Server(
                redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown
            )
        )
}

impl SentinelConnection {
    fn check<T>(&self, result: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(error) = &result
            && master_lost(error)
        {
            self.inner.forget(self.generation);
        }
        result
    }
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.conn.req_packed_command(cmd).await;
            self.check(result)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self.conn.req_packed_commands(pipeline, offset, count).await;
            self.check(result)
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}
