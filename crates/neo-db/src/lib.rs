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
//! - `#[derive(Record)]` (feature `derive`): the [`Record`] (and, with a table, [`Table`])
//!   impl from a struct's fields and `#[record(...)]` attributes; `#[derive(CopyRow)]` for
//!   [`CopyWriter`] rows. See [Deriving a record](#deriving-a-record).
//! - [`CopyWriter`]: buffered binary/text COPY with auto-flush and upsert through staging.
//! - [`MigrationSet`]: per-owner migrations, per tenant schema too.
//! - [`tenancy`]: one store value for every tenant, isolated by a schema per tenant
//!   ([`TenantSchemaResolver`]) or by row-level security on a transaction-local setting
//!   ([`TenantIsolation`]); [`StoreTenancy`] is a store's tenancy in one value (the mode, each
//!   call's tenant and statements, a connection with the tenant in force).
//! - [`MigrationSet`]: per-owner migrations, per tenant schema too; [`TenantMigrator`]
//!   provisions tenants and migrates every tenant's schema in parallel, resumably.
//! - [`planned_per_call`]: a statement planned with each call's parameters instead of
//!   prepared once (for batch statements over tables that grow).
//! - [`Pooler`]: behind PgBouncer in transaction mode (`pooler = "transaction"`), no session
//!   state: unnamed statements in transactions, `SET LOCAL`, transaction-scoped advisory
//!   locks, LISTEN on a direct `listen_url` or polling.
//! - [`seal`] (feature `seal`): envelope encryption of sensitive values, bound to their
//!   table, column and row, with keys from a [`seal::KeyProvider`].
//! - [`diagnostics`]: `pg_stat_statements` and lock waits.
//! - Deadlocks and blocking chains: [`Db::transaction_with_retry`] runs a transaction again
//!   after a serialization failure or deadlock (`40001`, `40P01`); the opt-in
//!   [`LockResolver`] cancels the head of a blocking chain waited on too long.
//! - Read replicas ([`ReplicaConfig`]): [`Db::read_pool`] routes lag-tolerant reads to a
//!   replica within `max_lag`; [`ReadSession`] gives a caller read-your-writes (the primary
//!   until a replica has replayed past its last write, [`Db::wrote`]); the replay positions
//!   are cached and refreshed in the background, so routing costs no round trip.
//! - Failover ([`FailoverConfig`]): a URL with several hosts and
//!   `target_session_attrs=read-write` connects to the host that accepts writes and follows a
//!   promoted replica.
//! - Errors classified by SQLSTATE onto [`neo_core::ErrorKind`] ([`classify`]).
//!
//! # What replication can lose
//! With asynchronous streaming replication (PostgreSQL's default), a commit is acknowledged as
//! soon as the primary has flushed it. If the primary dies, the writes acknowledged in the
//! moments before that the replica had not received are lost when the replica is promoted, and
//! a caller who saw them acknowledged will not find them. Name the replica in the primary's
//! `synchronous_standby_names` (with `synchronous_commit = on`, the default) and a commit is
//! acknowledged only once the standby has flushed it: a promotion then loses no acknowledged
//! write, at the cost of a round trip to the standby per commit and writes that wait while no
//! synchronous standby is connected. Either way a write whose acknowledgement was cut off by
//! the failure may or may not have happened: retry with client-chosen keys
//! (`ON CONFLICT DO NOTHING`) so a retry is harmless. Reads from replicas are stale by up to
//! [`ReplicaConfig::max_lag`] for callers outside the writer's [`ReadSession`].
//!
//! Every method that touches the database takes any [`sqlx::Acquire`], so the same call
//! runs on the pool (`&db`) or inside a transaction (`&mut *uow`).
//!
//! # Deriving a record
//! With feature `derive`, `#[derive(neo_db::Record)]` writes the [`Record`](trait@Record) impl
//! (and `sqlx::FromRow`, and [`Table`] when the struct names its table) from the struct's
//! fields; `#[derive(neo_db::CopyRow)]` the [`CopyRow`](trait@CopyRow) impl. The attributes
//! are documented in the `neo-derive` crate.
//! ```
//! # #[cfg(feature = "derive")] {
//! use neo_db::{Record, Table};
//!
//! #[derive(Debug, Clone, neo_db::Record, neo_db::CopyRow)]
//! #[record(table = "orders", schema = tenant)]
//! struct Order {
//!     id: uuid::Uuid,
//!     #[record(rename = "total")]
//!     total_cents: i64,
//!     #[record(version)]
//!     version: i64,
//! }
//!
//! let columns: Vec<&str> = Order::COLUMNS.iter().map(|c| c.name()).collect();
//! assert_eq!(columns, ["id", "total", "version"]);
//! assert_eq!((Order::TABLE, Order::VERSION_COLUMN), ("orders", Some("version")));
//! # }
//! ```
//! `Order::tenant_batch_repository(&db, &isolation, tenant)?` is then the repository of the
//! tenant's `orders`, and `Order::copy_writer(&db, Some(&schema))?` its COPY writer.
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
//!
//! # Features
//! | feature | what it adds |
//! |---|---|
//! | `env` | `DbConfig::from_env()` (reads `NEO_DB_*`) |
//! | `seal` | envelope encryption of sensitive column values (`seal::Sealer` over a `KeyProvider`) |

