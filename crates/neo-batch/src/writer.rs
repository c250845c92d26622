//! The write batcher and the AIMD batch-size controller.

use crate::{BoxError, Error};
use futures_util::future::BoxFuture;
use neo_core::HasErrorKind;
use neo_resilience::RetryConfig;
use serde::Deserialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Additive-increase / multiplicative-decrease batch sizing.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default)]
pub struct AimdConfig {
    /// Smallest batch.
    pub min: usize,
    /// Largest batch.
    pub max: usize,
    /// Where to start.
    pub initial: usize,
    /// Grow while batches finish within this.
    #[serde(with = "humantime_serde")]
    pub target_latency: Duration,
    /// Items added after a fast, successful batch.
    pub increase: usize,
    /// Factor (0–1) applied after a slow or failed batch.
    pub decrease: f64,
}

impl Default for AimdConfig {
    fn default() -> Self {
        AimdConfig {
            min: 10,
            max: 5_000,
            initial: 100,
            target_latency: Duration::from_millis(50),
            increase: 50,
            decrease: 0.5,
        }
    }
}

/// Chooses the next batch size from how the last ones went.
///
/// # Example
/// ```
/// use neo_batch::{AimdConfig, AimdController};
/// use std::time::Duration;
/// let aimd = AimdController::new(AimdConfig { initial: 100, increase: 50, ..AimdConfig::default() }).unwrap();
/// aimd.record(Duration::from_millis(5), true);   // fast: grow
/// assert_eq!(aimd.current(), 150);
/// aimd.record(Duration::from_secs(1), true);     // slow: halve
/// assert_eq!(aimd.current(), 75);
/// ```
#[derive(Debug)]
pub struct AimdController {
    config: AimdConfig,
    current: AtomicUsize,
}

impl AimdController {
    /// A controller at `config.initial`.
    ///
    /// # Errors
    /// [`Error::Config`] unless `1 ≤ min ≤ initial ≤ max` and `0 < decrease < 1`.
    pub fn new(config: AimdConfig) -> Result<Self, Error> {
        if !(config.min >= 1 && config.min <= config.initial && config.initial <= config.max) {
            return Err(Error::Config(
                "aimd needs 1 <= min <= initial <= max".into(),
            ));
        }
        if !(config.decrease > 0.0 && config.decrease < 1.0) {
            return Err(Error::Config("aimd.decrease must be in (0, 1)".into()));
        }
        Ok(AimdController {
            config,
            current: AtomicUsize::new(config.initial),
        })
    }

    /// The batch size to use now.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// Reports a batch's latency and outcome; returns the new size.
    pub fn record(&self, latency: Duration, success: bool) -> usize {
        let c = &self.config;
        let update = |size: usize| {
            Some(if success && latency <= c.target_latency {
                (size + c.increase).min(c.max)
            } else {
                ((size as f64 * c.decrease) as usize).max(c.min)
            })
        };
        let previous = self
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, update)
            .unwrap_or(c.initial);
        update(previous).unwrap_or(previous)
    }
}

/// Write batcher settings.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default)]
pub struct BatcherConfig {
    /// Flush when a batch holds this many items (the ceiling when `adaptive` is set).
    pub max_batch: usize,
    /// Flush this long after the first item of a batch arrived, full or not. Zero: never
    /// wait; a batch takes the items queued when it opens (after one yield, so tasks that are
    /// ready to run can queue theirs) and goes at once, so batches grow with load and an idle
    /// caller waits for nothing.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Items waiting beyond this make `submit` wait (backpressure).
    pub queue_capacity: usize,
    /// Batches being flushed at once. A batch is taken only when one of these flush slots is
    /// free, so items that arrive while every slot is busy join the next batch instead of
    /// waiting in a small one.
    pub concurrency: usize,
    /// Retry a failed flush (the whole batch) with backoff.
    pub retry: Option<RetryConfig>,
    /// Size batches with an AIMD controller instead of always `max_batch`.
    pub adaptive: Option<AimdConfig>,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            max_batch: 1_000,
            linger: Duration::from_millis(5),
            queue_capacity: 10_000,
            concurrency: 2,
            retry: None,
            adaptive: None,
        }
    }
}

type Reply<R> = oneshot::Sender<Result<R, Error>>;
type FlushFn<T, R> = dyn Fn(Vec<T>) -> BoxFuture<'static, Result<Vec<R>, Error>> + Send + Sync;

