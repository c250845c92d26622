//! Schema per tenant at scale: [`TenantMigrator`] provisions one tenant (its schema and every
//! migration set, idempotently) and migrates every tenant's schema with bounded parallelism,
//! progress on a watch channel, a result per tenant, and resumption after a crash.
//!
//! # Resuming
//! Each tenant migrated is recorded in a small table (`public.neo_tenant_migrations` by
//! default) with the *fingerprint* of the sets it was migrated to (each set's name and last
//! version). A run skips the tenants already recorded at the current fingerprint without
//! touching their schema, so a run killed after 7,000 of 10,000 tenants resumes with the
//! remaining 3,000. The record is only a shortcut: each schema keeps its own migration history
//! (`_neo_migrations_*`), so a tenant migrated but not yet recorded when the crash came is
//! migrated again as a no-op.
//!
//! # Locks
//! `MigrationSet::run_in_schema` takes sqlx's advisory lock, which is one per database: every
//! tenant would wait for the one before it. The migrator instead takes one advisory lock per
//! schema (two instances migrating the same tenant still apply each script once), so tenants
//! migrate in parallel. The first tenant due is migrated alone before the others start, so
//! that database-wide objects a script creates (neo-orgs' `CREATE EXTENSION IF NOT EXISTS
//! pg_trgm`) are not created by several schemas at once, which PostgreSQL refuses with a
//! unique violation in its catalog. Behind a transaction pooler each set runs as `run_in_schema` does
//! there (one transaction, a transaction lock per set), which serialises tenants.

use crate::ident::{Schema, TableName};
use crate::migrate::{MigrationSet, applied_versions};
use crate::pool::Db;
use crate::{Error, Result};
use neo_core::{ErrorKind, HasErrorKind, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, watch};

/// The tenant → schema mapping: a plain function, so a host (or a resolver that looks tenants
/// up) can supply its own. [`schema_per_tenant`] is the usual one.
pub type SchemaFor = Arc<dyn Fn(TenantId) -> Result<Schema> + Send + Sync>;

/// `{prefix}{tenant id as 32 hex digits}`, e.g. `t_0190f1c2...`: a valid schema name for
/// every tenant, never colliding between two tenants.
///
/// # Errors
/// [`Error::Invalid`] when the prefix is not an identifier start or too long (at most 31
/// bytes, so that the name stays within 63).
///
/// # Example
/// ```
/// let schema_for = neo_db::schema_per_tenant("t_")?;
/// let tenant = neo_core::TenantId::new();
/// assert_eq!(schema_for(tenant)?.as_str(), format!("t_{}", tenant.as_uuid().simple()));
/// # Ok::<(), neo_db::Error>(())
/// ```
pub fn schema_per_tenant(prefix: &str) -> Result<SchemaFor> {
    // Checks the prefix with the longest suffix it will ever get.
    Schema::new(&format!("{prefix}{}", "0".repeat(32)))?;
    let prefix = prefix.to_owned();
    Ok(Arc::new(move |tenant: TenantId| {
        Schema::new(&format!("{prefix}{}", tenant.as_uuid().simple()))
    }))
}

/// How [`TenantMigrator`] runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantMigrationConfig {
    /// Tenants migrated at once (each holds one pool connection while it migrates; keep it
    /// below the pool's size).
    pub parallelism: usize,
    /// The schema of the progress table.
    pub progress_schema: String,
    /// The progress table: one row per tenant migrated (or failed).
    pub progress_table: String,
}

impl Default for TenantMigrationConfig {
    fn default() -> Self {
        TenantMigrationConfig {
            parallelism: 4,
            progress_schema: "public".into(),
            progress_table: "neo_tenant_migrations".into(),
        }
    }
}

/// Where a [`TenantMigrator::migrate_all`] run is, sent on its watch channel after each tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TenantProgress {
    /// Tenants given to the run (known once the list has been read).
    pub total: usize,
    /// Tenants finished (migrated, skipped or failed).
    pub done: usize,
    /// Of those, the ones skipped because already recorded at the current migrations.
    pub skipped: usize,
    /// Of those, the ones that failed.
    pub failed: usize,
}

/// One tenant migrated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TenantMigrated {
    /// The tenant.
    pub tenant: TenantId,
    /// Its schema.
    pub schema: String,
    /// The versions applied, per set that applied any (empty when it was already current).
    pub applied: Vec<(String, Vec<i64>)>,
    /// Skipped: recorded as current by an earlier run, its schema not touched.
    pub skipped: bool,
}

/// One tenant that could not be migrated; the others are not affected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TenantFailure {
    /// The tenant.
    pub tenant: TenantId,
    /// Its schema, when the mapping gave one.
    pub schema: Option<String>,
    /// The kind of the error.
    pub kind: ErrorKind,
    /// What went wrong (the error's message, with its causes).
    pub error: String,
}

