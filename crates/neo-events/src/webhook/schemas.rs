//! Event type schemas: a JSON Schema per event type and schema version, refused at
//! registration when the schema itself is invalid, and checked against payloads before the
//! outbox records them (`Webhooks` is a [`PublishCheck`]). Compiled schemas are cached per
//! event type for [`WebhookConfig::schema_cache_ttl`](crate::WebhookConfig::schema_cache_ttl):
//! an event whose type was looked up lately costs no statement.

use super::store::{Webhooks, db_error};
use crate::event::validate_type;
use crate::{DomainEvent, EventError, PublishCheck};
use futures_util::future::BoxFuture;
use jsonschema::Validator;
use neo_db::{Schema, TableName};
use sqlx::{AssertSqlSafe, Row};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The compiled schemas of one event type, by version (empty: the type is not checked).
type Versions = Arc<BTreeMap<i32, Arc<Validator>>>;

/// Schemas looked up lately, and the statements that read and write them.
pub(in crate::webhook) struct SchemaCache {
    upsert: String,
    select: String,
    ttl: Duration,
    types: Mutex<HashMap<String, (Instant, Versions)>>,
}

impl SchemaCache {
    pub(in crate::webhook) fn new(schema: &Schema, ttl: Duration) -> Result<Self, EventError> {
        let t = TableName::new("webhook_event_schemas")?.in_schema(schema);
        Ok(SchemaCache {
            upsert: format!(
                "INSERT INTO {t} (event_type, version, schema) VALUES ($1, $2, $3) \
                 ON CONFLICT (event_type, version) DO UPDATE SET schema = EXCLUDED.schema"
            ),
            select: format!("SELECT version, schema FROM {t} WHERE event_type = $1"),
            ttl,
            types: Mutex::new(HashMap::new()),
        })
    }

    fn cached(&self, event_type: &str) -> Option<Versions> {
        let types = neo_core::sync::lock(&self.types);
        types
            .get(event_type)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, versions)| Arc::clone(versions))
    }

    fn forget(&self, event_type: &str) {
        neo_core::sync::lock(&self.types).remove(event_type);
    }
}

/// Compiles `schema`, or says why it is not a valid JSON Schema.
/// `label` names the schema in the error.
fn compile(label: &str, schema: &serde_json::Value) -> Result<Validator, EventError> {
    jsonschema::validator_for(schema).map_err(|e| EventError::Invalid {
        what: "event schema",
        reason: format!(
            "{label}: not a valid JSON Schema at {:?}: {e}",
            e.instance_path().as_str()
        ),
    })
}

impl Webhooks {
    /// Registers (or replaces) the JSON Schema of `event_type`'s payloads at schema
    /// `version` ([`DomainEvent::schema_version`]); versions of a type coexist, each event
    /// checked against its own version's. Once a type has a schema, publishing through an
    /// outbox checked by these webhooks ([`Outbox::with_check`](crate::Outbox::with_check))
    /// refuses its events whose payload does not match, or whose version has none. Other
    /// processes see a new schema within
    /// [`schema_cache_ttl`](crate::WebhookConfig::schema_cache_ttl).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(webhooks: neo_events::Webhooks) -> Result<(), neo_events::EventError> {
    /// let schema = serde_json::json!({
    ///     "type": "object",
    ///     "required": ["name"],
    ///     "properties": { "name": { "type": "string" } }
    /// });
    /// webhooks.register_event_schema("organization.created", 1, &schema).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`EventError::Invalid`] for a bad type name, a version below 1, or a schema that is
    /// not a valid JSON Schema (nothing is stored); a database error.
    pub async fn register_event_schema(
        &self,
        event_type: &str,
        version: i32,
        schema: &serde_json::Value,
    ) -> Result<(), EventError> {
        validate_type("event type", event_type, true)?;
        if version < 1 {
            return Err(EventError::Invalid {
                what: "event schema",
                reason: format!("version must be at least 1, not {version}"),
            });
        }
        compile(&format!("{event_type} version {version}"), schema)?;
        let cache = &self.inner.schemas;
        let system = &self.inner.system;
        let mut conn = system.statement_connection().await?;
        sqlx::query(AssertSqlSafe(cache.upsert.clone()))
            .persistent(system.pooler().named_statements())
            .bind(event_type)
            .bind(version)
            .bind(schema)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        conn.finish().await?;
        cache.forget(event_type);
        Ok(())
    }

    /// Checks each event's payload against the schema of its type and version (see
    /// [`register_event_schema`](Self::register_event_schema)); what
    /// [`Outbox::with_check`](crate::Outbox::with_check) runs. Types without a schema pass.
    ///
    /// # Errors
    /// [`EventError::SchemaViolation`] naming the first offending event, the JSON Pointer of
    /// the offending value and what is wrong; a database error.
    pub async fn validate_events(&self, events: &[DomainEvent]) -> Result<(), EventError> {
        for event in events {
            let versions = self.schema_versions(event.event_type()).await?;
            if versions.is_empty() {
                continue;
            }
            let violation = |path: String, message: String| EventError::SchemaViolation {
                event_type: event.event_type().to_owned(),
                version: event.version(),
                path,
                message,
            };
            let Some(validator) = versions.get(&event.version()) else {
                let known: Vec<String> = versions.keys().map(i32::to_string).collect();
                return Err(violation(
                    String::new(),
                    format!(
                        "has no schema for this version (versions {})",
                        known.join(", ")
                    ),
                ));
            };
            if let Err(error) = validator.validate(event.payload()) {
                return Err(violation(
                    error.instance_path().as_str().to_owned(),
                    error.to_string(),
                ));
            }
        }
        Ok(())
    }

    /// The compiled schemas of `event_type`, from the cache or else one statement.
    async fn schema_versions(&self, event_type: &str) -> Result<Versions, EventError> {
        let cache = &self.inner.schemas;
        if let Some(versions) = cache.cached(event_type) {
            return Ok(versions);
        }
        let system = &self.inner.system;
        let mut conn = system.statement_connection().await?;
        let rows = sqlx::query(AssertSqlSafe(cache.select.clone()))
            .persistent(system.pooler().named_statements())
            .bind(event_type)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        conn.finish().await?;
        let mut versions = BTreeMap::new();
        for row in rows {
            let version: i32 = row.try_get("version").map_err(db_error)?;
            let schema: serde_json::Value = row.try_get("schema").map_err(db_error)?;
            let label = format!("{event_type} version {version}");
            versions.insert(version, Arc::new(compile(&label, &schema)?));
        }
        let versions = Arc::new(versions);
        neo_core::sync::lock(&cache.types).insert(
            event_type.to_owned(),
            (Instant::now(), Arc::clone(&versions)),
        );
        Ok(versions)
    }
}

/// Payloads are checked against their type's schema ([`Webhooks::validate_events`]).
impl PublishCheck for Webhooks {
    fn check<'a>(&'a self, events: &'a [DomainEvent]) -> BoxFuture<'a, Result<(), EventError>> {
        Box::pin(self.validate_events(events))
    }
}

/// Refuses an event type's descriptive schema that is not a valid JSON Schema.
pub(in crate::webhook) fn check_descriptive(
    name: &str,
    schema: Option<&serde_json::Value>,
) -> Result<(), EventError> {
    match schema {
        Some(schema) => compile(name, schema).map(drop),
        None => Ok(()),
    }
}
