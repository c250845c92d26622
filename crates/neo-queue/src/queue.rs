//! The queue: enqueue, claim, heartbeat, ack, nack, rescue, dead letters.

use crate::{Error, QueueConfig, Result};
use chrono::{DateTime, Utc};
use neo_core::JobId;
use neo_db::{Db, MigrationReport, MigrationSet, Schema, TableName, quote_identifier};
use serde::Serialize;
use sqlx::{Acquire, AssertSqlSafe, Postgres, Row};
use std::collections::HashSet;
use std::sync::Arc;
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
    id: JobId,
    kind: String,
    payload: serde_json::Value,
    priority: i16,
    run_at: Option<DateTime<Utc>>,
    max_attempts: Option<i32>,
    unique_key: Option<String>,
    tenant: Option<String>,
}

impl NewJob {
    /// A job of `kind` (`a-z 0-9 _ . : -`, at most 128 bytes) with a JSON payload.
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

    /// The tenant the job belongs to (stored, and handed to the handler).
    #[must_use]
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// The id the job will have.
    pub fn id(&self) -> JobId {
        self.id
    }
}

fn validate_kind(kind: &str) -> Result<()> {
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
}

impl Job {
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
    /// `available`, `running` or `dead`.
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
}

#[derive(Debug)]
struct Sql {
    insert_skip: String,
    insert_strict: String,
    claim: String,
    claim_kinds: String,
    heartbeat: String,
    ack: String,
    nack: String,
    release: String,
    rescue: String,
    list_dead: String,
    requeue: String,
    get: String,
    depth: String,
}

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
    sql: Arc<Sql>,
}

