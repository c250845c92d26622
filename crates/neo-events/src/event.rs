//! Domain events.

use crate::EventError;
use chrono::{DateTime, SubsecRound, Utc};
use neo_core::{EventId, TenantId, TraceContext};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest event type or aggregate type, in bytes.
pub const MAX_TYPE_LEN: usize = 128;

/// Something that happened to an aggregate, recorded in the same transaction as the change.
///
/// # Example
/// ```
/// use neo_events::DomainEvent;
/// let event = DomainEvent::new("organization.created", "organization", "org_42", &serde_json::json!({ "name": "Acme" }))?;
/// assert_eq!(event.event_type(), "organization.created");
/// # Ok::<(), neo_events::EventError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainEvent {
    id: EventId,
    event_type: String,
    aggregate_type: String,
    aggregate_id: String,
    tenant_id: Option<TenantId>,
    payload: serde_json::Value,
    metadata: serde_json::Value,
    occurred_at: DateTime<Utc>,
    correlation_id: Option<Uuid>,
    causation_id: Option<EventId>,
    schema_version: i32,
    /// The trace context of the span that made it (`{"traceparent", "tracestate"}`), left out
    /// of the JSON when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace_context: Option<TraceContext>,
}

pub(crate) fn validate_type(
    what: &'static str,
    name: &str,
    dotted: bool,
) -> Result<(), EventError> {
    let segment_ok = |s: &str| {
        s.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    let segments: Vec<&str> = name.split('.').collect();
    let ok = name.len() <= MAX_TYPE_LEN
        && segments.iter().all(|s| segment_ok(s))
        && (!dotted || segments.len() >= 2);
    if ok {
        Ok(())
    } else {
        let shape = if dotted {
            "a dotted name like organization.created"
        } else {
            "a name like organization"
        };
        Err(EventError::Invalid {
            what,
            reason: format!(
                "{:?} is not {shape}: lowercase segments of a-z 0-9 _, each starting with a letter, at most {MAX_TYPE_LEN} bytes",
                name.chars().take(64).collect::<String>()
            ),
        })
    }
}

impl DomainEvent {
    /// A new event (id UUIDv7, `occurred_at` now, schema version 1). It carries the current
    /// span's trace context when a [`TracePropagation`](neo_core::trace::TracePropagation) is
    /// installed (replace it with [`with_trace_context`](Self::with_trace_context)).
    ///
    /// # Errors
    /// [`EventError::Invalid`] for a bad event or aggregate type, an empty aggregate id, or a
    /// payload that does not serialize.
    pub fn new(
        event_type: &str,
        aggregate_type: &str,
        aggregate_id: &str,
        payload: &impl Serialize,
    ) -> Result<Self, EventError> {
        validate_type("event type", event_type, true)?;
        validate_type("aggregate type", aggregate_type, false)?;
        if aggregate_id.is_empty() || aggregate_id.len() > 256 {
            return Err(EventError::Invalid {
                what: "aggregate id",
                reason: "must be 1 to 256 bytes".into(),
            });
        }
        let payload = serde_json::to_value(payload).map_err(|e| EventError::Invalid {
            what: "payload",
            reason: e.to_string(),
        })?;
        Ok(DomainEvent {
            id: EventId::new(),
            event_type: event_type.to_owned(),
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            tenant_id: None,
            payload,
            metadata: serde_json::Value::Object(serde_json::Map::new()),
            // PostgreSQL keeps microseconds: so does the event, and it reads back equal.
            occurred_at: Utc::now().trunc_subsecs(6),
            correlation_id: None,
            causation_id: None,
            schema_version: 1,
            trace_context: neo_core::trace::current(),
        })
    }

    /// The tenant the event belongs to.
    #[must_use]
    pub fn tenant(mut self, tenant: TenantId) -> Self {
        self.tenant_id = Some(tenant);
        self
    }

    /// Request-level metadata (actor, IP, ...), a JSON object.
    ///
    /// # Errors
    /// [`EventError::Invalid`] when `metadata` is not an object.
    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Result<Self, EventError> {
        if !metadata.is_object() {
            return Err(EventError::Invalid {
                what: "metadata",
                reason: "must be a JSON object".into(),
            });
        }
        self.metadata = metadata;
        Ok(self)
    }

    /// The request (or saga) this event is part of.
    #[must_use]
    pub fn correlated_with(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = Some(correlation_id);
        self
    }

    /// The event that caused this one.
    #[must_use]
    pub fn caused_by(mut self, cause: EventId) -> Self {
        self.causation_id = Some(cause);
        self
    }

    /// The W3C trace context the event carries through the outbox (stored with it; the
    /// dispatch span and its webhook deliveries link to it); `None` for none. Replaces the one
    /// [`new`](Self::new) captured from the current span.
    #[must_use]
    pub fn with_trace_context(mut self, context: Option<TraceContext>) -> Self {
        self.trace_context = context;
        self
    }

    /// The payload's schema version (default 1).
    #[must_use]
    pub fn schema_version(mut self, version: i32) -> Self {
        self.schema_version = version;
        self
    }

    /// The event's id.
    pub fn id(&self) -> EventId {
        self.id
    }
    /// `organization.created`.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }
    /// `organization`.
    pub fn aggregate_type(&self) -> &str {
        &self.aggregate_type
    }
    /// The aggregate's id.
    pub fn aggregate_id(&self) -> &str {
        &self.aggregate_id
    }
    /// The tenant.
    pub fn tenant_id(&self) -> Option<TenantId> {
        self.tenant_id
    }
    /// The payload.
    pub fn payload(&self) -> &serde_json::Value {
        &self.payload
    }
    /// The metadata object.
    pub fn metadata(&self) -> &serde_json::Value {
        &self.metadata
    }
    /// When it happened.
    pub fn occurred_at(&self) -> DateTime<Utc> {
        self.occurred_at
    }
    /// The correlation id.
    pub fn correlation_id(&self) -> Option<Uuid> {
        self.correlation_id
    }
    /// The causing event.
    pub fn causation_id(&self) -> Option<EventId> {
        self.causation_id
    }
    /// The payload's schema version.
    pub fn version(&self) -> i32 {
        self.schema_version
    }
    /// The trace context of the span that made it.
    pub fn trace_context(&self) -> Option<&TraceContext> {
        self.trace_context.as_ref()
    }

    pub(crate) fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(DomainEvent {
            id: row.try_get("id")?,
            event_type: row.try_get("event_type")?,
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            tenant_id: row.try_get("tenant_id")?,
            payload: row.try_get("payload")?,
            metadata: row.try_get("metadata")?,
            occurred_at: row.try_get("occurred_at")?,
            correlation_id: row.try_get("correlation_id")?,
            causation_id: row.try_get("causation_id")?,
            schema_version: row.try_get("schema_version")?,
            trace_context: row
                .try_get::<Option<sqlx::types::Json<TraceContext>>, _>("trace_context")?
                .map(|json| json.0),
        })
    }
}
