//! Enqueue: a batch of jobs in one `INSERT ... SELECT FROM UNNEST`, on the pool or inside
//! the caller's transaction.

use super::Queue;
use crate::{Error, NewJob, OnDuplicate, Result};
use chrono::{DateTime, Utc};
use neo_core::{JobId, TraceContext};
use sqlx::types::Json;
use sqlx::{Acquire, Postgres};
use std::collections::HashSet;

impl Queue {
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
            if self.db.pooler().needs_transaction() {
                // Behind a transaction pooler even one statement needs a transaction
                // (neo_db::Pooler); a savepoint inside the caller's unit of work.
                let mut tx = exec.begin().await?;
                let ids = self.enqueue_on(&mut tx, jobs, on_duplicate).await?;
                tx.commit().await?;
                return Ok(ids);
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
        let inserted: Vec<JobId> = sqlx::query_scalar(statement.clone())
            .persistent(self.db.pooler().named_statements())
            .bind(&columns.ids)
            .bind(&columns.kinds)
            .bind(&columns.payloads)
            .bind(&columns.priorities)
            .bind(&columns.run_ats)
            .bind(&columns.max_attempts)
            .bind(&columns.unique_keys)
            .bind(&columns.tenants)
            .bind(&self.config.channel)
            .bind(&columns.traces)
            .fetch_all(&mut *conn)
            .await
            .map_err(duplicate_or)?;
        metrics::counter!(crate::metric_names::ENQUEUED_TOTAL).increment(inserted.len() as u64);
        let inserted: HashSet<JobId> = inserted.into_iter().collect();
        Ok(jobs
            .iter()
            .map(|j| inserted.contains(&j.id).then_some(j.id))
            .collect())
    }
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
    traces: Vec<Option<Json<TraceContext>>>,
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
            traces: Vec::with_capacity(n),
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
        self.traces.push(job.trace_context.clone().map(Json));
    }
}
