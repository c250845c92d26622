//! Queue and worker settings.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// How a [`Queue`](crate::Queue) stores and retries jobs. Load from `NEO_QUEUE_*` with
/// [`QueueConfig::from_env`] (feature `env`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct QueueConfig {
    /// Schema of the jobs table (created by [`Queue::migrate`](crate::Queue::migrate)).
    pub schema: String,
    /// LISTEN/NOTIFY channel that wakes workers when jobs are enqueued.
    pub channel: String,
    /// Attempts of a job whose enqueuer does not say.
    pub default_max_attempts: i32,
    /// How long a claim owns its jobs before they may be rescued and redelivered.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Retry delay after the first failure...
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// ...multiplied by this per further attempt...
    pub retry_multiplier: f64,
    /// ...capped here, then jittered by ±50 %.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Claims take turns across tenants within a priority (`NEO_QUEUE_FAIR_CLAIMS`): each
    /// tenant with due jobs (and the jobs without a tenant, as one more tenant) gets its
    /// oldest job into a claim before any tenant gets its second, so one tenant's backlog
    /// cannot starve the others. While one party has due jobs the claims read its jobs alone
    /// and count the parties, so a party's first due job waits at most one claim more for its
    /// turn (a tenant whose enqueue woke the worker: none, see
    /// [`WorkerConfig::express_claim`](crate::WorkerConfig::express_claim)). Off, a claim
    /// takes the oldest jobs of the highest priority whatever their tenant. On by default: it
    /// costs little and bounds the wait of a quiet tenant behind a noisy one (figures in
    /// `docs/PERFORMANCE.md`).
    pub fair_claims: bool,
    /// At most this many jobs of one tenant run at once across every worker of the queue
    /// (`NEO_QUEUE_MAX_RUNNING_PER_TENANT`); none when unset. Jobs without a tenant are not
    /// capped. Claims of a capped queue take turns across tenants as with
    /// [`fair_claims`](Self::fair_claims) and are serialised by a transaction-scoped
    /// advisory lock per queue, so that two workers cannot both see room for the same tenant.
    pub max_running_per_tenant: Option<u32>,
    /// At most this many jobs of the queue claimed at once across every worker
    /// (`NEO_QUEUE_MAX_RUNNING`): "at most 5 running in the cluster". Enforced in the claim
    /// statement (jobs a worker holds in its buffer count as running); a worker that dies
    /// holding slots frees them when its leases expire. Claims of a limited queue take turns
    /// through an advisory lock, as with [`max_running_per_tenant`](Self::max_running_per_tenant).
    /// None (no limit) by default.
    pub max_running: Option<u32>,
    /// At most [`allowed`](RateLimit::allowed) jobs started in any
    /// [`period`](RateLimit::period), per queue, per tenant or per kind
    /// ([`partition`](RateLimit::partition)), across every worker
    /// (`NEO_QUEUE_RATE_LIMIT__ALLOWED=100`, `NEO_QUEUE_RATE_LIMIT__PERIOD=1m`,
    /// `NEO_QUEUE_RATE_LIMIT__PARTITION=tenant`): for a downstream API's "100 calls a
    /// minute". Enforced in the claim statement, which takes at most what each partition has
    /// left in the window; jobs over the limit stay available and are claimed once the window
    /// has room, by a later poll. Claims of a rate-limited queue take turns through an
    /// advisory lock, as with [`max_running`](Self::max_running). None by default.
    pub rate_limit: Option<RateLimit>,
    /// Weights of tenants in fair claims (`NEO_QUEUE_TENANT_WEIGHTS='{acme=3}'`), keyed by
    /// the tenant as jobs store it (a [`TenantId`](neo_core::TenantId)'s hyphenated text for
    /// [`NewJob::tenant_id`](crate::NewJob::tenant_id)): in each turn a tenant of weight `w`
    /// gets up to `w` jobs into a claim where every other tenant gets one. Decided in the
    /// claim statement, like the turns; used only when claims are fair or capped. Each weight
    /// is at least 1. None by default.
    pub tenant_weights: BTreeMap<String, u32>,
    /// Largest output, in bytes of JSON, a handler may record
    /// ([`JobContext::record_progress`](crate::JobContext::record_progress);
    /// `NEO_QUEUE_MAX_OUTPUT_BYTES`): outputs are small results, not files. 64 KiB by default.
    pub max_output_bytes: usize,
    /// Dead letters are pruned this long after they died (`NEO_QUEUE_RETAIN_DEAD=30d`); kept
    /// until requeued by default.
    #[serde(with = "humantime_serde")]
    pub retain_dead: Option<Duration>,
    /// Cancelled jobs are pruned this long after they were cancelled
    /// (`NEO_QUEUE_RETAIN_CANCELLED`); 7 days by default, none to keep them.
    #[serde(with = "humantime_serde")]
    pub retain_cancelled: Option<Duration>,
    /// Recorded outputs are pruned this long after their last update, once their job is
    /// finished (`NEO_QUEUE_RETAIN_OUTPUTS`); 7 days by default, none to keep them.
    #[serde(with = "humantime_serde")]
    pub retain_outputs: Option<Duration>,
    /// Most rows of each kind one [`Queue::prune`](crate::Queue::prune) deletes
    /// (`NEO_QUEUE_PRUNE_BATCH`), so that pruning a large backlog never holds long locks.
    pub prune_batch: u32,
    /// How often a worker prunes (`NEO_QUEUE_PRUNE_INTERVAL`); while a batch comes back
    /// full, it prunes again at its next poll.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
    /// What a job that depends on others ([`NewJob::depends_on`](crate::NewJob::depends_on))
    /// does when one of them dies or is cancelled, unless it says
    /// ([`NewJob::on_dependency_failure`](crate::NewJob::on_dependency_failure);
    /// `NEO_QUEUE_ON_DEPENDENCY_FAILURE=cancel|fail|run`). Cancel by default.
    pub on_dependency_failure: crate::OnDependencyFailure,
    /// A claim that takes longer than this on the server (`NEO_QUEUE_REPLAN_CLAIMS_AFTER`)
    /// makes the queue's claims be prepared and planned again, on every connection, for the
    /// table as it is then. A prepared claim switches to a generic plan while the jobs table
    /// is small (sequential scans, the cheapest there) and PostgreSQL keeps that plan when a
    /// burst fills the table, until its next analyze: measured, claims of 16 took 120-154 ms
    /// each once 1,000,000 jobs arrived, against 1.5-3.6 ms when planned for the table as it
    /// was (docs/PERFORMANCE.md). 30 ms by default, above a busy drain's claims of 500 (9-11
    /// ms, at most 20 ms measured) and below such a plan's on a large table; zero never
    /// replans.
    #[serde(with = "humantime_serde")]
    pub replan_claims_after: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            schema: "neo_queue".to_owned(),
            channel: "neo_queue_jobs".to_owned(),
            default_max_attempts: 8,
            lease: Duration::from_secs(60),
            retry_initial: Duration::from_secs(1),
            retry_multiplier: 4.0,
            retry_max: Duration::from_secs(3600),
            fair_claims: true,
            max_running_per_tenant: None,
            max_running: None,
            rate_limit: None,
            tenant_weights: BTreeMap::new(),
            max_output_bytes: 64 * 1024,
            retain_dead: None,
            retain_cancelled: Some(Duration::from_secs(7 * 24 * 3600)),
            retain_outputs: Some(Duration::from_secs(7 * 24 * 3600)),
            prune_batch: 1_000,
            prune_interval: Duration::from_secs(60),
            on_dependency_failure: crate::OnDependencyFailure::Cancel,
            replan_claims_after: Duration::from_millis(30),
        }
    }
}

