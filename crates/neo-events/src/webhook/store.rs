//! The webhook tables, their repositories, fan-out and replay.

use super::http::build_client;
use super::rows::{StatusUpdate, Target, target_loader};
use super::{
    Delivery, DeliveryStatus, Endpoint, EventTypeInfo, NewEndpoint, OperationalEvent, WebhookConfig,
};
use crate::event::validate_type;
use crate::{DomainEvent, EventError, WebhookSecret};
use chrono::{DateTime, Utc};
use neo_batch::WriteBatcher;
use neo_core::HasErrorKind;
use neo_db::{Db, MigrationReport, MigrationSet, Schema, TableName};
use neo_queue::{NewJob, OnDuplicate, Queue};
use neo_resilience::{CircuitBreaker, RateLimiter};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::{OnceCell, broadcast};
use uuid::Uuid;

/// Headers the library sets itself; endpoints cannot override them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "user-agent",
    crate::HEADER_ID,
    crate::HEADER_TIMESTAMP,
    crate::HEADER_SIGNATURE,
];
const MAX_HEADERS: usize = 20;
const MAX_URL_LEN: usize = 2048;

#[derive(Debug)]
pub(super) struct Sql {
    upsert_event_type: String,
    event_types: String,
    insert_endpoint: String,
    insert_subscriptions: String,
    delete_subscription: String,
    endpoint: String,
    endpoints: String,
    pub(super) set_enabled: String,
    rotate: String,
    delete_endpoint: String,
    fan_out: String,
    pub(super) load_for_send: String,
    pub(super) update_status: String,
    delivery: String,
    deliveries: String,
    replay_one: String,
    replay_since: String,
    lock_endpoint: String,
    fifo_head: String,
    purge_deliveries: String,
    purge_messages: String,
}

const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, secrets, enabled, disabled_reason, \
     rate_limit_per_second, headers, description, created_at, fifo";
const DELIVERY_COLUMNS: &str = "d.id, d.message_id, d.endpoint_id, m.event_type, d.status, d.attempts, \
     d.response_status, d.response_body, d.duration_ms, d.last_error, d.next_attempt_at, \
     d.created_at, d.delivered_at";

