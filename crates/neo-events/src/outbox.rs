//! The transactional outbox and its dispatcher.

mod check;
mod idempotent;
mod offboard;

pub use check::PublishCheck;
pub use idempotent::{MAX_IDEMPOTENCY_KEY_LEN, Published};

use crate::partition::Partitioned;
use crate::tenancy::{Tenancy, policies};
use crate::{
    DomainEvent, EventError, Partition, PartitionArchive, PartitionConfig, PartitionReport,
};
use neo_db::{Db, MigrationReport, MigrationSet, RlsSetting, Schema, TableName, quote_identifier};
use serde::Deserialize;
use sqlx::{Acquire, AssertSqlSafe, Postgres};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tracing::Instrument;

/// Outbox settings. Load with `neo_core::config::from_env("NEO_EVENTS_OUTBOX_")`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct OutboxConfig {
    /// Schema of the outbox tables.
    pub schema: String,
    /// LISTEN/NOTIFY channel that wakes dispatchers.
    pub channel: String,
    /// Events handed to the handler at once.
    pub batch_size: usize,
    /// Look for events this often when no notification arrives.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Rows moved to the archive per statement (and expired idempotency keys deleted per
    /// statement).
    pub archive_batch: usize,
    /// How long an idempotency key ([`Outbox::publish_idempotent`]) holds: a duplicate within
    /// it publishes nothing and answers the first event's id.
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// How the events are partitioned by `recorded_at` and retired
    /// ([`maintain_partitions`](Outbox::maintain_partitions)); from the environment as
    /// `NEO_EVENTS_OUTBOX_PARTITIONS__WIDTH` etc.
    pub partitions: PartitionConfig,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            schema: "neo_events".to_owned(),
            channel: "neo_events_outbox".to_owned(),
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            archive_batch: 1_000,
            idempotency_window: Duration::from_secs(24 * 60 * 60),
            partitions: PartitionConfig::default(),
        }
    }
}

#[derive(Debug)]
struct Sql {
    insert: String,
    /// `{table} ({COLUMNS})`, for the publish CTE.
    table: String,
    /// Locks the oldest pending events and marks them processed, in one statement (between
    /// the planner settings that keep its plan, in one simple-query batch).
    claim: String,
    archive: String,
    pending: String,
    idempotency: idempotent::IdempotencySql,
    partitioned: Partitioned,
}

/// Writes events in the caller's transaction and dispatches them after commit; cheap to
/// clone.
///
/// # Example
/// ```no_run
/// # async fn demo(db: neo_db::Db) -> Result<(), neo_events::EventError> {
/// use neo_events::{DomainEvent, Outbox, OutboxConfig};
/// let outbox = Outbox::new(&db, OutboxConfig::default())?;
/// outbox.migrate().await?;
///
/// let mut uow = db.begin().await?;
/// // ... the business write on &mut **uow ...
/// let event = DomainEvent::new("organization.created", "organization", "org_42", &42)?;
/// outbox.publish(&mut *uow, &event).await?; // exists if and only if the write commits
/// uow.commit().await?;
///
/// // Elsewhere: hand committed events to handlers, then mark them processed.
/// outbox.dispatch_once(|events: Vec<DomainEvent>| async move {
///     println!("{} events", events.len());
///     Ok::<(), std::io::Error>(())
/// }).await?;
/// # Ok(()) }
/// ```
///
/// # Row-level security
/// [`with_row_level_security`](Self::with_row_level_security) puts the outbox tables under
/// PostgreSQL row-level security on their `tenant_id`: every event published must name its
/// tenant, and the caller's transaction must have entered that tenant
/// ([`neo_db::TenantIsolation::begin`]), or PostgreSQL refuses the row. Dispatching,
/// archiving and [`pending`](Self::pending) span tenants and run on the system `Db`.
#[derive(Debug, Clone)]
pub struct Outbox {
    db: Db,
    config: Arc<OutboxConfig>,
    schema: Schema,
    sql: Arc<Sql>,
    tenancy: Tenancy,
    check: Option<Arc<dyn PublishCheck>>,
}

