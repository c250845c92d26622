//! Retention: finished jobs' rows pruned after a configured age, in bounded batches. An ack
//! deletes its job at once, so what is kept and pruned here is what outlives a job: dead
//! letters ([`retain_dead`](crate::QueueConfig::retain_dead)), cancelled jobs
//! ([`retain_cancelled`](crate::QueueConfig::retain_cancelled)) and the outputs handlers
//! recorded ([`retain_outputs`](crate::QueueConfig::retain_outputs); an output whose job is
//! still pending or running is kept). Each [`Queue::prune`] deletes at most
//! [`prune_batch`](crate::QueueConfig::prune_batch) rows of each, oldest first, each from its
//! own index; a [`Worker`](crate::Worker) prunes every
//! [`prune_interval`](crate::QueueConfig::prune_interval), and again at its next poll while a
//! batch came back full.
//!
//! It also deletes the rate limit's expired slots ([`super::rate`]) that no claim came back
//! for: older than the period, or than a day when the queue has no rate limit (any more).
//!
//! Pruning spans tenants: it runs on the [system `Db`](Queue::system_db).

use super::Queue;
use crate::Result;
use neo_db::TableName;
use sqlx::SqlStr;
use std::time::Duration;

/// The prune statements over one schema's tables: `$1` the age in ms, `$2` the batch.
#[derive(Debug)]
pub(super) struct RetentionSql {
    dead: SqlStr,
    cancelled: SqlStr,
    outputs: SqlStr,
    rate_windows: SqlStr,
}

impl RetentionSql {
    pub(super) fn new(t: &TableName) -> Self {
        let o = super::pause::sibling(t, "job_outputs");
        let jobs = |state: &str, at: &str| {
            super::statements::sql(format!(
                "DELETE FROM {t} WHERE id = ANY(ARRAY(SELECT id FROM {t} WHERE state = '{state}' \
                 AND {at} < now() - $1 * interval '1 millisecond' ORDER BY {at}, id LIMIT $2))"
            ))
        };
        let r = super::pause::sibling(t, "rate_limit_starts");
        RetentionSql {
            rate_windows: super::statements::sql(format!(
                "DELETE FROM {r} WHERE (partition, slot) IN (SELECT partition, slot FROM {r} \
                 WHERE slot <= now() - $1 * interval '1 millisecond' LIMIT $2)"
            )),
            dead: jobs("dead", "dead_at"),
            cancelled: jobs("cancelled", "cancelled_at"),
            outputs: super::statements::sql(format!(
                "DELETE FROM {o} WHERE id = ANY(ARRAY(SELECT o.id FROM {o} AS o \
                 WHERE o.updated_at < now() - $1 * interval '1 millisecond' \
                 AND NOT EXISTS (SELECT FROM {t} AS j WHERE j.id = o.id AND j.state IN ('available', 'running')) \
                 ORDER BY o.updated_at, o.id LIMIT $2))"
            )),
        }
    }
}

/// What one [`Queue::prune`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pruned {
    /// Dead letters older than `retain_dead`.
    pub dead: u64,
    /// Cancelled jobs older than `retain_cancelled`.
    pub cancelled: u64,
    /// Outputs older than `retain_outputs`.
    pub outputs: u64,
    /// The rate limit's slots older than its period.
    pub rate_windows: u64,
    /// Whether a batch came back full (more may be due: prune again).
    pub more: bool,
}

impl Queue {
    /// Deletes one batch ([`prune_batch`](crate::QueueConfig::prune_batch)) of each kind of
    /// row past its retention; a kind without one is kept.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(queue: neo_queue::Queue) -> neo_queue::Result<()> {
    /// // A maintenance job without a worker: prune until nothing is due.
    /// while queue.prune().await?.more {}
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A database error; [`Error::Tenant`](crate::Error::Tenant) in schema-per-tenant mode
    /// without a tenant.
    pub async fn prune(&self) -> Result<Pruned> {
        let config = &self.config;
        let batch = i64::from(config.prune_batch.max(1));
        let scope = self.system_scope()?;
        let sql = &scope.sql.retention;
        let mut pruned = Pruned::default();
        for (retain, statement, count) in [
            (config.retain_dead, &sql.dead, &mut pruned.dead),
            (
                config.retain_cancelled,
                &sql.cancelled,
                &mut pruned.cancelled,
            ),
            (config.retain_outputs, &sql.outputs, &mut pruned.outputs),
            (
                Some(
                    config
                        .rate_limit
                        .map_or(Duration::from_secs(24 * 3600), |r| r.period),
                ),
                &sql.rate_windows,
                &mut pruned.rate_windows,
            ),
        ] {
            let Some(retain) = retain else { continue };
            let mut conn = self.system_connection().await?;
            let done = sqlx::query(statement.clone())
                .persistent(self.system.pooler().named_statements())
                .bind(ms(retain))
                .bind(batch)
                .execute(&mut *conn)
                .await?;
            conn.finish().await?;
            *count = done.rows_affected();
            pruned.more |= done.rows_affected() >= batch as u64;
        }
        if pruned.dead + pruned.cancelled + pruned.outputs + pruned.rate_windows > 0 {
            tracing::debug!(?pruned, "pruned finished jobs past their retention");
        }
        Ok(pruned)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The worker's pruning: when `next` is due, one [`Queue::prune`]; returns when to prune next
/// (at the next poll while a batch came back full, else after `prune_interval`).
pub(crate) async fn prune_due(queue: &Queue, next: tokio::time::Instant) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    if now < next {
        return next;
    }
    match queue.prune().await {
        Ok(pruned) if pruned.more => now,
        Ok(_) => now + queue.config.prune_interval,
        Err(error) => {
            tracing::warn!(%error, "pruning finished jobs failed");
            now + queue.config.prune_interval
        }
    }
}