impl Sql {
    fn new(schema: &Schema) -> Result<Self, EventError> {
        let table = |name: &str| -> Result<String, EventError> {
            Ok(TableName::new(name)?.in_schema(schema).to_string())
        };
        let (types, endpoints, subs, messages, deliveries) = (
            table("webhook_event_types")?,
            table("webhook_endpoints")?,
            table("webhook_subscriptions")?,
            table("webhook_messages")?,
            table("webhook_deliveries")?,
        );
        Ok(Sql {
            upsert_event_type: format!(
                "INSERT INTO {types} (name, description, schema) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description, schema = EXCLUDED.schema"
            ),
            event_types: format!("SELECT name, description, schema FROM {types} ORDER BY name"),
            insert_endpoint: format!(
                "INSERT INTO {endpoints} (id, tenant_id, url, secrets, rate_limit_per_second, headers, description, fifo) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {ENDPOINT_COLUMNS}"
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
                "UPDATE {endpoints} SET secrets = ARRAY[$2, secrets[1]], \
                 secrets_overlap_until = now() + $3 * interval '1 millisecond', updated_at = now() WHERE id = $1"
            ),
            // Its deliveries go with it (they hold no foreign key: see migration 2).
            delete_endpoint: format!(
                "WITH gone AS (DELETE FROM {endpoints} WHERE id = $1 RETURNING id), \
                 deliveries AS (DELETE FROM {deliveries} WHERE endpoint_id IN (SELECT id FROM gone)) \
                 SELECT count(*) FROM gone"
            ),
            // One statement per batch: store the messages, then one delivery per matching
            // enabled endpoint (its tenant's events, or every event for an endpoint without
            // one), numbered in event order (FIFO endpoints deliver in that order). A batch
            // handed over twice creates nothing twice.
            fan_out: format!(
                "WITH ev AS (SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::text[]) WITH ORDINALITY AS e(id, event_type, tenant_id, body, ord)), \
                 msg AS (INSERT INTO {messages} (id, event_type, tenant_id, body) SELECT id, event_type, tenant_id, body FROM ev \
                         ON CONFLICT (id) DO NOTHING) \
                 INSERT INTO {deliveries} (message_id, endpoint_id, queued) \
                 SELECT DISTINCT ON (ev.ord, en.id) ev.id, en.id, NOT en.fifo FROM ev \
                 JOIN {endpoints} en ON en.enabled AND (en.tenant_id IS NULL OR en.tenant_id = ev.tenant_id) \
                 JOIN {subs} s ON s.endpoint_id = en.id AND (s.filter = '*' OR s.filter = ev.event_type \
                      OR (right(s.filter, 2) = '.*' AND starts_with(ev.event_type, left(s.filter, -1)))) \
                 ORDER BY ev.ord, en.id \
                 ON CONFLICT (message_id, endpoint_id) DO NOTHING RETURNING id, queued, endpoint_id"
            ),
            load_for_send: format!(
                "SELECT d.status, d.message_id, m.body, e.id, e.url, e.secrets, \
                 e.secrets_overlap_until > now(), e.enabled, e.rate_limit_per_second, e.headers, d.id, e.fifo \
                 FROM {deliveries} d JOIN {messages} m ON m.id = d.message_id \
                 JOIN {endpoints} e ON e.id = d.endpoint_id WHERE d.id = ANY($1)"
            ),
            // The same statement, one row, inside a FIFO endpoint's transaction.
            update_status: format!(
                "UPDATE {deliveries} AS d SET status = u.status, attempts = d.attempts + u.attempted, \
                 response_status = u.code, response_body = u.body, duration_ms = u.ms, last_error = u.error, \
                 next_attempt_at = u.next, updated_at = now(), \
                 delivered_at = CASE WHEN u.status = 'delivered' THEN now() ELSE d.delivered_at END \
                 FROM UNNEST($1::int8[], $2::text[], $3::int4[], $4::int4[], $5::text[], $6::int4[], $7::text[], $8::timestamptz[]) \
                   AS u(id, status, attempted, code, body, ms, error, next) \
                 WHERE d.id = u.id"
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
                 queued = NOT e.fifo FROM {endpoints} e \
                 WHERE d.id = $1 AND d.status = 'dead' AND e.id = d.endpoint_id RETURNING d.id, d.queued, d.endpoint_id"
            ),
            replay_since: format!(
                "UPDATE {deliveries} d SET status = 'pending', next_attempt_at = NULL, updated_at = now(), \
                 queued = NOT e.fifo FROM {endpoints} e \
                 WHERE d.endpoint_id = $1 AND d.status = 'dead' AND d.updated_at >= $2 AND e.id = d.endpoint_id \
                 RETURNING d.id, d.queued, d.endpoint_id"
            ),
            // Finished deliveries older than the cutoff, and deliveries a fan-out recorded for
            // an endpoint deleted while it ran, in bounded batches; then messages no delivery
            // refers to any more.
            purge_deliveries: format!(
                "DELETE FROM {deliveries} WHERE id IN (SELECT id FROM {deliveries} d \
                 WHERE (d.status IN ('delivered', 'dead') AND d.updated_at < now() - $1 * interval '1 millisecond') \
                 OR NOT EXISTS (SELECT 1 FROM {endpoints} e WHERE e.id = d.endpoint_id) \
                 LIMIT $2)"
            ),
            purge_messages: format!(
                "DELETE FROM {messages} m WHERE m.created_at < now() - $1 * interval '1 millisecond' \
                 AND NOT EXISTS (SELECT 1 FROM {deliveries} d WHERE d.message_id = m.id)"
            ),
            lock_endpoint: format!("SELECT id FROM {endpoints} WHERE id = $1 FOR UPDATE"),
            // The oldest pending delivery of a FIFO endpoint gets the endpoint's one job.
            fifo_head: format!(
                "UPDATE {deliveries} SET queued = true WHERE id = \
                 (SELECT id FROM {deliveries} WHERE endpoint_id = $1 AND status = 'pending' ORDER BY id LIMIT 1) \
                 AND NOT queued RETURNING id"
            ),
        })
    }
}

