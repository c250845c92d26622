use crate::{coord, sibling};
use neo_coord::{Error, LockGuard};
use neo_core::{ErrorKind, HasErrorKind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[tokio::test]
async fn a_lock_is_exclusive_fenced_and_released_only_by_its_owner() {
    let (redis, a) = coord(|c| c).await;
    let b = sibling(&redis, &a);
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

#[tokio::test]
async fn the_guard_extends_its_lock_while_it_lives() {
    let (redis, a) = coord(|c| c).await;
    let b = sibling(&redis, &a);
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

#[tokio::test]
async fn a_lock_whose_owner_vanished_expires_and_the_late_owner_cannot_release_it() {
    let (redis, a) = coord(|c| c).await;
    let b = sibling(&redis, &a);
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

#[tokio::test]
async fn with_lock_serializes_work_across_instances() {
    let (redis, a) = coord(|c| neo_coord::CoordConfig {
        lock_wait: Duration::from_secs(5),
        ..c
    })
    .await;
    let inside = Arc::new(AtomicUsize::new(0));
    let max_inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let coord = sibling(&redis, &a);
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

#[tokio::test]
async fn bad_names_are_refused() {
    let (_redis, a) = coord(|c| c).await;
    for bad in ["", "has space", "a\nb"] {
        assert_eq!(
            a.try_lock(bad).await.unwrap_err().kind(),
            ErrorKind::Validation
        );
    }
}
