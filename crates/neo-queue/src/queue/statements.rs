//! The queue's SQL, built once per queue for its schema's `jobs` table.

use neo_db::TableName;
use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};
use std::sync::Arc;

/// Every statement the queue runs, with the table name in place. Each is shared text, so a
/// call clones a pointer rather than the statement.
#[derive(Debug)]
pub(super) struct Statements {
    pub(super) insert_skip: SqlStr,
    pub(super) insert_strict: SqlStr,
    pub(super) claim: SqlStr,
    pub(super) claim_kinds: SqlStr,
    /// [`fair_claim`] without and with the kinds filter, uncapped and capped.
    pub(super) claim_fair: SqlStr,
    pub(super) claim_fair_kinds: SqlStr,
    /// The fair claim over the tenants listed in its last parameter only, without weights,
    /// cap or rate limit: the worker's express claim for tenants that just enqueued
    /// ([`WorkerConfig::express_claim`](crate::WorkerConfig::express_claim)).
    pub(super) claim_listed: SqlStr,
    pub(super) claim_listed_kinds: SqlStr,
    /// [`claim_listed`](Self::claim_listed) for one tenant ([`tenant_claim`]).
    pub(super) claim_tenant: SqlStr,
    pub(super) claim_tenant_kinds: SqlStr,
    pub(super) claim_capped: SqlStr,
    pub(super) claim_capped_kinds: SqlStr,
    /// [`sole_claim`] of the jobs without a tenant and of one tenant's (the last parameter),
    /// each without and with the kinds filter, within the global limit: a fair queue's claim
    /// while one party has due jobs (not with a per-tenant cap or rate limit).
    claim_sole_untenanted: SqlStr,
    claim_sole_untenanted_kinds: SqlStr,
    claim_sole_tenant: SqlStr,
    claim_sole_tenant_kinds: SqlStr,
    /// The party whose due jobs alone this table's last fair claim saw.
    pub(super) sole_party: SoleParty,
    /// Serialises capped claims: `pg_advisory_xact_lock` on a key of this table.
    pub(super) claim_lock: SqlStr,
    pub(super) heartbeat: SqlStr,
    pub(super) ack: SqlStr,
    pub(super) nack: SqlStr,
    pub(super) release: SqlStr,
    pub(super) rescue: SqlStr,
    pub(super) list_dead: SqlStr,
    pub(super) requeue: SqlStr,
    pub(super) get: SqlStr,
    pub(super) depth: SqlStr,
    /// Pause and resume ([`super::pause`]).
    pub(super) pause: super::pause::PauseSql,
    /// Cancellation ([`super::cancel`]).
    pub(super) cancel: super::cancel::CancelSql,
    /// Moving pending jobs ([`super::reschedule`]).
    pub(super) reschedule: SqlStr,
    /// Removing pending jobs whose work got done elsewhere ([`super::Queue::withdraw`]).
    pub(super) withdraw: SqlStr,
    /// Progress and output ([`super::progress`]).
    pub(super) progress: super::progress::ProgressSql,
    /// Retention ([`super::retention`]).
    pub(super) retention: super::retention::RetentionSql,
    /// Periodic jobs ([`super::periodic`]).
    pub(super) periodic: super::periodic::PeriodicSql,
    /// Workflows: jobs that depend on others ([`super::workflow`]).
    pub(super) workflow: super::workflow::WorkflowSql,
}

/// What every claim sets on the jobs it takes (`j`): running, one attempt more, leased to
/// worker `$2` for `$3` ms, under a fresh fencing token.
const TAKE: &str = "state = 'running', attempts = j.attempts + 1, lease_owner = $2, \
     lease_expires_at = now() + $3 * interval '1 millisecond', fence = j.fence + 1";
const JOB_COLUMNS: &str = "j.id, j.kind, j.payload, j.priority, j.attempts, j.max_attempts, j.tenant, j.last_error, j.created_at, j.fence, j.trace_context";
/// A claim's own time on the server so far, returned with each claimed job: the worker's
/// measure of a claim (see [`QueueConfig::replan_claims_after`](crate::QueueConfig::replan_claims_after)).
pub(super) const SERVER_MS: &str = neo_db::SERVER_MS;