const JOB_COLUMNS: &str = "j.id, j.kind, j.payload, j.priority, j.attempts, j.max_attempts, j.tenant, j.last_error, j.created_at, j.fence";

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
        let insert = |on_conflict: &str| {
            format!(
                "WITH ins AS (INSERT INTO {t} (id, kind, payload, priority, run_at, max_attempts, unique_key, tenant) \
                 SELECT u.id, u.kind, u.payload, u.priority, coalesce(u.run_at, now()), u.max_attempts, u.unique_key, u.tenant \
                 FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::int2[], $5::timestamptz[], $6::int4[], $7::text[], $8::text[]) \
                 AS u(id, kind, payload, priority, run_at, max_attempts, unique_key, tenant) {on_conflict} RETURNING id) \
                 SELECT ins.id FROM ins, (SELECT pg_notify($9, '')) AS woken"
            )
        };
        let claim = |filter: &str| {
            format!(
                "WITH next AS (SELECT id FROM {t} WHERE state = 'available' AND run_at <= now() {filter} \
                 ORDER BY priority DESC, run_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
                 UPDATE {t} AS j SET state = 'running', attempts = j.attempts + 1, lease_owner = $2, \
                 lease_expires_at = now() + $3 * interval '1 millisecond', fence = j.fence + 1 \
                 FROM next WHERE j.id = next.id RETURNING {JOB_COLUMNS}"
            )
        };
        let owned = "j.state = 'running' AND j.lease_expires_at > now()";
        let sql = Sql {
            insert_skip: insert(
                "ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'running') DO NOTHING",
            ),
            insert_strict: insert(""),
            claim: claim(""),
            claim_kinds: claim("AND kind = ANY($4)"),
            heartbeat: format!(
                "UPDATE {t} AS j SET lease_expires_at = now() + $3 * interval '1 millisecond' \
                 FROM UNNEST($1::uuid[], $2::int8[]) AS u(id, fence) \
                 WHERE j.id = u.id AND j.fence = u.fence AND {owned} RETURNING j.id"
            ),
            ack: format!(
                "DELETE FROM {t} AS j USING UNNEST($1::uuid[], $2::int8[]) AS u(id, fence) \
                 WHERE j.id = u.id AND j.fence = u.fence AND {owned} RETURNING j.id"
            ),
            // A snooze hands the claim back without spending the attempt; an explicit retry
            // delay (Retry-After, a handler's own schedule) replaces the backoff.
            nack: format!(
                "UPDATE {t} AS j SET \
                 attempts = CASE WHEN u.snooze THEN j.attempts - 1 ELSE j.attempts END, \
                 state = CASE WHEN NOT u.snooze AND (u.permanent OR j.attempts >= j.max_attempts) THEN 'dead' ELSE 'available' END, \
                 dead_at = CASE WHEN NOT u.snooze AND (u.permanent OR j.attempts >= j.max_attempts) THEN now() END, \
                 run_at = CASE WHEN NOT u.snooze AND (u.permanent OR j.attempts >= j.max_attempts) THEN j.run_at \
                   WHEN u.retry_in_ms IS NOT NULL THEN now() + u.retry_in_ms * interval '1 millisecond' \
                   ELSE now() + least($5::float8, $3::float8 * power($4::float8, j.attempts - 1)) \
                        * (0.5 + random()) * interval '1 millisecond' END, \
                 lease_owner = NULL, lease_expires_at = NULL, \
                 last_error = CASE WHEN u.snooze THEN j.last_error ELSE u.error END \
                 FROM UNNEST($1::uuid[], $2::int8[], $6::text[], $7::bool[], $8::float8[], $9::bool[]) \
                   AS u(id, fence, error, permanent, retry_in_ms, snooze) \
                 WHERE j.id = u.id AND j.fence = u.fence AND {owned} RETURNING j.id, j.state"
            ),
            release: format!(
                "UPDATE {t} AS j SET state = 'available', attempts = j.attempts - 1, run_at = now(), \
                 lease_owner = NULL, lease_expires_at = NULL \
                 FROM UNNEST($1::uuid[], $2::int8[]) AS u(id, fence) \
                 WHERE j.id = u.id AND j.fence = u.fence AND {owned} RETURNING j.id"
            ),
            rescue: format!(
                "UPDATE {t} SET state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'available' END, \
                 dead_at = CASE WHEN attempts >= max_attempts THEN now() END, \
                 lease_owner = NULL, lease_expires_at = NULL, \
                 last_error = 'lease expired: the worker stopped without finishing the job' \
                 WHERE state = 'running' AND lease_owner IS NOT NULL AND lease_expires_at <= now()"
            ),
            list_dead: format!(
                "SELECT id, kind, payload, state, attempts, max_attempts, last_error, tenant, dead_at \
                 FROM {t} WHERE state = 'dead' ORDER BY dead_at, id LIMIT $1"
            ),
            requeue: format!(
                "WITH back AS (UPDATE {t} SET state = 'available', attempts = 0, run_at = now(), dead_at = NULL \
                 WHERE id = ANY($1) AND state = 'dead' RETURNING id) \
                 SELECT back.id FROM back, (SELECT pg_notify($2, '')) AS woken"
            ),
            get: format!(
                "SELECT id, kind, payload, state, attempts, max_attempts, last_error, tenant, dead_at FROM {t} WHERE id = $1"
            ),
            depth: format!("SELECT state, count(*) FROM {t} GROUP BY state"),
        };
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
            .with(1, "jobs", include_str!("../migrations/1_jobs.sql"))
            .with(
                2,
                "lease index for rescue only",
                include_str!("../migrations/2_lease_index_for_rescue_only.sql"),
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

    fn sql(text: &str) -> AssertSqlSafe<String> {
        AssertSqlSafe(text.to_owned())
    }

    /// Enqueues one job; `None` when skipped as a duplicate. Pass `&mut *uow` to enqueue
    /// only if the caller's transaction commits.
    ///
    /// # Errors
    /// [`Error::Duplicate`] with [`OnDuplicate::Error`], or a database error.
    pub fn enqueue<'a, 'c, A>(
        &'a self,
        exec: A,
        job: NewJob,
        on_duplicate: OnDuplicate,
    ) -> impl Future<Output = Result<Option<JobId>>> + Send + 'a
    where
        A: Acquire<'c, Database = Postgres> + Send + 'a,
    {
        let many = self.enqueue_many(exec, vec![job], on_duplicate);
        async move { Ok(many.await?.pop().flatten()) }
    }

    /// Enqueues every job in one statement; one entry per job, `None` for skipped
    /// duplicates. Wakes listening workers when the transaction commits.
    ///
    /// # Errors
    /// [`Error::Duplicate`] with [`OnDuplicate::Error`] (nothing is enqueued), or a database
    /// error.
    #[allow(
        clippy::manual_async_fn,
        reason = "the explicit `+ Send` is the point: see the comment inside"
    )]
    pub fn enqueue_many<'a, 'c, A>(
        &'a self,
        exec: A,
        jobs: Vec<NewJob>,
        on_duplicate: OnDuplicate,
    ) -> impl Future<Output = Result<Vec<Option<JobId>>>> + Send + 'a
    where
        A: Acquire<'c, Database = Postgres> + Send + 'a,
    {
        // `+ Send` is stated here, where it can be proven for any `A`, so callers can spawn
        // futures that enqueue (rustc cannot prove it at the call site for generic lifetimes).
        async move {
            if jobs.is_empty() {
                return Ok(Vec::new());
            }
            let mut conn = exec.acquire().await?;
            self.enqueue_on(&mut conn, jobs, on_duplicate).await
        }
    }

    /// The body of [`enqueue_many`](Self::enqueue_many), on the acquired connection.
    async fn enqueue_on(
        &self,
        conn: &mut sqlx::PgConnection,
        jobs: Vec<NewJob>,
        on_duplicate: OnDuplicate,
    ) -> Result<Vec<Option<JobId>>> {
        let default_attempts = self.config.default_max_attempts;
        let mut columns = Columns::with_capacity(jobs.len());
        for job in &jobs {
            if job.max_attempts.is_some_and(|a| a < 1) {
                return Err(Error::invalid("max_attempts", "must be at least 1"));
            }
            columns.push(job, default_attempts);
        }
        let statement = match on_duplicate {
            OnDuplicate::Skip => &self.sql.insert_skip,
            OnDuplicate::Error => &self.sql.insert_strict,
        };
        let inserted: Vec<JobId> = sqlx::query_scalar(Self::sql(statement))
            .bind(&columns.ids)
            .bind(&columns.kinds)
            .bind(&columns.payloads)
            .bind(&columns.priorities)
            .bind(&columns.run_ats)
            .bind(&columns.max_attempts)
            .bind(&columns.unique_keys)
            .bind(&columns.tenants)
            .bind(&self.config.channel)
            .fetch_all(&mut *conn)
            .await
            .map_err(duplicate_or)?;
        metrics::counter!("neo_queue_enqueued_total").increment(inserted.len() as u64);
        let inserted: HashSet<JobId> = inserted.into_iter().collect();
        Ok(jobs
            .iter()
            .map(|j| inserted.contains(&j.id).then_some(j.id))
            .collect())
    }

    /// Claims up to `n` due jobs (highest priority, then oldest `run_at`) for `worker`, with a
    /// lease of `config.lease`; only `kinds` when given.
    ///
    /// # Errors
    /// A database error.
    pub async fn claim(
        &self,
        worker: &str,
        n: usize,
        kinds: Option<&[String]>,
    ) -> Result<Vec<Job>> {
        let n = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
        let lease = self.lease_ms();
        let rows = match kinds {
            None => {
                sqlx::query(Self::sql(&self.sql.claim))
                    .bind(n)
                    .bind(worker)
                    .bind(lease)
                    .fetch_all(self.db.pool())
                    .await?
            }
            Some(kinds) => {
                sqlx::query(Self::sql(&self.sql.claim_kinds))
                    .bind(n)
                    .bind(worker)
                    .bind(lease)
                    .bind(kinds)
                    .fetch_all(self.db.pool())
                    .await?
            }
        };
        metrics::counter!("neo_queue_claimed_total").increment(rows.len() as u64);
        rows.iter()
            .map(|r| {
                Ok(Job {
                    id: r.try_get("id")?,
                    kind: r.try_get("kind")?,
                    payload: r.try_get("payload")?,
                    priority: r.try_get("priority")?,
                    attempt: r.try_get("attempts")?,
                    max_attempts: r.try_get("max_attempts")?,
                    tenant: r.try_get("tenant")?,
                    last_error: r.try_get("last_error")?,
                    created_at: r.try_get("created_at")?,
                    fence: r.try_get("fence")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Error::from)
    }

    fn lease_ms(&self) -> f64 {
        self.config.lease.as_secs_f64() * 1e3
    }

    /// Extends the leases of still-owned claims.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] naming the claims no longer owned (the others were extended).
    pub async fn heartbeat(&self, receipts: &[Receipt]) -> Result<()> {
        let refused = self
            .run_receipts(&self.sql.heartbeat, receipts, |q| q.bind(self.lease_ms()))
            .await?;
        refused_to_result(&refused)
    }

    /// Finishes these claims (deletes the jobs); returns the receipts refused because their
    /// lease was lost, which were not acknowledged.
    ///
    /// # Errors
    /// A database error.
    pub async fn ack_many(&self, receipts: &[Receipt]) -> Result<Vec<Receipt>> {
        let refused = self.run_receipts(&self.sql.ack, receipts, |q| q).await?;
        metrics::counter!("neo_queue_acked_total")
            .increment((receipts.len() - refused.len()) as u64);
        Ok(refused)
    }

    /// Finishes one claim.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when the lease expired (another worker may own the job now).
    pub async fn ack(&self, receipt: Receipt) -> Result<()> {
        refused_to_result(&self.ack_many(&[receipt]).await?)
    }

    /// Reports failed attempts: each job is retried after a jittered exponential backoff, or
    /// goes to the dead letters after its last attempt (at once when `permanent`). Returns the
    /// refused receipts (lease lost).
    ///
    /// # Errors
    /// A database error.
    pub async fn nack_many(&self, failures: &[Failure]) -> Result<Vec<Receipt>> {
        if failures.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<JobId> = failures.iter().map(|f| f.receipt.id).collect();
        let fences: Vec<i64> = failures.iter().map(|f| f.receipt.fence).collect();
        let errors: Vec<&str> = failures.iter().map(|f| f.error.as_str()).collect();
        let permanent: Vec<bool> = failures.iter().map(|f| f.permanent).collect();
        let retry_in: Vec<Option<f64>> = failures
            .iter()
            .map(|f| f.retry_in.map(|d| d.as_secs_f64() * 1e3))
            .collect();
        let snooze: Vec<bool> = failures.iter().map(|f| f.snooze).collect();
        let done: Vec<(JobId, String)> = sqlx::query_as(Self::sql(&self.sql.nack))
            .persistent(RECEIPTS_PREPARED)
            .bind(&ids)
            .bind(&fences)
            .bind(self.config.retry_initial.as_secs_f64() * 1e3)
            .bind(self.config.retry_multiplier)
            .bind(self.config.retry_max.as_secs_f64() * 1e3)
            .bind(&errors)
            .bind(&permanent)
            .bind(&retry_in)
            .bind(&snooze)
            .fetch_all(self.db.pool())
            .await?;
        let dead = done.iter().filter(|(_, state)| state == "dead").count() as u64;
        metrics::counter!("neo_queue_nacked_total").increment(done.len() as u64);
        metrics::counter!("neo_queue_retries_total").increment(done.len() as u64 - dead);
        metrics::counter!("neo_queue_dead_lettered_total").increment(dead);
        let done: Vec<JobId> = done.into_iter().map(|(id, _)| id).collect();
        let receipts: Vec<Receipt> = failures.iter().map(|f| f.receipt).collect();
        Ok(refused(&receipts, &done))
    }

    /// Hands claims back without counting the attempt (shutdown).
    ///
    /// # Errors
    /// A database error.
    pub async fn release(&self, receipts: &[Receipt]) -> Result<Vec<Receipt>> {
        self.run_receipts(&self.sql.release, receipts, |q| q).await
    }

    /// Returns jobs whose lease expired to the queue (or to the dead letters after their last
    /// attempt); returns how many.
    ///
    /// # Errors
    /// A database error.
    pub async fn rescue_expired(&self) -> Result<u64> {
        let done = sqlx::query(Self::sql(&self.sql.rescue))
            .execute(self.db.pool())
            .await?;
        if done.rows_affected() > 0 {
            tracing::warn!(
                jobs = done.rows_affected(),
                "rescued jobs whose lease expired"
            );
            metrics::counter!("neo_queue_rescued_total").increment(done.rows_affected());
        }
        Ok(done.rows_affected())
    }

    /// The oldest dead letters.
    ///
    /// # Errors
    /// A database error.
    pub async fn dead_letters(&self, limit: u32) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(Self::sql(&self.sql.list_dead))
            .bind(i64::from(limit))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(record)
            .collect::<Result<_, _>>()
            .map_err(Error::from)
    }

    /// One job as stored (`None` once acknowledged).
    ///
    /// # Errors
    /// A database error.
    pub async fn get(&self, id: JobId) -> Result<Option<JobRecord>> {
        let row = sqlx::query(Self::sql(&self.sql.get))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(record).transpose().map_err(Error::from)
    }

    /// Puts dead letters back in the queue with fresh attempts; returns those requeued.
    ///
    /// # Errors
    /// A database error.
    pub async fn requeue(&self, ids: &[JobId]) -> Result<Vec<JobId>> {
        Ok(sqlx::query_scalar(Self::sql(&self.sql.requeue))
            .bind(ids)
            .bind(&self.config.channel)
            .fetch_all(self.db.pool())
            .await?)
    }

    /// Jobs per state (also exported as the `neo_queue_depth{state}` gauge).
    ///
    /// # Errors
    /// A database error.
    pub async fn depth(&self) -> Result<Depth> {
        let rows: Vec<(String, i64)> = sqlx::query_as(Self::sql(&self.sql.depth))
            .fetch_all(self.db.pool())
            .await?;
        let mut depth = Depth::default();
        for (state, count) in rows {
            match state.as_str() {
                "available" => depth.available = count,
                "running" => depth.running = count,
                "dead" => depth.dead = count,
                _ => {}
            }
            metrics::gauge!("neo_queue_depth", "state" => state).set(count as f64);
        }
        Ok(depth)
    }

    async fn run_receipts<'q>(
        &self,
        statement: &str,
        receipts: &[Receipt],
        extra: impl FnOnce(
            sqlx::query::QueryScalar<'q, Postgres, JobId, sqlx::postgres::PgArguments>,
        )
            -> sqlx::query::QueryScalar<'q, Postgres, JobId, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<Receipt>> {
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<JobId> = receipts.iter().map(|r| r.id).collect();
        let fences: Vec<i64> = receipts.iter().map(|r| r.fence).collect();
        let query = sqlx::query_scalar(Self::sql(statement))
            .persistent(RECEIPTS_PREPARED)
            .bind(ids)
            .bind(fences);
        let done: Vec<JobId> = extra(query).fetch_all(self.db.pool()).await?;
        Ok(refused(receipts, &done))
    }
}

