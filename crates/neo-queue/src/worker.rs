//! The worker pool: claims jobs, runs a handler per kind with bounded concurrency, and
//! acknowledges in batches.

use crate::queue::{Queue, channel, lease};
use crate::{Failure, Job, Receipt};
use crate::{Result, WorkerConfig};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

/// Why a job failed, as its handler reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobError {
    /// Try again later (with backoff), until the attempts run out.
    Retry(String),
    /// Try again after this long (a `Retry-After`, the handler's own schedule), until the
    /// attempts run out.
    RetryIn(String, Duration),
    /// Never retry (bad payload, impossible request): straight to the dead letters.
    Permanent(String),
    /// Not a failure: run the job again after this long without spending the attempt (a rate
    /// limit, an open circuit breaker).
    Snooze(Duration),
}

impl JobError {
    /// A retryable failure from any displayable error.
    pub fn retry(error: impl std::fmt::Display) -> Self {
        JobError::Retry(error.to_string())
    }

    /// A permanent failure from any displayable error.
    pub fn permanent(error: impl std::fmt::Display) -> Self {
        JobError::Permanent(error.to_string())
    }

    /// A retryable failure, retried after `after` instead of the queue's backoff.
    pub fn retry_in(error: impl std::fmt::Display, after: Duration) -> Self {
        JobError::RetryIn(error.to_string(), after)
    }

    /// What the queue records for this outcome of the claim `receipt`.
    fn into_failure(self, receipt: Receipt) -> Failure {
        match self {
            JobError::Retry(error) => Failure::retry(receipt, error),
            JobError::RetryIn(error, after) => Failure::retry(receipt, error).retry_in(after),
            JobError::Permanent(error) => Failure::permanent(receipt, error),
            JobError::Snooze(after) => Failure::snooze(receipt, after),
        }
    }
}

/// A finished job: its claim, its outcome and when it was claimed.
type Outcome = (Receipt, Result<(), JobError>, Instant);

type Handler =
    Arc<dyn Fn(Job) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>> + Send + Sync>;

/// What a [`Worker::run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Jobs whose handler succeeded and whose ack was accepted.
    pub succeeded: u64,
    /// Jobs reported failed (retried later or dead-lettered) or snoozed.
    pub failed: u64,
    /// Acks or nacks refused because the lease was lost.
    pub lease_lost: u64,
    /// Jobs handed back unfinished at shutdown.
    pub released: u64,
}

/// Runs jobs from a [`Queue`] with one handler per job kind.
///
/// # Example
/// ```no_run
/// # async fn demo(queue: neo_queue::Queue) -> neo_queue::Result<()> {
/// use neo_queue::{JobError, Worker, WorkerConfig};
/// let worker = Worker::new(queue, WorkerConfig::default()).handle("email.send", |job| async move {
///     let to: String = serde_json::from_value(job.payload).map_err(JobError::permanent)?;
///     // send the email to `to` ...
///     # let _ = to;
///     Ok(())
/// });
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// # drop(stop);
/// let report = worker.run(async { let _ = stopped.await; }).await?;
/// # let _ = report; Ok(()) }
/// ```
pub struct Worker {
    queue: Queue,
    config: WorkerConfig,
    handlers: HashMap<String, Handler>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

static WORKERS: AtomicU64 = AtomicU64::new(0);

/// Aborts its task when dropped, so a worker whose `run` future is dropped (its process part
/// going away) stops heartbeating and stops its handlers: its leases then expire as they must.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Worker {
    /// A worker with no handlers yet.
    pub fn new(queue: Queue, mut config: WorkerConfig) -> Self {
        config.concurrency = config.concurrency.max(1);
        config.claim_batch = config.claim_batch.max(1);
        config.complete_batch = config.complete_batch.max(1);
        config.name = format!(
            "{}:{}:{}",
            config.name,
            std::process::id(),
            WORKERS.fetch_add(1, Ordering::Relaxed)
        );
        Worker {
            queue,
            config,
            handlers: HashMap::new(),
        }
    }

