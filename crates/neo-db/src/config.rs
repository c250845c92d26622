//! Configuration of the pool, telemetry thresholds, batching and COPY.

use neo_core::SecretString;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// How a [`Db`](crate::Db) connects and behaves. Every field has a default; load it from
/// `NEO_DB_*` variables with [`DbConfig::from_env`] (feature `env`), e.g. `NEO_DB_URL`,
/// `NEO_DB_MAX_CONNECTIONS=20`, `NEO_DB_STATEMENT_TIMEOUT=5s`, `NEO_DB_COPY__FLUSH_ROWS=50000`,
/// `NEO_DB_SSL_MODE=verify-full`, `NEO_DB_SSL_ROOT_CERT=/etc/ssl/db-ca.pem`,
/// `NEO_DB_POOLER=transaction`, `NEO_DB_LISTEN_URL=postgres://…` (direct, for LISTEN).
///
/// The URL is a secret: `Debug` shows `[REDACTED]` in its place.
///
/// # Example
/// ```
/// use neo_db::DbConfig;
/// use std::time::Duration;
/// let config = DbConfig {
///     max_connections: 20,
///     statement_timeout: Some(Duration::from_secs(5)),
///     ..DbConfig::with_url("postgres://app:secret@localhost:5432/app")
/// };
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DbConfig {
    /// `postgres://user:password@host:port/database`. Required. May carry `sslmode` and
    /// `sslrootcert` (`?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem`), and several
    /// hosts with a read-write target for failover, as libpq:
    /// `postgres://app@db1:5432,db2:5432/app?target_session_attrs=read-write`.
    pub url: SecretString,
    /// TLS: libpq's `sslmode` (`NEO_DB_SSL_MODE=verify-full`); overrides the URL's. `None`:
    /// the URL's, else `PGSSLMODE`, else `prefer`.
    pub ssl_mode: Option<crate::SslMode>,
    /// TLS: PEM file of the CA that signs the server's certificate, for `verify-ca` and
    /// `verify-full` (`NEO_DB_SSL_ROOT_CERT`); overrides the URL's `sslrootcert`. The bundled
    /// Mozilla roots are trusted as well.
    pub ssl_root_cert: Option<PathBuf>,
    /// Connections kept open even when idle.
    pub min_connections: u32,
    /// Most connections open at once.
    pub max_connections: u32,
    /// How long a caller waits for a connection before getting a `Timeout` error.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Idle connections above `min_connections` are closed after this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// Connections are replaced after this long, whatever their state.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Option<Duration>,
    /// PostgreSQL's `statement_timeout` for every connection (`None`: the server's default).
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Option<Duration>,
    /// `application_name`, shown in `pg_stat_activity`.
    pub application_name: String,
    /// Ping a connection that was idle at least [`test_idle_after`](Self::test_idle_after)
    /// before handing it out (one extra round trip; finds connections a server restart
    /// killed before a query does).
    pub test_before_acquire: bool,
    /// With [`test_before_acquire`](Self::test_before_acquire), a connection used more
    /// recently than this is handed out without a ping, as HikariCP's
    /// `aliveBypassWindowMs` (also 500 ms): on a busy pool every acquire otherwise cost a
    /// round trip (a worker's express claims waited 1.5 ms at p90 and 3.8 ms at p99 for the
    /// ping under a drain, docs/PERFORMANCE.md). A restart that kills the connection in
    /// that window fails the query that uses it, as it fails a query already running.
    /// Zero pings every connection (`NEO_DB_TEST_IDLE_AFTER=0s`).
    #[serde(with = "humantime_serde")]
    pub test_idle_after: Duration,
    /// Prepared statements cached per connection.
    pub statement_cache_capacity: usize,
    /// Queries slower than this are logged at WARN and counted.
    #[serde(with = "humantime_serde")]
    pub slow_query_threshold: Duration,
    /// A connection or transaction held longer than this is logged at WARN when released
    /// (leak detection) and counted.
    #[serde(with = "humantime_serde")]
    pub held_too_long_threshold: Duration,
    /// Time limit of [`Db::health`](crate::Db::health).
    #[serde(with = "humantime_serde")]
    pub health_check_timeout: Duration,
    /// Batch operations split their input into statements of at most this many rows.
    pub max_rows_per_statement: usize,
    /// COPY bulk insert settings.
    pub copy: CopyConfig,
    /// What sits between the pool and PostgreSQL (`NEO_DB_POOLER`): `none` (the default) or
    /// `transaction` for PgBouncer in transaction mode, where neo-db keeps no session state
    /// (no named prepared statements, every statement in a transaction, `SET LOCAL` only,
    /// transaction-scoped advisory locks; see [`Pooler`](crate::Pooler)). PgBouncer refuses
    /// the startup parameter that carries `statement_timeout`, so each transaction neo-db
    /// opens (a unit of work, a statement connection, a batch) starts with
    /// `BEGIN; SET LOCAL statement_timeout = …` instead; statements a caller runs on
    /// [`Db::pool`](crate::Db::pool) itself get the role's or database's setting
    /// (`ALTER ROLE app SET statement_timeout = '30s'`).
    pub pooler: crate::Pooler,
    /// A direct URL (past any pooler) for LISTEN/NOTIFY (`NEO_DB_LISTEN_URL`), used by
    /// [`Db::listener`](crate::Db::listener). `None`: LISTEN on the pool when `pooler` is
    /// `none`; with a transaction pooler the queue worker and outbox dispatcher poll instead.
    /// A secret like `url`.
    pub listen_url: Option<SecretString>,
    /// Read replicas and how far behind they may be (`NEO_DB_REPLICA__*`; see
    /// [`ReplicaConfig`](crate::ReplicaConfig)).
    pub replica: crate::ReplicaConfig,
    /// Failover between the hosts of a multi-host `url` (`NEO_DB_FAILOVER__*`; see
    /// [`FailoverConfig`](crate::FailoverConfig)).
    pub failover: crate::FailoverConfig,
    /// Keys for sealing sensitive values (feature `seal`, `NEO_DB_SEAL__*`; see
    /// [`SealConfig`](crate::seal::SealConfig)).
    #[cfg(feature = "seal")]
    pub seal: crate::seal::SealConfig,
    /// How [`Db::transaction_with_retry`](crate::Db::transaction_with_retry) retries
    /// serialization failures and deadlocks (`NEO_DB_TRANSACTION_RETRY__*`).
    pub transaction_retry: crate::TransactionRetryConfig,
    /// The opt-in [`LockResolver`](crate::LockResolver) (`NEO_DB_LOCK_RESOLVER__*`).
    pub lock_resolver: crate::LockResolverConfig,
    /// [`QueryBaselines`](crate::diagnostics::QueryBaselines): where `pg_stat_statements`
    /// baselines are kept and what counts as a regression (`NEO_DB_QUERY_BASELINES__*`).
    pub query_baselines: crate::diagnostics::BaselineConfig,
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            url: SecretString::from(""),
            ssl_mode: None,
            ssl_root_cert: None,
            min_connections: 0,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(1800)),
            statement_timeout: Some(Duration::from_secs(30)),
            application_name: "neo-commons".to_owned(),
            test_before_acquire: true,
            test_idle_after: Duration::from_millis(500),
            statement_cache_capacity: 100,
            slow_query_threshold: Duration::from_millis(500),
            held_too_long_threshold: Duration::from_secs(5),
            health_check_timeout: Duration::from_secs(2),
            max_rows_per_statement: 10_000,
            copy: CopyConfig::default(),
            pooler: crate::Pooler::None,
            listen_url: None,
            replica: crate::ReplicaConfig::default(),
            failover: crate::FailoverConfig::default(),
            #[cfg(feature = "seal")]
            seal: crate::seal::SealConfig::default(),
            transaction_retry: crate::TransactionRetryConfig::default(),
            lock_resolver: crate::LockResolverConfig::default(),
            query_baselines: crate::diagnostics::BaselineConfig::default(),
        }
    }
}

