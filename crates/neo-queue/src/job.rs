//! The values that go in and out of the queue: a job to enqueue, a claimed job and its
//! receipt, a failure to report, a stored job and the depth per state.

use crate::{Error, Result};
use chrono::{DateTime, Utc};
use neo_core::{JobId, TenantId, TraceContext};
use serde::Serialize;
use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// Longest job kind, in bytes.
pub const MAX_KIND_LEN: usize = 128;

/// A job to enqueue.
///
/// # Example
/// ```
/// use neo_queue::NewJob;
/// let job = NewJob::new("email.send", &serde_json::json!({ "to": "jane@example.com" }))?
///     .priority(10)
///     .unique_key("welcome:jane")
///     .max_attempts(5);
/// # Ok::<(), neo_queue::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub(crate) id: JobId,
    pub(crate) kind: String,
    pub(crate) payload: serde_json::Value,
    pub(crate) priority: i16,
    pub(crate) run_at: Option<DateTime<Utc>>,
    pub(crate) max_attempts: Option<i32>,
    pub(crate) unique_key: Option<String>,
    pub(crate) tenant: Option<JobTenant>,
    pub(crate) trace_context: Option<TraceContext>,
    /// The jobs it waits for ([`depends_on`](Self::depends_on)), without repeats.
    pub(crate) depends_on: Vec<JobId>,
    /// What it does when one of them dies or is cancelled; the queue's default when unset.
    pub(crate) on_dependency_failure: Option<OnDependencyFailure>,
}

impl NewJob {
    /// A job of `kind` (`a-z 0-9 _ . : -`, at most 128 bytes) with a JSON payload. It
    /// carries the current span's trace context when a
    /// [`TracePropagation`](neo_core::trace::TracePropagation) is installed (replace it with
    /// [`trace_context`](Self::trace_context)).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad kind or a payload that does not serialize.
    pub fn new(kind: &str, payload: &impl Serialize) -> Result<Self> {
        validate_kind(kind)?;
        let payload =
            serde_json::to_value(payload).map_err(|e| Error::invalid("payload", e.to_string()))?;
        Ok(NewJob {
            id: JobId::new(),
            kind: kind.to_owned(),
            payload,
            priority: 0,
            run_at: None,
            max_attempts: None,
            unique_key: None,
            tenant: None,
            trace_context: neo_core::trace::current(),
            depends_on: Vec::new(),
            on_dependency_failure: None,
        })
    }

    /// Higher runs first (default 0).
    #[must_use]
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    /// Not before this time (a scheduled job).
    #[must_use]
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Attempts before the job goes to the dead letters (default: the queue's).
    #[must_use]
    pub fn max_attempts(mut self, attempts: i32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// At most one pending or running job per key.
    #[must_use]
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// The tenant the job belongs to (stored, and handed to the handler). The queue keeps
    /// tenants as text so that it serves any notion of tenant; for neo-core's [`TenantId`]
    /// use [`tenant_id`](Self::tenant_id), which [`Job::tenant_id`] reads back.
    #[must_use]
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(JobTenant::Text(tenant.into()));
        self
    }

    /// The tenant the job belongs to, as a [`TenantId`] (stored as its hyphenated text, read
    /// back typed by [`Job::tenant_id`] and [`JobRecord::tenant_id`]).
    #[must_use]
    pub fn tenant_id(mut self, tenant: TenantId) -> Self {
        self.tenant = Some(JobTenant::Id(tenant));
        self
    }

    /// The W3C trace context the job carries (stored with it, handed to its run as
    /// [`Job::trace_context`], which the worker's `neo_queue.job` span links to); `None` for
    /// none. Replaces the one [`new`](Self::new) captured from the current span.
    #[must_use]
    pub fn trace_context(mut self, context: Option<TraceContext>) -> Self {
        self.trace_context = context;
        self
    }

    /// Runs only once these jobs completed (were acknowledged): until then it waits in state
    /// `waiting` and is never claimed; it becomes available in the transaction that
    /// acknowledges the last of them. Each must be pending, running, waiting, dead or
    /// cancelled when this job is enqueued, or in the same
    /// [`enqueue_many`](crate::Queue::enqueue_many) batch: an acknowledged job is gone, so
    /// a job that already completed counts as unknown ([`Error::UnknownDependency`]).
    /// Enqueue a workflow in one batch (or in one transaction) to avoid that race. Adds to
    /// the dependencies given before.
    ///
    /// # Example
    /// ```
    /// use neo_queue::{NewJob, OnDependencyFailure};
    /// let fetch = NewJob::new("report.fetch", &serde_json::json!({ "day": 1 }))?;
    /// let build = NewJob::new("report.build", &serde_json::json!({}))?
    ///     .depends_on([fetch.id()])
    ///     .on_dependency_failure(OnDependencyFailure::Fail);
    /// // queue.enqueue_many(&db, vec![fetch, build], OnDuplicate::Skip).await?;
    /// # Ok::<(), neo_queue::Error>(())
    /// ```
    #[must_use]
    pub fn depends_on(mut self, jobs: impl IntoIterator<Item = JobId>) -> Self {
        for id in jobs {
            if !self.depends_on.contains(&id) {
                self.depends_on.push(id);
            }
        }
        self
    }

    /// What this job does when a job it depends on dies (dead letters) or is cancelled
    /// (default: the queue's [`on_dependency_failure`](crate::QueueConfig::on_dependency_failure)).
    #[must_use]
    pub fn on_dependency_failure(mut self, policy: OnDependencyFailure) -> Self {
        self.on_dependency_failure = Some(policy);
        self
    }

    /// The jobs it depends on.
    pub fn dependencies(&self) -> &[JobId] {
        &self.depends_on
    }

    /// The id the job will have.
    pub fn id(&self) -> JobId {
        self.id
    }
}

pub(crate) fn validate_kind(kind: &str) -> Result<()> {
    let ok = !kind.is_empty()
        && kind.len() <= MAX_KIND_LEN
        && kind.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b':' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "job kind",
            format!("{kind:?}: use 1-{MAX_KIND_LEN} of a-z 0-9 _ . : -"),
        ))
    }
}