impl Statements {
    /// The statements over `t`; `per_tenant_keys` for the table under row-level security,
    /// whose unique keys are unique per tenant (`jobs_unique_key` on `(tenant_id, unique_key)`).
    /// `weighted` when the queue has tenant weights
    /// ([`tenant_weights`](crate::QueueConfig::tenant_weights)): its fair claims take the
    /// weights as two more parameters, after the kinds and the cap.
    ///
    /// `config.max_running` bounds every claim by the queue's global concurrency limit
    /// ([`super::limit`]); `config.rate_limit` bounds each partition's starts in a window
    /// ([`super::rate`]).
    pub(super) fn new(t: &TableName, per_tenant_keys: bool, config: &crate::QueueConfig) -> Self {
        let weighted = !config.tenant_weights.is_empty();
        let max_running = config.max_running;
        let rate = config
            .rate_limit
            .as_ref()
            .map(|limit| super::rate::Rate::new(t, limit));
        let rate = rate.as_ref();
        let lim = |claim: String| super::limit::limited(claim, t, max_running);
        // Workers are woken (one NOTIFY, sent at commit) only when a job is due now: a job
        // scheduled for later is found by their poll. The condition is a subquery without
        // correlation, evaluated once per statement.
        let insert = |on_conflict: &str| insert_sql(t, on_conflict, false);
        let paused = super::pause::claim_filter(t);
        let claim = |filter: &str| {
            if let Some(rate) = rate {
                return rated_claim(t, filter, rate);
            }
            format!(
                "WITH next AS (SELECT id FROM {t} WHERE state = 'available' AND run_at <= now() {paused} {filter} \
                 ORDER BY priority DESC, run_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
                 UPDATE {t} AS j SET {TAKE} FROM next WHERE j.id = next.id RETURNING {JOB_COLUMNS}, {SERVER_MS}"
            )
        };
        let owned = owned_receipt("");
        // A job others depend on is left to the workflow's ack and nack ([`super::workflow`]),
        // which also move its dependents on; every other job costs one null test.
        let alone = owned_receipt(" AND j.has_dependents IS NULL");
        Statements {
            insert_skip: sql(insert(&skip_duplicates(per_tenant_keys))),
            insert_strict: sql(insert("")),
            claim: sql(lim(claim(""))),
            claim_kinds: sql(lim(claim("AND kind = ANY($4)"))),
            claim_fair: sql(lim(fair_claim(
                t,
                None,
                None,
                weighted.then_some(4),
                rate,
                None,
            ))),
            claim_fair_kinds: sql(lim(fair_claim(
                t,
                Some(4),
                None,
                weighted.then_some(5),
                rate,
                None,
            ))),
            claim_capped: sql(lim(fair_claim(
                t,
                None,
                Some(4),
                weighted.then_some(5),
                rate,
                None,
            ))),
            claim_capped_kinds: sql(lim(fair_claim(
                t,
                Some(4),
                Some(5),
                weighted.then_some(6),
                rate,
                None,
            ))),
            claim_sole_untenanted: sql(lim(sole_claim(t, "", "j.tenant IS NULL"))),
            claim_sole_untenanted_kinds: sql(lim(sole_claim(
                t,
                "AND j.kind = ANY($4)",
                "j.tenant IS NULL",
            ))),
            claim_sole_tenant: sql(lim(sole_claim(t, "", "j.tenant = $4"))),
            claim_sole_tenant_kinds: sql(lim(sole_claim(
                t,
                "AND j.kind = ANY($4)",
                "j.tenant = $5",
            ))),
            sole_party: SoleParty::default(),
            claim_listed: sql(fair_claim(t, None, None, None, None, Some(4))),
            claim_listed_kinds: sql(fair_claim(t, Some(4), None, None, None, Some(5))),
            claim_tenant: sql(tenant_claim(t, "AND j.tenant = $4")),
            claim_tenant_kinds: sql(tenant_claim(t, "AND j.kind = ANY($4) AND j.tenant = $5")),
            claim_lock: sql(format!(
                "SELECT pg_advisory_xact_lock(hashtextextended('neo_queue claim ' || '{t}', 0))"
            )),
            heartbeat: sql(format!(
                "UPDATE {t} AS j SET lease_expires_at = now() + $3 * interval '1 millisecond' \
                 WHERE {owned} RETURNING j.id"
            )),
            ack: sql(ack_sql(t, &alone)),
            nack: sql(nack_sql(t, &alone)),
            release: sql(format!(
                "UPDATE {t} AS j SET state = 'available', attempts = j.attempts - 1, run_at = now(), \
                 lease_owner = NULL, lease_expires_at = NULL \
                 WHERE {owned} RETURNING j.id"
            )),
            // `orphaned`: a job that died with dependents, which the rescue moves on
            // ([`super::workflow`]).
            rescue: sql(format!(
                "UPDATE {t} SET state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'available' END, \
                 dead_at = CASE WHEN attempts >= max_attempts THEN now() END, \
                 lease_owner = NULL, lease_expires_at = NULL, \
                 last_error = 'lease expired: the worker stopped without finishing the job' \
                 WHERE state = 'running' AND lease_owner IS NOT NULL AND lease_expires_at <= now() \
                 RETURNING id, (state = 'dead' AND has_dependents IS TRUE) AS orphaned"
            )),
            list_dead: sql(format!(
                "SELECT id, kind, payload, state, attempts, max_attempts, last_error, tenant, dead_at \
                 FROM {t} WHERE state = 'dead' ORDER BY dead_at, id LIMIT $1"
            )),
            requeue: sql(format!(
                "WITH back AS (UPDATE {t} AS j SET state = 'available', attempts = 0, run_at = now(), dead_at = NULL \
                 WHERE j.id = ANY($1) AND {STILL_DEAD} RETURNING j.id) \
                 SELECT back.id FROM back, (SELECT pg_notify($2, '')) AS woken"
            )),
            get: sql(format!(
                "SELECT id, kind, payload, state, attempts, max_attempts, last_error, tenant, dead_at FROM {t} WHERE id = $1"
            )),
            depth: sql(format!("SELECT state, count(*) FROM {t} GROUP BY state")),
            pause: super::pause::PauseSql::new(t),
            cancel: super::cancel::CancelSql::new(t),
            reschedule: super::reschedule::reschedule_sql(t),
            withdraw: super::reschedule::withdraw_sql(t),
            progress: super::progress::ProgressSql::new(t),
            retention: super::retention::RetentionSql::new(t),
            periodic: super::periodic::PeriodicSql::new(t, per_tenant_keys),
            workflow: super::workflow::WorkflowSql::new(t, per_tenant_keys),
        }
    }
}

