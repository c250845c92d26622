//! The example host service as a library: [`Service::compose`] builds the organizations API
//! (PostgreSQL, tiered cache on Redis), the outbox dispatcher fanning events out to webhook
//! endpoints and the neo-queue worker delivering them, and the memberships and invitations
//! beside the organizations (roles cached on the same Redis), domain verification by DNS and
//! organization verification (their jobs on the same worker), from a [`ServiceConfig`];
//! [`Service::run`] runs the [`Roles`] asked for until stopped: with them the metrics sampler
//! (one instance samples at a time) and, given a Prometheus handle, `GET /metrics` beside the
//! API, and, given a console token, the operations console (neo-console) at `/ops`; with them
//! too the retention that keeps the outbox, the deliveries and the queue from growing without
//! bound ([`RetentionConfig`]). The `orgs-service` binary and the scenario suite (`tests/`)
//! both use it.

use neo_commons::cache::{CacheConfig, HybridCache};
use neo_commons::console::{BearerToken, Console, ConsoleConfig};
use neo_commons::core::{CursorCodec, SecretString};
use neo_commons::db::{Db, DbConfig};
use neo_commons::events::{DomainEvent, Outbox, OutboxConfig, WebhookConfig, Webhooks};
use neo_commons::observe::prometheus::Handle as MetricsHandle;
use neo_commons::observe::{ObserveConfig, Sampler};
use neo_commons::orgs::{
    DnsConfig, DomainVerification, DomainVerificationConfig, HickoryResolver, ManualReview,
    MembershipConfig, Memberships, OrgConfig, OrgVerifications, Organization, OrganizationService,
    PgOrganizationStore,
};
use neo_commons::queue::{Queue, QueueConfig, Worker, WorkerConfig};
use serde::Deserialize;
use std::time::Duration;
use tokio::sync::watch;

/// Errors of composing and running the service.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env(name: &str) -> Result<String, BoxError> {
    std::env::var(name).map_err(|_| {
        format!("{name} is not set; run scripts/demo, or point it at your server").into()
    })
}

/// What the service is built from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// PostgreSQL.
    pub database_url: String,
    /// Redis (the cache's shared tier and backplane).
    pub redis_url: String,
    /// The organization cache.
    pub cache: CacheConfig,
    /// Webhook delivery.
    pub webhooks: WebhookConfig,
    /// The job queue carrying deliveries.
    pub queue: QueueConfig,
    /// The delivery worker.
    pub worker: WorkerConfig,
    /// The organizations.
    pub orgs: OrgConfig,
    /// Roles, permissions and invitations.
    pub members: MembershipConfig,
    /// Domain verification by DNS (claim expiry, job attempts, auto-join role).
    pub domains: DomainVerificationConfig,
    /// How domains' TXT records are looked up (the system's resolver by default).
    pub dns: DnsConfig,
    /// The key member-list cursors are signed with (at least 32 bytes; every instance the
    /// same): `NEO_CURSOR_KEY`, else a random key of this process.
    pub cursor_key: Vec<u8>,
    /// The metrics sampler (its schemas are set to the service's own in `compose`).
    pub observe: ObserveConfig,
    /// The operations console, mounted at its `base_path` (`/ops`) when `console_token` is set.
    pub console: ConsoleConfig,
    /// The console's bearer token (`NEO_CONSOLE_TOKEN`, at least 16 characters); no console
    /// without one.
    pub console_token: Option<SecretString>,
    /// What the retention role removes, and how often (`NEO_RETENTION_`).
    pub retention: RetentionConfig,
}

/// What the retention role ([`Roles::retain`]) removes, and how often. Every instance that
/// runs the role does the same work: each step deletes in bounded batches and finds nothing
/// left to do once another instance has done it.
///
/// ```
/// let retention: orgs_service::RetentionConfig =
///     serde_json::from_str(r#"{ "finished_deliveries": "1h" }"#).unwrap();
/// assert_eq!(retention.finished_deliveries, std::time::Duration::from_secs(3600));
/// assert_eq!(retention.interval, std::time::Duration::from_secs(60)); // the default
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetentionConfig {
    /// Time between two rounds. Default 1 minute.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Outbox events processed longer ago than this move to the outbox's archive table.
    /// Default 1 hour.
    #[serde(with = "humantime_serde")]
    pub processed_events: Duration,
    /// Delivered and dead webhook deliveries last changed longer ago than this are deleted
    /// (dead ones stay replayable until then). Default 7 days.
    #[serde(with = "humantime_serde")]
    pub finished_deliveries: Duration,
    /// Deliveries deleted per statement. Default 1,000.
    pub batch: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            interval: Duration::from_secs(60),
            processed_events: Duration::from_secs(60 * 60),
            finished_deliveries: Duration::from_secs(7 * 24 * 60 * 60),
            batch: 1_000,
        }
    }
}

