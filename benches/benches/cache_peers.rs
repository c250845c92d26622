//! neo-cache next to the crates.io caches a service would pick instead (issue 36), on one Redis,
//! in one run, the libraries alternating block by block: `multi-tier-cache` (moka L1 + Redis
//! L2, pub/sub invalidation) and `cached` (its Redis store), with the raw baseline of a
//! multiplexed GET + decode. Every workload also counts the Redis commands it cost, from
//! `INFO commandstats` deltas on the server.
//!
//! `cargo bench -p neo-benches --bench cache_peers` (Redis: `NEO_BENCH_REDIS_URL` or a
//! throwaway server). The peers are dev-dependencies, which the `compare` binary cannot see,
//! so their rows are printed here, in the same format.
#![allow(clippy::print_stdout, reason = "a report prints")]
#![allow(clippy::unwrap_used, reason = "a bench that cannot run must stop")]
#![allow(missing_docs, reason = "a bench binary")]

use cached::{AsyncRedisCache, ConcurrentCachedAsync};
use futures_util::future::join_all;
use multi_tier_cache::{
    CacheManager, CacheStrategy, InvalidationConfig, L1Cache, L2Cache, MokaCacheConfig,
};
use neo_benches::cache::{Org, bench_redis_url, org};
use neo_benches::report::{self, Row, human};
use neo_cache::{Cache, CacheConfig, EntryOptions, HybridCache};
use redis::aio::MultiplexedConnection;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Calls per block; the libraries alternate block by block.
const BLOCK: usize = 500;
/// Blocks per library for the L2-hit rows.
const L2_ROUNDS: usize = 24;
/// Blocks per library for the miss rows.
const MISS_ROUNDS: usize = 12;
/// Samples per library for the update-seen rows.
const UPDATES: usize = 400;
/// Callers of the stampede.
const STAMPEDE: usize = 1_000;

/// `calls` summed over the server's `INFO commandstats`, without the bench's own `INFO` and
/// the subscribers' keep-alive `PING`s.
async fn commands(admin: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(admin)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            if matches!(name, "info" | "ping") {
                return None;
            }
            rest.strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// One block of `BLOCK` misses through `cache`: keys `org:{first..}` whose loader returns at
/// once.
async fn neo_misses(
    admin: &mut MultiplexedConnection,
    cache: &HybridCache<Org>,
    first: usize,
) -> (Vec<f64>, u64) {
    block(admin, first, BLOCK, |i| async move {
        let value = cache
            .get_or_load(&format!("org:{i}"), move || async move {
                Ok::<_, std::io::Error>(Some(org(i as u64)))
            })
            .await
            .unwrap();
        assert!(value.is_some());
    })
    .await
}

/// Latencies (ns) of calls `f(first..first + n)`, one after another, with the commands they
/// sent.
async fn block<F, Fut>(
    admin: &mut MultiplexedConnection,
    first: usize,
    n: usize,
    mut f: F,
) -> (Vec<f64>, u64)
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let before = commands(admin).await;
    let mut times = Vec::with_capacity(n);
    for i in first..first + n {
        let started = Instant::now();
        f(i).await;
        times.push(started.elapsed().as_secs_f64() * 1e9);
    }
    let after = commands(admin).await;
    // The two INFO calls themselves are not counted (filtered), so the delta is the block's.
    (times, after - before)
}

fn percentile(times: &mut [f64], p: f64) -> f64 {
    times.sort_by(f64::total_cmp);
    let at = ((times.len() as f64 - 1.0) * p).round() as usize;
    times[at]
}

/// One library's figures on a workload.
#[derive(Default)]
struct Side {
    times: Vec<f64>,
    commands: u64,
}

impl Side {
    fn add(&mut self, (times, commands): (Vec<f64>, u64)) {
        self.times.extend(times);
        self.commands += commands;
    }

    fn p(&mut self, p: f64) -> f64 {
        percentile(&mut self.times, p)
    }

    fn per_call(&self) -> f64 {
        self.commands as f64 / self.times.len().max(1) as f64
    }
}

fn ratio_row(name: &str, ours: f64, base: f64, base_name: &str, target: f64) -> Row {
    let ratio = ours / base;
    Row {
        operation: name.to_owned(),
        ours: human(ours),
        raw: format!("{} ({base_name})", human(base)),
        ratio: Some(ratio),
        target: format!("≤ {target:.2}×"),
        passed: Some(ratio <= target),
    }
}

