//! The queue: a `jobs` table per schema and the statements over it. Its operations live in
//! one module each: [`enqueue`] writes jobs, [`claim`] takes them under a lease,
//! [`receipts`] finishes or extends claims (ack, nack, heartbeat, release), and
//! [`maintenance`] rescues expired leases and inspects, requeues and counts jobs.

mod claim;
mod enqueue;
mod maintenance;
mod offboard;
mod receipts;
mod statements;

use crate::{Error, QueueConfig, Result};
use neo_db::{Db, MigrationReport, MigrationSet, Schema, TableName, quote_identifier};
use statements::Statements;
use std::sync::Arc;
use std::time::Duration;

/// A durable job queue in PostgreSQL; cheap to clone.
///
/// # Example
/// ```no_run
/// # async fn demo(db: neo_db::Db) -> neo_queue::Result<()> {
/// use neo_queue::{NewJob, OnDuplicate, Queue, QueueConfig};
/// let queue = Queue::new(&db, QueueConfig::default())?;
/// queue.migrate().await?;
///
/// // Enqueued only if the business write commits:
/// let mut uow = db.begin().await?;
/// // ... the business write on &mut **uow ...
/// queue.enqueue(&mut *uow, NewJob::new("invoice.send", &42)?, OnDuplicate::Skip).await?;
/// uow.commit().await?;
///
/// let jobs = queue.claim("worker-1", 10, None).await?;
/// let receipts: Vec<_> = jobs.iter().map(|j| j.receipt()).collect();
/// queue.ack_many(&receipts).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Queue {
    db: Db,
    config: Arc<QueueConfig>,
    schema: Schema,
    sql: Arc<Statements>,
}

impl Queue {
    /// A queue over `config.schema`'s `jobs` table.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad schema or channel name or inconsistent retry settings.
    pub fn new(db: &Db, config: QueueConfig) -> Result<Self> {
        let schema = Schema::new(&config.schema)?;
        quote_identifier(&config.channel)?;
        if config.default_max_attempts < 1
            || config.retry_multiplier < 1.0
            || config.lease.is_zero()
        {
            return Err(Error::invalid(
                "queue configuration",
                "default_max_attempts >= 1, retry_multiplier >= 1.0 and a positive lease are required",
            ));
        }
        let t = TableName::new("jobs")?.in_schema(&schema);
        let sql = Statements::new(&t);
        Ok(Queue {
            db: db.clone(),
            config: Arc::new(config),
            schema,
            sql: Arc::new(sql),
        })
    }

    /// The queue's own migrations (the jobs table and its indexes).
    ///
    /// # Errors
    /// Never; fallible for symmetry with other crates' sets.
    pub fn migrations() -> Result<MigrationSet> {
        Ok(MigrationSet::new("neo_queue")?
            .with(1, "jobs", include_str!("../../migrations/1_jobs.sql"))
            .with(
                2,
                "lease index for rescue only",
                include_str!("../../migrations/2_lease_index_for_rescue_only.sql"),
            )
            .with(
                3,
                "claim by tenant index",
                include_str!("../../migrations/3_claim_by_tenant_index.sql"),
            )
            .with(
                5,
                "jobs carry trace context",
                include_str!("../../migrations/5_jobs_carry_trace_context.sql"),
            ))
    }

    /// Creates or upgrades the jobs table in `config.schema`.
    ///
    /// # Errors
    /// A migration error.
    pub async fn migrate(&self) -> Result<MigrationReport> {
        Ok(Self::migrations()?
            .run_in_schema(&self.db, &self.schema)
            .await?)
    }

    /// The configuration.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// The pool the queue uses.
    pub fn db(&self) -> &Db {
        &self.db
    }

    fn lease_ms(&self) -> f64 {
        self.config.lease.as_secs_f64() * 1e3
    }
}

/// Used by the worker to wait on notifications.
pub(crate) fn channel(queue: &Queue) -> &str {
    &queue.config.channel
}

/// How long a lease lasts.
pub(crate) fn lease(queue: &Queue) -> Duration {
    queue.config.lease
}
