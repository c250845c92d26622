//! Tenant views: the same key in two tenants never collides (L1 and L2), `invalidate_tenant`
//! drops exactly one tenant's entries on every instance, and a view needs a tenant.

use crate::{DEPLOYMENTS, Deployment, Harness, KINDS, Kind, Org, org};
use neo_cache::{Cache, EntryOptions, Error};
use neo_core::{ErrorKind, HasErrorKind, TenantId};
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_same_key_in_two_tenants_never_collides() {
    for kind in KINDS {
        let h = Harness::new(kind, |c| c).await;
        let (a, b) = (TenantId::new(), TenantId::new());
        let (va, vb) = (h.cache.for_tenant(&a), h.cache.for_tenant(&b));
        va.set("org:1", org(1), &EntryOptions::default())
            .await
            .unwrap();
        vb.set("org:1", org(2), &EntryOptions::default())
            .await
            .unwrap();
        assert_eq!(va.get("org:1").await.unwrap(), Some(org(1)), "{kind:?}");
        assert_eq!(vb.get("org:1").await.unwrap(), Some(org(2)), "{kind:?}");
        assert_eq!(
            h.cache.get("org:1").await.unwrap(),
            None,
            "{kind:?}: the plain key is apart"
        );
        // L2: another instance (empty L1) reads each tenant's own value from Redis.
        if let Kind::Redis(_) | Kind::Tiered(_) = kind {
            let other = h.sibling().await;
            assert_eq!(
                other.for_tenant(&a).get("org:1").await.unwrap(),
                Some(org(1))
            );
            assert_eq!(
                other.for_tenant(&b).get("org:1").await.unwrap(),
                Some(org(2))
            );
            assert!(other.stats().l2_hits >= 2, "{kind:?}: {:?}", other.stats());
        }
        vb.remove("org:1").await.unwrap();
        assert_eq!(va.get("org:1").await.unwrap(), Some(org(1)), "{kind:?}");
        assert_eq!(vb.get("org:1").await.unwrap(), None, "{kind:?}");
    }
}

#[tokio::test]
async fn tags_patterns_and_batch_loads_stay_inside_the_tenant() {
    for kind in [Kind::Memory, Kind::Tiered(Deployment::Standalone)] {
        let h = Harness::new(kind, |c| c).await;
        let (a, b) = (TenantId::new(), TenantId::new());
        let (va, vb) = (h.cache.for_tenant(&a), h.cache.for_tenant(&b));
        let tagged = EntryOptions::default().tag("t");
        va.set("org:1", org(1), &tagged).await.unwrap();
        vb.set("org:1", org(2), &tagged).await.unwrap();
        va.invalidate_tag("t").await.unwrap();
        assert_eq!(va.get("org:1").await.unwrap(), None, "{kind:?}");
        assert_eq!(vb.get("org:1").await.unwrap(), Some(org(2)), "{kind:?}");

        va.set("org:2", org(2), &EntryOptions::default())
            .await
            .unwrap();
        vb.invalidate_pattern("org:*").await.unwrap();
        assert_eq!(vb.get("org:1").await.unwrap(), None, "{kind:?}");
        assert_eq!(va.get("org:2").await.unwrap(), Some(org(2)), "{kind:?}");

        // The loader sees and answers with the caller's keys.
        let keys: Vec<String> = ["org:2", "org:3"].map(String::from).to_vec();
        let found = va
            .get_or_load_many(&keys, |missing: Vec<String>| async move {
                assert_eq!(missing, ["org:3"]);
                Ok::<_, std::io::Error>([("org:3".to_owned(), org(3))].into())
            })
            .await;
        let found: Vec<Option<Org>> = found.into_iter().map(Result::unwrap).collect();
        assert_eq!(found, [Some(org(2)), Some(org(3))], "{kind:?}");
        assert_eq!(va.get("org:3").await.unwrap(), Some(org(3)), "{kind:?}");
        assert_eq!(vb.get("org:3").await.unwrap(), None, "{kind:?}");
    }
}

