//! An opt-in task that ends long blocking chains ([`LockResolver`]).

use crate::Result;
use crate::pool::Db;
use serde::Deserialize;
use sqlx::Row as _;
use std::time::Duration;

/// The lock resolver's settings (`NEO_DB_LOCK_RESOLVER__*`). Off unless `enabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LockResolverConfig {
    /// Whether [`LockResolver::spawn`] starts the task.
    pub enabled: bool,
    /// How often it looks for blocking chains.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long a session must have waited for a lock before the head of its chain is
    /// cancelled.
    #[serde(with = "humantime_serde")]
    pub threshold: Duration,
    /// Terminate a head that is `idle in transaction` (it holds locks and runs nothing, so a
    /// cancel does nothing); off: such a head is only reported.
    pub terminate_idle_in_transaction: bool,
}

impl Default for LockResolverConfig {
    fn default() -> Self {
        LockResolverConfig {
            enabled: false,
            interval: Duration::from_secs(5),
            threshold: Duration::from_secs(30),
            terminate_idle_in_transaction: false,
        }
    }
}

/// What the resolver did to the head of a blocking chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResolverAction {
    /// Its running statement was cancelled (`pg_cancel_backend`).
    Cancelled,
    /// The session was terminated (`pg_terminate_backend`; idle in transaction).
    Terminated,
    /// Left alone: idle in transaction without `terminate_idle_in_transaction`, or it ended
    /// or moved on before the signal.
    Left,
}

impl ResolverAction {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ResolverAction::Cancelled => "cancelled",
            ResolverAction::Terminated => "terminated",
            ResolverAction::Left => "left",
        }
    }
}

/// The head of a blocking chain the resolver acted on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ResolvedChain {
    /// Backend pid of the head (the session holding the lock).
    pub blocker_pid: i32,
    /// Its state when found (`active`, `idle in transaction`, ...).
    pub blocker_state: String,
    /// Sessions waiting behind it (directly or through others) for longer than the
    /// threshold.
    pub waiting_pids: Vec<i32>,
    /// The longest of their waits.
    pub longest_wait: Duration,
    /// What was done.
    pub action: ResolverAction,
}

/// Finds the heads of the blocking chains that have waited too long and cancels them.
///
/// Deadlocks (cycles) PostgreSQL breaks by itself after `deadlock_timeout`; what it does not
/// break is a chain: one session holds a row or table lock for a long time (a slow statement,
/// a forgotten transaction) and every session that needs the lock queues behind it, and
/// behind those the sessions they block. The resolver follows `pg_blocking_pids` from each
/// session that has waited longer than [`LockResolverConfig::threshold`] to the head of its
/// chain (a session that waits for nobody) and:
/// - cancels the head's running statement (`pg_cancel_backend`) when it is `active`: its
///   transaction aborts and releases its locks;
/// - when the head is `idle in transaction` (a cancel does nothing to a session that runs no
///   statement), terminates it (`pg_terminate_backend`) only with
///   [`terminate_idle_in_transaction`](LockResolverConfig::terminate_idle_in_transaction),
///   else leaves it and reports it.
///
/// Every decision is a `tracing` event (target `neo_db::lock_resolver`, WARN, pids and wait
/// only, no statement text) and a count in `neo_db_lock_resolver_actions_total{action}`. It
/// only ever touches client backends of the database its [`Db`] is connected to, never its
/// own session, and re-checks that the head still runs the same transaction when it signals
/// it (a pid PostgreSQL reused is left alone).
#[derive(Debug, Clone)]
pub struct LockResolver {
    db: Db,
    config: LockResolverConfig,
}

/// Heads of chains (sessions of this database that wait for nobody) behind which some session
/// of this database has waited longer than `$1` seconds; never this session.
const CHAIN_HEADS: &str = "\
WITH RECURSIVE waiting AS (
    SELECT l.pid, extract(epoch FROM clock_timestamp() - min(l.waitstart))::float8 AS waited
    FROM pg_catalog.pg_locks l
    JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid AND a.datname = current_database()
    WHERE NOT l.granted AND l.waitstart IS NOT NULL
    GROUP BY l.pid
    HAVING clock_timestamp() - min(l.waitstart) > make_interval(secs => $1)
), chain (waiting_pid, waited, pid, path) AS (
    SELECT w.pid, w.waited, b.pid, ARRAY[w.pid]
    FROM waiting w CROSS JOIN LATERAL unnest(pg_catalog.pg_blocking_pids(w.pid)) AS b(pid)
    UNION ALL
    SELECT c.waiting_pid, c.waited, b.pid, c.path || c.pid
    FROM chain c CROSS JOIN LATERAL unnest(pg_catalog.pg_blocking_pids(c.pid)) AS b(pid)
    WHERE NOT b.pid = ANY(c.path) AND cardinality(c.path) < 32
)
SELECT h.pid AS blocker_pid, coalesce(h.state, '') AS state, h.backend_start, h.xact_start,
       array_agg(DISTINCT c.waiting_pid ORDER BY c.waiting_pid) AS waiting_pids,
       max(c.waited) AS longest_wait