impl Statements {
    /// The [`sole_claim`] of `party` (`None`: the jobs without a tenant), with the kinds
    /// filter when `kinds`; the tenant is its last parameter.
    pub(super) fn sole_claim(&self, party: Option<&str>, kinds: bool) -> &SqlStr {
        match (party, kinds) {
            (None, false) => &self.claim_sole_untenanted,
            (None, true) => &self.claim_sole_untenanted_kinds,
            (Some(_), false) => &self.claim_sole_tenant,
            (Some(_), true) => &self.claim_sole_tenant_kinds,
        }
    }
}

/// The one party (`Some(None)`: the jobs without a tenant; `Some(Some(tenant))`) whose due
/// jobs a table's last fair claim saw, whose jobs alone its next claim takes; `None` when it
/// saw several or none ([`super::claim`]). A hint shared by the queue's workers: two claims
/// at once may both act on the older answer.
#[derive(Debug, Default)]
pub(super) struct SoleParty(std::sync::Mutex<Option<Option<String>>>);

impl SoleParty {
    pub(super) fn get(&self) -> Option<Option<String>> {
        neo_core::sync::lock(&self.0).clone()
    }

    pub(super) fn set(&self, party: Option<Option<String>>) {
        *neo_core::sync::lock(&self.0) = party;
    }
}

/// `ON CONFLICT` that skips a job whose unique key is pending or running.
pub(super) fn skip_duplicates(per_tenant_keys: bool) -> String {
    let key = if per_tenant_keys {
        "(tenant_id, unique_key)"
    } else {
        "(unique_key)"
    };
    format!(
        "ON CONFLICT {key} WHERE unique_key IS NOT NULL AND state IN ('available', 'running') DO NOTHING"
    )
}

/// The batched insert, `on_conflict` after it; `workflow` adds the columns of jobs that
/// depend on others as `$11` (state), `$12` (the ids each depends on, comma-separated),
/// `$13` (the policy) and `$14` (whether others in the batch depend on it). The last
/// parameter (`$11`, or `$15` with `workflow`) is the tenant of every job when `$8` is empty
/// ([`Columns`](super::enqueue::Columns)).
///
/// Workers are woken (one NOTIFY, sent at commit) only when a job is due now: a job
/// scheduled for later is found by their poll. The condition is a subquery without
/// correlation, evaluated once per statement.
pub(super) fn insert_sql(t: &TableName, on_conflict: &str, workflow: bool) -> String {
    let (cols, vals, arrays, names, ret, due, tenant) = if workflow {
        (
            ", state, depends_on, on_dependency_failure, has_dependents",
            ", u.state, string_to_array(u.depends_on, ',')::uuid[], u.on_dependency_failure, u.has_dependents",
            ", $11::text[], $12::text[], $13::text[], $14::bool[]",
            ", state, depends_on, on_dependency_failure, has_dependents",
            ", state",
            " AND state = 'available'",
            15,
        )
    } else {
        ("", "", "", "", "", "", 11)
    };
    format!(
        "WITH ins AS (INSERT INTO {t} (id, kind, payload, priority, run_at, max_attempts, unique_key, tenant, trace_context{cols}) \
         SELECT u.id, u.kind, u.payload, u.priority, coalesce(u.run_at, now()), u.max_attempts, u.unique_key, coalesce(u.tenant, ${tenant}::text), u.trace_context{vals} \
         FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::int2[], $5::timestamptz[], $6::int4[], $7::text[], $8::text[], $10::jsonb[]{arrays}) \
         AS u(id, kind, payload, priority, run_at, max_attempts, unique_key, tenant, trace_context{names}) {on_conflict} RETURNING id, run_at{ret}) \
         SELECT ins.id FROM ins \
         WHERE (SELECT count(pg_notify($9, {notice})) FROM (SELECT FROM ins WHERE run_at <= now(){due} LIMIT 1) AS due) >= 0",
        notice = tenant_notice(&format!("${tenant}::text")),
    )
}

