//! Time-partitioned tables and their retention: the outbox (by `recorded_at`) and the webhook
//! deliveries (by `created_at`) are range-partitioned by time (outbox and webhooks migration
//! 20), so that retention detaches and drops whole partitions (constant time, no long
//! `DELETE`, no dead tuples left for vacuum) instead of deleting rows.
//!
//! # Maintenance
//! [`Outbox::maintain_partitions`](crate::Outbox::maintain_partitions) and
//! [`Webhooks::maintain_partitions`](crate::Webhooks::maintain_partitions) (run them from a
//! periodic job, e.g. hourly; `migrate` makes the first ones):
//! 1. create the partitions of the current period and [`premake`](PartitionConfig::premake)
//!    periods ahead, each [`width`](PartitionConfig::width) wide and aligned to the Unix epoch
//!    (a day's partitions start at midnight UTC). Rows that landed in the `DEFAULT` partition
//!    (the safety net: an insert never fails for want of a partition) and belong to a range
//!    being created move into it in the same transaction; when maintenance did not run for a
//!    while, one partition covers the gap up to the current period;
//! 2. retire every partition whose range ends at least [`retention`](PartitionConfig::retention)
//!    ago: unless it still holds pending work (unprocessed events, pending deliveries; it is
//!    then kept and reported, and retired by a later run), detach it (a catalogue change
//!    under a brief `ACCESS EXCLUSIVE` lock bounded by
//!    [`lock_timeout`](PartitionConfig::lock_timeout); `CONCURRENTLY` where PostgreSQL allows
//!    it, see [`detach_concurrently`](PartitionConfig::detach_concurrently)), check
//!    again that no pending row arrived meanwhile (it is attached again if one did), hand its
//!    rows to the [`PartitionArchive`] when one is given (attaching it again if that fails),
//!    and drop it.
//!
//! Partition DDL runs as the tables' owner: on the `Db` the store was built with, the one
//! `migrate` runs on (under row-level security, a store built on the owner's `Db`, as for
//! `migrate`). What spans tenants in rows still runs on the store's system `Db`: with the
//! webhooks, the delivery attempts that go with a retired partition and the messages left
//! without deliveries (under row-level security build the maintaining `Webhooks` on the
//! owner's `Db` with `with_row_level_security(&system, ..)`, the system `Db` a `BYPASSRLS`
//! role: the attempts table's policy is forced on its owner too).
//!
//! # Row-level security
//! The parent's policies apply to every query through the parent. Partitions read directly
//! have row security enabled without a policy (and without `FORCE`): the owner, which retention
//! runs as, reads them; any other role without `BYPASSRLS` reads nothing.
//!
//! # Lookups by id
//! A primary key on a partitioned table must include the partition key, so the keys are
//! `(id, recorded_at)` and `(id, created_at)`. A lookup by id alone (a delivery by its id, the
//! status update of a batch of deliveries) cannot prune partitions: it probes each partition's
//! primary-key index once, so it costs one index probe per partition (retention bounds their
//! number to about `retention / width + premake + 2`).

use crate::EventError;
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::TryStreamExt;
use neo_db::{Db, Schema, TableName};
use serde::Deserialize;
use sqlx::{AssertSqlSafe, PgConnection};
use std::time::Duration;

