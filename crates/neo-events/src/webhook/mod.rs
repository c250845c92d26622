//! Webhooks: event types, endpoints, subscriptions and deliveries in PostgreSQL; fan-out of
//! dispatched events into delivery jobs on neo-queue; signed delivery over a pooled HTTP client.

mod config;
mod deliver;
mod dispatch;
mod http;
mod inline;
mod regions;
mod rows;
mod schemas;
mod stats;
mod store;
mod verify;

pub use config::{ResealConfig, WebhookConfig};
pub use regions::MAX_REGION_LEN;
pub use stats::EndpointStats;
pub use store::{AtRest, DeliveryAttempt, EndpointSummary, FannedOut, ResealProgress, Webhooks};
pub use verify::{VERIFICATION_EVENT_TYPE, Verification, verification_answer};

use crate::{EventError, WebhookSecret};
use chrono::{DateTime, Utc};
use neo_core::TenantId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

use neo_core::sync::lock;

/// An event type endpoints can subscribe to, with an optional description and JSON schema for
/// the people writing receivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventTypeInfo {
    /// The dotted name, as in [`DomainEvent::event_type`](crate::DomainEvent::event_type).
    pub name: String,
    /// What it means.
    pub description: String,
    /// The JSON schema of its `data`, if published: for the people writing receivers, and
    /// refused at registration when it is not a valid JSON Schema. Payloads are checked
    /// against the versioned schemas of
    /// [`Webhooks::register_event_schema`](crate::Webhooks::register_event_schema).
    pub schema: Option<serde_json::Value>,
}

/// What to create an endpoint with.
///
/// # Example
/// ```
/// use neo_events::NewEndpoint;
/// let endpoint = NewEndpoint::new("https://hooks.example.com/neo")
///     .subscribe("organization.*")
///     .header("x-team", "billing")
///     .rate_limit(50);
/// # let _ = endpoint;
/// ```
/// `Debug` shows header names, never their values (often a receiver's token), nor the secret.
#[derive(Clone, PartialEq)]
pub struct NewEndpoint {
    /// Where deliveries are POSTed.
    pub url: String,
    /// The tenant whose events it receives (events whose
    /// [`tenant_id`](crate::DomainEvent::tenant_id) is this one); `None` receives every
    /// tenant's events.
    pub tenant_id: Option<TenantId>,
    /// The signing secret; generated when `None`.
    pub secret: Option<WebhookSecret>,
    /// Event type filters: a type, a prefix such as `organization.*`, or `*`.
    pub filters: Vec<String>,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Most deliveries per second to it.
    pub rate_limit_per_second: Option<u32>,
    /// Free text.
    pub description: String,
    /// Deliver one message at a time, in the order deliveries were created; a failing message
    /// holds back the ones after it until it is delivered or dead-lettered.
    pub fifo: bool,
    /// The region whose delivery workers send to it
    /// ([`Webhooks::handle_region`](crate::Webhooks::handle_region)); `None`: the workers of
    /// [`Webhooks::handle`](crate::Webhooks::handle).
    pub region: Option<String>,
}

impl NewEndpoint {
    /// An endpoint at `url` with no subscriptions yet.
    pub fn new(url: impl Into<String>) -> Self {
        NewEndpoint {
            url: url.into(),
            tenant_id: None,
            secret: None,
            filters: Vec::new(),
            headers: BTreeMap::new(),
            rate_limit_per_second: None,
            description: String::new(),
            fifo: false,
            region: None,
        }
    }

    /// Delivered by the workers of `region` only.
    #[must_use]
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Delivers in order, one at a time.
    #[must_use]
    pub fn fifo(mut self, fifo: bool) -> Self {
        self.fifo = fifo;
        self
    }

    /// Receives only this tenant's events.
    #[must_use]
    pub fn tenant(mut self, tenant: TenantId) -> Self {
        self.tenant_id = Some(tenant);
        self
    }

    /// Subscribes to a type, a `prefix.*` or `*`.
    #[must_use]
    pub fn subscribe(mut self, filter: impl Into<String>) -> Self {
        self.filters.push(filter.into());
        self
    }

    /// Adds a request header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Caps deliveries per second.
    #[must_use]
    pub fn rate_limit(mut self, per_second: u32) -> Self {
        self.rate_limit_per_second = Some(per_second);
        self
    }

    /// Uses this secret instead of a generated one.
    #[must_use]
    pub fn secret(mut self, secret: WebhookSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Sets the description.
    #[must_use]
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }
}

