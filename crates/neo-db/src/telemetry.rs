//! Query spans, slow-query logging, pool statistics and leak detection.
//!
//! Stable names: spans are `db.query` with fields `db.statement`, `db.table`, `db.rows`,
//! `db.duration_ms`; metrics (through the `metrics` facade) are
//! `neo_db_queries_total{statement,outcome}`, `neo_db_query_duration_seconds{statement}`,
//! `neo_db_slow_queries_total{statement}`, `neo_db_pool_acquire_seconds`,
//! `neo_db_pool_acquire_timeouts_total`, `neo_db_connections_held_too_long_total` and the gauges
//! `neo_db_pool_connections{state=idle|in_use}`.

use crate::Result;
use crate::metric_names::{
    CONNECTIONS_HELD_TOO_LONG_TOTAL, POOL_ACQUIRE_SECONDS, POOL_ACQUIRE_TIMEOUTS_TOTAL,
    POOL_CONNECTIONS, POOL_MAX_CONNECTIONS, QUERIES_TOTAL, QUERY_DURATION_SECONDS,
    SLOW_QUERIES_TOTAL,
};
use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::Instrument;
use tracing::field::Empty;

/// Upper bounds of the acquire-wait histogram buckets in [`PoolStats::acquire_wait`].
pub const ACQUIRE_WAIT_BUCKETS: [Duration; 8] = [
    Duration::from_micros(100),
    Duration::from_millis(1),
    Duration::from_millis(5),
    Duration::from_millis(25),
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(2),
    Duration::MAX,
];

/// A snapshot of the pool and of what the telemetry counted since the pool was created.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Open connections (idle and in use).
    pub size: u32,
    /// Idle connections.
    pub idle: u32,
    /// Largest allowed size.
    pub max_size: u32,
    /// Connections handed out through [`Db`](crate::Db).
    pub acquired: u64,
    /// Acquires that gave up after `acquire_timeout`.
    pub acquire_timeouts: u64,
    /// Connections or transactions released after `held_too_long_threshold`.
    pub held_too_long: u64,
    /// Queries slower than `slow_query_threshold`.
    pub slow_queries: u64,
    /// Acquire waits per bucket: `(upper bound, count)`, bounds from [`ACQUIRE_WAIT_BUCKETS`].
    pub acquire_wait: Vec<(Duration, u64)>,
}

/// Shared thresholds and counters of one [`Db`](crate::Db).
#[derive(Debug)]
pub(crate) struct Telemetry {
    pub(crate) slow_query_threshold: Duration,
    pub(crate) held_too_long_threshold: Duration,
    acquired: AtomicU64,
    acquire_timeouts: AtomicU64,
    held_too_long: AtomicU64,
    slow_queries: AtomicU64,
    acquire_wait: [AtomicU64; ACQUIRE_WAIT_BUCKETS.len()],
}

impl Telemetry {
    pub(crate) fn new(slow_query_threshold: Duration, held_too_long_threshold: Duration) -> Self {
        Telemetry {
            slow_query_threshold,
            held_too_long_threshold,
            acquired: AtomicU64::new(0),
            acquire_timeouts: AtomicU64::new(0),
            held_too_long: AtomicU64::new(0),
            slow_queries: AtomicU64::new(0),
            acquire_wait: Default::default(),
        }
    }

    pub(crate) fn record_acquire(&self, waited: Duration, timed_out: bool) {
        if timed_out {
            self.acquire_timeouts.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(POOL_ACQUIRE_TIMEOUTS_TOTAL).increment(1);
            return;
        }
        self.acquired.fetch_add(1, Ordering::Relaxed);
        let bucket = ACQUIRE_WAIT_BUCKETS
            .iter()
            .position(|bound| waited <= *bound)
            .unwrap_or(ACQUIRE_WAIT_BUCKETS.len() - 1);
        self.acquire_wait[bucket].fetch_add(1, Ordering::Relaxed);
        metrics::histogram!(POOL_ACQUIRE_SECONDS).record(waited.as_secs_f64());
    }

    /// Called when a connection or transaction is released after `held`.
    pub(crate) fn record_release(&self, what: &'static str, held: Duration) {
        if held > self.held_too_long_threshold {
            self.held_too_long.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(CONNECTIONS_HELD_TOO_LONG_TOTAL).increment(1);
            tracing::warn!(
                db.held = what,
                held_ms = held.as_millis() as u64,
                threshold_ms = self.held_too_long_threshold.as_millis() as u64,
                "database {what} held longer than the threshold (a leak or a long unit of work?)"
            );
        }
    }

    pub(crate) fn snapshot(&self, size: u32, idle: u32, max_size: u32) -> PoolStats {
        metrics::gauge!(POOL_CONNECTIONS, "state" => "idle").set(idle);
        metrics::gauge!(POOL_CONNECTIONS, "state" => "in_use").set(size.saturating_sub(idle));
        metrics::gauge!(POOL_MAX_CONNECTIONS).set(max_size);
        PoolStats {
            size,
            idle,
            max_size,
            acquired: self.acquired.load(Ordering::Relaxed),
            acquire_timeouts: self.acquire_timeouts.load(Ordering::Relaxed),
            held_too_long: self.held_too_long.load(Ordering::Relaxed),
            slow_queries: self.slow_queries.load(Ordering::Relaxed),
            acquire_wait: ACQUIRE_WAIT_BUCKETS
                .iter()
                .zip(&self.acquire_wait)
                .map(|(bound, count)| (*bound, count.load(Ordering::Relaxed)))
                .collect(),
        }
    }

    /// Runs `query` inside a `db.query` span, then records rows, duration, metrics and the
    /// slow-query warning.
    pub(crate) async fn observe<T, F>(
        &self,
        statement: &'static str,
        table: &(dyn Display + Sync),
        rows: impl FnOnce(&T) -> u64,
        query: F,
    ) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let span = tracing::debug_span!(
            "db.query",
            db.statement = statement,
            db.table = %table,
            db.rows = Empty,
            db.duration_ms = Empty,
        );
        let started = Instant::now();
        let result = query.instrument(span.clone()).await;
        let elapsed = started.elapsed();
        let outcome = match &result {
            Ok(value) => {
                let count = rows(value);
                span.record("db.rows", count);
                "ok"
            }
            Err(_) => "error",
        };
        span.record("db.duration_ms", elapsed.as_secs_f64() * 1e3);
        metrics::counter!(QUERIES_TOTAL, "statement" => statement, "outcome" => outcome)
            .increment(1);
        metrics::histogram!(QUERY_DURATION_SECONDS, "statement" => statement)
            .record(elapsed.as_secs_f64());
        if elapsed > self.slow_query_threshold {
            self.slow_queries.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(SLOW_QUERIES_TOTAL, "statement" => statement).increment(1);
            span.in_scope(|| {
                tracing::warn!(
                    duration_ms = elapsed.as_millis() as u64,
                    threshold_ms = self.slow_query_threshold.as_millis() as u64,
                    outcome,
                    "slow query"
                );
            });
        }
        result
    }
}