/// What [`TenantMigrator::migrate_all`] did, tenant by tenant.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TenantsReport {
    /// Tenants migrated (or skipped as current), in the order they finished.
    pub migrated: Vec<TenantMigrated>,
    /// Tenants that failed, in the order they finished.
    pub failed: Vec<TenantFailure>,
    /// How long the run took.
    pub elapsed: Duration,
}

impl TenantsReport {
    /// Whether every tenant is migrated.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Provisions tenants and migrates every tenant's schema; cheap to clone.
///
/// # Example
/// ```no_run
/// # async fn demo(db: neo_db::Db, sets: Vec<neo_db::MigrationSet>, tenants: Vec<neo_core::TenantId>) -> neo_db::Result<()> {
/// use neo_db::{TenantMigrationConfig, TenantMigrator, schema_per_tenant};
/// let migrator = TenantMigrator::new(&db, sets, schema_per_tenant("t_")?, TenantMigrationConfig::default())?;
/// migrator.provision(tenants[0]).await?; // a new tenant: its schema and tables
/// let (progress, mut watch) = tokio::sync::watch::channel(Default::default());
/// tokio::spawn(async move {
///     while watch.changed().await.is_ok() {
///         let p: neo_db::TenantProgress = *watch.borrow();
///         tracing::info!(done = p.done, total = p.total, failed = p.failed, "migrating tenants");
///     }
/// });
/// let report = migrator.migrate_all(tenants, Some(&progress)).await?;
/// for failure in &report.failed {
///     tracing::error!(tenant = %failure.tenant, error = %failure.error, "tenant not migrated");
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TenantMigrator {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    sets: Vec<MigrationSet>,
    schema_for: SchemaFor,
    config: TenantMigrationConfig,
    progress_table: TableName,
    fingerprint: String,
    prepared: OnceCell<()>,
}

impl fmt::Debug for TenantMigrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantMigrator")
            .field("config", &self.inner.config)
            .field("fingerprint", &self.inner.fingerprint)
            .finish_non_exhaustive()
    }
}

impl TenantMigrator {
    /// A migrator applying `sets` (in this order) to the schema `schema_for` gives each tenant.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a zero parallelism or a bad progress table name.
    pub fn new(
        db: &Db,
        sets: Vec<MigrationSet>,
        schema_for: SchemaFor,
        config: TenantMigrationConfig,
    ) -> Result<Self> {
        if config.parallelism == 0 {
            return Err(Error::invalid(
                "tenant migration configuration",
                "parallelism must be at least 1",
            ));
        }
        let progress_table = TableName::new(&config.progress_table)?
            .in_schema(&Schema::new(&config.progress_schema)?);
        let fingerprint = sets
            .iter()
            .map(MigrationSet::fingerprint)
            .collect::<Vec<_>>()
            .join(";");
        Ok(TenantMigrator {
            inner: Arc::new(Inner {
                db: db.clone(),
                sets,
                schema_for,
                config,
                progress_table,
                fingerprint,
                prepared: OnceCell::new(),
            }),
        })
    }

    /// The schema of `tenant`.
    ///
    /// # Errors
    /// What the mapping returns.
    pub fn schema_of(&self, tenant: TenantId) -> Result<Schema> {
        (self.inner.schema_for)(tenant)
    }

    /// Creates `tenant`'s schema when missing and applies every set's scripts not yet applied;
    /// running it again changes nothing.
    ///
    /// # Errors
    /// The tenant's migration error.
    pub async fn provision(&self, tenant: TenantId) -> Result<TenantMigrated> {
        self.prepare().await?;
        let schema = self.schema_of(tenant)?;
        let outcome = self.migrate_schema(&schema).await;
        self.record(tenant, &schema, outcome.as_ref().err()).await?;
        Ok(TenantMigrated {
            tenant,
            schema: schema.as_str().to_owned(),
            applied: outcome?,
            skipped: false,
        })
    }