mod batch;
mod config;
mod copy;
mod custom_types;
pub mod diagnostics;
mod error;
mod failover;
mod ident;
mod lock_resolver;
pub mod metric_names;
mod migrate;
mod page;
mod planned;
mod pool;
mod pooler;
mod replica;
mod retry;
#[cfg(feature = "seal")]
pub mod seal;
mod session;
mod table;
mod telemetry;
pub mod tenancy;
mod tenants;
mod tls;

pub use batch::{BatchRepository, Column, ColumnBinder, Key, OnConflict, Record};
pub use config::{CopyConfig, CopyFormat, DbConfig};
pub use copy::{CopyReport, CopyRow, CopyValue, CopyWriter, RowWriter};
pub use error::{Error, ItemError, Result, TlsProblem, classify, classify_sqlstate};
pub use failover::FailoverConfig;
pub use ident::{Ident, MAX_IDENTIFIER_LEN, Schema, TableName, quote_identifier};
pub use lock_resolver::{LockResolver, LockResolverConfig, ResolvedChain, ResolverAction};
pub use migrate::{MigrationReport, MigrationSet};
pub use page::{KeysetPosition, Sort, SortOrder};
pub use planned::{Replanning, SERVER_MS, planned_per_call};
pub use pool::{Db, DbConnection, Health, UnitOfWork};
pub use pooler::{Pooler, StatementConnection};
pub use replica::{ReplicaConfig, ReplicaStatus};
pub use retry::{Isolation, TransactionRetryConfig};
pub use session::{Consistency, Lsn, ReadSession};
#[doc(hidden)]
pub use table::__private;
pub use table::{RecordColumn, Table, TableSchema};
pub use telemetry::{ACQUIRE_WAIT_BUCKETS, PoolStats};
pub use tenancy::{
    PrefixedSchemas, RlsSetting, StoreScope, StoreTenancy, TenancyConfig, TenancyMode,
    TenantIsolation, TenantSchemaResolver,
};
pub use tenants::{
    SchemaFor, TenantFailure, TenantMigrated, TenantMigrationConfig, TenantMigrator,
    TenantProgress, TenantsReport, schema_per_tenant,
};
pub use tls::SslMode;

/// `#[derive(Record)]`: implements [`Record`](trait@Record) (and `sqlx::FromRow`, and
/// [`Table`] when the struct names its table) from the struct's fields.
#[cfg(feature = "derive")]
pub use neo_derive::Record;

/// `#[derive(CopyRow)]`: implements [`CopyRow`](trait@CopyRow) from the struct's fields.
#[cfg(feature = "derive")]
pub use neo_derive::CopyRow;

/// The sqlx version neo-db is built on, for `FromRow` derives and raw queries.
pub use sqlx;
