//! Redis stopped and restarted under a tiered cache.

use crate::{Org, org};
use neo_cache::{Cache, CacheConfig, EntryOptions, HybridCache, L2Config};
use neo_testkit::RedisServer;
use std::time::{Duration, Instant};

fn config() -> CacheConfig {
    CacheConfig {
        ttl_jitter: 0.0,
        l2: L2Config {
            timeout: Duration::from_millis(200),
            retry_after: Duration::from_millis(200),
            ..L2Config::default()
        },
        ..CacheConfig::named("orgs")
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test]
async fn callers_keep_getting_values_while_redis_is_down_and_it_resumes_when_back() {
    let mut server = blocking(RedisServer::start).await.unwrap();
    let url = server.url();
    let a = HybridCache::<Org>::tiered(config(), &url).unwrap();
    let b = HybridCache::<Org>::tiered(config(), &url).unwrap();
    assert!(a.backplane_ready(1, Duration::from_secs(5)).await);
    assert!(b.backplane_ready(1, Duration::from_secs(5)).await);
    a.set("org:1", org(1), &EntryOptions::default())
        .await
        .unwrap();
    a.set(
        "org:2",
        org(2),
        &EntryOptions::default().ttl(Duration::from_millis(300)),
    )
    .await
    .unwrap();

    server = blocking(move || {
        server.stop().unwrap();
        server
    })
    .await;

    // L1 (stale after the disconnect, but the last known value beats nothing).
    assert_eq!(a.get("org:1").await.unwrap(), Some(org(1)));
    // A miss goes to the loader, and the error from Redis never surfaces.
    let loaded = a
        .get_or_load("org:3", || async { Ok::<_, std::io::Error>(Some(org(3))) })
        .await
        .unwrap();
    assert_eq!(loaded, Some(org(3)));
    // An expired entry with a failing loader: fail-safe.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stale = a
        .get_or_load("org:2", || async {
            Err::<Option<Org>, _>(std::io::Error::other("db down too"))
        })
        .await
        .unwrap();
    assert_eq!(stale, Some(org(2)));
    assert!(a.stats().l2_errors >= 1, "{:?}", a.stats());

    let restarted = Instant::now();
    let _server = blocking(move || {
        server.restart().unwrap();
        server
    })
    .await;
    // The backplane resubscribes by itself...
    assert!(
        a.backplane_ready(2, Duration::from_secs(5)).await,
        "a's backplane did not come back"
    );
    assert!(
        b.backplane_ready(2, Duration::from_secs(5)).await,
        "b's backplane did not come back"
    );
    // ...and L2 works again once retry_after has passed.
    let resumed = loop {
        a.set("org:9", org(9), &EntryOptions::default())
            .await
            .unwrap();
        let fresh = HybridCache::<Org>::redis(config(), &url).unwrap();
        if fresh.get("org:9").await.unwrap() == Some(org(9)) {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "L2 did not resume"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(resumed < Duration::from_secs(5));
    // Invalidations flow again: b drops its copy when a writes.
    assert_eq!(b.get("org:9").await.unwrap(), Some(org(9)));
    let mut renamed = org(9);
    renamed.name = "renamed".into();
    a.set("org:9", renamed.clone(), &EntryOptions::default())
        .await
        .unwrap();
    let started = Instant::now();
    while b.get("org:9").await.unwrap() != Some(renamed.clone()) {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "b kept the old value"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn with_fail_on_error_redis_errors_reach_the_caller() {
    let mut server = blocking(RedisServer::start).await.unwrap();
    let url = server.url();
    let cache = HybridCache::<Org>::redis(
        CacheConfig {
            l2: L2Config {
                fail_on_error: true,
                ..config().l2
            },
            ..config()
        },
        &url,
    )
    .unwrap();
    cache
        .set("org:1", org(1), &EntryOptions::default())
        .await
        .unwrap();
    let _server = blocking(move || {
        server.stop().unwrap();
        server
    })
    .await;
    let err = cache.get("org:1").await.unwrap_err();
    assert_eq!(
        neo_core::HasErrorKind::kind(&err),
        neo_core::ErrorKind::Unavailable,
        "{err}"
    );
}
