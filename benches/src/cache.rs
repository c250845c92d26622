//! neo-cache against raw moka and raw deadpool-redis doing the same reads, in the same run.
//!
//! Redis is a throwaway server from neo-testkit, or the one at `NEO_BENCH_REDIS_URL`.

use crate::{Pair, check, now_or_never};
use neo_cache::{Cache, CacheConfig, EntryOptions, HybridCache};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hint::black_box;
use std::rc::Rc;
use tokio::runtime::Runtime;

/// Environment variable naming an existing Redis to bench against.
pub const REDIS_URL_VAR: &str = "NEO_BENCH_REDIS_URL";

/// The cached value: a small record, as a service would cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Org {
    id: u64,
    name: String,
    slug: String,
    active: bool,
}

/// The record every cache row stores under id `id`.
pub fn org(id: u64) -> Org {
    Org {
        id,
        name: format!("Organization number {id}"),
        slug: format!("org-{id}"),
        active: true,
    }
}

/// The pairs of this module on the Redis at `url`.
pub fn pairs_on(url: &str) -> Vec<Pair> {
    let rt = Rc::new(check(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    ));
    let prefix = format!("bench{}:", std::process::id());
    let config = |name: &str| CacheConfig {
        key_prefix: prefix.clone(),
        ttl_jitter: 0.0,
        ..CacheConfig::named(name)
    };
    vec![
        l1_hit(&rt, url, config("l1")),
        l1_hit_tenant(&rt, url, config("l1t")),
        l2_hit(&rt, url, config("l2")),
        l2_hit_multiplexed(&rt, url, config("l2m")),
        many_from_l2(&rt, url, config("many")),
        many_multiplexed(&rt, url, config("manym")),
        many_decoded(&rt, url, config("decoded")),
    ]
}

/// The pairs of this module, on `NEO_BENCH_REDIS_URL` or a throwaway server, and on
/// `NEO_BENCH_REDIS_CLUSTER_NODES` or a throwaway cluster.
pub fn pairs() -> Vec<Pair> {
    let mut pairs = pairs_on(&bench_redis_url());
    pairs.extend(crate::cache_cluster::pairs_on(
        &crate::cache_cluster::bench_cluster_nodes(),
    ));
    pairs
}

/// `NEO_BENCH_REDIS_URL`, or a throwaway server started once per process.
pub fn bench_redis_url() -> String {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var(REDIS_URL_VAR) {
            return url;
        }
        let server = check(neo_testkit::RedisServer::start());
        let url = server.url();
        // The server lives as long as the process; its watchdog removes it afterwards.
        std::mem::forget(server);
        url
    })
    .clone()
}

fn l1_hit(rt: &Rc<Runtime>, url: &str, config: CacheConfig) -> Pair {
    let _guard = rt.enter();
    let cache = check(HybridCache::<Org>::tiered(config, url));
    check(rt.block_on(cache.set("org:1", org(1), &EntryOptions::default())));
    let raw: moka::sync::Cache<String, Org> =
        moka::sync::Cache::builder().max_capacity(10_000).build();
    raw.insert("org:1".to_owned(), org(1));
    let keep_runtime = Rc::clone(rt);
    Pair {
        name: "cache/l1_hit_tiered",
        target: Some(1.15),
        per_iteration: None,
        raw_per_iteration: None,
        ours: Box::new(move || {
            let _runtime = &keep_runtime;
            let value = check(now_or_never(cache.get(black_box("org:1"))));
            black_box(value);
        }),
        raw: Box::new(move || {
            black_box(raw.get(black_box("org:1")));
        }),
    }
}