impl RetentionConfig {
    /// Refuses a zero `interval` or `batch` (a busy loop, or a round that deletes nothing),
    /// naming the field.
    ///
    /// ```
    /// let mut retention = orgs_service::RetentionConfig::default();
    /// assert!(retention.validate().is_ok());
    /// retention.batch = 0;
    /// let refused = retention.validate().unwrap_err().to_string();
    /// assert!(refused.contains("retention.batch"), "{refused}");
    /// ```
    ///
    /// # Errors
    /// The first field that is zero.
    pub fn validate(&self) -> Result<(), BoxError> {
        if self.interval.is_zero() {
            return Err(
                "retention.interval must be longer than zero (NEO_RETENTION_INTERVAL)".into(),
            );
        }
        if self.batch == 0 {
            return Err("retention.batch must be at least 1 (NEO_RETENTION_BATCH)".into());
        }
        Ok(())
    }
}

impl ServiceConfig {
    /// Defaults on these servers.
    pub fn new(database_url: impl Into<String>, redis_url: impl Into<String>) -> Self {
        ServiceConfig {
            database_url: database_url.into(),
            redis_url: redis_url.into(),
            cache: CacheConfig::named("organizations"),
            webhooks: WebhookConfig::default(),
            queue: QueueConfig::default(),
            worker: WorkerConfig::default(),
            orgs: OrgConfig::default(),
            members: MembershipConfig::default(),
            domains: DomainVerificationConfig::default(),
            dns: DnsConfig::default(),
            cursor_key: [uuid_bytes(), uuid_bytes()].concat(),
            observe: ObserveConfig::default(),
            console: ConsoleConfig::default(),
            console_token: None,
            retention: RetentionConfig::default(),
        }
    }

    /// From the environment: `NEO_DATABASE_URL`, `NEO_REDIS_URL`, and the parts' settings
    /// under `NEO_CACHE_`, `NEO_WEBHOOKS_`, `NEO_QUEUE_`, `NEO_WORKER_`, `NEO_ORGS_` and
    /// `NEO_CONSOLE_`, `NEO_RETENTION_` (nested fields with `__`, e.g.
    /// `NEO_WEBHOOKS_ADDRESSES__ALLOW_LOOPBACK=true`); the console's token in
    /// `NEO_CONSOLE_TOKEN`.
    ///
    /// # Errors
    /// A missing URL or a setting that does not parse.
    pub fn from_env() -> Result<Self, BoxError> {
        use neo_commons::core::config::from_env;
        let mut config = ServiceConfig::new(env("NEO_DATABASE_URL")?, env("NEO_REDIS_URL")?);
        let mut cache: CacheConfig = from_env("NEO_CACHE_")?;
        if std::env::var_os("NEO_CACHE_NAME").is_none() {
            cache.name = config.cache.name;
        }
        config.cache = cache;
        config.webhooks = from_env("NEO_WEBHOOKS_")?;
        config.queue = from_env("NEO_QUEUE_")?;
        config.worker = from_env("NEO_WORKER_")?;
        config.orgs = from_env("NEO_ORGS_")?;
        config.members = from_env("NEO_MEMBERS_")?;
        config.domains = from_env("NEO_DOMAINS_")?;
        config.dns = from_env("NEO_DNS_")?;
        if let Ok(key) = std::env::var("NEO_CURSOR_KEY") {
            config.cursor_key = key.into_bytes();
        }
        config.observe = from_env("NEO_OBSERVE_")?;
        config.console = from_env("NEO_CONSOLE_")?;
        config.console_token = std::env::var("NEO_CONSOLE_TOKEN")
            .ok()
            .map(SecretString::from);
        config.retention = from_env("NEO_RETENTION_")?;
        config.retention.validate()?;
        Ok(config)
    }
}

/// 16 random bytes (a version-4 UUID's).
fn uuid_bytes() -> Vec<u8> {
    uuid::Uuid::new_v4().as_bytes().to_vec()
}

/// What one retention round ([`Service::retain`]) removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retained {
    /// Outbox and delivery partitions dropped whole (older than their
    /// [`PartitionConfig::retention`](neo_commons::events::PartitionConfig)).
    pub partitions_dropped: u64,
    /// Processed outbox events moved to the archive.
    pub events: u64,
    /// Finished webhook deliveries deleted.
    pub deliveries: u64,
    /// Queue rows pruned: dead letters, cancelled jobs and job outputs past their retention.
    pub jobs: u64,
}

