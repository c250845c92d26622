//! Enqueue: a batch of jobs in one `INSERT ... SELECT FROM UNNEST`, on the pool or inside
//! the caller's transaction.

use super::Queue;
use super::tenant_mode::Scoped;
use crate::job::JobTenant;
use crate::{Error, NewJob, OnDuplicate, Result};
use chrono::{DateTime, Utc};
use neo_core::{JobId, TenantId, TraceContext};
use neo_db::RlsSetting;
use sqlx::types::Json;
use sqlx::{Acquire, Postgres};
use std::borrow::Cow;
use std::collections::HashSet;
use tracing::Instrument;

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
    /// In a tenant-isolated queue ([`Queue::tenant_isolated`]) the call acts for one tenant:
    /// the bound or the task's, or the one the jobs name; jobs without a tenant get it. Under
    /// row-level security the insert runs in a transaction that has the tenant's setting
    /// (its own on a pool; a savepoint in the caller's transaction, which should have
    /// entered the tenant with [`TenantIsolation::enter`](neo_db::TenantIsolation::enter) or
    /// `begin`; if it has not, the enqueue enters it for the rest of that transaction, and if
    /// it acts for another tenant the enqueue is refused).
    ///
    /// # Errors
    /// [`Error::Duplicate`] with [`OnDuplicate::Error`] (nothing is enqueued), or a database
    /// error. In a tenant-isolated queue, [`Error::Tenant`] when there is no tenant to act for
    /// and [`Error::Invalid`] for a job tenant that is not a tenant id, jobs of two tenants,
    /// or a caller's transaction acting for another tenant, all before anything is written.
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
            let mut jobs = jobs;
            if jobs.is_empty() {
                return Ok(Vec::new());
            }
            let tenant = self.stamp_tenant(&mut jobs)?;
            let scope = self.scope_of(tenant)?;
            let span = tracing::debug_span!(
                "neo_queue.enqueue",
                jobs = jobs.len(),
                tenant = tracing::field::Empty
            );
            if let Some(tenant) = one_tenant(jobs.iter().map(|j| j.tenant.as_ref())) {
                span.record("tenant", tracing::field::display(tenant));
            }
            async move {
                if let (Some(setting), Some(tenant)) = (self.rls_setting(), tenant) {
                    let mut tx = exec.begin().await?;
                    self.enter_checked(&mut tx, setting, tenant).await?;
                    let ids = self.enqueue_on(&mut tx, &scope, jobs, on_duplicate).await?;
                    tx.commit().await?;
                    return Ok(ids);
                }
                if self.db.pooler().needs_transaction() {
                    // Behind a transaction pooler even one statement needs a transaction
                    // (neo_db::Pooler); a savepoint inside the caller's unit of work.
                    let mut tx = exec.begin().await?;
                    let ids = self.enqueue_on(&mut tx, &scope, jobs, on_duplicate).await?;
                    tx.commit().await?;
                    return Ok(ids);
                }
                let mut conn = exec.acquire().await?;
                self.enqueue_on(&mut conn, &scope, jobs, on_duplicate).await
            }
            .instrument(span)
            .await
        }
    }

    /// Enqueues jobs of several tenants in one statement, in `exec`, for work that spans
    /// tenants by design (a webhook fan-out, a scheduler): what
    /// [`enqueue_many`](Self::enqueue_many) does in a queue with a fixed schema. Under
    /// row-level security every job must name its tenant (a [`TenantId`]); nothing checks or
    /// sets the transaction's tenant, so `exec` should be on the system role (`BYPASSRLS`), or
    /// act for the one tenant all the jobs name (the policy refuses any other row).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(queue: neo_queue::Queue, system: neo_db::Db) -> neo_queue::Result<()> {
    /// use neo_core::TenantId;
    /// use neo_queue::{NewJob, OnDuplicate};
    /// let jobs = [TenantId::new(), TenantId::new()]
    ///     .map(|tenant| NewJob::new("report.build", &serde_json::json!({})).map(|j| j.tenant_id(tenant)));
    /// let jobs = jobs.into_iter().collect::<Result<Vec<_>, _>>()?;
    /// queue.enqueue_across_tenants(system.pool(), jobs, OnDuplicate::Skip).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Invalid`], before anything is written, for a job without a tenant id under
    /// row-level security, and for a queue with a schema per tenant (each tenant's jobs are in
    /// its own table: enqueue them per tenant); otherwise as [`enqueue_many`](Self::enqueue_many).
    pub async fn enqueue_across_tenants<'c, A>(
        &self,
        exec: A,
        jobs: Vec<NewJob>,
        on_duplicate: OnDuplicate,
    ) -> Result<Vec<Option<JobId>>>
    where
        A: Acquire<'c, Database = Postgres> + Send,
    {
        if !self.is_tenant_isolated() {
            return self.enqueue_many(exec, jobs, on_duplicate).await;
        }
        if self.rls_setting().is_none() {
            return Err(Error::invalid(
                "enqueue across tenants",
                "a queue with a schema per tenant keeps each tenant's jobs in its own table: \
                 enqueue them per tenant",
            ));
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        const NEEDS_ID: &str = "under row-level security needs a tenant id";
        for job in &jobs {
            match &job.tenant {
                Some(tenant) => tenant.id(NEEDS_ID)?,
                None => crate::job::parse_job_tenant("", NEEDS_ID)?,
            };
        }
        let scope = self.scope_of(None)?;
        let mut tx = exec.begin().await?;
        let ids = self.enqueue_on(&mut tx, &scope, jobs, on_duplicate).await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// Puts `tenant`'s row-level-security setting in force in the open transaction, unless it
    /// is already (the caller's transaction entered it).
    ///
    /// # Errors
    /// [`Error::Invalid`] when the transaction acts for another tenant.
    async fn enter_checked(
        &self,
        conn: &mut sqlx::PgConnection,
        setting: &RlsSetting,
        tenant: TenantId,
    ) -> Result<()> {
        let entered: Option<String> = sqlx::query_scalar(
            "SELECT set_config($1, $2, true) WHERE coalesce(current_setting($1, true), '') IN ('', $2)",
        )
        .persistent(self.db.pooler().named_statements())
        .bind(setting.as_str())
        .bind(tenant.to_string())
        .fetch_optional(conn)
        .await?;
        match entered {
            Some(_) => Ok(()),
            None => Err(Error::invalid(
                "job tenant",
                format!("the transaction acts for another tenant than {tenant}"),
            )),
        }
    }

    /// The body of [`enqueue_many`](Self::enqueue_many), on the acquired connection.
    async fn enqueue_on(
        &self,
        conn: &mut sqlx::PgConnection,
        scope: &Scoped,
        jobs: Vec<NewJob>,
        on_duplicate: OnDuplicate,
    ) -> Result<Vec<Option<JobId>>> {
        let workflow = jobs.iter().any(|j| !j.depends_on.is_empty());
        if workflow {
            super::workflow::check(&jobs)?;
        }
        let columns = Columns::of(&jobs, self.config.default_max_attempts)?;
        if workflow {
            let inserted = self
                .enqueue_workflow_on(conn, &scope.sql, &jobs, &columns, on_duplicate)
                .await?;
            metrics::counter!(crate::metric_names::ENQUEUED_TOTAL).increment(inserted.len() as u64);
            let inserted: HashSet<JobId> = inserted.into_iter().collect();
            return Ok(jobs
                .iter()
                .map(|j| inserted.contains(&j.id).then_some(j.id))
                .collect());
        }
        let statement = match on_duplicate {
            OnDuplicate::Skip => &scope.sql.insert_skip,
            OnDuplicate::Error => &scope.sql.insert_strict,
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
            .bind(&columns.tenant)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| duplicate_or(e, &columns.unique_keys))?;
        metrics::counter!(crate::metric_names::ENQUEUED_TOTAL).increment(inserted.len() as u64);
        let inserted: HashSet<JobId> = inserted.into_iter().collect();
        Ok(jobs
            .iter()
            .map(|j| inserted.contains(&j.id).then_some(j.id))
            .collect())
    }
}

/// The tenant every one of `tenants` names, if they all name the same one.
pub(crate) fn one_tenant<'a, T: PartialEq + ?Sized + 'a>(
    mut tenants: impl Iterator<Item = Option<&'a T>>,
) -> Option<&'a T> {
    let first = tenants.next()??;
    tenants.all(|t| t == Some(first)).then_some(first)
}