/// Collects submitted items into batches and flushes each with one call.
///
/// `submit` resolves when the item's batch is flushed (or failed). A batch is flushed when it
/// reaches its size or `linger` after its first item, and on [`shutdown`](Self::shutdown).
/// A failed flush fails only its own items. Cheap to clone.
///
/// [`new`](Self::new) flushes with a function that succeeds or fails for the whole batch;
/// [`with_results`](Self::with_results) with one that answers each item on its own (`R`),
/// e.g. a row's new version or why that row was refused.
///
/// # Example
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use neo_batch::{BatcherConfig, WriteBatcher};
/// let batcher = WriteBatcher::new(BatcherConfig::default(), |rows: Vec<u64>| async move {
///     // e.g. repository.save_batch(&db, &rows, OnConflict::Error)
///     Ok::<_, neo_core::Error>(())
/// })
/// .unwrap();
/// let (a, b) = tokio::join!(batcher.submit(1), batcher.submit(2)); // one flush
/// assert!(a.is_ok() && b.is_ok());
/// batcher.shutdown().await;
/// # }
/// ```
pub struct WriteBatcher<T, R = ()> {
    sender: mpsc::Sender<(T, Reply<R>)>,
    shutdown: watch::Sender<bool>,
    worker: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl<T, R> Clone for WriteBatcher<T, R> {
    fn clone(&self) -> Self {
        WriteBatcher {
            sender: self.sender.clone(),
            shutdown: self.shutdown.clone(),
            worker: Arc::clone(&self.worker),
        }
    }
}

impl<T, R> std::fmt::Debug for WriteBatcher<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBatcher")
            .field(
                "queued",
                &(self.sender.max_capacity() - self.sender.capacity()),
            )
            .finish_non_exhaustive()
    }
}

impl<T: Clone + Send + Sync + 'static> WriteBatcher<T> {
    /// Starts the batcher's task (call inside a tokio runtime).
    ///
    /// # Errors
    /// [`Error::Config`] for zero sizes or invalid retry/AIMD settings.
    pub fn new<F, Fut, E>(config: BatcherConfig, flush: F) -> Result<Self, Error>
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + HasErrorKind + Send + 'static,
    {
        Self::with_results(config, move |items: Vec<T>| {
            let count = items.len();
            let flushed = flush(items);
            async move { flushed.await.map(|()| vec![(); count]) }
        })
    }
}

impl<T: Clone + Send + Sync + 'static, R: Send + 'static> WriteBatcher<T, R> {
    /// Starts a batcher whose flush answers each item on its own: `Ok` holds one result per
    /// item, in the order of the items (a missing one fails its item with [`Error::Batch`]
    /// of kind `Internal`), and each caller's [`submit`](Self::submit) returns its own; `Err`
    /// fails the whole batch as with [`new`](Self::new). Call inside a tokio runtime.
    ///
    /// # Example
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use neo_batch::{BatcherConfig, WriteBatcher};
    /// // Each row gets its own answer: here, refused when odd.
    /// let batcher = WriteBatcher::with_results(BatcherConfig::default(), |rows: Vec<u64>| async move {
    ///     Ok::<_, neo_core::Error>(rows.into_iter().map(|n| if n % 2 == 0 { Ok(n / 2) } else { Err(n) }).collect())
    /// })
    /// .unwrap();
    /// let (a, b) = tokio::join!(batcher.submit(4), batcher.submit(3)); // one flush
    /// assert_eq!((a.unwrap(), b.unwrap()), (Ok(2), Err(3)));
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] for zero sizes or invalid retry/AIMD settings.
    pub fn with_results<F, Fut, E>(config: BatcherConfig, flush: F) -> Result<Self, Error>
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, E>> + Send + 'static,
        E: Into<BoxError> + HasErrorKind + Send + 'static,
    {
        if config.max_batch == 0 || config.queue_capacity == 0 || config.concurrency == 0 {
            return Err(Error::Config(
                "batcher.max_batch, queue_capacity and concurrency must be at least 1".into(),
            ));
        }
        let aimd = config
            .adaptive
            .map(|a| {
                AimdController::new(AimdConfig {
                    max: a.max.min(config.max_batch),
                    ..a
                })
            })
            .transpose()?;
        let policy = crate::error::retry_only(config.retry, "write-batcher")?;
        let retried = config.retry.is_some();
        let flush = Arc::new(flush);
        let flush: Arc<FlushFn<T, R>> = Arc::new(move |items: Vec<T>| {
            let (flush, policy, size) = (Arc::clone(&flush), policy.clone(), items.len());
            Box::pin(async move {
                // Items are copied for each attempt only when a failed flush can be retried.
                let mut items = Some(items);
                policy
                    .call(|| {
                        let attempt = if retried { items.clone() } else { items.take() };
                        flush(attempt.unwrap_or_default())
                    })
                    .await
                    .map_err(|e| Error::from_policy(size, e))
            })
        });
        let (sender, receiver) = mpsc::channel(config.queue_capacity);
        let (shutdown, stop) = watch::channel(false);
        let worker = tokio::runtime::Handle::try_current()
            .map_err(|_| {
                Error::Config("a WriteBatcher must be built inside a tokio runtime".into())
            })?
            .spawn(run(config, flush, aimd.map(Arc::new), receiver, stop));
        Ok(WriteBatcher {
            sender,
            shutdown,
            worker: Arc::new(Mutex::new(Some(worker))),
        })
    }

    /// Queues `item` (waiting while the queue is full) and resolves when its batch is flushed,
    /// with the item's own result (`()` for a batcher made by [`new`](WriteBatcher::new)).
    ///
    /// # Errors
    /// [`Error::Batch`] when its batch failed (after retries), [`Error::Shutdown`] when the
    /// batcher was shut down before taking it.
    pub async fn submit(&self, item: T) -> Result<R, Error> {
        let (reply, done) = oneshot::channel();
        self.sender
            .send((item, reply))
            .await
            .map_err(|_| Error::Shutdown)?;
        done.await.unwrap_or(Err(Error::Shutdown))
    }

    /// Stops taking items, flushes everything already queued, and waits for the flushes.
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let worker = neo_core::sync::lock(&self.worker).take();
        if let Some(worker) = worker {
            let _ = worker.await;
        }
    }
}

