//! Idempotent publish: an event published under a key the outbox saw within
//! [`OutboxConfig::idempotency_window`](crate::OutboxConfig::idempotency_window) records
//! nothing and answers the first event's id. Outbox migration 10 keeps the keys; publishing
//! without a key never reads them.

use super::Outbox;
use crate::{DomainEvent, EventError};
use neo_core::EventId;
use neo_db::{Schema, TableName};
use sqlx::{Acquire, AssertSqlSafe, Postgres};

/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The scope of keys of events without a tenant.
const NO_TENANT: &str = "'00000000-0000-0000-0000-000000000000'::uuid";

/// What [`Outbox::publish_idempotent`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// The event recorded under the key: the one just given, or the first one when
    /// `duplicate`.
    pub event_id: EventId,
    /// The key was seen within the window: nothing was recorded.
    pub duplicate: bool,
}

/// The statements of idempotent publishing, built once per schema.
#[derive(Debug)]
pub(super) struct IdempotencySql {
    /// Takes the key ($1 tenant, $2 key, $3 event id, $4 window in ms) unless a live one
    /// holds it, and records the event (`publish_cte_when` at $5, $6) only then.
    claim_and_publish_prefix: String,
    /// The event id of a live key.
    first: String,
    /// Deletes expired keys, a bounded batch at a time.
    expire: String,
}

impl IdempotencySql {
    pub(super) fn new(schema: &Schema) -> Result<Self, EventError> {
        let t = TableName::new("outbox_idempotency")?.in_schema(schema);
        Ok(IdempotencySql {
            claim_and_publish_prefix: format!(
                "WITH neo_key AS (INSERT INTO {t} AS k (tenant_id, key, event_id, expires_at) \
                 VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond') \
                 ON CONFLICT ((coalesce(tenant_id, {NO_TENANT})), key) DO UPDATE \
                 SET event_id = EXCLUDED.event_id, created_at = now(), expires_at = EXCLUDED.expires_at \
                 WHERE k.expires_at <= now() RETURNING event_id), "
            ),
            first: format!(
                "SELECT event_id FROM {t} WHERE coalesce(tenant_id, {NO_TENANT}) = coalesce($1, {NO_TENANT}) \
                 AND key = $2"
            ),
            expire: format!(
                "DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE expires_at <= now() LIMIT $1))"
            ),
        })
    }
}

impl Outbox {
    /// [`publish`](Self::publish) under an idempotency key: when an event of the same tenant
    /// was published under `key` within
    /// [`idempotency_window`](crate::OutboxConfig::idempotency_window) (and its transaction
    /// committed), nothing is recorded and the first event's id comes back with
    /// `duplicate: true`. Keys are per tenant; a concurrent publisher of the same key waits
    /// for the first one's transaction. Takes `&mut *uow` like `publish`; the key is kept
    /// only if the transaction commits. Publishing without a key costs nothing more.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(db: neo_db::Db, outbox: neo_events::Outbox) -> Result<(), neo_events::EventError> {
    /// use neo_events::DomainEvent;
    /// let event = DomainEvent::new("invoice.paid", "invoice", "inv_7", &7)?;
    /// let mut uow = db.begin().await?;
    /// let published = outbox.publish_idempotent(&mut *uow, &event, "payment-7").await?;
    /// uow.commit().await?;
    /// if published.duplicate {
    ///     println!("already published as {}", published.event_id);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`EventError::Invalid`] for an empty key or one longer than
    /// [`MAX_IDEMPOTENCY_KEY_LEN`] bytes; under row-level security [`EventError::Tenant`] for
    /// an event without a tenant; a database error.
    pub async fn publish_idempotent<'c, A>(
        &self,
        exec: A,
        event: &DomainEvent,
        key: &str,
    ) -> Result<Published, EventError>
    where
        A: Acquire<'c, Database = Postgres> + Send,
    {
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(EventError::Invalid {
                what: "idempotency key",
                reason: format!(
                    "must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes, not {}",
                    key.len()
                ),
            });
        }
        if self.tenancy.setting().is_some() && event.tenant_id().is_none() {
            return Err(neo_tenant::Error::NoTenantInScope.into());
        }
        self.check_before_publish(std::slice::from_ref(event))
            .await?;
        // The claim and the event in one transaction (a savepoint in the caller's): the key
        // is taken if and only if the event is recorded.
        let mut tx = exec.begin().await.map_err(neo_db::Error::from)?;
        let sql = format!(
            "{}{} SELECT event_id FROM neo_key",
            self.sql.idempotency.claim_and_publish_prefix,
            self.publish_cte_when(5, "EXISTS (SELECT 1 FROM neo_key)")
        );
        let events = [event];
        let (events, channel) = self.publish_params(events);
        let tenant = event.tenant_id().map(|t| *t.as_uuid());
        let window_ms = self.config.idempotency_window.as_secs_f64() * 1e3;
        let claimed: Option<EventId> = sqlx::query_scalar(AssertSqlSafe(sql))
            .persistent(self.db.pooler().named_statements())
            .bind(tenant)
            .bind(key)
            .bind(event.id())
            .bind(window_ms)
            .bind(events)
            .bind(channel)
            .fetch_optional(&mut *tx)
            .await
            .map_err(neo_db::Error::from)?;
        let published = match claimed {
            Some(_) => {
                metrics::counter!(crate::metric_names::PUBLISHED_TOTAL).increment(1);
                Published {
                    event_id: event.id(),
                    duplicate: false,
                }
            }
            None => {
                let first: EventId =
                    sqlx::query_scalar(AssertSqlSafe(self.sql.idempotency.first.clone()))
                        .persistent(self.db.pooler().named_statements())
                        .bind(tenant)
                        .bind(key)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(neo_db::Error::from)?;
                Published {
                    event_id: first,
                    duplicate: true,
                }
            }
        };
        tx.commit().await.map_err(neo_db::Error::from)?;
        Ok(published)
    }

    /// Deletes idempotency keys whose window has passed, in statements of `archive_batch`
    /// rows (on the system `Db` under row-level security); returns how many. Expired keys
    /// are taken over by a new publish anyway: this only reclaims their space.
    ///
    /// # Errors
    /// A database error (keys deleted by earlier statements stay deleted).
    pub async fn expire_idempotency_keys(&self) -> Result<u64, EventError> {
        let mut deleted = 0;
        loop {
            let mut conn = self.system().statement_connection().await?;
            let done = sqlx::query(AssertSqlSafe(self.sql.idempotency.expire.clone()))
                .persistent(self.system().pooler().named_statements())
                .bind(i64::try_from(self.config.archive_batch).unwrap_or(i64::MAX))
                .execute(&mut *conn)
                .await
                .map_err(neo_db::Error::from)?;
            conn.finish().await?;
            deleted += done.rows_affected();
            if done.rows_affected() < self.config.archive_batch as u64 {
                return Ok(deleted);
            }
        }
    }
}
