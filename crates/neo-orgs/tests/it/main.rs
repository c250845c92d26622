//! neo-orgs against real PostgreSQL and Redis.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

/// Each test once per PostgreSQL mode that memberships and invitations run in: one schema
/// (direct and through PgBouncer) and row-level security acting for a tenant (the
/// cross-tenant suite covers every isolation mode).
macro_rules! postgres_modes {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test] async fn $name() { super::Setup::postgres().await.run(super::$name).await })*
        }
        mod pgbouncer {
            $(#[tokio::test] async fn $name() { super::Setup::pgbouncer().await.run(super::$name).await })*
        }
        mod rls {
            $(#[tokio::test] async fn $name() {
                super::Setup::isolated(
                    super::Isolation::Rls,
                    neo_testkit::PgRoute::Direct,
                    &[neo_core::TenantId::new()],
                )
                .await
                .run(super::$name)
                .await
            })*
        }
    };
}

/// Each test once per PostgreSQL mode of the contract suite (`contract!` in `service.rs`):
/// one schema, direct and through PgBouncer, a schema per tenant and row-level security,
/// each direct and through PgBouncer. (The in-memory store has no memberships.)
macro_rules! pg_contract_modes {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test] async fn $name() { super::Setup::postgres().await.run(super::$name).await })*
        }
        mod pgbouncer {
            $(#[tokio::test] async fn $name() { super::Setup::pgbouncer().await.run(super::$name).await })*
        }
        pg_contract_modes!(@mode schema_per_tenant, Schemas, Direct, $($name),*);
        pg_contract_modes!(@mode schema_per_tenant_pgbouncer, Schemas, PgBouncer, $($name),*);
        pg_contract_modes!(@mode rls, Rls, Direct, $($name),*);
        pg_contract_modes!(@mode rls_pgbouncer, Rls, PgBouncer, $($name),*);
    };
    (@mode $module:ident, $isolation:ident, $route:ident, $($name:ident),*) => {
        mod $module {
            $(#[tokio::test] async fn $name() {
                super::Setup::isolated(
                    crate::service::Isolation::$isolation,
                    neo_testkit::PgRoute::$route,
                    &[neo_core::TenantId::new()],
                )
                .await
                .run(super::$name)
                .await
            })*
        }
    };
}

mod dns_server;
mod domains;
#[cfg(feature = "http")]
mod fuzz;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
mod http_members;
#[cfg(feature = "http")]
mod http_verification;
mod invitations;
mod isolation;
mod members;
mod offboard;
mod plans;
mod replica;
mod service;
mod verifications;
