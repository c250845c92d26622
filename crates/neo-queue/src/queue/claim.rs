//! Claim: due jobs taken with `FOR UPDATE SKIP LOCKED`, under a lease and a fresh fencing
//! token; in turns across tenants when the queue's claims are fair, and within each tenant's
//! cap of running jobs when it has one.

use super::Queue;
use super::workflow::ack_on;
use crate::{Error, Job, Receipt, Result};
use neo_core::TraceContext;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row, SqlStr};
use tracing::Instrument;

impl Queue {
    /// Claims up to `n` due jobs for `worker`, with a lease of `config.lease`; only `kinds`
    /// when given. Highest priority first; within a priority, oldest `run_at` first, or with
    /// [`fair_claims`](crate::QueueConfig::fair_claims) each tenant's oldest in turn, and
    /// never more running jobs of one tenant than
    /// [`max_running_per_tenant`](crate::QueueConfig::max_running_per_tenant).
    ///
    /// In a tenant-isolated queue, claims span tenants on the [system `Db`](Self::system_db)
    /// (row-level security), or take the acting tenant's jobs (schema per tenant).
    ///
    /// # Errors
    /// A database error; [`Error::Tenant`] in schema-per-tenant mode without a tenant.
    pub async fn claim(
        &self,
        worker: &str,
        n: usize,
        kinds: Option<&[String]>,
    ) -> Result<Vec<Job>> {
        Ok(self.ack_and_claim(&[], worker, n, kinds).await?.0)
    }

    /// Acknowledges `acks` (as [`ack_many`](Self::ack_many)) and claims up to `n` due jobs (as
    /// [`claim`](Self::claim)) in one transaction, so both wait for one commit. Returns the
    /// claimed jobs and the acks refused because their lease was lost.
    ///
    /// Nothing is acknowledged unless the claim commits too: when the call fails, or the
    /// process dies before the commit, the acknowledged jobs stay claimed under their lease
    /// and run again once it expires (at least once); an acknowledged job never runs again.
    /// Without acks this is exactly [`claim`](Self::claim).
    ///
    /// # Errors
    /// As [`claim`](Self::claim) and [`ack_many`](Self::ack_many).
    pub async fn ack_and_claim(
        &self,
        acks: &[Receipt],
        worker: &str,
        n: usize,
        kinds: Option<&[String]>,
    ) -> Result<(Vec<Job>, Vec<Receipt>)> {
        let scope = self.system_scope()?;
        let span = claim_span(worker, n, acks.len(), &scope);
        let (jobs, refused) = self
            .claim_in(&scope.sql, acks, worker, n, kinds)
            .instrument(span.clone())
            .await?;
        record_claimed(&span, &jobs);
        metrics::counter!(crate::metric_names::ACKED_TOTAL)
            .increment((acks.len() - refused.len()) as u64);
        Ok((jobs, refused))
    }