/// An L1 hit through a tenant view (`for_tenant`: the key namespaced `t:{tenant}:` on the
/// stack) against the same hit on the plain cache: what carrying the tenant costs (issue 34:
/// at most 5 %).
fn l1_hit_tenant(rt: &Rc<Runtime>, url: &str, config: CacheConfig) -> Pair {
    let _guard = rt.enter();
    let cache = check(HybridCache::<Org>::tiered(config, url));
    let tenant = cache.for_tenant(&neo_core::TenantId::new());
    check(rt.block_on(tenant.set("org:1", org(1), &EntryOptions::default())));
    check(rt.block_on(cache.set("org:1", org(1), &EntryOptions::default())));
    let keep_runtime = Rc::clone(rt);
    Pair {
        name: "cache/l1_hit_tenant",
        target: Some(1.05),
        per_iteration: None,
        raw_per_iteration: None,
        ours: Box::new(move || {
            let _runtime = &keep_runtime;
            let value = check(now_or_never(tenant.get(black_box("org:1"))));
            black_box(value);
        }),
        raw: Box::new(move || {
            let value = check(now_or_never(cache.get(black_box("org:1"))));
            black_box(value);
        }),
    }
}

fn raw_pool(url: &str) -> deadpool_redis::Pool {
    check(deadpool_redis::Config::from_url(url).create_pool(Some(deadpool_redis::Runtime::Tokio1)))
}

/// One raw GET of `key` on `conn` (a pooled or a multiplexed connection).
async fn raw_get(conn: &mut impl redis::aio::ConnectionLike, key: &str) -> Option<Vec<u8>> {
    check(redis::cmd("GET").arg(key).query_async(conn).await)
}

/// One raw MGET of `keys` on `conn`.
async fn raw_mget(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &[String],
) -> Vec<Option<Vec<u8>>> {
    check(redis::cmd("MGET").arg(keys).query_async(conn).await)
}

/// One multiplexed connection, the leanest glue: no pool, so no health check per call.
pub(crate) fn raw_multiplexed(rt: &Runtime, url: &str) -> redis::aio::MultiplexedConnection {
    let client = check(redis::Client::open(url));
    check(rt.block_on(client.get_multiplexed_async_connection()))
}

/// The L2 hit against a GET on one multiplexed connection, without deadpool-redis' `PING` per
/// checkout (the targeted row's baseline pays it): what our connection handling gains is
/// taken out, what is left is our own work per call.
fn l2_hit_multiplexed(rt: &Rc<Runtime>, url: &str, config: CacheConfig) -> Pair {
    let stored_key = format!("{}{}:org:1", config.key_prefix, config.name);
    let mut pair = l2_hit(rt, url, config);
    pair.name = "cache/l2_hit_vs_multiplexed_get";
    pair.target = None;
    let conn = raw_multiplexed(rt, url);
    let rt_raw = Rc::clone(rt);
    pair.raw = Box::new(move || {
        let mut conn = conn.clone();
        let bytes = rt_raw.block_on(raw_get(&mut conn, &stored_key));
        assert!(bytes.is_some());
        black_box(bytes);
    });
    pair
}

fn l2_hit(rt: &Rc<Runtime>, url: &str, config: CacheConfig) -> Pair {
    let _guard = rt.enter();
    let stored_key = format!("{}{}:org:1", config.key_prefix, config.name);
    let cache = check(HybridCache::<Org>::redis(config, url));
    check(rt.block_on(cache.set("org:1", org(1), &EntryOptions::default())));
    let pool = raw_pool(url);
    let (rt_ours, rt_raw) = (Rc::clone(rt), Rc::clone(rt));
    Pair {
        name: "cache/l2_hit",
        target: Some(1.1),
        per_iteration: None,
        raw_per_iteration: None,
        ours: Box::new(move || {
            let value = check(rt_ours.block_on(cache.get("org:1")));
            assert!(value.is_some());
            black_box(value);
        }),
        raw: Box::new(move || {
            let bytes = rt_raw.block_on(async {
                let mut conn = check(pool.get().await);
                raw_get(&mut conn, &stored_key).await
            });
            assert!(bytes.is_some());
            black_box(bytes);
        }),
    }
}

