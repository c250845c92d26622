//! Cancellation of pending and running jobs: by id, by unique key, or by a query (kind and
//! payload containment). A cancelled job stays in state `cancelled` (readable with
//! [`Queue::get`], pruned by retention) and frees its unique key. A running job cancelled
//! loses its claim at once: its worker's fenced ack, nack or heartbeat is refused, and the
//! worker, woken by a notification (or at its next heartbeat), fires the job's cancellation
//! token ([`JobContext::cancelled`](crate::JobContext::cancelled)).
//!
//! Cancellation is tenant-scoped: in a tenant-isolated queue it sees and changes only the
//! acting tenant's jobs.

use super::Queue;
use crate::Result;
use neo_core::JobId;
use neo_db::TableName;
use sqlx::{Connection, Row, SqlStr};

/// The notification payload that tells workers some running jobs were cancelled.
pub(crate) const CANCEL_NOTICE: &str = "cancel";

/// The cancel statements over one `jobs` table: `$1` the ids, keys or kind, (`$2` the
/// payload the job's must contain), then the channel.
#[derive(Debug)]
pub(super) struct CancelSql {
    by_ids: SqlStr,
    by_keys: SqlStr,
    matching: SqlStr,
}

impl CancelSql {
    pub(super) fn new(t: &TableName) -> Self {
        // The jobs are locked first (a claim that holds one finishes first), so `was` is the
        // state the cancel changed; the workers are told only when a running job was among
        // them (one NOTIFY, sent at commit).
        let cancel = |filter: &str, channel: u8| {
            super::statements::sql(format!(
                "WITH target AS (SELECT id, state FROM {t} \
                   WHERE state IN ('available', 'running', 'waiting') AND {filter} FOR UPDATE), \
                 gone AS (UPDATE {t} AS j SET state = 'cancelled', cancelled_at = now(), \
                   lease_owner = NULL, lease_expires_at = NULL \
                   FROM target WHERE j.id = target.id \
                   RETURNING j.id, target.state AS was, j.has_dependents IS TRUE AS has_dependents) \
                 SELECT gone.id, gone.was, gone.has_dependents FROM gone \
                 WHERE (SELECT count(pg_notify(${channel}, '{CANCEL_NOTICE}')) \
                        FROM (SELECT FROM gone WHERE was = 'running' LIMIT 1) AS woken) >= 0"
            ))
        };
        CancelSql {
            by_ids: cancel("id = ANY($1)", 2),
            by_keys: cancel("unique_key = ANY($1)", 2),
            matching: cancel("kind = $1 AND ($2::jsonb IS NULL OR payload @> $2)", 3),
        }
    }
}

/// What a cancel changed ([`Queue::cancel`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cancelled {
    /// Jobs that were pending (available, scheduled, or waiting for their dependencies) and
    /// will not run. Their own dependents follow their
    /// [`OnDependencyFailure`](crate::OnDependencyFailure), in the same transaction.
    pub pending: Vec<JobId>,
    /// Jobs that were running: their handlers' cancellation tokens fire, and their acks and
    /// nacks are refused.
    pub running: Vec<JobId>,
}

impl Cancelled {
    /// How many jobs were cancelled.
    pub fn len(&self) -> usize {
        self.pending.len() + self.running.len()
    }

    /// Whether nothing was cancelled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which pending or running jobs [`Queue::cancel_matching`] cancels: those of one kind,
/// optionally only those whose payload contains a JSON value (`payload @> value`).
///
/// # Example
/// ```
/// use neo_queue::CancelFilter;
/// let filter = CancelFilter::kind("report.build")?
///     .payload_contains(serde_json::json!({ "account": 42 }));
/// # Ok::<(), neo_queue::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CancelFilter {
    kind: String,
    payload: Option<serde_json::Value>,
}

