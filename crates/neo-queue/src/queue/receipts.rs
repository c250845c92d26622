//! Receipts: the statements over a batch of claims (ack, nack, heartbeat, release). Each
//! matches `(id, fence)` and an unexpired lease, so a worker that lost its claim is refused.
//!
//! None of them joins the receipts to the jobs: each job finds its receipt by a binary
//! search of the ids, sent in id order (`owned_receipt` in `statements.rs`). All four are
//! planned per call ([`neo_db::planned_per_call`]), not prepared: a generic plan is made for
//! the table as it was then (when these statements still joined the receipts, one made while
//! the table was small read it by a sequential scan, and kept doing so as it grew).
//!
//! In a tenant-isolated queue they span tenants: they run on the
//! [system `Db`](Queue::system_db), on the shared table (row-level security) or the acting
//! tenant's (schema per tenant).

use super::Queue;
use crate::{Error, Failure, Receipt, Result};
use neo_core::JobId;
use neo_db::planned_per_call;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Connection, Postgres, Row, SqlStr};
use std::collections::HashSet;

impl Queue {
    /// Extends the leases of still-owned claims.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] naming the claims no longer owned (the others were extended).
    pub async fn heartbeat(&self, receipts: &[Receipt]) -> Result<()> {
        let scope = self.system_scope()?;
        let refused = self
            .run_receipts(&scope.sql.heartbeat, receipts, |q| q.bind(self.lease_ms()))
            .await?;
        refused_to_result(&refused)
    }

    /// Finishes these claims (deletes the jobs); returns the receipts refused because their
    /// lease was lost, which were not acknowledged.
    ///
    /// # Errors
    /// A database error.
    pub async fn ack_many(&self, receipts: &[Receipt]) -> Result<Vec<Receipt>> {
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let scope = self.system_scope()?;
        let mut conn = self.system_connection().await?;
        let refused =
            super::workflow::ack_on(&mut conn, &scope.sql, receipts, &self.config.channel).await?;
        conn.finish().await?;
        metrics::counter!(crate::metric_names::ACKED_TOTAL)
            .increment((receipts.len() - refused.len()) as u64);
        Ok(refused)
    }

    /// Finishes one claim.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when the lease expired (another worker may own the job now).
    pub async fn ack(&self, receipt: Receipt) -> Result<()> {
        refused_to_result(&self.ack_many(&[receipt]).await?)
    }

    /// Reports failed attempts: each job is retried after a jittered exponential backoff, or
    /// goes to the dead letters after its last attempt (at once when `permanent`). Returns the
    /// refused receipts (lease lost).
    ///
    /// # Errors
    /// A database error.
    pub async fn nack_many(&self, failures: &[Failure]) -> Result<Vec<Receipt>> {
        if failures.is_empty() {
            return Ok(Vec::new());
        }
        let scope = self.system_scope()?;
        let mut conn = self.system_connection().await?;
        let mut done = self.nack_on(&mut conn, &scope.sql.nack, failures).await?;
        if done.len() < failures.len() {
            // What the plain nack left: jobs with dependents (a dead one moves them on, in
            // the same transaction) and lost leases ([`super::workflow`]).
            let finished: HashSet<JobId> = done.iter().map(|(id, _)| *id).collect();
            let left: Vec<Failure> = failures
                .iter()
                .filter(|f| !finished.contains(&f.receipt.id))
                .cloned()
                .collect();
            let mut tx = conn.begin().await?;
            let more = self
                .nack_on(&mut tx, &scope.sql.workflow.nack, &left)
                .await?;
            let dead: Vec<JobId> = more
                .iter()
                .filter(|(_, state)| state == "dead")
                .map(|(id, _)| *id)
                .collect();
            super::workflow::resolve(
                &mut tx,
                &scope.sql,
                dead,
                super::workflow::Outcome::Dead,
                &self.config.channel,
            )
            .await?;
            tx.commit().await?;
            done.extend(more);
        }
        conn.finish().await?;
        let dead = done.iter().filter(|(_, state)| state == "dead").count() as u64;
        metrics::counter!(crate::metric_names::NACKED_TOTAL).increment(done.len() as u64);
        metrics::counter!(crate::metric_names::RETRIES_TOTAL).increment(done.len() as u64 - dead);
        metrics::counter!(crate::metric_names::DEAD_LETTERED_TOTAL).increment(dead);
        let done: Vec<JobId> = done.into_iter().map(|(id, _)| id).collect();
        let receipts: Vec<Receipt> = failures.iter().map(|f| f.receipt).collect();
        Ok(refused(&receipts, &done))
    }

