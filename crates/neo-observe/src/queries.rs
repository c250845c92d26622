//! The leader's database-wide readings. Every statement is bounded: counts stop at
//! `count_cap` rows, endpoint health reads at most `health_scan_cap` deliveries and returns at
//! most `max_endpoint_series` rows, and the whole sample runs under `statement_timeout`.
//! Statements are not prepared under a name: each runs once per interval, and unnamed
//! statements run behind a transaction pooler too.

use crate::{ObserveConfig, Result};
use neo_db::{Schema, TableName, UnitOfWork};
use sqlx::Row;

/// Jobs per state of one queue (capped counts) and the age of its oldest due job.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QueueReading {
    /// The queue's schema.
    pub queue: String,
    /// Jobs waiting to be claimed.
    pub available: i64,
    /// Jobs claimed and running.
    pub running: i64,
    /// Dead letters.
    pub dead: i64,
    /// Seconds since the oldest due, unclaimed job was due (0 when none).
    pub oldest_pending_seconds: f64,
}

/// The backlog of one outbox.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OutboxReading {
    /// The outbox's schema.
    pub outbox: String,
    /// Events not yet dispatched (capped).
    pub pending: i64,
    /// Seconds since the oldest of them was recorded (0 when none).
    pub lag_seconds: f64,
}

/// Health of one endpoint (or of the rest, under `endpoint = "other"`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EndpointReading {
    /// The endpoint's id, or `other`.
    pub endpoint: String,
    /// Delivered over attempted deliveries updated in the health window (1 when none).
    pub success_ratio: f64,
    /// Mean attempt duration in the window.
    pub latency_seconds: f64,
    /// Pending deliveries updated in the window.
    pub pending: i64,
}

/// Webhook health of one schema.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct WebhookReading {
    /// At most `max_endpoint_series` + 1 rows.
    pub endpoints: Vec<EndpointReading>,
    /// Endpoints disabled (capped).
    pub disabled: i64,
    /// Dead deliveries (capped).
    pub dead: i64,
}

/// Lock waits in this database.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct LockReading {
    /// Sessions waiting for a lock.
    pub waiting: i64,
    /// The longest wait so far.
    pub longest_seconds: f64,
}

fn capped_count(table: &TableName, filter: &str) -> String {
    format!("SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {filter} LIMIT $1) AS c")
}

async fn scalar_i64(uow: &mut UnitOfWork, sql: String, cap: i64) -> Result<i64> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .persistent(false)
        .bind(cap)
        .fetch_one(&mut ***uow)
        .await?)
}

async fn age(uow: &mut UnitOfWork, sql: String) -> Result<f64> {
    let age: Option<f64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .persistent(false)
        .fetch_one(&mut ***uow)
        .await?;
    Ok(age.unwrap_or(0.0).max(0.0))
}

pub(crate) async fn queue(uow: &mut UnitOfWork, schema: &str, cap: i64) -> Result<QueueReading> {
    let t = TableName::parse(&format!("{}.jobs", Schema::new(schema)?.as_str()))?;
    let available = scalar_i64(uow, capped_count(&t, "state = 'available'"), cap).await?;
    // Running jobs always have a lease owner; saying so lets the lease index answer.
    let running = scalar_i64(
        uow,
        capped_count(&t, "state = 'running' AND lease_owner IS NOT NULL"),
        cap,
    )
    .await?;
    let dead = scalar_i64(uow, capped_count(&t, "state = 'dead'"), cap).await?;
    // The oldest due job: the claim index is (priority DESC, run_at), so a plain min(run_at)
    // reads every available job (82 ms at 950k); this skips from one priority to the next
    // and reads the first due entry of each (0.3 ms: one probe per distinct priority).
    let oldest = age(
        uow,
        format!(
            "WITH RECURSIVE p(priority) AS ( \
                 (SELECT priority FROM {t} WHERE state = 'available' ORDER BY priority DESC LIMIT 1) \
                 UNION ALL \
                 SELECT (SELECT j.priority FROM {t} j WHERE j.state = 'available' AND j.priority < p.priority \
                         ORDER BY j.priority DESC LIMIT 1) \
                 FROM p WHERE p.priority IS NOT NULL \
             ) \
             SELECT extract(epoch FROM now() - min(( \
                 SELECT min(j.run_at) FROM {t} j \
                 WHERE j.state = 'available' AND j.priority = p.priority AND j.run_at <= now() \
             )))::float8 FROM p WHERE p.priority IS NOT NULL"
        ),
    )
    .await?;
    Ok(QueueReading {
        queue: schema.to_owned(),
        available,
        running,
        dead,
        oldest_pending_seconds: oldest,
    })
}