pub(super) struct Inner {
    pub(super) db: Db,
    pub(super) queue: Queue,
    pub(super) config: WebhookConfig,
    pub(super) sql: Sql,
    pub(super) client: reqwest::Client,
    pub(super) breakers: Mutex<HashMap<Uuid, CircuitBreaker>>,
    pub(super) limiters: Mutex<HashMap<Uuid, (u32, RateLimiter)>>,
    pub(super) operational: broadcast::Sender<OperationalEvent>,
    pub(super) status: OnceCell<WriteBatcher<StatusUpdate>>,
    pub(super) targets: neo_batch::DataLoader<i64, Target>,
    schema: Schema,
}

/// Webhook endpoints, subscriptions and deliveries, and the delivery job handler; cheap to
/// clone.
///
/// Events reach endpoints in three steps: the [`Outbox`](crate::Outbox) dispatcher hands
/// committed events to [`fan_out`](Webhooks::fan_out), which records one delivery per
/// subscribed endpoint and enqueues one neo-queue job per delivery in the same transaction;
/// a neo-queue [`Worker`](neo_queue::Worker) set up with [`handle`](Webhooks::handle) sends
/// them, signed per Standard Webhooks, retrying on the configured schedule.
///
/// # Example
/// ```no_run
/// # async fn demo(db: neo_db::Db, queue: neo_queue::Queue, outbox: neo_events::Outbox) -> Result<(), neo_events::EventError> {
/// use neo_events::{NewEndpoint, WebhookConfig, Webhooks};
/// let webhooks = Webhooks::new(&db, queue.clone(), WebhookConfig::default())?;
/// webhooks.migrate().await?;
/// let endpoint = webhooks
///     .create_endpoint(NewEndpoint::new("https://hooks.example.com/neo").subscribe("organization.*"))
///     .await?;
/// println!("give the receiver {}", endpoint.secret().expose());
///
/// // The dispatcher fans committed events out; a worker delivers them.
/// let fan_out = webhooks.clone();
/// let dispatcher = outbox.run(
///     move |events| { let w = fan_out.clone(); async move { w.fan_out(&events).await } },
///     std::future::pending(),
/// );
/// let worker = webhooks.handle(neo_queue::Worker::new(queue, Default::default()));
/// let _ = tokio::join!(dispatcher, worker.run(std::future::pending()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Webhooks {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("config", &self.inner.config)
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

fn db_error(error: sqlx::Error) -> EventError {
    EventError::Db(neo_db::Error::from(error))
}

fn not_found(what: &'static str, id: impl std::fmt::Display) -> EventError {
    EventError::NotFound {
        what,
        id: id.to_string(),
    }
}

impl Webhooks {
    /// Webhooks in `config.schema`, delivering through `queue`.
    ///
    /// # Errors
    /// [`EventError::Invalid`] for a bad configuration or schema name.
    pub fn new(db: &Db, queue: Queue, config: WebhookConfig) -> Result<Self, EventError> {
        config.validate()?;
        let schema = Schema::new(&config.schema)?;
        let sql = Sql::new(&schema)?;
        let client = build_client(&config)?;
        let targets = target_loader(db, sql.load_for_send.clone(), &config)?;
        Ok(Webhooks {
            inner: Arc::new(Inner {
                db: db.clone(),
                queue,
                sql,
                client,
                breakers: Mutex::new(HashMap::new()),
                limiters: Mutex::new(HashMap::new()),
                operational: broadcast::channel(1024).0,
                status: OnceCell::new(),
                targets,
                schema,
                config,
            }),
        })
    }

    /// The webhook tables' migrations.
    ///
    /// # Errors
    /// Never; fallible for symmetry with other crates' sets.
    pub fn migrations() -> Result<MigrationSet, EventError> {
        Ok(MigrationSet::new("neo_webhooks")?
            .with(
                1,
                "webhooks",
                include_str!("../../migrations/webhooks/1_webhooks.sql"),
            )
            .with(
                2,
                "deliveries without foreign keys",
                include_str!("../../migrations/webhooks/2_deliveries_without_foreign_keys.sql"),
            ))
    }

    /// Creates or upgrades the webhook tables in `config.schema`.
    ///
    /// # Errors
    /// A migration error.
    pub async fn migrate(&self) -> Result<MigrationReport, EventError> {
        Ok(Self::migrations()?
            .run_in_schema(&self.inner.db, &self.inner.schema)
            .await?)
    }

    /// The settings.
    pub fn config(&self) -> &WebhookConfig {
        &self.inner.config
    }

