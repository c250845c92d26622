//! How the outbox and the webhooks keep tenants' rows apart: in shared tables as data (the
//! default, one `Db` for everything), or under PostgreSQL row-level security
//! ([`Outbox::with_row_level_security`](crate::Outbox::with_row_level_security),
//! [`Webhooks::with_row_level_security`](crate::Webhooks::with_row_level_security)).
//!
//! Under row-level security every tenant-scoped call (publishing, endpoint and subscription
//! changes, reading and replaying deliveries, offboarding) runs on the application `Db` in a
//! transaction whose first statement, sent with `BEGIN`, sets the tenant
//! ([`neo_db::TenantIsolation::begin`]); a call without a tenant (explicit, or the task's
//! [`neo_tenant::current`]) fails with [`EventError::Tenant`] before any query. Work that
//! spans tenants by design — the dispatcher, fan-out, the delivery worker, retention
//! (`archive`, `purge`), re-sealing — runs on the system `Db`, whose role is `BYPASSRLS`.

use crate::EventError;
use neo_core::TenantId;
use neo_db::{Db, Ident, RlsSetting, StatementConnection, TableName, TenantIsolation, UnitOfWork};

/// The isolation of one outbox or webhooks value.
#[derive(Debug, Clone)]
pub(crate) enum Tenancy {
    /// Shared tables, tenants as data, one `Db` (the default).
    Shared,
    /// Shared tables under row-level security on `setting`; cross-tenant work on `system`.
    Rls {
        system: Db,
        isolation: TenantIsolation,
        setting: RlsSetting,
    },
}

impl Tenancy {
    /// Row-level security on `setting`, cross-tenant work on `system`.
    pub(crate) fn rls(system: &Db, setting: RlsSetting) -> Self {
        Tenancy::Rls {
            system: system.clone(),
            isolation: TenantIsolation::RowLevelSecurity(setting.clone()),
            setting,
        }
    }

    /// The setting, under row-level security.
    pub(crate) fn setting(&self) -> Option<&RlsSetting> {
        match self {
            Tenancy::Shared => None,
            Tenancy::Rls { setting, .. } => Some(setting),
        }
    }

    /// The `Db` for work across tenants: the system one under row-level security, else `app`.
    pub(crate) fn system<'a>(&'a self, app: &'a Db) -> &'a Db {
        match self {
            Tenancy::Shared => app,
            Tenancy::Rls { system, .. } => system,
        }
    }

    /// The tenant a tenant-scoped call acts for: `explicit`, else the task's
    /// ([`neo_tenant::current`]). Shared tables take `explicit` as it is (a tenant is data
    /// there, and `None` is a value of it).
    ///
    /// # Errors
    /// [`EventError::Tenant`] under row-level security without either (fail closed).
    #[cfg(feature = "webhooks")]
    pub(crate) fn acting(
        &self,
        explicit: Option<TenantId>,
    ) -> Result<Option<TenantId>, EventError> {
        match self {
            Tenancy::Shared => Ok(explicit),
            Tenancy::Rls { .. } => match explicit {
                Some(tenant) => Ok(Some(tenant)),
                None => Ok(Some(neo_tenant::require()?)),
            },
        }
    }

    /// A connection on `app` for statements of `tenant` ([`acting`](Self::acting)'s answer):
    /// under row-level security a transaction with the tenant's setting sent with `BEGIN`.
    pub(crate) async fn connection(
        &self,
        app: &Db,
        tenant: Option<TenantId>,
    ) -> Result<StatementConnection, EventError> {
        match (self, tenant) {
            (Tenancy::Shared, _) => Ok(app.statement_connection().await?),
            (Tenancy::Rls { isolation, .. }, Some(tenant)) => Ok(isolation
                .statement_connection_on(app, app.pool(), tenant)
                .await?),
            (Tenancy::Rls { .. }, None) => Err(neo_tenant::Error::NoTenantInScope.into()),
        }
    }

    /// A transaction on `app` acting for `tenant`.
    pub(crate) async fn begin(
        &self,
        app: &Db,
        tenant: Option<TenantId>,
    ) -> Result<UnitOfWork, EventError> {
        match (self, tenant) {
            (Tenancy::Shared, _) => Ok(app.begin().await?),
            (Tenancy::Rls { isolation, .. }, Some(tenant)) => {
                Ok(isolation.begin(app, tenant).await?)
            }
            (Tenancy::Rls { .. }, None) => Err(neo_tenant::Error::NoTenantInScope.into()),
        }
    }
}

/// `ENABLE` + `FORCE ROW LEVEL SECURITY` and the `tenant_isolation` policy on the `tenant_id`
/// of each of `tables` (see [`RlsSetting::policy_sql`]).
pub(crate) fn policies(setting: &RlsSetting, tables: &[&str]) -> Result<String, EventError> {
    let column = Ident::new("tenant_id")?;
    let mut sql = String::new();
    for table in tables {
        sql.push_str(&setting.policy_sql(&TableName::new(table)?, &column));
    }
    Ok(sql)
}

/// The `tenant` span field of work on `tenants` (one per event or delivery): the tenant when
/// they all share one, `several` when they do not, nothing when none names one.
pub(crate) fn record_tenant(
    span: &tracing::Span,
    tenants: impl IntoIterator<Item = Option<TenantId>>,
) {
    let mut seen: Option<TenantId> = None;
    for tenant in tenants.into_iter().flatten() {
        match seen {
            None => seen = Some(tenant),
            Some(first) if first != tenant => {
                span.record("tenant", "several");
                return;
            }
            Some(_) => {}
        }
    }
    if let Some(tenant) = seen {
        span.record("tenant", tracing::field::display(tenant));
    }
}
