//! What only the Redis-backed configurations do, and time-dependent behaviour.

use crate::{DEPLOYMENTS, Deployment, Harness, Kind, Org, org};
use neo_cache::{
    BackplaneConfig, Cache, CacheConfig, Compression, DistributedLockConfig, EntryOptions, Error,
    HybridCache, L1Config,
};
use neo_core::{Clock, ErrorKind, HasErrorKind, ManualClock};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[tokio::test]
async fn an_l1_miss_is_one_l2_hit_then_l1_hits() {
    let h = Harness::new(Kind::Tiered(Deployment::Standalone), |c| c).await;
    h.cache
        .set("org:1", org(1), &EntryOptions::default())
        .await
        .unwrap();
    // Made after the write, so the write's backplane eviction (harmless, but it arrives when
    // it arrives) cannot empty this instance's L1 between the reads below.
    let other = h.sibling().await;
    assert_eq!(other.get("org:1").await.unwrap(), Some(org(1)));
    assert_eq!(other.get("org:1").await.unwrap(), Some(org(1)));
    let stats = other.stats();
    assert_eq!(
        (stats.l2_hits, stats.l1_hits, stats.l1_misses),
        (1, 1, 1),
        "{stats:?}"
    );
}

/// A full L1 takes a key read from Redis on its second read, not its first: moka's own
/// admission refuses most keys seen once, and recording each of them made most of an L2
/// hit's tail. While L1 has room, the first read fills it.
#[tokio::test]
async fn a_full_l1_takes_a_key_read_from_redis_on_its_second_read() {
    let h = Harness::new(Kind::Tiered(Deployment::Standalone), |c| CacheConfig {
        l1: L1Config {
            capacity: 4,
            ..L1Config::default()
        },
        ..c
    })
    .await;
    for i in 0..6 {
        h.cache
            .set(&format!("org:{i}"), org(i), &EntryOptions::default())
            .await
            .unwrap();
    }
    // After the writes, so that their backplane evictions cannot reach this L1.
    let other = h.sibling().await;
    let read = async |key: &str| assert!(other.get(key).await.unwrap().is_some(), "{key}");
    for i in 0..4 {
        read(&format!("org:{i}")).await;
    }
    assert_eq!(
        other.l1_entries(),
        4,
        "with room, each first read filled L1"
    );
    for i in 0..4 {
        read(&format!("org:{i}")).await;
    }
    assert_eq!((other.stats().l1_hits, other.stats().l2_hits), (4, 4));

    // Full: the first read of a new key leaves L1 alone, so the next read goes to Redis
    // again; that second read offers it to L1 (a write of a new key at capacity, counted as
    // an eviction).
    read("org:4").await;
    assert_eq!(other.stats().evictions, 0, "not offered on its first read");
    read("org:4").await;
    let stats = other.stats();
    assert_eq!((stats.l1_hits, stats.l2_hits), (4, 6), "{stats:?}");
    assert_eq!(stats.evictions, 1, "offered on its second read: {stats:?}");
}

#[tokio::test]
async fn a_batch_read_counts_each_l2_hit_and_miss_and_fills_l1() {
    let h = Harness::new(Kind::Tiered(Deployment::Standalone), |c| c).await;
    for i in 1..=2 {
        h.cache
            .set(&format!("org:{i}"), org(i), &EntryOptions::default())
            .await
            .unwrap();
    }
    // After the writes, as above: their evictions must not reach this instance's L1.
    let other = h.sibling().await;
    let keys: Vec<String> = (1..=3).map(|i| format!("org:{i}")).collect();
    let found = other
        .get_or_load_many(&keys, |missing: Vec<String>| async move {
            assert_eq!(missing, ["org:3"]);
            Ok::<_, std::io::Error>([("org:3".to_owned(), org(3))].into())
        })
        .await;
    let found: Vec<Option<Org>> = found.into_iter().map(Result::unwrap).collect();
    assert_eq!(found, [Some(org(1)), Some(org(2)), Some(org(3))]);
    let stats = other.stats();
    assert_eq!((stats.l2_hits, stats.l2_misses), (2, 1), "{stats:?}");
    assert_eq!(other.get("org:1").await.unwrap(), Some(org(1)));
    assert_eq!(other.stats().l1_hits, 1, "the L2 hit was kept in L1");
}