    /// Runs `handler` for jobs of `kind`.
    #[must_use]
    pub fn handle<F, Fut>(mut self, kind: &str, handler: F) -> Self
    where
        F: Fn(Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        self.handlers
            .insert(kind.to_owned(), Arc::new(move |job| Box::pin(handler(job))));
        self
    }

    /// How many jobs this worker runs at once.
    pub fn concurrency(&self) -> usize {
        self.config.concurrency
    }

    /// The name this worker claims under.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Claims and runs jobs until `shutdown` completes, then stops claiming, waits up to
    /// `shutdown_grace` for running jobs and hands back the rest.
    ///
    /// # Errors
    /// A database error that prevents listening; errors of single claims or acks are logged
    /// and retried on the next round.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<WorkerReport> {
        let Worker {
            queue,
            config,
            handlers,
        } = self;
        let kinds: Vec<String> = handlers.keys().cloned().collect();
        let handlers = Arc::new(handlers);
        // None behind a transaction pooler without a listen_url: poll only (neo_db::Pooler).
        let mut listener = queue.db().listener().await?;
        if let Some(listener) = listener.as_mut() {
            listener.listen(channel(&queue)).await?;
        }

        let slots = Arc::new(Semaphore::new(config.concurrency));
        let running: Arc<Mutex<HashSet<Receipt>>> = Arc::default();
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Outcome>();
        let mut completer = AbortOnDrop(tokio::spawn(complete(
            queue.clone(),
            config.clone(),
            Arc::clone(&running),
            done_rx,
        )));
        let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat(queue.clone(), Arc::clone(&running))));
        let mut tasks = tokio::task::JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut next_rescue = Instant::now();

        loop {
            if Instant::now() >= next_rescue {
                if let Err(error) = queue.rescue_expired().await {
                    tracing::warn!(%error, "rescuing expired leases failed");
                }
                next_rescue = Instant::now() + config.poll_interval;
            }
            let free = slots.available_permits().min(config.claim_batch);
            let mut claimed = 0;
            if free > 0 {
                let only = config.only_known_kinds.then_some(kinds.as_slice());
                match queue.claim(&config.name, free, only).await {
                    Ok(jobs) => {
                        claimed = jobs.len();
                        for job in jobs {
                            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                                break;
                            };
                            let receipt = job.receipt();
                            let claimed_at = Instant::now();
                            lock(&running).insert(receipt);
                            let handler = handlers.get(&job.kind).cloned();
                            let done = done_tx.clone();
                            tasks.spawn(async move {
                                let _slot = slot;
                                let outcome = match handler {
                                    Some(handler) => {
                                        let kind = job.kind.clone();
                                        // Its own task, so a panic is caught; aborted
                                        // with this one.
                                        let mut handle = AbortOnDrop(tokio::spawn(handler(job)));
                                        match (&mut handle.0).await {
                                            Ok(outcome) => outcome,
                                            Err(panic) => Err(JobError::Retry(format!(
                                                "the {kind} handler panicked: {panic}"
                                            ))),
                                        }
                                    }
                                    None => Err(JobError::Permanent(format!(
                                        "no handler for job kind {:?}",
                                        job.kind
                                    ))),
                                };
                                let _ = done.send((receipt, outcome, claimed_at));
                            });
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "claiming jobs failed; retrying");
                        tokio::time::sleep(config.poll_interval.min(Duration::from_secs(1))).await;
                    }
                }
            }
            while tasks.try_join_next().is_some() {}
            if claimed == free && free > 0 {
                // A full claim: there may be more right away, unless we are asked to stop.
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::task::yield_now() => continue,
                }
            }
            tokio::select! {
                () = &mut shutdown => break,
                notified = notification(listener.as_mut()) => {
                    if notified.is_err() {
                        // The listener reconnects on its next call; do not spin meanwhile.
                        tokio::time::sleep(config.poll_interval.min(Duration::from_secs(1))).await;
                    }
                }
                () = tokio::time::sleep(config.poll_interval) => {}
                _ = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }

        // Shutdown: no new claims; let running jobs finish within the grace period.
        let grace = tokio::time::timeout(config.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if grace.is_err() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        drop(done_tx);
        let mut report = (&mut completer.0).await.unwrap_or_default();
        let unfinished: Vec<Receipt> = lock(&running).drain().collect();
        if !unfinished.is_empty() {
            match queue.release(&unfinished).await {
                Ok(refused) => report.released = (unfinished.len() - refused.len()) as u64,
                Err(error) => {
                    tracing::warn!(%error, "handing back unfinished jobs failed; their leases will expire");
                }
            }
        }
        Ok(report)
    }
}

