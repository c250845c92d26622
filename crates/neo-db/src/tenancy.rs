//! Tenant isolation: how one store value keeps every tenant's rows apart, in one of two modes
//! under the same contract ([`TenantIsolation`]).
//!
//! - **Schema per tenant** ([`TenantIsolation::SchemaPerTenant`]): each tenant's tables live in
//!   a schema of its own, named by a [`TenantSchemaResolver`] (by default [`PrefixedSchemas`]:
//!   a prefix and the tenant id, validated by [`quote_identifier`](crate::quote_identifier)).
//!   Statements name the tenant's schema ([`TenantIsolation::schema_of`]), or run in a unit of
//!   work whose `search_path` is the tenant's ([`TenantIsolation::begin`]).
//! - **Row-level security** ([`TenantIsolation::RowLevelSecurity`]): shared tables with a
//!   `tenant_id` column, `ENABLE` and `FORCE ROW LEVEL SECURITY`, and a policy that compares
//!   the column with a transaction-local setting ([`RlsSetting`], `neo.tenant_id` by default).
//!   Every tenant-scoped statement runs in a transaction that first sets it with
//!   `select set_config('neo.tenant_id', $1, true)`: undone at commit or rollback, so it is
//!   safe behind PgBouncer in transaction mode and never leaks to the connection's next user.
//!   A connection that did not set it sees no rows and can write none. The application role
//!   must be neither the tables' owner nor `BYPASSRLS` (a superuser bypasses every policy):
//!   migrate as the owner, then [`grant_app_role`] the application role its rows.
//!   Work that spans tenants by design — a queue worker claiming any tenant's jobs, an
//!   outbox dispatcher, a delivery worker, retention — runs on a second `Db` whose role is
//!   `BYPASSRLS` but neither owner nor superuser (granted like the application role), so the
//!   application role's connections stay bound by the policies.
//!
//! A store built on either mode (or on one fixed schema, without tenants) keeps its tenancy in
//! a [`StoreTenancy`]: the acting tenant of each call, failing closed; the statements of the
//! call's schema, built by the store and kept per schema; and a connection or unit of work
//! with the tenant in force.

use crate::ident::{Ident, Schema, TableName};
use crate::pool::{Db, UnitOfWork};
use crate::pooler::StatementConnection;
use crate::{Error, Result};
use neo_core::TenantId;
use sqlx::PgPool;
use std::fmt;
use std::sync::Arc;

mod config;
mod store;
pub use config::{TenancyConfig, TenancyMode};
pub use store::{StoreScope, StoreTenancy};

/// Names the schema that holds a tenant's tables (schema-per-tenant mode).
///
/// Implement it to map tenants onto existing schema names; the name must pass the
/// identifier rules ([`Schema::new`]), so a resolver can never put SQL into a statement.
pub trait TenantSchemaResolver: Send + Sync + fmt::Debug + 'static {
    /// The schema of `tenant`.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the name the resolver builds is not a valid identifier; a
    /// resolver that looks tenants up may answer kind `NotFound` for an unknown one.
    fn schema(&self, tenant: TenantId) -> Result<Schema>;
}

/// The default resolver: `prefix` followed by the tenant id's 32 hex digits
/// (`tenant_0190c1f4...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixedSchemas {
    prefix: String,
}

impl PrefixedSchemas {
    /// The default prefix.
    pub const DEFAULT_PREFIX: &'static str = "tenant_";

