//! Claim: due jobs taken with `FOR UPDATE SKIP LOCKED`, under a lease and a fresh fencing
//! token.

use super::Queue;
use crate::{Error, Job, Result};
use sqlx::Row;

impl Queue {
    /// Claims up to `n` due jobs (highest priority, then oldest `run_at`) for `worker`, with a
    /// lease of `config.lease`; only `kinds` when given.
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
        let lease = self.lease_ms();
        let mut conn = self.db.statement_connection().await?;
        let rows = match kinds {
            None => {
                sqlx::query(self.sql.claim.clone())
                    .persistent(self.db.pooler().named_statements())
                    .bind(n)
                    .bind(worker)
                    .bind(lease)
                    .fetch_all(&mut *conn)
                    .await?
            }
            Some(kinds) => {
                sqlx::query(self.sql.claim_kinds.clone())
                    .persistent(self.db.pooler().named_statements())
                    .bind(n)
                    .bind(worker)
                    .bind(lease)
                    .bind(kinds)
                    .fetch_all(&mut *conn)
                    .await?
            }
        };
        conn.finish().await?;
        metrics::counter!("neo_queue_claimed_total").increment(rows.len() as u64);
        rows.iter()
            .map(|r| {
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
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Error::from)
    }
}
