//! The queue: a `jobs` table per schema and the statements over it. Its operations live in
//! one module each: [`enqueue`] writes jobs, [`claim`] takes them under a lease,
//! [`receipts`] finishes or extends claims (ack, nack, heartbeat, release), and
//! [`maintenance`] rescues expired leases and inspects, requeues and counts jobs;
//! [`tenant_mode`] keeps tenants' jobs apart (schema per tenant or row-level security).

mod cancel;
mod claim;
mod console_reads;
mod enqueue;
mod limit;
mod maintenance;
mod offboard;
mod pause;
mod periodic;
mod progress;
mod rate;
mod receipts;
mod reschedule;
mod retention;
mod statements;
mod tenant_mode;
mod workflow;

use crate::{Error, QueueConfig, Result};
pub(crate) use cancel::CANCEL_NOTICE;
pub use cancel::{CancelFilter, Cancelled};
pub use console_reads::CappedDepth;
use neo_core::TenantId;
use neo_db::{
    Db, MigrationReport, MigrationSet, RlsSetting, Schema, TenantIsolation, quote_identifier,
};
pub use pause::PauseStatus;
pub(crate) use periodic::Advances;
pub use periodic::PeriodicState;
pub use progress::JobOutput;
pub use retention::Pruned;
pub(crate) use retention::prune_due;
pub(crate) use statements::TENANT_NOTICE;
use std::sync::Arc;
use std::time::Duration;
use tenant_mode::Mode;

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
///
/// # Tenants
/// [`Queue::new`] keeps every job in one table; a job's tenant
/// ([`NewJob::tenant`](crate::NewJob::tenant)) is what fair claims take turns by, nothing
/// more. [`Queue::tenant_isolated`] keeps tenants apart (a `jobs` table per tenant schema,
/// or one shared table under row-level security): every tenant-scoped call (enqueue, get,
/// dead letters, requeue, depth, export and purge) acts for the tenant of
/// [`for_tenant`](Self::for_tenant) or, without one, the task's (`neo_tenant::scope`), and
/// fails with [`Error::Tenant`] before any query when there is neither.
#[derive(Debug, Clone)]
pub struct Queue {
    /// Tenant-scoped calls (the application role under row-level security).
    db: Db,
    /// Work across tenants: claims, receipts, rescue (a `BYPASSRLS` role under row-level
    /// security; the same `Db` otherwise).
    system: Db,
    config: Arc<QueueConfig>,
    mode: Arc<Mode>,
    /// The tenant every tenant-scoped call acts for ([`for_tenant`](Self::for_tenant)).
    tenant: Option<TenantId>,
    /// Which text the claims are prepared under: planned again after a claim longer than
    /// [`replan_claims_after`](crate::QueueConfig::replan_claims_after).
    claim_plans: Arc<neo_db::Replanning>,
}

impl Queue {
    /// A queue over `config.schema`'s `jobs` table.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad schema or channel name or inconsistent retry settings.
    pub fn new(db: &Db, config: QueueConfig) -> Result<Self> {
        let schema = Schema::new(&config.schema)?;
        Self::check(&config)?;
        let claim_plans = Arc::new(neo_db::Replanning::new(
            "neo_queue",
            config.replan_claims_after,
        ));
        let config = Arc::new(config);
        let mode = Mode::fixed(schema, tenant_mode::statements(&config, false))?;
        Ok(Queue {
            db: db.clone(),
            system: db.clone(),
            config,
            mode: Arc::new(mode),
            tenant: None,
            claim_plans,
        })
    }

    /// One queue for every tenant, isolated by `isolation`:
    ///
    /// - **Schema per tenant**: a `jobs` table in each tenant's schema (named by the
    ///   resolver; `config.schema` is not used). Every call, claims included, acts on the
    ///   acting tenant's table, so a worker serves one tenant:
    ///   `Worker::new(queue.for_tenant(tenant), ..)`. [`migrate`](Self::migrate) creates the
    ///   acting tenant's table.
    /// - **Row-level security**: one shared `jobs` table in `config.schema` with a
    ///   `tenant_id` generated from the job's tenant and a policy on the transaction-local
    ///   setting ([`rls_migrations`](Self::rls_migrations)). Tenant-scoped calls run on `db`,
    ///   an application role that is neither the table's owner nor `BYPASSRLS`, in a
    ///   transaction whose `BEGIN` sets the tenant in the same round trip. Claims, receipts
    ///   and the rescue of expired leases span tenants by design and run on `system`, a role
    ///   that is `BYPASSRLS` but neither owner nor superuser ([`neo_db::tenancy`]). Run
    ///   [`migrate`](Self::migrate) on a queue whose `Db`s are the owner's.
    ///
    /// Every job of a tenant-isolated queue has a tenant id as its tenant (a job enqueued
    /// without one gets the acting tenant's), and a worker runs each job's handler inside
    /// `neo_tenant::scope` of it, so the stores the handler calls act for that tenant.
    ///
    /// # Errors
    /// [`Error::Invalid`] as for [`new`](Self::new), or an isolation the queue does not know.
    pub fn tenant_isolated(
        db: &Db,
        system: &Db,
        config: QueueConfig,
        isolation: TenantIsolation,
    ) -> Result<Self> {
        let schema = Schema::new(&config.schema)?;
        Self::check(&config)?;
        let claim_plans = Arc::new(neo_db::Replanning::new(
            "neo_queue",
            config.replan_claims_after,
        ));
        let config = Arc::new(config);
        let statements = tenant_mode::statements(&config, isolation.is_row_level_security());
        let mode = Mode::isolated(schema, isolation, statements)?;
        Ok(Queue {
            db: db.clone(),
            system: system.clone(),
            config,
            mode: Arc::new(mode),
            tenant: None,
            claim_plans,
        })
    }