/// How a time-partitioned table is partitioned and retired. Part of
/// [`OutboxConfig`](crate::OutboxConfig) and [`WebhookConfig`](crate::WebhookConfig) as
/// `partitions` (from the environment: `NEO_EVENTS_OUTBOX_PARTITIONS__RETENTION=14d`).
///
/// # Example
/// ```
/// use neo_events::PartitionConfig;
/// use std::time::Duration;
/// let config = PartitionConfig {
///     width: Duration::from_secs(60 * 60), // hourly partitions
///     retention: Duration::from_secs(3 * 24 * 60 * 60),
///     ..PartitionConfig::default()
/// };
/// assert_eq!(config.premake, 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PartitionConfig {
    /// The time range of one partition, aligned to the Unix epoch (whole seconds, at least
    /// one). Default one day.
    #[serde(with = "humantime_serde")]
    pub width: Duration,
    /// Partitions created ahead of the current one. Default 3.
    pub premake: u32,
    /// A partition is retired once its whole range is at least this old. Default 7 days.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Longest wait for a lock by partition DDL (`lock_timeout`); a maintenance run that
    /// times out fails and is retried by the next one. Kept short because statements on the
    /// table queue behind a DDL statement waiting for its lock. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// Detach with `DETACH PARTITION ... CONCURRENTLY` where PostgreSQL allows it (a
    /// `SHARE UPDATE EXCLUSIVE` lock: reads and writes go on): on a direct connection, and
    /// only when the table has no DEFAULT partition (PostgreSQL refuses it otherwise; the
    /// migration makes one, drop it to detach concurrently, at the price of inserts failing
    /// when maintenance falls more than `premake` periods behind). Otherwise a partition is
    /// detached by a plain `DETACH PARTITION`, which takes an `ACCESS EXCLUSIVE` lock on the
    /// table for a catalogue change (waiting at most `lock_timeout`). Default true.
    pub detach_concurrently: bool,
    /// Autovacuum each partition created once this many of its rows are dead, whatever its
    /// size (`autovacuum_vacuum_scale_factor = 0`, `autovacuum_vacuum_threshold`): every
    /// dispatch or status write leaves a dead entry in the pending index, where the next
    /// claim starts reading, and PostgreSQL's default waits for a fifth of a partition (the
    /// queue's jobs table has the same setting, queue migration 30). `None` keeps the
    /// server's defaults. Default 10,000.
    pub vacuum_after_dead_rows: Option<u32>,
}

impl Default for PartitionConfig {
    fn default() -> Self {
        let day = Duration::from_secs(24 * 60 * 60);
        PartitionConfig {
            width: day,
            premake: 3,
            retention: 7 * day,
            lock_timeout: Duration::from_secs(1),
            detach_concurrently: true,
            vacuum_after_dead_rows: Some(10_000),
        }
    }
}

impl PartitionConfig {
    /// # Errors
    /// [`EventError::Invalid`] for a width that is not a whole number of seconds (at least
    /// one) or more than a year's.
    pub(crate) fn validate(&self) -> Result<(), EventError> {
        let secs = self.width.as_secs();
        if secs == 0 || self.width.subsec_nanos() != 0 || secs > 366 * 24 * 60 * 60 {
            return Err(EventError::Invalid {
                what: "partition configuration",
                reason: "width must be a whole number of seconds, from 1 s to 366 days".into(),
            });
        }
        Ok(())
    }
}

/// One partition of a time-partitioned table: the rows whose time is in `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Partition {
    /// The partition's table name (in the store's schema), e.g. `outbox_p20261206_000000`;
    /// `{table}_unpartitioned` holds the rows written before migration 20.
    pub table: String,
    /// Where its range starts; `None` for the one of the rows from before migration 20.
    pub from: Option<DateTime<Utc>>,
    /// Where its range ends (excluded).
    pub to: DateTime<Utc>,
}

/// What one [`maintain_partitions`](crate::Outbox::maintain_partitions) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionReport {
    /// Partitions created.
    pub created: Vec<Partition>,
    /// Partitions detached (archived when an archive was given) and dropped.
    pub dropped: Vec<Partition>,
    /// Rows handed to the archive (with the webhooks, the dropped deliveries' attempts too).
    pub archived_rows: u64,
    /// Partitions old enough to retire but still holding pending work (unprocessed events,
    /// pending deliveries): kept, and retired by a later run once that work is done.
    pub kept_pending: Vec<Partition>,
}

/// Where retention writes a partition's rows before dropping it: `ZstdJsonLines` (feature
/// `archive`), or your own (object storage, another database, ...).
///
/// # Example
/// ```
/// use neo_events::{EventError, Partition, PartitionArchive, PartitionWriter};
/// use std::sync::{Arc, Mutex};
///
/// /// Keeps every archived row in memory.
/// #[derive(Default)]
/// struct InMemory(Arc<Mutex<Vec<(String, serde_json::Value)>>>);
///
/// struct Writer(Arc<Mutex<Vec<(String, serde_json::Value)>>>, Vec<(String, serde_json::Value)>);
///
/// impl PartitionArchive for InMemory {
///     fn open(&self, _store: &str, _partition: &Partition) -> Result<Box<dyn PartitionWriter>, EventError> {
///         Ok(Box::new(Writer(Arc::clone(&self.0), Vec::new())))
///     }
/// }
///
/// impl PartitionWriter for Writer {
///     fn row(&mut self, table: &str, row: serde_json::Value) -> Result<(), EventError> {
///         self.1.push((table.to_owned(), row));
///         Ok(())
///     }
///     fn finish(self: Box<Self>) -> Result<(), EventError> {
///         self.0.lock().unwrap().extend(self.1);
///         Ok(())
///     }
/// }
/// ```
pub trait PartitionArchive: Send + Sync {
    /// Starts the archive of one detached `partition` of `store` (`outbox`, `webhooks`).
    ///
    /// # Errors
    /// Any: the partition is attached again and the maintenance run fails.
    fn open(
        &self,
        store: &str,
        partition: &Partition,
    ) -> Result<Box<dyn PartitionWriter>, EventError>;
}

