//! Workflows: jobs that depend on others ([`NewJob::depends_on`]).
//!
//! A job with dependencies is stored in state `waiting` (never claimed) with the ids it
//! still waits for in `depends_on`; each job it depends on gets `has_dependents`. When such
//! a job finishes, the statement that finishes it "resolves" it in the same transaction:
//! its id leaves its dependents' `depends_on`, and a dependent left with none becomes
//! `available` (and wakes the workers). When it dies (dead letters, also by the rescue of
//! its last expired lease) or is cancelled, each waiting dependent applies its
//! [`OnDependencyFailure`]: cancelled, failed (dead) or still run; a dependent cancelled or
//! failed so passes it on to its own dependents, in the same transaction.
//!
//! The hot path does not pay: the ack and nack statements take only jobs without
//! `has_dependents` (a null test); a receipt they leave (a job with dependents, or a claim
//! whose lease was lost) goes through this module's ack or nack, with the resolve, in one
//! transaction (a savepoint inside a caller's). Jobs without dependencies are enqueued with
//! the plain insert statement.
//!
//! Dependencies are checked at enqueue: each must be a job the queue holds (for the acting
//! tenant) or one of the same batch, and the batch's jobs must not depend on each other in
//! a cycle. An acknowledged job is deleted, so a dependency that already completed is
//! unknown: enqueue a workflow in one batch (or one transaction) rather than piecemeal.

use super::Queue;
use super::enqueue::Columns;
use super::receipts::run_receipts_on;
use super::statements::{
    Statements, ack_sql, insert_sql, nack_sql, owned_receipt, skip_duplicates, sql,
};
use crate::{Error, NewJob, OnDependencyFailure, OnDuplicate, Receipt, Result};
use neo_core::JobId;
use neo_db::TableName;
use sqlx::{Acquire, PgConnection, Postgres, Row, SqlStr};
use std::collections::{HashMap, HashSet};

/// The workflow statements over one `jobs` table.
#[derive(Debug)]
pub(crate) struct WorkflowSql {
    /// Inserts with the workflow columns ([`insert_sql`]).
    insert_skip: SqlStr,
    insert_strict: SqlStr,
    /// Marks the dependencies outside the batch (`$1`) and returns those it found, with
    /// their state.
    mark: SqlStr,
    /// Moves the dependents of `$1` on, as `$2` (`completed`, `dead` or `cancelled`) says;
    /// `$3` the channel. Returns the dependents it moved, their new state and whether they
    /// have dependents of their own.
    resolve: SqlStr,
    /// The ack and nack of jobs with dependents.
    pub(super) ack: SqlStr,
    pub(super) nack: SqlStr,
}

impl WorkflowSql {
    pub(super) fn new(t: &TableName, per_tenant_keys: bool) -> Self {
        let with_dependents = "j.has_dependents IS TRUE";
        let owned = owned_receipt(&format!(" AND {with_dependents}"));
        // A failed dependency ($2 is not `completed`) applies the dependent's policy; a
        // completed one, or a failed one under `run`, only leaves its `depends_on`.
        let failed = "$2::text <> 'completed'";
        let cancel = format!("{failed} AND j.on_dependency_failure = 'cancel'");
        let fail = format!("{failed} AND j.on_dependency_failure = 'fail'");
        let rest =
            "(SELECT array_agg(d) FROM unnest(j.depends_on) AS d WHERE d <> ALL($1::uuid[]))";
        let culprit =
            "(SELECT d::text FROM unnest(j.depends_on) AS d WHERE d = ANY($1::uuid[]) LIMIT 1)";
        WorkflowSql {
            insert_skip: sql(insert_sql(t, &skip_duplicates(per_tenant_keys), true)),
            insert_strict: sql(insert_sql(t, "", true)),
            mark: sql(format!(
                "UPDATE {t} SET has_dependents = true WHERE id = ANY($1::uuid[]) RETURNING id, state"
            )),
            resolve: sql(format!(
                "WITH moved AS (UPDATE {t} AS j SET \
                   depends_on = {rest}, \
                   state = CASE WHEN {cancel} THEN 'cancelled' WHEN {fail} THEN 'dead' \
                     WHEN {rest} IS NULL THEN 'available' ELSE 'waiting' END, \
                   cancelled_at = CASE WHEN {cancel} THEN now() ELSE j.cancelled_at END, \
                   dead_at = CASE WHEN {fail} THEN now() ELSE j.dead_at END, \
                   last_error = CASE WHEN {cancel} OR {fail} THEN 'dependency ' || {culprit} || \
                     CASE WHEN $2::text = 'dead' THEN ' died' ELSE ' was cancelled' END ELSE j.last_error END \
                 WHERE j.depends_on && $1::uuid[] AND j.state = 'waiting' \
                 RETURNING j.id, j.state, {with_dependents} AS has_dependents) \
                 SELECT id, state, has_dependents FROM moved \
                 WHERE (SELECT count(pg_notify($3, '')) \
                        FROM (SELECT FROM moved WHERE state = 'available' LIMIT 1) AS woken) >= 0"
            )),
            ack: sql(ack_sql(t, &owned)),
            nack: sql(nack_sql(t, &owned)),
        }
    }
}

