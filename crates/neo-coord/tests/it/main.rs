//! neo-coord against real Redis started by neo-testkit: every test of the suite runs once per
//! mode (one server, a Redis Cluster, a Sentinel-managed master, a TLS-only server; see
//! [`in_every_mode`]).
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod failover;
mod leader;
mod lock;
mod rate;

use neo_coord::{CoordConfig, Coordinator, RedisConfig};
use neo_testkit::TestRedis;
use std::time::Duration;

/// The ways to reach Redis the suite runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The shared plain server, a database of the test's own.
    Standalone,
    /// The shared six-node Redis Cluster.
    Cluster,
    /// The master of the shared Sentinel group.
    Sentinel,
    /// The shared TLS-only server, with a client certificate.
    Tls,
}

/// Runs each named `async fn(Mode)` as one test per mode:
/// `<name>::{standalone, cluster, sentinel, tls}`.
macro_rules! in_every_mode {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            use crate::Mode;
            #[tokio::test]
            async fn standalone() {
                super::$test(Mode::Standalone).await;
            }
            #[tokio::test]
            async fn cluster() {
                super::$test(Mode::Cluster).await;
            }
            #[tokio::test]
            async fn sentinel() {
                super::$test(Mode::Sentinel).await;
            }
            #[tokio::test]
            async fn tls() {
                super::$test(Mode::Tls).await;
            }
        }
    )*};
}
pub(crate) use in_every_mode;

/// Where a test's coordinators connect, and what keeps that Redis for the test.
pub(crate) struct Env {
    pub(crate) redis: RedisConfig,
    _database: Option<TestRedis>,
}

pub(crate) async fn coord(
    mode: Mode,
    configure: impl FnOnce(CoordConfig) -> CoordConfig,
) -> (Env, Coordinator) {
    let (redis, key_prefix, database) = match mode {
        Mode::Standalone => {
            let redis = neo_testkit::redis().await;
            let prefix = redis.key_prefix().to_owned();
            (RedisConfig::new(redis.url()), prefix, Some(redis))
        }
        Mode::Cluster => {
            let cluster = neo_testkit::redis_cluster().await;
            let config = RedisConfig::cluster(cluster.nodes().to_vec());
            (config, cluster.key_prefix().to_owned(), None)
        }
        Mode::Sentinel => {
            let group = neo_testkit::redis_sentinel().await;
            let config = RedisConfig::sentinel(group.sentinels().to_vec(), group.master_name());
            (config, group.key_prefix().to_owned(), None)
        }
        Mode::Tls => {
            let tls = neo_testkit::redis_tls().await;
            let certs = tls.certificates();
            let config = RedisConfig::new(tls.url())
                .tls_ca_file(certs.ca_file())
                .tls_client_cert(certs.client_cert_file(), certs.client_key_file());
            (config, tls.key_prefix().to_owned(), None)
        }
    };
    let config = configure(CoordConfig {
        key_prefix,
        lock_ttl: Duration::from_millis(600),
        lock_wait: Duration::from_millis(300),
        leader_ttl: Duration::from_millis(600),
        ..CoordConfig::default()
    });
    let coord = Coordinator::connect_redis(&redis, config).unwrap();
    let env = Env {
        redis,
        _database: database,
    };
    (env, coord)
}

/// Another process's view: a second coordinator on the same Redis and prefix.
pub(crate) fn sibling(env: &Env, coord: &Coordinator) -> Coordinator {
    Coordinator::connect_redis(&env.redis, coord.config().clone()).unwrap()
}
