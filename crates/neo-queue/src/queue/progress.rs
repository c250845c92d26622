//! Progress and a small output recorded by a running job's handler
//! ([`JobContext::record_progress`](crate::JobContext::record_progress),
//! [`Queue::record_progress`]), readable by the job's id ([`Queue::job_output`]) while it
//! runs and after it finished. They live in `job_outputs`, beside `jobs`: an ack deletes the
//! job, its output stays until retention prunes it
//! ([`retain_outputs`](crate::QueueConfig::retain_outputs)).
//!
//! Writes are fenced like acks (the claim's id, fence and unexpired lease) and run on the
//! [system `Db`](Queue::system_db); reads are tenant-scoped: under row-level security
//! `job_outputs` has the same policy as `jobs` (migration 13 of the row-level-security set).

use super::Queue;
use crate::{Error, Receipt, Result};
use chrono::{DateTime, Utc};
use neo_core::JobId;
use neo_db::{Ident, RlsSetting, TableName};
use sqlx::{Row, SqlStr};

/// The statements over one schema's `job_outputs`.
#[derive(Debug)]
pub(super) struct ProgressSql {
    record: SqlStr,
    read: SqlStr,
    /// Deletes one tenant's outputs (offboarding): `$1` the tenant.
    pub(super) purge: SqlStr,
}

impl ProgressSql {
    pub(super) fn new(t: &TableName) -> Self {
        let o = super::pause::sibling(t, "job_outputs");
        ProgressSql {
            record: super::statements::sql(format!(
                "INSERT INTO {o} AS o (id, tenant, kind, progress, output, updated_at) \
                 SELECT j.id, j.tenant, j.kind, $3, $4, now() FROM {t} AS j \
                 WHERE j.id = $1 AND j.fence = $2 AND j.state = 'running' AND j.lease_expires_at > now() \
                 ON CONFLICT (id) DO UPDATE SET progress = coalesce(EXCLUDED.progress, o.progress), \
                   output = coalesce(EXCLUDED.output, o.output), updated_at = now() \
                 RETURNING o.id"
            )),
            read: super::statements::sql(format!(
                "SELECT id, kind, progress, output, updated_at FROM {o} WHERE id = $1"
            )),
            purge: super::statements::sql(format!("DELETE FROM {o} WHERE tenant = $1")),
        }
    }
}

/// Migration 13 of the row-level-security set: every output has a tenant, `tenant_id` is
/// generated from it, and the policy of `jobs` applies.
pub(super) fn rls_migration(setting: &RlsSetting) -> Result<String> {
    let table = TableName::new("job_outputs")?;
    let column = Ident::new("tenant_id")?;
    let mut sql = String::from(
        "ALTER TABLE job_outputs ALTER COLUMN tenant SET NOT NULL;\n\
         ALTER TABLE job_outputs ADD COLUMN tenant_id uuid GENERATED ALWAYS AS (tenant::uuid) STORED;\n\
         CREATE INDEX job_outputs_by_tenant ON job_outputs (tenant_id, id);\n",
    );
    sql.push_str(&setting.policy_sql(&table, &column));
    Ok(sql)
}

/// What a job's handler recorded ([`Queue::job_output`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JobOutput {
    /// The job.
    pub id: JobId,
    /// Its kind.
    pub kind: String,
    /// The last progress recorded, in percent (0 to 100).
    pub progress: Option<f32>,
    /// The last output recorded.
    pub output: Option<serde_json::Value>,
    /// When either was last recorded.
    pub updated_at: DateTime<Utc>,
}

impl Queue {
    /// Records progress (percent, 0 to 100) and/or an output for the claim `receipt`;
    /// `None` keeps what was recorded before. A handler run by a worker calls
    /// [`JobContext::record_progress`](crate::JobContext::record_progress) instead.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(queue: neo_queue::Queue) -> neo_queue::Result<()> {
    /// for job in queue.claim("w", 1, None).await? {
    ///     queue.record_progress(job.receipt(), Some(50.0), None).await?;
    ///     let output = serde_json::json!({ "rows": 1200 });
    ///     queue.record_progress(job.receipt(), Some(100.0), Some(&output)).await?;
    ///     queue.ack(job.receipt()).await?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Invalid`] for progress outside 0..=100 or an output larger than
    /// [`max_output_bytes`](crate::QueueConfig::max_output_bytes); [`Error::LeaseLost`] when
    /// the claim is no longer live (cancelled, lease lost, finished); a database error.
    pub async fn record_progress(
        &self,
        receipt: Receipt,
        progress: Option<f32>,
        output: Option<&serde_json::Value>,
    ) -> Result<()> {
        if let Some(p) = progress
            && !(0.0..=100.0).contains(&p)
        {
            return Err(Error::invalid(
                "job progress",
                format!("{p} is not a percentage from 0 to 100"),
            ));
        }
        if let Some(output) = output {
            let size = output.to_string().len();
            if size > self.config.max_output_bytes {
                return Err(Error::invalid(
                    "job output",
                    format!(
                        "{size} bytes of JSON; at most {} (QueueConfig::max_output_bytes)",
                        self.config.max_output_bytes
                    ),
                ));
            }
        }
        let scope = self.system_scope()?;
        let mut conn = self.system_connection().await?;
        let row = sqlx::query(scope.sql.progress.record.clone())
            .persistent(self.system.pooler().named_statements())
            .bind(receipt.id)
            .bind(receipt.fence)
            .bind(progress)
            .bind(output)
            .fetch_optional(&mut *conn)
            .await?;
        conn.finish().await?;
        match row {
            Some(_) => Ok(()),
            None => Err(Error::LeaseLost {
                ids: vec![receipt.id],
            }),
        }
    }

    /// What the job's handler recorded, while it runs and after it finished; `None` when it
    /// recorded nothing (or the output was pruned, or it is another tenant's job).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(queue: neo_queue::Queue, id: neo_core::JobId) -> neo_queue::Result<()> {
    /// if let Some(out) = queue.job_output(id).await? {
    ///     println!("{:?}% done, output {:?}", out.progress, out.output);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A database error; [`Error::Tenant`] in a tenant-isolated queue without a tenant.
    pub async fn job_output(&self, id: JobId) -> Result<Option<JobOutput>> {
        let scope = self.tenant_scope()?;
        let mut conn = self.tenant_connection(&scope).await?;
        let row = sqlx::query(scope.sql.progress.read.clone())
            .persistent(self.db.pooler().named_statements())
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        conn.finish().await?;
        row.map(|r| {
            Ok(JobOutput {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                progress: r.try_get("progress")?,
                output: r.try_get("output")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| e.into())
    }
}
