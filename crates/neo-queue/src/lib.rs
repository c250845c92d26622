//! A durable PostgreSQL job queue: no Redis in the delivery path.
//!
//! - [`Queue::enqueue_many`] writes a batch in one statement, inside the caller's transaction
//!   if given one (a job exists only if the business write committed), with scheduled jobs,
//!   priorities and unique keys ([`OnDuplicate`]).
//! - [`Queue::claim`] takes due jobs with `FOR UPDATE SKIP LOCKED` under a lease and a
//!   fencing token; [`Queue::ack_many`] / [`Queue::nack_many`] finish a batch in one
//!   statement each, and refuse claims whose lease was lost.
//! - Claims are fair across tenants within a priority ([`QueueConfig::fair_claims`]): each
//!   tenant's oldest job before any tenant's second, decided in the claim statement, so one
//!   tenant's backlog does not delay another's jobs; [`QueueConfig::max_running_per_tenant`]
//!   caps one tenant's running jobs across all workers.
//! - Failed jobs retry with jittered exponential backoff, then go to the dead letters
//!   ([`Queue::dead_letters`], [`Queue::requeue`]); expired leases are rescued.
//! - [`Worker`] runs handlers per job kind with bounded concurrency, wakes on LISTEN/NOTIFY
//!   with a poll fallback, heartbeats leases, and shuts down gracefully.
//! - Operating a queue: [`Queue::pause`] / [`Queue::resume`] on every worker; cancel pending
//!   or running jobs ([`Queue::cancel`], [`Queue::cancel_unique_keys`],
//!   [`Queue::cancel_matching`]) — a running handler sees it through [`JobContext`] and its
//!   ack is refused; progress and a small output recorded by the handler
//!   ([`JobContext::record_progress`]) and read by id ([`Queue::job_output`]); snooze
//!   ([`JobError::Snooze`]); retention of dead, cancelled and output rows ([`Queue::prune`]);
//!   a global concurrency limit ([`QueueConfig::max_running`]) enforced in the claim.
//! - Workflows: a job may depend on others ([`NewJob::depends_on`]) and waits until they
//!   completed (fan-out / fan-in); when one dies or is cancelled it is cancelled, failed or
//!   still run, per [`OnDependencyFailure`]; a batch with a completion callback
//!   ([`Queue::enqueue_batch`]). Dependency cycles and unknown dependencies are refused at
//!   enqueue; jobs without dependents pay nothing for it.
//! - Periodic jobs ([`PeriodicJobs`]): cron expressions in a time zone or fixed intervals
//!   ([`Schedule`]), enqueued exactly once per tick across every instance that runs the
//!   scheduler (one statement per round for all due periodic jobs), with a catch-up policy
//!   after downtime ([`CatchUp`]), listed and pausable per periodic job
//!   ([`Queue::pause_periodic`]).
//! - Tenants kept apart ([`Queue::tenant_isolated`]): a `jobs` table per tenant schema, or one
//!   shared table under row-level security; tenant-scoped calls act for the tenant of
//!   [`Queue::for_tenant`] or `neo_tenant::current()` and fail closed without one, work across
//!   tenants (claims, receipts, rescue) runs on a system `Db`, and the worker runs each handler
//!   inside `neo_tenant::scope` of its job's tenant. The `neo_queue.enqueue`,
//!   `neo_queue.claim` and `neo_queue.job` spans carry a `tenant` field.
//!
//! Metrics: `neo_queue_enqueued_total`, `neo_queue_claimed_total`, `neo_queue_acked_total`,
//! `neo_queue_nacked_total`, `neo_queue_rescued_total`, `neo_queue_depth_jobs{queue,state}`,
//! `neo_queue_claim_to_complete_seconds`, `neo_queue_retries_total` (nacks that will retry)
//! and `neo_queue_dead_lettered_total`.
//!
//! # Features
//! | feature | what it adds |
//! |---|---|
//! | `env` | `QueueConfig::from_env()` (reads `NEO_QUEUE_*`), `PeriodicConfig::from_env()` (`NEO_PERIODIC_*`) |

mod buffer;
mod config;
mod context;
mod error;
mod job;
pub mod metric_names;
mod periodic;
mod queue;
mod riding;
mod worker;

pub use config::{QueueConfig, RateLimit, RatePartition, WorkerConfig};
pub use context::JobContext;
pub use error::{Error, Result};
pub use job::{
    Depth, Failure, Job, JobRecord, MAX_KIND_LEN, NewJob, OnDependencyFailure, OnDuplicate, Receipt,
};
pub use periodic::{
    CatchUp, CronField, MAX_PERIODIC_NAME_LEN, Periodic, PeriodicConfig, PeriodicJobs,
    PeriodicStatus, Schedule, TickReport,
};
pub use queue::{
    CancelFilter, Cancelled, CappedDepth, JobOutput, PauseStatus, PeriodicState, Pruned, Queue,
};
pub use worker::{JobError, Worker, WorkerReport};
