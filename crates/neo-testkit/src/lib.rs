//! Test support for neo-commons and the services built on it: real PostgreSQL and Redis
//! servers started from locally installed binaries, a database of its own for every test,
//! fault injection (stop, kill, restart a server), and a scripted HTTP receiver.
//!
//! **Use it as a dev-dependency only.**
//!
//! ```no_run
//! # async fn demo() {
//! // One server per test binary (or the ones named by NEO_TEST_DATABASE_URL /
//! // NEO_TEST_REDIS_URL), a fresh database per call.
//! let db = neo_testkit::postgres().await;
//! let pool = db.pool().await.unwrap();
//! let redis = neo_testkit::redis().await;
//! # let _ = (pool, redis);
//! # }
//! ```
//!
//! # Where the servers come from
//! - `NEO_TEST_DATABASE_URL` / `NEO_TEST_REDIS_URL`, when set, name servers you run; the
//!   role needs `CREATEDB`. `scripts/test` starts one pair for the whole run this way.
//! - Otherwise the first test of a process starts a server from the installed binaries
//!   (PostgreSQL 15+ from `/usr/lib/postgresql/*/bin` or `PATH`, run as the `postgres`
//!   account when we are root; `redis-server` 7+) on a free loopback port, with a throwaway
//!   data directory. It is shut down when the process exits.
//! - When a binary is missing the test **fails** with the command that installs it
//!   (`apt-get install -y postgresql redis-server`). Nothing is ever skipped.
//! - [`redis_tls`] and [`redis_cluster`] give a TLS-only Redis (certificates made at test
//!   time, [`CertificateFiles`]) and a six-node Redis Cluster (`redis-cli`, Debian's
//!   `redis-tools`), shared the same way, or the ones `NEO_TEST_REDIS_TLS_URL` +
//!   `NEO_TEST_REDIS_TLS_CERTS` and `NEO_TEST_REDIS_CLUSTER_NODES` name (`scripts/test` sets
//!   them).
//!
//! Tests that inject faults start servers of their own with [`PgServer::start`] and
//! [`RedisServer::start`], which they can stop, kill and restart, or a primary with a
//! streaming replica ([`PgReplicaPair::start`]) to kill the primary, promote the replica or
//! pause its replay; [`postgres_replicated`] shares one pair per test binary.
//!
//! # Features
//! None: everything is always built.

mod certs;
mod error;
mod exposition;
mod failure;
mod pgbouncer;
mod postgres;
mod process;
mod receiver;
mod redis;
mod redis_cluster;
mod redis_sentinel;
mod redis_tls;
mod roles;
mod sql;
mod tls;
mod trace_capture;

pub use certs::CertificateFiles;
pub use error::{Error, Result};
pub use exposition::{ExpositionSample, Family, parse_exposition};
pub use failure::Failure;
pub use pgbouncer::{PGBOUNCER_BIN_VAR, PGBOUNCER_URL_VAR, PgBouncer, PgBouncerOptions, PgRoute};
pub use postgres::{
    BIN_DIR_VAR, DATABASE_URL_VAR, PgServer, PgServerOptions, TestDatabase, TlsPostgres,
};
pub use postgres::{
    PgReplicaOptions, PgReplicaPair, REPLICA_NAME, ReplicatedDatabase, ReplicatedPostgres,
};
pub use receiver::{HttpReceiver, ReceivedRequest, ScriptedResponse};
pub use redis::{REDIS_BIN_VAR, REDIS_URL_VAR, RedisServer, RedisServerOptions, TestRedis};
pub use redis_cluster::{REDIS_CLUSTER_NODES_VAR, RedisCluster, TestRedisCluster};
pub use redis_sentinel::{
    REDIS_SENTINEL_MASTER_VAR, REDIS_SENTINEL_NODES_VAR, RedisSentinelGroup, SENTINEL_MASTER_NAME,
    TestRedisSentinel,
};
pub use redis_tls::{REDIS_TLS_CERTS_VAR, REDIS_TLS_URL_VAR, TestRedisTls};
pub use roles::{RoleFacts, SplitRoles};
pub use sql::{custom_plan_of_last, generic_plans, uuid_v7_sql};
pub use tls::TestCertificates;
pub use trace_capture::{CapturedSpan, TraceCapture};

/// A fresh database on the shared PostgreSQL server, dropped when the value is dropped.
///
/// # Panics
/// When no server can be had; the message says how to get one (install command or
/// `NEO_TEST_DATABASE_URL`). Use [`try_postgres`] to handle that yourself.
pub async fn postgres() -> TestDatabase {
    try_postgres()
        .await
        .unwrap_or_else(|e| panic!("neo-testkit: no PostgreSQL for this test: {e}"))
}

