//! The webhook tables and what is kept with them: [`Webhooks`] and its shared state here;
//! the statements in [`sql`], endpoints and their secrets in [`endpoints`], event types and
//! subscriptions in [`subscriptions`], fan-out into delivery jobs (and FIFO ordering) in
//! [`fan_out`], reading, replaying and purging deliveries in [`deliveries`], secrets and
//! headers sealed at rest in [`sealing`], re-sealing them under a new key (and from plain
//! text), retiring keys and the strict mode in [`reseal`].

mod console_reads;
mod deliveries;
mod endpoints;
mod fan_out;
mod offboard;
mod partitions;
mod reseal;
mod sealing;
mod sql;
mod subscriptions;

use super::http::build_client;
use super::inline::InlineJob;
use super::rows::{DeliveryKey, StatusUpdate, Target, target_loader};
use super::{OperationalEvent, WebhookConfig};
use crate::EventError;
use crate::tenancy::{Tenancy, policies};
pub use console_reads::{DeliveryAttempt, EndpointSummary};
pub use fan_out::FannedOut;
pub(in crate::webhook) use fan_out::{DeliveryJob, Pending};
use neo_batch::WriteBatcher;
use neo_db::{Db, MigrationReport, MigrationSet, RlsSetting, Schema};
use neo_queue::Queue;
use neo_resilience::{CircuitBreaker, RateLimiter};
pub use reseal::{AtRest, ResealProgress};
use sql::Sql;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OnceCell, broadcast};
use uuid::Uuid;

pub(in crate::webhook) struct Inner {
    /// Tenant-scoped calls' `Db` (the application role's under row-level security).
    pub(in crate::webhook) db: Db,
    /// Cross-tenant work's `Db`: fan-out, delivery, retention, re-sealing (`db` itself
    /// without row-level security).
    pub(in crate::webhook) system: Db,
    pub(in crate::webhook) tenancy: Tenancy,
    pub(in crate::webhook) queue: Queue,
    pub(in crate::webhook) config: WebhookConfig,
    pub(in crate::webhook) sql: Sql,
    pub(in crate::webhook) client: reqwest::Client,
    pub(in crate::webhook) breakers: Mutex<HashMap<Uuid, CircuitBreaker>>,
    pub(in crate::webhook) limiters: Mutex<HashMap<Uuid, (u32, RateLimiter)>>,
    pub(in crate::webhook) operational: broadcast::Sender<OperationalEvent>,
    pub(in crate::webhook) status: OnceCell<WriteBatcher<StatusUpdate>>,
    /// The jobs of inline attempts that settled their deliveries, withdrawn in batches.
    pub(in crate::webhook) withdrawals: OnceCell<WriteBatcher<InlineJob>>,
    pub(in crate::webhook) targets: neo_batch::DataLoader<DeliveryKey, Target>,
    /// Which text the delivery read and the status write are prepared under: planned again
    /// after one ran longer than `config.replan_after_per_delivery` per delivery (see
    /// `Sql::load_for_send`). Its bound is per delivery: callers pass a call's server time
    /// divided by its deliveries.
    pub(in crate::webhook) replan: Arc<neo_db::Replanning>,
    pub(in crate::webhook) sealer: Option<neo_db::seal::Sealer>,
    /// Slots for first attempts made inline by fan-out (`config.inline_attempts`).
    pub(in crate::webhook) inline: Arc<tokio::sync::Semaphore>,
    /// Event type schemas looked up lately.
    pub(in crate::webhook) schemas: super::schemas::SchemaCache,
    schema: Schema,
}

