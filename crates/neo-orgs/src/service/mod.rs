//! The organization service: validation, settings, the tiered cache and notifications on top
//! of an [`OrganizationStore`], with concurrent saves grouped into one statement. Its parts:
//! the settings ([`config`]), reads ([`read`]), search pages ([`search`]), writes ([`write`])
//! and the queue that groups concurrent saves ([`save_queue`]).

mod config;
mod read;
mod save_queue;
mod search;
mod write;

pub use config::{OrgConfig, SaveConfig};
pub use search::SearchPage;

use crate::model::Organization;
use crate::{
    Notifier, OrgError, OrganizationStore, PgOrganizationStore, SettingsResolver, WebhookNotifier,
};
use neo_cache::HybridCache;
use neo_core::{OrganizationId, TenantId};
use neo_db::{Db, MigrationReport, MigrationSet};
use neo_events::{DomainEvent, Outbox};
use save_queue::SaveQueue;
use std::sync::{Arc, OnceLock};

/// Organizations with their rules: every change writes the row, its audit record and its
/// domain events (through the store, in one transaction), after checking the tax id (through
/// a breaker and a timeout) and the organization's settings, and keeps the cache current.
/// Concurrent saves are grouped into one statement ([`SaveConfig`]). Cheap to clone.
///
/// Each part has a default a host can replace: the [`OrganizationStore`]
/// ([`PgOrganizationStore`]; [`InMemoryOrganizationStore`](crate::InMemoryOrganizationStore)
/// for unit tests), the cache (a [`HybridCache`], or none), the [`SettingsResolver`]
/// ([`ConfiguredSettings`](crate::ConfiguredSettings) from [`OrgConfig::settings`]), the [`Notifier`]
/// ([`WebhookNotifier`]) and the [`TaxIdValidator`](crate::TaxIdValidator)
/// ([`TaxIdFormat`](crate::TaxIdFormat)).
///
/// # Example
/// ```no_run
/// # async fn demo(db: neo_db::Db, outbox: neo_events::Outbox) -> Result<(), neo_orgs::OrgError> {
/// use neo_core::Slug;
/// use neo_orgs::{NewOrganization, OrgConfig, OrganizationService};
/// let orgs = OrganizationService::new(&db, outbox, None, OrgConfig::default())?;
/// orgs.migrate().await?;
/// let acme = orgs.create("admin@example.com", NewOrganization::new("Acme", Slug::parse("acme")?)).await?;
/// let mut loaded = orgs.get(acme.id()).await?;
/// loaded.verify(vec!["kyc-1".into()])?;
/// let saved = orgs.save("admin@example.com", loaded).await?; // optimistic: fails on a stale version
/// assert_eq!(saved.version(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct OrganizationService {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    store: Arc<dyn OrganizationStore>,
    tax_ids: Arc<dyn crate::TaxIdValidator>,
    tax_id_policy: neo_resilience::Policy,
    settings: Arc<dyn SettingsResolver>,
    notifier: Arc<dyn Notifier>,
    cache: Option<HybridCache<Organization>>,
    config: OrgConfig,
    /// Started by the first save (it needs a runtime); closed when the service is dropped.
    saves: Arc<OnceLock<SaveQueue>>,
}