async fn run<T: Send + 'static, R: Send + 'static>(
    config: BatcherConfig,
    flush: Arc<FlushFn<T, R>>,
    aimd: Option<Arc<AimdController>>,
    mut receiver: mpsc::Receiver<(T, Reply<R>)>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let mut stopping = false;
    loop {
        // A batch is taken when a flush slot is free: what arrives meanwhile joins it.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let first = if stopping {
            receiver.recv().await
        } else {
            tokio::select! {
                item = receiver.recv() => item,
                _ = stop.changed() => {
                    // No new items; what is queued is still flushed.
                    stopping = true;
                    receiver.close();
                    continue;
                }
            }
        };
        let Some(first) = first else { break };
        let size = aimd.as_ref().map_or(config.max_batch, |a| a.current());
        let opened = Instant::now();
        let mut batch = Vec::with_capacity(size);
        batch.push(first);
        if config.linger.is_zero() {
            // No timer: let the tasks that are ready to run queue their items, then take
            // what is queued.
            tokio::task::yield_now().await;
            while batch.len() < size {
                let Ok(item) = receiver.try_recv() else { break };
                batch.push(item);
            }
        } else {
            // One timer per batch; items already queued are taken without touching it.
            let linger = tokio::time::sleep_until(opened + config.linger);
            tokio::pin!(linger);
            while batch.len() < size {
                match receiver.try_recv() {
                    Ok(item) => {
                        batch.push(item);
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => {}
                }
                tokio::select! {
                    item = receiver.recv() => match item {
                        Some(item) => batch.push(item),
                        None => break,
                    },
                    () = &mut linger => break,
                }
            }
        }
        let (flush, aimd) = (Arc::clone(&flush), aimd.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let (items, replies): (Vec<T>, Vec<Reply<R>>) = batch.into_iter().unzip();
            let count = items.len();
            metrics::histogram!(crate::metric_names::WRITER_LINGER_SECONDS)
                .record(opened.elapsed().as_secs_f64());
            let started = Instant::now();
            let outcome = flush(items).await;
            let took = started.elapsed();
            if let Some(aimd) = &aimd {
                aimd.record(took, outcome.is_ok());
            }
            metrics::counter!(crate::metric_names::WRITER_BATCHES_TOTAL, "outcome" => if outcome.is_ok() { "ok" } else { "error" })
                .increment(1);
            metrics::histogram!(crate::metric_names::WRITER_BATCH_SIZE_ITEMS).record(count as f64);
            metrics::counter!(crate::metric_names::WRITER_ITEMS_TOTAL).increment(count as u64);
            metrics::counter!(crate::metric_names::WRITER_ROUND_TRIPS_SAVED_TOTAL)
                .increment(count.saturating_sub(1) as u64);
            if let Err(error) = &outcome {
                tracing::warn!(items = count, %error, "write batch failed");
            }
            match outcome {
                Ok(results) => {
                    let mut results = results.into_iter();
                    for reply in replies {
                        let answer = results.next().ok_or_else(|| Error::Batch {
                            size: count,
                            source: Arc::new(
                                "the flush returned fewer results than it was given items".into(),
                            ),
                            kind: neo_core::ErrorKind::Internal,
                        });
                        let _ = reply.send(answer);
                    }
                }
                Err(error) => {
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        });
    }
    // Wait for the flushes in flight.
    let _ = slots.acquire_many(config.concurrency as u32).await;
}
