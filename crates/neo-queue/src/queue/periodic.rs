//! The stored side of periodic jobs ([`crate::PeriodicJobs`]): the `periodic_jobs` table
//! (the last tick of each periodic job, whether it is paused) and the one statement that
//! enqueues a round's ticks.
//!
//! Exactly one enqueue per tick across instances: the round's statement advances each due
//! periodic job's `last_tick` from the value the scheduler read (a compare-and-set) and
//! inserts the jobs of only the periodic jobs it advanced, in one statement. Of several
//! schedulers racing for a tick, the first to commit advances it; the others' updates wait
//! for its row lock, re-check `last_tick` against the committed row and advance nothing, so
//! they insert nothing. A scheduler that dies mid-statement (its transaction aborted, its
//! connection killed) leaves both unwritten, and the next round of any scheduler enqueues the
//! tick. Each job also carries a unique key per (periodic job, tick), under the queue's
//! `OnDuplicate::Skip` rule, so a tick is never pending twice.
//!
//! Like pause, periodic jobs are the operator's, not a tenant's: they run on the
//! [system `Db`](Queue::system_db).

use super::Queue;
use super::enqueue::Columns;
use crate::job::JobTenant;
use crate::{Error, NewJob, Result};
use chrono::{DateTime, Utc};
use neo_db::{StatementConnection, TableName};
use sqlx::{Row, SqlStr};

/// The statements over one schema's `periodic_jobs` table.
#[derive(Debug)]
pub(super) struct PeriodicSql {
    known: SqlStr,
    round: SqlStr,
    pause: SqlStr,
    resume: SqlStr,
    list: SqlStr,
}

impl PeriodicSql {
    /// `per_tenant_keys` as for the jobs table's insert ([`super::statements::Statements`]).
    pub(super) fn new(jobs: &TableName, per_tenant_keys: bool) -> Self {
        let p = super::pause::sibling(jobs, "periodic_jobs");
        let key = if per_tenant_keys {
            "(tenant_id, unique_key)"
        } else {
            "(unique_key)"
        };
        let sql = super::statements::sql;
        PeriodicSql {
            // Registers the names not stored yet (their last tick `$2`: no catch-up for a
            // periodic job never seen before) and reads every one's state. A row inserted by
            // this statement is not in the main query's snapshot, hence the union.
            known: sql(format!(
                "WITH added AS (INSERT INTO {p} (name, last_tick) SELECT n, $2 FROM UNNEST($1::text[]) AS n \
                 ON CONFLICT (name) DO NOTHING RETURNING name, last_tick, paused_at) \
                 SELECT name, last_tick, paused_at IS NOT NULL AS paused FROM {p} WHERE name = ANY($1) \
                 UNION ALL SELECT name, last_tick, paused_at IS NOT NULL FROM added"
            )),
            // $1..$10 as the queue's insert; $11 each job's periodic job; $12..$14 each due
            // periodic job's name, the last tick read and the new last tick; $15 the tenant
            // of every job when `$8` is empty (`Columns`). A paused
            // periodic job advances (its ticks are skipped) and enqueues nothing.
            round: sql(format!(
                "WITH advanced AS (UPDATE {p} AS p SET last_tick = a.tick, updated_at = now() \
                 FROM UNNEST($12::text[], $13::timestamptz[], $14::timestamptz[]) AS a(name, prev, tick) \
                 WHERE p.name = a.name AND p.last_tick = a.prev \
                 RETURNING p.name, p.paused_at IS NULL AS active), \
                 ins AS (INSERT INTO {jobs} (id, kind, payload, priority, run_at, max_attempts, unique_key, tenant, trace_context) \
                 SELECT u.id, u.kind, u.payload, u.priority, coalesce(u.run_at, now()), u.max_attempts, u.unique_key, coalesce(u.tenant, $15::text), u.trace_context \
                 FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::int2[], $5::timestamptz[], $6::int4[], $7::text[], $8::text[], $10::jsonb[], $11::text[]) \
                 AS u(id, kind, payload, priority, run_at, max_attempts, unique_key, tenant, trace_context, periodic) \
                 WHERE u.periodic IN (SELECT name FROM advanced WHERE active) \
                 ON CONFLICT {key} WHERE unique_key IS NOT NULL AND state IN ('available', 'running') DO NOTHING \
                 RETURNING id, run_at) \
                 SELECT coalesce((SELECT array_agg(name) FROM advanced WHERE active), '{{}}') AS active, \
                 coalesce((SELECT array_agg(name) FROM advanced WHERE NOT active), '{{}}') AS paused, \
                 (SELECT count(*) FROM ins) AS enqueued \
                 WHERE (SELECT count(pg_notify($9, '')) FROM (SELECT FROM ins WHERE run_at <= now() LIMIT 1) AS due) >= 0"
            )),
            pause: sql(format!(
                "INSERT INTO {p} AS p (name, last_tick, paused_at, paused_by) VALUES ($1, now(), now(), $2) \
                 ON CONFLICT (name) DO UPDATE SET paused_at = now(), paused_by = $2, updated_at = now() \
                 WHERE p.paused_at IS NULL RETURNING name"
            )),
            resume: sql(format!(
                "UPDATE {p} SET paused_at = NULL, paused_by = NULL, updated_at = now() \
                 WHERE name = $1 AND paused_at IS NOT NULL RETURNING name"
            )),
            list: sql(format!(
                "SELECT name, last_tick, known_since, paused_at, paused_by FROM {p} ORDER BY name"
            )),
        }
    }
}

