use crate::{Mode, coord, in_every_mode, sibling};
use neo_coord::{Error, LockGuard};
use neo_core::{ErrorKind, HasErrorKind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

in_every_mode!(
    a_lock_is_exclusive_fenced_and_released_only_by_its_owner,
    the_guard_extends_its_lock_while_it_lives,
    a_lock_whose_owner_vanished_expires_and_the_late_owner_cannot_release_it,
    with_lock_serializes_work_across_instances,
    bad_names_are_refused,
);

async fn a_lock_is_exclusive_fenced_and_released_only_by_its_owner(mode: Mode) {
    let (env, a) = coord(mode, |c| c).await;
    let b = sibling(&env, &a);
    let first = a.lock("invoice:1").await.unwrap();
    assert!(b.try_lock("invoice:1").await.unwrap().is_none());
    let err = b.lock("invoice:1").await.unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let fence = first.fence();
    first.release().await.unwrap();

    let second = b.lock("invoice:1").await.unwrap();
    assert!(second.fence() > fence, "fences increase");
    // Another lock name is independent.
    assert!(a.try_lock("invoice:2").await.unwrap().is_some());
    second.release().await.unwrap();
}

async fn the_guard_extends_its_lock_while_it_lives(mode: Mode) {
    let (env, a) = coord(mode, |c| c).await;
    let b = sibling(&env, &a);
    let guard = a.lock("long").await.unwrap();
    guard.extend().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await; // 2.5 TTLs
    assert!(guard.is_held());
    assert!(b.try_lock("long").await.unwrap().is_none());
    drop(guard); // released in the background
    let mut taken = None;
    for _ in 0..50 {
        taken = b.try_lock("long").await.unwrap();
        if taken.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(taken.is_some());
}

async fn a_lock_whose_owner_vanished_expires_and_the_late_owner_cannot_release_it(mode: Mode) {
    let (env, a) = coord(mode, |c| c).await;
    let b = sibling(&env, &a);
    let guard = a.lock("job").await.unwrap();
    // The owner stops extending (a paused process): simulate by leaking the guard's watchdog.
    let stale = leak_without_extension(guard);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let newer = b.lock("job").await.unwrap();
    assert!(newer.fence() > stale.1);
    assert!(matches!(stale.0.extend().await, Err(Error::Lost { .. })));
    let err = stale.0.release().await.unwrap_err();
    assert!(matches!(err, Error::Lost { .. }), "{err}");
    assert!(newer.is_held());
}

/// Stops a guard's automatic extension, as if its process froze.
fn leak_without_extension(guard: LockGuard) -> (LockGuard, u64) {
    let fence = guard.fence();
    (guard.without_extension(), fence)
}

async fn with_lock_serializes_work_across_instances(mode: Mode) {
    let (env, a) = coord(mode, |c| neo_coord::CoordConfig {
        lock_wait: Duration::from_secs(5),
        ..c
    })
    .await;
    let inside = Arc::new(AtomicUsize::new(0));
    let max_inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let coord = sibling(&env, &a);
        let (inside, max_inside) = (Arc::clone(&inside), Arc::clone(&max_inside));
        tasks.push(tokio::spawn(async move {
            coord
                .with_lock("critical", |fence| async move {
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    max_inside.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    fence
                })
                .await
                .unwrap()
        }));
    }
    let mut fences = Vec::new();
    for task in tasks {
        fences.push(task.await.unwrap());
    }
    assert_eq!(max_inside.load(Ordering::SeqCst), 1);
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(fences.len(), 4, "a distinct fence per acquisition");
}

async fn bad_names_are_refused(mode: Mode) {
    let (_env, a) = coord(mode, |c| c).await;
    for bad in ["", "has space", "a\nb"] {
        assert_eq!(
            a.try_lock(bad).await.unwrap_err().kind(),
            ErrorKind::Validation
        );
    }
}

in_every_mode!(names_route_to_one_slot_and_unsafe_ones_are_refused);

async fn names_route_to_one_slot_and_unsafe_ones_are_refused(mode: Mode) {
    let (env, a) = coord(mode, |c| c).await;
    let b = sibling(&env, &a);
    // A lock and its fence counter are written by one script: on a cluster both keys carry
    // the name as hash tag, so names with separators must still keep them together.
    for name in ["a:b", "tenant:7:invoice.9", ":", "x::", "-._"] {
        let guard = a.lock(name).await.unwrap();
        assert!(b.try_lock(name).await.unwrap().is_none(), "{name}");
        let fence = guard.fence();
        guard.release().await.unwrap();
        let again = b.lock(name).await.unwrap();
        assert!(again.fence() > fence, "{name}");
        again.release().await.unwrap();
        let mut candidacy = a.campaign(name).unwrap();
        let role = tokio::time::timeout(Duration::from_secs(2), candidacy.changed())
            .await
            .unwrap();
        assert!(matches!(role, neo_coord::Role::Leader { .. }), "{name}");
        candidacy.resign().await;
        a.rate_limiter(name, 10, 1)
            .unwrap()
            .check("tenant:1")
            .await
            .unwrap();
    }
    // Braces (a hash tag of the caller's own), glob characters and spaces never reach Redis.
    for bad in ["a{b}", "{x}", "}{", "a*", "a b", "a?"] {
        let err = a.try_lock(bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Validation, "{bad}: {err}");
        assert_eq!(
            a.campaign(bad).unwrap_err().kind(),
            ErrorKind::Validation,
            "{bad}"
        );
        let limiter = a.rate_limiter("api", 10, 1).unwrap();
        assert_eq!(
            limiter.check(bad).await.unwrap_err().kind(),
            ErrorKind::Validation,
            "{bad}"
        );
    }
    // On a cluster the key prefix may not bring a hash tag of its own.
    let braced = neo_coord::CoordConfig {
        key_prefix: "app{1}:".into(),
        ..a.config().clone()
    };
    let connected = neo_coord::Coordinator::connect_redis(&env.redis, braced);
    if mode == Mode::Cluster {
        let err = connected.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
        assert!(err.to_string().contains("key_prefix"), "{err}");
    } else {
        assert!(connected.is_ok());
    }
}
