//! The pool handle [`Db`], tracked connections and the unit of work.

use crate::custom_types::{self, TypesChanged};
use crate::failover::{self, Hosts, Target};
use crate::replica::Replicas;
use crate::telemetry::{PoolStats, Telemetry};
use crate::tls;
use crate::{DbConfig, Error, Result, Schema};
use futures_core::future::BoxFuture;
use neo_core::ExposeSecret;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Acquire, PgConnection, PgPool, Postgres, Transaction};
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A PostgreSQL pool with telemetry: the handle a service keeps and clones.
///
/// Repository methods take any [`sqlx::Acquire`]: pass `&db` to run on the pool (autocommit,
/// or one internal transaction when a batch needs several statements), or `&mut *uow` of a
/// [`UnitOfWork`] so several calls commit or roll back together.
///
/// # Example
/// ```no_run
/// # async fn demo() -> neo_db::Result<()> {
/// use neo_db::{Db, DbConfig};
/// let db = Db::connect(&DbConfig::with_url("postgres://app@localhost/app")).await?;
/// let health = db.health().await?;
/// println!("postgres answered in {:?}", health.latency);
/// db.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) telemetry: Telemetry,
    pub(crate) config: DbConfig,
    /// Read replicas (`config.replica`), when configured.
    pub(crate) replicas: Option<Replicas>,
    /// The primary's hosts, when its URL names several or a read-write target.
    pub(crate) hosts: Option<Arc<Hosts>>,
    /// What opens a transaction: `BEGIN`, with the statement timeout as `SET LOCAL` behind a
    /// transaction pooler (see [`begin_statement`]).
    pub(crate) begin: Option<String>,
    /// When migrations through this `Db` last applied something (crate::custom_types).
    pub(crate) types_changed: Arc<TypesChanged>,
    /// Moves the pool to the host that accepts writes; stopped with the last handle.
    pub(crate) _watcher: Option<failover::Watcher>,
}

/// Whether a pooled connection idle for `idle_for` may be handed out: pinged first when it
/// was idle at least `ping_after` ([`DbConfig::test_idle_after`]). One that fails its ping is
/// closed, and the pool hands out another or opens one (a server restart killed it).
pub(crate) async fn alive(
    conn: &mut PgConnection,
    idle_for: Duration,
    ping_after: Option<Duration>,
) -> bool {
    match ping_after {
        Some(after) if idle_for >= after => sqlx::Connection::ping(conn).await.is_ok(),
        _ => true,
    }
}

/// What [`Db::options`] builds from a configuration.
struct Built {
    pool: PgPoolOptions,
    connect: PgConnectOptions,
    hosts: Option<Arc<Hosts>>,
    replicas: Option<Replicas>,
    types_changed: Arc<TypesChanged>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("size", &self.pool.size())
            .field("idle", &self.pool.num_idle())
            .field("closed", &self.pool.is_closed())
            .finish_non_exhaustive()
    }
}

/// The answer of [`Db::health`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Round trip of `SELECT 1`, including the wait for a connection.
    pub latency: Duration,
    /// The pool at that moment.
    pub pool: PoolStats,
}

