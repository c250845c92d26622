//! The statements of the webhook tables, built once per schema.

use crate::EventError;
use neo_db::{SERVER_MS, Schema, TableName};

#[derive(Debug)]
pub(in crate::webhook) struct Sql {
    pub(in crate::webhook) upsert_event_type: String,
    pub(in crate::webhook) event_types: String,
    pub(in crate::webhook) insert_endpoint: String,
    pub(in crate::webhook) insert_subscriptions: String,
    pub(in crate::webhook) delete_subscription: String,
    pub(in crate::webhook) endpoint: String,
    pub(in crate::webhook) endpoints: String,
    pub(in crate::webhook) set_enabled: String,
    pub(in crate::webhook) rotate: String,
    pub(in crate::webhook) delete_endpoint: String,
    pub(in crate::webhook) fan_out: String,
    pub(in crate::webhook) fan_out_targets: String,
    pub(in crate::webhook) load_for_send: String,
    pub(in crate::webhook) load_for_send_by_id: String,
    pub(in crate::webhook) update_status: String,
    pub(in crate::webhook) update_status_with_attempts: String,
    pub(in crate::webhook) delivery: String,
    pub(in crate::webhook) deliveries: String,
    pub(in crate::webhook) replay_one: String,
    pub(in crate::webhook) replay_since: String,
    pub(in crate::webhook) lock_endpoint: String,
    pub(in crate::webhook) fifo_head: String,
    pub(in crate::webhook) purge_deliveries: String,
    pub(in crate::webhook) purge_messages: String,
    pub(in crate::webhook) reseal_page: String,
    pub(in crate::webhook) examine_page: String,
    pub(in crate::webhook) reseal_row: String,
    pub(in crate::webhook) record_keys: String,
    pub(in crate::webhook) not_under: String,
    pub(in crate::webhook) rows_by_key: String,
    pub(in crate::webhook) endpoint_stats: String,
    pub(in crate::webhook) verification: crate::webhook::verify::VerifySql,
    pub(in crate::webhook) partitioned: crate::partition::Partitioned,
}

/// The fan-out's messages (`messages` the table): stored once per event, returning each with
/// its `created_at` — the first handover's on a conflict (the no-op update returns the row;
/// `DO NOTHING` would return nothing), which its deliveries take as their own.
const MESSAGES_CTE: &str = "msg AS (INSERT INTO {messages} AS m (id, event_type, tenant_id, body) \
     SELECT DISTINCT ON (id) id, event_type, tenant_id, body FROM ev \
     ON CONFLICT (id) DO UPDATE SET created_at = m.created_at RETURNING m.id, m.created_at)";

const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, secrets, enabled, disabled_reason, \
     rate_limit_per_second, headers, description, created_at, fifo, region";
/// The columns [`Target`](crate::webhook::rows::Target) decodes (`d` deliveries, `m`
/// messages, `e` endpoints).
const TARGET_COLUMNS: &str = "d.id AS delivery_id, d.created_at, d.status, d.message_id, m.body, e.id AS endpoint_id, e.url, e.secrets, \
     coalesce(e.secrets_overlap_until > now(), false) AS overlapping, e.enabled, \
     e.rate_limit_per_second AS rate, e.headers, e.fifo, e.verification IS NULL AS verified";
/// The columns [`DeliveryRow`](super::deliveries::DeliveryRow) decodes (`d` deliveries, `m` messages).
pub(super) const DELIVERY_COLUMNS: &str = "d.id, d.message_id, d.endpoint_id, d.tenant_id, m.event_type, d.status, d.attempts, \
     d.response_status, d.response_body, d.duration_ms, d.last_error, d.next_attempt_at, \
     d.created_at, d.delivered_at";

