//! neo-coord on a Redis Sentinel group under a steady lock and rate-limit load while the
//! master is killed (`SIGKILL`): the sentinels promote the replica and the callers, each
//! call wrapped in a retry policy (neo-resilience), carry on. Prints and asserts the time
//! from the kill to the first write served by the new master (goal < 5 s) and the calls that
//! still failed after their retry budget (goal 0).

use neo_commons::coord::{CoordConfig, Coordinator, Error, RedisConfig};
use neo_commons::resilience::{Jitter, Policy, ResilienceConfig, RetryConfig, RetryDecision};
use neo_testkit::RedisSentinelGroup;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Lock takers and rate-limit callers running at once.
const LOCKERS: usize = 4;
const LIMITED: usize = 2;
/// Pause between a caller's operations.
const PACE: Duration = Duration::from_millis(10);

/// What the load saw.
#[derive(Default)]
struct Seen {
    /// When each successful operation finished (locks and rate-limit checks write).
    successes: Vec<Instant>,
    /// Operations that still failed after the retry budget, with the error.
    errors: Vec<String>,
    /// Attempts that failed and were retried.
    retried: u64,
}

fn retry_policy() -> Policy {
    Policy::new(&ResilienceConfig {
        name: "coord".into(),
        timeout: Some(Duration::from_secs(2)),
        // The retry budget: up to 10 s of attempts, 50 ms apart at first, at most 500 ms.
        retry: Some(RetryConfig {
            max_attempts: 100,
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            multiplier: 2.0,
            jitter: Jitter::Full,
            max_elapsed: Some(Duration::from_secs(10)),
        }),
        breaker: None,
        rate_limit: None,
        bulkhead: None,
    })
    .unwrap()
}

/// Retries what failed for want of Redis; a refusal (rate limited, busy) is an answer.
fn retry_unavailable(error: &Error) -> RetryDecision {
    match error {
        Error::Unavailable(_) => RetryDecision::Retry,
        _ => RetryDecision::Stop,
    }
}

async fn caller(
    coord: Coordinator,
    id: usize,
    seen: Arc<Mutex<Seen>>,
    mut stop: watch::Receiver<bool>,
) {
    let policy = retry_policy();
    let limiter = coord.rate_limiter("api", 10_000, 1_000).unwrap();
    let name = format!("job-{id}");
    let mut n = 0_u64;
    while !*stop.borrow() {
        n += 1;
        let attempts = Arc::new(Mutex::new(0_u64));
        let outcome = policy
            .call_with(retry_unavailable, || {
                *attempts.lock().unwrap() += 1;
                let (coord, limiter, name) = (&coord, &limiter, &name);
                async move {
                    if id < LOCKERS {
                        let guard = coord.lock(name).await?;
                        guard.release().await
                    } else {
                        match limiter.check(&format!("tenant-{}", n % 50)).await {
                            Err(Error::RateLimited { .. }) => Ok(()),
                            other => other,
                        }
                    }
                }
            })
            .await;
        {
            let mut seen = seen.lock().unwrap();
            seen.retried += *attempts.lock().unwrap() - 1;
            match outcome {
                Ok(()) => seen.successes.push(Instant::now()),
                Err(e) => seen.errors.push(e.to_string()),
            }
        }
        tokio::select! {
            _ = stop.changed() => {}
            () = tokio::time::sleep(PACE) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_sentinel_master_under_load_costs_seconds_and_no_caller_errors() {
    let mut group = tokio::task::spawn_blocking(RedisSentinelGroup::start)
        .await
        .unwrap()
        .unwrap();
    let redis = RedisConfig::sentinel(group.sentinels(), group.master_name())
        .timeout(Duration::from_millis(500));
    let coord = Coordinator::connect_redis(
        &redis,
        CoordConfig {
            key_prefix: "scenario:".into(),
            lock_ttl: Duration::from_secs(2),
            // A release lost in the failover leaves its lock taken until the TTL ends.
            lock_wait: Duration::from_secs(3),
            ..CoordConfig::default()
        },
    )
    .unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (stop, stopped) = watch::channel(false);
    let callers: Vec<_> = (0..LOCKERS + LIMITED)
        .map(|id| {
            tokio::spawn(caller(
                coord.clone(),
                id,
                Arc::clone(&seen),
                stopped.clone(),
            ))
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = seen.lock().unwrap().successes.len();
    let (old, group_back) = tokio::task::spawn_blocking(move || (group.kill_master(), group))
        .await
        .unwrap();
    group = group_back;
    let old = old.unwrap();
    let killed_at = Instant::now();
    // Run on until writes have resumed for a while (or the goal is long missed).
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let resumed = seen
            .lock()
            .unwrap()
            .successes
            .iter()
            .any(|t| *t > killed_at);
        let elapsed = killed_at.elapsed();
        if (resumed && elapsed > Duration::from_secs(6)) || elapsed > Duration::from_secs(15) {
            break;
        }
    }
    stop.send_replace(true);
    for caller in callers {
        caller.await.unwrap();
    }
    let (new, _group) = tokio::task::spawn_blocking(move || (group.master_port(), group))
        .await
        .unwrap();

    let seen = seen.lock().unwrap();
    let resumed_after = seen
        .successes
        .iter()
        .filter(|t| **t > killed_at)
        .map(|t| t.duration_since(killed_at))
        .min();
    let after = seen.successes.iter().filter(|t| **t > killed_at).count();
    println!(
        "sentinel failover under load ({LOCKERS} lockers, {LIMITED} rate-limited callers): \
         master on port {old} killed, new master on port {new:?}; writes resumed after {:?}; \
         {before} operations before the kill, {after} after; {} attempts retried; \
         {} caller errors after the retry budget",
        resumed_after,
        seen.retried,
        seen.errors.len(),
    );
    assert!(before > 0, "the load ran before the kill");
    assert_ne!(new.unwrap(), old, "the sentinels promoted the replica");
    let resumed_after = resumed_after.expect("writes never resumed");
    assert!(
        resumed_after < Duration::from_secs(5),
        "writes resumed after {resumed_after:?}, goal < 5 s"
    );
    assert!(
        seen.errors.is_empty(),
        "callers saw errors after the retry budget: {:?}",
        seen.errors
    );
}
