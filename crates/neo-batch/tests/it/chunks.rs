use crate::Failure;
use futures_util::StreamExt;
use neo_batch::{ChunkConfig, Progress, process_chunks};
use neo_core::{ErrorKind, HasErrorKind};
use neo_resilience::{Jitter, RetryConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[tokio::test(start_paused = true)]
async fn chunks_stream_out_in_order_with_bounded_concurrency_and_progress() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&progress);
    let (r, p) = (Arc::clone(&running), Arc::clone(&peak));
    let results: Vec<usize> = process_chunks(
        futures_util::stream::iter(0..1_000_usize),
        ChunkConfig {
            chunk_size: 100,
            concurrency: 3,
            retry: None,
        },
        move |chunk: Vec<usize>| {
            let (r, p) = (Arc::clone(&r), Arc::clone(&p));
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(
                    10 * (chunk[0] % 300) as u64,
                ))
                .await;
                r.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Failure>(chunk[0])
            }
        },
        move |step: Progress| seen.lock().unwrap().push(step),
    )
    .unwrap()
    .map(Result::unwrap)
    .collect()
    .await;
    assert_eq!(
        results,
        (0..10).map(|i| i * 100).collect::<Vec<_>>(),
        "input order"
    );
    assert!(peak.load(Ordering::SeqCst) <= 3);
    let progress = progress.lock().unwrap();
    assert_eq!(progress.len(), 10);
    assert_eq!((progress[9].chunks, progress[9].items), (10, 1_000));
}

#[tokio::test(start_paused = true)]
async fn a_failing_chunk_is_retried_and_only_it_fails_when_retries_run_out() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&attempts);
    let results: Vec<_> = process_chunks(
        futures_util::stream::iter(0..30_u32),
        ChunkConfig {
            chunk_size: 10,
            concurrency: 1,
            retry: Some(RetryConfig {
                max_attempts: 3,
                jitter: Jitter::None,
                ..RetryConfig::default()
            }),
        },
        move |chunk: Vec<u32>| {
            let n = a.fetch_add(1, Ordering::SeqCst);
            async move {
                match chunk[0] {
                    0 if n == 0 => Err(Failure(ErrorKind::Unavailable)), // fails once
                    10 => Err(Failure(ErrorKind::Unavailable)),          // always
                    _ => Ok(chunk.len()),
                }
            }
        },
        |_| {},
    )
    .unwrap()
    .collect()
    .await;
    assert_eq!(results[0].as_ref().unwrap(), &10);
    assert_eq!(
        results[1].as_ref().unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    assert_eq!(results[2].as_ref().unwrap(), &10);
    assert_eq!(attempts.load(Ordering::SeqCst), 2 + 3 + 1);
}

#[test]
fn zero_sizes_are_refused() {
    let made = process_chunks(
        futures_util::stream::iter(0..1_u32),
        ChunkConfig {
            chunk_size: 0,
            ..ChunkConfig::default()
        },
        |c: Vec<u32>| async move { Ok::<_, Failure>(c) },
        |_| {},
    );
    assert!(made.is_err());
}