/// Like [`postgres`], returning the error instead of panicking.
///
/// # Errors
/// [`Error::BinaryMissing`], [`Error::Startup`] or [`Error::Client`], each saying what to do.
pub async fn try_postgres() -> Result<TestDatabase> {
    postgres::create_database().await
}

/// The PostgreSQL with `ssl = on` shared by the tests of this process (certificate for
/// `localhost` from a CA generated at startup), started on first use and torn down at exit.
/// It is always started here, whatever `NEO_TEST_DATABASE_URL` says: the tests need its CA.
///
/// # Panics
/// When the server cannot be started; the message says why. Use [`try_postgres_tls`] to
/// handle that yourself.
pub async fn postgres_tls() -> TlsPostgres {
    try_postgres_tls()
        .await
        .unwrap_or_else(|e| panic!("neo-testkit: no TLS PostgreSQL for this test: {e}"))
}

/// Like [`postgres_tls`], returning the error instead of panicking.
///
/// # Errors
/// [`Error::BinaryMissing`], [`Error::Startup`] or [`Error::Certificates`].
pub async fn try_postgres_tls() -> Result<TlsPostgres> {
    tokio::task::spawn_blocking(postgres::shared_tls)
        .await
        .map_err(Error::client("starting the shared TLS PostgreSQL"))?
}

/// The primary + streaming replica shared by the tests of this process (asynchronous
/// replication, `pg_basebackup -R`), started on first use and torn down at exit; take a
/// database of your own on it with [`ReplicatedPostgres::database`]. Fault tests (pause
/// replay, kill, promote) start a [`PgReplicaPair`] of their own instead.
///
/// # Panics
/// When the pair cannot be started; the message says why. Use [`try_postgres_replicated`]
/// to handle that yourself.
pub async fn postgres_replicated() -> ReplicatedPostgres {
    try_postgres_replicated()
        .await
        .unwrap_or_else(|e| panic!("neo-testkit: no replicated PostgreSQL for this test: {e}"))
}

/// Like [`postgres_replicated`], returning the error instead of panicking.
///
/// # Errors
/// [`Error::BinaryMissing`] or [`Error::Startup`] (with the server log).
pub async fn try_postgres_replicated() -> Result<ReplicatedPostgres> {
    tokio::task::spawn_blocking(postgres::shared_replicated)
        .await
        .map_err(Error::client("starting the shared replicated PostgreSQL"))?
}

/// A flushed logical database on the shared Redis server, with a key prefix unique to the test.
///
/// # Panics
/// When no server can be had; the message says how to get one (install command or
/// `NEO_TEST_REDIS_URL`). Use [`try_redis`] to handle that yourself.
pub async fn redis() -> TestRedis {
    try_redis()
        .await
        .unwrap_or_else(|e| panic!("neo-testkit: no Redis for this test: {e}"))
}

/// Like [`redis`], returning the error instead of panicking.
///
/// # Errors
/// [`Error::BinaryMissing`], [`Error::Startup`] or [`Error::Client`], each saying what to do.
pub async fn try_redis() -> Result<TestRedis> {
    redis::create_database().await
}

/// The TLS-only Redis shared by this test binary (started on first use from the installed
/// `redis-server`, which must be built with TLS, as Debian's is; stopped when the process
/// exits), with the certificates to reach it and a key prefix unique to the test.
///
/// # Panics
/// When no server can be had; the message says how to install one.
/// Use [`try_redis_tls`] to handle that yourself.
pub async fn redis_tls() -> TestRedisTls {
    try_redis_tls()
        .await
        .unwrap_or_else(|e| panic!("neo-testkit: no TLS Redis for this test: {e}"))
}

/// Like [`redis_tls`], returning the error instead of panicking.
///
/// # Errors
/// [`Error::BinaryMissing`] or [`Error::Startup`] (with the server log, e.g. when
/// `redis-server` was built without TLS).
pub async fn try_redis_tls() -> Result<TestRedisTls> {
    tokio::task::spawn_blocking(redis_tls::shared)
        .await
        .map_err(Error::client("starting the shared TLS Redis"))?
}

/// The Redis Cluster shared by this test binary (six nodes, three masters with a replica
/// each, started on first use from the installed `redis-server` and `redis-cli`, stopped
/// when the process exits; or the seed nodes in `NEO_TEST_REDIS_CLUSTER_NODES`), with a key
/// prefix unique to the test.
///
/// # Panics
/// When no cluster can be had; the message says what to install. Use
/// [`try_redis_cluster`] to handle that yourself.
pub async fn redis_cluster() -> TestRedisCluster {
    try_redis_cluster()
        .await
        .unwrap_or_else(|e| panic!("neo-testkit: no Redis Cluster for this test: {e}"))
}