/// The outbox tables under row-level security.
const TENANT_TABLES: [&str; 2] = ["outbox", "outbox_archive"];
/// The tables of later migrations under row-level security (migration 11).
const LATER_TENANT_TABLES: [&str; 1] = ["outbox_idempotency"];

const COLUMNS: &str = "id, event_type, aggregate_type, aggregate_id, tenant_id, payload, metadata, occurred_at, correlation_id, causation_id, schema_version, trace_context";
/// The event JSON's fields as `jsonb_to_recordset` reads them.
const RECORD: &str = "id uuid, event_type text, aggregate_type text, aggregate_id text, tenant_id uuid, \
     payload jsonb, metadata jsonb, occurred_at timestamptz, correlation_id uuid, causation_id uuid, \
     schema_version int4, trace_context jsonb";

impl Outbox {
    /// An outbox in `config.schema`.
    ///
    /// # Errors
    /// [`EventError::Invalid`] for a bad schema or channel name or zero batch sizes.
    pub fn new(db: &Db, config: OutboxConfig) -> Result<Self, EventError> {
        let schema = Schema::new(&config.schema)?;
        quote_identifier(&config.channel)?;
        if config.batch_size == 0 || config.archive_batch == 0 {
            return Err(EventError::Invalid {
                what: "outbox configuration",
                reason: "batch_size and archive_batch must be at least 1".into(),
            });
        }
        config.partitions.validate()?;
        let t = TableName::new("outbox")?.in_schema(&schema);
        let archive = TableName::new("outbox_archive")?.in_schema(&schema);
        let sql = Sql {
            table: t.to_string(),
            insert: format!(
                "WITH ins AS (INSERT INTO {t} ({COLUMNS}) SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], \
                 $4::text[], $5::uuid[], $6::jsonb[], $7::jsonb[], $8::timestamptz[], $9::uuid[], $10::uuid[], $11::int4[], $13::jsonb[]) \
                 RETURNING id) SELECT count(*) FROM ins, (SELECT pg_notify($12, '')) AS woken"
            ),
            // The pending rows are locked (skipping those another dispatcher holds) and
            // marked in the same statement, found again by `(tableoid, ctid)` (the table is
            // partitioned, migration 20: a `ctid` alone names a row only within its
            // partition). Measured against a locking SELECT followed by an UPDATE of the same
            // ids: one round trip and one lookup per event less. Planned per call (sent as a
            // simple query): a generic plan made while the table was nearly empty finds the
            // rows by scanning the whole table, and keeps doing so as it grows (`auto_explain`
            // caught a 500-event claim taking 112 ms that way, reading 20,350 rows).
            // The partition key (`recorded_at`) joined too: each picked row's update runs in
            // its own partition alone (pruned as the join runs), a TID scan by the picked
            // row's `ctid` (at 16 partitions, 100 events: 1.0-1.5 ms).
            // That plan is not left to the statistics: a partition without them (each new
            // one, until autovacuum analyses it) got a hash join over a sequential scan of the
            // whole partition for the update, and a bitmap scan of every entry of the pending
            // index, dead ones included (bitmap scans never mark them dead), for the pick:
            // both grow with the partition, 60 ms per claim of 250 at 20,000 rows against
            // 5-6 ms (`auto_explain`: every claim of a 20,000-event drain planned so). The
            // statement runs between `SET LOCAL`s that leave the planner only the nested loop
            // of TID scans and the index scan in order, in the same round trip (a simple-query
            // batch, so the batch size is written into it), and then set them back to their
            // defaults for the rest of the caller's transaction.
            claim: format!(
                "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL enable_bitmapscan = off; \
                 WITH picked AS (SELECT tableoid AS part, ctid AS row_id, recorded_at AS at FROM {t} WHERE processed_at IS NULL \
                 ORDER BY recorded_at, id LIMIT {limit} FOR UPDATE SKIP LOCKED), \
                 claimed AS (UPDATE {t} AS o SET processed_at = now() FROM picked \
                 WHERE o.tableoid = picked.part AND o.ctid = picked.row_id AND o.recorded_at = picked.at \
                 RETURNING {COLUMNS}, recorded_at) \
                 SELECT {COLUMNS} FROM claimed ORDER BY recorded_at, id; \
                 SET LOCAL enable_hashjoin TO DEFAULT; SET LOCAL enable_mergejoin TO DEFAULT; SET LOCAL enable_bitmapscan TO DEFAULT",
                limit = config.batch_size
            ),
            archive: format!(
                "WITH picked AS (SELECT tableoid AS part, ctid AS row_id FROM {t} \
                 WHERE processed_at < now() - $1 * interval '1 millisecond' \
                 ORDER BY processed_at LIMIT $2 FOR UPDATE SKIP LOCKED), \
                 moved AS (DELETE FROM {t} AS o USING picked WHERE o.tableoid = picked.part AND o.ctid = picked.row_id \
                 RETURNING o.*) \
                 INSERT INTO {archive} SELECT * FROM moved"
            ),
            pending: format!("SELECT count(*) FROM {t} WHERE processed_at IS NULL"),
            idempotency: idempotent::IdempotencySql::new(&schema)?,
            partitioned: Partitioned::new(
                "outbox",
                &schema,
                "outbox",
                "recorded_at",
                "processed_at IS NULL",
                None,
            )?,
        };
        Ok(Outbox {
            db: db.clone(),
            config: Arc::new(config),
            schema,
            sql: Arc::new(sql),
            tenancy: Tenancy::Shared,
            check: None,
        })
    }

