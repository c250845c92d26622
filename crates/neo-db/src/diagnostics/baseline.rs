//! Query baselines: a snapshot of `pg_stat_statements` kept in a table, and the statements
//! that got slower since.
//!
//! [`QueryBaselines::capture`] stores, under a name (a release, a date), each statement of
//! this database (by `queryid`, summed over roles) with its calls, total execution time and
//! rows. [`QueryBaselines::compare`] reads the statistics again and, for each statement in
//! the baseline, takes the calls made **since** the capture (current minus baseline; all of
//! them when the statistics were reset meanwhile): a statement with at least
//! [`BaselineConfig::min_calls`] such calls whose mean time is at least
//! [`BaselineConfig::min_mean`] and at least [`BaselineConfig::regression_ratio`] times its
//! baseline mean is a [`Regression`]. [`QueryBaselines::export`] sets them as gauges,
//! at most [`BaselineConfig::max_regressions`] series.
//!
//! Needs `shared_preload_libraries = 'pg_stat_statements'` on the server and
//! `CREATE EXTENSION pg_stat_statements` in the database.

use crate::pool::Db;
use crate::{Error, Result, TableName};
use serde::Deserialize;
use sqlx::Row as _;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where baselines are kept and what counts as a regression (`NEO_DB_BASELINES__*` when
/// embedded in a config).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct BaselineConfig {
    /// The table (`name` or `schema.name`), created by [`QueryBaselines::install`].
    pub table: String,
    /// Calls since the baseline a statement needs before it is judged.
    pub min_calls: i64,
    /// Mean time since the baseline over the baseline's mean at which a statement is a
    /// regression.
    pub regression_ratio: f64,
    /// Mean time since the baseline below which a statement is never a regression (noise
    /// of fast statements).
    #[serde(with = "humantime_serde")]
    pub min_mean: Duration,
    /// Most regressions listed and exported (the worst first): bounds the metric series.
    pub max_regressions: usize,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            table: "neo_query_baselines".to_owned(),
            min_calls: 20,
            regression_ratio: 1.5,
            min_mean: Duration::from_millis(1),
            max_regressions: 20,
        }
    }
}

/// A statement that got slower since a baseline.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Regression {
    /// `pg_stat_statements.queryid`.
    pub queryid: i64,
    /// The normalized statement text (constants replaced by `$n`).
    pub query: String,
    /// Mean execution time in the baseline.
    pub baseline_mean: Duration,
    /// Mean execution time of the calls since the baseline.
    pub mean: Duration,
    /// `mean / baseline_mean`.
    pub ratio: f64,
    /// Calls in the baseline.
    pub baseline_calls: i64,
    /// Calls since the baseline.
    pub calls: i64,
    /// Rows per call in the baseline.
    pub baseline_rows_per_call: f64,
    /// Rows per call since the baseline.
    pub rows_per_call: f64,
}

/// A statement now, beside its baseline ([`QueryBaselines::top`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StatementBaseline {
    /// `pg_stat_statements.queryid`.
    pub queryid: i64,
    /// The normalized statement text (constants replaced by `$n`).
    pub query: String,
    /// Calls counted now (summed over roles).
    pub calls: i64,
    /// Total execution time counted now.
    pub total: Duration,
    /// Mean execution time counted now (`total / calls`).
    pub mean: Duration,
    /// Rows per call counted now.
    pub rows_per_call: f64,
    /// The baseline's figures, when the statement is in it.
    pub baseline: Option<BaselineFigures>,
}

/// A statement's figures in a baseline and since it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BaselineFigures {
    /// Calls in the baseline.
    pub calls: i64,
    /// Mean execution time in the baseline.
    pub mean: Duration,
    /// Calls since the baseline (all of them after a statistics reset).
    pub calls_since: i64,
    /// Mean execution time of the calls since the baseline (`None` without one).
    pub mean_since: Option<Duration>,
    /// `mean_since / mean` (`None` without calls since, or a zero baseline mean).
    pub ratio: Option<f64>,
    /// Whether it counts as a regression by the [`BaselineConfig`] (what
    /// [`QueryBaselines::compare`] lists).
    pub regressed: bool,
}

/// Captures and compares `pg_stat_statements` baselines (see the [`diagnostics`](crate::diagnostics) module docs).
#[derive(Debug, Clone)]
pub struct QueryBaselines {
    db: Db,
    table: TableName,
    config: BaselineConfig,
    /// Query ids exported last time, so a statement no longer regressed is set back.
    exported: Arc<Mutex<BTreeSet<i64>>>,
}

/// This database's statements, summed over roles.
const CURRENT: &str = "SELECT queryid, min(query) AS query, sum(calls)::int8 AS calls, \
     sum(total_exec_time)::float8 AS total_ms, sum(rows)::int8 AS rows \
     FROM pg_stat_statements \
     WHERE dbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) \
     AND queryid IS NOT NULL GROUP BY queryid";

