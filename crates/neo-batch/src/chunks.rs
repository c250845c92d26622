//! Chunked stream processing with bounded concurrency and memory.

use crate::{BoxError, Error};
use futures_util::{Stream, StreamExt};
use neo_core::HasErrorKind;
use neo_resilience::RetryConfig;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Chunked processing settings.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default)]
pub struct ChunkConfig {
    /// Items per chunk.
    pub chunk_size: usize,
    /// Chunks processed at once; at most this many chunks are in memory.
    pub concurrency: usize,
    /// Retry a failed chunk with backoff.
    pub retry: Option<RetryConfig>,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        ChunkConfig {
            chunk_size: 1_000,
            concurrency: 2,
            retry: None,
        }
    }
}

/// Where a chunked run stands, for progress callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Chunks finished (successfully or not).
    pub chunks: u64,
    /// Items in them.
    pub items: u64,
}

/// Processes `input` in chunks of `chunk_size`, `concurrency` at a time, yielding each
/// chunk's result in input order as soon as it (and those before it) are done. Nothing is
/// accumulated: memory holds at most `concurrency` chunks. `on_progress` is called after each
/// chunk.
///
/// # Errors
/// [`Error::Config`] for zero sizes; per chunk, [`Error::Batch`] after the retries.
///
/// # Example
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use futures_util::StreamExt;
/// use neo_batch::{ChunkConfig, process_chunks};
/// let sums: Vec<u64> = process_chunks(
///     futures_util::stream::iter(1..=10_u64),
///     ChunkConfig { chunk_size: 4, ..ChunkConfig::default() },
///     |chunk: Vec<u64>| async move { Ok::<_, neo_core::Error>(chunk.iter().sum::<u64>()) },
///     |_progress| {},
/// )
/// .unwrap()
/// .map(Result::unwrap)
/// .collect()
/// .await;
/// assert_eq!(sums, vec![10, 26, 19]);
/// # }
/// ```
pub fn process_chunks<S, T, F, Fut, R, E, P>(
    input: S,
    config: ChunkConfig,
    process: F,
    on_progress: P,
) -> Result<impl Stream<Item = Result<R, Error>>, Error>
where
    S: Stream<Item = T>,
    T: Clone,
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = Result<R, E>>,
    E: Into<BoxError> + HasErrorKind,
    P: Fn(Progress),
{
    if config.chunk_size == 0 || config.concurrency == 0 {
        return Err(Error::Config(
            "chunks.chunk_size and concurrency must be at least 1".into(),
        ));
    }
    let policy = crate::error::retry_only(config.retry, "chunks")?;
    let process = Arc::new(process);
    let (chunks, items) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stream = input
        .chunks(config.chunk_size)
        .map(move |chunk: Vec<T>| {
            let (policy, process) = (policy.clone(), Arc::clone(&process));
            async move {
                let size = chunk.len();
                let result = policy.call(|| process(chunk.clone())).await;
                (size, result)
            }
        })
        .buffered(config.concurrency)
        .map(move |(size, result)| {
            let progress = Progress {
                chunks: chunks.fetch_add(1, Ordering::Relaxed) + 1,
                items: items.fetch_add(size as u64, Ordering::Relaxed) + size as u64,
            };
            on_progress(progress);
            result.map_err(|e| Error::from_policy(size, e))
        });
    Ok(stream)
}