    /// This outbox with its tables under row-level security on `setting` (see the type's
    /// documentation): `publish` and offboarding act for a tenant on the `Db` it was built
    /// with (an application role that is neither the tables' owner nor `BYPASSRLS`), while
    /// dispatching, archiving and counting run on `system` (a `BYPASSRLS` role). Migrate
    /// with [`rls_migrations`](Self::rls_migrations) as the owner (or `migrate` on an
    /// outbox whose `Db` is the owner's), then grant both roles the tables
    /// ([`neo_db::tenancy::grant_app_role`]).
    #[must_use]
    pub fn with_row_level_security(mut self, system: &Db, setting: RlsSetting) -> Self {
        self.tenancy = Tenancy::rls(system, setting);
        self
    }

    /// Whether the tables are under row-level security.
    pub fn is_row_level_security(&self) -> bool {
        self.tenancy.setting().is_some()
    }

    /// [`migrations`](Self::migrations) and migration 2: an index on `tenant_id` in both
    /// tables (for offboarding), `ENABLE` and `FORCE ROW LEVEL SECURITY`, and a policy
    /// comparing `tenant_id` with `setting`; migration 11: the same for the idempotency keys
    /// of migration 10.
    ///
    /// # Errors
    /// Never for a valid setting; fallible for symmetry.
    pub fn rls_migrations(setting: &RlsSetting) -> Result<MigrationSet, EventError> {
        let sql = format!(
            "CREATE INDEX outbox_tenant ON outbox (tenant_id);\n\
             CREATE INDEX outbox_archive_tenant ON outbox_archive (tenant_id);\n{}",
            policies(setting, &TENANT_TABLES)?
        );
        let later = format!(
            "CREATE INDEX outbox_idempotency_tenant ON outbox_idempotency (tenant_id);\n{}",
            policies(setting, &LATER_TENANT_TABLES)?
        );
        Ok(Self::migrations()?
            .with_sql(2, "outbox row-level security", sql)
            .with_sql(11, "idempotency keys row-level security", later))
    }

    /// The `Db` of work across tenants.
    fn system(&self) -> &Db {
        self.tenancy.system(&self.db)
    }

    /// The outbox's own migrations.
    ///
    /// # Errors
    /// Never; fallible for symmetry with other crates' sets.
    pub fn migrations() -> Result<MigrationSet, EventError> {
        Ok(MigrationSet::new("neo_events")?
            .with(
                1,
                "outbox",
                include_str!("../migrations/outbox/1_outbox.sql"),
            )
            .with(
                3,
                "events carry trace context",
                include_str!("../migrations/outbox/3_events_carry_trace_context.sql"),
            )
            .with(
                10,
                "idempotency keys",
                include_str!("../migrations/outbox/10_idempotency_keys.sql"),
            )
            .with_sql(
                20,
                "outbox partitioned by time",
                crate::partition::migration("outbox", "recorded_at", &[]),
            ))
    }