/// A stored endpoint. Its secret is shown only through [`Endpoint::secret`], never in `Debug`;
/// `Debug` shows header names without their values.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct Endpoint {
    /// Its id.
    pub id: Uuid,
    /// Its tenant, if it belongs to one.
    pub tenant_id: Option<TenantId>,
    /// Where deliveries go.
    pub url: String,
    /// Whether deliveries are sent.
    pub enabled: bool,
    /// Why it was disabled (a `410 Gone`, an operator).
    pub disabled_reason: Option<String>,
    /// Most deliveries per second.
    pub rate_limit_per_second: Option<u32>,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Free text.
    pub description: String,
    /// Delivers in order, one at a time.
    pub fifo: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The region whose workers deliver to it (`None`: the default workers).
    pub region: Option<String>,
    secret: WebhookSecret,
}

/// Header names with `[REDACTED]` for every value, for `Debug`.
pub(crate) struct RedactedHeaders<'a>(pub(crate) &'a BTreeMap<String, String>);

impl std::fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|name| (name, "[REDACTED]")))
            .finish()
    }
}

impl std::fmt::Debug for NewEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewEndpoint")
            .field("url", &self.url)
            .field("tenant_id", &self.tenant_id)
            .field("secret", &self.secret)
            .field("filters", &self.filters)
            .field("headers", &RedactedHeaders(&self.headers))
            .field("rate_limit_per_second", &self.rate_limit_per_second)
            .field("description", &self.description)
            .field("fifo", &self.fifo)
            .field("region", &self.region)
            .finish()
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("url", &self.url)
            .field("enabled", &self.enabled)
            .field("disabled_reason", &self.disabled_reason)
            .field("rate_limit_per_second", &self.rate_limit_per_second)
            .field("headers", &RedactedHeaders(&self.headers))
            .field("description", &self.description)
            .field("fifo", &self.fifo)
            .field("created_at", &self.created_at)
            .field("region", &self.region)
            .field("secret", &self.secret)
            .finish()
    }
}

impl Endpoint {
    /// The current signing secret, to hand to the receiver.
    pub fn secret(&self) -> &WebhookSecret {
        &self.secret
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet; attempts may remain.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Given up: attempts exhausted, the endpoint gone or disabled. Replay brings it back.
    Dead,
}

impl DeliveryStatus {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }

    fn parse(text: &str) -> Result<Self, EventError> {
        match text {
            "pending" => Ok(DeliveryStatus::Pending),
            "delivered" => Ok(DeliveryStatus::Delivered),
            "dead" => Ok(DeliveryStatus::Dead),
            other => Err(EventError::Invalid {
                what: "delivery status",
                reason: format!("{other:?} is not pending, delivered or dead"),
            }),
        }
    }
}

/// One message to one endpoint, with the outcome of its last attempt.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Delivery {
    /// Its id.
    pub id: i64,
    /// The message (the event id; `webhook-id` on the wire, the same on every attempt).
    pub message_id: Uuid,
    /// The endpoint.
    pub endpoint_id: Uuid,
    /// The tenant of its event, which its delivery job names too (see
    /// `neo_queue::Job::tenant_id`).
    pub tenant_id: Option<TenantId>,
    /// The event type.
    pub event_type: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: i32,
    /// The last answer's status code.
    pub response_status: Option<i32>,
    /// The last answer's body, capped at `max_response_body` bytes.
    pub response_body: Option<String>,
    /// How long the last attempt took.
    pub duration_ms: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due, while pending after a failure.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When the endpoint accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Something operators should hear about, from [`Webhooks::operational_events`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum OperationalEvent {
    /// The endpoint's circuit breaker opened: most recent deliveries failed.
    EndpointFailing {
        /// The endpoint.
        endpoint_id: Uuid,
        /// The last failure.
        last_error: String,
    },
    /// The endpoint was disabled (it answered `410 Gone`).
    EndpointDisabled {
        /// The endpoint.
        endpoint_id: Uuid,
        /// Why.
        reason: String,
    },
    /// A delivery used its last attempt and went to the dead letters.
    DeliveryExhausted {
        /// The delivery.
        delivery_id: i64,
        /// Its endpoint.
        endpoint_id: Uuid,
        /// Its message.
        message_id: Uuid,
        /// The last failure.
        last_error: String,
    },
}

/// The time `wait` from now; `None` past what a timestamp holds.
pub(crate) fn from_now(wait: std::time::Duration) -> Option<DateTime<Utc>> {
    Utc::now().checked_add_signed(chrono::TimeDelta::from_std(wait).ok()?)
}