/// Like [`redis_cluster`], returning the error instead of panicking.
///
/// # Errors
/// [`Error::BinaryMissing`] (`redis-server`, or `redis-cli` from Debian's `redis-tools`) or
/// [`Error::Startup`] with `redis-cli`'s output.
pub async fn try_redis_cluster() -> Result<TestRedisCluster> {
    tokio::task::spawn_blocking(redis_cluster::shared)
        .await
        .map_err(Error::client("starting the shared Redis Cluster"))?
}

/// The Redis Sentinel group shared by this test binary (a master, its replica and three
/// sentinels, started on first use from the installed `redis-server` and `redis-sentinel`,
/// stopped when the process exits; or the sentinels in `NEO_TEST_REDIS_SENTINEL_NODES`
/// monitoring `NEO_TEST_REDIS_SENTINEL_MASTER`), with a key prefix unique to the test.
/// Tests that kill the master start their own [`RedisSentinelGroup`].
///
/// # Panics
/// When no group can be had; the message says what to install. Use
/// [`try_redis_sentinel`] to handle that yourself.
pub async fn redis_sentinel() -> TestRedisSentinel {
    try_redis_sentinel()
        .await
        .unwrap_or_else(|e| panic!("neo-testkit: no Redis Sentinel group for this test: {e}"))
}

/// Like [`redis_sentinel`], returning the error instead of panicking.
///
/// # Errors
/// [`Error::BinaryMissing`] (`redis-server`, or `redis-sentinel` from Debian's
/// `redis-sentinel`) or [`Error::Startup`] with the sentinels' logs.
pub async fn try_redis_sentinel() -> Result<TestRedisSentinel> {
    tokio::task::spawn_blocking(redis_sentinel::shared)
        .await
        .map_err(Error::client("starting the shared Redis Sentinel group"))?
}

/// A fresh database on the shared PostgreSQL server reached through the shared PgBouncer in
/// transaction mode (started on first use, torn down at exit; or the one
/// `NEO_TEST_PGBOUNCER_URL` names): [`TestDatabase::url`] goes through PgBouncer,
/// [`TestDatabase::direct_url`] does not.
///
/// # Errors
/// As [`try_postgres`], and [`Error::BinaryMissing`] when `pgbouncer` is not installed.
pub async fn try_pgbouncer() -> Result<TestDatabase> {
    pgbouncer::create_database().await
}

/// The URL of the shared PgBouncer (database `postgres`), starting it if needed (blocking).
///
/// # Errors
/// As [`try_pgbouncer`].
pub fn shared_pgbouncer_url() -> Result<String> {
    pgbouncer::shared_url()
}

/// The URL of the shared PostgreSQL server, starting it if needed (blocking).
///
/// # Errors
/// As [`try_postgres`].
pub fn shared_postgres_url() -> Result<String> {
    postgres::shared_url()
}

/// The URL of the shared Redis server, starting it if needed (blocking).
///
/// # Errors
/// As [`try_redis`].
pub fn shared_redis_url() -> Result<String> {
    redis::shared_url()
}

/// Replaces the password of a URL with `***` for messages and `Debug`.
///
/// # Example
/// ```
/// assert_eq!(neo_testkit::redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
/// ```
pub fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.into()
        }
        Ok(url) => url.into(),
        Err(_) => "(unparseable url)".to_owned(),
    }
}

/// Runs each named `async fn(PgRoute)` of the calling module once per [`PgRoute`], as
/// `direct::name` and `pgbouncer::name` (`#[tokio::test]`s, or the test attribute given
/// first): one test body, every route.
///
/// ```ignore
/// async fn saves_a_batch(route: neo_testkit::PgRoute) { /* ... */ }
/// neo_testkit::over_routes!(saves_a_batch);
/// // On another runtime:
/// neo_testkit::over_routes!(#[tokio::test(flavor = "multi_thread")] saves_a_batch);
/// ```
#[macro_export]
macro_rules! over_routes {
    (#[$test_attr:meta] $($test:ident),* $(,)?) => {
        mod direct {
            $(#[$test_attr]
            async fn $test() {
                super::$test($crate::PgRoute::Direct).await;
            })*
        }
        mod pgbouncer {
            $(#[$test_attr]
            async fn $test() {
                super::$test($crate::PgRoute::PgBouncer).await;
            })*
        }
    };
    ($($test:ident),* $(,)?) => {
        $crate::over_routes!(#[tokio::test] $($test),*);
    };
}