FROM chain c
JOIN pg_catalog.pg_stat_activity h ON h.pid = c.pid
WHERE cardinality(pg_catalog.pg_blocking_pids(c.pid)) = 0
  AND h.datname = current_database()
  AND h.backend_type = 'client backend'
  AND h.pid <> pg_catalog.pg_backend_pid()
GROUP BY h.pid, h.state, h.backend_start, h.xact_start
ORDER BY longest_wait DESC";

/// Signals `$1` if it is still the same session in the same transaction, of this database.
fn signal_sql(function: &str) -> String {
    format!(
        "SELECT coalesce((SELECT pg_catalog.{function}(pid) FROM pg_catalog.pg_stat_activity \
         WHERE pid = $1 AND backend_start = $2 AND xact_start IS NOT DISTINCT FROM $3 \
         AND datname = current_database() AND pid <> pg_catalog.pg_backend_pid()), false)"
    )
}

impl LockResolver {
    /// A resolver for the database `db` is connected to.
    pub fn new(db: &Db, config: LockResolverConfig) -> Self {
        LockResolver {
            db: db.clone(),
            config,
        }
    }

    /// One look: finds the heads of chains waited on longer than the threshold and acts on
    /// each (see [`LockResolver`]). Returns what it did.
    ///
    /// # Errors
    /// A database error (for example a role that may not read other sessions or signal
    /// them: grant `pg_signal_backend` and `pg_read_all_stats`).
    pub async fn resolve_once(&self) -> Result<Vec<ResolvedChain>> {
        let mut conn = self.db.statement_connection().await?;
        let heads = sqlx::query(CHAIN_HEADS)
            .persistent(false)
            .bind(self.config.threshold.as_secs_f64())
            .fetch_all(&mut *conn)
            .await?;
        // Each signal re-checks the head in a statement of its own, after this one's
        // transaction (behind a transaction pooler every statement runs in one) has ended:
        // PostgreSQL reads `pg_stat_activity` once per transaction, so a re-check in the
        // same transaction would see the sessions as they were when the heads were found.
        conn.finish().await?;
        let mut resolved = Vec::with_capacity(heads.len());
        for head in heads {
            let blocker_pid: i32 = head.try_get("blocker_pid")?;
            let blocker_state: String = head.try_get("state")?;
            let backend_start: chrono::DateTime<chrono::Utc> = head.try_get("backend_start")?;
            let xact_start: Option<chrono::DateTime<chrono::Utc>> = head.try_get("xact_start")?;
            let waiting_pids: Vec<i32> = head.try_get("waiting_pids")?;
            let longest_wait: f64 = head.try_get("longest_wait")?;
            let function = match blocker_state.as_str() {
                "active" => Some(("pg_cancel_backend", ResolverAction::Cancelled)),
                "idle in transaction" | "idle in transaction (aborted)"
                    if self.config.terminate_idle_in_transaction =>
                {
                    Some(("pg_terminate_backend", ResolverAction::Terminated))
                }
                _ => None,
            };
            let action = match function {
                Some((function, action)) => {
                    let mut conn = self.db.statement_connection().await?;
                    let signalled: bool =
                        sqlx::query_scalar(sqlx::AssertSqlSafe(signal_sql(function)))
                            .persistent(false)
                            .bind(blocker_pid)
                            .bind(backend_start)
                            .bind(xact_start)
                            .fetch_one(&mut *conn)
                            .await?;
                    conn.finish().await?;
                    if signalled {
                        action
                    } else {
                        ResolverAction::Left
                    }
                }
                None => ResolverAction::Left,
            };
            let chain = ResolvedChain {
                blocker_pid,
                blocker_state,
                waiting_pids,
                longest_wait: Duration::from_secs_f64(longest_wait.max(0.0)),
                action,
            };
            tracing::warn!(
                target: "neo_db::lock_resolver",
                blocker_pid = chain.blocker_pid,
                blocker_state = %chain.blocker_state,
                waiting_pids = ?chain.waiting_pids,
                longest_wait_ms = chain.longest_wait.as_millis() as u64,
                action = chain.action.as_str(),
                "blocking chain older than the threshold"
            );
            metrics::counter!(crate::metric_names::LOCK_RESOLVER_ACTIONS_TOTAL, "action" => chain.action.as_str())
                .increment(1);
            resolved.push(chain);
        }
        Ok(resolved)
    }

    /// Starts the task when [`enabled`](LockResolverConfig::enabled): a look every
    /// [`interval`](LockResolverConfig::interval) until the handle is aborted; a failed look
    /// is logged at WARN and tried again next time. `None` when not enabled.
    pub fn spawn(&self) -> Option<tokio::task::JoinHandle<()>> {
        if !self.config.enabled {
            return None;
        }
        let resolver = self.clone();
        Some(tokio::spawn(async move {
            let mut every = tokio::time::interval(resolver.config.interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(error) = resolver.resolve_once().await {
                    tracing::warn!(target: "neo_db::lock_resolver", %error, "looking for blocking chains failed");
                }
            }
        }))
    }
}