/// Webhook endpoints, subscriptions and deliveries, and the delivery job handler; cheap to
/// clone.
///
/// Events reach endpoints in three steps: the dispatcher ([`dispatch`](Webhooks::dispatch))
/// claims committed [`Outbox`](crate::Outbox) events and fans them out
/// ([`fan_out_in`](Webhooks::fan_out_in)) in one transaction, recording one delivery per
/// subscribed endpoint and enqueueing one neo-queue job per delivery; a neo-queue
/// [`Worker`](neo_queue::Worker) set up with [`handle`](Webhooks::handle) sends them, signed
/// per Standard Webhooks, retrying on the configured schedule (with
/// [`inline_attempts`](WebhookConfig::inline_attempts), the dispatcher makes a lone event's
/// first attempt itself).
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
/// let dispatcher = webhooks.dispatch(&outbox, std::future::pending());
/// let worker = webhooks.handle(neo_queue::Worker::new(queue, Default::default()));
/// let _ = tokio::join!(dispatcher, worker.run(std::future::pending()));
/// # Ok(()) }
/// ```
///
/// # Row-level security
/// [`with_row_level_security`](Webhooks::with_row_level_security) puts endpoints,
/// subscriptions, messages and deliveries under PostgreSQL row-level security on their
/// `tenant_id`. Then every tenant-scoped call — creating, reading, listing, changing and
/// deleting endpoints and subscriptions, reading and replaying deliveries, offboarding — acts
/// for the tenant it is given (`NewEndpoint::tenant_id`, `endpoints(Some(..))`) or else the
/// task's ([`neo_tenant::scope`]), and without one fails with [`EventError::Tenant`] before
/// any query. Another tenant's endpoint or delivery is [`EventError::NotFound`]. Dispatch,
/// fan-out, delivery, [`purge`](Webhooks::purge) (retention) and re-sealing span tenants and
/// run on the system `Db`. Event types are one catalogue for every tenant.
#[derive(Clone)]
pub struct Webhooks {
    pub(in crate::webhook) inner: Arc<Inner>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("config", &self.inner.config)
            .field("schema", &self.inner.schema)
            .field("sealer", &self.inner.sealer)
            .finish_non_exhaustive()
    }
}

/// The tables under row-level security.
const TENANT_TABLES: [&str; 4] = [
    "webhook_endpoints",
    "webhook_subscriptions",
    "webhook_messages",
    "webhook_deliveries",
];

pub(super) fn db_error(error: sqlx::Error) -> EventError {
    EventError::Db(neo_db::Error::from(error))
}

pub(super) fn not_found(what: &'static str, id: impl std::fmt::Display) -> EventError {
    EventError::NotFound {
        what,
        id: id.to_string(),
    }
}

impl Webhooks {
    /// The tenant a tenant-scoped call acts for (`explicit`, else under row-level security
    /// the task's, failing closed without one) and a statement connection of the
    /// application `Db` acting for it.
    pub(in crate::webhook) async fn acting_connection(
        &self,
        explicit: Option<neo_core::TenantId>,
    ) -> Result<(Option<neo_core::TenantId>, neo_db::StatementConnection), EventError> {
        let tenant = self.inner.tenancy.acting(explicit)?;
        let conn = self
            .inner
            .tenancy
            .connection(&self.inner.db, tenant)
            .await?;
        Ok((tenant, conn))
    }

    /// Webhooks in `config.schema`, delivering through `queue`, storing endpoint secrets and
    /// headers as given (plain text). Production should use [`Webhooks::sealed`].
    ///
    /// # Errors
    /// [`EventError::Invalid`] for a bad configuration or schema name.
    pub fn new(db: &Db, queue: Queue, config: WebhookConfig) -> Result<Self, EventError> {
        Self::build(db, queue, config, None)
    }

    /// Webhooks that seal endpoint secrets (current and previous) and header values at rest
    /// with `sealer`, each bound to its endpoint row and column, and open them for delivery.
    /// What production should use: a reader of the database, a backup or a replica sees no
    /// secret. Endpoints stored in plain text before keep working (read as they are) until
    /// [`reseal`](Webhooks::reseal) seals them.
    ///
    /// # Example
    /// ```no_run
    /// # fn demo(db: neo_db::Db, queue: neo_queue::Queue) -> Result<(), neo_events::EventError> {
    /// use neo_db::seal::Sealer;
    /// let sealer = Sealer::from_config(&db.config().seal)?; // NEO_DB_SEAL__*
    /// let webhooks = neo_events::Webhooks::sealed(&db, queue, Default::default(), sealer)?;
    /// # let _ = webhooks; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`EventError::Invalid`] for a bad configuration or schema name.
    pub fn sealed(
        db: &Db,
        queue: Queue,
        config: WebhookConfig,
        sealer: neo_db::seal::Sealer,
    ) -> Result<Self, EventError> {
        Self::build(db, queue, config, Some(sealer))
    }