/// A unique-key violation becomes [`Error::Duplicate`] naming the key. PostgreSQL names it
/// in the error's detail, except on a table under row-level security, where it leaves the
/// detail out (it could show another tenant's row); there the key is the call's one unique
/// key, or `one of: k1, k2` when the call had several.
pub(super) fn duplicate_or(error: sqlx::Error, keys: &[Option<&str>]) -> Error {
    let key = error.as_database_error().and_then(|db| {
        if db.code().as_deref() != Some("23505") {
            return None;
        }
        let detail = db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?
            .detail();
        if let Some(detail) = detail {
            let start = detail.find(")=(")? + 3;
            let end = detail.rfind(") already exists")?;
            return Some(detail.get(start..end)?.to_owned());
        }
        if db.constraint() != Some("jobs_unique_key") {
            return None;
        }
        let keys: Vec<&str> = keys.iter().flatten().copied().collect();
        match keys.as_slice() {
            [] => None,
            [key] => Some((*key).to_owned()),
            keys => Some(format!("one of: {}", keys.join(", "))),
        }
    });
    match key {
        Some(key) => Error::Duplicate { key },
        None => Error::from(error),
    }
}

/// Jobs as the insert statements' arrays (also the periodic round's, [`super::periodic`]).
/// The columns borrow the jobs' text and payloads: an enqueue copies each only into the
/// statement's buffer.
///
/// The tenants travel as one value when every job names the same one (or none): `tenants`
/// is then empty, UNNEST pads it with NULLs, and the statement takes `tenant` for each row
/// (`coalesce(u.tenant, $n)`), so a batch of one tenant sends and parses its text once.
/// Otherwise `tenants` has each job's and `tenant` is NULL.
pub(super) struct Columns<'a> {
    pub(super) ids: Vec<JobId>,
    pub(super) kinds: Vec<&'a str>,
    pub(super) payloads: Vec<&'a serde_json::Value>,
    pub(super) priorities: Vec<i16>,
    pub(super) run_ats: Vec<Option<DateTime<Utc>>>,
    pub(super) max_attempts: Vec<i32>,
    pub(super) unique_keys: Vec<Option<&'a str>>,
    pub(super) tenants: Vec<Option<Cow<'a, str>>>,
    pub(super) tenant: Option<Cow<'a, str>>,
    pub(super) traces: Vec<Option<Json<&'a TraceContext>>>,
}