    /// Operational events (endpoint failing or disabled, delivery exhausted) seen by this
    /// process from now on. They are also logged at WARN.
    pub fn operational_events(&self) -> broadcast::Receiver<OperationalEvent> {
        self.inner.operational.subscribe()
    }

    pub(super) fn announce(&self, event: OperationalEvent) {
        tracing::warn!(?event, "webhook operational event");
        let kind = match &event {
            OperationalEvent::EndpointFailing { .. } => "endpoint_failing",
            OperationalEvent::EndpointDisabled { .. } => "endpoint_disabled",
            OperationalEvent::DeliveryExhausted { .. } => "delivery_exhausted",
        };
        metrics::counter!("neo_webhooks_operational_events_total", "kind" => kind).increment(1);
        let _ = self.inner.operational.send(event);
    }

    /// Registers (or updates) an event type.
    ///
    /// # Errors
    /// [`EventError::Invalid`] for a bad name; a database error.
    pub async fn register_event_type(&self, info: &EventTypeInfo) -> Result<(), EventError> {
        validate_type("event type", &info.name, true)?;
        sqlx::query(AssertSqlSafe(self.inner.sql.upsert_event_type.clone()))
            .bind(&info.name)
            .bind(&info.description)
            .bind(&info.schema)
            .execute(self.inner.db.pool())
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Every registered event type, by name.
    ///
    /// # Errors
    /// A database error.
    pub async fn event_types(&self) -> Result<Vec<EventTypeInfo>, EventError> {
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.event_types.clone()))
            .fetch_all(self.inner.db.pool())
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok(EventTypeInfo {
                    name: r.try_get(0)?,
                    description: r.try_get(1)?,
                    schema: r.try_get(2)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db_error)
    }

    /// Checks an endpoint URL: `https` (or `http` when `require_https` is off), no
    /// credentials, at most 2048 bytes, and no refused IP literal.
    ///
    /// # Errors
    /// [`EventError::Invalid`] saying what is wrong.
    pub fn validate_url(&self, url: &str) -> Result<reqwest::Url, EventError> {
        let invalid = |reason: String| EventError::Invalid {
            what: "endpoint url",
            reason,
        };
        if url.len() > MAX_URL_LEN {
            return Err(invalid(format!("longer than {MAX_URL_LEN} bytes")));
        }
        let parsed = reqwest::Url::parse(url).map_err(|e| invalid(format!("not a URL: {e}")))?;
        let scheme_ok = parsed.scheme() == "https"
            || (parsed.scheme() == "http" && !self.inner.config.require_https);
        if !scheme_ok {
            let allowed = if self.inner.config.require_https {
                "https"
            } else {
                "http or https"
            };
            return Err(invalid(format!(
                "scheme {:?} is not {allowed}",
                parsed.scheme()
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid(
                "credentials in the URL are refused; use headers".into(),
            ));
        }
        if parsed.host().is_none() {
            return Err(invalid("no host".into()));
        }
        self.inner.config.addresses.check_url(&parsed)?;
        Ok(parsed)
    }

    /// Checks an event before it is published, as fan-out will: its message must fit
    /// `max_payload_bytes`.
    ///
    /// # Errors
    /// [`EventError::Invalid`] for an oversized event.
    pub fn validate_event(&self, event: &DomainEvent) -> Result<(), EventError> {
        message_body(event, self.inner.config.max_payload_bytes).map(|_| ())
    }

    /// Creates an endpoint and its subscriptions.
    ///
    /// # Errors
    /// [`EventError::Invalid`] for a bad URL, filter, header or rate; a database error.
    pub async fn create_endpoint(&self, new: NewEndpoint) -> Result<Endpoint, EventError> {
        self.validate_url(&new.url)?;
        new.filters.iter().try_for_each(|f| validate_filter(f))?;
        validate_headers(&new.headers)?;
        if new.rate_limit_per_second == Some(0) {
            return Err(EventError::Invalid {
                what: "endpoint rate limit",
                reason: "must be at least 1 per second".into(),
            });
        }
        let secret = new.secret.unwrap_or_else(WebhookSecret::generate);
        let rate = new
            .rate_limit_per_second
            .map(|r| i32::try_from(r).unwrap_or(i32::MAX));
        let mut tx = self.inner.db.begin().await?;
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.insert_endpoint.clone()))
            .bind(Uuid::now_v7())
            .bind(new.tenant_id)
            .bind(&new.url)
            .bind(vec![secret.expose()])
            .bind(rate)
            .bind(sqlx::types::Json(&new.headers))
            .bind(&new.description)
            .bind(new.fifo)
            .fetch_one(&mut **tx)
            .await
            .map_err(db_error)?;
        let endpoint = endpoint_from_row(&row)?;
        sqlx::query(AssertSqlSafe(self.inner.sql.insert_subscriptions.clone()))
            .bind(endpoint.id)
            .bind(&new.filters)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        tx.commit().await?;
        Ok(endpoint)
    }

