//! Bounded reads for an operations console: one keyset page of endpoints (without their
//! secrets or header values), an endpoint's health over its latest deliveries, and one keyset
//! page of an endpoint's deliveries, newest first. Every statement reads at most `limit` (or
//! `window`) rows per endpoint through the `(endpoint_id, id)` index (migration 40).
//!
//! `tenant: None` reads every tenant's rows (on the system `Db`); `Some(tenant)` reads only
//! that tenant's, also without row-level security.

use super::{Webhooks, db_error};
use crate::EventError;
use crate::webhook::{Delivery, DeliveryStatus};
use chrono::{DateTime, Utc};
use neo_core::TenantId;
use neo_db::{StatementConnection, TableName};
use sqlx::{AssertSqlSafe, FromRow};
use uuid::Uuid;

/// An endpoint as a console lists it: no secret and no header values are read.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EndpointSummary {
    /// Its id.
    pub id: Uuid,
    /// Its tenant, if it belongs to one.
    pub tenant_id: Option<TenantId>,
    /// Where deliveries go.
    pub url: String,
    /// Whether deliveries are sent.
    pub enabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// Free text.
    pub description: String,
    /// Delivers in order, one at a time.
    pub fifo: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// An endpoint's health over its latest deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct EndpointHealth {
    /// The endpoint.
    pub endpoint_id: Uuid,
    /// Deliveries read (at most the window).
    pub deliveries: i64,
    /// Of those, attempted at least once.
    pub attempted: i64,
    /// Of those, delivered.
    pub delivered: i64,
    /// Of those, dead.
    pub dead: i64,
    /// Pending.
    pub pending: i64,
    /// Median duration of the last attempt, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile duration of the last attempt, in milliseconds.
    pub p99_ms: Option<f64>,
}

impl EndpointHealth {
    /// Delivered over attempted (1 when nothing was attempted).
    pub fn success_ratio(&self) -> f64 {
        if self.attempted == 0 {
            1.0
        } else {
            self.delivered as f64 / self.attempted as f64
        }
    }
}