impl<'a> Columns<'a> {
    /// The columns of `jobs`; a job without `max_attempts` gets `default_attempts`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a job whose `max_attempts` is below 1.
    pub(super) fn of(jobs: &'a [NewJob], default_attempts: i32) -> Result<Self> {
        let n = jobs.len();
        let mut columns = Columns {
            ids: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            priorities: Vec::with_capacity(n),
            run_ats: Vec::with_capacity(n),
            max_attempts: Vec::with_capacity(n),
            unique_keys: Vec::with_capacity(n),
            tenants: Vec::new(),
            tenant: None,
            traces: Vec::with_capacity(n),
        };
        for job in jobs {
            if job.max_attempts.is_some_and(|a| a < 1) {
                return Err(Error::invalid("max_attempts", "must be at least 1"));
            }
            columns.ids.push(job.id);
            columns.kinds.push(&job.kind);
            columns.payloads.push(&job.payload);
            columns.priorities.push(job.priority);
            columns.run_ats.push(job.run_at);
            columns
                .max_attempts
                .push(job.max_attempts.unwrap_or(default_attempts));
            columns.unique_keys.push(job.unique_key.as_deref());
            columns.traces.push(job.trace_context.as_ref().map(Json));
        }
        let first = jobs.first().and_then(|j| j.tenant.as_ref());
        if jobs.iter().all(|j| j.tenant.as_ref() == first) {
            columns.tenant = first.map(JobTenant::text);
        } else {
            columns.tenants = jobs
                .iter()
                .map(|j| j.tenant.as_ref().map(JobTenant::text))
                .collect();
        }
        Ok(columns)
    }
}
