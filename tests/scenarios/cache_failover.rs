//! A Redis master killed under cache load, on a Redis Cluster (one of three masters) and
//! under Redis Sentinel (the only master): its replica is promoted, callers keep getting
//! values (L1, fail-safe, the loader) and writes resume. One scenario, run per deployment.

use neo_commons::cache::{Cache, CacheConfig, EntryOptions, HybridCache, L2Config, RedisConfig};
use neo_testkit::{RedisCluster, RedisSentinelGroup};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Org {
    id: u64,
    name: String,
}

fn org(id: u64, version: u64) -> Org {
    Org {
        id,
        name: format!("org {id} v{version}"),
    }
}

const KEYS: u64 = 300;

fn config(fail_on_error: bool) -> CacheConfig {
    CacheConfig {
        key_prefix: "failover:".into(),
        ttl: Duration::from_secs(60),
        l2: L2Config {
            timeout: Duration::from_millis(250),
            retry_after: Duration::from_millis(250),
            fail_on_error,
            ..L2Config::default()
        },
        ..CacheConfig::named("orgs")
    }
}

fn blocking<T>(operation: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(operation)
}

/// `INFO replication`'s `role` of the node at `url` (`None`: it does not answer).
async fn role(url: &str) -> Option<String> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = tokio::time::timeout(
        Duration::from_millis(500),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()?;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("role:"))
        .map(|r| r.trim().to_owned())
}

/// A key of the cache whose slot the node at `url` serves.
async fn key_served_by(url: &str) -> String {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ranges: Vec<(u16, u16)> = {
        let shards: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await
            .unwrap();
        let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
        let mut mine = Vec::new();
        if let redis::Value::Array(ranges) = shards {
            for range in ranges {
                if let redis::Value::Array(f) = range
                    && let (
                        Some(redis::Value::Int(start)),
                        Some(redis::Value::Int(end)),
                        Some(redis::Value::Array(node)),
                    ) = (f.first(), f.get(1), f.get(2))
                    && node.get(1) == Some(&redis::Value::Int(i64::from(port)))
                {
                    mine.push((*start as u16, *end as u16));
                }
            }
        }
        mine
    };
    for i in 0.. {
        let key = format!("probe:{i}");
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!("failover:orgs:{key}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if ranges.iter().any(|&(a, b)| (a..=b).contains(&slot)) {
            return key;
        }
    }
    unreachable!()
}

/// Where the killed master runs.
enum Deployment {
    /// A six-node cluster and the index of the master to kill.
    Cluster(RedisCluster, usize),
    /// A master, its replica and three sentinels.
    Sentinel(RedisSentinelGroup),
}