/// How a job with dependents finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Acknowledged.
    Completed,
    /// Dead-lettered.
    Dead,
    /// Cancelled.
    Cancelled,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Dead => "dead",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// Moves the dependents of `ids` on after they finished as `outcome`, and the dependents of
/// those it cancels or fails, on `conn` (inside the caller's transaction).
pub(super) async fn resolve(
    conn: &mut PgConnection,
    sql: &Statements,
    ids: Vec<JobId>,
    outcome: Outcome,
    channel: &str,
) -> Result<()> {
    let mut todo = vec![(ids, outcome)];
    while let Some((ids, outcome)) = todo.pop() {
        if ids.is_empty() {
            continue;
        }
        // Unnamed (as the receipts are): workflows are off the hot path, and a transaction
        // pooler may not keep named statements.
        let rows = sqlx::query(sql.workflow.resolve.clone())
            .persistent(false)
            .bind(&ids)
            .bind(outcome.as_str())
            .bind(channel)
            .fetch_all(&mut *conn)
            .await?;
        let (mut dead, mut cancelled) = (Vec::new(), Vec::new());
        for row in &rows {
            if !row.try_get::<bool, _>("has_dependents")? {
                continue;
            }
            let id: JobId = row.try_get("id")?;
            match row.try_get::<String, _>("state")?.as_str() {
                "dead" => dead.push(id),
                "cancelled" => cancelled.push(id),
                _ => {}
            }
        }
        todo.push((dead, Outcome::Dead));
        todo.push((cancelled, Outcome::Cancelled));
    }
    Ok(())
}

/// Acknowledges `receipts` on `conn`: the plain ack first; what it left (jobs with
/// dependents, lost leases) with the workflow's ack and the resolve of its dependents, in
/// one transaction (a savepoint when `conn` is in one). Returns the refused receipts.
pub(super) async fn ack_on(
    conn: &mut PgConnection,
    sql: &Statements,
    receipts: &[Receipt],
    channel: &str,
) -> Result<Vec<Receipt>> {
    let left = run_receipts_on(conn, &sql.ack, receipts, |q| q).await?;
    if left.is_empty() {
        return Ok(left);
    }
    let mut tx = conn.begin().await?;
    let refused = run_receipts_on(&mut tx, &sql.workflow.ack, &left, |q| q).await?;
    let refused_ids: HashSet<JobId> = refused.iter().map(|r| r.id).collect();
    let acked: Vec<JobId> = left
        .iter()
        .map(|r| r.id)
        .filter(|id| !refused_ids.contains(id))
        .collect();
    resolve(&mut tx, sql, acked, Outcome::Completed, channel).await?;
    tx.commit().await?;
    Ok(refused)
}

/// Checks a batch's dependencies before anything is written: no job with dependencies has
/// a unique key (a waiting job does not hold its key, so it could not take it when it
/// becomes available), and no cycle among the batch's jobs.
///
/// # Errors
/// [`Error::Invalid`] for a unique key on a dependent job; [`Error::DependencyCycle`].
pub(super) fn check(jobs: &[NewJob]) -> Result<()> {
    if let Some(job) = jobs
        .iter()
        .find(|j| !j.depends_on.is_empty() && j.unique_key.is_some())
    {
        return Err(Error::invalid(
            "job dependencies",
            format!(
                "job {} has dependencies and a unique key: a waiting job cannot hold a unique key",
                job.id
            ),
        ));
    }
    let index: HashMap<JobId, usize> = jobs.iter().enumerate().map(|(i, j)| (j.id, i)).collect();
    // Kahn's algorithm over the edges within the batch: what is never freed is on a cycle
    // or behind one.
    let inner: Vec<Vec<usize>> = jobs
        .iter()
        .map(|j| {
            j.depends_on
                .iter()
                .filter_map(|d| index.get(d).copied())
                .collect()
        })
        .collect();
    let mut waiting: Vec<usize> = inner.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); jobs.len()];
    for (job, deps) in inner.iter().enumerate() {
        for &dep in deps {
            dependents[dep].push(job);
        }
    }
    let mut ready: Vec<usize> = (0..jobs.len()).filter(|&i| waiting[i] == 0).collect();
    let mut freed = 0;
    while let Some(job) = ready.pop() {
        freed += 1;
        for &next in &dependents[job] {
            waiting[next] -= 1;
            if waiting[next] == 0 {
                ready.push(next);
            }
        }
    }
    if freed == jobs.len() {
        return Ok(());
    }
    // Walk back along unfreed dependencies from an unfreed job until a job repeats: the
    // jobs from its first visit on are a cycle.
    let mut at = (0..jobs.len()).find(|&i| waiting[i] > 0).unwrap_or(0);
    let mut path: Vec<usize> = Vec::new();
    while !path.contains(&at) {
        path.push(at);
        at = inner[at]
            .iter()
            .copied()
            .find(|&d| waiting[d] > 0)
            .unwrap_or(at);
    }
    let start = path.iter().position(|&i| i == at).unwrap_or(0);
    let mut ids: Vec<JobId> = path[start..].iter().map(|&i| jobs[i].id).collect();
    ids.reverse();
    Err(Error::DependencyCycle { ids })
}

