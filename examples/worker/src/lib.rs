//! A worker-only process: no HTTP API, only background work on PostgreSQL.
//!
//! - A neo-queue [`Worker`] runs jobs of kind [`REPORT_JOB`]: each builds a report and
//!   publishes a `report.ready` domain event to the transactional outbox, in the same
//!   transaction that records the report.
//! - The webhook dispatcher fans outbox events out to the endpoints subscribed to them.
//! - The same worker delivers those webhooks (signed, retried with backoff, dead-lettered).
//!
//! `main.rs` runs it until Ctrl-C; the scenario suite (`tests/`) runs [`WorkerService::run`]
//! against its test servers.

use neo_commons::db::{Db, DbConfig, MigrationSet, sqlx};
use neo_commons::events::{DomainEvent, Outbox, OutboxConfig, WebhookConfig, Webhooks};
use neo_commons::queue::{JobError, Queue, QueueConfig, Worker, WorkerConfig, WorkerReport};
use tokio::sync::watch;

/// Errors of starting or running the worker.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The job kind this worker runs (besides webhook deliveries); its payload is
/// `{"report": "<name>"}`.
pub const REPORT_JOB: &str = "report.build";

/// What the worker is built from.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The database (jobs, outbox, webhooks and reports).
    pub db: DbConfig,
    /// The job queue.
    pub queue: QueueConfig,
    /// The worker: concurrency, batches, shutdown grace.
    pub worker: WorkerConfig,
    /// The outbox.
    pub outbox: OutboxConfig,
    /// Webhook delivery (SSRF policy, timeouts, retries).
    pub webhooks: WebhookConfig,
}

/// The worker's parts, migrated and ready to run. Cheap to clone.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerService {
    /// The database.
    pub db: Db,
    /// The queue jobs are enqueued to.
    pub queue: Queue,
    /// The outbox the jobs' events are written to.
    pub outbox: Outbox,
    /// Webhook endpoints and delivery.
    pub webhooks: Webhooks,
    worker: WorkerConfig,
}

impl WorkerService {
    /// Connects and creates or upgrades every table (the queue's, the outbox's, the
    /// webhooks' and the reports table).
    ///
    /// # Errors
    /// A database that cannot be reached, a failed migration, a bad setting.
    pub async fn compose(config: Config) -> Result<Self, BoxError> {
        let db = Db::connect(&config.db).await?;
        let queue = Queue::new(&db, config.queue)?;
        queue.migrate().await?;
        let outbox = Outbox::new(&db, config.outbox)?;
        outbox.migrate().await?;
        let webhooks = Webhooks::new(&db, queue.clone(), config.webhooks)?;
        webhooks.migrate().await?;
        MigrationSet::new("webhook_worker")?
            .with(1, "reports", "CREATE TABLE reports (name text PRIMARY KEY, built_at timestamptz NOT NULL DEFAULT now())")
            .run(&db)
            .await?;
        let worker = config.worker;
        Ok(WorkerService {
            db,
            queue,
            outbox,
            webhooks,
            worker,
        })
    }

    /// Runs jobs, dispatches events and delivers webhooks until `stop` turns true; then stops
    /// claiming, lets running jobs finish (up to the worker's `shutdown_grace`) and returns
    /// what the worker did.
    ///
    /// # Errors
    /// A database error that prevents listening.
    pub async fn run(&self, stop: watch::Receiver<bool>) -> Result<WorkerReport, BoxError> {
        let stopped = |mut stop: watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        let (db, outbox) = (self.db.clone(), self.outbox.clone());
        let worker =
            Worker::new(self.queue.clone(), self.worker.clone()).handle(REPORT_JOB, move |job| {
                let (db, outbox) = (db.clone(), outbox.clone());
                async move {
                    let name = job.payload["report"]
                        .as_str()
                        .ok_or_else(|| JobError::permanent("no report name"))?;
                    build_report(&db, &outbox, name)
                        .await
                        .map_err(JobError::retry)
                }
            });
        let worker = self.webhooks.handle(worker);
        let (worked, dispatched) = tokio::join!(
            worker.run(stopped(stop.clone())),
            self.webhooks.dispatch(&self.outbox, stopped(stop.clone())),
        );
        dispatched?;
        let report = worked?;
        self.webhooks.shutdown().await;
        Ok(report)
    }
}

/// Records the report and its `report.ready` event in one transaction: the webhook goes out
/// exactly when the report exists.
async fn build_report(db: &Db, outbox: &Outbox, name: &str) -> Result<(), BoxError> {
    let mut uow = db.begin().await?;
    sqlx::query(
        "INSERT INTO reports (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET built_at = now()",
    )
    .bind(name)
    .execute(&mut **uow)
    .await?;
    let event = DomainEvent::new(
        "report.ready",
        "report",
        name,
        &serde_json::json!({ "report": name }),
    )?;
    outbox.publish(&mut *uow, &event).await?;
    uow.commit().await?;
    Ok(())
}
