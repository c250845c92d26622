//! The contract every configuration passes.

use crate::{Harness, KINDS, Kind, Org, org};
use neo_cache::{Cache, CacheConfig, EntryOptions, Error, FailSafeConfig};
use neo_core::{ErrorKind, HasErrorKind};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn counting_loader(
    calls: &Arc<AtomicUsize>,
    value: Option<Org>,
) -> impl FnOnce() -> std::future::Ready<Result<Option<Org>, std::io::Error>> + Send + 'static {
    let calls = Arc::clone(calls);
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(value))
    }
}

#[tokio::test]
async fn set_get_remove_round_trip() {
    for kind in KINDS {
        let h = Harness::new(kind, |c| c).await;
        assert_eq!(h.cache.get("org:1").await.unwrap(), None, "{kind:?}");
        h.cache
            .set("org:1", org(1), &EntryOptions::default())
            .await
            .unwrap();
        assert_eq!(
            h.cache.get("org:1").await.unwrap(),
            Some(org(1)),
            "{kind:?}"
        );
        h.cache
            .set("org:1", org(2), &EntryOptions::default())
            .await
            .unwrap();
        assert_eq!(
            h.cache.get("org:1").await.unwrap(),
            Some(org(2)),
            "{kind:?}"
        );
        h.cache.remove("org:1").await.unwrap();
        assert_eq!(h.cache.get("org:1").await.unwrap(), None, "{kind:?}");
    }
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    for kind in KINDS {
        let h = Harness::new(kind, |c| CacheConfig {
            fail_safe: FailSafeConfig {
                enabled: false,
                ..FailSafeConfig::default()
            },
            ..c
        })
        .await;
        let short = EntryOptions::default().ttl(Duration::from_millis(150));
        h.cache.set("org:1", org(1), &short).await.unwrap();
        h.cache
            .set("org:2", org(2), &EntryOptions::default())
            .await
            .unwrap();
        h.advance(Duration::from_millis(300)).await;
        assert_eq!(h.cache.get("org:1").await.unwrap(), None, "{kind:?}");
        assert_eq!(
            h.cache.get("org:2").await.unwrap(),
            Some(org(2)),
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn get_or_load_caches_values_and_not_found() {
    for kind in KINDS {
        let h = Harness::new(kind, |c| c).await;
        let calls = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let v = h
                .cache
                .get_or_load("org:1", counting_loader(&calls, Some(org(1))))
                .await
                .unwrap();
            assert_eq!(v, Some(org(1)));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{kind:?}");

        let misses = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let v = h
                .cache
                .get_or_load("org:404", counting_loader(&misses, None))
                .await
                .unwrap();
            assert_eq!(v, None);
        }
        assert_eq!(
            misses.load(Ordering::SeqCst),
            1,
            "not found is remembered ({kind:?})"
        );
        assert!(h.cache.stats().loads >= 2);
    }
}

#[tokio::test]
async fn a_thousand_concurrent_misses_run_the_loader_once() {
    for kind in KINDS {
        let h = Harness::new(kind, |c| c).await;
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..1000 {
            let cache = h.cache.clone();
            let calls = Arc::clone(&calls);
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_load("org:hot", move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, std::io::Error>(Some(org(7)))
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), Some(org(7)));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{kind:?}");
        assert!(
            h.cache.stats().coalesced >= 900,
            "{kind:?}: {:?}",
            h.cache.stats()
        );
    }
}

#[tokio::test]
async fn get_or_load_many_loads_only_what_is_missing_in_one_call() {
    for kind in KINDS {
        let h = Harness::new(kind, |c| c).await;
        h.cache
            .set("org:1", org(1), &EntryOptions::default())
            .await
            .unwrap();
        let keys: Vec<String> = ["org:1", "org:2", "org:3", "org:2", "org:404"]
            .iter()
            .map(|k| (*k).to_owned())
            .collect();
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&asked);
        let results = h
            .cache
            .get_or_load_many(&keys, move |missing: Vec<String>| async move {
                seen.lock().unwrap().push(missing.clone());
                let found: HashMap<String, Org> = missing
                    .into_iter()
                    .filter(|k| k != "org:404")
                    .map(|k| {
                        let id = k[4..].parse().unwrap();
                        (k, org(id))
                    })
                    .collect();
                Ok::<_, std::io::Error>(found)
            })
            .await;
        let values: Vec<Option<Org>> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            values,
            vec![Some(org(1)), Some(org(2)), Some(org(3)), Some(org(2)), None],
            "{kind:?}"
        );
        assert_eq!(
            *asked.lock().unwrap(),
            vec![vec!["org:2".to_owned(), "org:3".into(), "org:404".into()]]
        );
        // Now everything, the "not found" included, comes from the cache.
        let again = h
            .cache
            .get_or_load_many(&keys, |_| async {
                Err::<HashMap<String, Org>, _>(std::io::Error::other("must not be called"))
            })
            .await;
        assert!(again.iter().all(Result::is_ok), "{kind:?}: {again:?}");

        // A failing batch loader fails only the keys it had to load.
        let mixed = vec!["org:1".to_owned(), "org:9".to_owned()];
        let results = h
            .cache
            .get_or_load_many(&mixed, |_| async {
                Err::<HashMap<String, Org>, _>(std::io::Error::other("db down"))
            })
            .await;
        assert_eq!(results[0].as_ref().unwrap(), &Some(org(1)));
        assert!(matches!(results[1], Err(Error::Loader { .. })), "{kind:?}");
    }
}

