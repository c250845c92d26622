//! Endpoint statistics: attempts, success rate and latency percentiles of an endpoint's
//! deliveries over a window, in one bounded query ([`Webhooks::endpoint_stats`]; the same
//! statement serves a console page of endpoints, [`Webhooks::endpoints_stats`]).

use super::store::{Webhooks, db_error, not_found};
use crate::EventError;
use sqlx::{AssertSqlSafe, Row};
use std::time::Duration;
use uuid::Uuid;

/// What an endpoint's deliveries did over a window, from [`Webhooks::endpoint_stats`].
///
/// Counted over the deliveries last attempted (or created) within the window, at most
/// [`WebhookConfig::stats_max_deliveries`](crate::WebhookConfig::stats_max_deliveries) of
/// each status (the most recent); `truncated` says when a cap was reached. Latencies are
/// those of each delivery's last attempt.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// The endpoint.
    pub endpoint_id: Uuid,
    /// The window counted.
    pub window: Duration,
    /// Deliveries counted.
    pub deliveries: i64,
    /// Attempts they made.
    pub attempts: i64,
    /// Deliveries the endpoint accepted (each with one successful attempt).
    pub delivered: i64,
    /// Deliveries given up (dead letters).
    pub dead: i64,
    /// Deliveries still pending.
    pub pending: i64,
    /// Successful attempts over all attempts (`delivered / attempts`); `None` without attempts.
    pub success_rate: Option<f64>,
    /// Median latency of the last attempts; `None` without one.
    pub latency_p50: Option<Duration>,
    /// 99th percentile latency of the last attempts; `None` without one.
    pub latency_p99: Option<Duration>,
    /// A status had more deliveries in the window than the cap: the oldest were not counted.
    pub truncated: bool,
}

/// The statement, for one endpoint or several (`$1 uuid[]`; the console reads a page of them
/// at once): each endpoint (so an unknown one, another tenant's under row-level security, or
/// one not of tenant `$4` when given, is no row) and its deliveries of the window, each
/// status read newest first along `webhook_deliveries_endpoint (endpoint_id, status,
/// updated_at)` and capped, so the query reads at most three caps of rows per endpoint
/// however busy it is.
pub(in crate::webhook) fn sql(endpoints: &str, deliveries: &str) -> String {
    let part = |status: &str| {
        format!(
            "(SELECT d.attempts, d.status, d.duration_ms FROM {deliveries} d \
             WHERE d.endpoint_id = e.id AND d.status = '{status}' \
             AND d.updated_at >= now() - $2 * interval '1 millisecond' \
             ORDER BY d.updated_at DESC LIMIT $3)"
        )
    };
    format!(
        "SELECT e.id AS endpoint_id, s.deliveries, s.attempts, s.delivered, s.dead, s.pending, s.p50, s.p99 \
         FROM {endpoints} e CROSS JOIN LATERAL (\
           SELECT count(*) AS deliveries, coalesce(sum(w.attempts), 0)::int8 AS attempts, \
           count(*) FILTER (WHERE w.status = 'delivered') AS delivered, \
           count(*) FILTER (WHERE w.status = 'dead') AS dead, \
           count(*) FILTER (WHERE w.status = 'pending') AS pending, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY w.duration_ms) AS p50, \
           percentile_cont(0.99) WITHIN GROUP (ORDER BY w.duration_ms) AS p99 \
           FROM ({} UNION ALL {} UNION ALL {}) w) s \
         WHERE e.id = ANY($1) AND ($4::uuid IS NULL OR e.tenant_id = $4) ORDER BY e.id",
        part("delivered"),
        part("dead"),
        part("pending"),
    )
}

/// One row of the statement as [`EndpointStats`].
fn stats_from_row(
    row: &sqlx::postgres::PgRow,
    window: Duration,
    cap: i64,
) -> Result<EndpointStats, EventError> {
    let count = |name: &str| row.try_get::<i64, _>(name).map_err(db_error);
    let latency = |name: &str| -> Result<Option<Duration>, EventError> {
        Ok(row
            .try_get::<Option<f64>, _>(name)
            .map_err(db_error)?
            .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1e3)))
    };
    let (delivered, dead, pending, attempts) = (
        count("delivered")?,
        count("dead")?,
        count("pending")?,
        count("attempts")?,
    );
    Ok(EndpointStats {
        endpoint_id: row.try_get("endpoint_id").map_err(db_error)?,
        window,
        deliveries: count("deliveries")?,
        attempts,
        delivered,
        dead,
        pending,
        #[allow(clippy::cast_precision_loss, reason = "a rate")]
        success_rate: (attempts > 0).then(|| delivered as f64 / attempts as f64),
        latency_p50: latency("p50")?,
        latency_p99: latency("p99")?,
        truncated: [delivered, dead, pending].iter().any(|n| *n >= cap),
    })
}

impl Webhooks {
    /// Attempts, success rate and latency p50/p99 of `endpoint`'s deliveries over the last
    /// `window` (see [`EndpointStats`]), in one query that reads a bounded number of rows.
    /// Under row-level security, of the task's tenant.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(webhooks: neo_events::Webhooks, endpoint: uuid::Uuid) -> Result<(), neo_events::EventError> {
    /// use std::time::Duration;
    /// let stats = webhooks.endpoint_stats(endpoint, Duration::from_secs(3600)).await?;
    /// println!(
    ///     "{} attempts, success {:?}, p99 {:?}",
    ///     stats.attempts, stats.success_rate, stats.latency_p99
    /// );
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`EventError::NotFound`] for an unknown endpoint (also another tenant's);
    /// [`EventError::Tenant`] under row-level security without a tenant in scope; a database
    /// error.
    pub async fn endpoint_stats(
        &self,
        endpoint: Uuid,
        window: Duration,
    ) -> Result<EndpointStats, EventError> {
        let (_, mut conn) = self.acting_connection(None).await?;
        let cap = self.inner.config.stats_max_deliveries;
        let mut rows = self
            .stats_rows(&mut conn, None, &[endpoint], window, cap)
            .await?;
        conn.finish().await?;
        rows.pop().ok_or_else(|| not_found("endpoint", endpoint))
    }

    /// The statement's rows for `endpoints` (of `tenant` when given) on `conn`, at most `cap`
    /// deliveries of each status per endpoint.
    pub(in crate::webhook) async fn stats_rows(
        &self,
        conn: &mut sqlx::PgConnection,
        tenant: Option<neo_core::TenantId>,
        endpoints: &[Uuid],
        window: Duration,
        cap: u32,
    ) -> Result<Vec<EndpointStats>, EventError> {
        let cap = i64::from(cap);
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.endpoint_stats.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(endpoints)
            .bind(window.as_secs_f64() * 1e3)
            .bind(cap)
            .bind(tenant)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| stats_from_row(row, window, cap))
            .collect()
    }
}