impl std::fmt::Debug for OrganizationService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrganizationService")
            .field("config", &self.inner.config)
            .field("cached", &self.inner.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl OrganizationService {
    /// A service on PostgreSQL ([`PgOrganizationStore`] in `config.schema`), publishing
    /// through `outbox`, caching in `cache` when given. Tenants are kept apart as
    /// [`OrgConfig::tenancy`] says: not at all by default (one schema), else as
    /// [`tenant_isolated`](Self::tenant_isolated) with the configured isolation.
    ///
    /// # Errors
    /// [`OrgError::Core`] for a bad schema name, [`OrgError::Invalid`] for a bad
    /// `tax_id_check` or `saves` configuration, [`OrgError::Db`] for a bad `tenancy` prefix
    /// or setting name.
    pub fn new(
        db: &Db,
        outbox: Outbox,
        cache: Option<HybridCache<Organization>>,
        config: OrgConfig,
    ) -> Result<Self, OrgError> {
        let store = match config.tenancy.isolation()? {
            None => PgOrganizationStore::new(db, outbox, &config.schema)?,
            Some(isolation) => {
                PgOrganizationStore::tenant_isolated(db, outbox, &config.schema, isolation)?
            }
        };
        Self::with_store(store, cache, config)
    }

    /// A service on PostgreSQL for every tenant: a
    /// [`PgOrganizationStore::tenant_isolated`] (a schema per tenant, or shared tables in
    /// `config.schema` under row-level security). Each call acts for the task's tenant
    /// (`neo_tenant::scope`, as the axum `TenantLayer` sets it) and fails closed without one;
    /// cache keys carry the tenant.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn tenant_isolated(
        db: &Db,
        outbox: Outbox,
        cache: Option<HybridCache<Organization>>,
        config: OrgConfig,
        isolation: neo_db::TenantIsolation,
    ) -> Result<Self, OrgError> {
        let store = PgOrganizationStore::tenant_isolated(db, outbox, &config.schema, isolation)?;
        Self::with_store(store, cache, config)
    }

    /// A service on any store, e.g. an
    /// [`InMemoryOrganizationStore`](crate::InMemoryOrganizationStore) in unit tests.
    ///
    /// # Errors
    /// [`OrgError::Invalid`] for a bad `tax_id_check` or `saves` configuration.
    pub fn with_store(
        store: impl OrganizationStore,
        cache: Option<HybridCache<Organization>>,
        config: OrgConfig,
    ) -> Result<Self, OrgError> {
        let tax_id_policy = neo_resilience::Policy::new(&config.tax_id_check)
            .map_err(|e| OrgError::invalid("tax_id_check configuration", e.to_string()))?;
        let saves = config.saves;
        if saves.max_batch == 0
            || saves.concurrency == 0
            || saves.queue_capacity == 0
            || saves.batch_rows == 0
        {
            return Err(OrgError::invalid(
                "saves configuration",
                "max_batch, concurrency, queue_capacity and batch_rows must be at least 1",
            ));
        }
        Ok(OrganizationService {
            inner: Arc::new(Inner {
                store: Arc::new(store),
                tax_ids: Arc::new(crate::TaxIdFormat),
                tax_id_policy,
                settings: Arc::new(config.settings.clone()),
                notifier: Arc::new(WebhookNotifier),
                cache,
                config,
                saves: Arc::new(OnceLock::new()),
            }),
        })
    }

    fn replace(self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        change(&mut inner);
        // A fresh save queue: the old one's workers may hold the replaced parts.
        inner.saves = Arc::new(OnceLock::new());
        OrganizationService {
            inner: Arc::new(inner),
        }
    }

    /// Checks tax ids with `validator` (a registry lookup) instead of [`TaxIdFormat`](crate::TaxIdFormat).
    #[must_use]
    pub fn with_tax_id_validator(self, validator: impl crate::TaxIdValidator) -> Self {
        self.replace(|inner| inner.tax_ids = Arc::new(validator))
    }

    /// Resolves per-organization settings with `resolver` instead of
    /// [`OrgConfig::settings`].
    #[must_use]
    pub fn with_settings(self, resolver: impl SettingsResolver) -> Self {
        self.replace(|inner| inner.settings = Arc::new(resolver))
    }

    /// Chooses the published events with `notifier` instead of [`WebhookNotifier`].
    #[must_use]
    pub fn with_notifier(self, notifier: impl Notifier) -> Self {
        self.replace(|inner| inner.notifier = Arc::new(notifier))
    }

    /// The PostgreSQL store's migrations ([`PgOrganizationStore::migrations`]).
    ///
    /// # Errors
    /// Never; fallible for symmetry with other crates' sets.
    pub fn migrations() -> Result<MigrationSet, OrgError> {
        PgOrganizationStore::migrations()
    }

    /// Creates or upgrades the store's tables (for PostgreSQL, in `config.schema`, and the
    /// outbox's own).
    ///
    /// # Errors
    /// A migration error.
    pub async fn migrate(&self) -> Result<MigrationReport, OrgError> {
        self.inner.store.migrate().await
    }

    /// The cache key of an organization: namespaced by the tenant in a tenant-isolated
    /// store, so one tenant never reads another's cached copy.
    fn cache_key(tenant: Option<TenantId>, id: OrganizationId) -> String {
        match tenant {
            Some(tenant) => format!("org:{tenant}:{id}"),
            None => format!("org:{id}"),
        }
    }

    async fn check_tax_id(&self, org: &Organization) -> Result<(), OrgError> {
        let Some(tax_id) = &org.legal.tax_id else {
            return Ok(());
        };
        crate::validate::check_tax_id(
            self.inner.tax_ids.as_ref(),
            &self.inner.tax_id_policy,
            org.legal.country.as_ref(),
            tax_id,
        )
        .await
    }

    async fn settings_of(&self, org: &Organization) -> Result<crate::OrgSettings, OrgError> {
        self.inner
            .settings
            .settings(org)
            .await
            .map_err(|e| OrgError::Unavailable(format!("the settings could not be resolved: {e}")))
    }

    /// The `max_members` setting of an organization (not deleted).
    pub(crate) async fn max_members_of(&self, id: OrganizationId) -> Result<u32, OrgError> {
        let organization = self
            .inner
            .store
            .find(id, false)
            .await?
            .ok_or_else(|| OrgError::not_found("organization", id))?;
        Ok(self.settings_of(&organization).await?.max_members)
    }

    /// What every write checks: metadata within this service's limits (not only the
    /// defaults), the tax id when it changed, the organization's settings.
    async fn check(&self, org: &Organization, new: bool) -> Result<(), OrgError> {
        org.metadata
            .check_within(&self.inner.config.metadata_limits)?;
        if new || org.changed.legal {
            self.check_tax_id(org).await?;
        }
        if new || org.changed.domains {
            let settings = self.settings_of(org).await?;
            if org.domains.len() > settings.max_domains as usize {
                return Err(OrgError::invalid(
                    "domains",
                    format!(
                        "{} claimed, this organization may claim at most {}",
                        org.domains.len(),
                        settings.max_domains
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The events a change publishes, chosen by the notifier. When the store acts for a
    /// tenant, each names that tenant rather than the organization: offboarding the tenant
    /// finds them in a shared outbox, and an outbox under row-level security accepts them
    /// from the tenant's transaction.
    pub(crate) fn notifications(&self, org: &mut Organization) -> Vec<DomainEvent> {
        let events = org.take_events();
        let events = self.inner.notifier.notifications(org, events);
        match self.inner.store.tenant() {
            Ok(Some(tenant)) => events.into_iter().map(|e| e.tenant(tenant)).collect(),
            _ => events,
        }
    }

    pub(crate) async fn forget(&self, ids: &[OrganizationId]) {
        if let Some(cache) = &self.inner.cache
            && !ids.is_empty()
        {
            let tenant = match self.inner.store.tenant() {
                Ok(tenant) => tenant,
                Err(error) => {
                    tracing::warn!(%error, "could not evict organizations from the cache");
                    return;
                }
            };
            let keys: Vec<String> = ids.iter().map(|id| Self::cache_key(tenant, *id)).collect();
            if let Err(error) = cache.remove_many(&keys).await {
                tracing::warn!(count = ids.len(), %error, "could not evict organizations from the cache");
            }
        }
    }

    /// The settings.
    pub fn config(&self) -> &OrgConfig {
        &self.inner.config
    }

    /// The cache, when the service has one.
    pub fn cache(&self) -> Option<&HybridCache<Organization>> {
        self.inner.cache.as_ref()
    }
}

/// Runs `work` in `tenant`'s scope when there is one: work handed to another task (a cache
/// fill, a grouped save) keeps acting for the caller's tenant.
pub(super) async fn within<F: std::future::Future>(tenant: Option<TenantId>, work: F) -> F::Output {
    match tenant {
        Some(tenant) => neo_tenant::scope(tenant, work).await,
        None => work.await,
    }
}
