//! Offboarding ([`neo_tenant::TenantData`]) of every organization table (organizations,
//! domains and domain claims, members, invitations, verifications and their audit, the
//! organizations' audit), in both isolation modes:
//!
//! - a schema per tenant: every row of the tables in the tenant's schema is the tenant's. The
//!   tenant → schema mapping is a parameter ([`neo_db::SchemaFor`], e.g.
//!   [`neo_db::schema_per_tenant`]), the same one the tenant migrator uses, so a host can
//!   plug in its own resolver. The schema itself stays (drop it with neo-db's
//!   `TenantMigrator`, added after this store in the offboarding).
//! - shared tables under row-level security: the tenant's rows (`tenant_id`), read and
//!   deleted in transactions acting for the tenant (its setting in force, so the policies
//!   admit them) and filtered by `tenant_id` as well (so a role exempt from the policies
//!   still touches no other tenant's rows).

use crate::OrgError;
use futures_util::TryStreamExt;
use neo_core::{HasErrorKind, TenantId};
use neo_db::{Db, Schema, SchemaFor, StatementConnection, TableName, TenantIsolation};
use neo_tenant::{DataFuture, ExportSink, TenantData, store_error};
use sqlx::AssertSqlSafe;
use std::fmt;
use std::sync::Arc;

/// The organization tables, parents first (exported in this order, purged in the reverse).
/// Every table of the migration set: a table added there is added here.
const TABLES: [&str; 8] = [
    "organizations",
    "organization_domains",
    "organization_domain_claims",
    "organization_members",
    "organization_invitations",
    "organization_verifications",
    "organization_verification_audit",
    "organization_audit",
];

/// The organization tables of every tenant, as one [`TenantData`].
#[derive(Clone)]
pub struct OrganizationTenantData {
    db: Db,
    place: Place,
}

/// Where a tenant's rows are.
#[derive(Clone)]
enum Place {
    /// All the rows of the tables in the tenant's schema.
    Schemas(SchemaFor),
    /// The tenant's rows of the shared tables in `schema`, under row-level security.
    Shared {
        schema: Schema,
        isolation: TenantIsolation,
    },
}

impl fmt::Debug for OrganizationTenantData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrganizationTenantData")
            .finish_non_exhaustive()
    }
}

impl OrganizationTenantData {
    /// Over `db`, with each tenant's tables in the schema `schema_for` gives it.
    pub fn new(db: &Db, schema_for: SchemaFor) -> Self {
        OrganizationTenantData {
            db: db.clone(),
            place: Place::Schemas(schema_for),
        }
    }

    /// Over `db`, for a store built with the same arguments
    /// ([`PgOrganizationStore::tenant_isolated`](crate::PgOrganizationStore::tenant_isolated),
    /// or `OrgConfig::schema` and `OrgConfig::tenancy`): a schema per tenant (its resolver
    /// names it; `schema` is not used), or the shared tables in `schema` under row-level
    /// security. Run it as a role the tables' policies bind or as their owner; either way
    /// only the tenant's rows are read and deleted.
    ///
    /// # Errors
    /// [`OrgError::Db`] for a bad schema name.
    pub fn tenant_isolated(
        db: &Db,
        schema: &str,
        isolation: TenantIsolation,
    ) -> Result<Self, OrgError> {
        let place = match isolation {
            TenantIsolation::SchemaPerTenant(resolver) => {
                Place::Schemas(Arc::new(move |tenant| resolver.schema(tenant)))
            }
            isolation => Place::Shared {
                schema: Schema::new(schema)?,
                isolation,
            },
        };
        Ok(OrganizationTenantData {
            db: db.clone(),
            place,
        })
    }

    /// The schema of the tenant's tables.
    fn schema(&self, tenant: TenantId) -> Result<Schema, OrgError> {
        Ok(match &self.place {
            Place::Schemas(schema_for) => schema_for(tenant)?,
            Place::Shared { schema, .. } => schema.clone(),
        })
    }

    /// A connection for reading the tenant's rows: under row-level security a transaction
    /// with the tenant in force.
    async fn connection(&self, tenant: TenantId) -> Result<StatementConnection, OrgError> {
        Ok(match &self.place {
            Place::Schemas(_) => self.db.statement_connection().await?,
            Place::Shared { isolation, .. } => {
                isolation
                    .statement_connection_on(&self.db, self.db.pool(), tenant)
                    .await?
            }
        })
    }