#[tokio::test]
async fn a_failing_loader_is_an_error_unless_a_stale_value_exists() {
    for kind in KINDS {
        let h = Harness::new(kind, |c| c).await;
        let err = h
            .cache
            .get_or_load("org:1", || async {
                Err::<Option<Org>, _>(std::io::Error::other("db down"))
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Loader { .. }), "{kind:?}: {err}");
        assert!(err.to_string().contains("db down"));

        let short = EntryOptions::default().ttl(Duration::from_millis(100));
        h.cache.set("org:2", org(2), &short).await.unwrap();
        h.advance(Duration::from_millis(250)).await;
        let v = h
            .cache
            .get_or_load("org:2", || async {
                Err::<Option<Org>, _>(std::io::Error::other("db down"))
            })
            .await
            .unwrap();
        assert_eq!(
            v,
            Some(org(2)),
            "fail-safe serves the stale value ({kind:?})"
        );
        assert_eq!(h.cache.stats().stale_served, 1, "{kind:?}");
    }
}

#[tokio::test]
async fn a_hung_loader_times_out() {
    for kind in KINDS {
        let h = Harness::new(kind, |c| CacheConfig {
            hard_timeout: Duration::from_millis(100),
            ..c
        })
        .await;
        let err = h
            .cache
            .get_or_load("org:1", || async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok::<_, std::io::Error>(Some(org(1)))
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{kind:?}: {err}");
    }
}

#[tokio::test]
async fn a_load_outlives_the_caller_that_stopped_waiting_for_it() {
    for kind in KINDS {
        let h = Harness::new(kind, |c| c).await;
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let (started, loader_started) = tokio::sync::oneshot::channel::<()>();
        let load = h.cache.get_or_load("org:1", move || async move {
            let _ = started.send(());
            tokio::time::sleep(Duration::from_millis(150)).await;
            counted.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(Some(org(1)))
        });
        // The caller stops waiting once its load is under way (not before: a
        // caller that gives up during the L2 read never starts a load at all).
        tokio::select! {
            _ = load => panic!("{kind:?}: the load finished before its caller stopped waiting"),
            started = loader_started => started.expect("the loader started"),
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while calls.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{kind:?}: the load ran on");
        let mut stored = None;
        while stored.is_none() && tokio::time::Instant::now() < deadline {
            stored = h.cache.get("org:1").await.unwrap();
            if stored.is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert_eq!(stored, Some(org(1)), "{kind:?}: and stored its value");
    }
}

#[tokio::test]
async fn a_panicking_loader_is_an_error_for_its_callers() {
    for kind in KINDS {
        let h = Harness::new(kind, |c| c).await;
        let err = h
            .cache
            .get_or_load("org:1", || async {
                if std::hint::black_box(true) {
                    panic!("the loader broke");
                }
                Ok::<_, std::io::Error>(Some(org(1)))
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Loader { key, .. } if key == "org:1")
                && err.to_string().contains("the loader broke"),
            "{kind:?}: {err}"
        );
        // The cache carries on: the next load runs.
        let value = h
            .cache
            .get_or_load("org:1", || async { Ok::<_, std::io::Error>(Some(org(1))) })
            .await
            .unwrap();
        assert_eq!(value, Some(org(1)), "{kind:?}");
    }
}

#[tokio::test]
async fn tags_patterns_and_clear_remove_what_they_name() {
    for kind in KINDS {
        let h = Harness::new(kind, |c| c).await;
        let tenant_a = EntryOptions::default().tag("tenant:a");
        h.cache.set("org:1", org(1), &tenant_a).await.unwrap();
        h.cache
            .set("org:2", org(2), &tenant_a.clone().tag("plan:pro"))
            .await
            .unwrap();
        h.cache
            .set("org:3", org(3), &EntryOptions::default().tag("tenant:b"))
            .await
            .unwrap();
        h.cache
            .set("user:1", org(9), &EntryOptions::default())
            .await
            .unwrap();

        let removed = h.cache.invalidate_tag("tenant:a").await.unwrap();
        if h.has_redis() {
            assert_eq!(removed, 2, "{kind:?}");
        }
        assert_eq!(h.cache.get("org:1").await.unwrap(), None, "{kind:?}");
        assert_eq!(h.cache.get("org:2").await.unwrap(), None, "{kind:?}");
        assert_eq!(
            h.cache.get("org:3").await.unwrap(),
            Some(org(3)),
            "{kind:?}"
        );

        h.cache.invalidate_pattern("org:*").await.unwrap();
        assert_eq!(h.cache.get("org:3").await.unwrap(), None, "{kind:?}");
        assert_eq!(
            h.cache.get("user:1").await.unwrap(),
            Some(org(9)),
            "{kind:?}"
        );

        h.cache.clear().await.unwrap();
        assert_eq!(h.cache.get("user:1").await.unwrap(), None, "{kind:?}");
        assert!(h.cache.stats().invalidations >= 3);
    }
}

#[tokio::test]
async fn bad_keys_tags_and_patterns_are_refused() {
    for kind in KINDS {
        let h = Harness::new(kind, |c| c).await;
        let long = "k".repeat(neo_cache::MAX_KEY_LEN + 1);
        for key in ["", long.as_str(), "a\nb"] {
            assert_eq!(
                h.cache.get(key).await.unwrap_err().kind(),
                ErrorKind::Validation,
                "{kind:?}"
            );
            let err = h
                .cache
                .set(key, org(1), &EntryOptions::default())
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Validation);
        }
        let bad_tag = EntryOptions::default().tag("has space");
        assert!(h.cache.set("k", org(1), &bad_tag).await.is_err());
        assert!(h.cache.invalidate_tag("").await.is_err());
        assert!(h.cache.invalidate_pattern("org:[ab]").await.is_err());
        assert_eq!(h.cache.get("k").await.unwrap(), None, "nothing was stored");
    }
}

#[tokio::test]
async fn warming_loads_every_key_with_bounded_concurrency() {
    for kind in KINDS {
        let h = Harness::new(kind, |c| CacheConfig {
            warm_concurrency: 4,
            ..c
        })
        .await;
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let keys: Vec<String> = (0..40).map(|i| format!("org:{i}")).collect();
        let (r, p) = (Arc::clone(&running), Arc::clone(&peak));
        let report = h
            .cache
            .warm(keys.clone(), move |key| {
                let (r, p) = (Arc::clone(&r), Arc::clone(&p));
                async move {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    r.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(Some(org(key[4..].parse().unwrap())))
                }
            })
            .await;
        assert_eq!((report.cached, report.failed), (40, 0), "{kind:?}");
        assert!(peak.load(Ordering::SeqCst) <= 4, "{kind:?}");
        assert_eq!(h.cache.get("org:39").await.unwrap(), Some(org(39)));
    }
}

#[tokio::test]
async fn invalid_configurations_are_refused() {
    let bad = [
        CacheConfig {
            name: "has space".into(),
            ..CacheConfig::default()
        },
        CacheConfig {
            key_prefix: "a*".into(),
            ..CacheConfig::default()
        },
        CacheConfig {
            ttl: Duration::ZERO,
            ..CacheConfig::default()
        },
        CacheConfig {
            eager_refresh: 1.5,
            ..CacheConfig::default()
        },
    ];
    for config in bad {
        let err = neo_cache::HybridCache::<Org>::memory(config).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    }
    let err =
        neo_cache::HybridCache::<Org>::redis(CacheConfig::default(), "not a url").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(matches!(Kind::Memory, Kind::Memory));
}
