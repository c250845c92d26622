//! Statements planned for each call instead of prepared once.

use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Postgres, SqlSafeStr};

/// A statement that PostgreSQL plans on every call, with that call's parameters, instead of
/// preparing it once per connection and reusing the plan (sqlx's default).
///
/// A prepared statement may switch to a generic plan after a few executions, chosen without
/// the parameter values and from the table statistics of that moment. For a batch statement
/// over a table that starts nearly empty and fills up (an outbox, a job queue, a delivery log)
/// that plan can be a sequential scan, and it stays one as the table grows. Planned per call,
/// the statement keeps probing its index; the price is one planning per call. neo-events
/// measured it at 20,000 deliveries: the delivery read went from 1.56 to 0.42 ms and the
/// outbox claim from 5.3 to 1.7 ms; neo-queue plans its ack, nack, heartbeat and release
/// this way.
///
/// Use it for statements whose good plan depends on the table's size or the batch's values;
/// keep the prepared default for the rest. As with [`sqlx::query()`], the text must be safe:
/// built from validated identifiers ([`crate::quote_identifier`]) and fixed keywords, with
/// values bound as parameters.
///
/// Unnamed, such a statement fails with 26000 the first time a connection meets a
/// user-defined type (an enum column) in its result, unless the pool resolved the type when
/// it connected, as it does behind a transaction pooler (`pooler = "transaction"`); directly,
/// cast such columns to `text` or keep the prepared default for them.
///
/// # Example
/// ```no_run
/// # async fn demo(db: neo_db::Db, ids: Vec<uuid::Uuid>) -> Result<(), sqlx::Error> {
/// use sqlx::Row;
/// let rows = neo_db::planned_per_call("DELETE FROM jobs WHERE id = ANY($1) RETURNING id")
///     .bind(&ids)
///     .fetch_all(db.pool())
///     .await?;
/// let deleted: Vec<uuid::Uuid> = rows.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?;
/// # Ok(()) }
/// ```
pub fn planned_per_call<'q>(sql: impl SqlSafeStr) -> Query<'q, Postgres, PgArguments> {
    sqlx::query(sql).persistent(false)
}