    /// The statement `sql` on `table`, for the tenant's rows only: all of them in its own
    /// schema, those with its `tenant_id` in shared tables.
    fn of_tenant(&self, sql: &str, table: &str) -> String {
        match self.place {
            Place::Schemas(_) => format!("{sql} {table} AS x"),
            Place::Shared { .. } => format!("{sql} {table} AS x WHERE x.tenant_id = $1"),
        }
    }

    fn binds_tenant(&self) -> bool {
        matches!(self.place, Place::Shared { .. })
    }

    /// The tenant's tables that exist (none once its schema is dropped).
    async fn tables(&self, tenant: TenantId) -> Result<Vec<(&'static str, String)>, OrgError> {
        let schema = self.schema(tenant)?;
        let mut conn = self.db.statement_connection().await?;
        let mut found = Vec::new();
        for name in TABLES {
            let table = TableName::new(name)?.in_schema(&schema).to_string();
            let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
                .persistent(false)
                .bind(&table)
                .fetch_one(&mut *conn)
                .await
                .map_err(neo_db::Error::from)?;
            if exists.is_some() {
                found.push((name, table));
            }
        }
        conn.finish().await?;
        Ok(found)
    }

    async fn export_rows(
        &self,
        tenant: TenantId,
        sink: &mut dyn ExportSink,
    ) -> Result<u64, Failure> {
        let mut n = 0;
        for (name, table) in self.tables(tenant).await? {
            let mut conn = self.connection(tenant).await?;
            let select = self.of_tenant("SELECT to_jsonb(x) FROM", &table);
            let mut query =
                sqlx::query_scalar::<_, serde_json::Value>(AssertSqlSafe(select)).persistent(false);
            if self.binds_tenant() {
                query = query.bind(tenant.as_uuid());
            }
            let mut rows = query.fetch(&mut *conn);
            while let Some(row) = rows
                .try_next()
                .await
                .map_err(|e| OrgError::from(neo_db::Error::from(e)))?
            {
                sink.row(name, row).map_err(Failure::Sink)?;
                n += 1;
            }
            drop(rows);
            conn.finish().await.map_err(OrgError::from)?;
        }
        Ok(n)
    }

    async fn purge_rows(&self, tenant: TenantId) -> Result<u64, OrgError> {
        let tables = self.tables(tenant).await?;
        let mut tx = match &self.place {
            Place::Schemas(_) => self.db.begin().await?,
            Place::Shared { isolation, .. } => isolation.begin(&self.db, tenant).await?,
        };
        let mut n = 0;
        for (_, table) in tables.iter().rev() {
            let mut delete =
                sqlx::query(AssertSqlSafe(self.of_tenant("DELETE FROM", table))).persistent(false);
            if self.binds_tenant() {
                delete = delete.bind(tenant.as_uuid());
            }
            n += delete
                .execute(&mut **tx)
                .await
                .map_err(neo_db::Error::from)?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }
}

enum Failure {
    Store(OrgError),
    Sink(neo_tenant::Error),
}

impl From<OrgError> for Failure {
    fn from(error: OrgError) -> Self {
        Failure::Store(error)
    }
}

impl TenantData for OrganizationTenantData {
    fn name(&self) -> &str {
        "orgs"
    }

    fn export<'a>(&'a self, tenant: TenantId, sink: &'a mut dyn ExportSink) -> DataFuture<'a, u64> {
        Box::pin(async move {
            self.export_rows(tenant, sink).await.map_err(|e| match e {
                Failure::Store(e) => store_error("orgs", e.kind(), &e),
                Failure::Sink(e) => e,
            })
        })
    }

    fn purge(&self, tenant: TenantId) -> DataFuture<'_, u64> {
        Box::pin(async move {
            self.purge_rows(tenant)
                .await
                .map_err(|e| store_error("orgs", e.kind(), &e))
        })
    }
}

#[cfg(test)]
mod tests {
    /// Every table the migrations create is offboarded.
    #[test]
    fn every_migrated_table_is_offboarded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut created = Vec::new();
        for file in std::fs::read_dir(dir).unwrap() {
            let sql = std::fs::read_to_string(file.unwrap().path()).unwrap();
            for line in sql.lines() {
                if let Some(rest) = line.trim().strip_prefix("CREATE TABLE ") {
                    let name = rest.split_whitespace().next().unwrap();
                    created.push(name.trim_matches('(').to_owned());
                }
            }
        }
        created.sort();
        let mut offboarded: Vec<String> = super::TABLES.iter().map(|t| (*t).to_owned()).collect();
        offboarded.sort();
        assert_eq!(created, offboarded);
    }
}
