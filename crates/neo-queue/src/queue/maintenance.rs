//! Maintenance: rescuing expired leases, the dead letters (list, requeue), one job as stored
//! and the depth per state.
//!
//! Rescue spans tenants (the [system `Db`](Queue::system_db)); the others are tenant-scoped in
//! a tenant-isolated queue: they see and change only the acting tenant's jobs, and fail
//! closed without a tenant.

use super::Queue;
use crate::{Depth, Error, JobRecord, Result};
use neo_core::JobId;
use sqlx::{Connection, Row};

impl Queue {
    /// Returns jobs whose lease expired to the queue (or to the dead letters after their last
    /// attempt); returns how many.
    ///
    /// # Errors
    /// A database error; [`Error::Tenant`] in schema-per-tenant mode without a tenant.
    pub async fn rescue_expired(&self) -> Result<u64> {
        let scope = self.system_scope()?;
        let mut conn = self.system_connection().await?;
        // One transaction: a job that died here with dependents moves them on with it.
        let mut tx = conn.begin().await?;
        let rows = sqlx::query(scope.sql.rescue.clone())
            .persistent(self.system.pooler().named_statements())
            .fetch_all(&mut *tx)
            .await?;
        let mut orphaned = Vec::new();
        for row in &rows {
            if row.try_get::<bool, _>("orphaned")? {
                orphaned.push(row.try_get::<JobId, _>("id")?);
            }
        }
        super::workflow::resolve(
            &mut tx,
            &scope.sql,
            orphaned,
            super::workflow::Outcome::Dead,
            &self.config.channel,
        )
        .await?;
        tx.commit().await?;
        conn.finish().await?;
        let rescued = rows.len() as u64;
        if rescued > 0 {
            tracing::warn!(jobs = rescued, "rescued jobs whose lease expired");
            metrics::counter!(crate::metric_names::RESCUED_TOTAL).increment(rescued);
        }
        Ok(rescued)
    }

    /// The oldest dead letters.
    ///
    /// # Errors
    /// A database error; [`Error::Tenant`] in a tenant-isolated queue without a tenant.
    pub async fn dead_letters(&self, limit: u32) -> Result<Vec<JobRecord>> {
        let scope = self.tenant_scope()?;
        let mut conn = self.tenant_connection(&scope).await?;
        let rows = sqlx::query(scope.sql.list_dead.clone())
            .persistent(self.db.pooler().named_statements())
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await?;
        conn.finish().await?;
        rows.iter()
            .map(record)
            .collect::<Result<_, _>>()
            .map_err(Error::from)
    }

    /// One job as stored (`None` once acknowledged, or when it is another tenant's).
    ///
    /// # Errors
    /// A database error; [`Error::Tenant`] in a tenant-isolated queue without a tenant.
    pub async fn get(&self, id: JobId) -> Result<Option<JobRecord>> {
        let scope = self.tenant_scope()?;
        let mut conn = self.tenant_connection(&scope).await?;
        let row = sqlx::query(scope.sql.get.clone())
            .persistent(self.db.pooler().named_statements())
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        conn.finish().await?;
        row.as_ref().map(record).transpose().map_err(Error::from)
    }

    /// Puts dead letters back in the queue with fresh attempts; returns those requeued (never
    /// another tenant's).
    ///
    /// # Errors
    /// A database error; [`Error::Tenant`] in a tenant-isolated queue without a tenant.
    pub async fn requeue(&self, ids: &[JobId]) -> Result<Vec<JobId>> {
        let scope = self.tenant_scope()?;
        let mut conn = self.tenant_connection(&scope).await?;
        let requeued = sqlx::query_scalar(scope.sql.requeue.clone())
            .persistent(self.db.pooler().named_statements())
            .bind(ids)
            .bind(&self.config.channel)
            .fetch_all(&mut *conn)
            .await?;
        conn.finish().await?;
        Ok(requeued)
    }

    /// Jobs per state (also exported as the `neo_queue_depth_jobs{queue,state}` gauge); in a
    /// tenant-isolated queue, the acting tenant's jobs (and no gauge: metrics carry no tenant).
    ///
    /// # Errors
    /// A database error; [`Error::Tenant`] in a tenant-isolated queue without a tenant.
    pub async fn depth(&self) -> Result<Depth> {
        let scope = self.tenant_scope()?;
        let mut conn = self.tenant_connection(&scope).await?;
        let rows = sqlx::query(scope.sql.depth.clone())
            .persistent(self.db.pooler().named_statements())
            .fetch_all(&mut *conn)
            .await?;
        conn.finish().await?;
        let mut depth = Depth::default();
        for row in &rows {
            let state: String = row.try_get("state")?;
            let count: i64 = row.try_get("count")?;
            match state.as_str() {
                "available" => depth.available = count,
                "running" => depth.running = count,
                "dead" => depth.dead = count,
                "cancelled" => depth.cancelled = count,
                "waiting" => depth.waiting = count,
                _ => {}
            }
            if scope.tenant.is_none() {
                metrics::gauge!(crate::metric_names::DEPTH_JOBS, "queue" => self.config.schema.clone(), "state" => state).set(count as f64);
            }
        }
        Ok(depth)
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