    /// Runs a nack `statement` over `failures` on `conn`; returns the jobs it changed and
    /// their new state.
    async fn nack_on(
        &self,
        conn: &mut sqlx::PgConnection,
        statement: &SqlStr,
        failures: &[Failure],
    ) -> Result<Vec<(JobId, String)>> {
        // In id order, as for every statement over receipts ([`run_receipts_on`]).
        let mut failures: Vec<&Failure> = failures.iter().collect();
        failures.sort_unstable_by_key(|f| (f.receipt.id, f.receipt.fence));
        let ids: Vec<JobId> = failures.iter().map(|f| f.receipt.id).collect();
        let fences: Vec<i64> = failures.iter().map(|f| f.receipt.fence).collect();
        let errors: Vec<&str> = failures.iter().map(|f| f.error.as_str()).collect();
        let permanent: Vec<bool> = failures.iter().map(|f| f.permanent).collect();
        let retry_in: Vec<Option<f64>> = failures
            .iter()
            .map(|f| f.retry_in.map(|d| d.as_secs_f64() * 1e3))
            .collect();
        let snooze: Vec<bool> = failures.iter().map(|f| f.snooze).collect();
        let rows = planned_per_call(statement.clone())
            .bind(&ids)
            .bind(&fences)
            .bind(self.config.retry_initial.as_secs_f64() * 1e3)
            .bind(self.config.retry_multiplier)
            .bind(self.config.retry_max.as_secs_f64() * 1e3)
            .bind(&errors)
            .bind(&permanent)
            .bind(&retry_in)
            .bind(&snooze)
            .fetch_all(conn)
            .await?;
        Ok(rows
            .iter()
            .map(|row| Ok((row.try_get("id")?, row.try_get("state")?)))
            .collect::<Result<Vec<(JobId, String)>, sqlx::Error>>()?)
    }

    /// Hands claims back without counting the attempt (shutdown).
    ///
    /// # Errors
    /// A database error.
    pub async fn release(&self, receipts: &[Receipt]) -> Result<Vec<Receipt>> {
        let scope = self.system_scope()?;
        self.run_receipts(&scope.sql.release, receipts, |q| q).await
    }

    /// Runs `statement` over the claims' `(id, fence)` pairs (bound as `$1`, `$2`; `extra`
    /// binds the rest) and returns the claims it did not match.
    async fn run_receipts(
        &self,
        statement: &SqlStr,
        receipts: &[Receipt],
        extra: impl FnOnce(Query<'_, Postgres, PgArguments>) -> Query<'_, Postgres, PgArguments>,
    ) -> Result<Vec<Receipt>> {
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.system_connection().await?;
        let refused = run_receipts_on(&mut conn, statement, receipts, extra).await?;
        conn.finish().await?;
        Ok(refused)
    }
}

/// Runs `statement` over the claims' `(id, fence)` pairs on `conn` (bound as `$1`, `$2`;
/// `extra` binds the rest) and returns the claims it did not match.
pub(super) async fn run_receipts_on(
    conn: &mut sqlx::PgConnection,
    statement: &SqlStr,
    receipts: &[Receipt],
    extra: impl FnOnce(Query<'_, Postgres, PgArguments>) -> Query<'_, Postgres, PgArguments>,
) -> Result<Vec<Receipt>> {
    // In id order: each job finds its receipt by a binary search of the ids
    // (`owned_receipt` in `statements.rs`), which lands on the last of a job's receipts, here
    // the one with the highest fence (its newest claim).
    let mut pairs: Vec<(JobId, i64)> = receipts.iter().map(|r| (r.id, r.fence)).collect();
    pairs.sort_unstable();
    let (ids, fences): (Vec<JobId>, Vec<i64>) = pairs.into_iter().unzip();
    let query = planned_per_call(statement.clone()).bind(ids).bind(fences);
    let rows = extra(query).fetch_all(conn).await?;
    let done = rows
        .iter()
        .map(|row: &PgRow| row.try_get("id"))
        .collect::<Result<Vec<JobId>, sqlx::Error>>()?;
    Ok(refused(receipts, &done))
}

fn refused(receipts: &[Receipt], done: &[JobId]) -> Vec<Receipt> {
    let done: HashSet<&JobId> = done.iter().collect();
    receipts
        .iter()
        .filter(|r| !done.contains(&r.id))
        .copied()
        .collect()
}

fn refused_to_result(refused: &[Receipt]) -> Result<()> {
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Error::LeaseLost {
            ids: refused.iter().map(|r| r.id).collect(),
        })
    }
}