pub(crate) async fn outbox(uow: &mut UnitOfWork, schema: &str, cap: i64) -> Result<OutboxReading> {
    let t = TableName::parse(&format!("{}.outbox", Schema::new(schema)?.as_str()))?;
    let pending = scalar_i64(uow, capped_count(&t, "processed_at IS NULL"), cap).await?;
    let lag = age(
        uow,
        format!(
            "SELECT extract(epoch FROM now() - min(recorded_at))::float8 FROM {t} WHERE processed_at IS NULL"
        ),
    )
    .await?;
    Ok(OutboxReading {
        outbox: schema.to_owned(),
        pending,
        lag_seconds: lag,
    })
}

pub(crate) async fn webhooks(
    uow: &mut UnitOfWork,
    schema: &str,
    config: &ObserveConfig,
) -> Result<WebhookReading> {
    let s = Schema::new(schema)?;
    let deliveries = TableName::parse(&format!("{}.webhook_deliveries", s.as_str()))?;
    let endpoints = TableName::parse(&format!("{}.webhook_endpoints", s.as_str()))?;
    // The newest `health_scan_cap` updates in the window, read backwards along
    // `webhook_deliveries_updated` (webhooks migration 7): 0.5 ms at 1M deliveries with a
    // few hundred in the window, where the scan without that index read every row (200 ms).
    // The worst endpoints first (lowest success ratio, then most pending), the first
    // `max_endpoint_series` by name, the rest summed under "other".
    let sql = format!(
        "WITH recent AS ( \
             SELECT endpoint_id, status, attempts, duration_ms FROM {deliveries} \
             WHERE updated_at > now() - make_interval(secs => $1) ORDER BY updated_at DESC LIMIT $2 \
         ), per AS ( \
             SELECT endpoint_id, \
                    count(*) FILTER (WHERE status = 'delivered') AS ok, \
                    count(*) FILTER (WHERE attempts > 0) AS tried, \
                    count(*) FILTER (WHERE status = 'pending') AS pending, \
                    coalesce(sum(duration_ms), 0)::float8 AS ms, \
                    count(duration_ms) AS timed \
             FROM recent GROUP BY endpoint_id \
         ), ranked AS ( \
             SELECT *, row_number() OVER ( \
                 ORDER BY CASE WHEN tried = 0 THEN 1.0 ELSE ok::float8 / tried END, pending DESC, endpoint_id \
             ) AS rank FROM per \
         ) \
         SELECT CASE WHEN rank <= $3 THEN endpoint_id::text ELSE 'other' END AS endpoint, \
                sum(ok)::int8 AS ok, sum(tried)::int8 AS tried, sum(pending)::int8 AS pending, \
                sum(ms)::float8 AS ms, sum(timed)::int8 AS timed \
         FROM ranked GROUP BY 1 ORDER BY min(rank)"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .persistent(false)
        .bind(config.health_window.as_secs_f64())
        .bind(config.health_scan_cap)
        .bind(i64::try_from(config.max_endpoint_series).unwrap_or(i64::MAX))
        .fetch_all(&mut ***uow)
        .await?;
    let mut reading = WebhookReading::default();
    for row in rows {
        let ok: i64 = row.try_get("ok")?;
        let tried: i64 = row.try_get("tried")?;
        let ms: f64 = row.try_get("ms")?;
        let timed: i64 = row.try_get("timed")?;
        reading.endpoints.push(EndpointReading {
            endpoint: row.try_get("endpoint")?,
            success_ratio: if tried == 0 {
                1.0
            } else {
                ok as f64 / tried as f64
            },
            latency_seconds: if timed == 0 {
                0.0
            } else {
                ms / timed as f64 / 1e3
            },
            pending: row.try_get("pending")?,
        });
    }
    reading.disabled = scalar_i64(
        uow,
        capped_count(&endpoints, "NOT enabled"),
        config.count_cap,
    )
    .await?;
    // Along the partial index of dead deliveries (webhooks migration 7): 0.9 ms for 5,000
    // dead among 1M, where the scan read every row (180 ms).
    reading.dead = scalar_i64(
        uow,
        capped_count(&deliveries, "status = 'dead'"),
        config.count_cap,
    )
    .await?;
    Ok(reading)
}

pub(crate) async fn locks(uow: &mut UnitOfWork) -> Result<LockReading> {
    let row = sqlx::query(
        "SELECT count(*) AS waiting, \
                coalesce(max(extract(epoch FROM clock_timestamp() - state_change)), 0)::float8 AS longest \
         FROM pg_catalog.pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .persistent(false)
    .fetch_one(&mut ***uow)
    .await?;
    Ok(LockReading {
        waiting: row.try_get("waiting")?,
        longest_seconds: row.try_get::<f64, _>("longest")?.max(0.0),
    })
}
