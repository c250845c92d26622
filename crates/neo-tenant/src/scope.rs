//! The task-local tenant: [`scope`], [`current`], [`require`].

use std::future::Future;

use neo_core::TenantId;
use tokio::task::futures::TaskLocalFuture;

use crate::Error;

tokio::task_local! {
    static TENANT: TenantId;
}

/// A future running inside a tenant's scope (what [`scope`] returns).
pub type TenantScope<F> = TaskLocalFuture<TenantId, F>;

/// Runs `future` with `tenant` as the current tenant.
///
/// Inside, [`current`] and [`require`] return `tenant`; a nested `scope` replaces it for the
/// nested future only. The tenant is task-local: a task spawned from inside does **not**
/// inherit it — carry it explicitly with `tokio::spawn(neo_tenant::scope(tenant, work))`.
pub fn scope<F: Future>(tenant: TenantId, future: F) -> TenantScope<F> {
    TENANT.scope(tenant, future)
}

/// Runs the synchronous `f` with `tenant` as the current tenant.
pub fn sync_scope<R>(tenant: TenantId, f: impl FnOnce() -> R) -> R {
    TENANT.sync_scope(tenant, f)
}

/// The tenant of the enclosing [`scope`], if any.
pub fn current() -> Option<TenantId> {
    TENANT.try_with(|tenant| *tenant).ok()
}

/// The tenant of the enclosing [`scope`].
///
/// # Errors
/// [`Error::NoTenantInScope`] outside any scope: tenant-scoped code fails closed instead of
/// acting for every tenant.
pub fn require() -> Result<TenantId, Error> {
    current().ok_or(Error::NoTenantInScope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outside_a_scope_there_is_no_tenant() {
        assert_eq!(current(), None);
        assert_eq!(require(), Err(Error::NoTenantInScope));
    }

    #[tokio::test]
    async fn a_scope_carries_its_tenant_across_awaits_and_nests() {
        let a = TenantId::new();
        let b = TenantId::new();
        scope(a, async move {
            assert_eq!(current(), Some(a));
            tokio::task::yield_now().await;
            assert_eq!(require(), Ok(a));
            scope(b, async move { assert_eq!(require(), Ok(b)) }).await;
            assert_eq!(require(), Ok(a));
        })
        .await;
        assert_eq!(current(), None);
    }

    #[tokio::test]
    async fn a_spawned_task_does_not_inherit_the_tenant() {
        let a = TenantId::new();
        let seen = scope(a, async { tokio::spawn(async { current() }).await })
            .await
            .expect("task panicked");
        assert_eq!(seen, None);
    }

    #[test]
    fn sync_scope_sets_the_tenant_for_the_closure() {
        let a = TenantId::new();
        assert_eq!(sync_scope(a, require), Ok(a));
        assert_eq!(current(), None);
    }
}
