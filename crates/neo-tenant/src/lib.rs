//! neo-tenant: the tenant a piece of work runs for.
//!
//! A [`TenantId`] is established once — per request by the axum layer, or by a worker when it
//! picks up a tenant's job — and read wherever tenant-scoped code needs it:
//!
//! ```
//! use neo_core::TenantId;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let tenant = TenantId::new();
//! neo_tenant::scope(tenant, async move {
//!     assert_eq!(neo_tenant::require(), Ok(tenant));
//! })
//! .await;
//! // Outside a scope, tenant-scoped code fails closed.
//! assert!(neo_tenant::require().is_err());
//! # }
//! ```
//!
//! The scope is a `tokio::task_local!`: it follows the future across `.await`s and threads,
//! but not into tasks spawned from it (wrap those in [`scope`] again).
//!
//! Feature `axum`: [`http::TenantResolver`] (with [`http::HeaderResolver`],
//! [`http::PathSegmentResolver`], [`http::SubdomainResolver`]) and [`http::TenantLayer`], which
//! resolves the tenant once per request, refuses requests without a valid one, and runs the
//! handler inside [`scope`].
//!
//! Offboarding: every store holding tenant data implements [`TenantData`] (export, purge);
//! feature `offboard` adds [`Offboarding`], which exports a tenant from all of them into one
//! zstd-compressed JSON-lines archive and then purges it everywhere, resuming when interrupted.
//!
//! # Features
//! | feature | what it adds |
//! |---|---|
//! | `axum` | `TenantResolver` (header, path segment, subdomain) and `TenantLayer`, resolving the tenant once per request |
//! | `offboard` | `Offboarding`: export a tenant from every `TenantData` store into a zstd JSON-lines archive, then purge it; resumable |

mod data;
mod error;
#[cfg(feature = "axum")]
pub mod http;
#[cfg(feature = "offboard")]
mod offboard;
mod scope;

pub use data::{DataFuture, ExportSink, TenantData, store_error};
pub use error::Error;
pub use neo_core::TenantId;
#[cfg(feature = "offboard")]
pub use offboard::{
    ArchiveWriter, ArchivedRow, OffboardConfig, OffboardReport, Offboarding, read_archive,
};
pub use scope::{TenantScope, current, require, scope, sync_scope};
