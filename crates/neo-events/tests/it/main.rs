//! neo-events against real PostgreSQL, and its signatures against the reference crate and test vectors.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod outbox;
mod signatures;
mod tenancy;
#[cfg(feature = "webhooks")]
mod webhook_dispatch;
#[cfg(feature = "webhooks")]
mod webhook_fairness;
#[cfg(feature = "webhooks")]
mod webhook_faults;
#[cfg(feature = "webhooks")]
mod webhook_inline;
#[cfg(feature = "webhooks")]
mod webhook_isolation;
#[cfg(all(feature = "webhooks", feature = "archive"))]
mod webhook_partitions;
#[cfg(feature = "webhooks")]
mod webhook_regions;
#[cfg(feature = "webhooks")]
mod webhook_rotation;
#[cfg(feature = "webhooks")]
mod webhook_schemas;
#[cfg(feature = "webhooks")]
mod webhook_sealing;
#[cfg(feature = "webhooks")]
mod webhook_secrecy;
#[cfg(feature = "webhooks")]
mod webhook_spans;
#[cfg(feature = "webhooks")]
mod webhook_stats;
#[cfg(feature = "webhooks")]
mod webhook_trace;
#[cfg(feature = "webhooks")]
mod webhook_verification;
#[cfg(feature = "webhooks")]
mod webhooks;

/// Each row of `neo_events.<table>` whose id is in `ids`, with the partition holding it, as
/// `to_jsonb` gives the row, by id; read on `db` (the system `Db` reads every tenant's rows).
#[cfg(feature = "archive")]
async fn rows_by_partition<I>(
    db: &neo_db::Db,
    table: &str,
    ids: Vec<I>,
) -> Vec<(String, serde_json::Value)>
where
    Vec<I>: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
{
    let mut conn = db.statement_connection().await.unwrap();
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT c.relname::text, to_jsonb(r) FROM neo_events.{table} r \
         JOIN pg_class c ON c.oid = r.tableoid WHERE r.id = ANY($1) ORDER BY r.id"
    )))
    .persistent(false)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    conn.finish().await.unwrap();
    rows
}
