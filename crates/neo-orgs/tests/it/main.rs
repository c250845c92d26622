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

#[cfg(feature = "http")]
mod fuzz;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
mod http_members;
mod invitations;
mod isolation;
mod members;
mod offboard;
mod replica;
mod service;
