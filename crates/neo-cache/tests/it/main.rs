//! neo-cache against a real Redis started by neo-testkit (or `NEO_TEST_REDIS_URL`).
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod connections;
mod contract;
mod faults;
mod keys;
mod tiered;

use neo_cache::{CacheConfig, HybridCache};
use neo_core::{Clock, ManualClock};
use neo_testkit::TestRedis;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Org {
    pub(crate) id: u64,
    pub(crate) name: String,
}

pub(crate) fn org(id: u64) -> Org {
    Org {
        id,
        name: format!("org {id}"),
    }
}

/// The configurations every contract test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Memory,
    Redis,
    Tiered,
    InMemory,
}

pub(crate) const KINDS: [Kind; 4] = [Kind::Memory, Kind::Redis, Kind::Tiered, Kind::InMemory];

/// A cache under test, with a way to let time pass that suits it.
pub(crate) struct Harness {
    pub(crate) cache: HybridCache<Org>,
    pub(crate) kind: Kind,
    clock: Option<Arc<ManualClock>>,
    _redis: Option<TestRedis>,
}

impl Harness {
    pub(crate) async fn new(
        kind: Kind,
        configure: impl FnOnce(CacheConfig) -> CacheConfig,
    ) -> Self {
        let base = CacheConfig {
            ttl: Duration::from_secs(60),
            ttl_jitter: 0.0,
            ..CacheConfig::named("orgs")
        };
        match kind {
            Kind::Memory => Harness {
                cache: HybridCache::memory(configure(base)).unwrap(),
                kind,
                clock: None,
                _redis: None,
            },
            Kind::InMemory => {
                let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
                let dyn_clock: Arc<dyn Clock> = clock.clone();
                Harness {
                    cache: HybridCache::in_memory(configure(base), dyn_clock).unwrap(),
                    kind,
                    clock: Some(clock),
                    _redis: None,
                }
            }
            Kind::Redis | Kind::Tiered => {
                let redis = neo_testkit::redis().await;
                let config = configure(CacheConfig {
                    key_prefix: redis.key_prefix().to_owned(),
                    ..base
                });
                let cache = if kind == Kind::Redis {
                    HybridCache::redis(config, redis.url()).unwrap()
                } else {
                    let cache = HybridCache::tiered(config, redis.url()).unwrap();
                    assert!(cache.backplane_ready(1, Duration::from_secs(5)).await);
                    cache
                };
                Harness {
                    cache,
                    kind,
                    clock: None,
                    _redis: Some(redis),
                }
            }
        }
    }

    /// Another instance on the same Redis (same name and prefix), as a second process would be.
    pub(crate) async fn sibling(&self) -> HybridCache<Org> {
        let redis = self._redis.as_ref().unwrap();
        let cache = HybridCache::tiered(self.cache.config().clone(), redis.url()).unwrap();
        assert!(cache.backplane_ready(1, Duration::from_secs(5)).await);
        cache
    }

    pub(crate) fn has_redis(&self) -> bool {
        matches!(self.kind, Kind::Redis | Kind::Tiered)
    }

    /// Lets `by` pass: the manual clock moves, real caches sleep.
    pub(crate) async fn advance(&self, by: Duration) {
        match &self.clock {
            Some(clock) => clock.advance(by),
            None => tokio::time::sleep(by).await,
        }
    }
}