    /// This queue acting for `tenant` on every tenant-scoped call, whatever the task's
    /// tenant (a queue with a fixed schema ignores it). Cheap: shares everything with `self`.
    #[must_use]
    pub fn for_tenant(&self, tenant: TenantId) -> Self {
        Queue {
            tenant: Some(tenant),
            ..self.clone()
        }
    }

    /// The tenant bound by [`for_tenant`](Self::for_tenant), if any.
    pub fn tenant(&self) -> Option<TenantId> {
        self.tenant
    }

    fn check(config: &QueueConfig) -> Result<()> {
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
        if let Some((tenant, weight)) = config
            .tenant_weights
            .iter()
            .find(|(_, w)| **w < 1 || i32::try_from(**w).is_err())
        {
            return Err(Error::invalid(
                "tenant weight",
                format!("{tenant:?} has weight {weight}: use 1 to {}", i32::MAX),
            ));
        }
        if config.max_running == Some(0) {
            return Err(Error::invalid(
                "max_running",
                "0 would never run a job: use at least 1, or none for no limit",
            ));
        }
        if let Some(rate) = &config.rate_limit {
            if rate.allowed == 0 || i32::try_from(rate.allowed).is_err() {
                return Err(Error::invalid(
                    "rate_limit.allowed",
                    format!(
                        "{} jobs per period: use 1 to {}, or no rate limit",
                        rate.allowed,
                        i32::MAX
                    ),
                ));
            }
            if rate.period < Duration::from_millis(1) {
                return Err(Error::invalid(
                    "rate_limit.period",
                    format!("{:?}: use at least 1 ms", rate.period),
                ));
            }
        }
        Ok(())
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
            )
            .with(
                10,
                "queue pause",
                include_str!("../../migrations/10_queue_pause.sql"),
            )
            .with(
                11,
                "cancelled jobs",
                include_str!("../../migrations/11_cancelled_jobs.sql"),
            )
            .with(
                12,
                "job outputs",
                include_str!("../../migrations/12_job_outputs.sql"),
            )
            .with(
                14,
                "periodic jobs",
                include_str!("../../migrations/14_periodic_jobs.sql"),
            )
            .with(
                15,
                "job dependencies",
                include_str!("../../migrations/15_job_dependencies.sql"),
            )
            .with(
                16,
                "rate limit starts",
                include_str!("../../migrations/16_rate_limit_starts.sql"),
            )
            .with(
                30,
                "vacuum jobs by claimed count",
                include_str!("../../migrations/30_vacuum_jobs_by_claimed_count.sql"),
            )
            .with(
                31,
                "no index by kind",
                include_str!("../../migrations/31_no_index_by_kind.sql"),
            )
            .with(
                40,
                "dead letters by tenant key",
                include_str!("../../migrations/40_dead_letters_by_tenant_key.sql"),
            )
            .with(
                41,
                "claim index of the jobs without a tenant",
                include_str!("../../migrations/41_claim_untenanted_index.sql"),
            ))
    }

    /// The migrations of the shared table under row-level security on `setting`:
    /// [`migrations`](Self::migrations) and three more: 4 makes every job's tenant
    /// required, adds `tenant_id uuid` generated from it, makes unique keys unique per
    /// tenant, and enables and forces the policy; 13 does the same for `job_outputs`; 17
    /// forces row-level security without a policy on `rate_limit_starts`, so that only the
    /// `BYPASSRLS` system role that claims sees the rate limit's counts.
    ///
    /// # Errors
    /// Never; fallible for symmetry with [`migrations`](Self::migrations).
    pub fn rls_migrations(setting: &RlsSetting) -> Result<MigrationSet> {
        Ok(Self::migrations()?
            .with_sql(
                4,
                "tenant row-level security",
                tenant_mode::rls_migration(setting)?,
            )
            .with_sql(
                13,
                "job outputs row-level security",
                progress::rls_migration(setting)?,
            )
            .with(
                17,
                "rate limit starts row-level security",
                rate::RLS_MIGRATION,
            ))
    }

    /// Creates or upgrades the jobs table: in `config.schema`; in the acting tenant's
    /// schema (schema per tenant); the shared table with its policy (row-level security).
    ///
    /// # Errors
    /// A migration error; [`Error::Tenant`] in schema-per-tenant mode without a tenant.
    pub async fn migrate(&self) -> Result<MigrationReport> {
        let (set, schema) = self.migrations_here()?;
        Ok(set.run_in_schema(&self.db, &schema).await?)
    }

    /// The configuration.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// The pool of the queue's tenant-scoped calls.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The pool of the queue's work across tenants (claims, receipts, rescue): the one given
    /// to [`tenant_isolated`](Self::tenant_isolated), else [`db`](Self::db).
    pub fn system_db(&self) -> &Db {
        &self.system
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