    /// Migrates every tenant of `tenants`, `parallelism` at a time, skipping those an earlier
    /// run recorded at the current migrations; a tenant's failure is reported and the others
    /// go on. `progress` receives a [`TenantProgress`] after each tenant.
    ///
    /// # Errors
    /// Only when the progress table cannot be created or read; each tenant's own failure is
    /// in [`TenantsReport::failed`].
    pub async fn migrate_all(
        &self,
        tenants: impl IntoIterator<Item = TenantId>,
        progress: Option<&watch::Sender<TenantProgress>>,
    ) -> Result<TenantsReport> {
        use futures_util::StreamExt;
        let started = Instant::now();
        self.prepare().await?;
        let current = self.current_tenants().await?;
        let tenants: Vec<TenantId> = tenants.into_iter().collect();
        let mut state = TenantProgress {
            total: tenants.len(),
            ..TenantProgress::default()
        };
        if let Some(progress) = progress {
            progress.send_replace(state);
        }
        let mut report = TenantsReport::default();
        // The first tenant due is migrated alone: what a script creates database-wide
        // (`CREATE EXTENSION IF NOT EXISTS`, shared types) it creates once instead of in a race
        // between schemas, and a script that fails everywhere fails there first.
        let mut tenants = tenants;
        if let Some(first) = tenants.iter().position(|t| !current.contains(t)) {
            tenants[..=first].rotate_right(1);
        }
        let migrate = |tenant: TenantId| {
            let skip = current.contains(&tenant);
            async move { (tenant, self.migrate_one(tenant, skip).await) }
        };
        let mut rest = tenants.into_iter();
        let first = rest.next().map(migrate);
        let mut runs = futures_util::stream::iter(first).buffer_unordered(1).chain(
            futures_util::stream::iter(rest)
                .map(migrate)
                .buffer_unordered(self.inner.config.parallelism),
        );
        while let Some((tenant, outcome)) = runs.next().await {
            state.done += 1;
            match outcome {
                Ok(migrated) => {
                    state.skipped += usize::from(migrated.skipped);
                    report.migrated.push(migrated);
                }
                Err((schema, error)) => {
                    state.failed += 1;
                    tracing::warn!(tenant = %tenant, schema = schema.as_deref(), error = %error, "tenant migration failed");
                    report.failed.push(TenantFailure {
                        tenant,
                        schema,
                        kind: error.kind(),
                        error: error_chain(&error),
                    });
                }
            }
            if let Some(progress) = progress {
                progress.send_replace(state);
            }
        }
        report.elapsed = started.elapsed();
        tracing::info!(
            tenants = state.total,
            skipped = state.skipped,
            failed = state.failed,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "tenant migrations done"
        );
        Ok(report)
    }

