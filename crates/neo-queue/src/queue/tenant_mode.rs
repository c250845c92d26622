//! How a queue keeps tenants' jobs apart: one fixed schema whose `tenant` column is only the
//! fairness key ([`Queue::new`]), a `jobs` table per tenant schema, or one shared table under
//! row-level security ([`Queue::tenant_isolated`], [`neo_db::TenantIsolation`]), and what each
//! call needs for it: the statements of the right table, the tenant it acts for and a
//! connection with that tenant in force.
//!
//! In row-level-security mode the `tenant` text column stays the fairness key, and
//! `tenant_id uuid` is generated from it (`tenant::uuid`, stored): the policy compares
//! `tenant_id` with the transaction-local setting, every job has a tenant (`tenant` is
//! `NOT NULL`), and so the fair claim's turns are turns across tenant ids, read from the
//! same `jobs_claim_by_tenant` index as in the other modes.

use super::Queue;
use super::statements::Statements;
use crate::job::JobTenant;
use crate::{Error, NewJob, QueueConfig, Result};
use neo_core::TenantId;
use neo_db::{
    Ident, MigrationSet, RlsSetting, Schema, StatementConnection, StoreScope, StoreTenancy,
    TableName, TenancyMode,
};
use std::sync::Arc;

/// What a job's tenant text must be in a tenant-isolated queue (the end of its error).
pub(super) const ISOLATED: &str = "in a tenant-isolated queue";

/// The queue's isolation and the statements of each `jobs` table ([`neo_db::StoreTenancy`]).
pub(super) type Mode = StoreTenancy<Statements, Error>;

/// What one call acts on: the statements of its table and its tenant (`None` in a queue with
/// a fixed schema, and for the cross-tenant work of a row-level-security queue).
pub(super) type Scoped = StoreScope<Statements>;

/// Builds the statements of the `jobs` table in a schema; `per_tenant_keys` under row-level
/// security (unique keys are unique per tenant there).
pub(super) fn statements(
    config: &Arc<QueueConfig>,
    per_tenant_keys: bool,
) -> impl Fn(&Schema) -> Result<Statements> + Send + Sync + 'static {
    let config = Arc::clone(config);
    move |schema| {
        let jobs = TableName::new("jobs")?.in_schema(schema);
        Ok(Statements::new(&jobs, per_tenant_keys, &config))
    }
}

impl Queue {
    /// Whether the queue keeps tenants apart (schema per tenant or row-level security).
    pub fn is_tenant_isolated(&self) -> bool {
        self.mode.is_isolated()
    }

    /// The statements and tenant of a tenant-scoped call, acting for the bound tenant, else
    /// the task's (`None` in a queue with a fixed schema).
    ///
    /// # Errors
    /// [`Error::Tenant`] in a tenant-isolated queue without either (fail closed).
    pub(super) fn tenant_scope(&self) -> Result<Scoped> {
        self.mode.scope(self.tenant)
    }

    /// The statements of `tenant`'s table (the shared one outside schema-per-tenant mode).
    pub(super) fn scope_of(&self, tenant: Option<TenantId>) -> Result<Scoped> {
        self.mode.scope_of(tenant)
    }

    /// The statements of work that spans tenants (claims, receipts, rescue): the shared
    /// table's, with no tenant; in schema-per-tenant mode the acting tenant's table (a
    /// worker serves one tenant's schema), failing closed without one.
    pub(super) fn system_scope(&self) -> Result<Scoped> {
        match self.mode.mode() {
            TenancyMode::SchemaPerTenant => self.tenant_scope(),
            _ => self.scope_of(None),
        }
    }

    /// A connection for a tenant-scoped call's statements on the application `Db`: under
    /// row-level security a transaction whose `BEGIN` sets the tenant in the same round
    /// trip; otherwise the plain statement connection.
    pub(super) async fn tenant_connection(&self, scope: &Scoped) -> Result<StatementConnection> {
        self.mode
            .connection_on(&self.db, self.db.pool(), scope)
            .await
    }