    /// One endpoint.
    ///
    /// # Errors
    /// [`EventError::NotFound`]; a database error.
    pub async fn endpoint(&self, id: Uuid) -> Result<Endpoint, EventError> {
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.endpoint.clone()))
            .bind(id)
            .fetch_optional(self.inner.db.pool())
            .await
            .map_err(db_error)?
            .ok_or_else(|| not_found("endpoint", id))?;
        endpoint_from_row(&row)
    }

    /// The endpoints of a tenant (`None`: those without a tenant).
    ///
    /// # Errors
    /// A database error.
    pub async fn endpoints(&self, tenant: Option<Uuid>) -> Result<Vec<Endpoint>, EventError> {
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.endpoints.clone()))
            .bind(tenant)
            .fetch_all(self.inner.db.pool())
            .await
            .map_err(db_error)?;
        rows.iter().map(endpoint_from_row).collect()
    }

    /// Adds a subscription (a type, a `prefix.*` or `*`).
    ///
    /// # Errors
    /// [`EventError::Invalid`] for a bad filter; [`EventError::NotFound`]; a database error.
    pub async fn subscribe(&self, endpoint: Uuid, filter: &str) -> Result<(), EventError> {
        validate_filter(filter)?;
        sqlx::query(AssertSqlSafe(self.inner.sql.insert_subscriptions.clone()))
            .bind(endpoint)
            .bind(vec![filter])
            .execute(self.inner.db.pool())
            .await
            .map_err(|e| match neo_db::Error::from(e) {
                db if db.kind() == neo_core::ErrorKind::Validation => {
                    not_found("endpoint", endpoint)
                }
                db => EventError::Db(db),
            })?;
        Ok(())
    }

    /// Removes a subscription; returns whether it existed.
    ///
    /// # Errors
    /// A database error.
    pub async fn unsubscribe(&self, endpoint: Uuid, filter: &str) -> Result<bool, EventError> {
        let done = sqlx::query(AssertSqlSafe(self.inner.sql.delete_subscription.clone()))
            .bind(endpoint)
            .bind(filter)
            .execute(self.inner.db.pool())
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected() > 0)
    }

    /// Enables or disables an endpoint. Deliveries for a disabled endpoint go to the dead
    /// letters when their turn comes; replay them after enabling it again.
    ///
    /// # Errors
    /// [`EventError::NotFound`]; a database error.
    pub async fn set_enabled(
        &self,
        endpoint: Uuid,
        enabled: bool,
        reason: Option<&str>,
    ) -> Result<(), EventError> {
        let done = sqlx::query(AssertSqlSafe(self.inner.sql.set_enabled.clone()))
            .bind(endpoint)
            .bind(enabled)
            .bind(if enabled { None } else { reason })
            .execute(self.inner.db.pool())
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(not_found("endpoint", endpoint));
        }
        Ok(())
    }

    /// Replaces the endpoint's secret with a new one; the old one keeps signing (a second
    /// signature) for `secret_overlap`, so the receiver can switch without dropping messages.
    ///
    /// # Errors
    /// [`EventError::NotFound`]; a database error.
    pub async fn rotate_secret(&self, endpoint: Uuid) -> Result<WebhookSecret, EventError> {
        let secret = WebhookSecret::generate();
        let done = sqlx::query(AssertSqlSafe(self.inner.sql.rotate.clone()))
            .bind(endpoint)
            .bind(secret.expose())
            .bind(self.inner.config.secret_overlap.as_secs_f64() * 1e3)
            .execute(self.inner.db.pool())
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(not_found("endpoint", endpoint));
        }
        Ok(secret)
    }

    /// Deletes an endpoint with its subscriptions and deliveries; returns whether it existed.
    ///
    /// # Errors
    /// A database error.
    pub async fn delete_endpoint(&self, endpoint: Uuid) -> Result<bool, EventError> {
        let deleted: i64 =
            sqlx::query_scalar(AssertSqlSafe(self.inner.sql.delete_endpoint.clone()))
                .bind(endpoint)
                .fetch_one(self.inner.db.pool())
                .await
                .map_err(db_error)?;
        self.forget(endpoint);
        Ok(deleted > 0)
    }

    fn forget(&self, endpoint: Uuid) {
        super::lock(&self.inner.breakers).remove(&endpoint);
        super::lock(&self.inner.limiters).remove(&endpoint);
    }

    /// Records one delivery per subscribed, enabled endpoint for each event and enqueues a
    /// delivery job for each, in one transaction; returns how many deliveries were created.
    /// Handing the same events over again creates nothing new, so it is safe to use as an
    /// at-least-once [`Outbox`](crate::Outbox) handler. Events too large for
    /// `max_payload_bytes` are logged and skipped (check them first with
    /// [`validate_event`](Self::validate_event)).
    ///
    /// # Errors
    /// A database or queue error; nothing is recorded then.
    pub async fn fan_out(&self, events: &[DomainEvent]) -> Result<usize, EventError> {
        let mut ids = Vec::with_capacity(events.len());
        let mut types = Vec::with_capacity(events.len());
        let mut tenants = Vec::with_capacity(events.len());
        let mut bodies = Vec::with_capacity(events.len());
        for event in events {
            match message_body(event, self.inner.config.max_payload_bytes) {
                Ok(body) => {
                    ids.push(Uuid::from(event.id()));
                    types.push(event.event_type().to_owned());
                    tenants.push(event.tenant_id().map(Uuid::from));
                    bodies.push(body);
                }
                Err(error) => {
                    metrics::counter!("neo_webhooks_refused_events_total").increment(1);
                    tracing::error!(event_id = %event.id(), %error, "event not sent to webhooks");
                }
            }
        }
        if ids.is_empty() {
            return Ok(0);
        }
        let mut tx = self.inner.db.begin().await?;
        let created: Vec<(i64, bool, Uuid)> =
            sqlx::query_as(AssertSqlSafe(self.inner.sql.fan_out.clone()))
                .bind(&ids)
                .bind(&types)
                .bind(&tenants)
                .bind(&bodies)
                .fetch_all(&mut **tx)
                .await
                .map_err(db_error)?;
        self.enqueue_created(&mut tx, &created).await?;
        tx.commit().await?;
        metrics::counter!("neo_webhooks_deliveries_created_total").increment(created.len() as u64);
        Ok(created.len())
    }

    /// Enqueues jobs for `(delivery, queued, endpoint)` rows just made pending: the queued
    /// ones directly, and the head of each FIFO endpoint among the others.
    async fn enqueue_created(
        &self,
        tx: &mut neo_db::UnitOfWork,
        rows: &[(i64, bool, Uuid)],
    ) -> Result<(), EventError> {
        let queued: Vec<i64> = rows.iter().filter(|r| r.1).map(|r| r.0).collect();
        self.enqueue(tx, &queued).await?;
        let mut fifo: Vec<Uuid> = rows.iter().filter(|r| !r.1).map(|r| r.2).collect();
        fifo.sort_unstable();
        fifo.dedup();
        for endpoint in fifo {
            self.advance_fifo(tx, endpoint).await?;
        }
        Ok(())
    }

    /// Gives a FIFO endpoint's oldest pending delivery its job, unless it has one; the
    /// endpoint row lock serializes this per endpoint.
    pub(super) async fn advance_fifo(
        &self,
        tx: &mut neo_db::UnitOfWork,
        endpoint: Uuid,
    ) -> Result<(), EventError> {
        sqlx::query(AssertSqlSafe(self.inner.sql.lock_endpoint.clone()))
            .bind(endpoint)
            .execute(&mut ***tx)
            .await
            .map_err(db_error)?;
        let head: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(self.inner.sql.fifo_head.clone()))
            .bind(endpoint)
            .fetch_all(&mut ***tx)
            .await
            .map_err(db_error)?;
        self.enqueue(tx, &head).await
    }

    async fn enqueue(
        &self,
        tx: &mut neo_db::UnitOfWork,
        deliveries: &[i64],
    ) -> Result<(), EventError> {
        let jobs = deliveries
            .iter()
            .map(|id| {
                Ok(NewJob::new(
                    &self.inner.config.job_kind,
                    &serde_json::json!({ "delivery": id }),
                )?
                .max_attempts(self.inner.config.max_attempts())
                .unique_key(format!("webhook-delivery:{id}")))
            })
            .collect::<Result<Vec<_>, neo_queue::Error>>()?;
        self.inner
            .queue
            .enqueue_many(&mut ***tx, jobs, OnDuplicate::Skip)
            .await?;
        Ok(())
    }

    /// One delivery.
    ///
    /// # Errors
    /// [`EventError::NotFound`]; a database error.
    pub async fn delivery(&self, id: i64) -> Result<Delivery, EventError> {
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.delivery.clone()))
            .bind(id)
            .fetch_optional(self.inner.db.pool())
            .await
            .map_err(db_error)?
            .ok_or_else(|| not_found("delivery", id))?;
        delivery_from_row(&row)
    }

    /// An endpoint's deliveries, oldest first, optionally only those with `status`.
    ///
    /// # Errors
    /// A database error.
    pub async fn deliveries(
        &self,
        endpoint: Uuid,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> Result<Vec<Delivery>, EventError> {
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.deliveries.clone()))
            .bind(endpoint)
            .bind(status.map(DeliveryStatus::as_str))
            .bind(i64::from(limit))
            .fetch_all(self.inner.db.pool())
            .await
            .map_err(db_error)?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// Sends a dead delivery again (same `webhook-id`, fresh attempts); returns whether it was
    /// dead.
    ///
    /// # Errors
    /// A database or queue error.
    pub async fn replay(&self, delivery: i64) -> Result<bool, EventError> {
        let mut tx = self.inner.db.begin().await?;
        let replayed: Vec<(i64, bool, Uuid)> =
            sqlx::query_as(AssertSqlSafe(self.inner.sql.replay_one.clone()))
                .bind(delivery)
                .fetch_all(&mut **tx)
                .await
                .map_err(db_error)?;
        self.enqueue_created(&mut tx, &replayed).await?;
        tx.commit().await?;
        Ok(!replayed.is_empty())
    }

    /// Sends again every delivery of `endpoint` that went dead since `since`; returns how many.
    ///
    /// # Errors
    /// A database or queue error.
    pub async fn replay_since(
        &self,
        endpoint: Uuid,
        since: DateTime<Utc>,
    ) -> Result<usize, EventError> {
        let mut tx = self.inner.db.begin().await?;
        let replayed: Vec<(i64, bool, Uuid)> =
            sqlx::query_as(AssertSqlSafe(self.inner.sql.replay_since.clone()))
                .bind(endpoint)
                .bind(since)
                .fetch_all(&mut **tx)
                .await
                .map_err(db_error)?;
        self.enqueue_created(&mut tx, &replayed).await?;
        tx.commit().await?;
        Ok(replayed.len())
    }

    /// Deletes delivered and dead deliveries last changed more than `older_than` ago, `batch`
    /// rows per statement, then the messages left without deliveries; returns how many
    /// deliveries went. Pending deliveries are never touched, except those a fan-out recorded
    /// for an endpoint that was deleted while it ran.
    ///
    /// # Errors
    /// [`EventError::Invalid`] for a zero batch; a database error (rows deleted by earlier
    /// statements stay deleted).
    pub async fn purge(
        &self,
        older_than: std::time::Duration,
        batch: u32,
    ) -> Result<u64, EventError> {
        if batch == 0 {
            return Err(EventError::Invalid {
                what: "purge batch",
                reason: "must be at least 1".into(),
            });
        }
        let age_ms = older_than.as_secs_f64() * 1e3;
        let mut purged = 0;
        loop {
            let done = sqlx::query(AssertSqlSafe(self.inner.sql.purge_deliveries.clone()))
                .bind(age_ms)
                .bind(i64::from(batch))
                .execute(self.inner.db.pool())
                .await
                .map_err(db_error)?;
            purged += done.rows_affected();
            if done.rows_affected() < u64::from(batch) {
                break;
            }
        }
        sqlx::query(AssertSqlSafe(self.inner.sql.purge_messages.clone()))
            .bind(age_ms)
            .execute(self.inner.db.pool())
            .await
            .map_err(db_error)?;
        Ok(purged)
    }

    /// Writes the pending delivery status updates and stops the status writer.
    pub async fn shutdown(&self) {
        if let Some(writer) = self.inner.status.get() {
            writer.shutdown().await;
        }
    }
}