impl QueueConfig {
    /// Loads the configuration from `NEO_QUEUE_*` environment variables over the defaults.
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) naming the variable that could not be parsed.
    #[cfg(feature = "env")]
    pub fn from_env() -> crate::Result<Self> {
        neo_core::config::from_env("NEO_QUEUE_")
            .map_err(|e| crate::Error::invalid("configuration", e.to_string()))
    }
}

/// A queue's rate limit ([`QueueConfig::rate_limit`]): at most `allowed` jobs of one
/// partition started in any window of `period`, a sliding window, not a fixed one: there is
/// no boundary at which twice the budget can start.
///
/// A job counts as started when it is claimed (a worker of a rate-limited queue claims only
/// for free slots, without prefetching), even if its worker hands it back unstarted or dies;
/// its start frees the budget one period later, give or take a sixteenth of the period (the
/// windows are kept in sixteenths, rounded up, so that the limit is never exceeded).
///
/// # Example
/// ```
/// use neo_queue::{QueueConfig, RateLimit, RatePartition};
/// use std::time::Duration;
/// let config = QueueConfig {
///     rate_limit: Some(RateLimit::new(100, Duration::from_secs(60)).partition(RatePartition::Tenant)),
///     ..QueueConfig::default()
/// };
/// # let _ = config;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct RateLimit {
    /// Jobs of one partition started in any window of `period`; at least 1.
    pub allowed: u32,
    /// The window; at least a millisecond.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// What the limit is counted per; the whole queue by default.
    #[serde(default)]
    pub partition: RatePartition,
}