    /// A connection on the system `Db` for work that spans tenants.
    pub(super) async fn system_connection(&self) -> Result<StatementConnection> {
        Ok(self.system.statement_connection().await?)
    }

    /// The row-level-security setting, in that mode.
    pub(super) fn rls_setting(&self) -> Option<&RlsSetting> {
        self.mode.rls_setting()
    }

    /// Gives every job of a tenant-isolated queue its tenant and returns the one tenant the
    /// enqueue acts for: a job without a tenant gets the acting one (bound or the task's); a
    /// job with one must name a [`TenantId`], the acting tenant when there is one, and every
    /// job of the call the same. `None` in a queue with a fixed schema (jobs as given).
    ///
    /// # Errors
    /// [`Error::Tenant`] when no job names a tenant and none is in scope; [`Error::Invalid`]
    /// for a tenant that is not a tenant id, or jobs of several tenants in one call.
    pub(super) fn stamp_tenant(&self, jobs: &mut [NewJob]) -> Result<Option<TenantId>> {
        if !self.mode.is_isolated() {
            return Ok(None);
        }
        let mut acting = match self.tenant {
            Some(tenant) => Some(tenant),
            None => neo_tenant::current(),
        };
        for job in jobs.iter() {
            let Some(named) = &job.tenant else {
                continue;
            };
            let named = named.id(ISOLATED)?;
            match acting {
                None => acting = Some(named),
                Some(tenant) if tenant == named => {}
                Some(tenant) => {
                    return Err(Error::invalid(
                        "job tenant",
                        format!(
                            "a job of tenant {named} enqueued while acting for tenant {tenant}"
                        ),
                    ));
                }
            }
        }
        let tenant = acting.ok_or(neo_tenant::Error::NoTenantInScope)?;
        for job in jobs.iter_mut() {
            job.tenant = Some(JobTenant::Id(tenant));
        }
        Ok(Some(tenant))
    }

    /// What `migrate` runs, and where: the fixed schema's set; the acting tenant's schema
    /// (schema per tenant, so it needs a tenant); the shared schema's set with the
    /// row-level-security migration.
    pub(super) fn migrations_here(&self) -> Result<(MigrationSet, Schema)> {
        let set = match self.mode.rls_setting() {
            Some(setting) => Self::rls_migrations(setting)?,
            None => Self::migrations()?,
        };
        Ok((set, self.mode.migration_schema(self.tenant)?))
    }

    /// The schema of the `jobs` table `tenant`'s jobs are in.
    pub(super) fn schema_of(&self, tenant: Option<TenantId>) -> Result<Schema> {
        self.mode.schema_of(tenant)
    }
}

/// Migration 4 of the row-level-security set: every job has a tenant, `tenant_id` is
/// generated from it, unique keys are unique per tenant (a tenant cannot learn that another
/// holds a key), indexes for the tenant-scoped reads, and the policy, enabled and forced.
pub(super) fn rls_migration(setting: &RlsSetting) -> Result<String> {
    let table = TableName::new("jobs")?;
    let column = Ident::new("tenant_id")?;
    let mut sql = String::from(
        "ALTER TABLE jobs ALTER COLUMN tenant SET NOT NULL;\n\
         ALTER TABLE jobs ADD COLUMN tenant_id uuid GENERATED ALWAYS AS (tenant::uuid) STORED;\n\
         DROP INDEX jobs_unique_key;\n\
         CREATE UNIQUE INDEX jobs_unique_key ON jobs (tenant_id, unique_key) \
           WHERE unique_key IS NOT NULL AND state IN ('available', 'running');\n\
         CREATE INDEX jobs_tenant_state ON jobs (tenant_id, state);\n\
         CREATE INDEX jobs_dead_by_tenant ON jobs (tenant_id, dead_at, id) WHERE state = 'dead';\n",
    );
    sql.push_str(&setting.policy_sql(&table, &column));
    Ok(sql)
}