/// The payload that wakes workers for jobs of one tenant, `tenant` (an SQL text expression;
/// NULL for jobs of several tenants or none): the tenant after [`TENANT_NOTICE`], so that a
/// worker can claim that tenant's next jobs at once ([`WorkerConfig::express_claim`]); empty
/// (any jobs) for NULL or a tenant too long for a notification's payload.
///
/// [`WorkerConfig::express_claim`]: crate::WorkerConfig::express_claim
fn tenant_notice(tenant: &str) -> String {
    format!(
        "CASE WHEN octet_length({tenant}) <= {MAX_NOTICE_TENANT} THEN '{TENANT_NOTICE}' || {tenant} ELSE '' END"
    )
}

/// What a notification's payload starts with when it names the one tenant whose jobs woke
/// the workers ([`tenant_notice`]).
pub(crate) const TENANT_NOTICE: &str = "tenant:";

/// The longest tenant (in bytes) a notification names; PostgreSQL refuses payloads of 8,000
/// bytes or more, and a worker remembers the tenants it was told of until its express claim.
const MAX_NOTICE_TENANT: usize = 256;

/// The batched ack of `(id, fence)` pairs still owned: `owned` is [`owned_receipt`] with the
/// jobs it takes.
pub(super) fn ack_sql(t: &TableName, owned: &str) -> String {
    format!("DELETE FROM {t} AS j WHERE {owned} RETURNING j.id")
}

/// The batched nack of `(id, fence)` pairs still owned (`owned`, as for [`ack_sql`]): a
/// snooze hands the claim back without spending the attempt; an explicit retry delay
/// (Retry-After, a handler's own schedule) replaces the backoff.
pub(super) fn nack_sql(t: &TableName, owned: &str) -> String {
    let snooze = for_job(9, "bool");
    let dies = format!(
        "NOT {snooze} AND ({} OR j.attempts >= j.max_attempts)",
        for_job(7, "bool")
    );
    let retry_in_ms = for_job(8, "float8");
    let error = for_job(6, "text");
    format!(
        "UPDATE {t} AS j SET \
         attempts = CASE WHEN {snooze} THEN j.attempts - 1 ELSE j.attempts END, \
         state = CASE WHEN {dies} THEN 'dead' ELSE 'available' END, \
         dead_at = CASE WHEN {dies} THEN now() END, \
         run_at = CASE WHEN {dies} THEN j.run_at \
           WHEN {retry_in_ms} IS NOT NULL THEN now() + {retry_in_ms} * interval '1 millisecond' \
           ELSE now() + least($5::float8, $3::float8 * power($4::float8, j.attempts - 1)) \
                * (0.5 + random()) * interval '1 millisecond' END, \
         lease_owner = NULL, lease_expires_at = NULL, \
         last_error = CASE WHEN {snooze} THEN j.last_error ELSE {error} END \
         WHERE {owned} RETURNING j.id, j.state"
    )
}

/// The end both claims share: `next` locks the candidates `ordered` lists (`id`, `tid`,
/// `claim_order`) in that order, skipping locked or taken ones, at most `$1`; `claimed` gives
/// them to worker `$2` under a lease of `$3` ms with a fresh fence, then `after` (more CTEs,
/// e.g. the rate limit's record of starts); the statement returns them in claim order.
///
/// `tid` is the candidate's `ctid`, read in the same statement: the lock and the update find
/// the row by it (a TID scan, one heap page) instead of descending the primary key twice per
/// job (a fair claim of 500 at a 1,000,000-job backlog: 7.8 ms by id, 6.2 ms by `ctid`,
/// means of 10; 6.9 and 6.5 ms, medians of 30, in a second run; docs/PERFORMANCE.md). A row
/// another claim updated meanwhile is no longer at that `ctid` in a version the lock accepts
/// (the lock rechecks the newest version, and its `ctid` differs), so it is skipped as a
/// locked one is; the row cannot move while this statement holds its lock, and the version
/// the statement read cannot be pruned while the statement's snapshot sees it.
fn take_in_order(t: &TableName, ordered: &str, after: &str) -> String {
    let lock = lock_candidate(t);
    format!(
        "next AS ( \
           SELECT l.id, c.tid, c.claim_order FROM ( \
             {ordered}) AS c \
           CROSS JOIN LATERAL ({lock}) AS l \
           LIMIT $1), \
         claimed AS ( \
           UPDATE {t} AS j SET {TAKE} FROM next WHERE j.ctid = next.tid RETURNING {JOB_COLUMNS}, next.claim_order){after} \
         SELECT *, {SERVER_MS} FROM claimed ORDER BY claim_order"
    )
}