/// What one process of the service runs.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Roles {
    /// Serve the API on this listener.
    pub api: Option<tokio::net::TcpListener>,
    /// Dispatch outbox events to webhook endpoints.
    pub dispatch: bool,
    /// Deliver webhooks (the neo-queue worker).
    pub deliver: bool,
    /// Run the metrics sampler (it samples the database only while it holds the lease).
    pub sample: bool,
    /// Run retention ([`RetentionConfig`]): maintain the outbox's and the deliveries'
    /// partitions, archive processed outbox events, delete finished deliveries, prune the
    /// queue's dead, cancelled and expired rows.
    pub retain: bool,
    /// Serve `GET /metrics` from this recorder beside the API.
    pub metrics: Option<MetricsHandle>,
}

impl Roles {
    /// Everything: the API on `listener`, dispatch and delivery.
    pub fn all(listener: tokio::net::TcpListener) -> Self {
        Roles {
            api: Some(listener),
            dispatch: true,
            deliver: true,
            sample: true,
            retain: true,
            metrics: None,
        }
    }

    /// These roles, with `GET /metrics` served from `handle` beside the API.
    pub fn with_metrics(mut self, handle: MetricsHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// Only these background roles, no API; retention runs beside the dispatcher.
    pub fn background(dispatch: bool, deliver: bool) -> Self {
        Roles {
            api: None,
            dispatch,
            deliver,
            sample: false,
            retain: dispatch,
            metrics: None,
        }
    }
}

/// Everything the service runs, composed from its parts. Cheap to clone.
#[derive(Clone)]
#[non_exhaustive]
pub struct Service {
    /// The organizations.
    pub orgs: OrganizationService,
    /// Their memberships and invitations.
    pub members: Memberships,
    /// Their domains' verification by DNS (checked by jobs on the worker).
    pub domains: DomainVerification,
    /// Their verification with documents (reviewed by jobs on the worker; decided by a
    /// person through the API).
    pub verifications: OrgVerifications,
    /// Webhook endpoints and delivery.
    pub webhooks: Webhooks,
    /// The outbox the organization events are written to.
    pub outbox: Outbox,
    /// The queue carrying deliveries.
    pub queue: Queue,
    /// The database.
    pub db: Db,
    worker: WorkerConfig,
    cache: HybridCache<Organization>,
    observe: ObserveConfig,
    console: Option<Console>,
    retention: RetentionConfig,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("orgs", &self.orgs)
            .field("queue", &self.queue)
            .field("outbox", &self.outbox)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Connects to the servers, creates or upgrades every table, and builds the parts.
    ///
    /// # Errors
    /// A server that cannot be reached, a failed migration, a bad setting.
    pub async fn compose(config: ServiceConfig) -> Result<Service, BoxError> {
        config.retention.validate()?;
        let db = Db::connect(&DbConfig::with_url(config.database_url)).await?;
        let queue = Queue::new(&db, config.queue)?;
        queue.migrate().await?;
        let outbox_config = OutboxConfig::default();
        let outbox = Outbox::new(&db, outbox_config.clone())?;
        let webhooks = Webhooks::new(&db, queue.clone(), config.webhooks)?;
        let roles = HybridCache::<String>::tiered(
            CacheConfig {
                name: format!("{}-roles", config.cache.name),
                ..config.cache.clone()
            },
            &config.redis_url,
        )?;
        let cache = HybridCache::<Organization>::tiered(config.cache, &config.redis_url)?;
        let store = PgOrganizationStore::new(&db, outbox.clone(), &config.orgs.schema)?;
        let orgs =
            OrganizationService::with_store(store.clone(), Some(cache.clone()), config.orgs)?;
        let members = Memberships::new(
            orgs.clone(),
            store,
            Some(roles),
            config.members,
            CursorCodec::new(config.cursor_key)?,
        )?;
        let domains = DomainVerification::new(
            members.clone(),
            queue.clone(),
            HickoryResolver::new(config.dns)?,
            config.domains,
        )?;
        let verifications = OrgVerifications::new(members.clone(), queue.clone(), ManualReview);
        orgs.migrate().await?; // the outbox's tables too
        webhooks.migrate().await?;
        let observe = ObserveConfig {
            queue_schemas: vec![queue.config().schema.clone()],
            outbox_schemas: vec![outbox_config.schema],
            webhook_schemas: vec![webhooks.config().schema.clone()],
            ..config.observe
        };
        Sampler::new(&db, observe.clone(), "orgs-service")?
            .migrate()
            .await?;
        let console = match config.console_token {
            Some(token) => {
                let auth = BearerToken::new(token, &config.console.cookie_name)?;
                Some(
                    Console::builder(config.console, auth)
                        .db(&db, observe.clone())
                        .queue(queue.clone())
                        .webhooks(webhooks.clone())
                        .outbox(observe.outbox_schemas[0].clone())
                        .cache(cache.clone())
                        .build()?,
                )
            }
            None => None,
        };
        Ok(Service {
            orgs,
            members,
            domains,
            verifications,
            webhooks,
            outbox,
            queue,
            db,
            worker: config.worker,
            cache,
            observe,
            console,
            retention: config.retention,
        })
    }