impl Db {
    /// Builds the pool and opens one connection to check the URL and credentials.
    ///
    /// # Errors
    /// [`Error::Config`] for a missing or malformed URL, inconsistent limits or an unreadable
    /// `sslrootcert`; [`Error::UnknownSslMode`]; [`Error::Tls`] when the server does not offer
    /// TLS that `sslmode` requires or its certificate is refused (saying which check failed);
    /// [`Error::Database`] (kind `Unavailable`, `Timeout` or `Unauthorized`) when the server
    /// cannot be reached in `acquire_timeout`.
    pub async fn connect(config: &DbConfig) -> Result<Db> {
        let Built {
            pool: options,
            mut connect,
            hosts,
            replicas,
            types_changed,
        } = Self::options(config)?;
        if let Some(hosts) = &hosts
            && let Some((index, probe)) = hosts.find_primary().await
        {
            hosts.start_at(index);
            connect = hosts.options[index].1.clone();
            let _ = sqlx::Connection::close(probe).await;
        }
        match options.connect_with(connect.clone()).await {
            Ok(pool) => {
                if let Some(replicas) = &replicas
                    && let Err(refused) = replicas.check().await
                {
                    replicas.close().await;
                    pool.close().await;
                    return Err(refused);
                }
                Ok(Self::assemble(pool, config, hosts, replicas, types_changed))
            }
            Err(sqlx::Error::PoolTimedOut) => {
                // The pool retried until `acquire_timeout` and kept the cause to itself; one
                // direct attempt tells the caller what is wrong (refused, auth, unknown db).
                let attempt = sqlx::ConnectOptions::connect(&connect);
                match tokio::time::timeout(config.acquire_timeout, attempt).await {
                    Ok(Err(cause)) => Err(cause.into()),
                    _ => Err(sqlx::Error::PoolTimedOut.into()),
                }
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Builds the pool without connecting; the first query opens the first connection.
    ///
    /// # Errors
    /// [`Error::Config`] for a missing or malformed URL, inconsistent limits or an unreadable
    /// `sslrootcert`; [`Error::UnknownSslMode`].
    pub fn connect_lazy(config: &DbConfig) -> Result<Db> {
        let built = Self::options(config)?;
        let pool = built.pool.connect_lazy_with(built.connect);
        Ok(Self::assemble(
            pool,
            config,
            built.hosts,
            built.replicas,
            built.types_changed,
        ))
    }

    /// Wraps a pool built elsewhere; `config` supplies the telemetry and batch settings (its
    /// replicas and host list are not used: build the `Db` with [`Db::connect`] for those).
    pub fn from_pool(pool: PgPool, config: &DbConfig) -> Db {
        Self::assemble(pool, config, None, None, Arc::new(TypesChanged::new()))
    }

    fn assemble(
        pool: PgPool,
        config: &DbConfig,
        hosts: Option<Arc<Hosts>>,
        replicas: Option<Replicas>,
        types_changed: Arc<TypesChanged>,
    ) -> Db {
        let watcher = hosts
            .as_ref()
            .and_then(|hosts| failover::watch(Arc::clone(hosts), pool.clone()));
        Db {
            pool,
            shared: Arc::new(Shared {
                telemetry: Telemetry::new(
                    config.slow_query_threshold,
                    config.held_too_long_threshold,
                ),
                config: config.clone(),
                replicas,
                hosts,
                begin: begin_statement(config),
                types_changed,
                _watcher: watcher,
            }),
        }
    }

    fn options(config: &DbConfig) -> Result<Built> {
        let url = config.url.expose_secret();
        if url.is_empty() {
            return Err(Error::Config(
                "the database URL is empty: set NEO_DB_URL (postgres://user:password@host:port/db)"
                    .into(),
            ));
        }
        if config.max_connections == 0 || config.min_connections > config.max_connections {
            return Err(Error::Config(format!(
                "min_connections ({}) must not exceed max_connections ({}), which must be at least 1",
                config.min_connections, config.max_connections
            )));
        }
        if config.max_rows_per_statement == 0 {
            return Err(Error::Config(
                "max_rows_per_statement must be at least 1".into(),
            ));
        }
        tls::check_url(url)?;
        let split = failover::split_hosts(url)?;
        let mut hosts = Vec::with_capacity(split.urls.len());
        for host_url in &split.urls {
            let connect = Self::connect_options(config, host_url)?;
            hosts.push((crate::replica::server_name(&connect), connect));
        }
        let names: Vec<String> = hosts.iter().map(|(name, _)| name.clone()).collect();
        let replicas = Replicas::build(config, &names, |url| Self::connect_options(config, url))?;
        let types_changed = Arc::new(TypesChanged::new());
        let connect = hosts[0].1.clone();
        let mut options = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .min_connections(config.min_connections)
            .acquire_timeout(config.acquire_timeout)
            .idle_timeout(config.idle_timeout)
            .max_lifetime(config.max_lifetime)
            // Pinged (or not) by the hook below, by how long the connection was idle.
            .test_before_acquire(false);
        let hosts = (hosts.len() > 1 || split.target == Target::ReadWrite)
            .then(|| Arc::new(Hosts::new(hosts, split.target, config.failover)));
        let read_write = hosts
            .as_ref()
            .filter(|hosts| hosts.target == Target::ReadWrite)
            .map(Arc::clone);
        // Behind a transaction pooler user-defined types are resolved per connection.
        let preload = config.pooler.needs_transaction();
        if read_write.is_some() || preload {
            options = options.after_connect(move |conn, _| {
                let read_write = read_write.clone();
                Box::pin(async move {
                    if let Some(hosts) = read_write
                        && !failover::suits(conn, Target::ReadWrite).await?
                    {
                        // The primary moved: wake the watcher; the pool retries the connection.
                        hosts.wake.notify_one();
                        return Err(sqlx::Error::Configuration(
                            "target_session_attrs=read-write: the server is read-only".into(),
                        ));
                    }
                    if preload {
                        custom_types::preload(conn).await?;
                    }
                    Ok(())
                })
            });
        }
        let ping_idle = config.ping_after();
        if preload || ping_idle.is_some() {
            let types_changed = Arc::clone(&types_changed);
            options = options.before_acquire(move |conn, meta| {
                let stale = preload && types_changed.is_stale(meta.age);
                Box::pin(async move { Ok(!stale && alive(conn, meta.idle_for, ping_idle).await) })
            });
        }
        Ok(Built {
            pool: options,
            connect,
            hosts,
            replicas,
            types_changed,
        })
    }

    /// The driver's options for one host's URL.
    fn connect_options(config: &DbConfig, url: &str) -> Result<PgConnectOptions> {
        tls::check_url(url)?;
        // The driver's message can quote the URL; say what is wrong without it.
        let mut connect = PgConnectOptions::from_str(url).map_err(|_| {
            Error::Config(
                "the database URL is not a valid postgres:// URL (its text is not shown: it may hold a password)"
                    .into(),
            )
        })?;
        // Behind a transaction pooler no named statement may be cached (crate::pooler).
        let cache = if config.pooler.named_statements() {
            config.statement_cache_capacity
        } else {
            0
        };
        connect = tls::apply(config, url, connect)?
            .application_name(&config.application_name)
            .statement_cache_capacity(cache);
        // PgBouncer refuses the `options` startup parameter (crate::DbConfig::pooler): behind
        // it each transaction sets the timeout itself (`begin_statement`).
        if let Some(timeout) = config
            .statement_timeout
            .filter(|_| config.pooler.named_statements())
        {
            connect = connect.options([("statement_timeout", format!("{}", timeout.as_millis()))]);
        }
        // neo-db records its own spans and slow-query warnings.
        Ok(sqlx::ConnectOptions::disable_statement_logging(connect))
    }

    /// The underlying sqlx pool, for queries neo-db does not wrap.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The configuration the pool was built with.
    pub fn config(&self) -> &DbConfig {
        &self.shared.config
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Takes a connection; released (and checked for being held too long) on drop.
    ///
    /// # Errors
    /// Kind `Timeout` after `acquire_timeout`, `Unavailable` when the server is down or the
    /// pool closed.
    pub async fn acquire(&self) -> Result<DbConnection> {
        Ok(self.acquire_tracked().await?)
    }

    async fn acquire_tracked(&self) -> Result<DbConnection, sqlx::Error> {
        self.acquire_on(&self.pool).await
    }

    /// A connection from `pool` (the primary's or a replica's), with this `Db`'s telemetry.
    pub(crate) async fn acquire_on(&self, pool: &PgPool) -> Result<DbConnection, sqlx::Error> {
        let started = Instant::now();
        let result = pool.acquire().await;
        self.shared.telemetry.record_acquire(
            started.elapsed(),
            matches!(result, Err(sqlx::Error::PoolTimedOut)),
        );
        Ok(DbConnection {
            conn: result?,
            acquired_at: Instant::now(),
            shared: Arc::clone(&self.shared),
        })
    }

    /// Starts a unit of work: a transaction that commits only on [`UnitOfWork::commit`] and
    /// rolls back when dropped.
    ///
    /// # Errors
    /// As [`Db::acquire`].
    pub async fn begin(&self) -> Result<UnitOfWork> {
        self.begin_on(&self.pool).await
    }

    /// A unit of work on `pool` (the primary's or a replica's), with this `Db`'s telemetry.
    pub(crate) async fn begin_on(&self, pool: &PgPool) -> Result<UnitOfWork> {
        self.begin_with_on(pool, None).await
    }

    /// A unit of work on `pool` whose `BEGIN` (with this `Db`'s own `SET LOCAL`s) is followed
    /// by `then`, all sent as one simple query: one round trip.
    pub(crate) async fn begin_with_on(
        &self,
        pool: &PgPool,
        then: Option<String>,
    ) -> Result<UnitOfWork> {
        let started = Instant::now();
        let result = match then {
            None => self.begin_raw(pool).await,
            Some(then) => {
                let begin = self.shared.begin.as_deref().unwrap_or("BEGIN");
                pool.begin_with(sqlx::AssertSqlSafe(format!("{begin}; {then}")))
                    .await
            }
        };
        self.shared.telemetry.record_acquire(
            started.elapsed(),
            matches!(result, Err(sqlx::Error::PoolTimedOut)),
        );
        Ok(UnitOfWork {
            tx: Some(result?),
            started_at: Instant::now(),
            shared: Arc::clone(&self.shared),
        })
    }

    /// A transaction on `pool` opened by this `Db`'s [`begin_statement`] (no telemetry).
    pub(crate) async fn begin_raw(
        &self,
        pool: &PgPool,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        match &self.shared.begin {
            Some(begin) => pool.begin_with(sqlx::AssertSqlSafe(begin.clone())).await,
            None => pool.begin().await,
        }
    }

    /// Starts a unit of work whose unqualified table names resolve in `schema` first
    /// (`SET LOCAL search_path`, undone at commit or rollback).
    ///
    /// # Errors
    /// As [`Db::begin`].
    pub async fn begin_in_schema(&self, schema: &Schema) -> Result<UnitOfWork> {
        let mut uow = self.begin().await?;
        uow.set_search_path(schema).await?;
        Ok(uow)
    }

    /// `SELECT 1` within `health_check_timeout`, with the pool's figures.
    ///
    /// # Errors
    /// Kind `Timeout` when the server does not answer in time, `Unavailable` when it is down.
    pub async fn health(&self) -> Result<Health> {
        let started = Instant::now();
        let timeout = self.shared.config.health_check_timeout;
        let ping = async {
            let mut conn = self.acquire_tracked().await?;
            // A simple query: one message, no prepared statement, safe behind any pooler.
            sqlx::raw_sql("SELECT 1").execute(&mut *conn).await
        };
        match tokio::time::timeout(timeout, ping).await {
            Ok(result) => {
                result?;
            }
            Err(_) => return Err(Error::from(sqlx::Error::PoolTimedOut)),
        }
        Ok(Health {
            latency: started.elapsed(),
            pool: self.stats(),
        })
    }

    /// Pool size, idle connections and the telemetry counters.
    pub fn stats(&self) -> PoolStats {
        self.shared.telemetry.snapshot(
            self.pool.size(),
            u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            self.shared.config.max_connections,
        )
    }

    /// Closes the pool gracefully: new acquires fail at once, and this waits until every
    /// connection in use has been returned and closed.
    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(replicas) = &self.shared.replicas {
            replicas.close().await;
        }
    }

    /// Whether [`Db::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }
}

/// The statement that opens the library's transactions, when it is not sqlx's `BEGIN`:
/// behind a transaction pooler the `statement_timeout` startup parameter is not sent
/// ([`Db::connect_options`]), so every transaction sets it for itself with `SET LOCAL`, in
/// the same simple query as `BEGIN` (no extra round trip). Savepoints inherit it.
fn begin_statement(config: &DbConfig) -> Option<String> {
    let timeout = config
        .statement_timeout
        .filter(|_| !config.pooler.named_statements())?;
    Some(format!(
        "BEGIN; SET LOCAL statement_timeout = {}",
        timeout.as_millis()
    ))
}

// For every borrow and every `'a`, as sqlx does for `&Pool`: the futures own a clone of the
// handle, so callers' futures stay `Send` for any lifetime (`tokio::spawn` works).
impl<'a> Acquire<'a> for &'_ Db {
    type Database = Postgres;
    type Connection = DbConnection;

    fn acquire(self) -> BoxFuture<'static, Result<DbConnection, sqlx::Error>> {
        let db = self.clone();
        Box::pin(async move { db.acquire_tracked().await })
    }

    fn begin(self) -> BoxFuture<'static, Result<Transaction<'a, Postgres>, sqlx::Error>> {
        let db = self.clone();
        Box::pin(async move {
            let started = Instant::now();
            let result = db.begin_raw(&db.pool).await;
            db.shared.telemetry.record_acquire(
                started.elapsed(),
                matches!(result, Err(sqlx::Error::PoolTimedOut)),
            );
            result
        })
    }
}

/// A pooled connection that reports being held past `held_too_long_threshold` when dropped.
pub struct DbConnection {
    conn: PoolConnection<Postgres>,
    acquired_at: Instant,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DbConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConnection")
            .field("held", &self.acquired_at.elapsed())
            .finish_non_exhaustive()
    }
}

