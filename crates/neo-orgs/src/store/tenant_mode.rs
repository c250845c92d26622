//! How the PostgreSQL store keeps tenants apart: one fixed schema (no tenant), a schema per
//! tenant, or shared tables under row-level security ([`neo_db::TenantIsolation`]), and what
//! each call needs for it: the statements of the tenant's schema and a connection with the
//! tenant in force, through [`neo_db::StoreTenancy`]; here the store's own parts: its calls'
//! bound tenant and the row-level-security migration.

use super::postgres::{PgOrganizationStore, Sql};
use crate::OrgError;
use neo_core::TenantId;
use neo_db::{
    Ident, MigrationSet, RlsSetting, Schema, StatementConnection, StoreScope, StoreTenancy,
    TableName, UnitOfWork,
};
use sqlx::PgPool;

/// The store's isolation and the statements of each schema ([`neo_db::StoreTenancy`]).
pub(super) type Mode = StoreTenancy<Sql, OrgError>;

/// What one call acts on: the statements of its schema and its tenant (`None` in a store
/// with a fixed schema).
pub(super) type Scoped = StoreScope<Sql>;

impl PgOrganizationStore {
    /// The tenant the next call acts for: the bound one, else the task's; `None` in a store
    /// with a fixed schema.
    ///
    /// # Errors
    /// [`OrgError::Tenant`] in a tenant-isolated store without either (fail closed).
    pub(super) fn acting_tenant(&self) -> Result<Option<TenantId>, OrgError> {
        self.inner.mode.acting_tenant(self.tenant)
    }

    /// The statements and the tenant of one call; fails closed without a tenant.
    pub(super) fn scope(&self) -> Result<Scoped, OrgError> {
        self.inner.mode.scope(self.tenant)
    }

    /// A connection for the call's statements: under row-level security a transaction with
    /// the tenant's setting set first (sent with `BEGIN`, transaction-local, so safe behind
    /// PgBouncer); otherwise the plain statement connection.
    pub(super) async fn connection_on(
        &self,
        pool: &PgPool,
        scope: &Scoped,
    ) -> Result<StatementConnection, OrgError> {
        self.inner
            .mode
            .connection_on(&self.inner.db, pool, scope)
            .await
    }

    /// A transaction on the primary with the call's tenant in force.
    pub(super) async fn begin(&self, scope: &Scoped) -> Result<UnitOfWork, OrgError> {
        self.inner.mode.begin(&self.inner.db, scope).await
    }

    /// What `migrate` runs, and where: the fixed schema's set; the acting tenant's schema
    /// (schema per tenant, so it needs a tenant); the shared schema's set with the
    /// row-level-security migration.
    pub(super) fn migrations_here(&self) -> Result<(MigrationSet, Schema), OrgError> {
        let set = match self.inner.mode.rls_setting() {
            Some(setting) => Self::rls_migrations(setting)?,
            None => Self::migrations()?,
        };
        Ok((set, self.inner.mode.migration_schema(self.tenant)?))
    }
}

/// The tables under row-level security, each with a `tenant_id`.
const TENANT_TABLES: [&str; 4] = [
    "organizations",
    "organization_domains",
    "organization_members",
    "organization_audit",
];

/// Migration 5 of the row-level-security set: a `tenant_id` on every table, filled from
/// `setting` (so the statements stay those of schema mode), slugs and domains unique per
/// tenant (a tenant cannot learn that another holds a slug), the keyset index led by the
/// tenant, and the policies, enabled and forced.
pub(super) fn rls_migration(setting: &RlsSetting) -> Result<String, OrgError> {
    let tenant = setting.current_tenant_sql();
    let column = Ident::new("tenant_id")?;
    let mut sql = String::new();
    for table in TENANT_TABLES {
        let table = TableName::new(table)?;
        sql.push_str(&format!(
            "ALTER TABLE {table} ADD COLUMN {column} uuid NOT NULL DEFAULT {tenant};\n"
        ));
    }
    sql.push_str(
        "DROP INDEX organizations_slug;\n\
         CREATE UNIQUE INDEX organizations_slug ON organizations (tenant_id, slug);\n\
         DROP INDEX organizations_name_id;\n\
         CREATE INDEX organizations_name_id ON organizations (tenant_id, name, id) WHERE deleted_at IS NULL;\n\
         ALTER TABLE organization_domains DROP CONSTRAINT organization_domains_domain_key;\n\
         ALTER TABLE organization_domains ADD CONSTRAINT organization_domains_domain_key UNIQUE (tenant_id, domain);\n\
         CREATE INDEX organization_members_tenant ON organization_members (tenant_id);\n\
         CREATE INDEX organization_audit_tenant ON organization_audit (tenant_id, organization_id, id);\n",
    );
    for table in TENANT_TABLES {
        sql.push_str(&setting.policy_sql(&TableName::new(table)?, &column));
    }
    Ok(sql)
}
