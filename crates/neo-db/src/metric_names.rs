//! The names of the metrics this crate emits (the code emits through these constants) and
//! their catalogue entries; `docs/METRICS.md` lists every crate's, and neo-observe's
//! catalogue test checks that code, catalogue and document agree.

use neo_core::MetricDef;

/// Statements run, by statement name and outcome (`ok`, `error`).
pub const QUERIES_TOTAL: &str = "neo_db_queries_total";
/// Statement durations, by statement name.
pub const QUERY_DURATION_SECONDS: &str = "neo_db_query_duration_seconds";
/// Statements slower than `slow_query_threshold`, by statement name.
pub const SLOW_QUERIES_TOTAL: &str = "neo_db_slow_queries_total";
/// Time to get a connection from the pool.
pub const POOL_ACQUIRE_SECONDS: &str = "neo_db_pool_acquire_seconds";
/// Acquires that gave up after `acquire_timeout`.
pub const POOL_ACQUIRE_TIMEOUTS_TOTAL: &str = "neo_db_pool_acquire_timeouts_total";
/// Connections or transactions held longer than `held_too_long_threshold`.
pub const CONNECTIONS_HELD_TOO_LONG_TOTAL: &str = "neo_db_connections_held_too_long_total";
/// Pool connections by state (`idle`, `in_use`).
pub const POOL_CONNECTIONS: &str = "neo_db_pool_connections";
/// Largest allowed pool size.
pub const POOL_MAX_CONNECTIONS: &str = "neo_db_pool_max_connections";
/// Sessions of this database waiting for a lock.
pub const LOCK_WAITS_SESSIONS: &str = "neo_db_lock_waits_sessions";
/// The longest current lock wait in this database.
pub const LOCK_WAIT_LONGEST_SECONDS: &str = "neo_db_lock_wait_longest_seconds";
/// Replay lag of each read replica.
pub const REPLICA_LAG_SECONDS: &str = "neo_db_replica_lag_seconds";
/// Reads sent to the primary instead of a replica, by reason.
pub const REPLICA_SKIPPED_READS_TOTAL: &str = "neo_db_replica_skipped_reads_total";
/// Writes that found a new primary after a failover.
pub const FAILOVERS_TOTAL: &str = "neo_db_failovers_total";

/// Transactions retried after a serialization failure (40001) or a deadlock (40P01), by SQLSTATE.
pub const TRANSACTION_RETRIES_TOTAL: &str = "neo_db_transaction_retries_total";
/// Transactions that failed after the retry budget ran out.
pub const TRANSACTION_RETRIES_EXHAUSTED_TOTAL: &str = "neo_db_transaction_retries_exhausted_total";
/// Blocking chains the lock resolver acted on (cancelled, terminated, left).
pub const LOCK_RESOLVER_ACTIONS_TOTAL: &str = "neo_db_lock_resolver_actions_total";
/// Rows a re-sealing pass handled, by table and outcome (resealed, changed, failed).
pub const RESEAL_ROWS_TOTAL: &str = "neo_db_reseal_rows_total";
/// Rows of a table still sealed under an older key.
pub const RESEAL_REMAINING_ROWS: &str = "neo_db_reseal_remaining_rows";
/// Statements slower than their baseline at the last comparison.
pub const REGRESSED_QUERIES: &str = "neo_db_regressed_queries";
/// Mean time over the baseline's mean time of a regressed statement (at most max_regressions query ids).
pub const QUERY_REGRESSION_RATIO: &str = "neo_db_query_regression_ratio";
/// Mean time of a regressed statement since the baseline.
pub const QUERY_REGRESSION_MEAN_SECONDS: &str = "neo_db_query_regression_mean_seconds";

/// Every metric of neo-db.
pub const CATALOGUE: &[MetricDef] = &[
    MetricDef::counter(
        QUERIES_TOTAL,
        "total",
        &["statement", "outcome"],
        "Statements run, by statement name and outcome.",
    ),
    MetricDef::histogram(
        QUERY_DURATION_SECONDS,
        "seconds",
        &["statement"],
        "Statement durations, by statement name.",
    ),
    MetricDef::counter(
        SLOW_QUERIES_TOTAL,
        "total",
        &["statement"],
        "Statements slower than slow_query_threshold.",
    ),
    MetricDef::histogram(
        POOL_ACQUIRE_SECONDS,
        "seconds",
        &[],
        "Time to get a connection from the pool.",
    ),
    MetricDef::counter(
        POOL_ACQUIRE_TIMEOUTS_TOTAL,
        "total",
        &[],
        "Pool acquires that timed out.",
    ),
    MetricDef::counter(
        CONNECTIONS_HELD_TOO_LONG_TOTAL,
        "total",
        &[],
        "Connections or transactions held longer than the threshold.",
    ),
    MetricDef::gauge(
        POOL_CONNECTIONS,
        "connections",
        &["state"],
        "Pool connections by state (idle, in_use).",
    ),
    MetricDef::gauge(
        POOL_MAX_CONNECTIONS,
        "connections",
        &[],
        "Largest allowed pool size (for saturation: in_use / max).",
    ),
    MetricDef::gauge(
        LOCK_WAITS_SESSIONS,
        "sessions",
        &[],
        "Sessions of this database waiting for a lock (sampled).",
    ),
    MetricDef::gauge(
        LOCK_WAIT_LONGEST_SECONDS,
        "seconds",
        &[],
        "The longest current lock wait in this database (sampled).",
    ),
    MetricDef::gauge(
        REPLICA_LAG_SECONDS,
        "seconds",
        &["replica"],
        "Replay lag of each configured read replica.",
    ),
    MetricDef::counter(
        REPLICA_SKIPPED_READS_TOTAL,
        "total",
        &["reason"],
        "Reads sent to the primary instead of a replica (lagging, behind_write, unavailable).",
    ),
    MetricDef::counter(
        FAILOVERS_TOTAL,
        "total",
        &[],
        "Writes that found a new primary after a failover.",
    ),
    MetricDef::counter(
        TRANSACTION_RETRIES_TOTAL,
        "total",
        &["sqlstate"],
        "Transactions retried after a serialization failure (40001) or a deadlock (40P01), by SQLSTATE.",
    ),
    MetricDef::counter(
        TRANSACTION_RETRIES_EXHAUSTED_TOTAL,
        "total",
        &[],
        "Transactions that failed after the retry budget ran out.",
    ),
    MetricDef::counter(
        LOCK_RESOLVER_ACTIONS_TOTAL,
        "total",
        &["action"],
        "Blocking chains the lock resolver acted on (cancelled, terminated, left).",
    ),
    MetricDef::counter(
        RESEAL_ROWS_TOTAL,
        "total",
        &["table", "outcome"],
        "Rows a re-sealing pass handled, by table and outcome (resealed, changed, failed).",
    ),
    MetricDef::gauge(
        RESEAL_REMAINING_ROWS,
        "rows",
        &["table"],
        "Rows of a table still sealed under an older key.",
    ),
    MetricDef::gauge(
        REGRESSED_QUERIES,
        "queries",
        &[],
        "Statements slower than their baseline at the last comparison.",
    ),
    MetricDef::gauge(
        QUERY_REGRESSION_RATIO,
        "ratio",
        &["queryid"],
        "Mean time over the baseline's mean time of a regressed statement (at most max_regressions query ids).",
    ),
    MetricDef::gauge(
        QUERY_REGRESSION_MEAN_SECONDS,
        "seconds",
        &["queryid"],
        "Mean time of a regressed statement since the baseline.",
    ),
];