/// One partition's archive being written ([`PartitionArchive::open`]).
pub trait PartitionWriter: Send {
    /// Writes one row (as `to_jsonb` gives it) of `table` (`outbox`, `webhook_deliveries`,
    /// `webhook_delivery_attempts`).
    ///
    /// # Errors
    /// Any: the partition is attached again and the maintenance run fails.
    fn row(&mut self, table: &str, row: serde_json::Value) -> Result<(), EventError>;

    /// Makes the archive durable. The partition is dropped only after this succeeds.
    ///
    /// # Errors
    /// Any: the partition is attached again and the maintenance run fails.
    fn finish(self: Box<Self>) -> Result<(), EventError>;
}

/// The default [`PartitionArchive`] (feature `archive`): each partition into
/// `{dir}/{partition}.jsonl.zst`, zstd-compressed JSON lines in neo-tenant's archive format
/// (`{"store":"outbox","table":"outbox","row":{...}}`), written to a `.partial` file, synced and
/// renamed when complete. Read it back with [`neo_tenant::read_archive`].
///
/// # Example
/// ```no_run
/// # async fn demo(outbox: neo_events::Outbox) -> Result<(), neo_events::EventError> {
/// use neo_events::ZstdJsonLines;
/// let archive = ZstdJsonLines::new("/var/lib/app/outbox-archive");
/// let report = outbox.maintain_partitions(Some(&archive)).await?;
/// for partition in &report.dropped {
///     let rows = neo_tenant::read_archive(&archive.path(partition))?;
///     println!("{}: {} rows archived", partition.table, rows.len());
/// }
/// # Ok(()) }
/// ```
#[cfg(feature = "archive")]
#[derive(Debug, Clone)]
pub struct ZstdJsonLines {
    dir: std::path::PathBuf,
    level: i32,
}

#[cfg(feature = "archive")]
impl ZstdJsonLines {
    /// Archives into `dir` (which must exist) at zstd level 3.
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Self {
        ZstdJsonLines {
            dir: dir.into(),
            level: 3,
        }
    }

    /// This archive at zstd `level` (1 fast to 22 small).
    #[must_use]
    pub fn level(mut self, level: i32) -> Self {
        self.level = level;
        self
    }

    /// The file a partition is archived into.
    pub fn path(&self, partition: &Partition) -> std::path::PathBuf {
        self.dir.join(format!("{}.jsonl.zst", partition.table))
    }
}

#[cfg(feature = "archive")]
impl PartitionArchive for ZstdJsonLines {
    fn open(
        &self,
        store: &str,
        partition: &Partition,
    ) -> Result<Box<dyn PartitionWriter>, EventError> {
        Ok(Box::new(ZstdWriter {
            store: store.to_owned(),
            writer: neo_tenant::ArchiveWriter::create(&self.path(partition), self.level)?,
        }))
    }
}

#[cfg(feature = "archive")]
struct ZstdWriter {
    store: String,
    writer: neo_tenant::ArchiveWriter,
}

#[cfg(feature = "archive")]
impl PartitionWriter for ZstdWriter {
    fn row(&mut self, table: &str, row: serde_json::Value) -> Result<(), EventError> {
        Ok(self.writer.row(&self.store, table, row)?)
    }

    fn finish(self: Box<Self>) -> Result<(), EventError> {
        self.writer.finish()?;
        Ok(())
    }
}

/// Rows of another table that go with a partition's rows: archived with them and deleted
/// before the partition is dropped (the webhook delivery attempts, by delivery id). Read and
/// deleted on the store's system `Db` (a `BYPASSRLS` role under row-level security).
#[derive(Debug)]
pub(crate) struct Companion {
    /// Its name, as the archive records it.
    pub(crate) name: &'static str,
    /// Its column holding the partition row's `id`.
    pub(crate) column: &'static str,
}

