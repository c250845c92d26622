use crate::Failure;
use neo_batch::{AimdConfig, AimdController, BatcherConfig, Error, WriteBatcher};
use neo_core::{ErrorKind, HasErrorKind};
use neo_resilience::{Jitter, RetryConfig};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

type Flushed = Arc<Mutex<Vec<(Instant, Vec<u32>)>>>;

fn batcher(config: BatcherConfig, flushed: &Flushed, fail_first: u32) -> WriteBatcher<u32> {
    let flushed = Arc::clone(flushed);
    let failures = Arc::new(AtomicU32::new(fail_first));
    WriteBatcher::new(config, move |items: Vec<u32>| {
        let flushed = Arc::clone(&flushed);
        let failures = Arc::clone(&failures);
        async move {
            if items.contains(&13) {
                return Err(Failure(ErrorKind::Validation));
            }
            if failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(Failure(ErrorKind::Unavailable));
            }
            flushed.lock().unwrap().push((Instant::now(), items));
            Ok(())
        }
    })
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn flushes_on_size_and_on_linger_from_the_first_item() {
    let flushed = Flushed::default();
    let b = batcher(
        BatcherConfig {
            max_batch: 3,
            linger: Duration::from_millis(50),
            concurrency: 1,
            ..BatcherConfig::default()
        },
        &flushed,
        0,
    );
    let started = Instant::now();
    let results = futures_util::future::join_all((0..4).map(|i| b.submit(i))).await;
    assert!(results.iter().all(Result::is_ok));
    let flushed = flushed.lock().unwrap();
    assert_eq!(flushed.len(), 2);
    assert_eq!(flushed[0].1, vec![0, 1, 2]);
    assert_eq!(
        flushed[0].0 - started,
        Duration::ZERO,
        "a full batch goes at once"
    );
    assert_eq!(flushed[1].1, vec![3]);
    assert_eq!(
        flushed[1].0 - started,
        Duration::from_millis(50),
        "the rest after the linger"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_flush_fails_only_its_items_and_retries_deliver_the_rest() {
    let flushed = Flushed::default();
    let b = batcher(
        BatcherConfig {
            max_batch: 2,
            concurrency: 1,
            ..BatcherConfig::default()
        },
        &flushed,
        0,
    );
    let results = futures_util::future::join_all([12, 13, 14, 15].map(|i| b.submit(i))).await;
    assert!(
        results[0].is_err() && results[1].is_err(),
        "12 and 13 shared a batch"
    );
    assert!(matches!(&results[1], Err(Error::Batch { size: 2, .. })));
    assert_eq!(
        results[1].as_ref().unwrap_err().kind(),
        ErrorKind::Validation
    );
    assert!(results[2].is_ok() && results[3].is_ok());

    // A flush that fails once is retried: every acknowledged item is delivered.
    let flushed = Flushed::default();
    let retry = RetryConfig {
        max_attempts: 3,
        jitter: Jitter::None,
        ..RetryConfig::default()
    };
    let b = batcher(
        BatcherConfig {
            max_batch: 10,
            retry: Some(retry),
            ..BatcherConfig::default()
        },
        &flushed,
        1,
    );
    let results = futures_util::future::join_all((0..10).map(|i| b.submit(i))).await;
    assert!(results.iter().all(Result::is_ok));
    let delivered: Vec<u32> = flushed
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, v)| v.clone())
        .collect();
    assert_eq!(delivered, (0..10).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_what_is_queued_and_refuses_more() {
    let flushed = Flushed::default();
    let b = batcher(
        BatcherConfig {
            max_batch: 100,
            linger: Duration::from_secs(3600),
            ..BatcherConfig::default()
        },
        &flushed,
        0,
    );
    let pending: Vec<_> = (0..5)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move { b.submit(i).await })
        })
        .collect();
    tokio::task::yield_now().await;
    b.shutdown().await;
    for p in pending {
        p.await.unwrap().unwrap();
    }
    assert_eq!(flushed.lock().unwrap()[0].1.len(), 5);
    assert!(matches!(b.submit(99).await, Err(Error::Shutdown)));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_makes_submit_wait() {
    let flushed = Flushed::default();
    let b = batcher(
        BatcherConfig {
            max_batch: 1,
            queue_capacity: 1,
            concurrency: 1,
            ..BatcherConfig::default()
        },
        &flushed,
        0,
    );
    let results = futures_util::future::join_all((20..40).map(|i| b.submit(i))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(flushed.lock().unwrap().len(), 20);
}

#[tokio::test]
async fn invalid_settings_are_refused() {
    let flushed = Flushed::default();
    for bad in [
        BatcherConfig {
            max_batch: 0,
            ..BatcherConfig::default()
        },
        BatcherConfig {
            concurrency: 0,
            ..BatcherConfig::default()
        },
        BatcherConfig {
            queue_capacity: 0,
            ..BatcherConfig::default()
        },
        BatcherConfig {
            adaptive: Some(AimdConfig {
                min: 0,
                ..AimdConfig::default()
            }),
            ..BatcherConfig::default()
        },
    ] {
        let flushed = Arc::clone(&flushed);
        let err = WriteBatcher::new(bad, move |items: Vec<u32>| {
            flushed.lock().unwrap().push((Instant::now(), items));
            async { Ok::<(), Failure>(()) }
        })
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration);
    }
}