impl DbConnection {
    /// Closes the connection when dropped instead of returning it to the pool (for a
    /// connection whose protocol state is unknown, e.g. a COPY cut short).
    pub fn close_on_drop(&mut self) {
        self.conn.close_on_drop();
    }
}

impl Deref for DbConnection {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for DbConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Drop for DbConnection {
    fn drop(&mut self) {
        self.shared
            .telemetry
            .record_release("connection", self.acquired_at.elapsed());
    }
}

/// A transaction spanning several repository calls: pass `&mut *uow` to each, then
/// [`commit`](UnitOfWork::commit). Dropping it without committing rolls back.
///
/// # Example
/// ```no_run
/// # async fn demo(db: neo_db::Db) -> neo_db::Result<()> {
/// let mut uow = db.begin().await?;
/// sqlx::query("UPDATE accounts SET balance = balance - 10 WHERE id = 1")
///     .execute(&mut **uow)
///     .await?;
/// sqlx::query("UPDATE accounts SET balance = balance + 10 WHERE id = 2")
///     .execute(&mut **uow)
///     .await?;
/// uow.commit().await?;
/// # Ok(()) }
/// ```
pub struct UnitOfWork {
    tx: Option<Transaction<'static, Postgres>>,
    started_at: Instant,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for UnitOfWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitOfWork")
            .field("open_for", &self.started_at.elapsed())
            .finish_non_exhaustive()
    }
}