/// A table range-partitioned by time (see the module documentation).
#[derive(Debug)]
pub(crate) struct Partitioned {
    /// The store's name in archives (`outbox`, `webhooks`).
    store: &'static str,
    schema: Schema,
    /// The parent's name, unqualified.
    name: &'static str,
    /// The parent, qualified.
    parent: String,
    /// The partition key column.
    key: &'static str,
    /// The SQL condition of a row that is pending work.
    pending: &'static str,
    companion: Option<Companion>,
}

/// A partition as the catalogue lists it.
#[derive(Debug, sqlx::FromRow)]
struct Listed {
    name: String,
    detach_pending: bool,
    is_default: bool,
    #[sqlx(rename = "from_")]
    from: Option<DateTime<Utc>>,
    #[sqlx(rename = "to_")]
    to: Option<DateTime<Utc>>,
}

impl Listed {
    fn partition(&self) -> Option<Partition> {
        Some(Partition {
            table: self.name.clone(),
            from: self.from,
            to: self.to?,
        })
    }
}

/// Where partition DDL and reads run: a plain connection (session `lock_timeout`,
/// `DETACH ... CONCURRENTLY`), or, behind a transaction pooler, a transaction per step.
enum Session {
    Plain(neo_db::DbConnection),
    /// The `Db` and the lock timeout in milliseconds.
    Pooled(Db, u128),
}

const LIST: &str = "SELECT name, detach_pending, bound = 'DEFAULT' AS is_default, \
     CASE WHEN bound = 'DEFAULT' OR bound LIKE 'FOR VALUES FROM (MINVALUE)%' THEN NULL \
       ELSE substring(bound from $re$FROM \\('([^']*)'\\)$re$)::timestamptz END AS from_, \
     CASE WHEN bound = 'DEFAULT' THEN NULL \
       ELSE substring(bound from $re$TO \\('([^']*)'\\)$re$)::timestamptz END AS to_ \
     FROM (SELECT c.relname::text AS name, i.inhdetachpending AS detach_pending, \
       pg_get_expr(c.relpartbound, c.oid) AS bound \
       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass($1)) p \
     ORDER BY to_ NULLS LAST";

/// Migration 20 of the outbox and of the webhooks: `table` range-partitioned by `key`, its
/// unique constraints (`uniques`, each a column list; the primary key is `id`) extended with
/// `key` (see `migrations/partition_by_time.sql`).
pub(crate) fn migration(table: &str, key: &str, uniques: &[&str]) -> String {
    let uniques = if uniques.is_empty() {
        "'{}'::text[]".to_owned()
    } else {
        let items: Vec<String> = uniques.iter().map(|u| format!("'{u}'")).collect();
        format!("ARRAY[{}]::text[]", items.join(", "))
    };
    include_str!("../migrations/partition_by_time.sql")
        .replace("@TABLE@", table)
        .replace("@KEY@", key)
        .replace("@UNIQUES@", &uniques)
}

/// A timestamp as a DDL literal.
fn literal(at: DateTime<Utc>) -> String {
    format!("'{}'", at.format("%Y-%m-%d %H:%M:%S%.6f+00"))
}

fn db_error(error: sqlx::Error) -> EventError {
    EventError::Db(neo_db::Error::from(error))
}

impl Partitioned {
    pub(crate) fn new(
        store: &'static str,
        schema: &Schema,
        name: &'static str,
        key: &'static str,
        pending: &'static str,
        companion: Option<Companion>,
    ) -> Result<Self, EventError> {
        Ok(Partitioned {
            store,
            schema: schema.clone(),
            name,
            parent: TableName::new(name)?.in_schema(schema).to_string(),
            key,
            pending,
            companion,
        })
    }

    /// The partition `name`, qualified.
    fn qualified(&self, name: &str) -> Result<String, EventError> {
        Ok(TableName::new(name)?.in_schema(&self.schema).to_string())
    }

    async fn list(&self, conn: &mut PgConnection) -> Result<Vec<Listed>, EventError> {
        sqlx::query_as(LIST)
            .persistent(false)
            .bind(&self.parent)
            .fetch_all(conn)
            .await
            .map_err(db_error)
    }

    /// The partitions with a range, oldest first (the `DEFAULT` one is not listed).
    pub(crate) async fn partitions(&self, db: &Db) -> Result<Vec<Partition>, EventError> {
        let mut conn = db.statement_connection().await?;
        let listed = self.list(&mut conn).await?;
        conn.finish().await?;
        Ok(listed
            .iter()
            .filter(|p| !p.is_default)
            .filter_map(Listed::partition)
            .collect())
    }

