//! Read replicas: lag-tolerant reads routed to a streaming replica, with read-your-writes.
//!
//! A read asks for a [`Consistency`]: `Eventual` (any replica within
//! [`ReplicaConfig::max_lag`]), `ReadAfter(lsn)` (a replica that has replayed past `lsn`, else
//! the primary) or `Primary`. The replicas' replay positions are cached and refreshed in the
//! background at most every [`ReplicaConfig::refresh_interval`], so routing a read costs a
//! clock read and a few atomic loads, never a round trip. A stale cache only sends more reads
//! to the primary (replay positions only move forward), never a read to a replica that is
//! behind the caller's write.
//!
//! [`ReadSession`] carries a caller's last write position across calls (and, as a string,
//! across requests: a cookie or a header), like the "stick to the primary after a write"
//! of Rails' and Django's replica routers, but released as soon as a replica has caught up
//! instead of after a fixed delay.

use crate::session::{Consistency, Lsn, ReadSession};
use crate::{Error, Result};
use neo_core::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::PgPool;
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Read replicas of a [`Db`](crate::Db) (`NEO_DB_REPLICA__URLS=[postgres://…]`,
/// `NEO_DB_REPLICA__MAX_LAG=5s`).
///
/// Each URL names a hot standby of the primary (`postgres://user:pw@replica1:5432/app`). A
/// list that names the primary is refused ([`Error::Config`]), and
/// [`Db::connect`](crate::Db::connect) refuses a replica that is not in recovery.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ReplicaConfig {
    /// Replica URLs (secrets: may hold passwords). Empty: every read goes to the primary.
    pub urls: Vec<SecretString>,
    /// A replica whose replay is further behind than this is skipped (reads go to the
    /// primary) until it catches up; reported as `neo_db_replica_lag_seconds`.
    #[serde(with = "humantime_serde")]
    pub max_lag: Duration,
    /// How old the cached replay position of a replica may get before a read starts a
    /// refresh (in the background: the read does not wait for it).
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Connections per replica pool (`None`: the primary's `max_connections`).
    pub max_connections: Option<u32>,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            urls: Vec::new(),
            max_lag: Duration::from_secs(5),
            refresh_interval: Duration::from_millis(10),
            max_connections: None,
        }
    }
}

/// One replica as last seen by the background refresh.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReplicaStatus {
    /// `host:port/database` of the replica.
    pub name: String,
    /// Whether it answered the last refresh as a standby.
    pub healthy: bool,
    /// Its replay position at the last refresh.
    pub replayed: Option<Lsn>,
    /// How far behind its replay was: 0 while it has replayed all it received and its replay
    /// is not paused; otherwise the age of the last transaction it replayed, but no more than
    /// the time since a refresh last found it caught up (after an idle spell the first new
    /// WAL is not the idle spell's length behind). Unbounded when it has replayed no
    /// transaction since it started, has WAL waiting, and was never seen caught up.
    pub lag: Duration,
    /// Whether reads may go to it (healthy and within `max_lag`).
    pub serving: bool,
}

/// Why a read that could have gone to a replica went to the primary.
#[derive(Debug, Clone, Copy)]
enum Skip {
    Lagging,
    BehindWrite,
    Unavailable,
}

impl Skip {
    fn label(self) -> &'static str {
        match self {
            Skip::Lagging => "lagging",
            Skip::BehindWrite => "behind_write",
            Skip::Unavailable => "unavailable",
        }
    }
}

#[derive(Debug)]
struct Replica {
    name: String,
    pool: PgPool,
    healthy: AtomicBool,
    replayed: AtomicU64,
    lag_micros: AtomicU64,
    /// Nanoseconds since `Replicas::epoch` of the last refresh's start (0: never).
    refreshed_at: AtomicU64,
    /// Nanoseconds since `Replicas::epoch` of the start of the last refresh that found the
    /// replica caught up (0: never): its lag cannot exceed the time since.
    caught_up_at: AtomicU64,
    refreshing: AtomicBool,
}

/// The replica pools of a `Db` and their cached positions.
#[derive(Debug)]
pub(crate) struct Replicas {
    members: Vec<Arc<Replica>>,
    max_lag: Duration,
    refresh_nanos: u64,
    epoch: Instant,
    next: AtomicUsize,
    skipped: AtomicU64,
    /// The highest position [`Db::wrote`](crate::Db::wrote) has seen through this `Db`.
    written: AtomicU64,
}