impl UnitOfWork {
    /// Commits every statement run through this unit of work.
    ///
    /// # Errors
    /// The commit's database error (a serialization failure is kind `Conflict`).
    pub async fn commit(mut self) -> Result<()> {
        match self.tx.take() {
            Some(tx) => Ok(tx.commit().await?),
            None => Ok(()),
        }
    }

    /// Rolls back explicitly (dropping does the same without waiting).
    ///
    /// # Errors
    /// The rollback's database error.
    pub async fn rollback(mut self) -> Result<()> {
        match self.tx.take() {
            Some(tx) => Ok(tx.rollback().await?),
            None => Ok(()),
        }
    }

    /// Whether statements on this unit of work may be prepared under a name
    /// ([`Pooler::named_statements`](crate::Pooler::named_statements)).
    pub(crate) fn pooler_named_statements(&self) -> bool {
        self.shared.config.pooler.named_statements()
    }

    /// Makes unqualified names resolve in `schema` (then `public`) until the transaction
    /// ends. The schema name is validated by [`Schema`] and passed as a bind parameter.
    ///
    /// # Errors
    /// The database error, if any.
    pub async fn set_search_path(&mut self, schema: &Schema) -> Result<()> {
        sqlx::query("SELECT set_config('search_path', $1 || ', public', true)")
            .persistent(self.shared.config.pooler.named_statements())
            .bind(schema.ident().quoted())
            .execute(&mut ***self)
            .await?;
        Ok(())
    }
}

impl Deref for UnitOfWork {
    type Target = Transaction<'static, Postgres>;
    fn deref(&self) -> &Self::Target {
        self.tx.as_ref().unwrap_or_else(|| unreachable_tx())
    }
}

impl DerefMut for UnitOfWork {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.tx.as_mut().unwrap_or_else(|| unreachable_tx())
    }
}

#[track_caller]
fn unreachable_tx() -> ! {
    // `tx` is only taken by `commit`/`rollback`, which consume the unit of work.
    unreachable!("UnitOfWork used after commit or rollback")
}

impl Drop for UnitOfWork {
    fn drop(&mut self) {
        self.shared
            .telemetry
            .record_release("transaction", self.started_at.elapsed());
    }
}