    /// Creates or upgrades the outbox tables in `config.schema`.
    ///
    /// # Errors
    /// A migration error.
    pub async fn migrate(&self) -> Result<MigrationReport, EventError> {
        let set = match self.tenancy.setting() {
            None => Self::migrations()?,
            Some(setting) => Self::rls_migrations(setting)?,
        };
        let report = set.run_in_schema(&self.db, &self.schema).await?;
        self.ensure_partitions().await?;
        Ok(report)
    }

    /// Creates the partitions of the current period and
    /// [`premake`](PartitionConfig::premake) ahead ([`migrate`](Self::migrate) and
    /// [`maintain_partitions`](Self::maintain_partitions) call it); returns those created. DDL:
    /// run it on an outbox whose `Db` owns the tables (see [`crate::partition`]).
    ///
    /// # Errors
    /// A database error (e.g. `lock_timeout`); rows keep going to the `DEFAULT` partition.
    pub async fn ensure_partitions(&self) -> Result<Vec<Partition>, EventError> {
        self.sql
            .partitioned
            .ensure(&self.db, &self.config.partitions)
            .await
    }

    /// Partition maintenance, for a periodic job: [`ensure_partitions`](Self::ensure_partitions),
    /// then retires each partition wholly older than the
    /// [`retention`](PartitionConfig::retention) that holds no unprocessed event: detached,
    /// handed to `archive` when given, dropped (see [`crate::partition`]). Constant time per
    /// partition, unlike [`archive`](Self::archive), which moves rows one by one into
    /// `outbox_archive` and stays for installs that want that table.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(outbox: neo_events::Outbox) -> Result<(), neo_events::EventError> {
    /// let report = outbox.maintain_partitions(None).await?;
    /// println!("{} created, {} dropped", report.created.len(), report.dropped.len());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A database error, or the archive's (the partition is then attached again).
    pub async fn maintain_partitions(
        &self,
        archive: Option<&dyn PartitionArchive>,
    ) -> Result<PartitionReport, EventError> {
        self.sql
            .partitioned
            .maintain(&self.db, self.system(), &self.config.partitions, archive)
            .await
    }

    /// The outbox's partitions with a range, oldest first (the `DEFAULT` one is not listed).
    ///
    /// # Errors
    /// A database error.
    pub async fn partitions(&self) -> Result<Vec<Partition>, EventError> {
        self.sql.partitioned.partitions(&self.db).await
    }

    /// Records one event; pass `&mut *uow` so it exists only if the transaction commits.
    /// Under row-level security the event must name its tenant and `uow` must act for it
    /// ([`neo_db::TenantIsolation::begin`]).
    ///
    /// # Errors
    /// A database error (a repeated event id is kind `AlreadyExists`); under row-level
    /// security [`EventError::Tenant`] for an event without a tenant, before any query.
    pub fn publish<'a, 'c, A>(
        &'a self,
        exec: A,
        event: &'a DomainEvent,
    ) -> impl Future<Output = Result<(), EventError>> + Send + 'a
    where
        A: Acquire<'c, Database = Postgres> + Send + 'a,
    {
        self.publish_many(exec, std::slice::from_ref(event))
    }