impl Sql {
    pub(super) fn new(schema: &Schema) -> Result<Self, EventError> {
        let table = |name: &str| -> Result<String, EventError> {
            Ok(TableName::new(name)?.in_schema(schema).to_string())
        };
        let (types, endpoints, subs, messages, deliveries, attempts) = (
            table("webhook_event_types")?,
            table("webhook_endpoints")?,
            table("webhook_subscriptions")?,
            table("webhook_messages")?,
            table("webhook_deliveries")?,
            table("webhook_delivery_attempts")?,
        );
        let messages_cte = MESSAGES_CTE.replace("{messages}", &messages);
        Ok(Sql {
            endpoint_stats: crate::webhook::stats::sql(&endpoints, &deliveries),
            verification: crate::webhook::verify::VerifySql::new(&endpoints, &deliveries),
            partitioned: crate::partition::Partitioned::new(
                "webhooks",
                schema,
                "webhook_deliveries",
                "created_at",
                "status = 'pending'",
                Some(crate::partition::Companion {
                    name: "webhook_delivery_attempts",
                    column: "delivery_id",
                }),
            )?,
            upsert_event_type: format!(
                "INSERT INTO {types} (name, description, schema) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description, schema = EXCLUDED.schema"
            ),
            event_types: format!("SELECT name, description, schema FROM {types} ORDER BY name"),
            insert_endpoint: format!(
                "INSERT INTO {endpoints} (id, tenant_id, url, secrets, rate_limit_per_second, headers, description, fifo, sealed_with, verification, region) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {ENDPOINT_COLUMNS}"
            ),
            insert_subscriptions: format!(
                "INSERT INTO {subs} (endpoint_id, filter) SELECT $1, f FROM UNNEST($2::text[]) AS f \
                 ON CONFLICT DO NOTHING"
            ),
            delete_subscription: format!(
                "DELETE FROM {subs} WHERE endpoint_id = $1 AND filter = $2"
            ),
            endpoint: format!("SELECT {ENDPOINT_COLUMNS} FROM {endpoints} WHERE id = $1"),
            endpoints: format!(
                "SELECT {ENDPOINT_COLUMNS} FROM {endpoints} WHERE tenant_id IS NOT DISTINCT FROM $1 ORDER BY created_at, id"
            ),
            set_enabled: format!(
                "UPDATE {endpoints} SET enabled = $2, disabled_reason = $3, updated_at = now() WHERE id = $1"
            ),
            rotate: format!(
                // The keys recorded only grow here (the dropped third secret's key may stay
                // listed until a re-seal recounts the row); a row not examined yet stays so.
                "UPDATE {endpoints} SET secrets = ARRAY[$2, secrets[1]], \
                 secrets_overlap_until = now() + $3 * interval '1 millisecond', updated_at = now(), \
                 sealed_with = CASE WHEN sealed_with IS NULL THEN NULL \
                   ELSE ARRAY(SELECT DISTINCT k FROM unnest(sealed_with || $4::text) AS k ORDER BY k) END \
                 WHERE id = $1"
            ),
            // Its deliveries go with it (they hold no foreign key: see migration 2).
            delete_endpoint: format!(
                "WITH gone AS (DELETE FROM {endpoints} WHERE id = $1 RETURNING id), \
                 deliveries AS (DELETE FROM {deliveries} WHERE endpoint_id IN (SELECT id FROM gone)), \
                 attempts AS (DELETE FROM {attempts} WHERE endpoint_id IN (SELECT id FROM gone)) \
                 SELECT count(*) FROM gone"
            ),
            // One statement per batch: store the messages, then one delivery per matching
            // enabled endpoint (its tenant's events, or every event for an endpoint without
            // one), numbered in event order (FIFO endpoints deliver in that order), each naming
            // its event's tenant and trace context (returned for the delivery's job). A batch handed over twice
            // creates nothing twice: each delivery takes its message's `created_at` (the
            // partition key, webhooks migration 20), the first handover's, which the message
            // insert returns on a conflict too, so the unique key (message, endpoint,
            // created_at) finds the first delivery.
            fan_out: format!(
                "WITH ev AS (SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::jsonb[]) WITH ORDINALITY AS e(id, event_type, tenant_id, body, trace_context, ord)), \
                 {messages_cte} \
                 INSERT INTO {deliveries} (message_id, endpoint_id, queued, tenant_id, trace_context, region, created_at) \
                 SELECT DISTINCT ON (ev.ord, en.id) ev.id, en.id, NOT en.fifo AND en.verification IS NULL, ev.tenant_id, ev.trace_context, en.region, msg.created_at \
                 FROM ev JOIN msg ON msg.id = ev.id \
                 JOIN {endpoints} en ON en.enabled AND (en.tenant_id IS NULL OR en.tenant_id = ev.tenant_id) \
                 JOIN {subs} s ON s.endpoint_id = en.id AND (s.filter = '*' OR s.filter = ev.event_type \
                      OR (right(s.filter, 2) = '.*' AND starts_with(ev.event_type, left(s.filter, -1)))) \
                 ORDER BY ev.ord, en.id \
                 ON CONFLICT (message_id, endpoint_id, created_at) DO NOTHING RETURNING id, created_at, queued, endpoint_id, tenant_id, trace_context, region, replays"
            ),
            // `fan_out`, returning with each new delivery what sending it reads (the columns
            // of `load_for_send`), for the first attempts fan-out makes inline.
            fan_out_targets: format!(
                "WITH ev AS (SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::jsonb[]) WITH ORDINALITY AS e(id, event_type, tenant_id, body, trace_context, ord)), \
                 {messages_cte}, \
                 ins AS (INSERT INTO {deliveries} (message_id, endpoint_id, queued, tenant_id, trace_context, region, created_at) \
                 SELECT DISTINCT ON (ev.ord, en.id) ev.id, en.id, NOT en.fifo AND en.verification IS NULL, ev.tenant_id, ev.trace_context, en.region, msg.created_at \
                 FROM ev JOIN msg ON msg.id = ev.id \
                 JOIN {endpoints} en ON en.enabled AND (en.tenant_id IS NULL OR en.tenant_id = ev.tenant_id) \
                 JOIN {subs} s ON s.endpoint_id = en.id AND (s.filter = '*' OR s.filter = ev.event_type \
                      OR (right(s.filter, 2) = '.*' AND starts_with(ev.event_type, left(s.filter, -1)))) \
                 ORDER BY ev.ord, en.id \
                 ON CONFLICT (message_id, endpoint_id, created_at) DO NOTHING RETURNING id, created_at, queued, endpoint_id, tenant_id, trace_context, region, replays, message_id) \
                 SELECT ins.id, ins.created_at, ins.queued, ins.endpoint_id, ins.tenant_id, ins.trace_context, ins.region, ins.replays, ins.id AS delivery_id, 'pending' AS status, \
                 ins.message_id, b.body, e.url, e.secrets, coalesce(e.secrets_overlap_until > now(), false) AS overlapping, \
                 e.enabled, e.rate_limit_per_second AS rate, e.headers, e.fifo, e.verification IS NULL AS verified \
                 FROM ins JOIN (SELECT DISTINCT ON (id) id, body FROM ev) b ON b.id = ins.message_id \
                 JOIN {endpoints} e ON e.id = ins.endpoint_id ORDER BY ins.id"
            ),
            // What sending reads, for the deliveries named by id ($1) and `created_at` ($2),
            // the partition key. Each delivery is looked up by its whole primary key in a
            // lateral subquery (`LIMIT 1` keeps the planner from flattening it into a join): a
            // partition without statistics yet (today's, in its first minute) otherwise gets a
            // hash join over a scan of the whole partition, as the id alone is not unique there
            // (measured: 4.3 ms per read against main's 0.46). Each probe prunes the partitions
            // by its own `created_at` as it runs, so the statement is prepared and its plan
            // reused (`Inner::replan`); planned per call, with the values so that the plan
            // named only their partitions, it spent 0.3–0.4 ms planning per read of ~34
            // deliveries, as long as running it.
            load_for_send: format!(
                "SELECT {TARGET_COLUMNS}, {SERVER_MS} FROM UNNEST($1::int8[], $2::timestamptz[]) AS k(id, created_at) \
                 CROSS JOIN LATERAL (SELECT * FROM {deliveries} d WHERE d.id = k.id AND d.created_at = k.created_at \
                   LIMIT 1) d \
                 JOIN {messages} m ON m.id = d.message_id \
                 JOIN {endpoints} e ON e.id = d.endpoint_id"
            ),
            // The same by id alone, for jobs enqueued before they carried `created_at`: it
            // probes every partition's primary key.
            load_for_send_by_id: format!(
                "SELECT {TARGET_COLUMNS} \
                 FROM {deliveries} d JOIN {messages} m ON m.id = d.message_id \
                 JOIN {endpoints} e ON e.id = d.endpoint_id WHERE d.id = ANY($1)"
            ),
            // The same statement, one row, inside a FIFO endpoint's transaction. Each row is
            // found by id and `created_at` ($9), the partition key, which prunes the partitions
            // per row as the statement runs, so the statement is prepared and its plan reused
            // (`Inner::replan`; planned per call, with `d.created_at = ANY($9)` to name only
            // the partitions holding the values, it spent about 0.33 ms planning per write).
            // The join is written `d.id = ANY(ARRAY[u.id])` (and so for `created_at`), which
            // neither a hash nor a merge join can take: the plan is a probe of the primary key
            // per update. With `d.id = u.id`, a partition without statistics (each new one,
            // until autovacuum analyses it) got a hash join over a sequential scan of the whole
            // partition: in a 20,000-delivery drain 88 of 375 writes, 9.2 ms each against
            // 1.1 ms for the probes (`auto_explain`). It returns one row, its time on the server
            // once the update ran (read after the rows it updated are counted: a data-modifying
            // `WITH` the query does not read runs after the query).
            update_status: format!(
                "WITH done AS (UPDATE {deliveries} AS d SET status = u.status, attempts = d.attempts + u.attempted, \
                 response_status = u.code, response_body = u.body, duration_ms = u.ms, last_error = u.error, \
                 next_attempt_at = u.next, updated_at = now(), \
                 delivered_at = CASE WHEN u.status = 'delivered' THEN now() ELSE d.delivered_at END \
                 FROM UNNEST($1::int8[], $2::text[], $3::int4[], $4::int4[], $5::text[], $6::int4[], $7::text[], $8::timestamptz[], $9::timestamptz[]) \
                   AS u(id, status, attempted, code, body, ms, error, next, created_at) \
                 WHERE d.id = ANY(ARRAY[u.id]) AND d.created_at = ANY(ARRAY[u.created_at]) RETURNING 1) \
                 SELECT {SERVER_MS} FROM (SELECT count(*) FROM done) AS n"
            ),
            // `update_status` that also writes each attempt it reports into the delivery's
            // history (webhooks migration 41), in the same statement: slot attempt % $10 (the
            // latest $10 attempts are kept), excerpts of $11 characters. Used when
            // `attempt_history` is not 0. A delivery that succeeds at its first attempt (most
            // of them) writes no history row: its row already holds that attempt, and
            // `delivery_attempts` reads it from there.
            update_status_with_attempts: format!(
                "WITH u AS (SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int4[], $4::int4[], $5::text[], $6::int4[], $7::text[], $8::timestamptz[], $9::timestamptz[]) \
                   AS u(id, status, attempted, code, body, ms, error, next, created_at)), \
                 done AS (UPDATE {deliveries} AS d SET status = u.status, attempts = d.attempts + u.attempted, \
                 response_status = u.code, response_body = u.body, duration_ms = u.ms, last_error = u.error, \
                 next_attempt_at = u.next, updated_at = now(), \
                 delivered_at = CASE WHEN u.status = 'delivered' THEN now() ELSE d.delivered_at END \
                 FROM u WHERE d.id = ANY(ARRAY[u.id]) AND d.created_at = ANY(ARRAY[u.created_at]) \
                 RETURNING d.id, d.attempts, d.endpoint_id, d.tenant_id, u.attempted, u.status, u.code, u.body, u.ms, u.error), \
                 kept AS (INSERT INTO {attempts} AS a (delivery_id, slot, attempt, endpoint_id, tenant_id, outcome, response_status, response_excerpt, duration_ms, error) \
                 SELECT DISTINCT ON (id) id, attempts % $10, attempts, endpoint_id, tenant_id, status, code, left(body, $11), ms, left(error, $11) \
                 FROM done WHERE attempted > 0 AND NOT (attempts = 1 AND status = 'delivered') ORDER BY id \
                 ON CONFLICT (delivery_id, slot) DO UPDATE SET attempt = EXCLUDED.attempt, outcome = EXCLUDED.outcome, \
                 response_status = EXCLUDED.response_status, response_excerpt = EXCLUDED.response_excerpt, \
                 duration_ms = EXCLUDED.duration_ms, error = EXCLUDED.error, created_at = now() RETURNING 1) \
                 SELECT {SERVER_MS} FROM (SELECT count(*) FROM kept) AS n"
            ),
            delivery: format!(
                "SELECT {DELIVERY_COLUMNS} FROM {deliveries} d JOIN {messages} m ON m.id = d.message_id WHERE d.id = $1"
            ),
            deliveries: format!(
                "SELECT {DELIVERY_COLUMNS} FROM {deliveries} d JOIN {messages} m ON m.id = d.message_id \
                 WHERE d.endpoint_id = $1 AND ($2::text IS NULL OR d.status = $2) ORDER BY d.id LIMIT $3"
            ),
            replay_one: format!(
                "UPDATE {deliveries} d SET status = 'pending', next_attempt_at = NULL, updated_at = now(), \
                 replays = d.replays + 1, queued = NOT e.fifo AND e.verification IS NULL FROM {endpoints} e \
                 WHERE d.id = $1 AND d.status = 'dead' AND e.id = d.endpoint_id \
                 RETURNING d.id, d.created_at, d.queued, d.endpoint_id, d.tenant_id, d.trace_context, d.region, d.replays"
            ),
            replay_since: format!(
                "UPDATE {deliveries} d SET status = 'pending', next_attempt_at = NULL, updated_at = now(), \
                 replays = d.replays + 1, queued = NOT e.fifo AND e.verification IS NULL FROM {endpoints} e \
                 WHERE d.endpoint_id = $1 AND d.status = 'dead' AND d.updated_at >= $2 AND e.id = d.endpoint_id \
                 RETURNING d.id, d.created_at, d.queued, d.endpoint_id, d.tenant_id, d.trace_context, d.region, d.replays"
            ),
            // Finished deliveries older than the cutoff, and deliveries a fan-out recorded for
            // an endpoint deleted while it ran, in bounded batches; then messages no delivery
            // refers to any more.
            // Their attempts go with them.
            // Rows found again by `(tableoid, ctid)`: the table is partitioned (webhooks
            // migration 20), where an id alone would probe every partition.
            purge_deliveries: format!(
                "WITH picked AS (SELECT d.tableoid AS part, d.ctid AS row_id FROM {deliveries} d \
                 WHERE (d.status IN ('delivered', 'dead') AND d.updated_at < now() - $1 * interval '1 millisecond') \
                 OR NOT EXISTS (SELECT 1 FROM {endpoints} e WHERE e.id = d.endpoint_id) \
                 LIMIT $2), \
                 gone AS (DELETE FROM {deliveries} AS o USING picked WHERE o.tableoid = picked.part AND o.ctid = picked.row_id \
                 RETURNING o.id), \
                 attempts AS (DELETE FROM {attempts} WHERE delivery_id IN (SELECT id FROM gone)) \
                 SELECT count(*) FROM gone"
            ),
            purge_messages: format!(
                "DELETE FROM {messages} m WHERE m.created_at < now() - $1 * interval '1 millisecond' \
                 AND NOT EXISTS (SELECT 1 FROM {deliveries} d WHERE d.message_id = m.id)"
            ),
            // Keyset pages of endpoints not wholly under the current key ($2), locked for the
            // re-seal's transaction (a concurrent rotation waits for it).
            reseal_page: format!(
                "SELECT id, secrets, headers FROM {endpoints} \
                 WHERE id > $1 AND sealed_with IS DISTINCT FROM ARRAY[$2::text] ORDER BY id LIMIT $3 FOR UPDATE"
            ),
            examine_page: format!(
                "SELECT id, secrets, headers FROM {endpoints} \
                 WHERE id > $1 AND sealed_with IS NULL ORDER BY id LIMIT $2 FOR UPDATE"
            ),
            reseal_row: format!(
                "UPDATE {endpoints} SET secrets = $2, headers = $3, sealed_with = $4 WHERE id = $1"
            ),
            record_keys: format!("UPDATE {endpoints} SET sealed_with = $2 WHERE id = $1"),
            not_under: format!(
                "SELECT count(*) FROM {endpoints} WHERE sealed_with IS DISTINCT FROM ARRAY[$1::text]"
            ),
            rows_by_key: format!(
                "SELECT k, count(DISTINCT id) FROM {endpoints}, unnest(sealed_with) AS k GROUP BY k"
            ),
            lock_endpoint: format!("SELECT id FROM {endpoints} WHERE id = $1 FOR UPDATE"),
            // The oldest pending delivery of a FIFO endpoint gets the endpoint's one job. Found
            // in every partition (the oldest pending one may be in any); then updated by id and
            // `created_at`, which prunes the update to its partition when it runs.
            fifo_head: format!(
                "UPDATE {deliveries} SET queued = true WHERE (id, created_at) = \
                 (SELECT id, created_at FROM {deliveries} WHERE endpoint_id = $1 AND status = 'pending' ORDER BY id LIMIT 1) \
                 AND NOT queued AND EXISTS (SELECT 1 FROM {endpoints} WHERE id = $1 AND verification IS NULL) \
                 RETURNING id, created_at, queued, endpoint_id, tenant_id, trace_context, region, replays"
            ),
        })
    }
}