    fn build(
        db: &Db,
        queue: Queue,
        config: WebhookConfig,
        sealer: Option<neo_db::seal::Sealer>,
    ) -> Result<Self, EventError> {
        config.validate()?;
        if config.require_sealed && sealer.is_none() {
            return Err(EventError::Invalid {
                what: "webhook configuration",
                reason: "require_sealed needs a sealer (Webhooks::sealed)".into(),
            });
        }
        let schema = Schema::new(&config.schema)?;
        let sql = Sql::new(&schema)?;
        let schemas = super::schemas::SchemaCache::new(&schema, config.schema_cache_ttl)?;
        let client = build_client(&config)?;
        let replan = Arc::new(neo_db::Replanning::new(
            "neo_webhooks",
            config.replan_after_per_delivery,
        ));
        let targets = target_loader(
            db,
            (sql.load_for_send.clone(), sql.load_for_send_by_id.clone()),
            Arc::clone(&replan),
            &config,
        )?;
        Ok(Webhooks {
            inner: Arc::new(Inner {
                db: db.clone(),
                system: db.clone(),
                tenancy: Tenancy::Shared,
                queue,
                sql,
                client,
                breakers: Mutex::new(HashMap::new()),
                limiters: Mutex::new(HashMap::new()),
                operational: broadcast::channel(1024).0,
                status: OnceCell::new(),
                withdrawals: OnceCell::new(),
                targets,
                replan,
                sealer,
                inline: Arc::new(tokio::sync::Semaphore::new(config.inline_attempts)),
                schemas,
                schema,
                config,
            }),
        })
    }

    /// This store with its tables under row-level security on `setting` (see the type's
    /// documentation): tenant-scoped calls run on the `Db` it was built with (an application
    /// role that is neither the tables' owner nor `BYPASSRLS`), cross-tenant work on `system`
    /// (a `BYPASSRLS` role). Call it on the value `new` or `sealed` returned, before cloning
    /// it. Migrate with [`rls_migrations`](Self::rls_migrations) as the owner, then grant
    /// both roles the tables ([`neo_db::tenancy::grant_app_role`]). The delivery queue may
    /// be one of a fixed schema, or tenant-isolated under row-level security too
    /// ([`Queue::tenant_isolated`](neo_queue::Queue::tenant_isolated) on the same two roles),
    /// which puts every delivery job under the policy: fan-out enqueues them with
    /// [`Queue::enqueue_across_tenants`](neo_queue::Queue::enqueue_across_tenants). A queue
    /// with a schema per tenant cannot take one fan-out's several tenants' jobs.
    ///
    /// # Errors
    /// [`EventError::Invalid`] when this value was cloned already.
    pub fn with_row_level_security(
        mut self,
        system: &Db,
        setting: RlsSetting,
    ) -> Result<Self, EventError> {
        let Some(inner) = Arc::get_mut(&mut self.inner) else {
            return Err(EventError::Invalid {
                what: "webhooks",
                reason:
                    "with_row_level_security needs the value new or sealed returned, not a clone"
                        .into(),
            });
        };
        inner.targets = target_loader(
            system,
            (
                inner.sql.load_for_send.clone(),
                inner.sql.load_for_send_by_id.clone(),
            ),
            Arc::clone(&inner.replan),
            &inner.config,
        )?;
        inner.system = system.clone();
        inner.tenancy = Tenancy::rls(system, setting);
        Ok(self)
    }

    /// Whether the tables are under row-level security.
    pub fn is_row_level_security(&self) -> bool {
        self.inner.tenancy.setting().is_some()
    }

