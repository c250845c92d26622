//! Readers for PostgreSQL's own statistics: the slowest statements, who waits on whom, and
//! query baselines ([`QueryBaselines`]: a `pg_stat_statements` snapshot kept in a table and
//! the statements slower since).

mod baseline;

pub use baseline::{
    BaselineConfig, BaselineFigures, QueryBaselines, Regression, StatementBaseline,
};

use crate::Result;
use crate::pool::Db;
use sqlx::Row;
use std::time::Duration;

/// One row of `pg_stat_statements`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StatementStats {
    /// The normalized statement text (constants replaced by `$n`).
    pub query: String,
    /// Times executed.
    pub calls: i64,
    /// Mean execution time.
    pub mean: Duration,
    /// Total execution time.
    pub total: Duration,
    /// Rows returned or affected, in total.
    pub rows: i64,
}

/// A session waiting for a lock, and one session blocking it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LockWait {
    /// Backend pid of the waiting session.
    pub waiting_pid: i32,
    /// What it is running.
    pub waiting_query: String,
    /// How long its statement has been running.
    pub waiting_for: Duration,
    /// The lock type it waits for (`relation`, `transactionid`, `tuple`, ...).
    pub lock_type: String,
    /// The lock mode (`ShareLock`, `RowExclusiveLock`, ...).
    pub mode: String,
    /// The relation, when the lock is on one.
    pub relation: Option<String>,
    /// Backend pid of a session holding a conflicting lock.
    pub blocking_pid: i32,
    /// What that session runs or last ran.
    pub blocking_query: String,
    /// Its state (`idle in transaction` is the usual culprit).
    pub blocking_state: Option<String>,
}

/// The `limit` statements with the highest mean execution time, from `pg_stat_statements`;
/// `None` when the extension is not usable in this database (it needs
/// `shared_preload_libraries = 'pg_stat_statements'` and `CREATE EXTENSION pg_stat_statements`).
///
/// # Errors
/// A database error.
pub async fn top_statements(db: &Db, limit: u32) -> Result<Option<Vec<StatementStats>>> {
    // A statement connection and `db.statement`: safe behind a transaction pooler.
    let mut conn = db.statement_connection().await?;
    let installed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_stat_statements') \
         AND 'pg_stat_statements' = ANY(string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','))",
    )
    .persistent(db.pooler().named_statements())
    .fetch_one(&mut *conn)
    .await?;
    if !installed {
        return Ok(None);
    }
    let rows = db
        .statement(
            "SELECT query, calls, mean_exec_time, total_exec_time, rows FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) \
         ORDER BY mean_exec_time DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
    conn.finish().await?;
    let millis = |ms: f64| Duration::from_secs_f64((ms / 1e3).max(0.0));
    rows.into_iter()
        .map(|row| {
            Ok(StatementStats {
                query: row.try_get("query")?,
                calls: row.try_get("calls")?,
                mean: millis(row.try_get("mean_exec_time")?),
                total: millis(row.try_get("total_exec_time")?),
                rows: row.try_get("rows")?,
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Sessions of this database waiting for a lock, each with the sessions blocking it
/// (`pg_locks` joined with `pg_stat_activity` through `pg_blocking_pids`), longest wait first.
/// Like [`top_statements`], it reads only the database `db` is connected to: another
/// database's relations would show as bare OIDs, since `regclass` resolves names here.
///
/// # Errors
/// A database error.
pub async fn lock_waits(db: &Db) -> Result<Vec<LockWait>> {
    let mut conn = db.statement_connection().await?;
    let rows = db.statement(
        "SELECT w.pid AS waiting_pid, coalesce(w.query, '') AS waiting_query, \
                extract(epoch FROM clock_timestamp() - coalesce(w.query_start, clock_timestamp()))::float8 AS waiting_seconds, \
                l.locktype, l.mode, l.relation::regclass::text AS relation, \
                b.pid AS blocking_pid, coalesce(b.query, '') AS blocking_query, b.state AS blocking_state \
         FROM pg_catalog.pg_stat_activity w \
         JOIN pg_catalog.pg_locks l ON l.pid = w.pid AND NOT l.granted \
         CROSS JOIN LATERAL unnest(pg_catalog.pg_blocking_pids(w.pid)) AS bp(pid) \
         JOIN pg_catalog.pg_stat_activity b ON b.pid = bp.pid \
         WHERE w.datname = current_database() \
         ORDER BY waiting_seconds DESC, w.pid, b.pid",
    )
    .fetch_all(&mut *conn)
    .await?;
    conn.finish().await?;
    rows.into_iter()
        .map(|row| {
            let seconds: f64 = row.try_get("waiting_seconds")?;
            Ok(LockWait {
                waiting_pid: row.try_get("waiting_pid")?,
                waiting_query: row.try_get("waiting_query")?,
                waiting_for: Duration::from_secs_f64(seconds.max(0.0)),
                lock_type: row.try_get("locktype")?,
                mode: row.try_get("mode")?,
                relation: row.try_get("relation")?,
                blocking_pid: row.try_get("blocking_pid")?,
                blocking_query: row.try_get("blocking_query")?,
                blocking_state: row.try_get("blocking_state")?,
            })
        })
        .collect()
}
