//! Offboarding ([`neo_tenant::TenantData`]) in schema-per-tenant mode: every row of the
//! organization tables in the tenant's schema is the tenant's.
//!
//! The tenant → schema mapping is a parameter ([`neo_db::SchemaFor`], e.g.
//! [`neo_db::schema_per_tenant`]), the same one the tenant migrator uses, so a host can plug in
//! its own resolver. The schema itself stays (drop it with neo-db's `TenantMigrator`, added
//! after this store in the offboarding).

use crate::OrgError;
use futures_util::TryStreamExt;
use neo_core::{HasErrorKind, TenantId};
use neo_db::{Db, Schema, SchemaFor, TableName};
use neo_tenant::{DataFuture, ExportSink, TenantData, store_error};
use sqlx::AssertSqlSafe;
use std::fmt;

/// The organization tables, parents first (exported in this order, purged in the reverse).
const TABLES: [&str; 4] = [
    "organizations",
    "organization_domains",
    "organization_members",
    "organization_audit",
];

/// The organization tables of every tenant's schema, as one [`TenantData`].
#[derive(Clone)]
pub struct OrganizationTenantData {
    db: Db,
    schema_for: SchemaFor,
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
            schema_for,
        }
    }

    /// The tenant's tables that exist (none once its schema is dropped).
    async fn tables(&self, tenant: TenantId) -> Result<Vec<(&'static str, String)>, OrgError> {
        let schema: Schema = (self.schema_for)(tenant)?;
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
            let mut conn = self
                .db
                .statement_connection()
                .await
                .map_err(OrgError::from)?;
            let select = format!("SELECT to_jsonb(x) FROM {table} AS x");
            let mut rows = sqlx::query_scalar::<_, serde_json::Value>(AssertSqlSafe(select))
                .persistent(false)
                .fetch(&mut *conn);
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
        let mut tx = self.db.begin().await?;
        let mut n = 0;
        for (_, table) in tables.iter().rev() {
            n += sqlx::query(AssertSqlSafe(format!("DELETE FROM {table}")))
                .persistent(false)
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