/// `host:port/database` of a URL, for comparing and naming servers.
pub(crate) fn server_name(options: &PgConnectOptions) -> String {
    let host = options.get_host();
    let host = if host.eq_ignore_ascii_case("localhost") || host == "::1" {
        "127.0.0.1"
    } else {
        host
    };
    format!(
        "{}:{}/{}",
        host.to_ascii_lowercase(),
        options.get_port(),
        options.get_database().unwrap_or(options.get_username())
    )
}

impl Replicas {
    /// Lazy pools for the configured replicas; `None` when there are none. `primaries` are the
    /// `host:port/database` names of the primary's hosts: a replica named among them is refused.
    pub(crate) fn build(
        config: &crate::DbConfig,
        primaries: &[String],
        options: impl Fn(&str) -> Result<PgConnectOptions>,
    ) -> Result<Option<Replicas>> {
        let replica = &config.replica;
        if replica.urls.is_empty() {
            return Ok(None);
        }
        if replica.max_connections == Some(0) {
            return Err(Error::Config(
                "replica.max_connections must be at least 1".into(),
            ));
        }
        let mut members = Vec::with_capacity(replica.urls.len());
        for (index, url) in replica.urls.iter().enumerate() {
            let connect = options(url.expose_secret()).map_err(|e| match e {
                Error::Config(message) => {
                    Error::Config(format!("replica {}: {message}", index + 1))
                }
                other => other,
            })?;
            let name = server_name(&connect);
            if primaries.contains(&name) {
                return Err(Error::Config(format!(
                    "replica {} ({name}) is the primary: the replica list must name standbys only",
                    index + 1
                )));
            }
            if members.iter().any(|m: &Arc<Replica>| m.name == name) {
                return Err(Error::Config(format!(
                    "replica {} ({name}) is listed twice",
                    index + 1
                )));
            }
            let mut options = PgPoolOptions::new()
                .max_connections(replica.max_connections.unwrap_or(config.max_connections))
                .acquire_timeout(config.acquire_timeout)
                .idle_timeout(config.idle_timeout)
                .max_lifetime(config.max_lifetime)
                .test_before_acquire(false);
            // As on the primary (crate::pool::alive).
            if let Some(after) = config.ping_after() {
                options = options.before_acquire(move |conn, meta| {
                    Box::pin(async move {
                        Ok(crate::pool::alive(conn, meta.idle_for, Some(after)).await)
                    })
                });
            }
            if config.pooler.needs_transaction() {
                // As on the primary (crate::custom_types).
                options =
                    options.after_connect(|conn, _| Box::pin(crate::custom_types::preload(conn)));
            }
            let pool = options.connect_lazy_with(connect);
            members.push(Arc::new(Replica {
                name,
                pool,
                healthy: AtomicBool::new(false),
                replayed: AtomicU64::new(0),
                lag_micros: AtomicU64::new(0),
                refreshed_at: AtomicU64::new(0),
                caught_up_at: AtomicU64::new(0),
                refreshing: AtomicBool::new(false),
            }));
        }
        Ok(Some(Replicas {
            members,
            max_lag: replica.max_lag,
            refresh_nanos: u64::try_from(replica.refresh_interval.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
            epoch: Instant::now(),
            next: AtomicUsize::new(0),
            skipped: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }))
    }

    /// Refuses a replica that answers as a primary; a replica that cannot be reached now is
    /// only logged (reads go to the primary until it answers).
    pub(crate) async fn check(&self) -> Result<()> {
        for (index, replica) in self.members.iter().enumerate() {
            // Simple queries here and below: no prepared statement, safe behind any pooler.
            match sqlx::raw_sql("SELECT pg_is_in_recovery()")
                .fetch_one(&replica.pool)
                .await
                .and_then(|row| row.try_get::<bool, _>(0))
            {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Error::Config(format!(
                        "replica {} ({}) is not a standby (pg_is_in_recovery() is false): it is a \
                         primary, perhaps this database's under another name",
                        index + 1,
                        replica.name
                    )));
                }
                Err(e) => tracing::warn!(
                    replica = %replica.name,
                    error = %e,
                    "a read replica cannot be reached; reads go to the primary until it answers"
                ),
            }
            self.refresh(Arc::clone(replica)).await;
        }
        Ok(())
    }

    /// The replica pool a read with `consistency` may use, or `None` for the primary.
    pub(crate) fn route(&self, consistency: Consistency) -> Option<&PgPool> {
        let after = match consistency {
            Consistency::Primary => return None,
            Consistency::Eventual => 0,
            Consistency::ReadAfter(lsn) => lsn.0,
        };
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let count = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut skip = Skip::Unavailable;
        let max_lag = u64::try_from(self.max_lag.as_micros()).unwrap_or(u64::MAX);
        for offset in 0..count {
            let replica = &self.members[(start + offset) % count];
            let refreshed = replica.refreshed_at.load(Ordering::Acquire);
            if now.saturating_sub(refreshed) >= self.refresh_nanos || refreshed == 0 {
                self.start_refresh(replica);
            }
            if !replica.healthy.load(Ordering::Acquire) {
                continue;
            }
            if replica.lag_micros.load(Ordering::Acquire) > max_lag {
                skip = Skip::Lagging;
                continue;
            }
            if replica.replayed.load(Ordering::Acquire) < after {
                skip = Skip::BehindWrite;
                continue;
            }
            return Some(&replica.pool);
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metric_names::REPLICA_SKIPPED_READS_TOTAL, "reason" => skip.label())
            .increment(1);
        None
    }

    fn start_refresh(&self, replica: &Arc<Replica>) {
        if replica.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        replica.refreshed_at.store(now.max(1), Ordering::Release);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            replica.refreshing.store(false, Ordering::Release);
            return;
        };
        let replica = Arc::clone(replica);
        let (max_lag, epoch) = (self.max_lag, self.epoch);
        runtime.spawn(async move {
            refresh(max_lag, epoch, Arc::clone(&replica)).await;
            replica.refreshing.store(false, Ordering::Release);
        });
    }

    async fn refresh(&self, replica: Arc<Replica>) {
        refresh(self.max_lag, self.epoch, replica).await;
    }

    pub(crate) fn status(&self) -> Vec<ReplicaStatus> {
        self.members
            .iter()
            .map(|r| {
                let healthy = r.healthy.load(Ordering::Acquire);
                let lag = Duration::from_micros(r.lag_micros.load(Ordering::Acquire));
                ReplicaStatus {
                    name: r.name.clone(),
                    healthy,
                    replayed: match r.replayed.load(Ordering::Acquire) {
                        0 => None,
                        lsn => Some(Lsn(lsn)),
                    },
                    lag,
                    serving: healthy && lag <= self.max_lag,
                }
            })
            .collect()
    }

    pub(crate) fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    pub(crate) async fn close(&self) {
        for replica in &self.members {
            replica.pool.close().await;
        }
    }
}

