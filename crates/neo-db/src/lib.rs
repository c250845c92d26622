//! PostgreSQL access for neo-commons, on sqlx.
//!
//! - [`Db`]: the pool, built from [`DbConfig`] (`NEO_DB_*`), with health check, statistics
//!   and graceful [`close`](Db::close); [`UnitOfWork`] for several calls in one transaction;
//!   TLS with rustls ([`SslMode`], `sslrootcert`), refusals explained by [`TlsProblem`].
//! - [`quote_identifier`]: the one function through which schema, table, column and sort
//!   names reach SQL; [`Schema`] for tenant schemas (qualified names or `SET LOCAL search_path`).
//! - [`BatchRepository`]: `save_batch` (UNNEST, upsert, RETURNING), `load_batch` (`= ANY`,
//!   aligned with the input), `update_batch` (optimistic versions), `delete_batch`,
//!   `exists_batch`, `validate_batch`, chunking; keyset and offset pages.
//! - [`CopyWriter`]: buffered binary/text COPY with auto-flush and upsert through staging.
//! - [`MigrationSet`]: per-owner migrations, per tenant schema too.
//! - [`planned_per_call`]: a statement planned with each call's parameters instead of
//!   prepared once (for batch statements over tables that grow).
//! - [`seal`] (feature `seal`): envelope encryption of sensitive values, bound to their
//!   table, column and row, with keys from a [`seal::KeyProvider`].
//! - [`diagnostics`]: `pg_stat_statements` and lock waits.
//! - Errors classified by SQLSTATE onto [`neo_core::ErrorKind`] ([`classify`]).
//!
//! Every method that touches the database takes any [`sqlx::Acquire`], so the same call
//! runs on the pool (`&db`) or inside a transaction (`&mut *uow`).
//!
//! # Example
//! ```no_run
//! # async fn demo() -> neo_db::Result<()> {
//! use neo_db::{Db, DbConfig};
//! let db = Db::connect(&DbConfig::with_url("postgres://app@localhost/app")).await?;
//! let mut uow = db.begin().await?;
//! sqlx::query("INSERT INTO audit (what) VALUES ($1)").bind("hello").execute(&mut **uow).await?;
//! uow.commit().await?;
//! db.close().await;
//! # Ok(()) }
//! ```

mod batch;
mod config;
mod copy;
pub mod diagnostics;
mod error;
mod failover;
mod ident;
mod migrate;
mod page;
mod planned;
mod pool;
mod replica;
#[cfg(feature = "seal")]
pub mod seal;
mod telemetry;
mod tls;

pub use batch::{BatchRepository, Column, ColumnBinder, Key, OnConflict, Record};
pub use config::{CopyConfig, CopyFormat, DbConfig};
pub use copy::{CopyReport, CopyRow, CopyValue, CopyWriter, RowWriter};
pub use error::{Error, ItemError, Result, TlsProblem, classify, classify_sqlstate};
pub use failover::FailoverConfig;
pub use ident::{Ident, MAX_IDENTIFIER_LEN, Schema, TableName, quote_identifier};
pub use migrate::{MigrationReport, MigrationSet};
pub use page::{KeysetPosition, Sort, SortOrder};
pub use planned::planned_per_call;
pub use pool::{Db, DbConnection, Health, UnitOfWork};
pub use replica::{Consistency, Lsn, ReadSession, ReplicaConfig, ReplicaStatus};
pub use telemetry::{ACQUIRE_WAIT_BUCKETS, PoolStats};
pub use tls::SslMode;

/// The sqlx version neo-db is built on, for `FromRow` derives and raw queries.
pub use sqlx;