    /// Drops `tenant`'s schema with everything in it, and its progress record (offboarding in
    /// schema-per-tenant mode). Returns whether the schema existed.
    ///
    /// # Errors
    /// A database error.
    pub async fn drop_schema(&self, tenant: TenantId) -> Result<bool> {
        self.prepare().await?;
        let schema = self.schema_of(tenant)?;
        let mut tx = self.inner.db.pool().begin().await?;
        let existed: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .persistent(false)
                .bind(schema.as_str())
                .fetch_one(&mut *tx)
                .await?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE"
        )))
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {} WHERE tenant = $1",
            self.inner.progress_table
        )))
        .persistent(false)
        .bind(tenant.as_uuid())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(existed)
    }

    async fn migrate_one(
        &self,
        tenant: TenantId,
        skip: bool,
    ) -> std::result::Result<TenantMigrated, (Option<String>, Error)> {
        let schema = self.schema_of(tenant).map_err(|e| (None, e))?;
        let name = schema.as_str().to_owned();
        if skip {
            return Ok(TenantMigrated {
                tenant,
                schema: name,
                applied: Vec::new(),
                skipped: true,
            });
        }
        let outcome = self.migrate_schema(&schema).await;
        // A record that cannot be written only costs a no-op migration on the next run.
        if let Err(error) = self.record(tenant, &schema, outcome.as_ref().err()).await {
            tracing::warn!(tenant = %tenant, error = %error, "tenant migration not recorded");
        }
        match outcome {
            Ok(applied) => Ok(TenantMigrated {
                tenant,
                schema: name,
                applied,
                skipped: false,
            }),
            Err(error) => Err((Some(name), error)),
        }
    }

    async fn migrate_schema(&self, schema: &Schema) -> Result<Vec<(String, Vec<i64>)>> {
        let db = &self.inner.db;
        if db.pooler().needs_transaction() {
            let mut applied = Vec::new();
            for set in &self.inner.sets {
                let report = set.run_in_schema(db, schema).await?;
                if !report.applied.is_empty() {
                    applied.push((set.fingerprint(), report.applied));
                }
            }
            return Ok(applied);
        }
        let mut conn = db.pool().acquire().await?;
        let outcome = self.migrate_on(&mut conn, schema).await;
        let reset = sqlx::raw_sql(
            "RESET search_path; SELECT pg_advisory_unlock(hashtextextended('neo-db tenant schema ' || current_setting('neo.tenant_schema', true), 0))",
        )
        .execute(&mut *conn)
        .await;
        if outcome.is_err() || reset.is_err() {
            // Never hand back a connection with a tenant's search_path or a lock in doubt.
            let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
                .execute(&mut *conn)
                .await;
            conn.close_on_drop();
        }
        outcome
    }

    async fn migrate_on(
        &self,
        conn: &mut sqlx::PgConnection,
        schema: &Schema,
    ) -> Result<Vec<(String, Vec<i64>)>> {
        // The lock's key is kept in a session setting so the release above names the same one.
        sqlx::query(
            "SELECT set_config('neo.tenant_schema', $1, false), \
             pg_advisory_lock(hashtextextended('neo-db tenant schema ' || $1, 0))",
        )
        .bind(schema.as_str())
        .execute(&mut *conn)
        .await?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}"
        )))
        .execute(&mut *conn)
        .await?;
        sqlx::query("SELECT set_config('search_path', $1 || ', public', false)")
            .bind(schema.ident().quoted())
            .execute(&mut *conn)
            .await?;
        let mut applied = Vec::new();
        for set in &self.inner.sets {
            let (migrator, table) = set.unlocked_migrator_in(schema);
            let before = applied_versions(conn, &table).await?;
            migrator.run_direct(None, &mut *conn, false).await?;
            let new: Vec<i64> = applied_versions(conn, &table)
                .await?
                .into_iter()
                .filter(|v| !before.contains(v))
                .collect();
            if !new.is_empty() {
                applied.push((set.fingerprint(), new));
            }
        }
        Ok(applied)
    }

    async fn prepare(&self) -> Result<()> {
        self.inner
            .prepared
            .get_or_try_init(|| async {
                let t = &self.inner.progress_table;
                let mut tx = self.inner.db.pool().begin().await?;
                // Two instances starting at once would race on the catalog's unique index.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                    .persistent(false)
                    .bind(format!("neo-db tenant migrations {t}"))
                    .execute(&mut *tx)
                    .await?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "CREATE TABLE IF NOT EXISTS {t} (\
                     tenant uuid PRIMARY KEY, \
                     schema_name text NOT NULL, \
                     fingerprint text, \
                     error text, \
                     updated_at timestamptz NOT NULL DEFAULT now())"
                )))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok::<_, Error>(())
            })
            .await?;
        Ok(())
    }

    async fn current_tenants(&self) -> Result<HashSet<TenantId>> {
        // Unnamed statements in a transaction behind a pooler (crate::Pooler).
        let mut conn = self.inner.db.statement_connection().await?;
        let rows: Vec<uuid::Uuid> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT tenant FROM {} WHERE fingerprint = $1 AND error IS NULL",
            self.inner.progress_table
        )))
        .persistent(false)
        .bind(&self.inner.fingerprint)
        .fetch_all(&mut *conn)
        .await?;
        conn.finish().await?;
        Ok(rows
            .into_iter()
            .filter_map(|u| TenantId::from_uuid(u).ok())
            .collect())
    }

    async fn record(&self, tenant: TenantId, schema: &Schema, error: Option<&Error>) -> Result<()> {
        let (fingerprint, error) = match error {
            None => (Some(self.inner.fingerprint.as_str()), None),
            Some(error) => (None, Some(error_chain(error))),
        };
        let mut conn = self.inner.db.statement_connection().await?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (tenant, schema_name, fingerprint, error) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant) DO UPDATE SET schema_name = EXCLUDED.schema_name, \
             fingerprint = EXCLUDED.fingerprint, error = EXCLUDED.error, updated_at = now()",
            self.inner.progress_table
        )))
        .persistent(false)
        .bind(tenant.as_uuid())
        .bind(schema.as_str())
        .bind(fingerprint)
        .bind(error)
        .execute(&mut *conn)
        .await?;
        conn.finish().await
    }
}

/// The error's message followed by its causes', so a report says *why* (e.g. the failing
/// statement's PostgreSQL message under "migration failed").
fn error_chain(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Offboarding in schema-per-tenant mode: the last step drops the tenant's schema. It exports
/// nothing itself (each store exports its own tables before), so add it after the stores.
impl neo_tenant::TenantData for TenantMigrator {
    fn name(&self) -> &str {
        "schema"
    }

    fn export<'a>(
        &'a self,
        _tenant: TenantId,
        _sink: &'a mut dyn neo_tenant::ExportSink,
    ) -> neo_tenant::DataFuture<'a, u64> {
        Box::pin(async { Ok(0) })
    }

    fn purge(&self, tenant: TenantId) -> neo_tenant::DataFuture<'_, u64> {
        Box::pin(async move {
            self.drop_schema(tenant)
                .await
                .map(u64::from)
                .map_err(|e| neo_tenant::store_error("schema", e.kind(), &e))
        })
    }
}
