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
    pub(super) heartbeat: SqlStr,
    pub(super) ack: SqlStr,
    pub(super) nack: SqlStr,
    pub(super) release: SqlStr,
    pub(super) rescue: SqlStr,
    pub(super) list_dead: SqlStr,
    pub(super) requeue: SqlStr,
    pub(super) get: SqlStr,
    pub(super) depth: SqlStr,
}

const JOB_COLUMNS: &str = "j.id, j.kind, j.payload, j.priority, j.attempts, j.max_attempts, j.tenant, j.last_error, j.created_at, j.fence";

impl Statements {
    pub(super) fn new(t: &TableName) -> Self {
        let insert = |on_conflict: &str| {
            format!(
                "WITH ins AS (INSERT INTO {t} (id, kind, payload, priority, run_at, max_attempts, unique_key, tenant) \
                 SELECT u.id, u.kind, u.payload, u.priority, coalesce(u.run_at, now()), u.max_attempts, u.unique_key, u.tenant \
                 FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::int2[], $5::timestamptz[], $6::int4[], $7::text[], $8::text[]) \
                 AS u(id, kind, payload, priority, run_at, max_attempts, unique_key, tenant) {on_conflict} RETURNING id) \
                 SELECT ins.id FROM ins, (SELECT pg_notify($9, '')) AS woken"
            )
        };
        let claim = |filter: &str| {
            format!(
                "WITH next AS (SELECT id FROM {t} WHERE state = 'available' AND run_at <= now() {filter} \
                 ORDER BY priority DESC, run_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
                 UPDATE {t} AS j SET state = 'running', attempts = j.attempts + 1, lease_owner = $2, \
                 lease_expires_at = now() + $3 * interval '1 millisecond', fence = j.fence + 1 \
                 FROM next WHERE j.id = next.id RETURNING {JOB_COLUMNS}"
            )
        };
        let owned = "j.state = 'running' AND j.lease_expires_at > now()";
        Statements {
            insert_skip: sql(insert(
                "ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'running') DO NOTHING",
            )),
            insert_strict: sql(insert("")),
            claim: sql(claim("")),
            claim_kinds: sql(claim("AND kind = ANY($4)")),
            heartbeat: sql(format!(
                "UPDATE {t} AS j SET lease_expires_at = now() + $3 * interval '1 millisecond' \
                 FROM UNNEST($1::uuid[], $2::int8[]) AS u(id, fence) \
                 WHERE j.id = u.id AND j.fence = u.fence AND {owned} RETURNING j.id"
            )),
            ack: sql(format!(
                "DELETE FROM {t} AS j USING UNNEST($1::uuid[], $2::int8[]) AS u(id, fence) \
                 WHERE j.id = u.id AND j.fence = u.fence AND {owned} RETURNING j.id"
            )),
            // A snooze hands the claim back without spending the attempt; an explicit retry
            // delay (Retry-After, a handler's own schedule) replaces the backoff.
            nack: sql(format!(
                "UPDATE {t} AS j SET \
                 attempts = CASE WHEN u.snooze THEN j.attempts - 1 ELSE j.attempts END, \
                 state = CASE WHEN NOT u.snooze AND (u.permanent OR j.attempts >= j.max_attempts) THEN 'dead' ELSE 'available' END, \
                 dead_at = CASE WHEN NOT u.snooze AND (u.permanent OR j.attempts >= j.max_attempts) THEN now() END, \
                 run_at = CASE WHEN NOT u.snooze AND (u.permanent OR j.attempts >= j.max_attempts) THEN j.run_at \
                   WHEN u.retry_in_ms IS NOT NULL THEN now() + u.retry_in_ms * interval '1 millisecond' \
                   ELSE now() + least($5::float8, $3::float8 * power($4::float8, j.attempts - 1)) \
                        * (0.5 + random()) * interval '1 millisecond' END, \
                 lease_owner = NULL, lease_expires_at = NULL, \
                 last_error = CASE WHEN u.snooze THEN j.last_error ELSE u.error END \
                 FROM UNNEST($1::uuid[], $2::int8[], $6::text[], $7::bool[], $8::float8[], $9::bool[]) \
                   AS u(id, fence, error, permanent, retry_in_ms, snooze) \
                 WHERE j.id = u.id AND j.fence = u.fence AND {owned} RETURNING j.id, j.state"
            )),
            release: sql(format!(
                "UPDATE {t} AS j SET state = 'available', attempts = j.attempts - 1, run_at = now(), \
                 lease_owner = NULL, lease_expires_at = NULL \
                 FROM UNNEST($1::uuid[], $2::int8[]) AS u(id, fence) \
                 WHERE j.id = u.id AND j.fence = u.fence AND {owned} RETURNING j.id"
            )),
            rescue: sql(format!(
                "UPDATE {t} SET state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'available' END, \
                 dead_at = CASE WHEN attempts >= max_attempts THEN now() END, \
                 lease_owner = NULL, lease_expires_at = NULL, \
                 last_error = 'lease expired: the worker stopped without finishing the job' \
                 WHERE state = 'running' AND lease_owner IS NOT NULL AND lease_expires_at <= now()"
            )),
            list_dead: sql(format!(
                "SELECT id, kind, payload, state, attempts, max_attempts, last_error, tenant, dead_at \
                 FROM {t} WHERE state = 'dead' ORDER BY dead_at, id LIMIT $1"
            )),
            requeue: sql(format!(
                "WITH back AS (UPDATE {t} SET state = 'available', attempts = 0, run_at = now(), dead_at = NULL \
                 WHERE id = ANY($1) AND state = 'dead' RETURNING id) \
                 SELECT back.id FROM back, (SELECT pg_notify($2, '')) AS woken"
            )),
            get: sql(format!(
                "SELECT id, kind, payload, state, attempts, max_attempts, last_error, tenant, dead_at FROM {t} WHERE id = $1"
            )),
            depth: sql(format!("SELECT state, count(*) FROM {t} GROUP BY state")),
        }
    }
}

/// Statement text assembled only from the validated table name and fixed keywords, shared so
/// that each call clones a pointer.
fn sql(text: String) -> SqlStr {
    AssertSqlSafe(Arc::<str>::from(text)).into_sql_str()
}