#[test]
fn aimd_grows_while_fast_and_shrinks_when_slow_or_failing_within_bounds() {
    let aimd = AimdController::new(AimdConfig {
        min: 10,
        max: 200,
        initial: 100,
        target_latency: Duration::from_millis(10),
        increase: 40,
        decrease: 0.5,
    })
    .unwrap();
    assert_eq!(aimd.record(Duration::from_millis(1), true), 140);
    assert_eq!(aimd.record(Duration::from_millis(1), true), 180);
    assert_eq!(
        aimd.record(Duration::from_millis(1), true),
        200,
        "capped at max"
    );
    assert_eq!(
        aimd.record(Duration::from_millis(50), true),
        100,
        "slow halves"
    );
    assert_eq!(
        aimd.record(Duration::from_millis(1), false),
        50,
        "failure halves"
    );
    for _ in 0..10 {
        aimd.record(Duration::from_secs(1), false);
    }
    assert_eq!(aimd.current(), 10, "floored at min");
    assert!(
        AimdController::new(AimdConfig {
            decrease: 1.0,
            ..AimdConfig::default()
        })
        .is_err()
    );
}

#[cfg(feature = "env")]
#[test]
#[allow(clippy::result_large_err, reason = "figment's Jail API")]
fn the_batcher_config_loads_from_neo_batch_writer_variables() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("NEO_BATCH_WRITER_MAX_BATCH", "250");
        jail.set_env("NEO_BATCH_WRITER_LINGER", "10ms");
        jail.set_env("NEO_BATCH_WRITER_RETRY__MAX_ATTEMPTS", "4");
        let config: BatcherConfig =
            neo_batch::config_from_env(neo_batch::env_prefix::WRITER).unwrap();
        assert_eq!(
            (config.max_batch, config.linger),
            (250, Duration::from_millis(10))
        );
        assert_eq!(config.retry.unwrap().max_attempts, 4);
        assert_eq!(
            config.queue_capacity,
            BatcherConfig::default().queue_capacity
        );
        jail.set_env("NEO_BATCH_WRITER_MAX_BATCH", "lots");
        let err =
            neo_batch::config_from_env::<BatcherConfig>(neo_batch::env_prefix::WRITER).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration);
        Ok(())
    });
}

