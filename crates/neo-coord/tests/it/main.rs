//! neo-coord against a real Redis started by neo-testkit (or `NEO_TEST_REDIS_URL`).
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod leader;
mod lock;
mod rate;

use neo_coord::{CoordConfig, Coordinator};
use neo_testkit::TestRedis;
use std::time::Duration;

pub(crate) async fn coord(
    configure: impl FnOnce(CoordConfig) -> CoordConfig,
) -> (TestRedis, Coordinator) {
    let redis = neo_testkit::redis().await;
    let config = configure(CoordConfig {
        key_prefix: redis.key_prefix().to_owned(),
        lock_ttl: Duration::from_millis(600),
        lock_wait: Duration::from_millis(300),
        leader_ttl: Duration::from_millis(600),
        ..CoordConfig::default()
    });
    let coord = Coordinator::connect(redis.url(), config).unwrap();
    (redis, coord)
}

/// Another process's view: a second coordinator on the same Redis and prefix.
pub(crate) fn sibling(redis: &TestRedis, coord: &Coordinator) -> Coordinator {
    Coordinator::connect(redis.url(), coord.config().clone()).unwrap()
}