/// Whether the statements over a batch of receipts (ack, nack, heartbeat, release) are
/// prepared. They are not: each call is planned for its table. A generic plan made while the
/// jobs table was small joins the receipts to a sequential scan of it, and keeps doing so as
/// it grows; planned per call, they probe the primary key once per receipt.
const RECEIPTS_PREPARED: bool = false;

fn refused(receipts: &[Receipt], done: &[JobId]) -> Vec<Receipt> {
    let done: HashSet<&JobId> = done.iter().collect();
    receipts
        .iter()
        .filter(|r| !done.contains(&r.id))
        .copied()
        .collect()
}

fn refused_to_result(refused: &[Receipt]) -> Result<()> {
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Error::LeaseLost {
            ids: refused.iter().map(|r| r.id).collect(),
        })
    }
}

fn record(r: &sqlx::postgres::PgRow) -> Result<JobRecord, sqlx::Error> {
    Ok(JobRecord {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        payload: r.try_get("payload")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        max_attempts: r.try_get("max_attempts")?,
        last_error: r.try_get("last_error")?,
        tenant: r.try_get("tenant")?,
        dead_at: r.try_get("dead_at")?,
    })
}

/// A unique-key violation becomes [`Error::Duplicate`] naming the key.
fn duplicate_or(error: sqlx::Error) -> Error {
    let key = error.as_database_error().and_then(|db| {
        if db.code().as_deref() != Some("23505") {
            return None;
        }
        let detail = db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?
            .detail()?
            .to_owned();
        let start = detail.find(")=(")? + 3;
        let end = detail.rfind(") already exists")?;
        Some(detail.get(start..end)?.to_owned())
    });
    match key {
        Some(key) => Error::Duplicate { key },
        None => Error::from(error),
    }
}

struct Columns {
    ids: Vec<JobId>,
    kinds: Vec<String>,
    payloads: Vec<serde_json::Value>,
    priorities: Vec<i16>,
    run_ats: Vec<Option<DateTime<Utc>>>,
    max_attempts: Vec<i32>,
    unique_keys: Vec<Option<String>>,
    tenants: Vec<Option<String>>,
}

impl Columns {
    fn with_capacity(n: usize) -> Self {
        Columns {
            ids: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            priorities: Vec::with_capacity(n),
            run_ats: Vec::with_capacity(n),
            max_attempts: Vec::with_capacity(n),
            unique_keys: Vec::with_capacity(n),
            tenants: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, job: &NewJob, default_attempts: i32) {
        self.ids.push(job.id);
        self.kinds.push(job.kind.clone());
        self.payloads.push(job.payload.clone());
        self.priorities.push(job.priority);
        self.run_ats.push(job.run_at);
        self.max_attempts
            .push(job.max_attempts.unwrap_or(default_attempts));
        self.unique_keys.push(job.unique_key.clone());
        self.tenants.push(job.tenant.clone());
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

pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
