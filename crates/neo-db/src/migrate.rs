//! Migrations: named sets (one per crate, plus the host's), each tracked in its own table, run
//! in the default schema or in a tenant's schema.
//!
//! A set is the ordered list of SQL scripts of one owner. neo crates that own tables (queue,
//! outbox, ...) export their set; the host adds its own, embedded with `include_str!` or read
//! from a directory of sqlx-style files (`<version>_<description>.sql`). Each set records what
//! it applied in `_neo_migrations_<name>` next to its tables, so sets never collide on version
//! numbers, and a tenant schema has its own record. Runs take PostgreSQL's advisory lock, so
//! several instances starting at once apply each script once.

use crate::Result;
use crate::ident::{Ident, Schema};
use crate::pool::Db;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};
use std::borrow::Cow;
use std::path::Path;
use tracing::Instrument;

/// The ordered scripts of one owner.
///
/// # Example
/// ```
/// use neo_db::MigrationSet;
/// let set = MigrationSet::new("billing")?
///     .with(1, "invoices", "CREATE TABLE invoices (id uuid PRIMARY KEY, total int8 NOT NULL)")
///     .with(2, "invoice due date", "ALTER TABLE invoices ADD COLUMN due date");
/// assert_eq!(set.len(), 2);
/// # Ok::<(), neo_db::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MigrationSet {
    name: Ident,
    migrations: Vec<Migration>,
}

/// What [`MigrationSet::run`] applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MigrationReport {
    /// Versions applied by this run, ascending.
    pub applied: Vec<i64>,
}

impl MigrationSet {
    /// An empty set named `name` (a lowercase identifier, e.g. the crate or service name).
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) for a bad name.
    pub fn new(name: &str) -> Result<Self> {
        Ok(MigrationSet {
            name: Ident::new(&format!("_neo_migrations_{name}"))?,
            migrations: Vec::new(),
        })
    }

    /// Adds a script. Versions must increase; a script must never change once applied (its
    /// checksum is recorded and checked).
    #[must_use]
    pub fn with(mut self, version: i64, description: &str, sql: &'static str) -> Self {
        self.migrations.push(Migration::new(
            version,
            Cow::Owned(description.to_owned()),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        ));
        self.migrations.sort_by_key(|m| m.version);
        self
    }

    /// Adds a script built at run time (e.g. row-level-security policies naming a configured
    /// setting, [`RlsSetting::policy_sql`](crate::RlsSetting::policy_sql)); as [`with`](Self::with).
    #[must_use]
    pub fn with_sql(mut self, version: i64, description: &str, sql: String) -> Self {
        self.migrations.push(Migration::new(
            version,
            Cow::Owned(description.to_owned()),
            MigrationType::Simple,
            AssertSqlSafe(sql).into_sql_str(),
            false,
        ));
        self.migrations.sort_by_key(|m| m.version);
        self
    }

    /// Reads sqlx-style files (`<version>_<description>.sql`) from `dir`.
    ///
    /// # Errors
    /// [`Error::Migrate`](crate::Error::Migrate) when the directory or a file cannot be read.
    pub async fn from_dir(name: &str, dir: &Path) -> Result<Self> {
        let mut set = Self::new(name)?;
        let migrator = Migrator::new(dir).await?;
        set.migrations = migrator.migrations.into_owned();
        Ok(set)
    }

    /// Number of scripts.
    pub fn len(&self) -> usize {
        self.migrations.len()
    }

    /// Whether the set has no scripts.
    pub fn is_empty(&self) -> bool {
        self.migrations.is_empty()
    }

    /// Applies the scripts not yet applied, in the connection's default schema.
    ///
    /// # Errors
    /// [`Error::Migrate`](crate::Error::Migrate) when a script fails (that script is rolled back) or an applied
    /// script changed.
    pub async fn run(&self, db: &Db) -> Result<MigrationReport> {
        self.run_in(db, None).await
    }

    /// Applies the scripts in `schema` (created when missing): unqualified names in the
    /// scripts resolve there, and the record of what was applied lives there too.
    ///
    /// # Errors
    /// As [`Self::run`].
    pub async fn run_in_schema(&self, db: &Db, schema: &Schema) -> Result<MigrationReport> {
        self.run_in(db, Some(schema)).await
    }

    /// The migrator for `schema` without sqlx's database-wide advisory lock (the caller holds
    /// a lock of its own, e.g. one per schema), for [`crate::TenantMigrator`].
    pub(crate) fn unlocked_migrator_in(&self, schema: &Schema) -> (Migrator, String) {
        let table = format!("{schema}.{}", self.name);
        let mut migrator = Migrator::with_migrations(self.migrations.clone());
        migrator.dangerous_set_table_name(table.clone());
        migrator.set_locking(false);
        (migrator, table)
    }

    /// `name:last version`, what a schema migrated with this set is at.
    pub(crate) fn fingerprint(&self) -> String {
        let last = self.migrations.last().map_or(0, |m| m.version);
        format!("{}:{last}", self.name.as_str())
    }

    async fn run_in(&self, db: &Db, schema: Option<&Schema>) -> Result<MigrationReport> {
        let span = tracing::info_span!(
            "db.migrate",
            db.migrations = self.name.as_str(),
            db.schema = schema.map(Schema::as_str)
        );
        self.apply(db, schema).instrument(span).await
    }

    async fn apply(&self, db: &Db, schema: Option<&Schema>) -> Result<MigrationReport> {
        let table = match schema {
            Some(schema) => format!("{schema}.{}", self.name),
            None => self.name.to_string(),
        };
        let mut migrator = Migrator::with_migrations(self.migrations.clone());
        migrator.dangerous_set_table_name(table.clone());
        if db.pooler().needs_transaction() {
            return self.apply_pooled(db, schema, &table, migrator).await;
        }

        let mut conn = db.pool().acquire().await?;
        if let Some(schema) = schema {
            sqlx::query(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}"
            )))
            .execute(&mut *conn)
            .await?;
            sqlx::query("SELECT set_config('search_path', $1 || ', public', false)")
                .bind(schema.ident().quoted())
                .execute(&mut *conn)
                .await?;
        }
        let applied_before = applied_versions(&mut conn, &table).await?;
        // `run_direct` rather than `run`: `run`'s `Acquire` bound makes the future unprovably
        // `Send` in generic callers (sqlx documents `run_direct` as the way around it).
        let outcome = migrator.run_direct(None, &mut *conn, false).await;
        if outcome.is_err() {
            // sqlx returns early without releasing its advisory lock; release it, and never
            // reuse a connection whose state is in doubt.
            let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
                .execute(&mut *conn)
                .await;
            conn.close_on_drop();
        } else if schema.is_some()
            && sqlx::query("RESET search_path")
                .execute(&mut *conn)
                .await
                .is_err()
        {
            // Never hand a connection with a tenant's search_path back to the pool.
            conn.close_on_drop();
        }
        outcome?;
        let applied = applied_versions(&mut conn, &table)
            .await?
            .into_iter()
            .filter(|v| !applied_before.contains(v))
            .collect::<Vec<_>>();
        if !applied.is_empty() {
            tracing::info!(
                db.migrations = self.name.as_str(),
                ?applied,
                "migrations applied"
            );
        }
        Ok(MigrationReport { applied })
    }
}