#[tokio::test]
async fn an_invalidation_in_one_instance_reaches_the_others_l1() {
    // A bound for correctness on a loaded CI machine; how fast it is (p50/p99 in
    // microseconds) is the `cache/update_seen_*` rows of the compare report.
    const SEEN_WITHIN: Duration = Duration::from_secs(2);
    for deployment in DEPLOYMENTS {
        let h = Harness::new(Kind::Tiered(deployment), |c| c).await;
        let b = h.sibling().await;
        h.cache
            .set("org:1", org(1), &EntryOptions::default())
            .await
            .unwrap();
        h.cache
            .set("org:2", org(2), &EntryOptions::default().tag("t"))
            .await
            .unwrap();
        assert_eq!(b.get("org:1").await.unwrap(), Some(org(1))); // now in b's L1
        assert_eq!(b.get("org:2").await.unwrap(), Some(org(2)));

        let mut renamed = org(1);
        renamed.name = "renamed".into();
        let started = Instant::now();
        h.cache
            .set("org:1", renamed.clone(), &EntryOptions::default())
            .await
            .unwrap();
        loop {
            if b.get("org:1").await.unwrap() == Some(renamed.clone()) {
                break;
            }
            assert!(
                started.elapsed() < SEEN_WITHIN,
                "{deployment:?}: b still serves the old value"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let seen_after = started.elapsed();

        let started = Instant::now();
        h.cache.invalidate_tag("t").await.unwrap();
        while b.get("org:2").await.unwrap().is_some() {
            assert!(
                started.elapsed() < SEEN_WITHIN,
                "{deployment:?}: tag invalidation not applied in b"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(seen_after < SEEN_WITHIN);
        assert!(b.stats().remote_invalidations >= 2, "{:?}", b.stats());
        // An instance ignores its own messages.
        assert_eq!(h.cache.stats().remote_invalidations, 0);
        b.shutdown().await;
    }
}

/// Waits until `b` serves `expected` for `key` (from L1 or Redis), at most a second.
async fn until_seen(b: &HybridCache<Org>, key: &str, expected: &Org, what: &str) {
    let started = Instant::now();
    while b.get(key).await.unwrap().as_ref() != Some(expected) {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{what}: not seen"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn a_small_update_reaches_the_others_l1_with_its_value_and_a_large_one_evicts() {
    for deployment in [
        Deployment::Standalone,
        Deployment::Sentinel,
        Deployment::Cluster,
    ] {
        let h = Harness::new(Kind::Tiered(deployment), |c| CacheConfig {
            backplane: BackplaneConfig {
                max_value_bytes: 64,
                ..c.backplane.clone()
            },
            ..c
        })
        .await;
        let b = h.sibling().await;
        h.cache
            .set("org:1", org(1), &EntryOptions::default())
            .await
            .unwrap();
        assert_eq!(b.get("org:1").await.unwrap(), Some(org(1))); // now in b's L1
        // The first write's own message may still be on its way to b: let it land before
        // counting, so the counts below see only the second write's.
        let settle = std::time::Instant::now();
        while b.stats().remote_invalidations == 0 && settle.elapsed().as_secs() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }

        // A small value rides in the message: b serves it without reading Redis (except on
        // a cluster, where writes only evict).
        let (l2_hits, remote) = (b.stats().l2_hits, b.stats().remote_invalidations);
        let mut renamed = org(1);
        renamed.name = "renamed".into();
        h.cache
            .set("org:1", renamed.clone(), &EntryOptions::default())
            .await
            .unwrap();
        until_seen(&b, "org:1", &renamed, "small value").await;
        let reread = u64::from(deployment == Deployment::Cluster);
        assert_eq!(b.stats().l2_hits, l2_hits + reread, "{deployment:?}");
        assert_eq!(b.stats().remote_invalidations, remote + 1, "{deployment:?}");

        // A value larger than `max_value_bytes` only evicts: b reads Redis once.
        let l2_hits = b.stats().l2_hits;
        let mut large = org(1);
        large.name = "x".repeat(200);
        h.cache
            .set("org:1", large.clone(), &EntryOptions::default())
            .await
            .unwrap();
        until_seen(&b, "org:1", &large, "large value").await;
        assert_eq!(b.stats().l2_hits, l2_hits + 1, "{deployment:?}");
        assert_eq!(b.get("org:1").await.unwrap(), Some(large));
        assert_eq!(b.stats().l2_hits, l2_hits + 1, "{deployment:?}: kept in L1");
        b.shutdown().await;
    }
}

#[tokio::test]
async fn large_values_are_compressed_and_oversized_ones_refused() {
    #[derive(Clone, serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Blob(String);
    let redis = neo_testkit::redis().await;
    let mut algorithms = vec![Compression::Lz4];
    if cfg!(feature = "zstd") {
        algorithms.push(Compression::Zstd);
    }
    for compression in algorithms {
        let config = CacheConfig {
            key_prefix: redis.key_prefix().to_owned(),
            compression,
            compression_threshold: 512,
            max_payload_bytes: 64 * 1024,
            ..CacheConfig::named(format!("blobs_{compression:?}").to_lowercase())
        };
        let cache = HybridCache::<Blob>::redis(config, redis.url()).unwrap();
        let big = Blob("neo-commons ".repeat(2000));
        cache
            .set("big", big.clone(), &EntryOptions::default())
            .await
            .unwrap();
        assert_eq!(cache.get("big").await.unwrap(), Some(big));
        assert!(
            cache.stats().compression_ratio() < 0.2,
            "{compression:?}: {:?}",
            cache.stats()
        );

        // xorshift: text lz4 cannot shrink below the limit.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let random: String = (0..200_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'a' + (state % 26) as u8)
            })
            .collect();
        let err = cache
            .set("huge", Blob(random), &EntryOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::PayloadTooLarge { max: 65536, .. }),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::Validation);
        assert_eq!(cache.get("huge").await.unwrap(), None);
    }
}

#[tokio::test]
async fn a_slow_load_returns_the_stale_value_after_the_soft_timeout_and_finishes_later() {
    let h = Harness::new(Kind::Tiered(Deployment::Standalone), |c| CacheConfig {
        soft_timeout: Some(Duration::from_millis(50)),
        ..c
    })
    .await;
    h.cache
        .set(
            "org:1",
            org(1),
            &EntryOptions::default().ttl(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    let started = Instant::now();
    let v = h
        .cache
        .get_or_load("org:1", || async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, std::io::Error>(Some(Org {
                id: 1,
                name: "fresh".into(),
            }))
        })
        .await
        .unwrap();
    assert_eq!(v, Some(org(1)));
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(h.cache.get("org:1").await.unwrap().unwrap().name, "fresh");
}

#[tokio::test]
async fn the_distributed_lock_makes_one_instance_load_for_all() {
    let h = Harness::new(Kind::Tiered(Deployment::Standalone), |c| CacheConfig {
        distributed_lock: DistributedLockConfig {
            enabled: true,
            ..DistributedLockConfig::default()
        },
        ..c
    })
    .await;
    let others = [h.sibling().await, h.sibling().await];
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for cache in [h.cache.clone(), others[0].clone(), others[1].clone()] {
        let calls = Arc::clone(&calls);
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load("org:1", move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<_, std::io::Error>(Some(org(1)))
                })
                .await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), Some(org(1)));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn hot_keys_are_refreshed_before_they_expire() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let dyn_clock: Arc<dyn Clock> = clock.clone();
    let cache = HybridCache::<Org>::in_memory(
        CacheConfig {
            ttl: Duration::from_secs(100),
            ttl_jitter: 0.0,
            eager_refresh: 0.2,
            ..CacheConfig::named("orgs")
        },
        dyn_clock,
    )
    .unwrap();
    let load = |name: &'static str| {
        move || async move {
            Ok::<_, std::io::Error>(Some(Org {
                id: 1,
                name: name.into(),
            }))
        }
    };
    cache.get_or_load("org:1", load("first")).await.unwrap();
    clock.advance(Duration::from_secs(50));
    assert_eq!(
        cache
            .get_or_load("org:1", load("second"))
            .await
            .unwrap()
            .unwrap()
            .name,
        "first"
    );
    clock.advance(Duration::from_secs(35)); // 15 s left of 100: inside the last 20 %
    assert_eq!(
        cache
            .get_or_load("org:1", load("third"))
            .await
            .unwrap()
            .unwrap()
            .name,
        "first"
    );
    for _ in 0..100 {
        if cache.get("org:1").await.unwrap().unwrap().name == "third" {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(cache.get("org:1").await.unwrap().unwrap().name, "third");
    assert_eq!(cache.stats().loads, 2);
}
