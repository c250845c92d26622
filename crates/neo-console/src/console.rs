//! The console: what it reads ([`ConsoleBuilder`]), its router, and the extractors that
//! authorize every request and check the CSRF token of every action.

use crate::auth::{Authorizer, Csrf, Principal};
use crate::{ConsoleConfig, Error, Result};
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::routing::{get, post};
use neo_core::{CursorCodec, TenantId};
use neo_db::Db;
use neo_db::diagnostics::QueryBaselines;
use neo_events::Webhooks;
use neo_observe::{ObserveConfig, Readings};
use neo_queue::Queue;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// One cache's counters as the cache page shows them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CacheRow {
    pub(crate) name: String,
    pub(crate) l1_entries: u64,
    pub(crate) hits: u64,
    pub(crate) lookups: u64,
    pub(crate) l2_hits: u64,
    pub(crate) evictions: u64,
    pub(crate) loads: u64,
    pub(crate) bytes_stored: u64,
}

type CacheProbe = Box<dyn Fn() -> CacheRow + Send + Sync>;

pub(crate) struct Inner {
    pub(crate) config: ConsoleConfig,
    pub(crate) authorizer: Arc<dyn Authorizer>,
    pub(crate) csrf: Csrf,
    pub(crate) cursors: CursorCodec,
    pub(crate) tenant: Option<TenantId>,
    pub(crate) db: Option<Db>,
    pub(crate) readings: Option<Readings>,
    pub(crate) queues: Vec<Queue>,
    pub(crate) webhooks: Option<Webhooks>,
    pub(crate) outboxes: Vec<String>,
    pub(crate) caches: Vec<CacheProbe>,
    /// The queues' throughput samples (operator console with a database only).
    pub(crate) throughput: Option<Arc<crate::throughput::Throughput>>,
    /// The query baselines and the one the database page compares with.
    pub(crate) baselines: Option<(QueryBaselines, String)>,
}

impl Inner {
    /// `path` under the mount point.
    pub(crate) fn link(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_path)
    }

    /// The overview's address (the mount point itself).
    pub(crate) fn home(&self) -> String {
        if self.config.base_path.is_empty() {
            "/".to_owned()
        } else {
            self.config.base_path.clone()
        }
    }

    pub(crate) fn encode<T: Serialize>(&self, position: &T) -> Result<String> {
        self.cursors
            .encode(position)
            .map_err(|e| Error::invalid("cursor", e.to_string()))
    }

    pub(crate) fn decode<T: DeserializeOwned>(&self, token: Option<&str>) -> Result<Option<T>> {
        token
            .filter(|t| !t.is_empty())
            .map(|t| {
                self.cursors
                    .decode(t)
                    .map_err(|e| Error::invalid("cursor", e.to_string()))
            })
            .transpose()
    }

    /// Runs `work` as the console's tenant (its task's tenant, for stores under row-level
    /// security); as itself in the operator console.
    pub(crate) async fn as_tenant<F: Future>(&self, work: F) -> F::Output {
        match self.tenant {
            Some(tenant) => neo_tenant::scope(tenant, work).await,
            None => work.await,
        }
    }

    pub(crate) fn queue(&self, name: &str) -> Result<&Queue> {
        self.queues
            .iter()
            .find(|q| q.config().schema == name)
            .ok_or_else(|| Error::not_found("queue", name))
    }

    pub(crate) fn webhooks(&self) -> Result<&Webhooks> {
        self.webhooks
            .as_ref()
            .ok_or_else(|| Error::not_found("page", "webhooks"))
    }

    /// Refuses operator pages in a tenant's console.
    pub(crate) fn operator_only(&self) -> Result<()> {
        match self.tenant {
            Some(_) => Err(Error::not_found("page", "of the operator console")),
            None => Ok(()),
        }
    }
}

/// The operations console; cheap to clone. Build it with [`Console::builder`], then mount
/// [`router`](Self::router) where [`ConsoleConfig::base_path`] says.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("config", &self.inner.config)
            .field("tenant", &self.inner.tenant)
            .field("queues", &self.inner.queues.len())
            .field("webhooks", &self.inner.webhooks.is_some())
            .field("outboxes", &self.inner.outboxes)
            .field("caches", &self.inner.caches.len())
            .finish_non_exhaustive()
    }
}