fn reference(name: &str, text: String) -> Row {
    Row::reference(name, text)
}

fn neo_config(prefix: &str, name: &str) -> CacheConfig {
    CacheConfig {
        key_prefix: prefix.to_owned(),
        ttl: Duration::from_secs(600),
        ttl_jitter: 0.0,
        ..CacheConfig::named(name)
    }
}

async fn cached_store(url: &str, prefix: &str) -> AsyncRedisCache<String, Org> {
    AsyncRedisCache::<String, Org>::builder(prefix)
        .connection_string(url)
        .ttl(Duration::from_secs(600))
        .build()
        .await
        .unwrap()
}

async fn mtc_manager(url: &str, channel: &str) -> Arc<CacheManager> {
    let l1 = Arc::new(L1Cache::new(MokaCacheConfig::default()).unwrap());
    let l2 = Arc::new(L2Cache::with_url(url).await.unwrap());
    let config = InvalidationConfig {
        channel: channel.to_owned(),
        ..InvalidationConfig::default()
    };
    Arc::new(
        CacheManager::new_with_invalidation(l1, l2, url, config)
            .await
            .unwrap(),
    )
}

/// The key `i` stored only in Redis, read by an instance that never held it: neo (tiered,
/// default L1 of 10,000 entries, so every hit fills L1 and evicts), the raw GET + decode of
/// neo's bytes, `cached`, and multi-tier-cache.
async fn l2_hit_rows(url: &str, prefix: &str, admin: &mut MultiplexedConnection) -> Vec<Row> {
    let keys = L2_ROUNDS * BLOCK;
    let writer = HybridCache::<Org>::redis(neo_config(prefix, "l2p"), url).unwrap();
    let reader = HybridCache::<Org>::tiered(neo_config(prefix, "l2p"), url).unwrap();
    assert!(reader.backplane_ready(1, Duration::from_secs(5)).await);
    let store = cached_store(url, &format!("{prefix}cached:")).await;
    let mtc_writer = mtc_manager(url, &format!("{prefix}mtc")).await;
    let mtc_reader = mtc_manager(url, &format!("{prefix}mtc")).await;
    let (writer, store, mtc_writer) = (&writer, &store, &mtc_writer);
    for chunk in (0..keys).collect::<Vec<_>>().chunks(500) {
        join_all(chunk.iter().map(|&i| async move {
            writer
                .set(&format!("org:{i}"), org(i as u64), &EntryOptions::default())
                .await
                .unwrap();
            store
                .async_cache_set(format!("org:{i}"), org(i as u64))
                .await
                .unwrap();
            let bytes = serde_json::to_vec(&org(i as u64)).unwrap();
            mtc_writer
                .set_with_strategy(
                    &format!("{prefix}mtc:org:{i}"),
                    bytes.into(),
                    CacheStrategy::MediumTerm,
                )
                .await
                .unwrap();
        }))
        .await;
    }
    let raw = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let (mut ours, mut base, mut peer_cached, mut peer_mtc) = (
        Side::default(),
        Side::default(),
        Side::default(),
        Side::default(),
    );
    let reader = &reader;
    let mtc = &mtc_reader;
    for round in 0..L2_ROUNDS {
        let first = round * BLOCK;
        ours.add(
            block(admin, first, BLOCK, |i| async move {
                let value = reader.get(&format!("org:{i}")).await.unwrap();
                assert!(value.is_some());
            })
            .await,
        );
        base.add(
            block(admin, first, BLOCK, |i| {
                let mut conn = raw.clone();
                async move {
                    let bytes: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(format!("{prefix}l2p:org:{i}"))
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    let bytes = bytes.unwrap();
                    // The 10-byte frame header; these values are below the compression threshold.
                    let value: Org = rmp_serde::from_slice(&bytes[10..]).unwrap();
                    std::hint::black_box(value);
                }
            })
            .await,
        );
        peer_cached.add(
            block(admin, first, BLOCK, |i| async move {
                let value = store.async_cache_get(&format!("org:{i}")).await.unwrap();
                assert!(value.is_some());
            })
            .await,
        );
        peer_mtc.add(
            block(admin, first, BLOCK, |i| async move {
                let value = mtc
                    .get_typed::<Org>(&format!("{prefix}mtc:org:{i}"))
                    .await
                    .unwrap();
                assert!(value.is_some());
            })
            .await,
        );
    }
    let stats = reader.stats();
    assert_eq!(stats.l1_hits, 0, "every neo read was an L1 miss: {stats:?}");
    let rows = vec![
        ratio_row(
            "cache/l2_hit_p50",
            ours.p(0.5),
            base.p(0.5),
            "raw GET+decode",
            1.05,
        ),
        ratio_row(
            "cache/l2_hit_p99",
            ours.p(0.99),
            base.p(0.99),
            "raw GET+decode",
            1.2,
        ),
        reference(
            "cache/l2_hit_commands_per_call",
            format!(
                "neo {:.2}, raw {:.2}, cached {:.2}, multi-tier-cache {:.2}",
                ours.per_call(),
                base.per_call(),
                peer_cached.per_call(),
                peer_mtc.per_call()
            ),
        ),
        reference(
            "cache/l2_hit_peers_p50_p99",
            format!(
                "cached {} / {}, multi-tier-cache {} / {}",
                human(peer_cached.p(0.5)),
                human(peer_cached.p(0.99)),
                human(peer_mtc.p(0.5)),
                human(peer_mtc.p(0.99))
            ),
        ),
    ];
    reader.shutdown().await;
    rows
}

