use crate::Failure;
use neo_core::{ErrorKind, HasErrorKind};
use neo_resilience::{BreakerConfig, BreakerState, CircuitBreaker, Error, StateChange};
use std::time::Duration;

fn config() -> BreakerConfig {
    BreakerConfig {
        failure_rate: 0.5,
        minimum_calls: 4,
        window_calls: 10,
        open_for: Duration::from_secs(30),
        half_open_probes: 2,
        ..BreakerConfig::default()
    }
}

async fn succeed(b: &CircuitBreaker) -> Result<(), Error<Failure>> {
    b.call(|| async { Ok::<_, Failure>(()) }).await
}

async fn fail(b: &CircuitBreaker) -> Result<(), Error<Failure>> {
    b.call(|| async { Err::<(), _>(Failure(ErrorKind::Unavailable)) })
        .await
}

#[tokio::test(start_paused = true)]
async fn opens_on_the_failure_rate_then_half_opens_and_closes_after_good_probes() {
    let breaker = CircuitBreaker::new("dep", config()).unwrap();
    let mut events = breaker.subscribe();
    succeed(&breaker).await.unwrap();
    fail(&breaker).await.unwrap_err();
    succeed(&breaker).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed, "below minimum_calls");
    fail(&breaker).await.unwrap_err(); // 2 of 4 failed: 50 %
    assert_eq!(breaker.state(), BreakerState::Open);

    let mut ran = false;
    let err = breaker
        .call(|| {
            ran = true;
            async { Ok::<_, Failure>(()) }
        })
        .await
        .unwrap_err();
    assert!(!ran, "an open breaker does not run the call");
    assert!(
        matches!(err, Error::Open { ref name, retry_after } if name == "dep" && retry_after == Duration::from_secs(30))
    );
    assert_eq!(err.kind(), ErrorKind::Unavailable);

    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    // Two probe slots: a third concurrent call is refused.
    let p1 = breaker.try_acquire().unwrap();
    let p2 = breaker.try_acquire().unwrap();
    assert!(breaker.try_acquire().is_err());
    p1.record(true);
    p2.record(true);
    assert_eq!(breaker.state(), BreakerState::Closed);

    let seen: Vec<StateChange> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    let to: Vec<BreakerState> = seen.iter().map(|c| c.to).collect();
    assert_eq!(
        to,
        vec![
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::Closed
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_again_and_a_cancelled_one_frees_its_slot() {
    let breaker = CircuitBreaker::new("dep", config()).unwrap();
    for _ in 0..4 {
        fail(&breaker).await.unwrap_err();
    }
    tokio::time::advance(Duration::from_secs(30)).await;
    let cancelled = breaker.try_acquire().unwrap();
    drop(cancelled); // never recorded
    fail(&breaker).await.unwrap_err();
    assert_eq!(breaker.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_it_too() {
    let breaker = CircuitBreaker::new(
        "slow",
        BreakerConfig {
            slow_call_threshold: Some(Duration::from_millis(100)),
            slow_call_rate: 0.5,
            ..config()
        },
    )
    .unwrap();
    for _ in 0..2 {
        succeed(&breaker).await.unwrap();
    }
    for _ in 0..2 {
        breaker
            .call(|| async {
                tokio::time::sleep(Duration::from_millis(150)).await;
                Ok::<_, Failure>(())
            })
            .await
            .unwrap();
    }
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_time_window_forgets_old_failures() {
    let breaker = CircuitBreaker::new(
        "timed",
        BreakerConfig {
            window_duration: Some(Duration::from_secs(10)),
            ..config()
        },
    )
    .unwrap();
    for _ in 0..3 {
        fail(&breaker).await.unwrap_err();
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    for _ in 0..3 {
        succeed(&breaker).await.unwrap();
    }
    fail(&breaker).await.unwrap_err(); // 1 of 4 in the window
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[test]
fn invalid_breaker_settings_are_refused() {
    for bad in [
        BreakerConfig {
            failure_rate: 0.0,
            ..BreakerConfig::default()
        },
        BreakerConfig {
            failure_rate: 1.5,
            ..BreakerConfig::default()
        },
        BreakerConfig {
            minimum_calls: 0,
            ..BreakerConfig::default()
        },
        BreakerConfig {
            half_open_probes: 0,
            ..BreakerConfig::default()
        },
        BreakerConfig {
            window_duration: Some(Duration::ZERO),
            ..BreakerConfig::default()
        },
    ] {
        assert_eq!(
            CircuitBreaker::new("x", bad).unwrap_err().kind(),
            ErrorKind::Configuration
        );
    }
}

/// Opens the breaker of `config()`-like settings with 3 probes, then lets `open_for` pass.
async fn half_open_with_three_probes(failure_rate: f64) -> CircuitBreaker {
    let breaker = CircuitBreaker::new(
        "probes",
        BreakerConfig {
            failure_rate,
            half_open_probes: 3,
            ..config()
        },
    )
    .unwrap();
    for _ in 0..4 {
        fail(&breaker).await.unwrap_err();
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    breaker
}

// resilience4j: after `permittedNumberOfCallsInHalfOpenState` probes, the breaker closes when
// their failure rate is below `failureRateThreshold` and opens again when it is equal or above.
#[tokio::test(start_paused = true)]
async fn probes_with_a_failure_rate_below_the_threshold_close_it() {
    let breaker = half_open_with_three_probes(0.5).await;
    fail(&breaker).await.unwrap_err();
    assert_eq!(
        breaker.state(),
        BreakerState::HalfOpen,
        "1 failure in 3 probes does not settle it yet"
    );
    succeed(&breaker).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    succeed(&breaker).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed, "1 of 3 is below 0.5");
}

#[tokio::test(start_paused = true)]
async fn probes_with_a_failure_rate_at_or_above_the_threshold_open_it_again() {
    let breaker = half_open_with_three_probes(0.5).await;
    succeed(&breaker).await.unwrap();
    fail(&breaker).await.unwrap_err();
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    fail(&breaker).await.unwrap_err();
    assert_eq!(breaker.state(), BreakerState::Open, "2 of 3 reach 0.5");

    // At a threshold of 2/3 exactly, 2 failures of 3 also open it (equal or above).
    let breaker = half_open_with_three_probes(2.0 / 3.0).await;
    fail(&breaker).await.unwrap_err();
    succeed(&breaker).await.unwrap();
    fail(&breaker).await.unwrap_err();
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_flaky_dependency_failing_two_in_five_gets_the_breaker_closed() {
    // The pattern from the review: 2 failures in every 5 calls. Every run of 3 probes holds at
    // least one failure, so a breaker that wanted every probe to pass never closed.
    let breaker = half_open_with_three_probes(0.5).await;
    let pattern = [false, true, true, false, true];
    for &ok in pattern.iter().take(3) {
        if ok {
            succeed(&breaker).await.unwrap();
        } else {
            fail(&breaker).await.unwrap_err();
        }
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn slow_probes_count_against_the_slow_call_rate() {
    let breaker = CircuitBreaker::new(
        "slow-probes",
        BreakerConfig {
            slow_call_threshold: Some(Duration::from_millis(100)),
            slow_call_rate: 0.5,
            half_open_probes: 3,
            ..config()
        },
    )
    .unwrap();
    for _ in 0..4 {
        fail(&breaker).await.unwrap_err();
    }
    tokio::time::advance(Duration::from_secs(30)).await;
    let slow = || async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        Ok::<_, Failure>(())
    };
    breaker.call(slow).await.unwrap();
    succeed(&breaker).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    breaker.call(slow).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Open, "2 of 3 probes slow");
}