/// What a waiting job does when a job it depends on ([`NewJob::depends_on`]) goes to the
/// dead letters or is cancelled. Whatever it does applies in the same transaction, and a
/// job it cancels or fails passes the failure on to its own dependents, each by its own
/// policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDependencyFailure {
    /// It is cancelled (state `cancelled`) and never runs.
    #[default]
    Cancel,
    /// It goes to the dead letters (state `dead`, `last_error` naming the dependency), from
    /// where [`Queue::requeue`](crate::Queue::requeue) can still run it.
    Fail,
    /// It runs anyway, once its other dependencies finished: the dependency counts as done.
    Run,
}

impl OnDependencyFailure {
    /// As stored in `jobs.on_dependency_failure`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OnDependencyFailure::Cancel => "cancel",
            OnDependencyFailure::Fail => "fail",
            OnDependencyFailure::Run => "run",
        }
    }
}

/// What to do when a job's unique key is already pending or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDuplicate {
    /// Enqueue nothing for it; its result is `None`.
    #[default]
    Skip,
    /// Fail with [`Error::Duplicate`]; nothing of the call is enqueued.
    Error,
}

/// A claimed job: run it, then ack or nack it with its [`Receipt`].
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job's id.
    pub id: JobId,
    /// What to run.
    pub kind: String,
    /// Its input.
    pub payload: serde_json::Value,
    /// Its priority.
    pub priority: i16,
    /// This is attempt number...
    pub attempt: i32,
    /// ...of at most.
    pub max_attempts: i32,
    /// Its tenant, if any.
    pub tenant: Option<String>,
    /// The previous attempt's error, if any.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// The fencing token of this claim.
    pub fence: i64,
    /// The trace context of the span that enqueued it ([`NewJob::trace_context`]).
    pub trace_context: Option<TraceContext>,
}

impl Job {
    /// Its tenant as a [`TenantId`] (set with [`NewJob::tenant_id`]); `Ok(None)` for a job
    /// without a tenant.
    ///
    /// # Errors
    /// [`Error::Invalid`] when its tenant is text that is not a tenant id.
    pub fn tenant_id(&self) -> Result<Option<TenantId>> {
        typed_tenant(self.tenant.as_deref())
    }

    /// The proof of this claim that ack, nack and heartbeat require.
    pub fn receipt(&self) -> Receipt {
        Receipt {
            id: self.id,
            fence: self.fence,
        }
    }
}

/// A claim's identity: the job and the fencing token the claim received. A later claim of the
/// same job gets a higher token, so an earlier worker's receipt no longer works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The job.
    pub id: JobId,
    /// The fencing token.
    pub fence: i64,
}

/// A failed attempt to report.
///
/// # Example
/// ```
/// # fn demo(job: &neo_queue::Job) {
/// use neo_queue::Failure;
/// use std::time::Duration;
/// let later = Failure::retry(job.receipt(), "503 from the partner API").retry_in(Duration::from_secs(30));
/// let never = Failure::permanent(job.receipt(), "payload is not an invoice");
/// let paused = Failure::snooze(job.receipt(), Duration::from_secs(5)); // the attempt is not spent
/// # let _ = (later, never, paused); }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The claim.
    pub receipt: Receipt,
    /// What went wrong (stored as `last_error`).
    pub error: String,
    /// Do not retry: straight to the dead letters (bad payload, unknown kind).
    pub permanent: bool,
    /// Retry after this long instead of the queue's backoff (a `Retry-After`, the handler's own
    /// schedule). Ignored when the job is dead-lettered.
    pub retry_in: Option<Duration>,
    /// Hand the job back to run after `retry_in` (zero when unset) without spending the
    /// attempt and without touching `last_error`: a rate limit or an open breaker, not a failure.
    pub snooze: bool,
}