impl RateLimit {
    /// At most `allowed` jobs of the queue started in any window of `period`.
    #[must_use]
    pub fn new(allowed: u32, period: Duration) -> Self {
        RateLimit {
            allowed,
            period,
            partition: RatePartition::Queue,
        }
    }

    /// The same limit counted per `partition`.
    #[must_use]
    pub fn partition(self, partition: RatePartition) -> Self {
        RateLimit { partition, ..self }
    }
}

/// What a [`RateLimit`] is counted per (`queue`, `tenant` or `kind` in configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RatePartition {
    /// One budget for every job of the queue.
    #[default]
    Queue,
    /// A budget per tenant ([`NewJob::tenant`](crate::NewJob::tenant)); the jobs without a
    /// tenant share one more. A tenant at its limit does not hold back the others' jobs:
    /// claims take turns across tenants (as with [`fair_claims`](QueueConfig::fair_claims)),
    /// and a tenant at its limit is left out before its jobs are read. In a
    /// schema-per-tenant queue each tenant has its own table, so every limit is per tenant
    /// already.
    Tenant,
    /// A budget per job kind: e.g. `email.send` at most 10 a second, whatever else runs.
    /// Jobs are not indexed by kind, so while a kind is at its limit each claim reads past its
    /// due jobs: give a kind with a large backlog its own queue.
    Kind,
}