impl Deployment {
    fn name(&self) -> &'static str {
        match self {
            Deployment::Cluster(..) => "a Redis Cluster",
            Deployment::Sentinel(_) => "Redis Sentinel",
        }
    }

    fn redis(&self) -> RedisConfig {
        match self {
            Deployment::Cluster(cluster, _) => RedisConfig::cluster(cluster.nodes()),
            Deployment::Sentinel(group) => {
                RedisConfig::sentinel(group.sentinels(), group.master_name())
            }
        }
    }

    /// The URL of the master to kill.
    fn victim(&self) -> String {
        match self {
            Deployment::Cluster(cluster, victim) => cluster.nodes()[*victim].clone(),
            Deployment::Sentinel(group) => {
                format!("redis://127.0.0.1:{}", group.master_port().unwrap())
            }
        }
    }

    /// The nodes left after the kill, and how many masters they count once it is promoted.
    fn survivors(&self) -> (Vec<String>, usize) {
        let victim = self.victim();
        let nodes = match self {
            Deployment::Cluster(cluster, _) => cluster.nodes(),
            Deployment::Sentinel(group) => group
                .server_ports()
                .into_iter()
                .map(|port| format!("redis://127.0.0.1:{port}"))
                .collect(),
        };
        let masters = match self {
            Deployment::Cluster(..) => 3,
            Deployment::Sentinel(_) => 1,
        };
        (
            nodes.into_iter().filter(|n| *n != victim).collect(),
            masters,
        )
    }

    /// A key whose writes go to the victim.
    async fn probe_key(&self) -> String {
        match self {
            Deployment::Cluster(..) => key_served_by(&self.victim()).await,
            Deployment::Sentinel(_) => "probe:0".to_owned(),
        }
    }

    /// How long after the promotion writes may take to resume: on a cluster the cache
    /// notices the new master by itself; under Sentinel the sentinels first have to agree on
    /// and announce it (their own configuration epoch), which the cache then asks for.
    fn follow_limit(&self) -> Duration {
        match self {
            Deployment::Cluster(..) => Duration::from_secs(1),
            Deployment::Sentinel(_) => Duration::from_secs(2),
        }
    }

    fn kill(&mut self) {
        match self {
            Deployment::Cluster(cluster, victim) => cluster.servers_mut()[*victim].kill().unwrap(),
            Deployment::Sentinel(group) => {
                group.kill_master().unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_killed_under_cache_load_costs_callers_nothing() {
    // A master silent for 1 s is failed over (production clusters often use 5-15 s; the
    // goal below measures the library's part, which starts at the promotion).
    let cluster = blocking(|| RedisCluster::start_with(Duration::from_secs(1))).unwrap();
    let mut victim = None;
    for (i, node) in cluster.nodes().iter().enumerate() {
        if role(node).await.as_deref() == Some("master") {
            victim = Some(i);
            break;
        }
    }
    master_killed_under_cache_load(Deployment::Cluster(cluster, victim.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sentinel_master_killed_under_cache_load_costs_callers_nothing() {
    // The group's sentinels fail a master over after it is silent for 1 s.
    let group = blocking(RedisSentinelGroup::start).unwrap();
    master_killed_under_cache_load(Deployment::Sentinel(group)).await;
}

async fn master_killed_under_cache_load(mut deployment: Deployment) {
    let redis = deployment.redis();
    let a = HybridCache::<Org>::tiered_on(config(false), &redis).unwrap();
    let b = HybridCache::<Org>::tiered_on(config(false), &redis).unwrap();
    assert!(a.backplane_ready(1, Duration::from_secs(5)).await);
    assert!(b.backplane_ready(1, Duration::from_secs(5)).await);
    // Writes are probed on a Redis-only cache that reports Redis errors.
    let probe = HybridCache::<Org>::redis_on(
        CacheConfig {
            l2: L2Config {
                retry_after: Duration::ZERO,
                ..config(true).l2
            },
            ..config(true)
        },
        &redis,
    )
    .unwrap();
    for id in 0..KEYS {
        a.set(&format!("org:{id}"), org(id, 0), &EntryOptions::default())
            .await
            .unwrap();
    }

    let probe_key = deployment.probe_key().await;
    probe
        .set(&probe_key, org(0, 0), &EntryOptions::default())
        .await
        .unwrap();

    // The load: readers on both instances, writers on one, until stopped.
    let stop = Arc::new(AtomicBool::new(false));
    let (ops, errors, missing) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut workers = Vec::new();
    for (w, cache) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        let (stop, ops, errors, missing) = (
            Arc::clone(&stop),
            Arc::clone(&ops),
            Arc::clone(&errors),
            Arc::clone(&missing),
        );
        workers.push(tokio::spawn(async move {
            let mut n: u64 = w as u64;
            while !stop.load(Ordering::Relaxed) {
                let id = (n * 7) % KEYS;
                let key = format!("org:{id}");
                let outcome = if w == 0 && n.is_multiple_of(4) {
                    cache
                        .set(&key, org(id, n), &EntryOptions::default())
                        .await
                        .map(|()| true)
                } else {
                    cache
                        .get_or_load(&key, move || async move {
                            Ok::<_, std::io::Error>(Some(org(id, 0)))
                        })
                        .await
                        .map(|v| v.is_some())
                };
                match outcome {
                    Ok(true) => {}
                    Ok(false) => {
                        missing.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                ops.fetch_add(1, Ordering::Relaxed);
                n += 4;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_kill = ops.load(Ordering::Relaxed);

    let (survivors, masters_after) = deployment.survivors();
    blocking(|| deployment.kill());
    let killed = Instant::now();
    // When the replica has been promoted (the survivors count their masters again).
    let promotion = tokio::spawn(async move {
        loop {
            let mut masters = 0;
            for node in &survivors {
                if role(node).await.as_deref() == Some("master") {
                    masters += 1;
                }
            }
            if masters == masters_after || killed.elapsed() > Duration::from_secs(30) {
                return killed.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut failed_writes = 0;
    let resumed = loop {
        match probe
            .set(&probe_key, org(0, 1), &EntryOptions::default())
            .await
        {
            Ok(()) => break killed.elapsed(),
            Err(_) => failed_writes += 1,
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "writes to the killed master's slots did not resume"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The write landed on the promoted replica and is read back through the cluster.
    assert_eq!(probe.get(&probe_key).await.unwrap(), Some(org(0, 1)));
    let promoted = promotion.await.unwrap();
    assert!(
        promoted < Duration::from_secs(30),
        "the replica was not promoted"
    );
    let during = ops.load(Ordering::Relaxed) - before_kill;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let (ops, errors, missing) = (
        ops.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        missing.load(Ordering::Relaxed),
    );
    // The tiered caches write to the promoted master again too.
    a.set("org:1", org(1, 99), &EntryOptions::default())
        .await
        .unwrap();
    let started = Instant::now();
    while probe.get("org:1").await.ok().flatten() != Some(org(1, 99)) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a's writes did not resume"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "cache on {}, a master killed under load: {ops} calls ({during} while the master was \
         failing over), {errors} errors seen by callers, {missing} calls without a value; the \
         replica was promoted after {promoted:?}, writes to the killed master's keys resumed \
         after {resumed:?} ({failed_writes} probe writes refused meanwhile); stats a: {:?}",
        deployment.name(),
        a.stats()
    );
    assert_eq!(errors, 0, "callers saw errors");
    assert_eq!(missing, 0, "callers went without a value");
    assert!(
        resumed < Duration::from_secs(5),
        "writes resumed after {resumed:?}, goal < 5 s (the cluster promoted after {promoted:?})"
    );
    // What is the cache's own: noticing the new master once the cluster has promoted it.
    assert!(
        resumed.saturating_sub(promoted) < deployment.follow_limit(),
        "writes resumed {:?} after the promotion",
        resumed.saturating_sub(promoted)
    );
    a.shutdown().await;
    b.shutdown().await;
    drop((a, b, probe));
    blocking(move || drop(deployment));
}