    /// Creates the partitions of the current period and `premake` ahead (see the module
    /// documentation), in one transaction; returns those created.
    pub(crate) async fn ensure(
        &self,
        db: &Db,
        config: &PartitionConfig,
    ) -> Result<Vec<Partition>, EventError> {
        config.validate()?;
        let mut tx = db.begin().await?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "SET LOCAL lock_timeout = {}",
            config.lock_timeout.as_millis().max(1)
        )))
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        // One maintainer at a time per table.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .persistent(false)
            .bind(format!("neo_events.partitions:{}", self.parent))
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        let (now, rls): (DateTime<Utc>, Option<bool>) = sqlx::query_as(
            "SELECT now(), (SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass($1))",
        )
        .persistent(false)
        .bind(&self.parent)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)?;
        let listed = self.list(&mut tx).await?;
        let default = listed
            .iter()
            .find(|p| p.is_default)
            .map(|p| self.qualified(&p.name))
            .transpose()?;
        let width = i64::try_from(config.width.as_micros()).unwrap_or(i64::MAX);
        let align = |at: DateTime<Utc>| {
            DateTime::from_timestamp_micros(at.timestamp_micros().div_euclid(width) * width)
                .unwrap_or(at)
        };
        let step = TimeDelta::microseconds(width);
        let current = align(now);
        let target = current + step * (i32::try_from(config.premake).unwrap_or(i32::MAX) + 1);
        let mut from = listed
            .iter()
            .filter(|p| !p.is_default)
            .filter_map(|p| p.to)
            .max()
            .unwrap_or(current);
        let mut created = Vec::new();
        while from < target {
            // A gap behind the current period (maintenance did not run for a while) is one
            // partition; after that, one per period.
            let to = if from < current {
                current
            } else {
                align(from) + step
            };
            created.push(
                self.create(
                    &mut tx,
                    default.as_deref(),
                    rls == Some(true),
                    config,
                    from,
                    to,
                )
                .await?,
            );
            from = to;
        }
        tx.commit().await?;
        if !created.is_empty() {
            tracing::info!(table = %self.parent, created = created.len(), "partitions created");
        }
        Ok(created)
    }

    /// Creates the partition `[from, to)`, moving the default partition's rows of that range
    /// into it, and attaches it.
    async fn create(
        &self,
        conn: &mut PgConnection,
        default: Option<&str>,
        rls: bool,
        config: &PartitionConfig,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Partition, EventError> {
        let table = format!("{}_p{}", self.name, from.format("%Y%m%d_%H%M%S"));
        let qualified = self.qualified(&table)?;
        let (parent, key) = (&self.parent, self.key);
        let (lo, hi) = (literal(from), literal(to));
        let vacuum = config.vacuum_after_dead_rows.map_or(String::new(), |rows| {
            format!(
                " WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = {rows})"
            )
        });
        let mut sql = format!(
            "CREATE TABLE {qualified} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS \
             INCLUDING STORAGE INCLUDING STATISTICS){vacuum};\n"
        );
        if let Some(default) = default {
            sql.push_str(&format!(
                "WITH moved AS (DELETE FROM ONLY {default} WHERE {key} >= {lo} AND {key} < {hi} RETURNING *) \
                 INSERT INTO {qualified} SELECT * FROM moved;\n"
            ));
        }
        sql.push_str(&format!(
            "ALTER TABLE {parent} ATTACH PARTITION {qualified} FOR VALUES FROM ({lo}) TO ({hi});\n"
        ));
        if rls {
            sql.push_str(&format!(
                "ALTER TABLE {qualified} ENABLE ROW LEVEL SECURITY;\n"
            ));
        }
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(conn)
            .await
            .map_err(db_error)?;
        Ok(Partition {
            table,
            from: Some(from),
            to,
        })
    }

    /// Maintenance: [`ensure`](Self::ensure), then [`retire`](Self::retire); the report
    /// lists both.
    pub(crate) async fn maintain(
        &self,
        owner: &Db,
        system: &Db,
        config: &PartitionConfig,
        archive: Option<&dyn PartitionArchive>,
    ) -> Result<PartitionReport, EventError> {
        let created = self.ensure(owner, config).await?;
        let mut report = self.retire(owner, system, config, archive).await?;
        report.created = created;
        Ok(report)
    }

    /// Retires the partitions wholly older than the retention (see the module
    /// documentation). Partition DDL and reads run on `owner`, the companion's rows on
    /// `system`.
    async fn retire(
        &self,
        owner: &Db,
        system: &Db,
        config: &PartitionConfig,
        archive: Option<&dyn PartitionArchive>,
    ) -> Result<PartitionReport, EventError> {
        config.validate()?;
        let mut session = if owner.pooler().needs_transaction() || !config.detach_concurrently {
            Session::Pooled(owner.clone(), config.lock_timeout.as_millis().max(1))
        } else {
            let mut conn = owner.acquire().await?;
            sqlx::raw_sql(AssertSqlSafe(format!(
                "SET lock_timeout = {}",
                config.lock_timeout.as_millis().max(1)
            )))
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
                .persistent(false)
                .bind(format!("neo_events.retention:{}", self.parent))
                .fetch_one(&mut *conn)
                .await
                .map_err(db_error)?;
            if !locked {
                tracing::info!(table = %self.parent, "another process is retiring partitions");
                return Ok(PartitionReport::default());
            }
            Session::Plain(conn)
        };
        let result = self.retire_in(&mut session, system, config, archive).await;
        if let Session::Plain(mut conn) = session {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
                .persistent(false)
                .bind(format!("neo_events.retention:{}", self.parent))
                .execute(&mut *conn)
                .await;
            let reset = sqlx::raw_sql("RESET lock_timeout")
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() || reset.is_err() {
                // Never hand a connection holding the lock back to the pool.
                conn.close_on_drop();
            }
        }
        result
    }

    async fn retire_in(
        &self,
        session: &mut Session,
        system: &Db,
        config: &PartitionConfig,
        archive: Option<&dyn PartitionArchive>,
    ) -> Result<PartitionReport, EventError> {
        let retention = TimeDelta::from_std(config.retention).unwrap_or(TimeDelta::MAX);
        let (now, listed) = match session {
            Session::Plain(conn) => (db_now(conn).await?, self.list(conn).await?),
            Session::Pooled(db, _) => {
                let mut conn = db.statement_connection().await?;
                let found = (db_now(&mut conn).await?, self.list(&mut conn).await?);
                conn.finish().await?;
                found
            }
        };
        let cutoff = now
            .checked_sub_signed(retention)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut report = PartitionReport::default();
        let has_default = listed.iter().any(|p| p.is_default);
        for listed in &listed {
            if listed.detach_pending {
                // A `DETACH ... CONCURRENTLY` that was interrupted: finish it, then attach the
                // partition again; it is retired below if it is due.
                let (parent, table) = (&self.parent, self.qualified(&listed.name)?);
                session
                    .execute(&format!(
                        "ALTER TABLE {parent} DETACH PARTITION {table} FINALIZE"
                    ))
                    .await?;
                if let Some(partition) = listed.partition() {
                    self.attach(session, &partition).await?;
                }
            }
        }
        for partition in listed
            .iter()
            .filter(|p| !p.is_default)
            .filter_map(Listed::partition)
            .filter(|p| p.to <= cutoff)
        {
            let table = self.qualified(&partition.table)?;
            let pending = format!(
                "SELECT EXISTS (SELECT 1 FROM ONLY {table} WHERE {})",
                self.pending
            );
            if session.exists(&pending).await? {
                report.kept_pending.push(partition);
                continue;
            }
            // PostgreSQL refuses `CONCURRENTLY` while a DEFAULT partition exists.
            let concurrently = if matches!(session, Session::Plain(_)) && !has_default {
                " CONCURRENTLY"
            } else {
                ""
            };
            session
                .execute(&format!(
                    "ALTER TABLE {} DETACH PARTITION {table}{concurrently}",
                    self.parent
                ))
                .await?;
            // A transaction that began before the check may have committed a pending row
            // into it since (the detach waited for it): put the partition back.
            if session.exists(&pending).await? {
                self.attach(session, &partition).await?;
                report.kept_pending.push(partition);
                continue;
            }
            if let Some(archive) = archive {
                match self.archive(session, system, archive, &partition).await {
                    Ok(rows) => report.archived_rows += rows,
                    Err(error) => {
                        if let Err(again) = self.attach(session, &partition).await {
                            tracing::error!(table = %table, error = %again,
                                "a partition whose archive failed could not be attached again; \
                                 it is detached, its rows are kept");
                        }
                        return Err(error);
                    }
                }
            }
            if let Some(companion) = &self.companion {
                let mut tx = system.begin().await?;
                sqlx::query(AssertSqlSafe(format!(
                    "DELETE FROM {} WHERE {} IN (SELECT id FROM {table})",
                    self.qualified(companion.name)?,
                    companion.column
                )))
                .persistent(false)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
                tx.commit().await?;
            }
            session.execute(&format!("DROP TABLE {table}")).await?;
            tracing::info!(table = %table, "partition retired");
            report.dropped.push(partition);
        }
        Ok(report)
    }

    /// Attaches a detached partition again (after `DETACH ... CONCURRENTLY`, whose `CHECK`
    /// constraint spares the validation scan).
    async fn attach(&self, session: &mut Session, partition: &Partition) -> Result<(), EventError> {
        let from = partition
            .from
            .map_or_else(|| "MINVALUE".to_owned(), literal);
        session
            .execute(&format!(
                "ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({from}) TO ({})",
                self.parent,
                self.qualified(&partition.table)?,
                literal(partition.to)
            ))
            .await
    }

    /// Writes a detached partition's rows (and its companion's) into `archive`; returns
    /// how many.
    async fn archive(
        &self,
        session: &mut Session,
        system: &Db,
        archive: &dyn PartitionArchive,
        partition: &Partition,
    ) -> Result<u64, EventError> {
        let table = self.qualified(&partition.table)?;
        let mut writer = archive.open(self.store, partition)?;
        let select = format!("SELECT to_jsonb(x) FROM ONLY {table} AS x");
        let mut rows = match session {
            Session::Plain(conn) => stream_into(conn, &select, self.name, &mut *writer).await?,
            Session::Pooled(db, _) => {
                let mut tx = db.begin().await?;
                let n = stream_into(&mut tx, &select, self.name, &mut *writer).await?;
                tx.commit().await?;
                n
            }
        };
        if let Some(companion) = &self.companion {
            let select = format!(
                "SELECT to_jsonb(x) FROM {} AS x WHERE x.{} IN (SELECT id FROM {table})",
                self.qualified(companion.name)?,
                companion.column
            );
            let mut tx = system.begin().await?;
            rows += stream_into(&mut tx, &select, companion.name, &mut *writer).await?;
            tx.commit().await?;
        }
        writer.finish()?;
        Ok(rows)
    }
}