impl MigrationSet {
    /// Behind a transaction pooler ([`crate::Pooler`]): the whole run is one transaction,
    /// so the pooler keeps one server connection for it; the lock is
    /// `pg_advisory_xact_lock` (a session lock would stay with whichever server connection
    /// took it), `search_path` is set for the transaction only, and the named statements
    /// sqlx's migrator prepares are deallocated before the commit so that no other client
    /// meets them on that server connection. A script marked `-- no-transaction` (e.g.
    /// `CREATE INDEX CONCURRENTLY`) cannot run this way: run such sets over a direct URL.
    async fn apply_pooled(
        &self,
        db: &Db,
        schema: Option<&Schema>,
        table: &str,
        mut migrator: Migrator,
    ) -> Result<MigrationReport> {
        migrator.set_locking(false);
        let mut tx = db.begin_raw(db.pool()).await?;
        // sqlx's migrator prepares named statements (`sqlx_s_1`, ...). A client killed
        // mid-migration never deallocated its own, and the pooler hands its server connection
        // to the next client: clear them first, as the end of this transaction does.
        sqlx::raw_sql("DEALLOCATE ALL").execute(&mut *tx).await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .persistent(false)
            .bind(format!("neo-db migrations {}", self.name))
            .execute(&mut *tx)
            .await?;
        if let Some(schema) = schema {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}"
            )))
            .execute(&mut *tx)
            .await?;
            sqlx::query("SELECT set_config('search_path', $1 || ', public', true)")
                .persistent(false)
                .bind(schema.ident().quoted())
                .execute(&mut *tx)
                .await?;
        }
        let applied_before = applied_versions(&mut tx, table).await?;
        // Each script runs in a savepoint: a failing one is rolled back, the ones before it
        // are committed, as on a direct connection where each has its own transaction.
        let outcome = migrator.run_direct(None, &mut *tx, false).await;
        let deallocated = sqlx::raw_sql("DEALLOCATE ALL").execute(&mut *tx).await;
        if let Err(error) = outcome {
            // A failure outside the scripts' savepoints aborts the transaction, which then
            // refuses DEALLOCATE too: the migration's own error is the one to report.
            tx.commit().await?;
            // The scripts before the failing one are committed.
            db.shared().types_changed.mark();
            return Err(error.into());
        }
        deallocated?;
        let applied = applied_versions(&mut tx, table)
            .await?
            .into_iter()
            .filter(|v| !applied_before.contains(v))
            .collect::<Vec<_>>();
        tx.commit().await?;
        if !applied.is_empty() {
            // Connections opened before may not know types these scripts created.
            db.shared().types_changed.mark();
            tracing::info!(
                db.migrations = self.name.as_str(),
                ?applied,
                "migrations applied"
            );
        }
        Ok(MigrationReport { applied })
    }
}

pub(crate) async fn applied_versions(
    conn: &mut sqlx::PgConnection,
    table: &str,
) -> Result<Vec<i64>> {
    // Unnamed statements: this also runs behind a transaction pooler (crate::Pooler).
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .persistent(false)
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    let versions = sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!(
        "SELECT version FROM {table} WHERE success ORDER BY version"
    )))
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?;
    Ok(versions)
}