/// How a [`Worker`](crate::Worker) runs jobs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct WorkerConfig {
    /// A name for this worker in leases and logs (made unique per process).
    pub name: String,
    /// Jobs running at once.
    pub concurrency: usize,
    /// Most jobs claimed per round trip; 500 by default. Each claim waits for one commit, so
    /// short jobs drain at about this many per claim round trip: with claims of 100 the
    /// worker drained no-op jobs at 1.0× graphile_worker's rate, with 500 at 2.1–3.1×
    /// (docs/PERFORMANCE.md). Slow jobs are not claimed in such numbers: the worker holds
    /// only what its slots start within about two claims' time ([`prefetch`](Self::prefetch)).
    pub claim_batch: usize,
    /// At most this many jobs claimed ahead of free slots and held in a local buffer, so that
    /// a slot that frees starts its next job without a round trip and claims come in large
    /// batches. The worker holds only as many as its slots start within about two claims'
    /// time (from moving averages of job and claim times): short jobs fill the buffer, slow
    /// ones (a webhook call) leave it near empty, so that they are not held back from other
    /// workers and another tenant's job does not queue behind them. Buffered
    /// jobs are claimed like running ones (lease, fencing token, the tenant's cap), their
    /// leases are extended by the worker's heartbeat, a buffered job whose lease was lost is
    /// dropped unstarted ([`WorkerReport::expired_before_start`](crate::WorkerReport)), and the
    /// buffer is handed back at shutdown. 0 claims only as many jobs as there are free slots,
    /// as every worker of a queue with a [`rate_limit`](QueueConfig::rate_limit) does. 500
    /// by default, reached only by short jobs.
    pub prefetch: usize,
    /// On a queue whose claims take turns across tenants
    /// ([`fair_claims`](QueueConfig::fair_claims), without a limit that makes claims take a
    /// lock), a job enqueued while the worker is busy is taken by a small claim of up to this
    /// many jobs, sent at once, instead of by the next regular claim. An enqueue of one
    /// tenant's jobs names the tenant in its notification, and the express claim takes only
    /// the named tenants' next jobs ([`Queue::claim_for_tenants`](crate::Queue::claim_for_tenants)),
    /// reading none of a busy tenant's backlog; after other enqueues it is a fair claim, which
    /// chooses another tenant's job first (the claim in flight holds the busy tenant's next
    /// jobs). Either way the job starts ahead of the buffered jobs of a tenant that has some
    /// waiting, so a quiet tenant's job does not wait for the claim in flight and the next
    /// behind a busy tenant's backlog (at concurrency 32 behind a 100,000-job backlog: p50
    /// 7–13 ms instead of 35–39 ms with fair express claims, docs/PERFORMANCE.md). An express
    /// claim takes at most this many jobs beyond what the worker may hold
    /// ([`prefetch`](Self::prefetch)), and none beyond its free slots while it may hold none
    /// ahead (slow jobs, or `prefetch` 0). 8 by default; 0 turns it off.
    pub express_claim: usize,
    /// Check for jobs this often when no notification arrives (scheduled jobs, missed
    /// notifications).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Acks and nacks are written in batches of up to this many (500 by default)...
    pub complete_batch: usize,
    /// ...or after this long.
    #[serde(with = "humantime_serde")]
    pub complete_linger: Duration,
    /// A succeeded job's ack rides on the worker's next claim (`NEO_WORKER_ACK_RIDE_WAIT`):
    /// written in the claim's transaction
    /// ([`Queue::ack_and_claim`](crate::Queue::ack_and_claim)), so that a drain waits for
    /// one commit per claim rather than for a claim's and an ack batch's. An ack waits at
    /// most this long for a claim, and not at all when none is coming (the queue looked empty
    /// and no claim is in flight); then the completer writes it as before. Nothing is
    /// acknowledged unless the claim's transaction commits. Zero (the default) turns riding
    /// off: in the end-to-end batched bench riding cost about 20 % (docs/PERFORMANCE.md), and
    /// its gain on a drain is not shown yet; try e.g. `20ms` on a drain-heavy worker.
    #[serde(with = "humantime_serde")]
    pub ack_ride_wait: Duration,
    /// How long `shutdown` waits for running jobs before releasing them back to the queue.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Claim only kinds this worker has handlers for. Off by default: a job of an unknown kind
    /// goes to the dead letters with the reason, instead of waiting forever.
    pub only_known_kinds: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            name: "worker".to_owned(),
            concurrency: 16,
            claim_batch: 500,
            prefetch: 500,
            express_claim: 8,
            poll_interval: Duration::from_secs(1),
            complete_batch: 500,
            complete_linger: Duration::from_millis(2),
            ack_ride_wait: Duration::ZERO,
            shutdown_grace: Duration::from_secs(30),
            only_known_kinds: false,
        }
    }
}