/// Where an L2 hit's time goes (filter `probe`, not in the default run): the same keys read
/// by neo variants and raw GETs through the connections neo uses, alternating block by block.
async fn l2_probe_rows(url: &str, prefix: &str, admin: &mut MultiplexedConnection) -> Vec<Row> {
    let keys = L2_ROUNDS * BLOCK;
    let writer = HybridCache::<Org>::redis(neo_config(prefix, "l2probe"), url).unwrap();
    for chunk in (0..keys).collect::<Vec<_>>().chunks(500) {
        join_all(chunk.iter().map(|&i| {
            let writer = &writer;
            async move {
                writer
                    .set(&format!("org:{i}"), org(i as u64), &EntryOptions::default())
                    .await
                    .unwrap();
            }
        }))
        .await;
    }
    let pool = |size: usize| CacheConfig {
        l2: neo_cache::L2Config {
            pool_size: size,
            ..neo_cache::L2Config::default()
        },
        ..neo_config(prefix, "l2probe")
    };
    let tiered16 = HybridCache::<Org>::tiered(pool(16), url).unwrap();
    let tiered1 = HybridCache::<Org>::tiered(pool(1), url).unwrap();
    let redis16 = HybridCache::<Org>::redis(pool(16), url).unwrap();
    let timeout = Duration::from_millis(500);
    let conns16 = neo_cache::redis_connections(url, 16, timeout).unwrap();
    let conns1 = neo_cache::redis_connections(url, 1, timeout).unwrap();
    let raw = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let names = [
        "neo tiered pool 16",
        "neo tiered pool 1",
        "neo redis-only pool 16",
        "raw GET+decode via redis_connections(16)",
        "raw GET+decode via redis_connections(1)",
        "raw GET+decode multiplexed",
    ];
    let mut sides: Vec<Side> = names.iter().map(|_| Side::default()).collect();
    let (t16, t1, r16) = (&tiered16, &tiered1, &redis16);
    let (c16, c1, raw) = (&conns16, &conns1, &raw);
    // `PROBE_ONLY=n` runs variant n alone (for `perf stat`).
    let only: Option<usize> = std::env::var("PROBE_ONLY").ok().map(|v| v.parse().unwrap());
    for round in 0..L2_ROUNDS {
        let first = round * BLOCK;
        for (n, side) in sides.iter_mut().enumerate() {
            if only.is_some_and(|only| only != n) {
                continue;
            }
            side.add(
                block(admin, first, BLOCK, |i| async move {
                    let key = format!("org:{i}");
                    let value = match n {
                        0 => t16.get(&key).await.unwrap(),
                        1 => t1.get(&key).await.unwrap(),
                        2 => r16.get(&key).await.unwrap(),
                        _ => {
                            let stored = format!("{prefix}l2probe:{key}");
                            let bytes: Option<Vec<u8>> = match n {
                                3 => redis::cmd("GET")
                                    .arg(&stored)
                                    .query_async(&mut c16.get().unwrap())
                                    .await
                                    .unwrap(),
                                4 => redis::cmd("GET")
                                    .arg(&stored)
                                    .query_async(&mut c1.get().unwrap())
                                    .await
                                    .unwrap(),
                                _ => redis::cmd("GET")
                                    .arg(&stored)
                                    .query_async(&mut raw.clone())
                                    .await
                                    .unwrap(),
                            };
                            Some(rmp_serde::from_slice(&bytes.unwrap()[10..]).unwrap())
                        }
                    };
                    assert!(value.is_some());
                })
                .await,
            );
        }
    }
    let rows = names
        .iter()
        .zip(&mut sides)
        .filter(|(_, side)| !side.times.is_empty())
        .map(|(name, side)| {
            reference(
                "cache/l2_probe_p50_p99",
                format!("{name}: {} / {}", human(side.p(0.5)), human(side.p(0.99))),
            )
        })
        .collect();
    tiered16.shutdown().await;
    tiered1.shutdown().await;
    rows
}

