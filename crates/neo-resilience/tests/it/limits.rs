use neo_core::{ErrorKind, HasErrorKind};
use neo_resilience::{
    Bulkhead, BulkheadConfig, Error, KeyedRateLimiter, RateLimitConfig, RateLimiter,
};
use std::time::Duration;

#[test]
fn the_rate_limiter_allows_the_burst_then_says_when_to_come_back() {
    let limiter = RateLimiter::new(RateLimitConfig {
        per_second: 10,
        burst: 3,
        ..RateLimitConfig::default()
    })
    .unwrap();
    for _ in 0..3 {
        limiter.try_acquire().unwrap();
    }
    let err = limiter.try_acquire().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    let wait = err.retry_after().unwrap();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(100),
        "{wait:?}"
    );
    std::thread::sleep(wait + Duration::from_millis(5));
    limiter.try_acquire().unwrap();
}

#[tokio::test]
async fn acquire_waits_when_allowed_to() {
    let limiter = RateLimiter::new(RateLimitConfig {
        per_second: 50,
        burst: 1,
        max_wait: Duration::from_millis(100),
    })
    .unwrap();
    limiter.acquire().await.unwrap();
    let started = std::time::Instant::now();
    limiter.acquire().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(15),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn keys_have_their_own_limits() {
    let limiter = KeyedRateLimiter::new(RateLimitConfig {
        per_second: 1,
        burst: 2,
        ..RateLimitConfig::default()
    })
    .unwrap();
    limiter.try_acquire(&"tenant-a").unwrap();
    limiter.try_acquire(&"tenant-a").unwrap();
    assert!(limiter.try_acquire(&"tenant-a").is_err());
    limiter.try_acquire(&"tenant-b").unwrap();
    limiter.shrink();
}

#[test]
fn zero_rates_and_sizes_are_refused() {
    for bad in [
        RateLimitConfig {
            per_second: 0,
            ..RateLimitConfig::default()
        },
        RateLimitConfig {
            burst: 0,
            ..RateLimitConfig::default()
        },
    ] {
        assert_eq!(
            RateLimiter::new(bad).unwrap_err().kind(),
            ErrorKind::Configuration
        );
    }
    let err = Bulkhead::new(
        "b",
        BulkheadConfig {
            max_concurrent: 0,
            ..BulkheadConfig::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
}

#[tokio::test(start_paused = true)]
async fn the_bulkhead_bounds_running_and_waiting_calls() {
    let bulkhead = Bulkhead::new(
        "db",
        BulkheadConfig {
            max_concurrent: 2,
            max_queued: 1,
            max_wait: Duration::from_secs(1),
        },
    )
    .unwrap();
    let a = bulkhead.acquire().await.unwrap();
    let _b = bulkhead.acquire().await.unwrap();
    assert_eq!(bulkhead.available(), 0);
    let queued = {
        let bulkhead = bulkhead.clone();
        tokio::spawn(async move { bulkhead.acquire().await.map(|_| ()) })
    };
    tokio::task::yield_now().await;
    let err = bulkhead.acquire().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::BulkheadFull {
                max_concurrent: 2,
                max_queued: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    drop(a);
    queued.await.unwrap().unwrap();

    // A queued call gives up after max_wait.
    let _c = bulkhead.acquire().await.unwrap();
    let err = bulkhead.acquire().await.unwrap_err();
    assert!(matches!(err, Error::BulkheadFull { .. }));
}