impl Failure {
    /// A retryable failure, retried after the queue's backoff.
    pub fn retry(receipt: Receipt, error: impl Into<String>) -> Self {
        Failure {
            receipt,
            error: error.into(),
            permanent: false,
            retry_in: None,
            snooze: false,
        }
    }

    /// A failure that goes straight to the dead letters.
    pub fn permanent(receipt: Receipt, error: impl Into<String>) -> Self {
        Failure {
            permanent: true,
            ..Self::retry(receipt, error)
        }
    }

    /// Gives the job back to run again after `after`, without spending the attempt.
    pub fn snooze(receipt: Receipt, after: Duration) -> Self {
        Failure {
            snooze: true,
            retry_in: Some(after),
            ..Self::retry(receipt, String::new())
        }
    }

    /// Retries after `after` instead of the queue's backoff.
    #[must_use]
    pub fn retry_in(mut self, after: Duration) -> Self {
        self.retry_in = Some(after);
        self
    }
}

/// A job as stored, for inspection (dead letters).
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// The job.
    pub id: JobId,
    /// Its kind.
    pub kind: String,
    /// Its input.
    pub payload: serde_json::Value,
    /// `available`, `running`, `waiting` (for its dependencies), `dead` or `cancelled`.
    pub state: String,
    /// Attempts made.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The last error.
    pub last_error: Option<String>,
    /// Its tenant.
    pub tenant: Option<String>,
    /// When it went to the dead letters.
    pub dead_at: Option<DateTime<Utc>>,
}

impl JobRecord {
    /// Its tenant as a [`TenantId`] (set with [`NewJob::tenant_id`]); `Ok(None)` for a job
    /// without a tenant.
    ///
    /// # Errors
    /// [`Error::Invalid`] when its tenant is text that is not a tenant id.
    pub fn tenant_id(&self) -> Result<Option<TenantId>> {
        typed_tenant(self.tenant.as_deref())
    }
}

fn typed_tenant(tenant: Option<&str>) -> Result<Option<TenantId>> {
    tenant.map(|text| parse_job_tenant(text, "")).transpose()
}

/// A job's tenant text as a tenant id; `context` ends the error's message (what needed one).
///
/// # Errors
/// [`Error::Invalid`] (`job tenant`) for text that is not a tenant id.
pub(crate) fn parse_job_tenant(text: &str, context: &str) -> Result<TenantId> {
    TenantId::parse(text).map_err(|e| {
        let reason = if context.is_empty() {
            e.to_string()
        } else {
            format!("{text:?} {context}: {e}")
        };
        Error::invalid("job tenant", reason)
    })
}

/// A job's tenant as it was given. A [`TenantId`] stays typed until the enqueue writes it:
/// a batch whose jobs all name one tenant writes its text once, not once per job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobTenant {
    /// Given as a [`TenantId`] ([`NewJob::tenant_id`]).
    Id(TenantId),
    /// Given as text ([`NewJob::tenant`]).
    Text(String),
}

impl JobTenant {
    /// The tenant as a tenant id; text is parsed, and `context` ends the error's message as
    /// for [`parse_job_tenant`].
    pub(crate) fn id(&self, context: &str) -> Result<TenantId> {
        match self {
            JobTenant::Id(tenant) => Ok(*tenant),
            JobTenant::Text(text) => parse_job_tenant(text, context),
        }
    }

    /// The text the `tenant` column stores.
    pub(crate) fn text(&self) -> Cow<'_, str> {
        match self {
            JobTenant::Id(tenant) => Cow::Owned(tenant.to_string()),
            JobTenant::Text(text) => Cow::Borrowed(text),
        }
    }
}

impl fmt::Display for JobTenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobTenant::Id(tenant) => tenant.fmt(f),
            JobTenant::Text(text) => f.write_str(text),
        }
    }
}

/// Jobs per state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Depth {
    /// Waiting (including scheduled).
    pub available: i64,
    /// Claimed and not finished.
    pub running: i64,
    /// In the dead letters.
    pub dead: i64,
    /// Cancelled ([`Queue::cancel`](crate::Queue::cancel)) and not yet pruned.
    pub cancelled: i64,
    /// Waiting for the jobs they depend on ([`NewJob::depends_on`]).
    pub waiting: i64,
}