/// A key in no tier, a loader that returns at once: neo (tiered, backplane on), `cached`'s
/// get-or-set, multi-tier-cache's typed get-or-compute.
async fn miss_rows(url: &str, prefix: &str, admin: &mut MultiplexedConnection) -> Vec<Row> {
    let neo = HybridCache::<Org>::tiered(neo_config(prefix, "miss"), url).unwrap();
    assert!(neo.backplane_ready(1, Duration::from_secs(5)).await);
    let store = cached_store(url, &format!("{prefix}cachedmiss:")).await;
    let mtc = mtc_manager(url, &format!("{prefix}mtcmiss")).await;
    let (neo, store, mtc) = (&neo, &store, &mtc);
    let (mut ours, mut peer_cached, mut peer_mtc) =
        (Side::default(), Side::default(), Side::default());
    for round in 0..MISS_ROUNDS {
        let first = round * BLOCK;
        ours.add(neo_misses(admin, neo, first).await);
        peer_cached.add(
            block(admin, first, BLOCK, |i| async move {
                let value = store
                    .async_cache_get_or_set_with(format!("org:{i}"), move || async move {
                        org(i as u64)
                    })
                    .await
                    .unwrap();
                std::hint::black_box(value);
            })
            .await,
        );
        peer_mtc.add(
            block(admin, first, BLOCK, |i| async move {
                let value: Org = mtc
                    .get_or_compute_typed(
                        &format!("{prefix}mtcmiss:org:{i}"),
                        CacheStrategy::MediumTerm,
                        move || async move { Ok(org(i as u64)) },
                    )
                    .await
                    .unwrap();
                std::hint::black_box(value);
            })
            .await,
        );
    }
    // Where neo's time goes: the same miss without the value in the message (no MULTI), and
    // without the backplane (no PUBLISH, no echo).
    let evicting = HybridCache::<Org>::tiered(
        CacheConfig {
            backplane: neo_cache::BackplaneConfig {
                max_value_bytes: 0,
                ..neo_cache::BackplaneConfig::default()
            },
            ..neo_config(prefix, "missk")
        },
        url,
    )
    .unwrap();
    let quiet = HybridCache::<Org>::tiered(
        CacheConfig {
            backplane: neo_cache::BackplaneConfig {
                enabled: false,
                ..neo_cache::BackplaneConfig::default()
            },
            ..neo_config(prefix, "missq")
        },
        url,
    )
    .unwrap();
    assert!(evicting.backplane_ready(1, Duration::from_secs(5)).await);
    let (mut ours_evicting, mut ours_quiet) = (Side::default(), Side::default());
    for round in 0..MISS_ROUNDS / 2 {
        let first = round * BLOCK;
        for (cache, side) in [(&evicting, &mut ours_evicting), (&quiet, &mut ours_quiet)] {
            side.add(neo_misses(admin, cache, first).await);
        }
    }
    evicting.shutdown().await;
    let (cached_p50, mtc_p50) = (peer_cached.p(0.5), peer_mtc.p(0.5));
    let (fastest, fastest_name) = if cached_p50 <= mtc_p50 {
        (cached_p50, "cached")
    } else {
        (mtc_p50, "multi-tier-cache")
    };
    let rows = vec![
        ratio_row(
            "cache/miss_vs_peer",
            ours.p(0.5),
            fastest,
            fastest_name,
            1.0,
        ),
        reference(
            "cache/miss_p50_p99",
            format!(
                "neo {} / {}, cached {} / {}, multi-tier-cache {} / {}",
                human(ours.p(0.5)),
                human(ours.p(0.99)),
                human(cached_p50),
                human(peer_cached.p(0.99)),
                human(mtc_p50),
                human(peer_mtc.p(0.99))
            ),
        ),
        reference(
            "cache/miss_neo_variants_p50",
            format!(
                "message evicts (no MULTI) {} ({:.2} commands), no backplane {} ({:.2} commands)",
                human(ours_evicting.p(0.5)),
                ours_evicting.per_call(),
                human(ours_quiet.p(0.5)),
                ours_quiet.per_call()
            ),
        ),
        reference(
            "cache/miss_commands_per_call",
            format!(
                "neo {:.2}, cached {:.2}, multi-tier-cache {:.2}",
                ours.per_call(),
                peer_cached.per_call(),
                peer_mtc.per_call()
            ),
        ),
    ];
    neo.shutdown().await;
    rows
}