/// The state test of the statements that take jobs by id or by `ctid` (`j`, the jobs table):
/// a job not yet claimed. Written so that it does not imply the predicate of the claim indexes
/// (`state = 'available'`; `state` is NOT NULL, so `coalesce` changes nothing else), which
/// leaves the primary key as the only index the statement can use. Written `j.state =
/// 'available'`, a plan made while the statistics said no job was available (the table
/// analysed while its jobs were all running, or empty, between two bursts) read the ids out
/// of a claim index, where `id` is the last column or absent, scanning every available job
/// per call: 3.0 to 5.7 ms per withdrawn job in a webhook drain whose first attempts were made
/// inline, against 0.03 ms by the primary key; 121 ms instead of 8 ms for a claim of 550 at
/// 10,000 pending when the claim locked its candidates by id (docs/PERFORMANCE.md).
pub(super) const STILL_AVAILABLE: &str = "coalesce(j.state, '') = 'available'";

/// [`STILL_AVAILABLE`] for a dead job: not implying the dead-letter indexes' predicate
/// (`state = 'dead'`), for the statements that take dead jobs by id.
pub(super) const STILL_DEAD: &str = "coalesce(j.state, '') = 'dead'";

/// Locks the candidate `c` by its `ctid` if it is still available (`FOR UPDATE SKIP LOCKED`):
/// with the state tested as [`STILL_AVAILABLE`], a TID scan is the only cheap way to answer it.
fn lock_candidate(t: &TableName) -> String {
    format!(
        "SELECT j.id FROM {t} AS j WHERE j.ctid = c.tid AND {STILL_AVAILABLE} \
         FOR UPDATE SKIP LOCKED"
    )
}

/// [`STILL_AVAILABLE`] for a claimed job, for the statements that take running jobs by id:
/// not implying the lease index's predicate (`state = 'running'`).
const STILL_RUNNING: &str = "coalesce(j.state, '') = 'running'";

/// The jobs `j` given by id in `$1`, read by `id = ANY(..)` over the ids as a subquery's
/// array: its length is unknown to the planner, which then reads the primary key. With the
/// ids in sight (a literal array, as a statement planned per call gets) and statistics that
/// called a table of 80,000 jobs empty, it chose a sequential scan: 12.5 ms against 4.5 ms
/// for 1,000 ids (docs/PERFORMANCE.md).
pub(super) const BY_IDS: &str = "j.id = ANY(ARRAY(SELECT unnest($1::uuid[])))";

/// The element of the array `$param` (of `ty`) that goes with the job `j` in a statement over
/// jobs given by id (`$1`, element for element with the other arrays): a binary search of
/// the ids, which are sent in id order (a `JobId` orders as its UUID's bytes, as
/// PostgreSQL's `uuid` does). Of a job's several elements it finds the last. Nothing is
/// joined, so the planner cannot rescan the arrays once per job.
pub(super) fn for_job(param: u8, ty: &str) -> String {
    format!("(${param}::{ty}[])[width_bucket(j.id, $1::uuid[])]")
}

/// The jobs `j` whose claims the receipts (`$1` ids, `$2` fences) still hold:
/// running, lease not expired, the receipt's fence; `which` narrows them (e.g.
/// `" AND j.has_dependents IS NULL"`).
///
/// PostgreSQL has no plan hints: the shape keeps the plan. The jobs are read [`BY_IDS`] and
/// each finds its receipt's fence [`for_job`], so no statistics can make the planner rescan
/// the receipts once per job, as a join with `UNNEST($1, $2)` let it do when the table was
/// last analysed nearly empty (between two bursts): 95 to 220 ms per ack of 1,000 instead of
/// 2 ms, and the heartbeat hashed a scan of the whole table (docs/PERFORMANCE.md). Every test
/// is a filter of the job's own row, so a job another statement changed meanwhile is tested
/// again as it is now (a claim taken again has a new fence, and is refused; a heartbeat
/// changes only the lease). Of a job's several receipts the one with the highest fence is
/// tested (they are sent in `(id, fence)` order).
pub(super) fn owned_receipt(which: &str) -> String {
    format!(
        "{BY_IDS} AND j.fence = {} AND {STILL_RUNNING} AND j.lease_expires_at > now(){which}",
        for_job(2, "int8")
    )
}

