//! neo-cache on a Redis Cluster against raw redis-rs cluster calls doing the same reads (and
//! the same decoding), in the same run.
//!
//! The cluster is a throwaway six-node one from neo-testkit, or the one whose seed nodes
//! `NEO_BENCH_REDIS_CLUSTER_NODES` names (comma-separated).

use crate::cache::{Org, org};
use crate::{Pair, check};
use futures_util::future::join_all;
use neo_cache::{Cache, CacheConfig, EntryOptions, HybridCache, RedisConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use std::collections::HashMap;
use std::hint::black_box;
use std::rc::Rc;
use tokio::runtime::Runtime;

/// Environment variable naming an existing cluster's seed nodes to bench against.
pub const REDIS_CLUSTER_NODES_VAR: &str = "NEO_BENCH_REDIS_CLUSTER_NODES";

/// `NEO_BENCH_REDIS_CLUSTER_NODES`, or a throwaway cluster started once per process.
pub fn bench_cluster_nodes() -> Vec<String> {
    static NODES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    NODES
        .get_or_init(|| {
            if let Ok(nodes) = std::env::var(REDIS_CLUSTER_NODES_VAR) {
                return nodes.split(',').map(|n| n.trim().to_owned()).collect();
            }
            let cluster = check(neo_testkit::RedisCluster::start());
            let nodes = cluster.nodes();
            // The cluster lives as long as the process; its watchdogs remove it afterwards.
            std::mem::forget(cluster);
            nodes
        })
        .clone()
}

/// The pairs of this module on the cluster seeded by `nodes`.
pub fn pairs_on(nodes: &[String]) -> Vec<Pair> {
    let rt = Rc::new(check(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    ));
    let prefix = format!("benchc{}:", std::process::id());
    let config = |name: &str| CacheConfig {
        key_prefix: prefix.clone(),
        ttl_jitter: 0.0,
        ..CacheConfig::named(name)
    };
    let redis = RedisConfig::cluster(nodes.iter().cloned());
    vec![
        l2_hit(&rt, &redis, config("l2")),
        many(&rt, &redis, config("many")),
    ]
}

fn raw_cluster(rt: &Runtime, redis: &RedisConfig) -> ClusterConnection {
    let client = check(redis::cluster::ClusterClient::new(
        redis.cluster.nodes.clone(),
    ));
    check(rt.block_on(client.get_async_connection()))
}

/// Bytes as neo-cache stores them, decoded the way hand-written code would: the 10-byte
/// frame header skipped (these values are below the compression threshold), MessagePack.
fn decode(bytes: Option<&[u8]>) -> Org {
    check(rmp_serde::from_slice(
        bytes.unwrap_or_default().get(10..).unwrap_or_default(),
    ))
}

fn l2_hit(rt: &Rc<Runtime>, redis: &RedisConfig, config: CacheConfig) -> Pair {
    let _guard = rt.enter();
    let stored_key = format!("{}{}:org:1", config.key_prefix, config.name);
    let cache = check(HybridCache::<Org>::redis_on(config, redis));
    check(rt.block_on(cache.set("org:1", org(1), &EntryOptions::default())));
    let conn = raw_cluster(rt, redis);
    let (rt_ours, rt_raw) = (Rc::clone(rt), Rc::clone(rt));
    Pair {
        name: "cache/l2_hit_cluster",
        target: Some(1.1),
        per_iteration: None,
        raw_per_iteration: None,
        ours: Box::new(move || {
            let value = check(rt_ours.block_on(cache.get("org:1")));
            assert!(value.is_some());
            black_box(value);
        }),
        raw: Box::new(move || {
            let mut conn = conn.clone();
            let bytes: Option<Vec<u8>> =
                check(rt_raw.block_on(redis::cmd("GET").arg(&stored_key).query_async(&mut conn)));
            black_box(decode(bytes.as_deref()));
        }),
    }
}

/// Redis' hash slot of `key` (CRC16 XMODEM of the hash tag or the whole key), as a service
/// would compute it to group keys by node.
fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16_384
}

