//! Moving pending jobs to another time ([`Queue::reschedule`]): earlier, when what the job
//! waits for came sooner than planned, or later; and withdrawing them ([`Queue::withdraw`])
//! when their work got done elsewhere. Only jobs not yet claimed move or go; the workers are
//! woken (one NOTIFY, at commit) when a job moved is due now.
//!
//! Both are tenant-scoped: in a tenant-isolated queue they see and change only the acting
//! tenant's jobs.

use super::Queue;
use super::statements::{BY_IDS, STILL_AVAILABLE, for_job};
use crate::Result;
use chrono::{DateTime, Utc};
use neo_core::JobId;
use neo_db::TableName;
use sqlx::{Row, SqlStr};

/// The reschedule statement over one `jobs` table: `$1` the ids (in id order), `$2` their new
/// times, `$3` the channel. The jobs are read [`BY_IDS`], each finds its time [`for_job`]
/// (nothing is joined), and their state is tested as [`STILL_AVAILABLE`] (see there).
pub(super) fn reschedule_sql(t: &TableName) -> SqlStr {
    let run_at = for_job(2, "timestamptz");
    super::statements::sql(format!(
        "WITH moved AS (UPDATE {t} AS j SET run_at = {run_at} \
           WHERE {BY_IDS} AND {STILL_AVAILABLE} RETURNING j.id, j.run_at) \
         SELECT moved.id FROM moved \
         WHERE (SELECT count(pg_notify($3, '')) \
                FROM (SELECT FROM moved WHERE run_at <= now() LIMIT 1) AS due) >= 0"
    ))
}

/// The withdraw statement over one `jobs` table: `$1` the ids. A job others depend on stays
/// (its dependents wait for it to complete or fail). The state is tested as
/// [`STILL_AVAILABLE`] (see there).
pub(super) fn withdraw_sql(t: &TableName) -> SqlStr {
    super::statements::sql(format!(
        "DELETE FROM {t} AS j WHERE j.id = ANY($1) AND {STILL_AVAILABLE} \
         AND j.has_dependents IS NOT TRUE RETURNING j.id"
    ))
}

impl Queue {
    /// Moves pending jobs to run at new times and returns the ids it moved. A job already
    /// claimed, finished, cancelled, dead, waiting for its dependencies or unknown is left as
    /// it is (and not returned): only a job no worker holds can move, so a move never races
    /// a running attempt. The attempt count does not change. A job given twice moves to the
    /// later of its times.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(queue: neo_queue::Queue, job: neo_core::JobId) -> neo_queue::Result<()> {
    /// let soon = chrono::Utc::now() + chrono::Duration::seconds(2);
    /// let moved = queue.reschedule(&[(job, soon)]).await?;
    /// assert!(moved.len() <= 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Tenant`](crate::Error::Tenant) when a tenant-isolated queue has no acting
    /// tenant; a database error.
    pub async fn reschedule(&self, jobs: &[(JobId, DateTime<Utc>)]) -> Result<Vec<JobId>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        // In id order, as the statement finds each job's time ([`for_job`]); of a job given
        // twice, the later time.
        let mut jobs = jobs.to_vec();
        jobs.sort_unstable();
        let (ids, times): (Vec<JobId>, Vec<DateTime<Utc>>) = jobs.into_iter().unzip();
        let scope = self.tenant_scope()?;
        let mut conn = self.tenant_connection(&scope).await?;
        let rows = sqlx::query(scope.sql.reschedule.clone())
            .persistent(self.db.pooler().named_statements())
            .bind(&ids)
            .bind(&times)
            .bind(&self.config.channel)
            .fetch_all(&mut *conn)
            .await?;
        conn.finish().await?;
        rows.iter().map(|row| Ok(row.try_get("id")?)).collect()
    }

    /// Removes pending jobs whose work got done elsewhere, as a completed job is removed, and
    /// returns the ids it removed; their unique keys are free afterwards. Unlike
    /// [`cancel`](Self::cancel) nothing is kept (no `cancelled` row for retention to prune).
    /// A job already claimed (its handler runs and should find the work done), finished,
    /// waiting for its dependencies, one that others depend on, or unknown is left as it is
    /// (and not returned).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(queue: neo_queue::Queue, job: neo_core::JobId) -> neo_queue::Result<()> {
    /// // The work was done inline; the job enqueued as its backstop is not needed.
    /// let removed = queue.withdraw(&[job]).await?;
    /// if removed.is_empty() {
    ///     println!("a worker holds it already: its handler finds the work done");
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Tenant`](crate::Error::Tenant) when a tenant-isolated queue has no acting
    /// tenant; a database error.
    pub async fn withdraw(&self, ids: &[JobId]) -> Result<Vec<JobId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let scope = self.tenant_scope()?;
        let mut conn = self.tenant_connection(&scope).await?;
        let rows = sqlx::query(scope.sql.withdraw.clone())
            .persistent(self.db.pooler().named_statements())
            .bind(ids)
            .fetch_all(&mut *conn)
            .await?;
        conn.finish().await?;
        rows.iter().map(|row| Ok(row.try_get("id")?)).collect()
    }
}
