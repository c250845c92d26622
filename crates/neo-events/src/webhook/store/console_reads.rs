//! Bounded reads for an operations console: one keyset page of endpoints (without their
//! secrets or header values), several endpoints' statistics (the statement of
//! [`Webhooks::endpoint_stats`]), one keyset page of an endpoint's deliveries, newest first,
//! and those deliveries' attempts. Every statement reads at most `limit` rows per endpoint
//! through the `(endpoint_id, id)` index (migration 40), a capped number per status through
//! `(endpoint_id, status, updated_at)`, or at most `attempt_history` attempts per delivery.
//!
//! `tenant: None` reads every tenant's rows (on the system `Db`); `Some(tenant)` reads only
//! that tenant's, also without row-level security.

use super::deliveries::DeliveryRow;
use super::sql::DELIVERY_COLUMNS;
use super::{Webhooks, db_error};
use crate::EventError;
use crate::webhook::{Delivery, DeliveryStatus, EndpointStats};
use chrono::{DateTime, Utc};
use neo_core::TenantId;
use neo_db::{StatementConnection, TableName};
use sqlx::{AssertSqlSafe, FromRow};
use std::time::Duration;
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

/// One attempt of a delivery, from its attempt history (webhooks migration 41; the latest
/// [`WebhookConfig::attempt_history`](crate::WebhookConfig::attempt_history) are kept).
#[derive(Debug, Clone, PartialEq, FromRow)]
#[non_exhaustive]
pub struct DeliveryAttempt {
    /// The delivery.
    pub delivery_id: i64,
    /// Its number, from 1 (a replayed delivery goes on counting).
    pub attempt: i32,
    /// The delivery's status after it: `delivered`, `pending` (a retry follows) or `dead`.
    pub outcome: String,
    /// The HTTP status answered, if any.
    pub response_status: Option<i32>,
    /// The start of the response body
    /// ([`attempt_excerpt_chars`](crate::WebhookConfig::attempt_excerpt_chars)).
    pub response_excerpt: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: Option<i32>,
    /// What went wrong, if anything (an excerpt).
    pub error: Option<String>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
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

    /// [`endpoint_stats`](Self::endpoint_stats) of each of `endpoints` (of `tenant` when
    /// given; others are left out) over the last `window`, in one statement, the same one,
    /// reading at most `max_per_status` deliveries of each status per endpoint (a page of
    /// endpoints wants fewer than
    /// [`stats_max_deliveries`](crate::WebhookConfig::stats_max_deliveries): at 1M deliveries
    /// in the window, 10 endpoints at 10,000 of each status took 0.9 s, at 200 a few ms).
    ///
    /// # Errors
    /// A database error.
    pub async fn endpoints_stats(
        &self,
        tenant: Option<TenantId>,
        endpoints: &[Uuid],
        window: Duration,
        max_per_status: u32,
    ) -> Result<Vec<EndpointStats>, EventError> {
        let mut conn = self.console_connection(tenant).await?;
        let rows = self
            .stats_rows(&mut conn, tenant, endpoints, window, max_per_status.max(1))
            .await?;
        conn.finish().await?;
        Ok(rows)
    }

    /// The attempts of `deliveries` (of `tenant` when given), each delivery's in order. A
    /// delivery delivered at its first attempt keeps that attempt in its own row only (the
    /// status write skips the history for it), and it is read from there.
    ///
    /// # Errors
    /// A database error.
    pub async fn delivery_attempts(
        &self,
        tenant: Option<TenantId>,
        deliveries: &[i64],
    ) -> Result<Vec<DeliveryAttempt>, EventError> {
        let attempts = self.console_table("webhook_delivery_attempts")?;
        let rows_of = self.console_table("webhook_deliveries")?;
        let sql = format!(
            "SELECT delivery_id, attempt, outcome, response_status, response_excerpt, duration_ms, error, created_at \
             FROM {attempts} WHERE delivery_id = ANY($1) AND ($2::uuid IS NULL OR tenant_id = $2) \
             UNION ALL \
             SELECT d.id, 1, d.status, d.response_status, left(d.response_body, $3), d.duration_ms, \
                    left(d.last_error, $3), coalesce(d.delivered_at, d.updated_at) \
             FROM {rows_of} d WHERE d.id = ANY($1) AND ($2::uuid IS NULL OR d.tenant_id = $2) \
             AND d.attempts = 1 AND d.status = 'delivered' \
             ORDER BY delivery_id DESC, attempt"
        );
        let excerpt = i32::try_from(self.inner.config.attempt_excerpt_chars).unwrap_or(i32::MAX);
        let mut conn = self.console_connection(tenant).await?;
        let rows: Vec<DeliveryAttempt> = sqlx::query_as(AssertSqlSafe(sql))
            .persistent(false)
            .bind(deliveries)
            .bind(tenant)
            .bind(excerpt)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        conn.finish().await?;
        Ok(rows)
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
            "SELECT {DELIVERY_COLUMNS} FROM {deliveries} d JOIN {messages} m ON m.id = d.message_id \
             WHERE d.endpoint_id = $1 AND ($2::text IS NULL OR d.status = $2) \
             AND ($3::int8 IS NULL OR d.id < $3) AND ($4::uuid IS NULL OR d.tenant_id = $4) \
             ORDER BY d.id DESC LIMIT $5"
        );
        let mut conn = self.console_connection(tenant).await?;
        let rows: Vec<DeliveryRow> = sqlx::query_as(AssertSqlSafe(sql))
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
        rows.into_iter().map(DeliveryRow::into_delivery).collect()
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
