//! How the PostgreSQL store keeps tenants apart: one fixed schema (no tenant), a schema per
//! tenant, or shared tables under row-level security ([`neo_db::TenantIsolation`]), and what
//! each call needs for it: the statements of the tenant's schema and a connection with the
//! tenant in force.

use super::postgres::{PgOrganizationStore, Sql};
use crate::OrgError;
use neo_core::TenantId;
use neo_db::{
    Ident, MigrationSet, RlsSetting, Schema, StatementConnection, TableName, TenantIsolation,
    TenantSchemaResolver, UnitOfWork,
};
use neo_events::Outbox;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most tenant schemas whose statements are kept built; past it the set starts again (each
/// is about 15 kB of SQL text, rebuilt in microseconds).
const KEPT_SCHEMAS: usize = 1_024;

/// The store's isolation.
#[derive(Debug)]
pub(super) enum Mode {
    /// One schema, no tenant (`PgOrganizationStore::new`).
    Fixed { schema: Schema, sql: Arc<Sql> },
    /// A schema per tenant; statements built per schema and kept.
    Schemas {
        resolver: Arc<dyn TenantSchemaResolver>,
        built: Mutex<HashMap<Schema, Arc<Sql>>>,
    },
    /// Shared tables in `schema` under row-level security.
    Rls {
        schema: Schema,
        isolation: TenantIsolation,
        setting: RlsSetting,
        sql: Arc<Sql>,
    },
}

impl Mode {
    pub(super) fn new(
        schema: Schema,
        isolation: TenantIsolation,
        outbox: &Outbox,
    ) -> Result<Self, OrgError> {
        Ok(match isolation {
            TenantIsolation::SchemaPerTenant(resolver) => Mode::Schemas {
                resolver,
                built: Mutex::new(HashMap::new()),
            },
            TenantIsolation::RowLevelSecurity(ref setting) => Mode::Rls {
                sql: Arc::new(Sql::new(&schema, outbox)?),
                setting: setting.clone(),
                schema,
                isolation,
            },
            other => {
                return Err(OrgError::invalid(
                    "tenant isolation",
                    format!("{other:?} is not supported by the organizations store"),
                ));
            }
        })
    }
}

/// What one call acts on: the statements of its schema and its tenant (`None` in a store
/// with a fixed schema).
pub(super) struct Scoped {
    pub(super) sql: Arc<Sql>,
    pub(super) tenant: Option<TenantId>,
}

impl PgOrganizationStore {
    /// The tenant the next call acts for: the bound one, else the task's; `None` in a store
    /// with a fixed schema.
    ///
    /// # Errors
    /// [`OrgError::Tenant`] in a tenant-isolated store without either (fail closed).
    pub(super) fn acting_tenant(&self) -> Result<Option<TenantId>, OrgError> {
        match &self.inner.mode {
            Mode::Fixed { .. } => Ok(None),
            Mode::Schemas { .. } | Mode::Rls { .. } => match self.tenant {
                Some(tenant) => Ok(Some(tenant)),
                None => Ok(Some(neo_tenant::require()?)),
            },
        }
    }

    /// The statements and the tenant of one call; fails closed without a tenant.
    pub(super) fn scope(&self) -> Result<Scoped, OrgError> {
        let tenant = self.acting_tenant()?;
        let sql = match (&self.inner.mode, tenant) {
            (Mode::Fixed { sql, .. } | Mode::Rls { sql, .. }, _) => Arc::clone(sql),
            (Mode::Schemas { resolver, built }, Some(tenant)) => {
                let schema = resolver.schema(tenant)?;
                let mut built = neo_core::sync::lock(built);
                if let Some(sql) = built.get(&schema) {
                    Arc::clone(sql)
                } else {
                    let sql = Arc::new(Sql::new(&schema, &self.inner.outbox)?);
                    if built.len() >= KEPT_SCHEMAS {
                        built.clear();
                    }
                    built.insert(schema, Arc::clone(&sql));
                    sql
                }
            }
            (Mode::Schemas { .. }, None) => return Err(neo_tenant::Error::NoTenantInScope.into()),
        };
        Ok(Scoped { sql, tenant })
    }

    /// A connection for the call's statements: under row-level security a transaction with
    /// the tenant's setting set first (one more round trip, transaction-local, so safe
    /// behind PgBouncer); otherwise the plain statement connection.
    pub(super) async fn connection_on(
        &self,
        pool: &PgPool,
        scope: &Scoped,
    ) -> Result<StatementConnection, OrgError> {
        match (&self.inner.mode, scope.tenant) {
            (Mode::Rls { isolation, .. }, Some(tenant)) => Ok(isolation
                .statement_connection_on(&self.inner.db, pool, tenant)
                .await?),
            (Mode::Rls { .. }, None) => Err(neo_tenant::Error::NoTenantInScope.into()),
            _ => Ok(self.inner.db.statement_connection_on(pool).await?),
        }
    }

    /// A transaction on the primary with the call's tenant in force.
    pub(super) async fn begin(&self, scope: &Scoped) -> Result<UnitOfWork, OrgError> {
        match (&self.inner.mode, scope.tenant) {
            (Mode::Rls { isolation, .. }, Some(tenant)) => {
                Ok(isolation.begin(&self.inner.db, tenant).await?)
            }
            (Mode::Rls { .. }, None) => Err(neo_tenant::Error::NoTenantInScope.into()),
            _ => Ok(self.inner.db.begin().await?),
        }
    }

    /// What `migrate` runs, and where: the fixed schema's set; the acting tenant's schema
    /// (schema per tenant, so it needs a tenant); the shared schema's set with the
    /// row-level-security migration.
    pub(super) fn migrations_here(&self) -> Result<(MigrationSet, Schema), OrgError> {
        match &self.inner.mode {
            Mode::Fixed { schema, .. } => Ok((Self::migrations()?, schema.clone())),
            Mode::Schemas { resolver, .. } => {
                let tenant = match self.tenant {
                    Some(tenant) => tenant,
                    None => neo_tenant::require()?,
                };
                Ok((Self::migrations()?, resolver.schema(tenant)?))
            }
            Mode::Rls {
                schema, setting, ..
            } => Ok((Self::rls_migrations(setting)?, schema.clone())),
        }
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