/// 1,000 concurrent callers of one missing key, the loader taking 5 ms: loader calls and Redis
/// commands, each library on its own fresh key.
async fn stampede_rows(url: &str, prefix: &str, admin: &mut MultiplexedConnection) -> Vec<Row> {
    let loads = Arc::new(AtomicUsize::new(0));
    let slow_org = |loads: Arc<AtomicUsize>| async move {
        loads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        org(1)
    };

    let neo = HybridCache::<Org>::tiered(neo_config(prefix, "stampede"), url).unwrap();
    assert!(neo.backplane_ready(1, Duration::from_secs(5)).await);
    let before = commands(admin).await;
    join_all((0..STAMPEDE).map(|_| {
        let loads = loads.clone();
        let neo = &neo;
        async move {
            let value = neo
                .get_or_load("org:1", move || async move {
                    Ok::<_, std::io::Error>(Some(slow_org(loads).await))
                })
                .await
                .unwrap();
            assert!(value.is_some());
        }
    }))
    .await;
    let neo_commands = commands(admin).await - before;
    let neo_loads = loads.swap(0, Ordering::SeqCst);
    neo.shutdown().await;

    let store = cached_store(url, &format!("{prefix}cachedstampede:")).await;
    let before = commands(admin).await;
    join_all((0..STAMPEDE).map(|_| {
        let loads = loads.clone();
        let store = &store;
        async move {
            let value = store
                .async_cache_get_or_set_with("org:1".to_owned(), move || slow_org(loads))
                .await
                .unwrap();
            std::hint::black_box(value);
        }
    }))
    .await;
    let cached_commands = commands(admin).await - before;
    let cached_loads = loads.swap(0, Ordering::SeqCst);

    let mtc = mtc_manager(url, &format!("{prefix}mtcstampede")).await;
    let before = commands(admin).await;
    join_all((0..STAMPEDE).map(|_| {
        let loads = loads.clone();
        let mtc = &mtc;
        async move {
            let value: Org = mtc
                .get_or_compute_typed(
                    &format!("{prefix}mtcstampede:org:1"),
                    CacheStrategy::MediumTerm,
                    move || async move { Ok(slow_org(loads).await) },
                )
                .await
                .unwrap();
            std::hint::black_box(value);
        }
    }))
    .await;
    let mtc_commands = commands(admin).await - before;
    let mtc_loads = loads.swap(0, Ordering::SeqCst);

    vec![
        Row::figure(
            "cache/stampede_1000_commands",
            format!("{neo_commands} commands, {neo_loads} loader call(s)"),
            "≤ 5",
            neo_commands <= 5 && neo_loads == 1,
        ),
        reference(
            "cache/stampede_1000_peers",
            format!(
                "multi-tier-cache {mtc_commands} commands, {mtc_loads} loader call(s); \
                 cached {cached_commands} commands, {cached_loads} loader call(s)"
            ),
        ),
    ]
}