    /// [`migrations`](Self::migrations) and migration 5: subscriptions name their endpoint's
    /// tenant (filled from the setting on insert), indexes on the tenant of messages and
    /// deliveries (for offboarding), and on endpoints, subscriptions, messages and deliveries
    /// `ENABLE` and `FORCE ROW LEVEL SECURITY` with a policy comparing `tenant_id` with
    /// `setting`. Rows without a tenant (endpoints receiving every tenant's events, events
    /// of no tenant) stay for the system `Db` only: no tenant sees them. Migration 42 does
    /// the same for the delivery attempts (webhooks migration 41).
    ///
    /// # Errors
    /// Never for a valid setting; fallible for symmetry.
    pub fn rls_migrations(setting: &RlsSetting) -> Result<MigrationSet, EventError> {
        let tenant = setting.current_tenant_sql();
        let sql = format!(
            "ALTER TABLE webhook_subscriptions ADD COLUMN tenant_id uuid;\n\
             UPDATE webhook_subscriptions s SET tenant_id = e.tenant_id \
               FROM webhook_endpoints e WHERE e.id = s.endpoint_id;\n\
             ALTER TABLE webhook_subscriptions ALTER COLUMN tenant_id SET DEFAULT {tenant};\n\
             CREATE INDEX webhook_messages_tenant ON webhook_messages (tenant_id);\n\
             CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries (tenant_id);\n{}",
            policies(setting, &TENANT_TABLES)?
        );
        Ok(Self::migrations()?
            .with_sql(5, "webhooks row-level security", sql)
            .with_sql(
                42,
                "delivery attempts row-level security",
                format!(
                    "CREATE INDEX webhook_delivery_attempts_tenant ON webhook_delivery_attempts (tenant_id);\n{}",
                    policies(setting, &["webhook_delivery_attempts"])?
                ),
            ))
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
                include_str!("../../../migrations/webhooks/1_webhooks.sql"),
            )
            .with(
                2,
                "deliveries without foreign keys",
                include_str!("../../../migrations/webhooks/2_deliveries_without_foreign_keys.sql"),
            )
            .with(
                3,
                "deliveries name their tenant",
                include_str!("../../../migrations/webhooks/3_deliveries_name_their_tenant.sql"),
            )
            .with(
                4,
                "endpoints record their seal keys",
                include_str!("../../../migrations/webhooks/4_endpoints_record_their_seal_keys.sql"),
            )
            .with(
                6,
                "deliveries carry trace context",
                include_str!("../../../migrations/webhooks/6_deliveries_carry_trace_context.sql"),
            )
            .with(
                7,
                "deliveries indexed for sampling",
                include_str!("../../../migrations/webhooks/7_deliveries_indexed_for_sampling.sql"),
            )
            .with(
                10,
                "event schemas",
                include_str!("../../../migrations/webhooks/10_event_schemas.sql"),
            )
            .with(
                11,
                "endpoint verification",
                include_str!("../../../migrations/webhooks/11_endpoint_verification.sql"),
            )
            .with(
                12,
                "endpoint regions",
                include_str!("../../../migrations/webhooks/12_endpoint_regions.sql"),
            )
            .with(
                13,
                "deliveries count their replays",
                include_str!("../../../migrations/webhooks/13_deliveries_count_their_replays.sql"),
            )
            .with(
                40,
                "deliveries by endpoint",
                include_str!("../../../migrations/webhooks/40_deliveries_by_endpoint.sql"),
            )
            .with(
                41,
                "delivery attempts",
                include_str!("../../../migrations/webhooks/41_delivery_attempts.sql"),
            )
            .with_sql(
                20,
                "deliveries partitioned by time",
                crate::partition::migration(
                    "webhook_deliveries",
                    "created_at",
                    &["message_id, endpoint_id"],
                ),
            ))
    }

    /// Creates or upgrades the webhook tables in `config.schema`. With
    /// [`require_sealed`](WebhookConfig::require_sealed) on, then refuses to go on while any
    /// endpoint holds a plain-text secret or header value (see [`Webhooks::ensure_sealed`]):
    /// call it before starting the delivery worker.
    ///
    /// # Errors
    /// A migration error; [`EventError::PlainTextAtRest`] in strict mode.
    pub async fn migrate(&self) -> Result<MigrationReport, EventError> {
        let set = match self.inner.tenancy.setting() {
            None => Self::migrations()?,
            Some(setting) => Self::rls_migrations(setting)?,
        };
        let report = set
            .run_in_schema(&self.inner.db, &self.inner.schema)
            .await?;
        self.ensure_partitions().await?;
        if self.inner.config.require_sealed {
            self.ensure_sealed().await?;
        }
        Ok(report)
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

    pub(in crate::webhook) fn announce(&self, event: OperationalEvent) {
        tracing::warn!(?event, "webhook operational event");
        let kind = match &event {
            OperationalEvent::EndpointFailing { .. } => "endpoint_failing",
            OperationalEvent::EndpointDisabled { .. } => "endpoint_disabled",
            OperationalEvent::DeliveryExhausted { .. } => "delivery_exhausted",
        };
        metrics::counter!(crate::metric_names::WEBHOOK_OPERATIONAL_EVENTS_TOTAL, "kind" => kind)
            .increment(1);
        let _ = self.inner.operational.send(event);
    }

    /// Writes the pending delivery status updates and withdrawals of settled inline
    /// attempts' jobs, and stops their writers.
    pub async fn shutdown(&self) {
        if let Some(writer) = self.inner.status.get() {
            writer.shutdown().await;
        }
        if let Some(writer) = self.inner.withdrawals.get() {
            writer.shutdown().await;
        }
    }
}