/// A periodic job as stored ([`Queue::periodic_jobs`]): what any instance sees, whether or
/// not it has the job registered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeriodicState {
    /// The periodic job's name.
    pub name: String,
    /// Its latest tick that was enqueued, or skipped by its catch-up policy or a pause; when
    /// it was first seen, the time of that.
    pub last_tick: DateTime<Utc>,
    /// When a scheduler first registered it.
    pub known_since: DateTime<Utc>,
    /// When it was paused ([`Queue::pause_periodic`]), if it is.
    pub paused_at: Option<DateTime<Utc>>,
    /// Who paused it.
    pub paused_by: Option<String>,
}

/// A periodic job's stored state as a round reads it.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub(crate) name: String,
    pub(crate) last_tick: DateTime<Utc>,
    pub(crate) paused: bool,
}

/// What a round's statement did.
#[derive(Debug, Default)]
pub(crate) struct RoundWritten {
    /// The periodic jobs it advanced and enqueued for.
    pub(crate) active: Vec<String>,
    /// The paused ones it advanced without enqueuing.
    pub(crate) paused: Vec<String>,
    /// Jobs inserted.
    pub(crate) enqueued: u64,
}

/// One periodic job's move in a round: from the last tick read to the new one.
#[derive(Debug, Default)]
pub(crate) struct Advances {
    pub(crate) names: Vec<String>,
    pub(crate) prev: Vec<DateTime<Utc>>,
    pub(crate) ticks: Vec<DateTime<Utc>>,
}

impl Queue {
    /// A connection for a scheduler's round (the system `Db`).
    pub(crate) async fn periodic_connection(&self) -> Result<StatementConnection> {
        self.system_connection().await
    }