fn many_from_l2(rt: &Rc<Runtime>, url: &str, config: CacheConfig) -> Pair {
    let _guard = rt.enter();
    let keys: Vec<String> = (0..100).map(|i| format!("org:{i}")).collect();
    let stored: Vec<String> = keys
        .iter()
        .map(|k| format!("{}{}:{k}", config.key_prefix, config.name))
        .collect();
    let cache = check(HybridCache::<Org>::redis(config, url));
    for (i, key) in keys.iter().enumerate() {
        check(rt.block_on(cache.set(key, org(i as u64), &EntryOptions::default())));
    }
    let pool = raw_pool(url);
    let (rt_ours, rt_raw) = (Rc::clone(rt), Rc::clone(rt));
    Pair {
        name: "cache/get_or_load_many_100_from_l2",
        target: Some(1.2),
        per_iteration: Some(100),
        raw_per_iteration: None,
        ours: Box::new(move || {
            let results = rt_ours.block_on(cache.get_or_load_many(&keys, |_| async {
                Err::<HashMap<String, Org>, _>(std::io::Error::other("everything is in L2"))
            }));
            assert!(results.iter().all(|r| matches!(r, Ok(Some(_)))));
            black_box(results);
        }),
        raw: Box::new(move || {
            let values: Vec<Option<Vec<u8>>> = rt_raw.block_on(async {
                let mut conn = check(pool.get().await);
                raw_mget(&mut conn, &stored).await
            });
            assert!(values.iter().all(Option::is_some));
            black_box(values);
        }),
    }
}

/// The batch read against one MGET on a multiplexed connection (see `l2_hit_multiplexed`).
fn many_multiplexed(rt: &Rc<Runtime>, url: &str, config: CacheConfig) -> Pair {
    let stored: Vec<String> = (0..100)
        .map(|i| format!("{}{}:org:{i}", config.key_prefix, config.name))
        .collect();
    let mut pair = many_from_l2(rt, url, config);
    pair.name = "cache/get_or_load_many_100_vs_multiplexed_mget";
    pair.target = None;
    let conn = raw_multiplexed(rt, url);
    let rt_raw = Rc::clone(rt);
    pair.raw = Box::new(move || {
        let mut conn = conn.clone();
        let values: Vec<Option<Vec<u8>>> = rt_raw.block_on(raw_mget(&mut conn, &stored));
        assert!(values.iter().all(Option::is_some));
        black_box(values);
    });
    pair
}

/// The same batch read against hand-written glue that also turns the bytes into values
/// (frame header skipped, MessagePack decoded), on one multiplexed connection: the leanest
/// code a service would otherwise write.
fn many_decoded(rt: &Rc<Runtime>, url: &str, config: CacheConfig) -> Pair {
    let mut pair = many_from_l2(rt, url, config);
    pair.name = "cache/get_or_load_many_100_vs_mget_and_decode";
    pair.target = None;
    let raw = std::mem::replace(&mut pair.raw, Box::new(|| {}));
    drop(raw);
    let _guard = rt.enter();
    let prefix = format!("bench{}:decoded:", std::process::id());
    let stored: Vec<String> = (0..100).map(|i| format!("{prefix}org:{i}")).collect();
    let conn = raw_multiplexed(rt, url);
    let rt_raw = Rc::clone(rt);
    pair.raw = Box::new(move || {
        let mut conn = conn.clone();
        let values: Vec<Option<Vec<u8>>> = rt_raw.block_on(raw_mget(&mut conn, &stored));
        let decoded: Vec<Org> = values
            .iter()
            .map(|v| {
                let bytes = v.as_deref().unwrap_or_default();
                // 10-byte neo-cache frame header; these values are below the compression threshold.
                check(rmp_serde::from_slice(bytes.get(10..).unwrap_or_default()))
            })
            .collect();
        black_box(decoded);
    });
    pair
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pair runs on the test Redis, and each side reads what the other reads.
    #[test]
    fn pairs_run_on_a_real_redis() {
        let rt = check(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
        );
        let redis = rt.block_on(neo_testkit::redis());
        crate::run_each_once(pairs_on(redis.url()));
        let cluster = rt.block_on(neo_testkit::redis_cluster());
        crate::run_each_once(crate::cache_cluster::pairs_on(cluster.nodes()));
    }
}
