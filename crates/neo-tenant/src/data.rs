//! What every store holding tenant data implements so a tenant can be offboarded:
//! [`TenantData`] (export, then purge) and the [`ExportSink`] an export writes into.
//!
//! The trait is defined here, low in the graph, so each store implements it in its own crate
//! (neo-orgs, neo-queue, neo-events, neo-cache, neo-db) and an [`Offboarding`](crate::Offboarding)
//! (feature `offboard`) runs them all without knowing any of them.

use neo_core::{ErrorKind, TenantId};
use std::future::Future;
use std::pin::Pin;

use crate::Error;

/// What a [`TenantData`] method returns: a boxed future, so the trait is usable as `dyn`.
pub type DataFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// Where an export writes the rows of one tenant, one JSON value per row.
pub trait ExportSink: Send {
    /// Writes one row of `table` (the name the store gives it, e.g. `organizations`).
    ///
    /// # Errors
    /// [`Error::Archive`] when the archive cannot be written.
    fn row(&mut self, table: &str, row: serde_json::Value) -> Result<(), Error>;
}

/// A store that keeps data of many tenants and can hand over and then forget one of them.
///
/// `export` must write every row the store keeps for the tenant; `purge` must delete all of
/// them and nothing of any other tenant, and be idempotent: an interrupted offboarding runs
/// it again, and a second run over a purged tenant deletes nothing and succeeds.
pub trait TenantData: Send + Sync {
    /// A short name for reports and the archive (`orgs`, `queue`, `outbox`, ...).
    fn name(&self) -> &str;

    /// Writes every row of `tenant` into `sink`; returns the number of rows written.
    fn export<'a>(&'a self, tenant: TenantId, sink: &'a mut dyn ExportSink) -> DataFuture<'a, u64>;

    /// Deletes every row of `tenant`; returns the number deleted (0 when already purged).
    fn purge(&self, tenant: TenantId) -> DataFuture<'_, u64>;
}

/// A store's failure as a [`TenantData`] reports it: the store's name, the error's kind and
/// its message (the store's own error type stays in the store's crate).
pub fn store_error(store: &str, kind: ErrorKind, error: &dyn std::error::Error) -> Error {
    Error::Store {
        store: store.to_owned(),
        kind,
        message: error.to_string(),
    }
}