    /// Claims up to `n` due jobs of `tenants` only for `worker`, as [`claim`](Self::claim)
    /// does (lease, fencing token, priority first), the listed tenants taking turns within a
    /// priority whether or not the queue's claims are [fair](crate::QueueConfig::fair_claims);
    /// jobs without a tenant are not taken. It reads those tenants' jobs alone, however many
    /// other tenants' wait: a worker's express claim
    /// ([`WorkerConfig::express_claim`](crate::WorkerConfig::express_claim)) takes the jobs of
    /// the tenants whose enqueues just woke it this way, and a service can keep workers for
    /// some tenants.
    ///
    /// Neither the queue's cap on running jobs per tenant nor its global limit or rate limit
    /// applies: on a queue with any of them, use [`claim`](Self::claim).
    ///
    /// # Errors
    /// A database error; [`Error::Tenant`] in schema-per-tenant mode without a tenant;
    /// [`Error::Invalid`] on a queue with a limit that this claim would not keep.
    pub async fn claim_for_tenants(
        &self,
        worker: &str,
        n: usize,
        kinds: Option<&[String]>,
        tenants: &[String],
    ) -> Result<Vec<Job>> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        if self.claims_serialised() {
            return Err(Error::invalid(
                "claim_for_tenants",
                "the queue limits running jobs or starts, which only `claim` keeps",
            ));
        }
        let scope = self.system_scope()?;
        let span = claim_span(worker, n, 0, &scope);
        let (statement, last) = match (kinds, tenants) {
            (None, [one]) => (&scope.sql.claim_tenant, Listed::Tenant(one)),
            (Some(_), [one]) => (&scope.sql.claim_tenant_kinds, Listed::Tenant(one)),
            (None, _) => (&scope.sql.claim_listed, Listed::Tenants(tenants)),
            (Some(_), _) => (&scope.sql.claim_listed_kinds, Listed::Tenants(tenants)),
        };
        let n = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
        let rows = async {
            let mut conn = self.system_connection().await?;
            let rows = self
                .run_claim(&mut conn, statement, n, worker, kinds, None, last)
                .await?;
            conn.finish().await?;
            Ok::<_, Error>(rows)
        }
        .instrument(span.clone())
        .await?;
        let jobs = claimed(&rows)?;
        record_claimed(&span, &jobs);
        Ok(jobs)
    }

    /// Whether claims take turns across tenants: with [`fair_claims`](crate::QueueConfig::fair_claims),
    /// a cap of running jobs per tenant, or a rate limit per tenant.
    pub(crate) fn claims_take_turns(&self) -> bool {
        self.config.fair_claims
            || self.config.max_running_per_tenant.is_some()
            || self
                .config
                .rate_limit
                .is_some_and(|r| r.partition == crate::RatePartition::Tenant)
    }

    /// Whether claims take turns under a lock (a limit that counts running jobs or starts).
    pub(crate) fn claims_serialised(&self) -> bool {
        self.config.max_running_per_tenant.is_some()
            || self.config.max_running.is_some()
            || self.config.rate_limit.is_some()
    }

    async fn claim_in(
        &self,
        sql: &super::statements::Statements,
        acks: &[Receipt],
        worker: &str,
        n: usize,
        kinds: Option<&[String]>,
    ) -> Result<(Vec<Job>, Vec<Receipt>)> {
        let n = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
        // A global limit and a rate limit serialise claims as the per-tenant cap does
        // ([`super::limit`], [`super::rate`]).
        let serialised = self.claims_serialised();
        // While one party has due jobs, a fair queue without a per-tenant cap or rate limit
        // claims that party's jobs as the plain claim does and learns when a second party has
        // some ([`next_sole_party`]).
        let may_be_sole = self.config.fair_claims
            && self.config.max_running_per_tenant.is_none()
            && self.config.rate_limit.is_none();
        let sole = if may_be_sole {
            sql.sole_party.get()
        } else {
            None
        };
        let sole = sole.as_ref().map(Option::as_deref);
        let mut refused = Vec::new();
        let rows = if serialised {
            // The statement counts each tenant's running jobs in its snapshot, so two claims
            // at once could both see room for the same tenant. The lock makes them take
            // turns, and the claim's snapshot, taken after the lock, sees the jobs the
            // previous claim committed.
            let mut tx = self.system.begin().await?;
            if !acks.is_empty() {
                refused = ack_on(&mut tx, sql, acks, &self.config.channel).await?;
            }
            sqlx::query(sql.claim_lock.clone())
                .persistent(self.system.pooler().named_statements())
                .execute(&mut **tx)
                .await?;
            let rows = self
                .claim_rows(&mut tx, sql, sole, n, worker, kinds)
                .await?;
            tx.commit().await?;
            rows
        } else if acks.is_empty() {
            let mut conn = self.system_connection().await?;
            let rows = self
                .claim_rows(&mut conn, sql, sole, n, worker, kinds)
                .await?;
            conn.finish().await?;
            rows
        } else {
            // The acks first: their rows are this worker's running jobs, which the claim,
            // taking available ones, never touches.
            let mut tx = self.system.begin().await?;
            refused = ack_on(&mut tx, sql, acks, &self.config.channel).await?;
            let rows = self
                .claim_rows(&mut tx, sql, sole, n, worker, kinds)
                .await?;
            tx.commit().await?;
            rows
        };
        if may_be_sole {
            sql.sole_party.set(next_sole_party(&rows)?);
        }
        Ok((claimed(&rows)?, refused))
    }

    /// Claims on `conn`: the [sole claim](super::statements::Statements::sole_claim) of the
    /// party `sole` when given, and the queue's fair, capped or plain claim when not or when
    /// that party has no due job left (so that a claim finds whatever is due).
    async fn claim_rows(
        &self,
        conn: &mut PgConnection,
        sql: &super::statements::Statements,
        sole: Option<Option<&str>>,
        n: i64,
        worker: &str,
        kinds: Option<&[String]>,
    ) -> Result<Vec<PgRow>> {
        if let Some(party) = sole {
            let statement = sql.sole_claim(party, kinds.is_some());
            let last = party.map_or(Listed::Nothing, Listed::Tenant);
            let rows = self
                .run_claim(conn, statement, n, worker, kinds, None, last)
                .await?;
            if !rows.is_empty() {
                return Ok(rows);
            }
        }
        let fair = self.claims_take_turns();
        let (statement, last) = match (self.config.max_running_per_tenant, kinds) {
            (Some(_), None) => (&sql.claim_capped, Listed::Weights),
            (Some(_), Some(_)) => (&sql.claim_capped_kinds, Listed::Weights),
            (None, None) if fair => (&sql.claim_fair, Listed::Weights),
            (None, Some(_)) if fair => (&sql.claim_fair_kinds, Listed::Weights),
            (None, None) => (&sql.claim, Listed::Nothing),
            (None, Some(_)) => (&sql.claim_kinds, Listed::Nothing),
        };
        let cap = self.config.max_running_per_tenant.map(i64::from);
        self.run_claim(conn, statement, n, worker, kinds, cap, last)
            .await
    }

    /// Runs a claim statement: `$1` jobs, worker `$2`, lease `$3` ms, then the kinds and the
    /// cap, each when given, then what `last` binds: the tenant weights when the queue has
    /// them and the statement is a fair one, or the tenants of a listed claim.
    #[allow(
        clippy::too_many_arguments,
        reason = "the statement's parameters, in order"
    )]
    async fn run_claim(
        &self,
        conn: &mut PgConnection,
        statement: &SqlStr,
        n: i64,
        worker: &str,
        kinds: Option<&[String]>,
        cap: Option<i64>,
        last: Listed<'_>,
    ) -> Result<Vec<PgRow>> {
        let (generation, text) = self.claim_plans.text(statement);
        let mut query = sqlx::query(text)
            .persistent(self.system.pooler().named_statements())
            .bind(n)
            .bind(worker)
            .bind(self.lease_ms());
        if let Some(kinds) = kinds {
            query = query.bind(kinds);
        }
        if let Some(cap) = cap {
            query = query.bind(cap);
        }
        let weights = &self.config.tenant_weights;
        match last {
            Listed::Tenants(tenants) => query = query.bind(tenants),
            Listed::Tenant(tenant) => query = query.bind(tenant),
            Listed::Weights if !weights.is_empty() => {
                let tenants: Vec<&str> = weights.keys().map(String::as_str).collect();
                let weights: Vec<i32> = weights
                    .values()
                    .map(|w| i32::try_from(*w).unwrap_or(i32::MAX))
                    .collect();
                query = query.bind(tenants).bind(weights);
            }
            Listed::Weights | Listed::Nothing => {}
        }
        let rows = query.fetch_all(conn).await?;
        // The server's own time, not the wall time here, which in a busy worker includes the
        // wait to be polled (measured: with it, a drain's claims of 500 passed 50 ms and were
        // replanned again and again). A claim that found nothing says nothing.
        let took = rows
            .iter()
            .filter_map(|row| row.try_get::<f64, _>("server_ms").ok())
            .fold(0.0, f64::max);
        self.claim_plans.ran(generation, took);
        Ok(rows)
    }
}