impl crate::Db {
    /// The pool for a read that tolerates replica lag, with the read-your-writes of the
    /// current [`ReadSession`] (none in scope: [`Consistency::Eventual`]): a replica that is
    /// within `max_lag` and has replayed the session's last write, else the primary's pool.
    /// Without replicas, the primary's pool. Costs no round trip.
    pub fn read_pool(&self) -> &PgPool {
        let consistency =
            ReadSession::current().map_or(Consistency::Eventual, |session| session.consistency());
        self.read_pool_for(consistency)
    }

    /// The pool for a read with `consistency` (see [`Db::read_pool`](crate::Db::read_pool)).
    pub fn read_pool_for(&self, consistency: Consistency) -> &PgPool {
        self.shared()
            .replicas
            .as_ref()
            .and_then(|replicas| replicas.route(consistency))
            .unwrap_or_else(|| self.pool())
    }

    /// Reads the primary's WAL position after a write that has committed
    /// (`pg_current_wal_insert_lsn()`, one round trip) and records it in the current
    /// [`ReadSession`], if any, so the session's next reads see the write. Does nothing,
    /// without a round trip, when no replica is configured. Returns the position.
    ///
    /// # Errors
    /// The database error of the query.
    pub async fn wrote(&self) -> crate::Result<Option<Lsn>> {
        if self.shared().replicas.is_none() {
            return Ok(None);
        }
        let lsn = self.current_lsn().await?;
        if let Some(replicas) = &self.shared().replicas {
            replicas.written.fetch_max(lsn.0, Ordering::AcqRel);
        }
        if let Some(session) = ReadSession::current() {
            session.observe(lsn);
        }
        Ok(Some(lsn))
    }

