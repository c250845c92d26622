//! neo-coord's lock against the raw Redis round trip it is built on, on one server and on a
//! Redis Cluster.

use crate::{Pair, check};
use neo_coord::{CoordConfig, Coordinator, RedisConfig};
use std::hint::black_box;
use std::rc::Rc;

/// Points the cluster pair at an existing Redis Cluster (seed node URLs, comma-separated)
/// instead of starting one.
pub const CLUSTER_NODES_VAR: &str = "NEO_BENCH_REDIS_CLUSTER_NODES";

/// The pairs of this module on the Redis at `url`.
pub fn pairs_on(url: &str) -> Vec<Pair> {
    let rt = Rc::new(check(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    ));
    let _guard = rt.enter();
    let coord = check(Coordinator::connect(
        url,
        CoordConfig {
            key_prefix: format!("bench{}:", std::process::id()),
            ..CoordConfig::default()
        },
    ));
    // One multiplexed connection: a SET NX is then exactly one round trip (a deadpool-redis
    // checkout would add a `PING` round trip to it).
    let conn = crate::cache::raw_multiplexed(&rt, url);
    let key = format!("bench{}:raw-lock", std::process::id());
    let rt_raw = Rc::clone(&rt);
    vec![Pair {
        name: "coord/lock_acquire_release",
        // At most 2.5 times one raw SET NX round trip. Ours is two (acquire and release).
        target: Some(2.5),
        per_iteration: None,
        raw_per_iteration: None,
        ours: Box::new(move || {
            rt.block_on(async {
                let guard =
                    check(coord.try_lock("bench").await).unwrap_or_else(|| panic!("lock taken"));
                check(guard.release().await);
            });
        }),
        raw: Box::new(move || {
            // One SET NX round trip (the key stays; SET NX costs the same either way).
            let mut conn = conn.clone();
            let set: Option<String> = rt_raw.block_on(async {
                check(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg("token")
                        .arg("NX")
                        .arg("PX")
                        .arg(10_000)
                        .query_async(&mut conn)
                        .await,
                )
            });
            black_box(set);
        }),
    }]
}

/// `coord/lock_acquire_release_cluster`: a lock taken and released through neo-coord on the
/// Redis Cluster seeded by `nodes` (two scripts, each one round trip to the slot's master)
/// against the same two round trips written with redis-rs' cluster client: `SET NX PX`, then
/// the compare-and-delete Lua script.
pub fn cluster_pair(nodes: &[String]) -> Pair {
    let rt = Rc::new(check(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    ));
    let _guard = rt.enter();
    let coord = check(Coordinator::connect_redis(
        &RedisConfig::cluster(nodes.to_vec()),
        CoordConfig {
            key_prefix: format!("bench{}:", std::process::id()),
            ..CoordConfig::default()
        },
    ));
    let client = check(redis::cluster::ClusterClient::new(nodes.to_vec()));
    let mut conn = check(rt.block_on(client.get_async_connection()));
    let key = format!("bench{}:raw-lock", std::process::id());
    let delete = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    );
    // Load the script once, as neo-coord's first call does.
    let _: i64 = check(rt.block_on(delete.key(&key).arg("none").invoke_async(&mut conn)));
    let rt_raw = Rc::clone(&rt);
    Pair {
        name: "coord/lock_acquire_release_cluster",
        // At most 2.5 times the raw SET NX PX + Lua delete on the cluster.
        target: Some(2.5),
        per_iteration: None,
        raw_per_iteration: None,
        ours: Box::new(move || {
            rt.block_on(async {
                let guard =
                    check(coord.try_lock("bench").await).unwrap_or_else(|| panic!("lock taken"));
                check(guard.release().await);
            });
        }),
        raw: Box::new(move || {
            rt_raw.block_on(async {
                let set: Option<String> = check(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg("token")
                        .arg("NX")
                        .arg("PX")
                        .arg(10_000)
                        .query_async(&mut conn)
                        .await,
                );
                assert!(set.is_some(), "raw lock taken");
                let deleted: i64 =
                    check(delete.key(&key).arg("token").invoke_async(&mut conn).await);
                black_box(deleted);
            });
        }),
    }
}

/// The seed nodes of the bench Redis Cluster: [`CLUSTER_NODES_VAR`], or a six-node cluster
/// started once (it lives as long as the process; its watchdogs remove it afterwards).
pub fn bench_cluster_nodes() -> Vec<String> {
    static NODES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    NODES
        .get_or_init(|| {
            if let Ok(nodes) = std::env::var(CLUSTER_NODES_VAR) {
                return nodes.split(',').map(|n| n.trim().to_owned()).collect();
            }
            let cluster = check(neo_testkit::RedisCluster::start());
            let nodes = cluster.nodes();
            std::mem::forget(cluster);
            nodes
        })
        .clone()
}

/// The pairs of this module, on the bench Redis and the bench Redis Cluster.
pub fn pairs() -> Vec<Pair> {
    let mut pairs = pairs_on(&crate::cache::bench_redis_url());
    pairs.push(cluster_pair(&bench_cluster_nodes()));
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_pair_runs_on_a_real_redis() {
        let rt = check(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
        );
        let redis = rt.block_on(neo_testkit::redis());
        crate::run_each_once(pairs_on(redis.url()));
    }

    #[test]
    fn the_cluster_lock_pair_runs_on_a_real_cluster() {
        let rt = check(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
        );
        let cluster = rt.block_on(neo_testkit::redis_cluster());
        crate::run_each_once(vec![cluster_pair(cluster.nodes())]);
    }
}