/// Writes outcomes in batches: one ack and one nack statement per batch.
async fn complete(
    queue: Queue,
    config: WorkerConfig,
    running: Arc<Mutex<HashSet<Receipt>>>,
    mut done: mpsc::UnboundedReceiver<Outcome>,
) -> WorkerReport {
    let mut report = WorkerReport::default();
    while let Some(first) = done.recv().await {
        let mut batch = vec![first];
        let deadline = Instant::now() + config.complete_linger;
        while batch.len() < config.complete_batch {
            match tokio::time::timeout_at(deadline, done.recv()).await {
                Ok(Some(item)) => batch.push(item),
                _ => break,
            }
        }
        let mut acks = Vec::new();
        let mut failures = Vec::new();
        let mut claimed = Vec::with_capacity(batch.len());
        for (receipt, outcome, claimed_at) in batch {
            claimed.push(claimed_at);
            match outcome {
                Ok(()) => acks.push(receipt),
                Err(error) => failures.push(error.into_failure(receipt)),
            }
        }
        // Keep trying for about half a lease: past that, the claims are lost anyway. Each
        // part is retried on its own, and a retried ack cannot ack twice (fencing).
        let give_up = Instant::now() + lease(&queue) / 2;
        let (mut acked, mut nacked) = (acks.is_empty(), failures.is_empty());
        for attempt in 0_u32.. {
            if !acked {
                let written = queue.ack_many(&acks).await;
                let (ok, lost) = (&mut report.succeeded, &mut report.lease_lost);
                acked = tally(written, acks.len(), ok, lost, "acks", attempt);
            }
            if !nacked {
                let written = queue.nack_many(&failures).await;
                let (ok, lost) = (&mut report.failed, &mut report.lease_lost);
                nacked = tally(written, failures.len(), ok, lost, "failures", attempt);
            }
            if (acked && nacked) || Instant::now() >= give_up {
                let latency = metrics::histogram!(crate::metric_names::CLAIM_TO_COMPLETE_SECONDS);
                for at in &claimed {
                    latency.record(at.elapsed().as_secs_f64());
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50 << attempt.min(4))).await;
        }
        let mut running = lock(&running);
        for receipt in acks.iter().chain(failures.iter().map(|f| &f.receipt)) {
            running.remove(receipt);
        }
    }
    report
}

/// Counts a batch write of `sent` outcomes into `ok` and `lease_lost` (the refused ones);
/// false, after logging, when the write failed and is to be retried.
fn tally(
    written: Result<Vec<Receipt>>,
    sent: usize,
    ok: &mut u64,
    lease_lost: &mut u64,
    what: &str,
    attempt: u32,
) -> bool {
    match written {
        Ok(refused) => {
            *ok += (sent - refused.len()) as u64;
            *lease_lost += refused.len() as u64;
            true
        }
        Err(error) => {
            tracing::warn!(attempt, %error, "writing {what} failed; retrying");
            false
        }
    }
}

/// Extends the leases of running jobs every third of the lease.
async fn heartbeat(queue: Queue, running: Arc<Mutex<HashSet<Receipt>>>) {
    let every = lease(&queue) / 3;
    loop {
        tokio::time::sleep(every).await;
        let receipts: Vec<Receipt> = lock(&running).iter().copied().collect();
        if receipts.is_empty() {
            continue;
        }
        if let Err(error) = queue.heartbeat(&receipts).await {
            tracing::warn!(%error, "heartbeat refused or failed");
        }
    }
}

use neo_core::sync::lock;

/// The next notification, or never without a listener (the poll interval wakes the loop).
async fn notification(
    listener: Option<&mut sqlx::postgres::PgListener>,
) -> Result<sqlx::postgres::PgNotification, sqlx::Error> {
    match listener {
        Some(listener) => listener.recv().await,
        None => std::future::pending().await,
    }
}