    /// The highest position [`Db::wrote`](crate::Db::wrote) has recorded through this `Db` (and its clones):
    /// `ReadAfter` it sees every write this process reported, e.g. for filling a cache
    /// shared by all callers. `None` without replicas or before any write.
    pub fn last_write(&self) -> Option<Lsn> {
        match self
            .shared()
            .replicas
            .as_ref()?
            .written
            .load(Ordering::Acquire)
        {
            0 => None,
            lsn => Some(Lsn(lsn)),
        }
    }

    /// Whether read replicas are configured.
    pub fn has_replicas(&self) -> bool {
        self.shared().replicas.is_some()
    }

    /// The primary's current WAL insert position.
    ///
    /// # Errors
    /// The database error of the query.
    pub async fn current_lsn(&self) -> crate::Result<Lsn> {
        // A simple query: no prepared statement, safe behind a transaction pooler.
        let text: String = sqlx::raw_sql("SELECT pg_current_wal_insert_lsn()::text")
            .fetch_one(self.pool())
            .await?
            .try_get(0)?;
        text.parse()
    }

    /// The replicas as last refreshed (empty without replicas).
    pub fn replica_status(&self) -> Vec<ReplicaStatus> {
        self.shared()
            .replicas
            .as_ref()
            .map(Replicas::status)
            .unwrap_or_default()
    }

    /// How many reads that could have gone to a replica went to the primary because no
    /// replica was serving, within `max_lag` and past the session's write (also counted as
    /// `neo_db_replica_skipped_reads_total{reason}`).
    pub fn replica_skipped_reads(&self) -> u64 {
        self.shared().replicas.as_ref().map_or(0, Replicas::skipped)
    }
}

/// Reads a replica's replay position and lag (one query) into the cache; `epoch` is
/// `Replicas::epoch`.
async fn refresh(max_lag: Duration, epoch: Instant, replica: Arc<Replica>) {
    let sent = u64::try_from(epoch.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    let answer = sqlx::raw_sql(
        "SELECT pg_last_wal_replay_lsn()::text, pg_is_wal_replay_paused(), \
         pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn(), \
         EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8",
    )
    .fetch_one(&replica.pool)
    .await
    .and_then(|row| {
        Ok((
            row.try_get::<Option<String>, _>(0)?,
            row.try_get::<Option<bool>, _>(1)? == Some(true),
            row.try_get::<Option<bool>, _>(2)? == Some(true),
            row.try_get::<Option<f64>, _>(3)?,
        ))
    });
    match answer {
        Ok((Some(lsn), paused, waiting, age)) => {
            let lag = if paused || waiting {
                // Behind: the age of the last replayed transaction (unbounded when none was
                // replayed and WAL waits), but not longer than since it was last seen caught
                // up; that age alone reads an idle spell as lag.
                let age = age.unwrap_or(if waiting { 1e9 } else { 0.0 });
                let mut lag = Duration::from_secs_f64(age.max(0.0));
                let caught_up = replica.caught_up_at.load(Ordering::Acquire);
                if caught_up != 0 {
                    let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    lag = lag.min(Duration::from_nanos(now.saturating_sub(caught_up)));
                }
                lag
            } else {
                replica.caught_up_at.fetch_max(sent, Ordering::AcqRel);
                Duration::ZERO
            };
            if let Ok(lsn) = lsn.parse::<Lsn>() {
                replica.replayed.fetch_max(lsn.0, Ordering::AcqRel);
            }
            replica.lag_micros.store(
                u64::try_from(lag.as_micros()).unwrap_or(u64::MAX),
                Ordering::Release,
            );
            let was = replica.healthy.swap(true, Ordering::AcqRel);
            if !was {
                tracing::info!(replica = %replica.name, "read replica serving");
            }
            metrics::gauge!(crate::metric_names::REPLICA_LAG_SECONDS, "replica" => replica.name.clone())
                .set(lag.as_secs_f64());
            if lag > max_lag {
                tracing::debug!(replica = %replica.name, ?lag, "read replica lagging; skipped");
            }
        }
        Ok((None, ..)) => {
            // Not (or no longer) a standby: promoted, or misconfigured.
            if replica.healthy.swap(false, Ordering::AcqRel) {
                tracing::warn!(replica = %replica.name, "read replica is not in recovery; skipped");
            }
        }
        Err(e) => {
            if replica.healthy.swap(false, Ordering::AcqRel) {
                tracing::warn!(replica = %replica.name, error = %e, "read replica unreachable; skipped");
            }
        }
    }
}