/// The claim that takes turns across tenants: `$1` jobs at most for worker `$2` under a lease
/// of `$3` ms, only kinds `$kinds` when given, at most `$cap` running jobs per tenant when
/// given, and with `$weights` (tenants) and the next parameter (their weights) when given: a
/// tenant of weight `w` has `w` jobs in each turn, every other tenant one.
///
/// 1. `tenants`: every tenant with available jobs, one index descent each (a loose scan of
///    `jobs_claim_by_tenant`: the tenant before the last one found). The scan runs backwards
///    so that it lands on each tenant's newest entry: the oldest are where claims leave dead
///    entries until vacuum, and a forward scan walked all of them (at a 1,000,000-job backlog
///    that doubled the claim's cost once a few hundred thousand jobs had been claimed).
///    With `listed`, the tenants in that parameter instead, and no jobs without a tenant
///    ([`Queue::claim_for_tenants`](super::Queue::claim_for_tenants)).
/// 2. `candidates`: each tenant's next `$1` due jobs (highest priority, then oldest), and as
///    many of the jobs without a tenant, which take their turns as one more tenant. `turn` is
///    a job's place among its tenant's jobs of its priority, counted from 0; with a cap,
///    `load` is the running jobs its tenant would have once it runs, and jobs past the cap are
///    left out. Both are counted over each tenant's scan as the index returns it, so no sort
///    precedes them: `turn` is the job's place in the scan less the place of its priority's
///    first job (`row_number() - rank()` over the index's order). Numbering over all
///    candidates partitioned by tenant and priority sorted them twice more (a claim of 500
///    at a 1,000,000-job backlog: 5.9 ms before, 5.45 ms after, pgbench means of 300).
/// 3. `next`: the candidates in order of priority, then turn, then age (so the first job of
///    every tenant comes before the second of any), each locked with `SKIP LOCKED` until `$1`
///    are held; a job another claim took meanwhile is skipped, as in the plain claim.
///
/// The claim's update, lease and fencing token are the plain claim's; the jobs come back in
/// the order they were chosen.
///
/// With a rate limit ([`super::rate`]), `rate_used` counts each partition's starts in the
/// window, the scans leave out the partitions at their limit, each candidate carries its
/// partition (`part`) and the starts it would make (`spent`), candidates past the limit are
/// left out like those past the cap, and the claimed jobs' starts are counted.
fn fair_claim(
    t: &TableName,
    kinds: Option<u8>,
    cap: Option<u8>,
    weights: Option<u8>,
    rate: Option<&super::rate::Rate>,
    listed: Option<u8>,
) -> String {
    let kinds = kinds.map_or(String::new(), |p| format!("AND j.kind = ANY(${p})"));
    let (running_cte, running_join, load, null_load, capped) = match cap {
        None => (String::new(), "", "", "", String::new()),
        Some(p) => (
            format!(
                "running AS MATERIALIZED (SELECT tenant, count(*) AS n FROM {t} \
                 WHERE state = 'running' AND lease_owner IS NOT NULL AND tenant IS NOT NULL GROUP BY tenant), "
            ),
            "LEFT JOIN running r ON r.tenant = t.tenant",
            ", row_number() OVER turns + coalesce(r.n, 0) AS load",
            ", NULL::int8 AS load",
            format!("WHERE tenant IS NULL OR load <= ${p}"),
        ),
    };
    let (rate_cte, part, spent, rate_within, rate_record) = match rate {
        None => (
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ),
        Some(rate) => (
            rate.used_cte(),
            format!(", {} AS part", rate.key("j")),
            format!(", {}", rate.spent()),
            rate.within(),
            rate.record(),
        ),
    };
    // Partitions at their limit are left out of the scans: per tenant before a tenant's jobs
    // are read (the tenant, and the null tenant's constant key, are known per scan), per
    // kind or queue in the scans' filter.
    let (rate_open, null_open, tenant_open) = match rate {
        None => (String::new(), String::new(), String::new()),
        Some(rate) if rate.per_tenant() => (
            String::new(),
            format!(" {}", rate.open_key("''::text")),
            format!(" {}", rate.open_key("t.tenant")),
        ),
        Some(rate) => (rate.open("j"), String::new(), String::new()),
    };
    let capped = match (capped.strip_prefix("WHERE "), rate_within.is_empty()) {
        (_, true) => capped,
        (None, false) => format!("WHERE {rate_within}"),
        (Some(cap), false) => format!("WHERE ({cap}) AND {rate_within}"),
    };
    let (weights_cte, per_turn) = match weights {
        None => (String::new(), ""),
        Some(p) => (
            format!(
                "weights AS MATERIALIZED (SELECT * FROM UNNEST(${p}::text[], ${}::int4[]) AS w(tenant, weight)), ",
                p + 1
            ),
            " / coalesce((SELECT w.weight FROM weights AS w WHERE w.tenant = j.tenant), 1)",
        ),
    };
    let paused = super::pause::claim_filter(t);
    let due = if rate.is_some() {
        format!("j.state = 'available' AND j.run_at <= now() {paused} {kinds} {rate_open}")
    } else {
        format!("j.state = 'available' AND j.run_at <= now() {paused} {kinds}")
    };
    let scan =
        format!("SELECT j.id, j.ctid AS tid, j.tenant, j.priority, j.run_at{part} FROM {t} AS j");
    // A tenant's scan reads `jobs_claim_by_tenant` in this order (its first column is the
    // scan's one tenant), and numbers the jobs in it; the scan of the jobs without a tenant
    // reads `jobs_claim_untenanted` (queue migration 41), whose order it is. Read out of
    // `jobs_claim_by_tenant`, led by their null tenant, the planner sorted every due job
    // without a tenant on each claim instead (14.5 ms against 11.6 ms for a claim of 1,000
    // at 10,000 jobs, generic plans).
    let order = "j.priority DESC, j.run_at, j.id";
    let numbered = |order: &str, first_of_priority: &str, load: &str, from: String| {
        format!(
            "SELECT j.*, (row_number() OVER turns - rank() OVER (ORDER BY {first_of_priority})){per_turn} AS turn{load} \
             FROM ({from} ORDER BY {order} LIMIT $1) AS j WINDOW turns AS (ORDER BY {order})"
        )
    };
    let tenant_jobs = numbered(
        order,
        "j.priority DESC",
        load,
        format!("{scan} WHERE {due} AND j.tenant = t.tenant"),
    );
    let null_jobs = numbered(
        order,
        "j.priority DESC",
        null_load,
        format!("{scan} WHERE {due}{null_open} AND j.tenant IS NULL"),
    );
    // Listed tenants take turns among themselves; the jobs without a tenant are not theirs.
    let null_jobs = if listed.is_some() {
        String::new()
    } else {
        format!("UNION ALL ({null_jobs})")
    };
    let candidates = format!(
        "SELECT c.* FROM tenants AS t {running_join} CROSS JOIN LATERAL ({tenant_jobs}) AS c \
         WHERE t.tenant IS NOT NULL{tenant_open} {null_jobs}"
    );
    let candidates = if spent.is_empty() {
        candidates
    } else {
        format!("SELECT c.*{spent} FROM ({candidates}) AS c")
    };
    // Ordered by the window's own keys, so its sort is the statement's only one.
    let take = take_in_order(
        t,
        &format!(
            "SELECT id, tid, row_number() OVER (ORDER BY priority DESC, turn, run_at, id) AS claim_order \
             FROM candidates {capped} ORDER BY priority DESC, turn, run_at, id"
        ),
        &rate_record,
    );
    let tenants = match listed {
        Some(p) => format!("SELECT DISTINCT unnest(${p}::text[])"),
        None => tenants_with_jobs(t),
    };
    format!(
        "WITH RECURSIVE tenants(tenant) AS ({tenants}), \
         {running_cte}{weights_cte}{rate_cte}\
         candidates AS ({candidates}), \
         {take}"
    )
}

