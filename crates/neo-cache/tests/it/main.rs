//! neo-cache against a real Redis started by neo-testkit (or `NEO_TEST_REDIS_URL`).
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod cluster;
mod connections;
mod contract;
mod faults;
mod keys;
mod tenant;
mod tiered;

use neo_cache::RedisConfig;
use neo_cache::{CacheConfig, HybridCache, L2Config};
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

/// Where a Redis-backed configuration finds its Redis. Adding a deployment is a variant here, its arm in [`Deployment::start`] and its entry in [`DEPLOYMENTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deployment {
    /// One plain server, through the URL constructors.
    Standalone,
    /// The shared six-node Redis Cluster.
    Cluster,
    /// The shared TLS-only server (CA file and client certificate).
    Tls,
    /// The master of the shared Redis Sentinel group (one master, one replica, three
    /// sentinels), found through the sentinels.
    Sentinel,
}

/// Every deployment the contract runs on.
pub(crate) const DEPLOYMENTS: [Deployment; 4] = [
    Deployment::Standalone,
    Deployment::Cluster,
    Deployment::Tls,
    Deployment::Sentinel,
];

/// A started deployment: how to reach it, the key prefix of this test, and what keeps it.
struct Started {
    /// `None`: the plain URL constructors on `url`.
    config: Option<RedisConfig>,
    url: String,
    key_prefix: String,
    _guard: Option<TestRedis>,
}

impl Deployment {
    async fn start(self) -> Started {
        match self {
            Deployment::Standalone => {
                let redis = neo_testkit::redis().await;
                Started {
                    config: None,
                    url: redis.url().to_owned(),
                    key_prefix: redis.key_prefix().to_owned(),
                    _guard: Some(redis),
                }
            }
            Deployment::Cluster => {
                let cluster = neo_testkit::redis_cluster().await;
                Started {
                    config: Some(RedisConfig::cluster(cluster.nodes().iter().cloned())),
                    url: String::new(),
                    key_prefix: cluster.key_prefix().to_owned(),
                    _guard: None,
                }
            }
            Deployment::Tls => {
                let tls = neo_testkit::redis_tls().await;
                let certs = tls.certificates();
                Started {
                    config: Some(
                        RedisConfig::new(tls.url())
                            .tls_ca_file(certs.ca_file())
                            .tls_client_cert(certs.client_cert_file(), certs.client_key_file()),
                    ),
                    url: String::new(),
                    key_prefix: tls.key_prefix().to_owned(),
                    _guard: None,
                }
            }
            Deployment::Sentinel => {
                let group = neo_testkit::redis_sentinel().await;
                Started {
                    config: Some(RedisConfig::sentinel(
                        group.sentinels().iter().cloned(),
                        group.master_name(),
                    )),
                    url: String::new(),
                    key_prefix: group.key_prefix().to_owned(),
                    _guard: None,
                }
            }
        }
    }
}

/// The configurations every contract test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Memory,
    InMemory,
    /// Redis only.
    Redis(Deployment),
    /// Both tiers, with the backplane.
    Tiered(Deployment),
}

/// The two in-process kinds, then Redis-only and tiered on every deployment.
pub(crate) const KINDS: [Kind; 2 + 2 * DEPLOYMENTS.len()] = {
    let mut kinds = [Kind::Memory; 2 + 2 * DEPLOYMENTS.len()];
    kinds[1] = Kind::InMemory;
    let mut i = 0;
    while i < DEPLOYMENTS.len() {
        kinds[2 + 2 * i] = Kind::Redis(DEPLOYMENTS[i]);
        kinds[3 + 2 * i] = Kind::Tiered(DEPLOYMENTS[i]);
        i += 1;
    }
    kinds
};

/// A cache under test, with a way to let time pass that suits it.
pub(crate) struct Harness {
    pub(crate) cache: HybridCache<Org>,
    pub(crate) kind: Kind,
    clock: Option<Arc<ManualClock>>,
    redis: Option<Started>,
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
                redis: None,
            },
            Kind::InMemory => {
                let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
                let dyn_clock: Arc<dyn Clock> = clock.clone();
                Harness {
                    cache: HybridCache::in_memory(configure(base), dyn_clock).unwrap(),
                    kind,
                    clock: Some(clock),
                    redis: None,
                }
            }
            Kind::Redis(deployment) | Kind::Tiered(deployment) => {
                let redis = deployment.start().await;
                // Redis errors reach the test instead of being carried over by L1 and loaders.
                let config = configure(CacheConfig {
                    key_prefix: redis.key_prefix.clone(),
                    l2: L2Config {
                        fail_on_error: true,
                        ..base.l2.clone()
                    },
                    ..base
                });
                let cache = match kind {
                    Kind::Redis(_) => match &redis.config {
                        None => HybridCache::redis(config, &redis.url).unwrap(),
                        Some(on) => HybridCache::redis_on(config, on).unwrap(),
                    },
                    _ => {
                        let cache = tiered(config, &redis);
                        assert!(cache.backplane_ready(1, Duration::from_secs(5)).await);
                        cache
                    }
                };
                Harness {
                    cache,
                    kind,
                    clock: None,
                    redis: Some(redis),
                }
            }
        }
    }

    /// Another instance on the same Redis (same name and prefix), as a second process would be.
    pub(crate) async fn sibling(&self) -> HybridCache<Org> {
        let redis = self.redis.as_ref().unwrap();
        // On a cluster the sibling subscribes on another node (the seeds rotated): the
        // backplane's messages cross the cluster bus.
        let rotated;
        let redis = match &redis.config {
            Some(config) if !config.cluster.nodes.is_empty() => {
                let mut config = config.clone();
                config.cluster.nodes.rotate_left(3);
                rotated = Started {
                    config: Some(config),
                    url: String::new(),
                    key_prefix: redis.key_prefix.clone(),
                    _guard: None,
                };
                &rotated
            }
            _ => redis,
        };
        let cache = tiered(self.cache.config().clone(), redis);
        assert!(cache.backplane_ready(1, Duration::from_secs(5)).await);
        cache
    }

    pub(crate) fn has_redis(&self) -> bool {
        matches!(self.kind, Kind::Redis(_) | Kind::Tiered(_))
    }

    /// Lets `by` pass: the manual clock moves, real caches sleep.
    pub(crate) async fn advance(&self, by: Duration) {
        match &self.clock {
            Some(clock) => clock.advance(by),
            None => tokio::time::sleep(by).await,
        }
    }
}

fn tiered(config: CacheConfig, redis: &Started) -> HybridCache<Org> {
    match &redis.config {
        None => HybridCache::tiered(config, &redis.url).unwrap(),
        Some(on) => HybridCache::tiered_on(config, on).unwrap(),
    }
}