    /// Records events in one statement (and wakes dispatchers at commit).
    ///
    /// # Errors
    /// A database error; nothing is recorded then.
    #[allow(
        clippy::manual_async_fn,
        reason = "the explicit `+ Send` is the point: see the comment inside"
    )]
    pub fn publish_many<'a, 'c, A>(
        &'a self,
        exec: A,
        events: &'a [DomainEvent],
    ) -> impl Future<Output = Result<(), EventError>> + Send + 'a
    where
        A: Acquire<'c, Database = Postgres> + Send + 'a,
    {
        // `+ Send` is stated here, where it can be proven for any `A`, so callers can spawn
        // futures that publish (rustc cannot prove it at the call site for generic lifetimes).
        async move {
            if events.is_empty() {
                return Ok(());
            }
            if self.tenancy.setting().is_some() && events.iter().any(|e| e.tenant_id().is_none()) {
                return Err(neo_tenant::Error::NoTenantInScope.into());
            }
            self.check_before_publish(events).await?;
            if self.db.pooler().needs_transaction() {
                // Behind a transaction pooler even one statement needs a transaction
                // (neo_db::Pooler); a savepoint inside the caller's unit of work.
                let mut tx = exec.begin().await.map_err(neo_db::Error::from)?;
                self.publish_on(&mut tx, events).await?;
                tx.commit().await.map_err(neo_db::Error::from)?;
                return Ok(());
            }
            let mut conn = exec.acquire().await.map_err(neo_db::Error::from)?;
            self.publish_on(&mut conn, events).await
        }
    }

    /// [`publish_many`](Self::publish_many) on a connection or transaction you hold.
    async fn publish_on(
        &self,
        conn: &mut sqlx::PgConnection,
        events: &[DomainEvent],
    ) -> Result<(), EventError> {
        let column =
            |f: fn(&DomainEvent) -> serde_json::Value| events.iter().map(f).collect::<Vec<_>>();
        let _: i64 = sqlx::query_scalar(AssertSqlSafe(self.sql.insert.clone()))
            .persistent(self.db.pooler().named_statements())
            .bind(events.iter().map(DomainEvent::id).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.event_type()).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(|e| e.aggregate_type())
                    .collect::<Vec<_>>(),
            )
            .bind(events.iter().map(|e| e.aggregate_id()).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(DomainEvent::tenant_id)
                    .collect::<Vec<_>>(),
            )
            .bind(column(|e| e.payload().clone()))
            .bind(column(|e| e.metadata().clone()))
            .bind(
                events
                    .iter()
                    .map(DomainEvent::occurred_at)
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(DomainEvent::correlation_id)
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(DomainEvent::causation_id)
                    .collect::<Vec<_>>(),
            )
            .bind(events.iter().map(DomainEvent::version).collect::<Vec<_>>())
            .bind(&self.config.channel)
            .bind(
                events
                    .iter()
                    .map(|e| e.trace_context().map(sqlx::types::Json))
                    .collect::<Vec<_>>(),
            )
            .fetch_one(&mut *conn)
            .await
            .map_err(neo_db::Error::from)?;
        metrics::counter!(crate::metric_names::PUBLISHED_TOTAL).increment(events.len() as u64);
        Ok(())
    }

    /// A `WITH` item that records events in the same statement as your business write, so
    /// publishing costs no extra round trip: bind [`publish_params`](Self::publish_params) at
    /// `$first_param` and `$first_param + 1`. A data-modifying `WITH` item always runs, whether
    /// or not the statement reads it.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(db: neo_db::Db, outbox: neo_events::Outbox) -> Result<(), neo_events::EventError> {
    /// use neo_events::DomainEvent;
    /// let event = DomainEvent::new("organization.created", "organization", "org_42", &42)?;
    /// let sql = format!(
    ///     "WITH {} INSERT INTO organizations (id, name) VALUES ($1, $2)",
    ///     outbox.publish_cte(3)
    /// );
    /// let events = [event];
    /// let (events, channel) = outbox.publish_params(&events);
    /// let mut uow = db.begin().await?;
    /// sqlx::query(sqlx::AssertSqlSafe(sql))
    ///     .bind(uuid::Uuid::now_v7())
    ///     .bind("Acme")
    ///     .bind(events)
    ///     .bind(channel)
    ///     .execute(&mut **uow)
    ///     .await
    ///     .map_err(neo_db::Error::from)?;
    /// uow.commit().await?;
    /// # Ok(()) }
    /// ```
    pub fn publish_cte(&self, first_param: usize) -> String {
        self.publish_cte_when(first_param, "true")
    }

    /// [`publish_cte`](Self::publish_cte) that records the events only when `condition` (SQL
    /// of the same statement, such as `EXISTS (SELECT 1 FROM updated)`) holds: for a write
    /// that may change nothing, like an optimistic update whose version no longer matches.
    /// `condition` is your code's SQL, never user input.
    pub fn publish_cte_when(&self, first_param: usize, condition: &str) -> String {
        let (events, channel) = (first_param, first_param + 1);
        format!(
            "neo_published AS (INSERT INTO {table} ({COLUMNS}) \
             SELECT {COLUMNS} FROM jsonb_to_recordset(CASE WHEN {condition} THEN ${events}::jsonb ELSE '[]'::jsonb END) \
             AS e({RECORD}) CROSS JOIN (SELECT pg_notify(${channel}, '') WHERE {condition}) AS woken RETURNING 1)",
            table = self.sql.table
        )
    }

    /// [`publish_cte`](Self::publish_cte) that records only the events for which `condition`
    /// holds, with `e` naming the event (`e.aggregate_id`, `e.event_type`, ...): for a
    /// statement that writes many rows and may skip some, such as a batch of optimistic
    /// updates (`e.aggregate_id IN (SELECT id::text FROM updated)`). Dispatchers are woken
    /// whenever the statement carries events (a wake-up that finds nothing costs one empty
    /// claim; checking each event twice cost more). `condition` is your code's SQL, never
    /// user input.
    pub fn publish_cte_matching(&self, first_param: usize, condition: &str) -> String {
        let (events, channel) = (first_param, first_param + 1);
        format!(
            "neo_published AS (INSERT INTO {table} ({COLUMNS}) \
             SELECT {COLUMNS} FROM jsonb_to_recordset(${events}::jsonb) AS e({RECORD}) \
             CROSS JOIN (SELECT pg_notify(${channel}, '') WHERE jsonb_array_length(${events}::jsonb) > 0) AS woken \
             WHERE {condition} RETURNING 1)",
            table = self.sql.table
        )
    }

    /// The two values [`publish_cte`](Self::publish_cte) expects: the events as JSON and the
    /// channel that wakes dispatchers. Takes the events by reference, from a slice or any
    /// iterator (events spread over several writes need no copying).
    ///
    /// One JSON document rather than a column array per field: for a single event, binding
    /// eleven one-element arrays made `events/publish_in_business_statement` 1.21–1.37 times
    /// the bare insert, against 1.10–1.13 with JSON (same runs, alternating builds). Arrays
    /// only won for large batches (500 events: 3.3–4.4 ms against 5.1–6.3 ms), which
    /// [`publish_many`](Self::publish_many) writes that way.
    pub fn publish_params<'e>(
        &self,
        events: impl IntoIterator<Item = &'e DomainEvent>,
    ) -> (sqlx::types::Json<Vec<&'e DomainEvent>>, String) {
        (
            sqlx::types::Json(events.into_iter().collect()),
            self.config.channel.clone(),
        )
    }

    /// Takes up to `batch_size` committed, unprocessed events (oldest first, skipping rows
    /// another dispatcher holds), hands them to `handler`, and marks them processed in the
    /// same transaction: a failing handler leaves them pending for the next round
    /// (at-least-once). What a succeeding handler returns is ignored. Returns how many were
    /// processed.
    ///
    /// # Errors
    /// [`EventError::Handler`] with the handler's error, or a database error.
    pub async fn dispatch_once<F, Fut, T, E>(&self, handler: F) -> Result<usize, EventError>
    where
        F: FnOnce(Vec<DomainEvent>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let span = tracing::info_span!(
            "neo_events.outbox.dispatch",
            events = tracing::field::Empty,
            tenant = tracing::field::Empty,
            links = tracing::field::Empty,
        );
        self.dispatch_round(handler, &span)
            .instrument(span.clone())
            .await
    }

    /// [`dispatch_once`](Self::dispatch_once) in its span, which links to the events'
    /// trace contexts and names their tenant.
    async fn dispatch_round<F, Fut, T, E>(
        &self,
        handler: F,
        span: &tracing::Span,
    ) -> Result<usize, EventError>
    where
        F: FnOnce(Vec<DomainEvent>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let mut tx = self.system().begin().await?;
        let events = self.claim(&mut tx).await?;
        if events.is_empty() {
            return Ok(0);
        }
        link_events(span, &events);
        crate::tenancy::record_tenant(span, events.iter().map(DomainEvent::tenant_id));
        let dispatched = events.len();
        if let Err(error) = handler(events).await {
            // Rolling back un-marks them: they are claimed again on the next round.
            tx.rollback().await?;
            return Err(EventError::Handler(error.to_string()));
        }
        tx.commit().await?;
        Self::count_dispatched(dispatched);
        Ok(dispatched)
    }

    /// Takes up to `batch_size` committed, unprocessed events (oldest first, skipping rows
    /// another dispatcher holds) in `tx`, marking them processed there: they count as
    /// dispatched if and only if `tx` commits, and are claimed again otherwise. For handlers
    /// that write in the claiming transaction (as
    /// [`Webhooks::dispatch`](crate::Webhooks::dispatch) does: one transaction per round
    /// instead of two). Under row-level security `tx` must be the system `Db`'s (an
    /// application-role transaction sees only its tenant's events, or none). The claim sets
    /// `enable_hashjoin`, `enable_mergejoin` and `enable_bitmapscan` off for its own
    /// statement (`SET LOCAL`) and leaves them at their defaults in `tx` afterwards.
    ///
    /// # Errors
    /// A database error.
    pub async fn claim(&self, tx: &mut neo_db::UnitOfWork) -> Result<Vec<DomainEvent>, EventError> {
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(self.sql.claim.clone()))
            .fetch_all(&mut ***tx)
            .await
            .map_err(neo_db::Error::from)?;
        Ok(rows
            .iter()
            .map(DomainEvent::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(neo_db::Error::from)?)
    }

    /// Counts `n` events as dispatched (`neo_events_dispatched_total`), after the
    /// transaction that [`claim`](Self::claim)ed them committed.
    pub(crate) fn count_dispatched(n: usize) {
        metrics::counter!(crate::metric_names::DISPATCHED_TOTAL).increment(n as u64);
    }

    /// Events claimed per round at most.
    #[cfg(feature = "webhooks")]
    pub(crate) fn batch_size(&self) -> usize {
        self.config.batch_size
    }

    /// Dispatches until `shutdown` completes, waking on LISTEN/NOTIFY with a poll fallback.
    /// Handler failures are logged and retried on the next round.
    ///
    /// # Errors
    /// A database error that prevents listening.
    pub async fn run<F, Fut, T, E>(
        &self,
        mut handler: F,
        shutdown: impl Future<Output = ()>,
    ) -> Result<u64, EventError>
    where
        F: FnMut(Vec<DomainEvent>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let mut wake = self.wakeups().await?;
        let mut shutdown = std::pin::pin!(shutdown);
        let mut total = 0_u64;
        loop {
            match self.dispatch_once(&mut handler).await {
                Ok(n) if n == self.config.batch_size => {
                    total += n as u64;
                    continue;
                }
                Ok(n) => total += n as u64,
                Err(error) => tracing::warn!(%error, "outbox dispatch failed; retrying"),
            }
            if !wake.next_round(&mut shutdown).await {
                return Ok(total);
            }
        }
    }

    /// What wakes a dispatcher: LISTEN on the channel, with the poll interval as fallback.
    ///
    /// # Errors
    /// A database error that prevents listening.
    pub(crate) async fn wakeups(&self) -> Result<Wakeups, EventError> {
        // None behind a transaction pooler without a listen_url: poll only (neo_db::Pooler).
        let mut listener = self.system().listener().await?;
        if let Some(listener) = listener.as_mut() {
            listener
                .listen(&self.config.channel)
                .await
                .map_err(neo_db::Error::from)?;
        }
        Ok(Wakeups {
            listener,
            poll_interval: self.config.poll_interval,
        })
    }

    /// Moves events processed more than `older_than` ago to the archive table, in statements
    /// of `archive_batch` rows; returns how many moved. Row by row (a `DELETE` and an
    /// `INSERT` per event): for installs that keep `outbox_archive`; partition retention
    /// ([`maintain_partitions`](Self::maintain_partitions)) drops whole partitions instead.
    ///
    /// # Errors
    /// A database error (rows moved by earlier statements stay moved).
    pub async fn archive(&self, older_than: Duration) -> Result<u64, EventError> {
        let mut moved = 0;
        loop {
            let mut conn = self.system().statement_connection().await?;
            let done = sqlx::query(AssertSqlSafe(self.sql.archive.clone()))
                .persistent(self.system().pooler().named_statements())
                .bind(older_than.as_secs_f64() * 1e3)
                .bind(i64::try_from(self.config.archive_batch).unwrap_or(i64::MAX))
                .execute(&mut *conn)
                .await
                .map_err(neo_db::Error::from)?;
            conn.finish().await?;
            moved += done.rows_affected();
            if done.rows_affected() < self.config.archive_batch as u64 {
                return Ok(moved);
            }
        }
    }

    /// Events recorded and not yet processed, of every tenant (on the system `Db` under
    /// row-level security).
    ///
    /// # Errors
    /// A database error.
    pub async fn pending(&self) -> Result<i64, EventError> {
        let mut conn = self.system().statement_connection().await?;
        let pending = sqlx::query_scalar(AssertSqlSafe(self.sql.pending.clone()))
            .persistent(self.system().pooler().named_statements())
            .fetch_one(&mut *conn)
            .await
            .map_err(neo_db::Error::from)?;
        conn.finish().await?;
        Ok(pending)
    }
}