impl DbConfig {
    /// The defaults with `url` set.
    pub fn with_url(url: impl Into<String>) -> Self {
        DbConfig {
            url: SecretString::from(url.into()),
            ..DbConfig::default()
        }
    }

    /// The defaults for a `url` that points at a transaction pooler (PgBouncer
    /// `pool_mode = transaction`), with `listen_url` past it for LISTEN: `pooler =
    /// "transaction"`, see [`Pooler`](crate::Pooler).
    ///
    /// # Example
    /// ```
    /// let config = neo_db::DbConfig::behind_transaction_pooler(
    ///     "postgres://app@pgbouncer:6432/app",
    ///     "postgres://app@db:5432/app",
    /// );
    /// assert_eq!(config.pooler, neo_db::Pooler::Transaction);
    /// ```
    pub fn behind_transaction_pooler(
        url: impl Into<String>,
        listen_url: impl Into<String>,
    ) -> Self {
        DbConfig {
            pooler: crate::Pooler::Transaction,
            listen_url: Some(SecretString::from(listen_url.into())),
            ..DbConfig::with_url(url)
        }
    }

    /// How long a pooled connection must have been idle to be pinged before it is handed
    /// out; `None` without `test_before_acquire`.
    pub(crate) fn ping_after(&self) -> Option<Duration> {
        self.test_before_acquire.then_some(self.test_idle_after)
    }

    /// Loads the configuration from `NEO_DB_*` environment variables over the defaults.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) naming the variable that could not be parsed.
    #[cfg(feature = "env")]
    pub fn from_env() -> crate::Result<Self> {
        Ok(neo_core::config::from_env("NEO_DB_")?)
    }
}

/// The data format of a COPY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyFormat {
    /// PostgreSQL's binary format: no parsing on the server, exact types. The default.
    #[default]
    Binary,
    /// The text format (tab-separated, `\N` for NULL).
    Text,
}

/// Buffering of the COPY writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CopyConfig {
    /// Data format sent to the server.
    pub format: CopyFormat,
    /// Flush when this many rows are buffered.
    pub flush_rows: usize,
    /// Flush when the buffer reaches this many bytes.
    pub flush_bytes: usize,
    /// Flush when the oldest buffered row has waited this long.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
}

impl Default for CopyConfig {
    fn default() -> Self {
        CopyConfig {
            format: CopyFormat::Binary,
            flush_rows: 100_000,
            flush_bytes: 16 * 1024 * 1024,
            flush_interval: Duration::from_secs(1),
        }
    }
}
