//! How neo-cache talks to Redis, counted by a private server: one command per call, no
//! health check in front of it.

use crate::{Org, org};
use neo_cache::{Cache, CacheConfig, EntryOptions, HybridCache};
use neo_testkit::RedisServer;
use redis::aio::MultiplexedConnection;
use std::collections::HashMap;

/// `calls` of each command in the server's `INFO commandstats`.
async fn command_calls(admin: &mut MultiplexedConnection) -> HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(admin)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

#[tokio::test]
async fn each_l2_read_is_one_command_without_a_health_check() {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap()
        .unwrap();
    let url = server.url();
    let cache = HybridCache::<Org>::redis(CacheConfig::named("orgs"), &url).unwrap();
    for id in 0..10 {
        cache
            .set(&format!("org:{id}"), org(id), &EntryOptions::default())
            .await
            .unwrap();
    }
    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut admin)
        .await
        .unwrap();
    for id in 0..20 {
        assert_eq!(
            cache.get(&format!("org:{}", id % 10)).await.unwrap(),
            Some(org(id % 10))
        );
    }
    let keys: Vec<String> = (0..10).map(|id| format!("org:{id}")).collect();
    let many = cache
        .get_or_load_many(&keys, |_| async {
            Err::<HashMap<String, Org>, _>(std::io::Error::other("everything is in Redis"))
        })
        .await;
    assert!(many.iter().all(|r| matches!(r, Ok(Some(_)))));
    let calls = command_calls(&mut admin).await;
    assert_eq!(calls.get("get"), Some(&20), "{calls:?}");
    assert_eq!(calls.get("mget"), Some(&1), "{calls:?}");
    assert_eq!(
        calls.get("ping"),
        None,
        "no health check per call: {calls:?}"
    );
    assert_eq!(calls.get("unwatch"), None, "{calls:?}");
    drop(cache);
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
}

/// 1,000 callers of one missing key in one tiered instance (backplane on): they coalesce
/// before Redis, so the stampede costs one GET, the write and its message, not a GET each.
#[tokio::test]
async fn a_stampede_on_a_missing_key_costs_at_most_five_redis_commands() {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap()
        .unwrap();
    let url = server.url();
    let cache = HybridCache::<Org>::tiered(CacheConfig::named("stampede"), &url).unwrap();
    assert!(
        cache
            .backplane_ready(1, std::time::Duration::from_secs(5))
            .await
    );
    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut admin)
        .await
        .unwrap();
    let loads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let callers: Vec<_> = (0..1_000)
        .map(|_| {
            let (cache, loads) = (cache.clone(), loads.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load("org:7", move || async move {
                        loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        Ok::<_, std::io::Error>(Some(org(7)))
                    })
                    .await
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), Some(org(7)));
    }
    assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 1);
    let calls = command_calls(&mut admin).await;
    let spent: u64 = calls
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "config|resetstat" | "info" | "ping"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(calls.get("get"), Some(&1), "one GET for all: {calls:?}");
    // A load after a miss in both tiers tells no one: no instance holds a fresh copy.
    assert_eq!(calls.get("publish"), None, "{calls:?}");
    assert!(spent <= 5, "{spent} commands: {calls:?}");
    assert!(cache.stats().coalesced >= 999, "{:?}", cache.stats());
    cache.shutdown().await;
    drop(cache);
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
}