/// What a [`Console`] reads and who may use it.
pub struct ConsoleBuilder {
    config: ConsoleConfig,
    authorizer: Arc<dyn Authorizer>,
    key: Option<Vec<u8>>,
    tenant: Option<TenantId>,
    db: Option<Db>,
    observe: ObserveConfig,
    queues: Vec<Queue>,
    webhooks: Option<Webhooks>,
    outboxes: Vec<String>,
    caches: Vec<CacheProbe>,
    baselines: Option<(QueryBaselines, String)>,
}

impl std::fmt::Debug for ConsoleBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleBuilder")
            .field("config", &self.config)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// A console with `config`, letting in whom `authorizer` lets in.
    pub fn builder(config: ConsoleConfig, authorizer: impl Authorizer) -> ConsoleBuilder {
        ConsoleBuilder {
            config,
            authorizer: Arc::new(authorizer),
            key: None,
            tenant: None,
            db: None,
            observe: ObserveConfig::default(),
            queues: Vec::new(),
            webhooks: None,
            outboxes: Vec::new(),
            caches: Vec::new(),
            baselines: None,
        }
    }

    /// The pages as an axum router, to mount at [`ConsoleConfig::base_path`]
    /// (`Router::new().nest("/ops", console.router())`).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(crate::pages::overview))
            .route(
                "/login",
                get(crate::pages::login_form).post(crate::pages::login),
            )
            .route("/queues", get(crate::pages::queues::list))
            .route("/queues/{queue}/retry", post(crate::pages::queues::retry))
            .route(
                "/queues/{queue}/discard",
                post(crate::pages::queues::discard),
            )
            .route("/queues/{queue}/pause", post(crate::pages::queues::pause))
            .route("/queues/{queue}/resume", post(crate::pages::queues::resume))
            .route("/webhooks", get(crate::pages::webhooks::endpoints))
            .route(
                "/webhooks/{endpoint}",
                get(crate::pages::webhooks::endpoint),
            )
            .route(
                "/webhooks/{endpoint}/enabled",
                post(crate::pages::webhooks::set_enabled),
            )
            .route(
                "/webhooks/{endpoint}/rotate",
                post(crate::pages::webhooks::rotate),
            )
            .route(
                "/webhooks/{endpoint}/recover",
                post(crate::pages::webhooks::recover),
            )
            .route(
                "/deliveries/{delivery}",
                get(crate::pages::webhooks::delivery),
            )
            .route(
                "/deliveries/{delivery}/replay",
                post(crate::pages::webhooks::replay),
            )
            .route("/outbox", get(crate::pages::system::outbox))
            .route("/cache", get(crate::pages::system::cache))
            .route("/database", get(crate::pages::system::database))
            .with_state(Arc::clone(&self.inner))
    }

    /// The settings.
    pub fn config(&self) -> &ConsoleConfig {
        &self.inner.config
    }
}

impl ConsoleBuilder {
    /// Signs CSRF tokens and page cursors with `key` (at least 32 bytes), so that several
    /// instances behind a load balancer accept each other's forms and links; a random key per
    /// process otherwise.
    #[must_use]
    pub fn key(mut self, key: Vec<u8>) -> Self {
        self.key = Some(key);
        self
    }

    /// Shows only `tenant`'s webhook endpoints and deliveries and its queued jobs (counts and
    /// dead letters, by the jobs' tenant key), and acts only on them: the portal a customer
    /// sees. The operator pages (outbox, cache, database) and pausing a queue answer 404.
    #[must_use]
    pub fn tenant(mut self, tenant: TenantId) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// Reads outbox gauges, statements, lock waits and pool use through `db` (and samples the
    /// queues' throughput), with `observe`'s
    /// statement timeout and endpoint settings (counts stop at
    /// [`ConsoleConfig::count_cap`]).
    #[must_use]
    pub fn db(mut self, db: &Db, observe: ObserveConfig) -> Self {
        self.db = Some(db.clone());
        self.observe = observe;
        self
    }

    /// Shows `queue` (named by its schema) with its dead letters.
    #[must_use]
    pub fn queue(mut self, queue: Queue) -> Self {
        self.queues.push(queue);
        self
    }

    /// Shows the endpoints and deliveries of `webhooks`.
    #[must_use]
    pub fn webhooks(mut self, webhooks: Webhooks) -> Self {
        self.webhooks = Some(webhooks);
        self
    }

    /// Shows the outbox in `schema`.
    #[must_use]
    pub fn outbox(mut self, schema: impl Into<String>) -> Self {
        self.outboxes.push(schema.into());
        self
    }

