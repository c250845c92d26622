//! Pause and resume: a paused queue's claims come back empty on every worker (the claim
//! statements check the `queue_pause` table once per claim), so no job starts until it is
//! resumed; jobs already running finish and are acknowledged as usual. Resuming wakes the
//! workers (NOTIFY), so they claim again at once rather than at their next poll.
//!
//! Pause is an operator's act over the whole queue, not a tenant's: it runs on the
//! [system `Db`](Queue::system_db) (the shared table under row-level security; the acting
//! tenant's schema with a schema per tenant, as claims do).

use super::Queue;
use crate::Result;
use chrono::{DateTime, Utc};
use neo_db::TableName;
use sqlx::{Row, SqlStr};

/// The statements of pause and resume over one schema's `queue_pause` table.
#[derive(Debug)]
pub(super) struct PauseSql {
    pause: SqlStr,
    resume: SqlStr,
    status: SqlStr,
}

impl PauseSql {
    pub(super) fn new(jobs: &TableName) -> Self {
        let t = sibling(jobs, "queue_pause");
        PauseSql {
            pause: super::statements::sql(format!(
                "INSERT INTO {t} (paused, paused_by) VALUES (true, $1) ON CONFLICT (paused) DO NOTHING RETURNING paused_at"
            )),
            resume: super::statements::sql(format!(
                "WITH gone AS (DELETE FROM {t} RETURNING paused_at) \
                 SELECT gone.paused_at FROM gone, (SELECT pg_notify($1, '')) AS woken"
            )),
            status: super::statements::sql(format!("SELECT paused_at, paused_by FROM {t}")),
        }
    }
}

/// The condition every claim adds to its due jobs' (`AND NOT EXISTS (...)`): none while the
/// queue is paused. Uncorrelated, so PostgreSQL evaluates it once per claim (an InitPlan).
pub(super) fn claim_filter(jobs: &TableName) -> String {
    format!(
        "AND NOT EXISTS (SELECT FROM {})",
        sibling(jobs, "queue_pause")
    )
}

/// `name` in the schema of `jobs`.
pub(super) fn sibling(jobs: &TableName, name: &str) -> TableName {
    let table = TableName::new(name).unwrap_or_else(|_| unreachable!("a fixed valid name"));
    match jobs.schema() {
        Some(schema) => table.in_schema(schema),
        None => table,
    }
}

/// Whether, since when and by whom a queue is paused ([`Queue::pause_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PauseStatus {
    /// When it was paused.
    pub paused_at: DateTime<Utc>,
    /// Who paused it, as given to [`Queue::pause`].
    pub paused_by: Option<String>,
}

impl Queue {
    /// Pauses the queue on every worker: from now on claims come back empty until
    /// [`resume`](Self::resume); running jobs finish. Returns false when it was already
    /// paused. `by` is recorded for [`pause_status`](Self::pause_status).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(queue: neo_queue::Queue) -> neo_queue::Result<()> {
    /// queue.pause(Some("deploy 1234")).await?;
    /// // ... migrate what the handlers read ...
    /// queue.resume().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A database error; [`Error::Tenant`](crate::Error::Tenant) in schema-per-tenant mode
    /// without a tenant.
    pub async fn pause(&self, by: Option<&str>) -> Result<bool> {
        let scope = self.system_scope()?;
        let mut conn = self.system_connection().await?;
        let row = sqlx::query(scope.sql.pause.pause.clone())
            .persistent(self.system.pooler().named_statements())
            .bind(by)
            .fetch_optional(&mut *conn)
            .await?;
        conn.finish().await?;
        if row.is_some() {
            tracing::info!(queue = %self.config.schema, by, "queue paused");
        }
        Ok(row.is_some())
    }

    /// Resumes a paused queue and wakes its workers; returns false when it was not paused.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(queue: neo_queue::Queue) -> neo_queue::Result<()> {
    /// if queue.resume().await? {
    ///     println!("workers claim again");
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As for [`pause`](Self::pause).
    pub async fn resume(&self) -> Result<bool> {
        let scope = self.system_scope()?;
        let mut conn = self.system_connection().await?;
        let row = sqlx::query(scope.sql.pause.resume.clone())
            .persistent(self.system.pooler().named_statements())
            .bind(&self.config.channel)
            .fetch_optional(&mut *conn)
            .await?;
        conn.finish().await?;
        if row.is_some() {
            tracing::info!(queue = %self.config.schema, "queue resumed");
        }
        Ok(row.is_some())
    }

    /// Whether the queue is paused: since when and by whom, or `None`.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(queue: neo_queue::Queue) -> neo_queue::Result<()> {
    /// if let Some(status) = queue.pause_status().await? {
    ///     println!("paused since {} by {:?}", status.paused_at, status.paused_by);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As for [`pause`](Self::pause).
    pub async fn pause_status(&self) -> Result<Option<PauseStatus>> {
        let scope = self.system_scope()?;
        let mut conn = self.system_connection().await?;
        let row = sqlx::query(scope.sql.pause.status.clone())
            .persistent(self.system.pooler().named_statements())
            .fetch_optional(&mut *conn)
            .await?;
        conn.finish().await?;
        row.map(|r| {
            Ok(PauseStatus {
                paused_at: r.try_get("paused_at")?,
                paused_by: r.try_get("paused_by")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| e.into())
    }
}