impl QueryBaselines {
    /// Creates the baseline table if it is missing.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad table name; a database error.
    pub async fn install(db: &Db, config: BaselineConfig) -> Result<Self> {
        let table = TableName::parse(&config.table)?;
        let mut conn = db.statement_connection().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {table} (baseline text NOT NULL, queryid int8 NOT NULL, \
             query text NOT NULL, calls int8 NOT NULL, total_ms float8 NOT NULL, rows int8 NOT NULL, \
             captured_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (baseline, queryid))"
        )))
        .execute(&mut *conn)
        .await?;
        conn.finish().await?;
        Ok(QueryBaselines {
            db: db.clone(),
            table,
            config,
            exported: Arc::default(),
        })
    }

    async fn ensure_available(&self, conn: &mut sqlx::PgConnection) -> Result<()> {
        let installed: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_stat_statements') \
             AND 'pg_stat_statements' = ANY(string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','))",
        )
        .persistent(false)
        .fetch_one(&mut *conn)
        .await?;
        if installed {
            Ok(())
        } else {
            Err(Error::Config(
                "pg_stat_statements is not usable in this database: it needs \
                 shared_preload_libraries = 'pg_stat_statements' and CREATE EXTENSION pg_stat_statements"
                    .into(),
            ))
        }
    }

    /// Stores the current statistics as the baseline `name`, replacing one of that name.
    /// Returns the statements captured.
    ///
    /// # Errors
    /// [`Error::Config`] when `pg_stat_statements` is not usable; a database error.
    pub async fn capture(&self, name: &str) -> Result<u64> {
        let mut tx = self.db.begin().await?;
        self.ensure_available(&mut tx).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {} WHERE baseline = $1",
            self.table
        )))
        .persistent(false)
        .bind(name)
        .execute(&mut **tx)
        .await?;
        let captured = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} (baseline, queryid, query, calls, total_ms, rows) \
             SELECT $1, queryid, query, calls, total_ms, rows FROM ({CURRENT}) AS current",
            self.table
        )))
        .persistent(false)
        .bind(name)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        tracing::info!(
            baseline = name,
            statements = captured,
            "query baseline captured"
        );
        Ok(captured)
    }

    /// The statements slower now than in the baseline `name` (see the [`diagnostics`](crate::diagnostics) module docs),
    /// the worst ratio first, at most [`BaselineConfig::max_regressions`].
    ///
    /// # Errors
    /// [`Error::Config`] when `pg_stat_statements` is not usable; [`Error::Invalid`] when
    /// there is no baseline of that name; a database error.
    pub async fn compare(&self, name: &str) -> Result<Vec<Regression>> {
        let mut conn = self.db.statement_connection().await?;
        self.ensure_available(&mut conn).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT c.queryid, c.query, b.calls AS base_calls, b.total_ms AS base_total_ms, \
             b.rows AS base_rows, c.calls, c.total_ms, c.rows \
             FROM {} b LEFT JOIN ({CURRENT}) AS c ON c.queryid = b.queryid \
             WHERE b.baseline = $1",
            self.table
        )))
        .persistent(false)
        .bind(name)
        .fetch_all(&mut *conn)
        .await?;
        conn.finish().await?;
        if rows.is_empty() {
            return Err(Error::invalid(
                "baseline",
                format!("no baseline named {name:?} (capture it first)"),
            ));
        }
        let mut regressions = Vec::new();
        for row in rows {
            let Some(queryid) = row.try_get::<Option<i64>, _>("queryid")? else {
                continue; // not run since the statistics were reset
            };
            let (base_calls, base_total, base_rows): (i64, f64, i64) = (
                row.try_get("base_calls")?,
                row.try_get("base_total_ms")?,
                row.try_get("base_rows")?,
            );
            let (calls, total, rows_now): (i64, f64, i64) = (
                row.try_get("calls")?,
                row.try_get("total_ms")?,
                row.try_get("rows")?,
            );
            let (calls, total, rows_now) = if calls >= base_calls {
                (calls - base_calls, total - base_total, rows_now - base_rows)
            } else {
                (calls, total, rows_now) // reset since the capture: all of it is new
            };
            if base_calls <= 0 || calls < self.config.min_calls.max(1) {
                continue;
            }
            let base_mean = base_total / base_calls as f64;
            let mean = total.max(0.0) / calls as f64;
            if base_mean <= 0.0 {
                continue;
            }
            let ratio = mean / base_mean;
            let millis = |ms: f64| Duration::from_secs_f64((ms / 1e3).max(0.0));
            if ratio >= self.config.regression_ratio && millis(mean) >= self.config.min_mean {
                regressions.push(Regression {
                    queryid,
                    query: row.try_get("query")?,
                    baseline_mean: millis(base_mean),
                    mean: millis(mean),
                    ratio,
                    baseline_calls: base_calls,
                    calls,
                    baseline_rows_per_call: base_rows as f64 / base_calls as f64,
                    rows_per_call: rows_now as f64 / calls as f64,
                });
            }
        }
        regressions.sort_by(|a, b| b.ratio.total_cmp(&a.ratio));
        regressions.truncate(self.config.max_regressions);
        Ok(regressions)
    }

    /// The `limit` statements with the most total execution time now, each with its figures
    /// in the baseline `name` and since it (`baseline` is `None` for a statement the baseline
    /// does not hold; there need not be a baseline of that name at all). For an operations
    /// page: [`compare`](Self::compare) lists only the regressions.
    ///
    /// # Errors
    /// [`Error::Config`] when `pg_stat_statements` is not usable; a database error.
    pub async fn top(&self, name: &str, limit: u32) -> Result<Vec<StatementBaseline>> {
        let mut conn = self.db.statement_connection().await?;
        self.ensure_available(&mut conn).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT c.queryid, c.query, c.calls, c.total_ms, c.rows, \
             b.calls AS base_calls, b.total_ms AS base_total_ms \
             FROM ({CURRENT}) AS c LEFT JOIN {} b ON b.queryid = c.queryid AND b.baseline = $1 \
             ORDER BY c.total_ms DESC, c.queryid LIMIT $2",
            self.table
        )))
        .persistent(false)
        .bind(name)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        conn.finish().await?;
        let millis = |ms: f64| Duration::from_secs_f64((ms / 1e3).max(0.0));
        let mut top = Vec::with_capacity(rows.len());
        for row in rows {
            let (calls, total, rows_now): (i64, f64, i64) = (
                row.try_get("calls")?,
                row.try_get("total_ms")?,
                row.try_get("rows")?,
            );
            let base: (Option<i64>, Option<f64>) =
                (row.try_get("base_calls")?, row.try_get("base_total_ms")?);
            let baseline = match base {
                (Some(base_calls), Some(base_total)) => {
                    let (calls_since, total_since) = if calls >= base_calls {
                        (calls - base_calls, total - base_total)
                    } else {
                        (calls, total)
                    };
                    let base_mean = if base_calls > 0 {
                        base_total / base_calls as f64
                    } else {
                        0.0
                    };
                    let mean_since =
                        (calls_since > 0).then(|| total_since.max(0.0) / calls_since as f64);
                    let ratio = mean_since
                        .filter(|_| base_mean > 0.0)
                        .map(|m| m / base_mean);
                    let regressed = ratio.is_some_and(|r| r >= self.config.regression_ratio)
                        && calls_since >= self.config.min_calls.max(1)
                        && mean_since.is_some_and(|m| millis(m) >= self.config.min_mean);
                    Some(BaselineFigures {
                        calls: base_calls,
                        mean: millis(base_mean),
                        calls_since,
                        mean_since: mean_since.map(millis),
                        ratio,
                        regressed,
                    })
                }
                _ => None,
            };
            top.push(StatementBaseline {
                queryid: row.try_get("queryid")?,
                query: row.try_get("query")?,
                calls,
                total: millis(total),
                mean: millis(if calls > 0 { total / calls as f64 } else { 0.0 }),
                rows_per_call: if calls > 0 {
                    rows_now as f64 / calls as f64
                } else {
                    0.0
                },
                baseline,
            });
        }
        Ok(top)
    }

    /// Sets the gauges: `neo_db_regressed_queries` (how many), and per regressed statement
    /// `neo_db_query_regression_ratio{queryid}` and `neo_db_query_regression_mean_seconds{queryid}`;
    /// a statement exported before and not regressed now is set to 0. Each regression is
    /// also logged at WARN (query id, ratio, means; not the statement text).
    pub fn export(&self, regressions: &[Regression]) {
        metrics::gauge!(crate::metric_names::REGRESSED_QUERIES).set(regressions.len() as f64);
        let now: BTreeSet<i64> = regressions.iter().map(|r| r.queryid).collect();
        let mut exported = neo_core::sync::lock(&self.exported);
        for gone in exported.difference(&now) {
            let id = gone.to_string();
            metrics::gauge!(crate::metric_names::QUERY_REGRESSION_RATIO, "queryid" => id.clone())
                .set(0.0);
            metrics::gauge!(crate::metric_names::QUERY_REGRESSION_MEAN_SECONDS, "queryid" => id)
                .set(0.0);
        }
        for r in regressions {
            let id = r.queryid.to_string();
            metrics::gauge!(crate::metric_names::QUERY_REGRESSION_RATIO, "queryid" => id.clone())
                .set(r.ratio);
            metrics::gauge!(crate::metric_names::QUERY_REGRESSION_MEAN_SECONDS, "queryid" => id)
                .set(r.mean.as_secs_f64());
            tracing::warn!(
                queryid = r.queryid,
                ratio = r.ratio,
                mean_ms = r.mean.as_secs_f64() * 1e3,
                baseline_mean_ms = r.baseline_mean.as_secs_f64() * 1e3,
                calls = r.calls,
                "query slower than its baseline"
            );
        }
        *exported = now;
    }
}
