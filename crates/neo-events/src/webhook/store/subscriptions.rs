//! Event types and the subscriptions that route them to endpoints.

use super::{Webhooks, db_error, not_found};
use crate::EventError;
use crate::event::validate_type;
use crate::webhook::EventTypeInfo;
use neo_core::HasErrorKind;
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

impl Webhooks {
    /// Registers (or updates) an event type.
    ///
    /// # Errors
    /// [`EventError::Invalid`] for a bad name or a schema that is not a valid JSON Schema; a
    /// database error.
    pub async fn register_event_type(&self, info: &EventTypeInfo) -> Result<(), EventError> {
        validate_type("event type", &info.name, true)?;
        crate::webhook::schemas::check_descriptive(&info.name, info.schema.as_ref())?;
        let mut conn = self.inner.db.statement_connection().await?;
        sqlx::query(AssertSqlSafe(self.inner.sql.upsert_event_type.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(&info.name)
            .bind(&info.description)
            .bind(&info.schema)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        conn.finish().await?;
        Ok(())
    }

    /// Every registered event type, by name.
    ///
    /// # Errors
    /// A database error.
    pub async fn event_types(&self) -> Result<Vec<EventTypeInfo>, EventError> {
        let mut conn = self.inner.db.statement_connection().await?;
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.event_types.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        conn.finish().await?;
        rows.iter()
            .map(|r| {
                Ok(EventTypeInfo {
                    name: r.try_get("name")?,
                    description: r.try_get("description")?,
                    schema: r.try_get("schema")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db_error)
    }

    /// Adds a subscription (a type, a `prefix.*` or `*`).
    ///
    /// # Errors
    /// [`EventError::Invalid`] for a bad filter; [`EventError::NotFound`]; a database error.
    pub async fn subscribe(&self, endpoint: Uuid, filter: &str) -> Result<(), EventError> {
        let tenant = self.inner.tenancy.acting(None)?;
        validate_filter(filter)?;
        let mut conn = if self.inner.tenancy.setting().is_some() {
            // The subscription row names the acting tenant, which the foreign key does not
            // check (it sees every tenant's endpoints): the endpoint must be the tenant's.
            let mut tx = self.inner.tenancy.begin(&self.inner.db, tenant).await?;
            let mine: Option<Uuid> =
                sqlx::query_scalar(AssertSqlSafe(self.inner.sql.lock_endpoint.clone()))
                    .persistent(self.inner.db.pooler().named_statements())
                    .bind(endpoint)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(db_error)?;
            if mine.is_none() {
                return Err(not_found("endpoint", endpoint));
            }
            neo_db::StatementConnection::Transaction(tx)
        } else {
            self.inner.db.statement_connection().await?
        };
        sqlx::query(AssertSqlSafe(self.inner.sql.insert_subscriptions.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(endpoint)
            .bind(vec![filter])
            .execute(&mut *conn)
            .await
            .map_err(|e| match neo_db::Error::from(e) {
                db if db.kind() == neo_core::ErrorKind::Validation => {
                    not_found("endpoint", endpoint)
                }
                db => EventError::Db(db),
            })?;
        conn.finish().await?;
        Ok(())
    }

    /// Removes a subscription; returns whether it existed.
    ///
    /// # Errors
    /// A database error.
    pub async fn unsubscribe(&self, endpoint: Uuid, filter: &str) -> Result<bool, EventError> {
        let (_, mut conn) = self.acting_connection(None).await?;
        let done = sqlx::query(AssertSqlSafe(self.inner.sql.delete_subscription.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(endpoint)
            .bind(filter)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        conn.finish().await?;
        Ok(done.rows_affected() > 0)
    }
}

pub(super) fn validate_filter(filter: &str) -> Result<(), EventError> {
    if filter == "*" {
        return Ok(());
    }
    match filter.strip_suffix(".*") {
        Some(prefix) => validate_type("subscription filter", prefix, false),
        None => validate_type("subscription filter", filter, true),
    }
}