    /// Registers `names` not stored yet with `now` as their last tick and reads every one's
    /// state (a name registered meanwhile by another instance may be missing until the next
    /// round).
    pub(crate) async fn periodic_known(
        &self,
        conn: &mut sqlx::PgConnection,
        names: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<Known>> {
        let scope = self.system_scope()?;
        let rows = sqlx::query(scope.sql.periodic.known.clone())
            .persistent(self.system.pooler().named_statements())
            .bind(names)
            .bind(now)
            .fetch_all(conn)
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Known {
                    name: r.try_get("name")?,
                    last_tick: r.try_get("last_tick")?,
                    paused: r.try_get("paused")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }

    /// The round's one statement: advances every periodic job of `advances` whose last tick
    /// is still the one read, and inserts the jobs (`owners[i]` is the periodic job of
    /// `jobs[i]`) of those it advanced and are not paused.
    pub(crate) async fn periodic_round(
        &self,
        conn: &mut sqlx::PgConnection,
        advances: &Advances,
        owners: &[String],
        mut jobs: Vec<NewJob>,
    ) -> Result<RoundWritten> {
        let scope = self.system_scope()?;
        self.stamp_periodic_tenants(&mut jobs)?;
        let columns = Columns::of(&jobs, self.config.default_max_attempts)?;
        let row = sqlx::query(scope.sql.periodic.round.clone())
            .persistent(self.system.pooler().named_statements())
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
            .bind(owners)
            .bind(&advances.names)
            .bind(&advances.prev)
            .bind(&advances.ticks)
            .bind(&columns.tenant)
            .fetch_one(conn)
            .await?;
        let enqueued: i64 = row.try_get("enqueued")?;
        let enqueued = u64::try_from(enqueued).unwrap_or(0);
        metrics::counter!(crate::metric_names::ENQUEUED_TOTAL).increment(enqueued);
        Ok(RoundWritten {
            active: row.try_get("active")?,
            paused: row.try_get("paused")?,
            enqueued,
        })
    }

    /// Gives the round's jobs their tenants. Under row-level security the round runs on the
    /// system role across tenants, so its jobs may be of several tenants: each keeps the
    /// tenant it names (a tenant id), one without gets the acting tenant (bound or the
    /// task's). With a schema per tenant the round writes the acting tenant's table, and its
    /// jobs are that tenant's, as for an enqueue.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a tenant that is not a tenant id; [`Error::Tenant`] for a job
    /// without a tenant and no acting tenant.
    fn stamp_periodic_tenants(&self, jobs: &mut [NewJob]) -> Result<()> {
        if self.rls_setting().is_none() {
            self.stamp_tenant(jobs)?;
            return Ok(());
        }
        let acting = self.tenant.or_else(neo_tenant::current);
        for job in jobs.iter_mut() {
            match &job.tenant {
                Some(named) => {
                    named.id(super::tenant_mode::ISOLATED)?;
                }
                None => {
                    let tenant = acting.ok_or(neo_tenant::Error::NoTenantInScope)?;
                    job.tenant = Some(JobTenant::Id(tenant));
                }
            }
        }
        Ok(())
    }

    /// Pauses the periodic job `name` on every instance (persisted): its ticks pass without
    /// enqueuing anything until [`resume_periodic`](Self::resume_periodic); ticks missed
    /// while paused are not caught up. A name no scheduler registered yet is stored paused.
    /// Returns false when it was already paused.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(queue: neo_queue::Queue) -> neo_queue::Result<()> {
    /// queue.pause_periodic("nightly-report", Some("incident 77")).await?;
    /// queue.resume_periodic("nightly-report").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A database error; [`Error::Tenant`] in schema-per-tenant mode without a tenant.
    pub async fn pause_periodic(&self, name: &str, by: Option<&str>) -> Result<bool> {
        self.periodic_toggle(true, name, by).await
    }

    /// Resumes the paused periodic job `name`: its next tick enqueues again. Returns false
    /// when it was not paused.
    ///
    /// # Errors
    /// As for [`pause_periodic`](Self::pause_periodic).
    pub async fn resume_periodic(&self, name: &str) -> Result<bool> {
        self.periodic_toggle(false, name, None).await
    }

    async fn periodic_toggle(&self, pause: bool, name: &str, by: Option<&str>) -> Result<bool> {
        let scope = self.system_scope()?;
        let mut conn = self.system_connection().await?;
        let named = self.system.pooler().named_statements();
        let row = if pause {
            sqlx::query(scope.sql.periodic.pause.clone())
                .persistent(named)
                .bind(name)
                .bind(by)
                .fetch_optional(&mut *conn)
                .await?
        } else {
            sqlx::query(scope.sql.periodic.resume.clone())
                .persistent(named)
                .bind(name)
                .fetch_optional(&mut *conn)
                .await?
        };
        conn.finish().await?;
        if row.is_some() {
            tracing::info!(queue = %self.config.schema, periodic = name, pause, by, "periodic job paused or resumed");
        }
        Ok(row.is_some())
    }

    /// Every periodic job stored for this queue, by name: its last tick and whether it is
    /// paused. [`PeriodicJobs::list`](crate::PeriodicJobs::list) adds the next run time of
    /// the ones a registry has.
    ///
    /// # Errors
    /// As for [`pause_periodic`](Self::pause_periodic).
    pub async fn periodic_jobs(&self) -> Result<Vec<PeriodicState>> {
        let scope = self.system_scope()?;
        let mut conn = self.system_connection().await?;
        let rows = sqlx::query(scope.sql.periodic.list.clone())
            .persistent(self.system.pooler().named_statements())
            .fetch_all(&mut *conn)
            .await?;
        conn.finish().await?;
        rows.into_iter()
            .map(|r| {
                Ok(PeriodicState {
                    name: r.try_get("name")?,
                    last_tick: r.try_get("last_tick")?,
                    known_since: r.try_get("known_since")?,
                    paused_at: r.try_get("paused_at")?,
                    paused_by: r.try_get("paused_by")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }
}