impl Session {
    /// Runs one DDL statement: on the plain connection, or in a transaction of its own with
    /// the lock timeout.
    async fn execute(&mut self, sql: &str) -> Result<(), EventError> {
        match self {
            Session::Plain(conn) => {
                sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                    .execute(&mut **conn)
                    .await
                    .map_err(db_error)?;
            }
            Session::Pooled(db, timeout) => {
                let mut tx = db.begin().await?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "SET LOCAL lock_timeout = {timeout}; {sql}"
                )))
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Runs a `SELECT EXISTS (...)`.
    async fn exists(&mut self, sql: &str) -> Result<bool, EventError> {
        let query = || sqlx::query_scalar(AssertSqlSafe(sql.to_owned())).persistent(false);
        match self {
            Session::Plain(conn) => query().fetch_one(&mut **conn).await.map_err(db_error),
            Session::Pooled(db, _) => {
                let mut conn = db.statement_connection().await?;
                let found = query().fetch_one(&mut *conn).await.map_err(db_error)?;
                conn.finish().await?;
                Ok(found)
            }
        }
    }
}

async fn db_now(conn: &mut PgConnection) -> Result<DateTime<Utc>, EventError> {
    sqlx::query_scalar("SELECT now()")
        .persistent(false)
        .fetch_one(conn)
        .await
        .map_err(db_error)
}

/// Streams `select` (one `jsonb` column) into `writer` as rows of `table`; returns how many.
async fn stream_into(
    conn: &mut PgConnection,
    select: &str,
    table: &str,
    writer: &mut dyn PartitionWriter,
) -> Result<u64, EventError> {
    let mut rows = sqlx::query_scalar::<_, serde_json::Value>(AssertSqlSafe(select.to_owned()))
        .persistent(false)
        .fetch(conn);
    let mut n = 0;
    while let Some(row) = rows.try_next().await.map_err(db_error)? {
        writer.row(table, row)?;
        n += 1;
    }
    Ok(n)
}
