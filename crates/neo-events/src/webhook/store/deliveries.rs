//! Deliveries: reading them, replaying dead letters, and purging finished ones.

use super::fan_out::Pending;
use super::{Webhooks, db_error, not_found};
use crate::EventError;
use crate::webhook::{Delivery, DeliveryStatus};
use chrono::{DateTime, Utc};
use neo_core::TenantId;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, FromRow};
use uuid::Uuid;

impl Webhooks {
    /// One delivery (under row-level security, of the task's tenant).
    ///
    /// # Errors
    /// [`EventError::NotFound`] (also for another tenant's); [`EventError::Tenant`] under
    /// row-level security without a tenant in scope; a database error.
    pub async fn delivery(&self, id: i64) -> Result<Delivery, EventError> {
        let (_, mut conn) = self.acting_connection(None).await?;
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.delivery.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?
            .ok_or_else(|| not_found("delivery", id))?;
        conn.finish().await?;
        delivery_from_row(&row)
    }

    /// An endpoint's deliveries, oldest first, optionally only those with `status`.
    ///
    /// # Errors
    /// A database error.
    pub async fn deliveries(
        &self,
        endpoint: Uuid,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> Result<Vec<Delivery>, EventError> {
        let (_, mut conn) = self.acting_connection(None).await?;
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.deliveries.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(endpoint)
            .bind(status.map(DeliveryStatus::as_str))
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        conn.finish().await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// Sends a dead delivery again (same `webhook-id`, fresh attempts); returns whether it was
    /// dead.
    ///
    /// # Errors
    /// A database or queue error.
    pub async fn replay(&self, delivery: i64) -> Result<bool, EventError> {
        let tenant = self.inner.tenancy.acting(None)?;
        let mut tx = self.inner.tenancy.begin(&self.inner.db, tenant).await?;
        let replayed: Vec<Pending> =
            sqlx::query_as(AssertSqlSafe(self.inner.sql.replay_one.clone()))
                .persistent(self.inner.db.pooler().named_statements())
                .bind(delivery)
                .fetch_all(&mut **tx)
                .await
                .map_err(db_error)?;
        self.enqueue_created(&mut tx, &replayed).await?;
        tx.commit().await?;
        Ok(!replayed.is_empty())
    }

    /// Sends again every delivery of `endpoint` that went dead since `since`; returns how many.
    ///
    /// # Errors
    /// A database or queue error.
    pub async fn replay_since(
        &self,
        endpoint: Uuid,
        since: DateTime<Utc>,
    ) -> Result<usize, EventError> {
        let tenant = self.inner.tenancy.acting(None)?;
        let mut tx = self.inner.tenancy.begin(&self.inner.db, tenant).await?;
        let replayed: Vec<Pending> =
            sqlx::query_as(AssertSqlSafe(self.inner.sql.replay_since.clone()))
                .persistent(self.inner.db.pooler().named_statements())
                .bind(endpoint)
                .bind(since)
                .fetch_all(&mut **tx)
                .await
                .map_err(db_error)?;
        self.enqueue_created(&mut tx, &replayed).await?;
        tx.commit().await?;
        Ok(replayed.len())
    }

    /// Deletes delivered and dead deliveries last changed more than `older_than` ago, `batch`
    /// rows per statement, then the messages left without deliveries; returns how many
    /// deliveries went. Retention spans tenants: under row-level security it runs on the
    /// system `Db` (offboarding one tenant is [`neo_tenant::TenantData::purge`]). Pending deliveries are never touched, except those a fan-out recorded
    /// for an endpoint that was deleted while it ran.
    ///
    /// # Errors
    /// [`EventError::Invalid`] for a zero batch; a database error (rows deleted by earlier
    /// statements stay deleted).
    pub async fn purge(
        &self,
        older_than: std::time::Duration,
        batch: u32,
    ) -> Result<u64, EventError> {
        if batch == 0 {
            return Err(EventError::Invalid {
                what: "purge batch",
                reason: "must be at least 1".into(),
            });
        }
        let age_ms = older_than.as_secs_f64() * 1e3;
        let mut purged = 0;
        loop {
            let mut conn = self.inner.system.statement_connection().await?;
            let done = sqlx::query(AssertSqlSafe(self.inner.sql.purge_deliveries.clone()))
                .persistent(self.inner.system.pooler().named_statements())
                .bind(age_ms)
                .bind(i64::from(batch))
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
            conn.finish().await?;
            purged += done.rows_affected();
            if done.rows_affected() < u64::from(batch) {
                break;
            }
        }
        let mut conn = self.inner.system.statement_connection().await?;
        sqlx::query(AssertSqlSafe(self.inner.sql.purge_messages.clone()))
            .persistent(self.inner.system.pooler().named_statements())
            .bind(age_ms)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        conn.finish().await?;
        Ok(purged)
    }
}

/// A delivery row, decoded by column name (`DELIVERY_COLUMNS`).
#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: i64,
    message_id: Uuid,
    endpoint_id: Uuid,
    tenant_id: Option<TenantId>,
    event_type: String,
    status: String,
    attempts: i32,
    response_status: Option<i32>,
    response_body: Option<String>,
    duration_ms: Option<i32>,
    last_error: Option<String>,
    next_attempt_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
}

fn delivery_from_row(row: &PgRow) -> Result<Delivery, EventError> {
    let row = DeliveryRow::from_row(row).map_err(db_error)?;
    Ok(Delivery {
        id: row.id,
        message_id: row.message_id,
        endpoint_id: row.endpoint_id,
        tenant_id: row.tenant_id,
        event_type: row.event_type,
        status: DeliveryStatus::parse(&row.status)?,
        attempts: row.attempts,
        response_status: row.response_status,
        response_body: row.response_body,
        duration_ms: row.duration_ms,
        last_error: row.last_error,
        next_attempt_at: row.next_attempt_at,
        created_at: row.created_at,
        delivered_at: row.delivered_at,
    })
}