#[derive(FromRow)]
struct SummaryRow {
    id: Uuid,
    tenant_id: Option<TenantId>,
    url: String,
    enabled: bool,
    disabled_reason: Option<String>,
    description: String,
    fifo: bool,
    created_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct HealthRow {
    endpoint_id: Uuid,
    deliveries: i64,
    attempted: i64,
    delivered: i64,
    dead: i64,
    pending: i64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

#[derive(FromRow)]
struct PageRow {
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

impl Webhooks {
    fn console_table(&self, name: &str) -> Result<TableName, EventError> {
        Ok(TableName::new(name)?.in_schema(&self.inner.schema))
    }

    async fn console_connection(
        &self,
        tenant: Option<TenantId>,
    ) -> Result<StatementConnection, EventError> {
        match tenant {
            None => Ok(self
                .inner
                .tenancy
                .system(&self.inner.db)
                .statement_connection()
                .await?),
            Some(tenant) => {
                self.inner
                    .tenancy
                    .connection(&self.inner.db, Some(tenant))
                    .await
            }
        }
    }

    /// One keyset page of endpoints in id order: those after `after`, at most `limit`, of
    /// `tenant` (`None`: every tenant's). Secrets and header values are not read.
    ///
    /// # Errors
    /// A database error.
    pub async fn endpoint_summaries(
        &self,
        tenant: Option<TenantId>,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<EndpointSummary>, EventError> {
        let endpoints = self.console_table("webhook_endpoints")?;
        let sql = format!(
            "SELECT id, tenant_id, url, enabled, disabled_reason, description, fifo, created_at \
             FROM {endpoints} WHERE ($1::uuid IS NULL OR tenant_id = $1) \
             AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
        );
        let mut conn = self.console_connection(tenant).await?;
        let rows: Vec<SummaryRow> = sqlx::query_as(AssertSqlSafe(sql))
            .persistent(false)
            .bind(tenant)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        conn.finish().await?;
        Ok(rows
            .into_iter()
            .map(|r| EndpointSummary {
                id: r.id,
                tenant_id: r.tenant_id,
                url: r.url,
                enabled: r.enabled,
                disabled_reason: r.disabled_reason,
                description: r.description,
                fifo: r.fifo,
                created_at: r.created_at,
            })
            .collect())
    }

    /// Health of each of `endpoints` over its latest `window` deliveries (of `tenant` when
    /// given).
    ///
    /// # Errors
    /// A database error.
    pub async fn endpoint_health(
        &self,
        tenant: Option<TenantId>,
        endpoints: &[Uuid],
        window: u32,
    ) -> Result<Vec<EndpointHealth>, EventError> {
        let deliveries = self.console_table("webhook_deliveries")?;
        let sql = format!(
            "SELECT e.id AS endpoint_id, h.* FROM UNNEST($1::uuid[]) AS e(id) CROSS JOIN LATERAL ( \
                 SELECT count(*) AS deliveries, \
                        count(*) FILTER (WHERE r.attempts > 0) AS attempted, \
                        count(*) FILTER (WHERE r.status = 'delivered') AS delivered, \
                        count(*) FILTER (WHERE r.status = 'dead') AS dead, \
                        count(*) FILTER (WHERE r.status = 'pending') AS pending, \
                        percentile_cont(0.5) WITHIN GROUP (ORDER BY r.duration_ms) AS p50_ms, \
                        percentile_cont(0.99) WITHIN GROUP (ORDER BY r.duration_ms) AS p99_ms \
                 FROM (SELECT d.status, d.attempts, d.duration_ms FROM {deliveries} d \
                       WHERE d.endpoint_id = e.id AND ($2::uuid IS NULL OR d.tenant_id = $2) \
                       ORDER BY d.id DESC LIMIT $3) AS r \
             ) AS h"
        );
        let mut conn = self.console_connection(tenant).await?;
        let rows: Vec<HealthRow> = sqlx::query_as(AssertSqlSafe(sql))
            .persistent(false)
            .bind(endpoints)
            .bind(tenant)
            .bind(i64::from(window))
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        conn.finish().await?;
        Ok(rows
            .into_iter()
            .map(|r| EndpointHealth {
                endpoint_id: r.endpoint_id,
                deliveries: r.deliveries,
                attempted: r.attempted,
                delivered: r.delivered,
                dead: r.dead,
                pending: r.pending,
                p50_ms: r.p50_ms,
                p99_ms: r.p99_ms,
            })
            .collect())
    }

    /// One keyset page of an endpoint's deliveries, newest first: those with an id below
    /// `before`, at most `limit`, optionally only with `status`, of `tenant` when given.
    ///
    /// # Errors
    /// A database error.
    pub async fn delivery_page(
        &self,
        tenant: Option<TenantId>,
        endpoint: Uuid,
        status: Option<DeliveryStatus>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Delivery>, EventError> {
        let deliveries = self.console_table("webhook_deliveries")?;
        let messages = self.console_table("webhook_messages")?;
        let sql = format!(
            "SELECT d.id, d.message_id, d.endpoint_id, d.tenant_id, m.event_type, d.status, d.attempts, \
                    d.response_status, d.response_body, d.duration_ms, d.last_error, d.next_attempt_at, \
                    d.created_at, d.delivered_at \
             FROM {deliveries} d JOIN {messages} m ON m.id = d.message_id \
             WHERE d.endpoint_id = $1 AND ($2::text IS NULL OR d.status = $2) \
             AND ($3::int8 IS NULL OR d.id < $3) AND ($4::uuid IS NULL OR d.tenant_id = $4) \
             ORDER BY d.id DESC LIMIT $5"
        );
        let mut conn = self.console_connection(tenant).await?;
        let rows: Vec<PageRow> = sqlx::query_as(AssertSqlSafe(sql))
            .persistent(false)
            .bind(endpoint)
            .bind(status.map(DeliveryStatus::as_str))
            .bind(before)
            .bind(tenant)
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        conn.finish().await?;
        rows.into_iter()
            .map(|r| {
                Ok(Delivery {
                    id: r.id,
                    message_id: r.message_id,
                    endpoint_id: r.endpoint_id,
                    tenant_id: r.tenant_id,
                    event_type: r.event_type,
                    status: DeliveryStatus::parse(&r.status)?,
                    attempts: r.attempts,
                    response_status: r.response_status,
                    response_body: r.response_body,
                    duration_ms: r.duration_ms,
                    last_error: r.last_error,
                    next_attempt_at: r.next_attempt_at,
                    created_at: r.created_at,
                    delivered_at: r.delivered_at,
                })
            })
            .collect()
    }

    /// The body of one message (the JSON a delivery sends), of `tenant` when given.
    ///
    /// # Errors
    /// A database error.
    pub async fn message_payload(
        &self,
        tenant: Option<TenantId>,
        message: Uuid,
    ) -> Result<Option<String>, EventError> {
        let messages = self.console_table("webhook_messages")?;
        let sql = format!(
            "SELECT body FROM {messages} WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)"
        );
        let mut conn = self.console_connection(tenant).await?;
        let body: Option<String> = sqlx::query_scalar(AssertSqlSafe(sql))
            .persistent(false)
            .bind(message)
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        conn.finish().await?;
        Ok(body)
    }
}