#[tokio::test]
async fn each_item_gets_its_own_result_from_a_shared_flush() {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&batches);
    let b = WriteBatcher::with_results(
        BatcherConfig {
            max_batch: 10,
            concurrency: 1,
            linger: Duration::from_millis(20),
            ..BatcherConfig::default()
        },
        move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.clone());
            async move {
                if items.contains(&13) {
                    return Err(Failure(ErrorKind::Unavailable));
                }
                // Odd items are refused on their own; the last item gets no result.
                let mut results: Vec<Result<u32, String>> = items
                    .iter()
                    .map(|&i| {
                        if i % 2 == 0 {
                            Ok(i * 10)
                        } else {
                            Err(format!("{i} is odd"))
                        }
                    })
                    .collect();
                if items.contains(&99) {
                    results.pop();
                }
                Ok(results)
            }
        },
    )
    .unwrap();
    let results = futures_util::future::join_all([2, 3, 4].map(|i| b.submit(i))).await;
    let answers: Vec<Result<u32, String>> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(answers, [Ok(20), Err("3 is odd".into()), Ok(40)]);
    assert_eq!(batches.lock().unwrap().len(), 1, "one flush for the three");

    // A flush that fails fails each item of its batch with the batch error.
    let (a, b13) = tokio::join!(b.submit(6), b.submit(13));
    assert!(matches!(a, Err(Error::Batch { size: 2, .. })));
    assert_eq!(b13.unwrap_err().kind(), ErrorKind::Unavailable);

    // Fewer results than items: the item without one gets an internal error, not a hang.
    let (a, missing) = tokio::join!(b.submit(8), b.submit(99));
    assert_eq!(a.unwrap(), Ok(80));
    assert_eq!(missing.unwrap_err().kind(), ErrorKind::Internal);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_zero_linger_takes_what_is_queued_without_waiting() {
    let flushed = Flushed::default();
    let b = batcher(
        BatcherConfig {
            max_batch: 3,
            linger: Duration::ZERO,
            concurrency: 1,
            ..BatcherConfig::default()
        },
        &flushed,
        0,
    );
    let started = Instant::now();
    // Submitted together: taken as queued, in batches of at most three, without a timer.
    let results = futures_util::future::join_all((0..5).map(|i| b.submit(i))).await;
    assert!(results.iter().all(Result::is_ok));
    {
        let flushed = flushed.lock().unwrap();
        let batches: Vec<Vec<u32>> = flushed.iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(batches, [vec![0, 1, 2], vec![3, 4]]);
        assert!(
            flushed.iter().all(|(at, _)| *at == started),
            "no batch waited"
        );
    }
    // Alone, an item goes at once.
    b.submit(7).await.unwrap();
    assert_eq!(flushed.lock().unwrap().last().unwrap().0, started);
}

#[tokio::test]
async fn items_that_arrive_while_every_slot_is_busy_join_one_batch() {
    let flushed = Flushed::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let sink = Arc::clone(&flushed);
    let held = Arc::clone(&gate);
    let b = WriteBatcher::new(
        BatcherConfig {
            max_batch: 100,
            linger: Duration::ZERO,
            concurrency: 1,
            ..BatcherConfig::default()
        },
        move |items: Vec<u32>| {
            let (sink, held) = (Arc::clone(&sink), Arc::clone(&held));
            async move {
                // The first flush waits for the gate.
                if items.contains(&0) {
                    held.acquire().await.unwrap().forget();
                }
                sink.lock().unwrap().push((Instant::now(), items));
                Ok::<(), Failure>(())
            }
        },
    )
    .unwrap();
    let first = tokio::spawn({
        let b = b.clone();
        async move { b.submit(0).await }
    });
    // Let the first batch start and block in its flush.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let rest: Vec<_> = (1..=5)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move { b.submit(i).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.add_permits(1);
    first.await.unwrap().unwrap();
    for r in rest {
        r.await.unwrap().unwrap();
    }
    let batches: Vec<Vec<u32>> = flushed
        .lock()
        .unwrap()
        .iter()
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(
        batches,
        [vec![0], vec![1, 2, 3, 4, 5]],
        "the five waited as one batch"
    );
}