impl CancelFilter {
    /// Jobs of `kind`.
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) for a kind no job can have.
    pub fn kind(kind: &str) -> Result<Self> {
        crate::job::validate_kind(kind)?;
        Ok(CancelFilter {
            kind: kind.to_owned(),
            payload: None,
        })
    }

    /// Only jobs whose payload contains `value` (PostgreSQL's `@>`: every key and value of
    /// `value` is in the payload).
    #[must_use]
    pub fn payload_contains(mut self, value: serde_json::Value) -> Self {
        self.payload = Some(value);
        self
    }
}

impl Queue {
    /// Cancels these jobs if they are pending or running (others are left as they are).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(queue: neo_queue::Queue, id: neo_core::JobId) -> neo_queue::Result<()> {
    /// let cancelled = queue.cancel(&[id]).await?;
    /// if cancelled.running.contains(&id) {
    ///     println!("its handler sees the cancellation; its ack will be refused");
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A database error; [`Error::Tenant`](crate::Error::Tenant) in a tenant-isolated queue without a tenant.
    pub async fn cancel(&self, ids: &[JobId]) -> Result<Cancelled> {
        if ids.is_empty() {
            return Ok(Cancelled::default());
        }
        self.run_cancel(|sql| &sql.by_ids, |q| q.bind(ids)).await
    }

    /// Cancels the pending or running jobs that hold these unique keys
    /// ([`NewJob::unique_key`](crate::NewJob::unique_key)); the keys are free afterwards.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(queue: neo_queue::Queue) -> neo_queue::Result<()> {
    /// queue.cancel_unique_keys(&["welcome:jane".to_owned()]).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As for [`cancel`](Self::cancel).
    pub async fn cancel_unique_keys(&self, keys: &[String]) -> Result<Cancelled> {
        if keys.is_empty() {
            return Ok(Cancelled::default());
        }
        self.run_cancel(|sql| &sql.by_keys, |q| q.bind(keys)).await
    }

    /// Cancels every pending or running job that `filter` matches.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(queue: neo_queue::Queue) -> neo_queue::Result<()> {
    /// use neo_queue::CancelFilter;
    /// let filter = CancelFilter::kind("report.build")?
    ///     .payload_contains(serde_json::json!({ "account": 42 }));
    /// let cancelled = queue.cancel_matching(&filter).await?;
    /// println!("{} cancelled", cancelled.len());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As for [`cancel`](Self::cancel).
    pub async fn cancel_matching(&self, filter: &CancelFilter) -> Result<Cancelled> {
        let payload = filter.payload.clone();
        self.run_cancel(
            |sql| &sql.matching,
            |q| q.bind(filter.kind.as_str()).bind(payload),
        )
        .await
    }

    async fn run_cancel<'q>(
        &self,
        statement: impl FnOnce(&CancelSql) -> &SqlStr,
        bind: impl FnOnce(
            sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
        )
            -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Cancelled> {
        let scope = self.tenant_scope()?;
        let query = sqlx::query(statement(&scope.sql.cancel).clone())
            .persistent(self.db.pooler().named_statements());
        let mut conn = self.tenant_connection(&scope).await?;
        // One transaction: a cancelled job with dependents moves them on with it.
        let mut tx = conn.begin().await?;
        let rows = bind(query)
            .bind(self.config.channel.clone())
            .fetch_all(&mut *tx)
            .await?;
        let mut orphaned = Vec::new();
        for row in &rows {
            if row.try_get::<bool, _>("has_dependents")? {
                orphaned.push(row.try_get::<JobId, _>("id")?);
            }
        }
        super::workflow::resolve(
            &mut tx,
            &scope.sql,
            orphaned,
            super::workflow::Outcome::Cancelled,
            &self.config.channel,
        )
        .await?;
        tx.commit().await?;
        conn.finish().await?;
        let mut cancelled = Cancelled::default();
        for row in &rows {
            let id: JobId = row.try_get("id")?;
            let was: String = row.try_get("was")?;
            if was == "running" {
                cancelled.running.push(id);
            } else {
                cancelled.pending.push(id);
            }
        }
        if !cancelled.is_empty() {
            tracing::info!(
                pending = cancelled.pending.len(),
                running = cancelled.running.len(),
                "jobs cancelled"
            );
        }
        Ok(cancelled)
    }
}
