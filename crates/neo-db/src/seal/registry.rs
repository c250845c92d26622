//! Retiring a key for every instance: a small state table (`neo_seal_keys` by default) that
//! lists retired key ids, and a [`KeyRegistry`] through which each instance's [`Sealer`]
//! learns them.
//!
//! Why a table: [`Sealer::retire_key`] acts on one process's provider, while every instance
//! of a service has its own sealer and its own copy of the configured keys. The table is the
//! one place all of them read: [`KeyRegistry::retire`] checks that no stored row still uses
//! the key (through the [`KeyUsage`] checkers given, e.g. a [`Resealer`](super::Resealer)
//! per table), inserts the key id, and marks it retired in its own sealer at once; every
//! other instance marks it when it next [`refresh`](KeyRegistry::refresh)es (at start, and
//! every [`KeyRegistryConfig::refresh_interval`] with
//! [`spawn_refresh`](KeyRegistry::spawn_refresh)). A sealer refuses to open or seal under a
//! key it knows retired ([`SealProblem::Retired`]), whatever its provider holds. Retirement
//! is one-way: a retired key id is never used again (make a new id for new key material).
//!
//! Order of a rotation: give every instance the new key as current (the old one still
//! configured), re-seal (`Resealer::run`, `Webhooks::reseal`), then retire. A straggler
//! that still seals under the old key after the check would write values that no longer
//! open once it learns the retirement; finish the rollout before retiring.

use super::{SealProblem, Sealer, seal_error};
use crate::pool::Db;
use crate::{Error, Result, TableName};
use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::time::Duration;

/// Where retired keys are recorded and how often an instance reads them
/// (`NEO_DB_SEAL_KEYS__*` when embedded in a config).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct KeyRegistryConfig {
    /// The state table (`name` or `schema.name`), created by [`KeyRegistry::install`].
    pub table: String,
    /// How often [`KeyRegistry::spawn_refresh`] reads the retired keys: the longest an
    /// instance keeps opening values under a key another instance retired.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

impl Default for KeyRegistryConfig {
    fn default() -> Self {
        KeyRegistryConfig {
            table: "neo_seal_keys".to_owned(),
            refresh_interval: Duration::from_secs(30),
        }
    }
}

/// Counts stored rows that hold a value sealed under a key: asked before the key is retired.
pub trait KeyUsage: Send + Sync {
    /// Rows with at least one value sealed under `key_id`.
    ///
    /// # Errors
    /// A database error.
    fn rows_under<'a>(&'a self, key_id: &'a str) -> BoxFuture<'a, Result<u64>>;
}

impl KeyUsage for super::Resealer {
    fn rows_under<'a>(&'a self, key_id: &'a str) -> BoxFuture<'a, Result<u64>> {
        Box::pin(super::Resealer::rows_under(self, key_id))
    }
}

/// The retired keys shared by every instance, for one [`Sealer`] (see the
/// [`seal`](crate::seal) module docs).
#[derive(Debug, Clone)]
pub struct KeyRegistry {
    db: Db,
    sealer: Sealer,
    table: TableName,
    config: KeyRegistryConfig,
}

impl KeyRegistry {
    /// Creates the state table if it is missing and reads the retired keys into `sealer`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad table name; a database error.
    pub async fn install(db: &Db, sealer: &Sealer, config: KeyRegistryConfig) -> Result<Self> {
        let table = TableName::parse(&config.table)?;
        let registry = KeyRegistry {
            db: db.clone(),
            sealer: sealer.clone(),
            table,
            config,
        };
        let mut conn = db.statement_connection().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {} (key_id text PRIMARY KEY, \
             retired_at timestamptz NOT NULL DEFAULT now())",
            registry.table
        )))
        .execute(&mut *conn)
        .await?;
        conn.finish().await?;
        registry.refresh().await?;
        Ok(registry)
    }

    /// Reads the retired key ids and marks them retired in the sealer; returns them.
    ///
    /// # Errors
    /// A database error.
    pub async fn refresh(&self) -> Result<Vec<String>> {
        let mut conn = self.db.statement_connection().await?;
        let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT key_id FROM {} ORDER BY key_id",
            self.table
        )))
        .persistent(self.db.pooler().named_statements())
        .fetch_all(&mut *conn)
        .await?;
        conn.finish().await?;
        self.sealer.mark_retired(&ids);
        Ok(ids)
    }

    /// Retires `key_id` for every instance: refuses while a checker counts rows under it,
    /// then records it and marks it retired in this sealer (the others follow on their next
    /// refresh). Retiring a key already retired succeeds.
    ///
    /// # Errors
    /// [`Error::Seal`] naming the key: [`SealProblem::StillInUse`] with the rows the checkers
    /// count, or the sealer's current key; a database error.
    pub async fn retire(&self, key_id: &str, checkers: &[&dyn KeyUsage]) -> Result<()> {
        if self.sealer.current_key_id() == key_id {
            return Err(seal_error(
                key_id,
                SealProblem::Provider("the current key cannot be retired".into()),
            ));
        }
        if key_id.is_empty() || key_id.len() > 255 {
            return Err(Error::invalid("key id", "a key id is 1 to 255 bytes"));
        }
        let mut rows = 0;
        for checker in checkers {
            rows += checker.rows_under(key_id).await?;
        }
        if rows > 0 {
            return Err(seal_error(key_id, SealProblem::StillInUse { rows }));
        }
        let mut conn = self.db.statement_connection().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} (key_id) VALUES ($1) ON CONFLICT (key_id) DO NOTHING",
            self.table
        )))
        .persistent(self.db.pooler().named_statements())
        .bind(key_id)
        .execute(&mut *conn)
        .await?;
        conn.finish().await?;
        self.sealer.mark_retired(&[key_id.to_owned()]);
        tracing::info!(key_id, "seal key retired for every instance");
        Ok(())
    }

    /// Refreshes every [`refresh_interval`](KeyRegistryConfig::refresh_interval) until the
    /// task is aborted; a failed refresh is logged at WARN and tried again next time.
    pub fn spawn_refresh(&self) -> tokio::task::JoinHandle<()> {
        let registry = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(registry.config.refresh_interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(error) = registry.refresh().await {
                    tracing::warn!(%error, "reading the retired seal keys failed");
                }
            }
        })
    }
}
