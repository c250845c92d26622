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
            let done: i64 =
                sqlx::query_scalar(AssertSqlSafe(self.inner.sql.purge_deliveries.clone()))
                    .persistent(self.inner.system.pooler().named_statements())
                    .bind(age_ms)
                    .bind(i64::from(batch))
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db_error)?;
            conn.finish().await?;
            let done = u64::try_from(done).unwrap_or(0);
            purged += done;
            if done < u64::from(batch) {
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

/// A delivery row, decoded by column name (`DELIVERY_COLUMNS`): what every read of
/// deliveries decodes (one delivery, an endpoint's, a console page of them).
#[derive(sqlx::FromRow)]
pub(super) struct DeliveryRow {
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

impl DeliveryRow {
    pub(super) fn into_delivery(self) -> Result<Delivery, EventError> {
        Ok(Delivery {
            id: self.id,
            message_id: self.message_id,
            endpoint_id: self.endpoint_id,
            tenant_id: self.tenant_id,
            event_type: self.event_type,
            status: DeliveryStatus::parse(&self.status)?,
            attempts: self.attempts,
            response_status: self.response_status,
            response_body: self.response_body,
            duration_ms: self.duration_ms,
            last_error: self.last_error,
            next_attempt_at: self.next_attempt_at,
            created_at: self.created_at,
            delivered_at: self.delivered_at,
        })
    }
}

fn delivery_from_row(row: &PgRow) -> Result<Delivery, EventError> {
    DeliveryRow::from_row(row)
        .map_err(db_error)?
        .into_delivery()
}