    /// Lists the database page's top statements beside the baseline `name` of `baselines`
    /// (the mean since the baseline over its mean, regressions marked); without it they are
    /// listed by mean time alone.
    #[must_use]
    pub fn baselines(mut self, baselines: QueryBaselines, name: impl Into<String>) -> Self {
        self.baselines = Some((baselines, name.into()));
        self
    }

    /// Shows `cache`'s counters.
    #[must_use]
    pub fn cache<V>(mut self, cache: neo_cache::HybridCache<V>) -> Self
    where
        V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        use neo_cache::Cache as _;
        self.caches.push(Box::new(move || {
            let stats = cache.stats();
            CacheRow {
                name: cache.config().name.clone(),
                l1_entries: cache.l1_entries(),
                hits: stats.l1_hits + stats.l2_hits,
                lookups: stats.l1_hits + stats.l1_misses,
                l2_hits: stats.l2_hits,
                evictions: stats.evictions,
                loads: stats.loads,
                bytes_stored: stats.bytes_stored,
            }
        }));
        self
    }

    /// The console. Built inside a tokio runtime with a database and queues, the operator
    /// console starts sampling the queues' throughput (every
    /// [`ConsoleConfig::throughput_sample`], until the last clone of the console is dropped).
    ///
    /// # Errors
    /// [`Error::Invalid`] for bad settings or a key shorter than 32 bytes.
    pub fn build(self) -> Result<Console> {
        self.config.validate()?;
        let key = match self.key {
            Some(key) => key,
            None => {
                let mut key = vec![0u8; 32];
                rand::fill(&mut key[..]);
                key
            }
        };
        let cursors =
            CursorCodec::new(key.clone()).map_err(|e| Error::invalid("key", e.to_string()))?;
        let observe = ObserveConfig {
            count_cap: self.config.count_cap,
            ..self.observe
        };
        let readings = match &self.db {
            Some(db) => Some(Readings::new(db, observe)?),
            None => None,
        };
        let throughput = match &self.db {
            Some(db) if self.tenant.is_none() && !self.queues.is_empty() => {
                let every = self.config.throughput_sample;
                let kept = (self.config.throughput_window.as_secs_f64() / every.as_secs_f64())
                    .ceil() as usize
                    + 1;
                let t = Arc::new(crate::throughput::Throughput::new(
                    self.queues
                        .iter()
                        .map(|q| q.config().schema.clone())
                        .collect(),
                    kept,
                ));
                crate::throughput::Throughput::spawn(&t, db, every).then_some(t)
            }
            _ => None,
        };
        Ok(Console {
            inner: Arc::new(Inner {
                config: self.config,
                authorizer: self.authorizer,
                csrf: Csrf::new(key),
                cursors,
                tenant: self.tenant,
                db: self.db,
                readings,
                queues: self.queues,
                webhooks: self.webhooks,
                outboxes: self.outboxes,
                caches: self.caches,
                throughput,
                baselines: self.baselines,
            }),
        })
    }
}

/// Form or query parameters in order, repeated names kept (`ids=1&ids=2`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(text: &[u8]) -> Self {
        Params(
            url::form_urlencoded::parse(text)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find_map(|(k, v)| (k == name).then_some(v.as_str()))
    }

    pub(crate) fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A request the authorizer let in, with its query parameters.
#[derive(Debug)]
pub(crate) struct Authed {
    pub(crate) principal: Principal,
    pub(crate) query: Params,
}

impl FromRequestParts<Arc<Inner>> for Authed {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, inner: &Arc<Inner>) -> Result<Self> {
        let principal = inner
            .authorizer
            .authorize(&parts.headers)
            .ok_or(Error::Unauthorized)?;
        let query = Params::parse(parts.uri.query().unwrap_or("").as_bytes());
        Ok(Authed { principal, query })
    }
}

/// A POST the authorizer let in whose form carries the principal's CSRF token.
#[derive(Debug)]
pub(crate) struct Action {
    pub(crate) principal: Principal,
    pub(crate) form: Params,
}

/// Largest form body read.
const MAX_FORM_BYTES: usize = 256 * 1024;

impl FromRequest<Arc<Inner>> for Action {
    type Rejection = Error;

    async fn from_request(request: Request, inner: &Arc<Inner>) -> Result<Self> {
        let (mut parts, body) = request.into_parts();
        let Authed { principal, .. } = Authed::from_request_parts(&mut parts, inner).await?;
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|e| Error::invalid("form", e.to_string()))?;
        let form = Params::parse(&bytes);
        if !inner.csrf.check(&principal, form.get("csrf")) {
            return Err(Error::Csrf);
        }
        Ok(Action { principal, form })
    }
}