impl Queue {
    /// [`enqueue_many`](Self::enqueue_many)'s body for a batch in which some job has
    /// dependencies, on `conn` in a transaction (a savepoint inside the caller's): marks the
    /// dependencies outside the batch (refusing unknown ones), inserts the batch with the
    /// workflow columns, and applies each dependent's policy at once for dependencies that
    /// are already dead or cancelled.
    pub(super) async fn enqueue_workflow_on(
        &self,
        conn: &mut PgConnection,
        sql: &Statements,
        jobs: &[NewJob],
        columns: &Columns<'_>,
        on_duplicate: OnDuplicate,
    ) -> Result<Vec<JobId>> {
        let in_batch: HashSet<JobId> = jobs.iter().map(|j| j.id).collect();
        let mut outside: Vec<JobId> = Vec::new();
        let mut depended_on: HashSet<JobId> = HashSet::new();
        for dep in jobs.iter().flat_map(|j| j.depends_on.iter().copied()) {
            if in_batch.contains(&dep) {
                depended_on.insert(dep);
            } else if !outside.contains(&dep) {
                outside.push(dep);
            }
        }
        let mut tx = conn.begin().await?;
        let (mut dead, mut cancelled) = (Vec::new(), Vec::new());
        if !outside.is_empty() {
            let rows = sqlx::query(sql.workflow.mark.clone())
                .persistent(false)
                .bind(&outside)
                .fetch_all(&mut *tx)
                .await?;
            let mut found = HashSet::new();
            for row in &rows {
                let id: JobId = row.try_get("id")?;
                match row.try_get::<String, _>("state")?.as_str() {
                    "dead" => dead.push(id),
                    "cancelled" => cancelled.push(id),
                    _ => {}
                }
                found.insert(id);
            }
            let unknown: Vec<JobId> = outside
                .iter()
                .filter(|id| !found.contains(id))
                .copied()
                .collect();
            if !unknown.is_empty() {
                // Rolled back now, not when the connection is next used: the mark above
                // locked the known dependencies' rows, which claims would skip meanwhile.
                tx.rollback().await?;
                return Err(Error::UnknownDependency { ids: unknown });
            }
        }
        let default_policy = self.config.on_dependency_failure;
        let states: Vec<&str> = jobs
            .iter()
            .map(|j| {
                if j.depends_on.is_empty() {
                    "available"
                } else {
                    "waiting"
                }
            })
            .collect();
        let depends: Vec<Option<String>> = jobs
            .iter()
            .map(|j| {
                (!j.depends_on.is_empty()).then(|| {
                    j.depends_on
                        .iter()
                        .map(JobId::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                })
            })
            .collect();
        let policies: Vec<Option<&str>> = jobs
            .iter()
            .map(|j| {
                (!j.depends_on.is_empty())
                    .then(|| j.on_dependency_failure.unwrap_or(default_policy).as_str())
            })
            .collect();
        let has_dependents: Vec<Option<bool>> = jobs
            .iter()
            .map(|j| depended_on.contains(&j.id).then_some(true))
            .collect();
        let statement = match on_duplicate {
            OnDuplicate::Skip => &sql.workflow.insert_skip,
            OnDuplicate::Error => &sql.workflow.insert_strict,
        };
        let inserted: Vec<JobId> = sqlx::query_scalar(statement.clone())
            .persistent(false)
            .bind(&columns.ids)
            .bind(&columns.kinds)
            .bind(&columns.payloads)
            .bind(&columns.priorities)
            .bind(&columns.run_ats)
            .bind(&columns.max_attempts)
            .bind(&columns.unique_keys)
            .bind(&columns.tenants)
            .bind(&self.config.channel)
            .bind(&columns.traces)
            .bind(&states)
            .bind(&depends)
            .bind(&policies)
            .bind(&has_dependents)
            .bind(&columns.tenant)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| super::enqueue::duplicate_or(e, &columns.unique_keys))?;
        let stored: HashSet<&JobId> = inserted.iter().collect();
        if let Some(skipped) = depended_on.iter().find(|id| !stored.contains(id)) {
            return Err(Error::invalid(
                "job dependencies",
                format!(
                    "job {skipped} was skipped as a duplicate of a queued job, and others in the batch depend on it"
                ),
            ));
        }
        resolve(&mut tx, sql, dead, Outcome::Dead, &self.config.channel).await?;
        resolve(
            &mut tx,
            sql,
            cancelled,
            Outcome::Cancelled,
            &self.config.channel,
        )
        .await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Enqueues a batch of jobs and a callback job that runs once every job of the batch
    /// finished: acknowledged, dead-lettered or cancelled (it depends on each of them with
    /// [`OnDependencyFailure::Run`]). Returns the batch's ids, as
    /// [`enqueue_many`](Self::enqueue_many) does, then the callback's. The batch's jobs may
    /// depend on each other or on queued jobs; the callback may not have a unique key.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(queue: neo_queue::Queue, db: neo_db::Db) -> neo_queue::Result<()> {
    /// use neo_queue::{NewJob, OnDuplicate};
    /// let pages: Vec<NewJob> = (0..10)
    ///     .map(|page| NewJob::new("import.page", &serde_json::json!({ "page": page })))
    ///     .collect::<Result<_, _>>()?;
    /// let done = NewJob::new("import.finish", &serde_json::json!({}))?;
    /// let ids = queue.enqueue_batch(db.pool(), pages, done, OnDuplicate::Error).await?;
    /// # let _ = ids; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As for [`enqueue_many`](Self::enqueue_many); [`Error::Invalid`] for an empty batch.
    pub async fn enqueue_batch<'c, A>(
        &self,
        exec: A,
        jobs: Vec<NewJob>,
        callback: NewJob,
        on_duplicate: OnDuplicate,
    ) -> Result<Vec<Option<JobId>>>
    where
        A: Acquire<'c, Database = Postgres> + Send,
    {
        if jobs.is_empty() {
            return Err(Error::invalid(
                "batch",
                "a batch needs at least one job for its callback to wait for",
            ));
        }
        let callback = callback
            .depends_on(jobs.iter().map(NewJob::id))
            .on_dependency_failure(OnDependencyFailure::Run);
        let mut all = jobs;
        all.push(callback);
        self.enqueue_many(exec, all, on_duplicate).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> NewJob {
        NewJob::new("k", &0).unwrap()
    }

    #[test]
    fn a_chain_and_a_diamond_pass_and_outside_dependencies_are_not_cycles() {
        let (a, b) = (job(), job());
        let c = job().depends_on([a.id(), b.id()]);
        let d = job().depends_on([c.id(), JobId::new()]);
        check(&[d, c, b, a]).unwrap();
    }

    #[test]
    fn a_cycle_is_named_and_what_hangs_off_it_is_not() {
        let (mut x, mut y) = (job(), job());
        let (xi, yi) = (x.id(), y.id());
        x = x.depends_on([yi]);
        y = y.depends_on([xi]);
        let behind = job().depends_on([xi]);
        let err = check(&[behind, x, y]).unwrap_err();
        let Error::DependencyCycle { mut ids } = err else {
            panic!("{err:?}")
        };
        ids.sort();
        let mut expected = vec![xi, yi];
        expected.sort();
        assert_eq!(ids, expected);
    }

    #[test]
    fn a_unique_key_on_a_dependent_is_refused() {
        let a = job();
        let b = job().depends_on([a.id()]).unique_key("k");
        assert!(matches!(
            check(&[a, b]),
            Err(Error::Invalid {
                what: "job dependencies",
                ..
            })
        ));
    }

    #[test]
    fn the_policy_reads_from_configuration() {
        let config: crate::QueueConfig =
            serde_json::from_value(serde_json::json!({ "on_dependency_failure": "run" })).unwrap();
        assert_eq!(config.on_dependency_failure, OnDependencyFailure::Run);
        assert_eq!(
            crate::QueueConfig::default().on_dependency_failure,
            OnDependencyFailure::Cancel
        );
    }
}