/// Instance A writes a new value of a key instance B holds in L1; the time until B's reads
/// return it. neo: `set` (a small value rides in the backplane message); multi-tier-cache:
/// `update_cache` (its message carries the value). `cached` keeps nothing in process, so it
/// has no such delay to compare.
async fn update_rows(url: &str, prefix: &str, admin: &mut MultiplexedConnection) -> Vec<Row> {
    let a = HybridCache::<Org>::tiered(neo_config(prefix, "update"), url).unwrap();
    let b = HybridCache::<Org>::tiered(neo_config(prefix, "update"), url).unwrap();
    assert!(a.backplane_ready(1, Duration::from_secs(5)).await);
    assert!(b.backplane_ready(1, Duration::from_secs(5)).await);
    let channel = format!("{prefix}mtcupdate");
    let (ma, mb) = (
        mtc_manager(url, &channel).await,
        mtc_manager(url, &channel).await,
    );
    let key = format!("{prefix}mtcupdate:org:1");
    // Both B's hold the key in L1 before the first sample.
    a.set("org:1", org(0), &EntryOptions::default())
        .await
        .unwrap();
    assert!(b.get("org:1").await.unwrap().is_some());
    let bytes = serde_json::to_vec(&org(0)).unwrap();
    ma.update_cache(&key, bytes.into(), Some(Duration::from_secs(600)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (mut ours, mut peer) = (Side::default(), Side::default());
    let deadline = Duration::from_secs(1);
    for sample in 1..=UPDATES {
        let expected = org(sample as u64);
        let (a, b, expected_ref) = (&a, &b, &expected);
        let seen = block(admin, 0, 1, |_| async move {
            let started = Instant::now();
            a.set("org:1", expected_ref.clone(), &EntryOptions::default())
                .await
                .unwrap();
            while b.get("org:1").await.unwrap().as_ref() != Some(expected_ref) {
                assert!(started.elapsed() < deadline, "neo: update never seen");
                tokio::task::yield_now().await;
            }
        })
        .await;
        ours.add(seen);
        let (ma, mb, key) = (&ma, &mb, &key);
        let seen = block(admin, 0, 1, |_| async move {
            let started = Instant::now();
            let bytes = serde_json::to_vec(expected_ref).unwrap();
            ma.update_cache(key, bytes.into(), Some(Duration::from_secs(600)))
                .await
                .unwrap();
            while mb.get_typed::<Org>(key).await.unwrap().as_ref() != Some(expected_ref) {
                assert!(
                    started.elapsed() < deadline,
                    "multi-tier-cache: update never seen"
                );
                tokio::task::yield_now().await;
            }
        })
        .await;
        peer.add(seen);
    }
    let rows = vec![
        ratio_row(
            "cache/update_seen_vs_peer",
            ours.p(0.5),
            peer.p(0.5),
            "multi-tier-cache",
            1.0,
        ),
        reference(
            "cache/update_seen_p99",
            format!(
                "neo {}, multi-tier-cache {}; commands per update: neo {:.2}, multi-tier-cache {:.2}",
                human(ours.p(0.99)),
                human(peer.p(0.99)),
                ours.per_call(),
                peer.per_call()
            ),
        ),
    ];
    a.shutdown().await;
    b.shutdown().await;
    rows
}

fn main() {
    // `cargo bench` passes `--bench`; a filter (e.g. `miss`) picks workloads.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    let url = bench_redis_url();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let prefix = format!("peers{}:", std::process::id());
    runtime.block_on(async {
        let mut admin = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        println!("{}", report::text_header());
        let print = |rows: Vec<Row>| {
            rows.iter()
                .for_each(|row| println!("{}", report::text_line(row)));
        };
        if filter == "probe" {
            print(l2_probe_rows(&url, &prefix, &mut admin).await);
        }
        if "l2_hit".contains(&filter) || filter.is_empty() {
            print(l2_hit_rows(&url, &prefix, &mut admin).await);
        }
        if "miss".contains(&filter) || filter.is_empty() {
            print(miss_rows(&url, &prefix, &mut admin).await);
        }
        if "stampede".contains(&filter) || filter.is_empty() {
            print(stampede_rows(&url, &prefix, &mut admin).await);
        }
        if "update".contains(&filter) || filter.is_empty() {
            print(update_rows(&url, &prefix, &mut admin).await);
        }
    });
}
