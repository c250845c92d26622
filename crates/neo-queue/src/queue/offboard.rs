//! Offboarding ([`neo_tenant::TenantData`]): a tenant's jobs (every state: available,
//! running, dead) are those whose `tenant` is its id as [`NewJob::tenant_id`](crate::NewJob::tenant_id)
//! writes it, and the outputs their handlers recorded (`job_outputs`, kept after the job);
//! the export hands both over page by page (tables `jobs`, then `job_outputs`), the purge
//! deletes them. The rate limit's counts ([`super::rate`]) are not the tenant's data (a
//! number of starts per slot) and expire within one period. In a
//! tenant-isolated queue both act for that tenant: on its schema's table, or on the shared
//! table with its row-level-security setting in force.

use super::Queue;
use crate::Error;
use neo_core::{HasErrorKind, TenantId};
use neo_db::TableName;
use neo_tenant::{DataFuture, ExportSink, TenantData, store_error};
use sqlx::AssertSqlSafe;

/// Jobs exported per statement.
const PAGE: i64 = 1000;

impl Queue {
    fn jobs_table(&self, tenant: TenantId) -> Result<TableName, Error> {
        Ok(TableName::new("jobs")?.in_schema(&self.schema_of(Some(tenant))?))
    }

    /// The tenant's jobs (table `jobs`), then the outputs its handlers recorded (table
    /// `job_outputs`, which outlive their jobs).
    async fn export_all(
        &self,
        tenant: TenantId,
        sink: &mut dyn ExportSink,
    ) -> Result<u64, ExportError> {
        let t = self.jobs_table(tenant)?;
        let o = super::pause::sibling(&t, "job_outputs");
        let mut rows = 0;
        for (name, table) in [("jobs", t), ("job_outputs", o)] {
            rows += self.export_table(tenant, name, &table, sink).await?;
        }
        Ok(rows)
    }

    async fn export_table(
        &self,
        tenant: TenantId,
        name: &str,
        t: &TableName,
        sink: &mut dyn ExportSink,
    ) -> Result<u64, ExportError> {
        let scope = self.scope_of(Some(tenant))?;
        let select = format!(
            "SELECT j.id, to_jsonb(j) FROM {t} AS j WHERE j.tenant = $1 AND j.id > $2 ORDER BY j.id LIMIT $3"
        );
        let tenant_text = tenant.to_string();
        let mut after = uuid::Uuid::nil();
        let mut rows = 0;
        loop {
            let mut conn = self.tenant_connection(&scope).await?;
            let page: Result<Vec<(uuid::Uuid, serde_json::Value)>, sqlx::Error> =
                sqlx::query_as(AssertSqlSafe(select.as_str()))
                    .persistent(false)
                    .bind(&tenant_text)
                    .bind(after)
                    .bind(PAGE)
                    .fetch_all(&mut *conn)
                    .await;
            let page = match page {
                Err(e) if missing_table(&e) => return Ok(rows),
                page => page.map_err(|e| Error::from(neo_db::Error::from(e)))?,
            };
            conn.finish().await.map_err(Error::from)?;
            let full = page.len() as i64 == PAGE;
            for (id, row) in page {
                sink.row(name, row).map_err(ExportError::Sink)?;
                after = id;
                rows += 1;
            }
            if !full {
                return Ok(rows);
            }
        }
    }

    async fn purge_jobs(&self, tenant: TenantId) -> Result<u64, Error> {
        let t = self.jobs_table(tenant)?;
        let scope = self.scope_of(Some(tenant))?;
        let mut conn = self.tenant_connection(&scope).await?;
        // The outputs its handlers recorded go with the jobs.
        let outputs = sqlx::query(scope.sql.progress.purge.clone())
            .persistent(false)
            .bind(tenant.to_string())
            .execute(&mut *conn)
            .await;
        if let Err(e) = outputs
            && !missing_table(&e)
        {
            return Err(neo_db::Error::from(e).into());
        }
        let deleted = sqlx::query(AssertSqlSafe(format!("DELETE FROM {t} WHERE tenant = $1")))
            .persistent(false)
            .bind(tenant.to_string())
            .execute(&mut *conn)
            .await;
        let deleted = match deleted {
            Err(e) if missing_table(&e) => return Ok(0),
            done => done.map_err(neo_db::Error::from)?.rows_affected(),
        };
        conn.finish().await?;
        Ok(deleted)
    }
}

/// A tenant whose schema's table was never created has no jobs (schema per tenant).
fn missing_table(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.code().as_deref() == Some("42P01"))
}

enum ExportError {
    Queue(Error),
    Sink(neo_tenant::Error),
}

impl From<Error> for ExportError {
    fn from(error: Error) -> Self {
        ExportError::Queue(error)
    }
}

impl From<ExportError> for neo_tenant::Error {
    fn from(error: ExportError) -> Self {
        match error {
            ExportError::Queue(e) => store_error("queue", e.kind(), &e),
            ExportError::Sink(e) => e,
        }
    }
}

impl TenantData for Queue {
    fn name(&self) -> &str {
        "queue"
    }

    fn export<'a>(&'a self, tenant: TenantId, sink: &'a mut dyn ExportSink) -> DataFuture<'a, u64> {
        Box::pin(async move { Ok(self.export_all(tenant, sink).await?) })
    }

    fn purge(&self, tenant: TenantId) -> DataFuture<'_, u64> {
        Box::pin(async move {
            self.purge_jobs(tenant)
                .await
                .map_err(|e| store_error("queue", e.kind(), &e))
        })
    }
}