/// What a claim statement takes after its kinds and cap ([`Queue::run_claim`]).
#[derive(Clone, Copy)]
enum Listed<'a> {
    /// Nothing (a claim that ignores tenants).
    Nothing,
    /// The queue's tenant weights, when it has any (a fair claim).
    Weights,
    /// The tenants whose jobs it takes (a listed claim).
    Tenants(&'a [String]),
    /// The one tenant whose jobs it takes (a listed claim of one tenant).
    Tenant(&'a str),
}

/// The span of a claim asking for `asked` jobs with `acks` acks, in `scope`.
fn claim_span(
    worker: &str,
    asked: usize,
    acks: usize,
    scope: &super::tenant_mode::Scoped,
) -> tracing::Span {
    let span = tracing::debug_span!(
        "neo_queue.claim",
        worker,
        asked,
        acks,
        claimed = tracing::field::Empty,
        tenant = tracing::field::Empty
    );
    if let Some(tenant) = scope.tenant {
        span.record("tenant", tracing::field::display(tenant));
    }
    span
}

/// Records on a claim's `span` how many `jobs` it took, and their tenant when they share one.
fn record_claimed(span: &tracing::Span, jobs: &[Job]) {
    span.record("claimed", jobs.len());
    if let Some(tenant) = super::enqueue::one_tenant(jobs.iter().map(|j| j.tenant.as_deref())) {
        span.record("tenant", tenant);
    }
}

/// The party whose jobs alone a fair queue's next claim takes ([`SoleParty`]), after a claim
/// that returned `rows`. A sole claim says how many parties had due jobs (its `parties`); a
/// fair claim that took one party's jobs only (one tenant, or none) shows that no other had
/// any it could take, since every party's first job comes before any party's second. A claim
/// that took nothing leaves the next one to the fair claim, which sees every party.
///
/// The price: a party whose first due jobs appear while the worker claims this way waits at
/// most one more claim for its turn (the claim that reports it; the worker's express claim
/// takes the jobs of a tenant whose enqueue woke it at once).
///
/// [`SoleParty`]: super::statements::SoleParty
fn next_sole_party(rows: &[PgRow]) -> Result<Option<Option<String>>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let sole = first.try_column("parties").is_ok();
    if sole && first.try_get::<i64, _>("parties")? >= 2 {
        return Ok(None);
    }
    let tenant = |row: &PgRow| row.try_get::<Option<String>, _>("tenant");
    let party = tenant(first)?;
    if !sole {
        for row in &rows[1..] {
            if tenant(row)? != party {
                return Ok(None);
            }
        }
    }
    Ok(Some(party))
}

/// The jobs a claim statement returned, counted as claimed.
fn claimed(rows: &[PgRow]) -> Result<Vec<Job>> {
    metrics::counter!(crate::metric_names::CLAIMED_TOTAL).increment(rows.len() as u64);
    rows.iter()
        .map(job)
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(Error::from)
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