    /// Schemas named `prefix` + the tenant id in hex.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `prefix` followed by 32 hex digits is not a valid identifier
    /// (empty, a leading digit, uppercase or punctuation, longer than 31 bytes).
    pub fn new(prefix: &str) -> Result<Self> {
        Schema::new(&format!("{prefix}{}", "0".repeat(32)))?;
        if prefix.is_empty() {
            return Err(Error::invalid(
                "schema prefix",
                "the prefix is empty, so a schema name would start with a digit",
            ));
        }
        Ok(PrefixedSchemas {
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Default for PrefixedSchemas {
    fn default() -> Self {
        PrefixedSchemas {
            prefix: Self::DEFAULT_PREFIX.to_owned(),
        }
    }
}

impl TenantSchemaResolver for PrefixedSchemas {
    fn schema(&self, tenant: TenantId) -> Result<Schema> {
        Schema::new(&format!("{}{}", self.prefix, tenant.as_uuid().simple()))
    }
}

/// The name of the transaction-local setting row-level-security policies compare the
/// `tenant_id` column with (`neo.tenant_id` by default): two identifiers joined by a dot, as
/// PostgreSQL requires for custom settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlsSetting(String);

impl RlsSetting {
    /// The default setting, `neo.tenant_id`.
    pub const DEFAULT: &'static str = "neo.tenant_id";

    /// A setting named `name` (`prefix.name`, each part a lowercase identifier).
    ///
    /// # Errors
    /// [`Error::Invalid`] for anything else.
    pub fn new(name: &str) -> Result<Self> {
        let Some((prefix, rest)) = name.split_once('.') else {
            return Err(Error::invalid(
                "tenant setting",
                format!("{name:?} has no dot: custom settings are named prefix.name"),
            ));
        };
        Ident::new(prefix)?;
        Ident::new(rest)?;
        Ok(RlsSetting(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SQL expression that reads the tenant in a policy or a column default: the
    /// setting as a `uuid`, NULL when it is unset or reset to empty (so a connection that
    /// did not set it matches no row). The name is validated, so it is safe in a literal.
    pub fn current_tenant_sql(&self) -> String {
        format!("NULLIF(current_setting('{}', true), '')::uuid", self.0)
    }

    /// The statements a migration runs to put `table` under row-level security on
    /// `column`: `ENABLE` and `FORCE ROW LEVEL SECURITY` (so the owner is bound too) and a
    /// policy `tenant_isolation` whose `USING` and `WITH CHECK` compare the column with
    /// [`current_tenant_sql`](Self::current_tenant_sql), read once per statement (a scalar
    /// subquery, planned as an init plan) rather than once per row.
    pub fn policy_sql(&self, table: &TableName, column: &Ident) -> String {
        let tenant = format!("(SELECT {})", self.current_tenant_sql());
        format!(
            "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;\n\
             ALTER TABLE {table} FORCE ROW LEVEL SECURITY;\n\
             CREATE POLICY tenant_isolation ON {table} \
             USING ({column} = {tenant}) WITH CHECK ({column} = {tenant});\n"
        )
    }
}

impl Default for RlsSetting {
    fn default() -> Self {
        RlsSetting(Self::DEFAULT.to_owned())
    }
}

/// How tenants' rows are kept apart (see the [module](self) documentation).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TenantIsolation {
    /// A schema per tenant, named by the resolver.
    SchemaPerTenant(Arc<dyn TenantSchemaResolver>),
    /// Shared tables under row-level security on a transaction-local setting.
    RowLevelSecurity(RlsSetting),
}

impl TenantIsolation {
    /// Schema per tenant with [`PrefixedSchemas`] and `prefix`.
    ///
    /// # Errors
    /// As [`PrefixedSchemas::new`].
    pub fn schema_per_tenant(prefix: &str) -> Result<Self> {
        Ok(TenantIsolation::SchemaPerTenant(Arc::new(
            PrefixedSchemas::new(prefix)?,
        )))
    }

    /// Schema per tenant named by `resolver`.
    pub fn schemas(resolver: impl TenantSchemaResolver) -> Self {
        TenantIsolation::SchemaPerTenant(Arc::new(resolver))
    }

    /// Row-level security on the default setting (`neo.tenant_id`).
    pub fn row_level_security() -> Self {
        TenantIsolation::RowLevelSecurity(RlsSetting::default())
    }

    /// Whether this is row-level security.
    pub fn is_row_level_security(&self) -> bool {
        matches!(self, TenantIsolation::RowLevelSecurity(_))
    }

    /// The schema that holds `tenant`'s tables: the resolver's for schema per tenant,
    /// `None` for row-level security (the tables are shared).
    ///
    /// # Errors
    /// The resolver's.
    pub fn schema_of(&self, tenant: TenantId) -> Result<Option<Schema>> {
        match self {
            TenantIsolation::SchemaPerTenant(resolver) => resolver.schema(tenant).map(Some),
            TenantIsolation::RowLevelSecurity(_) => Ok(None),
        }
    }

    /// Puts `tenant` in force in the open transaction `tx`: its schema first on the
    /// `search_path`, or the row-level-security setting. Both are transaction-local.
    ///
    /// # Errors
    /// The resolver's; the database error.
    pub async fn enter(&self, tx: &mut UnitOfWork, tenant: TenantId) -> Result<()> {
        match self {
            TenantIsolation::SchemaPerTenant(resolver) => {
                tx.set_search_path(&resolver.schema(tenant)?).await
            }
            TenantIsolation::RowLevelSecurity(setting) => {
                let named = tx.pooler_named_statements();
                sqlx::query("SELECT set_config($1, $2, true)")
                    .persistent(named)
                    .bind(setting.as_str())
                    .bind(tenant.to_string())
                    .execute(&mut ***tx)
                    .await?;
                Ok(())
            }
        }
    }

    /// A unit of work on the primary acting for `tenant` ([`enter`](Self::enter)ed).
    ///
    /// # Errors
    /// As [`Db::begin`] and [`enter`](Self::enter).
    pub async fn begin(&self, db: &Db, tenant: TenantId) -> Result<UnitOfWork> {
        self.begin_on(db, db.pool(), tenant).await
    }

    /// [`begin`](Self::begin) on `pool` (the primary's or a replica's).
    ///
    /// # Errors
    /// As [`begin`](Self::begin).
    pub async fn begin_on(&self, db: &Db, pool: &PgPool, tenant: TenantId) -> Result<UnitOfWork> {
        match self {
            TenantIsolation::SchemaPerTenant(_) => {
                let mut tx = db.begin_on(pool).await?;
                self.enter(&mut tx, tenant).await?;
                Ok(tx)
            }
            // `BEGIN` (with the `Db`'s own `SET LOCAL`s) and the setting in one round trip. The tenant is
            // written as a literal: a UUID's text is hex digits and hyphens only, and the
            // setting's name passed the identifier rules, so neither can carry SQL.
            TenantIsolation::RowLevelSecurity(setting) => {
                let uuid = tenant.as_uuid().hyphenated().to_string();
                debug_assert!(uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
                db.begin_with_on(
                    pool,
                    Some(format!(
                        "SELECT set_config('{}', '{uuid}', true)",
                        setting.as_str()
                    )),
                )
                .await
            }
        }
    }

    /// A connection for statements of `tenant` that need no transaction of their own:
    /// for schema per tenant the plain [`StatementConnection`] (statements name the schema,
    /// [`schema_of`](Self::schema_of)); for row-level security always a transaction with
    /// the setting set first, since the setting lives only as long as its transaction.
    ///
    /// # Errors
    /// As [`Db::statement_connection_on`] and [`enter`](Self::enter).
    pub async fn statement_connection_on(
        &self,
        db: &Db,
        pool: &PgPool,
        tenant: TenantId,
    ) -> Result<StatementConnection> {
        match self {
            TenantIsolation::SchemaPerTenant(_) => db.statement_connection_on(pool).await,
            TenantIsolation::RowLevelSecurity(_) => Ok(StatementConnection::Transaction(
                self.begin_on(db, pool, tenant).await?,
            )),
        }
    }
}

/// Grants `role` the use of the tables and sequences now in `schema`: `USAGE` on the
/// schema, `SELECT, INSERT, UPDATE, DELETE` on its tables, `USAGE, SELECT` on its sequences.
/// Run it as the owner after migrating, for the application role that is not the owner (so
/// row-level security binds it). The names pass the identifier rules.
///
/// # Errors
/// [`Error::Invalid`] for a bad role name; the database error.
pub async fn grant_app_role(db: &Db, schema: &Schema, role: &str) -> Result<()> {
    let role = Ident::new(role)?;
    let mut tx = db.begin().await?;
    for grant in [
        format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}"),
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(grant))
            .persistent(false)
            .execute(&mut **tx)
            .await?;
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_schemas_are_valid_identifiers_per_tenant() {
        let tenant = TenantId::new();
        let schema = PrefixedSchemas::default().schema(tenant).unwrap();
        assert_eq!(
            schema.as_str(),
            format!("tenant_{}", tenant.as_uuid().simple())
        );
        let other = PrefixedSchemas::default().schema(TenantId::new()).unwrap();
        assert_ne!(schema, other, "one schema per tenant");
        assert!(PrefixedSchemas::new("acme_").is_ok());
        for bad in ["", "Tenant_", "t-", "1t_", &"x".repeat(32)] {
            assert!(
                matches!(PrefixedSchemas::new(bad), Err(Error::Invalid { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn settings_are_two_identifiers_and_policies_use_them() {
        assert_eq!(RlsSetting::default().as_str(), "neo.tenant_id");
        for bad in ["tenant", "neo.", ".x", "neo.tenant'); drop", "Neo.tenant"] {
            assert!(RlsSetting::new(bad).is_err(), "{bad:?} accepted");
        }
        let setting = RlsSetting::new("app.tenant").unwrap();
        let table = TableName::new("orders").unwrap();
        let sql = setting.policy_sql(&table, &Ident::new("tenant_id").unwrap());
        assert!(sql.contains("ENABLE ROW LEVEL SECURITY"));
        assert!(sql.contains("FORCE ROW LEVEL SECURITY"));
        assert!(sql.contains(
            "USING (\"tenant_id\" = (SELECT NULLIF(current_setting('app.tenant', true), '')::uuid))"
        ));
        assert!(sql.contains("WITH CHECK"));
    }

    #[test]
    fn modes_name_schemas_only_per_tenant() {
        let tenant = TenantId::new();
        let schemas = TenantIsolation::schema_per_tenant("t_").unwrap();
        assert!(schemas.schema_of(tenant).unwrap().is_some());
        assert!(!schemas.is_row_level_security());
        let rls = TenantIsolation::row_level_security();
        assert_eq!(rls.schema_of(tenant).unwrap(), None);
        assert!(rls.is_row_level_security());
    }
}