#[tokio::test]
async fn invalidate_tenant_drops_exactly_one_tenant_on_every_instance() {
    for deployment in DEPLOYMENTS {
        let h = Harness::new(Kind::Tiered(deployment), |c| c).await;
        let other = h.sibling().await;
        let (a, b) = (TenantId::new(), TenantId::new());
        for i in 1..=3 {
            let key = format!("org:{i}");
            h.cache
                .for_tenant(&a)
                .set(&key, org(i), &EntryOptions::default())
                .await
                .unwrap();
            h.cache
                .for_tenant(&b)
                .set(&key, org(i + 10), &EntryOptions::default())
                .await
                .unwrap();
            h.cache
                .set(&key, org(i + 20), &EntryOptions::default())
                .await
                .unwrap();
        }
        // Every value is now in the other instance's L1 too.
        for i in 1..=3 {
            let key = format!("org:{i}");
            assert_eq!(other.for_tenant(&a).get(&key).await.unwrap(), Some(org(i)));
            assert_eq!(
                other.for_tenant(&b).get(&key).await.unwrap(),
                Some(org(i + 10))
            );
        }

        let removed = h.cache.invalidate_tenant(&a).await.unwrap();
        assert_eq!(removed, 3, "{deployment:?}: the Redis entries of tenant a");
        let started = Instant::now();
        while other.for_tenant(&a).get("org:1").await.unwrap().is_some() {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{deployment:?}: the other instance's L1 still holds tenant a"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for cache in [&h.cache, &other] {
            for i in 1..=3 {
                let key = format!("org:{i}");
                assert_eq!(
                    cache.for_tenant(&a).get(&key).await.unwrap(),
                    None,
                    "{deployment:?}"
                );
                assert_eq!(
                    cache.for_tenant(&b).get(&key).await.unwrap(),
                    Some(org(i + 10)),
                    "{deployment:?}"
                );
                assert_eq!(
                    cache.get(&key).await.unwrap(),
                    Some(org(i + 20)),
                    "{deployment:?}"
                );
            }
        }
        // Redis itself: a third instance (empty L1) finds b's entries and none of a's.
        let third = h.sibling().await;
        assert_eq!(third.for_tenant(&a).get("org:2").await.unwrap(), None);
        assert_eq!(
            third.for_tenant(&b).get("org:2").await.unwrap(),
            Some(org(12))
        );
        assert_eq!(
            h.cache.for_tenant(&b).clear().await.unwrap(),
            3,
            "{deployment:?}: clear on a view is invalidate_tenant"
        );
    }
}

#[tokio::test]
async fn a_view_of_the_current_tenant_needs_a_tenant_in_scope() {
    let h = Harness::new(Kind::Memory, |c| c).await;
    let error = h.cache.for_current_tenant().unwrap_err();
    assert!(
        matches!(error, Error::Tenant(neo_tenant::Error::NoTenantInScope)),
        "{error}"
    );
    assert_eq!(error.kind(), ErrorKind::Unauthorized);
    let tenant = TenantId::new();
    let cache = h.cache.clone();
    neo_tenant::scope(tenant, async move {
        let view = cache.for_current_tenant().unwrap();
        assert_eq!(view.tenant(), tenant);
        view.set("k", org(1), &EntryOptions::default())
            .await
            .unwrap();
        assert_eq!(
            cache.for_tenant(&tenant).get("k").await.unwrap(),
            Some(org(1))
        );
    })
    .await;
}

fn invalid<T>(result: &Result<T, Error>) -> bool {
    matches!(result, Err(Error::Invalid { what: "key", .. }))
}

#[tokio::test]
async fn a_view_checks_the_callers_key_not_the_namespaced_one() {
    for kind in [Kind::Memory, Kind::Redis(Deployment::Standalone)] {
        let h = Harness::new(kind, |c| c).await;
        let view = h.cache.for_tenant(&TenantId::new());
        assert!(invalid(&view.get("").await), "{kind:?}");
        assert!(
            invalid(&view.set("", org(1), &EntryOptions::default()).await),
            "{kind:?}"
        );
        let loaded = view
            .get_or_load("", || async { Ok::<_, std::io::Error>(Some(org(1))) })
            .await;
        assert!(invalid(&loaded), "{kind:?}");
        let keys: Vec<String> = ["", "org:1"].map(String::from).to_vec();
        let found = view
            .get_or_load_many(&keys, |missing: Vec<String>| async move {
                assert_eq!(missing, ["org:1"]);
                Ok::<_, std::io::Error>([("org:1".to_owned(), org(1))].into())
            })
            .await;
        let [empty, one] = <[_; 2]>::try_from(found).unwrap();
        assert!(invalid(&empty), "{kind:?}");
        assert_eq!(one.unwrap(), Some(org(1)), "{kind:?}");
    }
}
