//! Claim: due jobs taken with `FOR UPDATE SKIP LOCKED`, under a lease and a fresh fencing
//! token; in turns across tenants when the queue's claims are fair, and within each tenant's
//! cap of running jobs when it has one.

use super::Queue;
use crate::{Error, Job, Result};
use neo_core::TraceContext;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row, SqlStr};

impl Queue {
    /// Claims up to `n` due jobs for `worker`, with a lease of `config.lease`; only `kinds`
    /// when given. Highest priority first; within a priority, oldest `run_at` first, or with
    /// [`fair_claims`](crate::QueueConfig::fair_claims) each tenant's oldest in turn, and
    /// never more running jobs of one tenant than
    /// [`max_running_per_tenant`](crate::QueueConfig::max_running_per_tenant).
    ///
    /// # Errors
    /// A database error.
    pub async fn claim(
        &self,
        worker: &str,
        n: usize,
        kinds: Option<&[String]>,
    ) -> Result<Vec<Job>> {
        let n = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
        let rows = match self.config.max_running_per_tenant {
            Some(cap) => {
                // The statement counts each tenant's running jobs in its snapshot, so two
                // claims at once could both see room for the same tenant. The lock makes them
                // take turns, and the claim's snapshot, taken after the lock, sees the jobs
                // the previous claim committed.
                let mut tx = self.db.begin().await?;
                sqlx::query(self.sql.claim_lock.clone())
                    .persistent(self.db.pooler().named_statements())
                    .execute(&mut **tx)
                    .await?;
                let statement = match kinds {
                    None => &self.sql.claim_capped,
                    Some(_) => &self.sql.claim_capped_kinds,
                };
                let rows = self
                    .run_claim(&mut tx, statement, n, worker, kinds, Some(i64::from(cap)))
                    .await?;
                tx.commit().await?;
                rows
            }
            None => {
                let statement = match (self.config.fair_claims, kinds) {
                    (false, None) => &self.sql.claim,
                    (false, Some(_)) => &self.sql.claim_kinds,
                    (true, None) => &self.sql.claim_fair,
                    (true, Some(_)) => &self.sql.claim_fair_kinds,
                };
                let mut conn = self.db.statement_connection().await?;
                let rows = self
                    .run_claim(&mut conn, statement, n, worker, kinds, None)
                    .await?;
                conn.finish().await?;
                rows
            }
        };
        metrics::counter!(crate::metric_names::CLAIMED_TOTAL).increment(rows.len() as u64);
        rows.iter()
            .map(job)
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Error::from)
    }

    /// Runs a claim statement: `$1` jobs, worker `$2`, lease `$3` ms, then the kinds and the
    /// cap, each when given, in that order.
    async fn run_claim(
        &self,
        conn: &mut PgConnection,
        statement: &SqlStr,
        n: i64,
        worker: &str,
        kinds: Option<&[String]>,
        cap: Option<i64>,
    ) -> Result<Vec<PgRow>> {
        let mut query = sqlx::query(statement.clone())
            .persistent(self.db.pooler().named_statements())
            .bind(n)
            .bind(worker)
            .bind(self.lease_ms());
        if let Some(kinds) = kinds {
            query = query.bind(kinds);
        }
        if let Some(cap) = cap {
            query = query.bind(cap);
        }
        Ok(query.fetch_all(conn).await?)
    }
}

fn job(r: &PgRow) -> Result<Job, sqlx::Error> {
    Ok(Job {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        payload: r.try_get("payload")?,
        priority: r.try_get("priority")?,
        attempt: r.try_get("attempts")?,
        max_attempts: r.try_get("max_attempts")?,
        tenant: r.try_get("tenant")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        fence: r.try_get("fence")?,
        trace_context: r
            .try_get::<Option<sqlx::types::Json<TraceContext>>, _>("trace_context")?
            .map(|json| json.0),
    })
}