/// The message body: `{"type", "timestamp", "data"}`, as Standard Webhooks suggests.
pub(super) fn message_body(event: &DomainEvent, max: usize) -> Result<String, EventError> {
    let body = serde_json::to_string(&serde_json::json!({
        "type": event.event_type(),
        "timestamp": event.occurred_at(),
        "data": event.payload(),
    }))
    .map_err(|e| EventError::Invalid {
        what: "event payload",
        reason: e.to_string(),
    })?;
    if body.len() > max {
        return Err(EventError::Invalid {
            what: "event payload",
            reason: format!(
                "the webhook message is {} bytes, more than max_payload_bytes ({max})",
                body.len()
            ),
        });
    }
    Ok(body)
}

fn validate_filter(filter: &str) -> Result<(), EventError> {
    if filter == "*" {
        return Ok(());
    }
    match filter.strip_suffix(".*") {
        Some(prefix) => validate_type("subscription filter", prefix, false),
        None => validate_type("subscription filter", filter, true),
    }
}

fn validate_headers(headers: &BTreeMap<String, String>) -> Result<(), EventError> {
    let invalid = |reason: String| EventError::Invalid {
        what: "endpoint header",
        reason,
    };
    if headers.len() > MAX_HEADERS {
        return Err(invalid(format!("at most {MAX_HEADERS} headers")));
    }
    for (name, value) in headers {
        let parsed = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("{name:?} is not a header name")))?;
        if RESERVED_HEADERS.contains(&parsed.as_str()) {
            return Err(invalid(format!("{name:?} is set by the library")));
        }
        reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| invalid(format!("the value of {name:?} is not a valid header value")))?;
    }
    Ok(())
}

