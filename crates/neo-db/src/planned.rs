//! Statements planned for each call instead of prepared once, and prepared statements
//! planned again when one runs long.

use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Postgres, SqlSafeStr, SqlStr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

/// A column that a statement returns with its own time on the server so far, in
/// milliseconds (`server_ms`): the measure [`Replanning::ran`] takes, free of the time the
/// caller waited to be polled.
pub const SERVER_MS: &str =
    "extract(epoch FROM clock_timestamp() - statement_timestamp())::float8 * 1000 AS server_ms";

/// Which text a set of prepared statements is prepared under, so that they are planned again
/// when one runs long. A prepared statement switches to a generic plan after a few calls and
/// PostgreSQL keeps it until the table is next analysed: planned while a table (or today's
/// partition) was small, a sequential scan stays one as a burst fills it. A call that took
/// longer than `after` on the server moves the set to the next text, a comment apart
/// (`/* label plan n */`), which each connection then prepares and plans for the tables as
/// they are. The texts cycle through 16, which bounds each connection's statement cache.
///
/// Use it for statements that are cheap to run and worth preparing (planning would cost as
/// much as running them), but whose plan depends on a table's size; [`planned_per_call`]
/// for those whose plan depends on the call's values.
///
/// # Example
/// ```no_run
/// # async fn demo(db: neo_db::Db, ids: Vec<i64>) -> Result<(), sqlx::Error> {
/// use sqlx::{Row, SqlSafeStr};
/// use std::time::Duration;
/// let plans = neo_db::Replanning::new("orders", Duration::from_millis(30));
/// let statement = format!("SELECT id, {} FROM orders WHERE id = ANY($1)", neo_db::SERVER_MS);
/// let (generation, text) = plans.text(&sqlx::AssertSqlSafe(statement).into_sql_str());
/// let rows = sqlx::query(text).bind(&ids).fetch_all(db.pool()).await?;
/// for row in &rows {
///     plans.ran(generation, row.try_get("server_ms")?);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Replanning {
    /// The label as it goes into the comment.
    label: String,
    after: Duration,
    generation: AtomicU64,
}

/// Distinct texts a [`Replanning`] cycles through.
const PLAN_TEXTS: u64 = 16;

impl Replanning {
    /// Statements labelled `label` in their comment (letters, digits and `_`; anything else
    /// is left out of the comment), planned again after a call longer than `after` on the
    /// server; zero never replans.
    pub fn new(label: &str, after: Duration) -> Self {
        Replanning {
            label: label
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect(),
            after,
            generation: AtomicU64::new(0),
        }
    }

    /// The current generation and the text of `statement` under it.
    pub fn text(&self, statement: &SqlStr) -> (u64, SqlStr) {
        let generation = self.generation.load(Ordering::Relaxed);
        match generation % PLAN_TEXTS {
            0 => (generation, statement.clone()),
            n => {
                let text = format!("{} /* {} plan {n} */", statement.as_str(), self.label);
                (generation, AssertSqlSafe(text).into_sql_str())
            }
        }
    }

    /// Records that a call under `generation` took `server_ms` on the server: longer than
    /// the bound moves to the next text, once per generation however many of its calls ran
    /// long.
    pub fn ran(&self, generation: u64, server_ms: f64) {
        if self.after.is_zero() || server_ms <= self.after.as_secs_f64() * 1000.0 {
            return;
        }
        if self
            .generation
            .compare_exchange(
                generation,
                generation + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            tracing::debug!(
                statements = %self.label,
                server_ms,
                "a prepared statement ran long; its statements are prepared again for the tables as they are now"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement() -> SqlStr {
        AssertSqlSafe("SELECT 1").into_sql_str()
    }

    #[test]
    fn a_long_call_moves_the_set_to_the_next_text_once_per_generation() {
        let plans = Replanning::new("orders", Duration::from_millis(30));
        assert_eq!(plans.text(&statement()).1.as_str(), "SELECT 1");
        plans.ran(0, 29.9);
        assert_eq!(plans.text(&statement()).0, 0, "not longer than the bound");
        plans.ran(0, 31.0);
        plans.ran(0, 45.0);
        let (generation, text) = plans.text(&statement());
        assert_eq!(
            generation, 1,
            "two long calls of one generation move it once"
        );
        assert_eq!(text.as_str(), "SELECT 1 /* orders plan 1 */");
    }

    #[test]
    fn texts_cycle_and_labels_keep_only_identifier_characters() {
        let plans = Replanning::new("my-orders */ DROP", Duration::from_millis(1));
        for generation in 0..16 {
            plans.ran(generation, 2.0);
        }
        let (generation, text) = plans.text(&statement());
        assert_eq!(generation, 16);
        assert_eq!(
            text.as_str(),
            "SELECT 1",
            "the 17th text is the first again"
        );
        plans.ran(16, 2.0);
        assert_eq!(
            plans.text(&statement()).1.as_str(),
            "SELECT 1 /* myordersDROP plan 1 */"
        );
    }

    #[test]
    fn a_zero_bound_never_replans() {
        let plans = Replanning::new("orders", Duration::ZERO);
        plans.ran(0, 10_000.0);
        assert_eq!(plans.text(&statement()).0, 0);
    }
}