/// The master (its index in the answer) serving each slot, from `CLUSTER SLOTS`.
fn slot_owners(rt: &Runtime, conn: &mut ClusterConnection) -> Vec<usize> {
    let ranges: Vec<(u16, u16, (String, u16))> = check(
        rt.block_on(
            redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<Vec<redis::Value>>(conn),
        ),
    )
    .into_iter()
    .filter_map(|range| match range {
        redis::Value::Array(f) => match (f.first(), f.get(1), f.get(2)) {
            (
                Some(redis::Value::Int(a)),
                Some(redis::Value::Int(b)),
                Some(redis::Value::Array(node)),
            ) => {
                let host: String = redis::from_redis_value(node.first()?.clone()).ok()?;
                let port: u16 = redis::from_redis_value(node.get(1)?.clone()).ok()?;
                Some((
                    u16::try_from(*a).ok()?,
                    u16::try_from(*b).ok()?,
                    (host, port),
                ))
            }
            _ => None,
        },
        _ => None,
    })
    .collect();
    let mut masters: Vec<(String, u16)> = Vec::new();
    let mut owners = vec![0; 16_384];
    for (a, b, node) in ranges {
        let index = masters.iter().position(|m| *m == node).unwrap_or_else(|| {
            masters.push(node);
            masters.len() - 1
        });
        for slot in a..=b {
            owners[usize::from(slot)] = index;
        }
    }
    owners
}

/// The batch read against hand-written cluster glue: keys grouped by slot (one MGET per slot)
/// and by node (one pipeline per node), the nodes in parallel, then the bytes decoded.
fn many(rt: &Rc<Runtime>, redis: &RedisConfig, config: CacheConfig) -> Pair {
    let _guard = rt.enter();
    let keys: Vec<String> = (0..100).map(|i| format!("org:{i}")).collect();
    let stored: Vec<String> = keys
        .iter()
        .map(|k| format!("{}{}:{k}", config.key_prefix, config.name))
        .collect();
    let cache = check(HybridCache::<Org>::redis_on(config, redis));
    for (i, key) in keys.iter().enumerate() {
        check(rt.block_on(cache.set(key, org(i as u64), &EntryOptions::default())));
    }
    let mut conn = raw_cluster(rt, redis);
    let owners = slot_owners(rt, &mut conn);
    let (rt_ours, rt_raw) = (Rc::clone(rt), Rc::clone(rt));
    Pair {
        name: "cache/get_or_load_many_100_cluster",
        target: Some(1.25),
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
            // slot -> positions, node -> slots
            let mut by_slot: HashMap<u16, Vec<usize>> = HashMap::new();
            for (i, key) in stored.iter().enumerate() {
                by_slot.entry(slot(key.as_bytes())).or_default().push(i);
            }
            let mut by_node: HashMap<usize, Vec<(u16, Vec<usize>)>> = HashMap::new();
            for (slot, members) in by_slot {
                by_node
                    .entry(owners[usize::from(slot)])
                    .or_default()
                    .push((slot, members));
            }
            let decoded: Vec<Option<Org>> = rt_raw.block_on(async {
                let sent = by_node.values().map(|groups| {
                    let mut conn = conn.clone();
                    let mut pipe = redis::pipe();
                    for (_, members) in groups {
                        let mut cmd = redis::cmd("MGET");
                        for &i in members {
                            cmd.arg(&stored[i]);
                        }
                        pipe.add_command(cmd);
                    }
                    let route = SingleNodeRoutingInfo::SpecificNode(Route::new(
                        groups[0].0,
                        SlotAddr::Master,
                    ));
                    async move { conn.route_pipeline(pipe, 0, groups.len(), route).await }
                });
                let answers = join_all(sent).await;
                let mut out: Vec<Option<Org>> = vec![None; stored.len()];
                for (groups, answer) in by_node.values().zip(answers) {
                    for ((_, members), value) in groups.iter().zip(check(answer)) {
                        let values: Vec<Option<Vec<u8>>> = check(redis::from_redis_value(value));
                        for (&i, bytes) in members.iter().zip(values) {
                            out[i] = Some(decode(bytes.as_deref()));
                        }
                    }
                }
                out
            });
            assert!(decoded.iter().all(Option::is_some));
            black_box(decoded);
        }),
    }
}