/// The body of the recursive CTE `tenants(tenant)`: every tenant with available jobs, one
/// index descent each (a loose scan of `jobs_claim_by_tenant`, backwards: see
/// [`fair_claim`]), then a NULL that ends the recursion.
fn tenants_with_jobs(t: &TableName) -> String {
    format!(
        "(SELECT tenant FROM {t} WHERE state = 'available' AND tenant IS NOT NULL \
          ORDER BY tenant DESC LIMIT 1) \
         UNION ALL \
         SELECT (SELECT j.tenant FROM {t} AS j WHERE j.state = 'available' AND j.tenant < s.tenant \
                 ORDER BY j.tenant DESC LIMIT 1) \
         FROM tenants AS s WHERE s.tenant IS NOT NULL"
    )
}

/// The claim of a fair queue while one party (one tenant, or the jobs without a tenant) has
/// due jobs: taking turns changes nothing then, so this is one scan of that party's due jobs
/// (`party`, a condition on `j`; `kinds`, the kinds filter or nothing) in claim order, read
/// from its own index (`jobs_claim_by_tenant` or `jobs_claim_untenanted`, whose order the
/// scan's is, as in the fair claim: through `jobs_claim`, with statistics taken while the
/// table was nearly empty, the planner sorted every due job on each claim), without the fair
/// claim's per-party scans, windows, sort and per-candidate locks. Each claimed job carries
/// `parties`: how many parties had due jobs in the statement's snapshot (at most 3), so that
/// the worker's next claim takes turns again once a second party has some
/// ([`super::claim`]).
///
/// The jobs are locked as the scan reads them and updated by the `ctid` the lock returned,
/// the newest version's (the lock keeps the row where it is), as an array: a TID scan,
/// where a join with the locked rows hashed a scan of the whole table (22 ms against 16 ms
/// for a claim of 1,000 at 10,000 jobs, `EXPLAIN ANALYZE`). They come back in claim order.
///
/// Each party's due jobs are looked for from its newest entry backwards (lowest priority,
/// latest `run_at`), away from the oldest entries, where claims leave dead ones until
/// vacuum; a scalar subquery, since PostgreSQL drops the order of an `EXISTS`.
fn sole_claim(t: &TableName, kinds: &str, party: &str) -> String {
    let paused = super::pause::claim_filter(t);
    let due = format!("j.state = 'available' AND j.run_at <= now() {paused} {kinds}");
    let newest = "ORDER BY j.priority, j.run_at DESC, j.id DESC LIMIT 1";
    format!(
        "WITH RECURSIVE tenants(tenant) AS ({tenants}), \
         parties AS (SELECT count(*) AS n FROM ( \
           (SELECT 1 FROM tenants AS s WHERE s.tenant IS NOT NULL \
              AND (SELECT 1 FROM {t} AS j WHERE {due} AND j.tenant = s.tenant {newest}) IS NOT NULL LIMIT 2) \
           UNION ALL \
           SELECT 1 WHERE (SELECT 1 FROM {t} AS j WHERE {due} AND j.tenant IS NULL {newest}) IS NOT NULL) AS p), \
         next AS (SELECT j.ctid AS tid FROM {t} AS j WHERE {due} AND {party} \
           ORDER BY j.priority DESC, j.run_at, j.id LIMIT $1 FOR UPDATE SKIP LOCKED), \
         claimed AS (UPDATE {t} AS j SET {TAKE} WHERE j.ctid = ANY(ARRAY(SELECT tid FROM next)) \
           RETURNING {JOB_COLUMNS}, j.run_at) \
         SELECT *, {SERVER_MS}, (SELECT n FROM parties) AS parties FROM claimed \
         ORDER BY priority DESC, run_at, id",
        tenants = tenants_with_jobs(t),
    )
}