fn endpoint_from_row(row: &PgRow) -> Result<Endpoint, EventError> {
    let secrets: Vec<String> = row.try_get(3).map_err(db_error)?;
    let secret = secrets
        .first()
        .ok_or_else(|| EventError::Invalid {
            what: "stored endpoint",
            reason: "it has no secret".into(),
        })
        .and_then(|s| {
            WebhookSecret::parse(s).map_err(|e| EventError::Invalid {
                what: "stored endpoint secret",
                reason: e.to_string(),
            })
        })?;
    let headers: sqlx::types::Json<BTreeMap<String, String>> = row.try_get(7).map_err(db_error)?;
    let rate: Option<i32> = row.try_get(6).map_err(db_error)?;
    Ok(Endpoint {
        id: row.try_get(0).map_err(db_error)?,
        tenant_id: row.try_get(1).map_err(db_error)?,
        url: row.try_get(2).map_err(db_error)?,
        enabled: row.try_get(4).map_err(db_error)?,
        disabled_reason: row.try_get(5).map_err(db_error)?,
        rate_limit_per_second: rate.and_then(|r| u32::try_from(r).ok()),
        headers: headers.0,
        description: row.try_get(8).map_err(db_error)?,
        created_at: row.try_get(9).map_err(db_error)?,
        fifo: row.try_get(10).map_err(db_error)?,
        secret,
    })
}

fn delivery_from_row(row: &PgRow) -> Result<Delivery, EventError> {
    let status: String = row.try_get(4).map_err(db_error)?;
    let get = || -> Result<Delivery, sqlx::Error> {
        Ok(Delivery {
            id: row.try_get(0)?,
            message_id: row.try_get(1)?,
            endpoint_id: row.try_get(2)?,
            event_type: row.try_get(3)?,
            status: DeliveryStatus::Pending,
            attempts: row.try_get(5)?,
            response_status: row.try_get(6)?,
            response_body: row.try_get(7)?,
            duration_ms: row.try_get(8)?,
            last_error: row.try_get(9)?,
            next_attempt_at: row.try_get(10)?,
            created_at: row.try_get(11)?,
            delivered_at: row.try_get(12)?,
        })
    };
    Ok(Delivery {
        status: DeliveryStatus::parse(&status)?,
        ..get().map_err(db_error)?
    })
}
