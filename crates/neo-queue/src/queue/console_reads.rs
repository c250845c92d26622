//! Reads and actions for an operations console: the dead letters one keyset page at a time
//! and discarding dead letters. Tenant-scoped like the rest of the maintenance calls: in a
//! tenant-isolated queue they see and change only the acting tenant's jobs and fail closed
//! without a tenant.

use super::Queue;
use super::tenant_mode::Mode;
use crate::{JobRecord, Result};
use chrono::{DateTime, Utc};
use neo_core::{JobId, TenantId};
use neo_db::TableName;
use sqlx::{AssertSqlSafe, Row};

impl Queue {
    /// The `jobs` table the acting tenant's calls read.
    fn console_table(&self, tenant: Option<TenantId>) -> Result<TableName> {
        let schema = match (&*self.mode, tenant) {
            (Mode::Fixed { schema, .. } | Mode::Rls { schema, .. }, _) => schema.clone(),
            (Mode::Schemas { resolver, .. }, Some(tenant)) => resolver.schema(tenant)?,
            (Mode::Schemas { .. }, None) => return Err(neo_tenant::Error::NoTenantInScope.into()),
        };
        Ok(TableName::new("jobs")?.in_schema(&schema))
    }

    /// One keyset page of dead letters, oldest first: those after `after` (the `dead_at` and
    /// id of the previous page's last), at most `limit`. Reads through the dead-letter index.
    ///
    /// # Errors
    /// A database error; [`Error::Tenant`](crate::Error::Tenant) in a tenant-isolated queue
    /// without a tenant.
    pub async fn dead_letters_after(
        &self,
        after: Option<(DateTime<Utc>, JobId)>,
        limit: u32,
    ) -> Result<Vec<JobRecord>> {
        let scope = self.tenant_scope()?;
        let t = self.console_table(scope.tenant)?;
        let sql = format!(
            "SELECT id, kind, payload, state, attempts, max_attempts, last_error, tenant, dead_at \
             FROM {t} WHERE state = 'dead' \
             AND ($1::timestamptz IS NULL OR (dead_at, id) > ($1, $2)) \
             ORDER BY dead_at, id LIMIT $3"
        );
        let (at, id) = after.unzip();
        let mut conn = self.tenant_connection(&scope).await?;
        let rows = sqlx::query(AssertSqlSafe(sql))
            .persistent(false)
            .bind(at)
            .bind(id)
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await?;
        conn.finish().await?;
        let mut records = Vec::with_capacity(rows.len());
        for r in &rows {
            records.push(JobRecord {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                payload: r.try_get("payload")?,
                state: r.try_get("state")?,
                attempts: r.try_get("attempts")?,
                max_attempts: r.try_get("max_attempts")?,
                last_error: r.try_get("last_error")?,
                tenant: r.try_get("tenant")?,
                dead_at: r.try_get("dead_at")?,
            });
        }
        Ok(records)
    }

    /// Deletes dead letters for good; returns those deleted (only dead ones, never another
    /// tenant's).
    ///
    /// # Errors
    /// A database error; [`Error::Tenant`](crate::Error::Tenant) in a tenant-isolated queue
    /// without a tenant.
    pub async fn discard_dead(&self, ids: &[JobId]) -> Result<Vec<JobId>> {
        let scope = self.tenant_scope()?;
        let t = self.console_table(scope.tenant)?;
        let sql = format!("DELETE FROM {t} WHERE id = ANY($1) AND state = 'dead' RETURNING id");
        let mut conn = self.tenant_connection(&scope).await?;
        let gone = sqlx::query_scalar(AssertSqlSafe(sql))
            .persistent(false)
            .bind(ids)
            .fetch_all(&mut *conn)
            .await?;
        conn.finish().await?;
        Ok(gone)
    }
}