/// The claim of one tenant's next jobs (`filter` names the tenant, and the kinds when
/// given): the plain claim's shape over that tenant's part of `jobs_claim_by_tenant`, in
/// its order, returned in that order. Planned in a fraction of the listed fair claim's time
/// (0.37 ms per call, three times its execution, when an express claim took one job).
fn tenant_claim(t: &TableName, filter: &str) -> String {
    let paused = super::pause::claim_filter(t);
    format!(
        "WITH next AS (SELECT j.id FROM {t} AS j WHERE j.state = 'available' AND j.run_at <= now() {paused} {filter} \
         ORDER BY j.priority DESC, j.run_at, j.id LIMIT $1 FOR UPDATE SKIP LOCKED), \
         claimed AS (UPDATE {t} AS j SET {TAKE} FROM next WHERE j.id = next.id RETURNING {JOB_COLUMNS}, j.run_at) \
         SELECT *, {SERVER_MS} FROM claimed ORDER BY priority DESC, run_at, id"
    )
}

/// The plain claim (highest priority, then oldest) under a rate limit ([`super::rate`]),
/// only the jobs that match `filter` (unqualified): the first `$1` due jobs of partitions
/// with room left, of which each partition keeps what it has left, each locked with
/// `SKIP LOCKED`, and their starts counted. A partition nearly at its limit can fill a
/// claim's candidates with jobs it has no room for; the claim then takes fewer jobs, and the
/// next one leaves that partition out.
fn rated_claim(t: &TableName, filter: &str, rate: &super::rate::Rate) -> String {
    let paused = super::pause::claim_filter(t);
    let (used, open, key, spent, within, record) = (
        rate.used_cte(),
        rate.open("j"),
        rate.key("j"),
        rate.spent(),
        rate.within(),
        rate.record(),
    );
    let take = take_in_order(
        t,
        &format!(
            "SELECT id, tid, row_number() OVER (ORDER BY priority DESC, run_at, id) AS claim_order \
             FROM (SELECT c.*, {spent} FROM candidates AS c) AS c WHERE {within} ORDER BY claim_order"
        ),
        &record,
    );
    format!(
        "WITH {used}candidates AS (SELECT j.id, j.ctid AS tid, j.priority, j.run_at, {key} AS part FROM {t} AS j \
         WHERE j.state = 'available' AND j.run_at <= now() {paused} {filter} {open} \
         ORDER BY j.priority DESC, j.run_at LIMIT $1), \
         {take}"
    )
}

/// Statement text assembled only from the validated table name and fixed keywords, shared so
/// that each call clones a pointer.
pub(super) fn sql(text: String) -> SqlStr {
    AssertSqlSafe(Arc::<str>::from(text)).into_sql_str()
}
