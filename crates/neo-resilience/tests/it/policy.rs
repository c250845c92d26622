use crate::Failure;
use neo_core::{ErrorKind, HasErrorKind};
use neo_resilience::{
    BreakerConfig, BreakerState, Error, Jitter, Policy, ResilienceConfig, RetryConfig,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

fn config() -> ResilienceConfig {
    ResilienceConfig {
        timeout: Some(Duration::from_millis(100)),
        retry: Some(RetryConfig {
            max_attempts: 3,
            initial_delay: Duration::from_millis(10),
            jitter: Jitter::None,
            ..RetryConfig::default()
        }),
        breaker: Some(BreakerConfig {
            minimum_calls: 3,
            half_open_probes: 1,
            open_for: Duration::from_secs(5),
            ..BreakerConfig::default()
        }),
        ..ResilienceConfig::named("dep")
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_time_out_and_are_retried() {
    let policy = Policy::new(&config()).unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    let result = policy
        .call(move || {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Ok::<_, Failure>(n)
            }
        })
        .await;
    assert_eq!(result.unwrap(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_inside_the_policy_stops_calls_to_a_dead_dependency() {
    let policy = Policy::new(&config()).unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let dead = |calls: Arc<AtomicU32>| {
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(Failure(ErrorKind::Unavailable)) }
        }
    };
    let err = policy.call(dead(Arc::clone(&calls))).await.unwrap_err();
    // Three attempts fail, the breaker opens after the third: the error says so.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(matches!(err, Error::Inner { attempts: 3, .. }), "{err:?}");
    assert_eq!(policy.breaker().unwrap().state(), BreakerState::Open);

    let err = policy.call(dead(Arc::clone(&calls))).await.unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "no call reached the dependency"
    );

    tokio::time::advance(Duration::from_secs(5)).await;
    let ok = policy.call(|| async { Ok::<_, Failure>(7) }).await.unwrap();
    assert_eq!(ok, 7);
    assert_eq!(policy.breaker().unwrap().state(), BreakerState::Closed);
}

#[tokio::test]
async fn policy_futures_can_be_spawned() {
    let policy = Policy::new(&config()).unwrap();
    let handle = tokio::spawn(async move { policy.call(|| async { Ok::<_, Failure>(1) }).await });
    assert_eq!(handle.await.unwrap().unwrap(), 1);
}

#[test]
#[allow(clippy::result_large_err, reason = "figment's Jail API")]
fn the_config_loads_from_neo_resilience_variables() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("NEO_RESILIENCE_NAME", "billing");
        jail.set_env("NEO_RESILIENCE_TIMEOUT", "2s");
        jail.set_env("NEO_RESILIENCE_RETRY__MAX_ATTEMPTS", "7");
        jail.set_env("NEO_RESILIENCE_RETRY__JITTER", "decorrelated");
        jail.set_env("NEO_RESILIENCE_BREAKER__OPEN_FOR", "10s");
        jail.set_env("NEO_RESILIENCE_RATE_LIMIT__PER_SECOND", "50");
        let config: ResilienceConfig = neo_core::config::from_env("NEO_RESILIENCE_").unwrap();
        assert_eq!(config.name, "billing");
        assert_eq!(config.timeout, Some(Duration::from_secs(2)));
        let retry = config.retry.unwrap();
        assert_eq!(
            (retry.max_attempts, retry.jitter),
            (7, Jitter::Decorrelated)
        );
        assert_eq!(retry.initial_delay, RetryConfig::default().initial_delay);
        assert_eq!(config.breaker.unwrap().open_for, Duration::from_secs(10));
        assert_eq!(config.rate_limit.unwrap().per_second, 50);
        assert!(Policy::new(&config).is_ok());
        Ok(())
    });
}