    /// One retention round ([`RetentionConfig`]): what each step removed.
    ///
    /// # Errors
    /// The first step that failed (what earlier steps removed stays removed).
    pub async fn retain(&self) -> Result<Retained, BoxError> {
        // Partitions: the coming periods created ahead, wholly old ones dropped (constant
        // time); then the row-by-row steps for what is younger than a partition's retention.
        let outbox = self.outbox.maintain_partitions(None).await?;
        let deliveries = self.webhooks.maintain_partitions(None).await?;
        let mut retained = Retained {
            partitions_dropped: (outbox.dropped.len() + deliveries.dropped.len()) as u64,
            events: self.outbox.archive(self.retention.processed_events).await?,
            deliveries: self
                .webhooks
                .purge(self.retention.finished_deliveries, self.retention.batch)
                .await?,
            jobs: 0,
        };
        loop {
            let pruned = self.queue.prune().await?;
            retained.jobs += pruned.dead + pruned.cancelled + pruned.outputs;
            if !pruned.more {
                return Ok(retained);
            }
        }
    }

    /// Retention rounds every `interval` until `stop`; a failed round is logged and the
    /// next one tries again.
    async fn retain_until(&self, mut stop: watch::Receiver<bool>) {
        let mut rounds = tokio::time::interval(self.retention.interval);
        rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = rounds.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.retain().await {
                Ok(retained) => tracing::debug!(?retained, "retention round"),
                Err(error) => tracing::warn!(%error, "retention round failed; retrying next round"),
            }
        }
    }

    /// Runs `roles` until `stop` turns true, then finishes what is in flight.
    ///
    /// # Errors
    /// A role that failed for good.
    pub async fn run(&self, roles: Roles, stop: watch::Receiver<bool>) -> Result<(), BoxError> {
        let stopped = |mut stop: watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let webhooks = self.webhooks.clone();
        let fan_out = move |events: Vec<DomainEvent>| {
            let webhooks = webhooks.clone();
            async move { webhooks.fan_out(&events).await }
        };
        let worker = self
            .webhooks
            .handle(Worker::new(self.queue.clone(), self.worker.clone()));
        let worker = self.verifications.register(self.domains.register(worker));
        let mut api = neo_commons::orgs::http::router(self.orgs.clone())
            .merge(neo_commons::orgs::http::members_router(
                self.members.clone(),
            ))
            .merge(neo_commons::orgs::http::verification_router(
                self.domains.clone(),
                self.verifications.clone(),
            ));
        if let Some(console) = &self.console {
            api = api.nest(&console.config().base_path, console.router());
        }
        if let Some(handle) = roles.metrics {
            api = neo_commons::observe::prometheus::mount(api, handle);
        }
        let sampler = if roles.sample {
            let sampler = Sampler::new(&self.db, self.observe.clone(), "orgs-service")?
                .with_cache(self.cache.clone())
                .with_webhooks(self.webhooks.clone());
            Some(sampler.spawn())
        } else {
            None
        };
        let (dispatched, delivered, served, ()) = tokio::join!(
            async {
                if roles.dispatch {
                    self.outbox.run(fan_out, stopped(stop.clone())).await?;
                }
                Ok::<(), BoxError>(())
            },
            async {
                if roles.deliver {
                    worker.run(stopped(stop.clone())).await?;
                }
                Ok::<(), BoxError>(())
            },
            async {
                if let Some(listener) = roles.api {
                    axum::serve(listener, api)
                        .with_graceful_shutdown(stopped(stop.clone()))
                        .await?;
                }
                Ok::<(), BoxError>(())
            },
            async {
                if roles.retain {
                    Box::pin(self.retain_until(stop.clone())).await;
                }
            },
        );
        if let Some(sampler) = sampler {
            sampler.stop().await;
        }
        dispatched?;
        delivered?;
        served?;
        self.webhooks.shutdown().await;
        Ok(())
    }
}
