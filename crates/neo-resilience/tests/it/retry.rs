use crate::Failure;
use neo_core::{ErrorKind, HasErrorKind};
use neo_resilience::{Error, Jitter, Policy, ResilienceConfig, RetryConfig, RetryDecision};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

fn policy(retry: RetryConfig) -> Policy {
    Policy::new(&ResilienceConfig {
        retry: Some(retry),
        breaker: None,
        timeout: None,
        ..ResilienceConfig::named("test")
    })
    .unwrap()
}

fn exact(max_attempts: u32) -> RetryConfig {
    RetryConfig {
        max_attempts,
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(350),
        multiplier: 2.0,
        jitter: Jitter::None,
        max_elapsed: None,
    }
}

/// Runs `policy` on an op that fails with `kinds` in turn (then succeeds); returns the
/// result and the instants of each attempt.
async fn run(
    policy: &Policy,
    kinds: Vec<ErrorKind>,
) -> (Result<u32, Error<Failure>>, Vec<Instant>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let result = policy
        .call(move || {
            let seen = Arc::clone(&seen);
            let kinds = kinds.clone();
            async move {
                let mut calls = seen.lock().unwrap();
                calls.push(Instant::now());
                match kinds.get(calls.len() - 1) {
                    Some(kind) => Err(Failure(*kind)),
                    None => Ok(calls.len() as u32),
                }
            }
        })
        .await;
    let calls = calls.lock().unwrap().clone();
    (result, calls)
}

fn gaps(calls: &[Instant]) -> Vec<Duration> {
    calls.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_with_exponential_backoff() {
    let (result, calls) = run(
        &policy(exact(5)),
        vec![
            ErrorKind::Unavailable,
            ErrorKind::Timeout,
            ErrorKind::Unavailable,
            ErrorKind::Unavailable,
        ],
    )
    .await;
    assert_eq!(result.unwrap(), 5);
    let ms: Vec<u128> = gaps(&calls).iter().map(Duration::as_millis).collect();
    assert_eq!(
        ms,
        vec![100, 200, 350, 350],
        "doubling, capped at max_delay"
    );
}

#[tokio::test(start_paused = true)]
async fn retrying_stops_at_the_attempt_budget_and_reports_it() {
    let (result, calls) = run(&policy(exact(3)), vec![ErrorKind::Unavailable; 10]).await;
    assert_eq!(calls.len(), 3);
    match result.unwrap_err() {
        Error::Inner { source, attempts } => {
            assert_eq!((source.0, attempts), (ErrorKind::Unavailable, 3));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn non_retryable_errors_are_returned_at_once() {
    let (result, calls) = run(&policy(exact(5)), vec![ErrorKind::Validation]).await;
    assert_eq!(calls.len(), 1);
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation);
    assert!(matches!(err, Error::Inner { attempts: 1, .. }));
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_stops_before_the_attempts_run_out() {
    let config = RetryConfig {
        max_elapsed: Some(Duration::from_millis(250)),
        ..exact(10)
    };
    let (result, calls) = run(&policy(config), vec![ErrorKind::Unavailable; 10]).await;
    // 0, +100, +200 would start at 300 ms > 250 ms: two attempts.
    assert_eq!(calls.len(), 2);
    assert!(matches!(result, Err(Error::Inner { attempts: 2, .. })));
}

#[tokio::test(start_paused = true)]
async fn jittered_delays_stay_within_their_bounds() {
    for _ in 0..20 {
        let full = RetryConfig {
            jitter: Jitter::Full,
            ..exact(4)
        };
        let (_, calls) = run(&policy(full), vec![ErrorKind::Unavailable; 3]).await;
        let bounds = [100, 200, 350];
        for (gap, max) in gaps(&calls).iter().zip(bounds) {
            assert!(gap.as_millis() <= max, "{gap:?} > {max} ms");
        }
        let decorrelated = RetryConfig {
            jitter: Jitter::Decorrelated,
            ..exact(4)
        };
        let (_, calls) = run(&policy(decorrelated), vec![ErrorKind::Unavailable; 3]).await;
        for gap in gaps(&calls) {
            assert!((100..=350).contains(&gap.as_millis()), "{gap:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_hint_is_honoured() {
    let policy = policy(exact(3));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let result = policy
        .call_with(
            |e: &Failure| {
                if e.0 == ErrorKind::RateLimited {
                    RetryDecision::RetryAfter(Duration::from_secs(5))
                } else {
                    RetryDecision::Stop
                }
            },
            move || {
                let seen = Arc::clone(&seen);
                async move {
                    let mut calls = seen.lock().unwrap();
                    calls.push(Instant::now());
                    if calls.len() == 1 {
                        Err(Failure(ErrorKind::RateLimited))
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .await;
    assert!(result.is_ok());
    let calls = calls.lock().unwrap();
    assert_eq!(gaps(&calls), vec![Duration::from_secs(5)]);
}

#[test]
fn invalid_retry_settings_are_refused() {
    for bad in [
        RetryConfig {
            max_attempts: 0,
            ..RetryConfig::default()
        },
        RetryConfig {
            multiplier: 0.5,
            ..RetryConfig::default()
        },
        RetryConfig {
            multiplier: f64::NAN,
            ..RetryConfig::default()
        },
        RetryConfig {
            initial_delay: Duration::from_secs(20),
            ..RetryConfig::default()
        },
    ] {
        let err = Policy::new(&ResilienceConfig {
            retry: Some(bad),
            ..ResilienceConfig::default()
        })
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    }
}
