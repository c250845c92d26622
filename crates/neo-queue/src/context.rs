//! What a running job's handler can reach besides its [`Job`](crate::Job): its
//! [`JobContext`], set by the worker for the handler's task. Through it the handler sees
//! whether its job was cancelled ([`Queue::cancel`](crate::Queue::cancel)) or its claim lost.

use crate::{Queue, Receipt};
use neo_core::JobId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

tokio::task_local! {
    static CURRENT: JobContext;
}

/// The running job's context, inside a handler run by a [`Worker`](crate::Worker).
///
/// # Example
/// ```no_run
/// use neo_queue::{JobContext, JobError, Worker, WorkerConfig};
/// # fn demo(queue: neo_queue::Queue) {
/// let worker = Worker::new(queue, WorkerConfig::default()).handle("export", |_job| async move {
///     let context = JobContext::current().expect("run by a worker");
///     for _chunk in 0..100 {
///         if context.is_cancelled() {
///             // Cancelled (or the claim was lost): whatever we return is refused anyway.
///             return Err(JobError::permanent("cancelled"));
///         }
///         // ... export one chunk ...
///     }
///     Ok(())
/// });
/// # let _ = worker; }
/// ```
#[derive(Debug, Clone)]
pub struct JobContext {
    queue: Queue,
    receipt: Receipt,
    cancelled: watch::Receiver<bool>,
}

impl JobContext {
    /// The context of the job whose handler is running on this task; `None` outside a
    /// handler run by a worker.
    pub fn current() -> Option<JobContext> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// The claim the handler runs under.
    pub fn receipt(&self) -> Receipt {
        self.receipt
    }

    /// The queue the job was claimed from.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Whether the job was cancelled or its claim lost (a heartbeat was refused): its ack or
    /// nack will be refused, so the handler may as well stop.
    pub fn is_cancelled(&self) -> bool {
        *self.cancelled.borrow()
    }

    /// Completes when the job is cancelled or its claim lost (never otherwise): race it with
    /// the handler's work.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> Result<(), neo_queue::JobError> {
    /// # async fn long_work() {}
    /// let context = neo_queue::JobContext::current().expect("run by a worker");
    /// tokio::select! {
    ///     () = long_work() => Ok(()),
    ///     () = context.cancelled() => Err(neo_queue::JobError::permanent("cancelled")),
    /// }
    /// # }
    /// ```
    pub async fn cancelled(&self) {
        let mut cancelled = self.cancelled.clone();
        if cancelled.wait_for(|c| *c).await.is_err() {
            // The worker let go of the job without cancelling it: never.
            std::future::pending::<()>().await;
        }
    }

    /// Records the job's progress (percent, 0 to 100) and/or a small output, readable by id
    /// with [`Queue::job_output`](crate::Queue::job_output) while the job runs and after it
    /// finished; `None` keeps what was recorded before.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> neo_queue::Result<()> {
    /// let context = neo_queue::JobContext::current().expect("run by a worker");
    /// context.record_progress(Some(40.0), None).await?;
    /// let output = serde_json::json!({ "url": "https://example.com/report.csv" });
    /// context.record_progress(Some(100.0), Some(&output)).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::record_progress`](crate::Queue::record_progress): a bad value, the claim
    /// no longer live ([`Error::LeaseLost`](crate::Error::LeaseLost): cancelled or lost), a
    /// database error.
    pub async fn record_progress(
        &self,
        progress: Option<f32>,
        output: Option<&serde_json::Value>,
    ) -> crate::Result<()> {
        self.queue
            .record_progress(self.receipt, progress, output)
            .await
    }

    /// Runs `handler` with this context as the task's.
    pub(crate) fn scope<F: Future>(self, handler: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, handler)
    }
}

/// The cancellation signals of a worker's running jobs, by job id, each with its claim's
/// fencing token.
#[derive(Debug, Default, Clone)]
pub(crate) struct Cancels(Arc<Mutex<HashMap<JobId, Signal>>>);

/// A running claim's fencing token and its cancellation signal.
type Signal = (i64, watch::Sender<bool>);

impl Cancels {
    /// A context for the job of `receipt`, registered until [`finished`](Self::finished).
    pub(crate) fn context(&self, queue: &Queue, receipt: Receipt) -> JobContext {
        let (tx, rx) = watch::channel(false);
        neo_core::sync::lock(&self.0).insert(receipt.id, (receipt.fence, tx));
        JobContext {
            queue: queue.clone(),
            receipt,
            cancelled: rx,
        }
    }

    /// The handler of the claim `receipt` returned: its signal goes, not that of a later
    /// claim of the same job.
    pub(crate) fn finished(&self, receipt: Receipt) {
        let mut running = neo_core::sync::lock(&self.0);
        if running
            .get(&receipt.id)
            .is_some_and(|(fence, _)| *fence == receipt.fence)
        {
            running.remove(&receipt.id);
        }
    }

    /// Fires the tokens of these jobs (those of this worker's running jobs among them).
    pub(crate) fn cancel(&self, ids: impl IntoIterator<Item = JobId>) {
        let running = neo_core::sync::lock(&self.0);
        for id in ids {
            if let Some((_, tx)) = running.get(&id) {
                tx.send_replace(true);
            }
        }
    }
}