/// Links the dispatch round's `span` to the trace context of each claimed event that has
/// one: a round handles events of many traces, so each is a link, not a parent.
pub(crate) fn link_events(span: &tracing::Span, events: &[DomainEvent]) {
    span.record("events", events.len());
    if span.is_disabled() {
        return;
    }
    let mut links = 0_usize;
    span.in_scope(|| {
        for context in events.iter().filter_map(DomainEvent::trace_context) {
            neo_core::trace::link_current(context);
            links += 1;
        }
    });
    span.record("links", links);
}

/// In-process subscribers of dispatched events: use [`EventBus::publish`] as (part of) an
/// outbox handler, so they run only for committed events.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<DomainEvent>>,
}

impl EventBus {
    /// A bus keeping up to `capacity` events for slow subscribers (slower ones skip ahead).
    pub fn new(capacity: usize) -> Self {
        EventBus {
            sender: broadcast::channel(capacity.max(1)).0,
        }
    }

    /// Receives every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<DomainEvent>> {
        self.sender.subscribe()
    }

    /// Hands events to the subscribers; returns how many subscribers there are.
    pub fn publish(&self, events: &[DomainEvent]) -> usize {
        for event in events {
            let _ = self.sender.send(Arc::new(event.clone()));
        }
        self.sender.receiver_count()
    }
}

/// A dispatcher's wake-ups: a notification on the outbox channel or the poll interval.
pub(crate) struct Wakeups {
    listener: Option<sqlx::postgres::PgListener>,
    poll_interval: Duration,
}

impl Wakeups {
    /// Waits for the next round; false when `shutdown` completed first.
    pub(crate) async fn next_round(
        &mut self,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> bool {
        tokio::select! {
            () = shutdown.as_mut() => false,
            notified = notification(self.listener.as_mut()) => {
                if notified.is_err() {
                    tokio::time::sleep(self.poll_interval.min(Duration::from_secs(1))).await;
                }
                true
            }
            () = tokio::time::sleep(self.poll_interval) => true,
        }
    }
}

/// The next notification, or never without a listener (the poll interval wakes the loop).
async fn notification(
    listener: Option<&mut sqlx::postgres::PgListener>,
) -> Result<sqlx::postgres::PgNotification, sqlx::Error> {
    match listener {
        Some(listener) => listener.recv().await,
        None => std::future::pending().await,
    }
}
