use neo_cache::{Cache, CacheConfig, HybridCache};
use neo_core::TenantId;
use neo_core::{DomainName, ErrorKind, HasErrorKind, Metadata, MetadataLimits, Slug, UserId};
use neo_db::{Db, DbConfig, Schema, TenantIsolation};
use neo_events::{DomainEvent, Outbox, OutboxConfig};
use neo_orgs::{
    Branding, Color, ConfiguredSettings, InMemoryOrganizationStore, Legal, MembershipConfig,
    Memberships, NewOrganization, Notifier, OrgConfig, OrgError, OrgSettings, OrgStatus,
    Organization, OrganizationService, OrganizationStore, PgOrganizationStore, SaveConfig,
};
use std::sync::{Arc, Mutex};

/// The versions of the organizations' migration set.
const MIGRATIONS: &[i64] = &[1, 2, 3, 4, 10, 12, 14, 16];
/// The versions of the set under row-level security.
const RLS_MIGRATIONS: &[i64] = &[1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 16, 17];

/// Where a contract test runs: the PostgreSQL store with the tiered cache (one schema, a
/// schema per tenant, or row-level security), or the in-memory store with an in-process
/// cache. Every test below runs on each.
#[derive(Clone)]
enum Backend {
    Postgres {
        db: Db,
        outbox: Outbox,
        isolation: Option<TenantIsolation>,
    },
    Memory(InMemoryOrganizationStore),
}

/// How a tenant-isolated setup keeps tenants apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolation {
    /// A schema per tenant (`tenant_<id>`).
    Schemas,
    /// Shared tables under row-level security, used by an application role that is neither
    /// their owner nor `BYPASSRLS`.
    Rls,
}

impl Isolation {
    pub(crate) fn of(self) -> TenantIsolation {
        match self {
            Isolation::Schemas => TenantIsolation::schema_per_tenant("tenant_").unwrap(),
            Isolation::Rls => TenantIsolation::row_level_security(),
        }
    }

    /// The same isolation as configuration ([`OrgConfig::tenancy`]): the service under test
    /// is built from it by `OrganizationService::new`, as a service loading its config would.
    fn config(self) -> neo_db::TenancyConfig {
        match self {
            Isolation::Schemas => neo_db::TenancyConfig::schema_per_tenant("tenant_"),
            Isolation::Rls => neo_db::TenancyConfig::row_level_security(),
        }
    }
}

pub(crate) struct Setup {
    _servers: Option<(neo_testkit::TestDatabase, neo_testkit::TestRedis)>,
    /// The owner and application roles (and the PgBouncer logging in as the latter), and
    /// the owner's pool.
    roles: Option<(neo_testkit::SplitRoles, Db)>,
    backend: Backend,
    pub(crate) orgs: OrganizationService,
    /// The tenant a tenant-isolated setup's contract tests act for.
    pub(crate) tenant: Option<TenantId>,
}

/// The PostgreSQL setup (the HTTP tests use it too).
pub(crate) async fn setup() -> Setup {
    Setup::postgres().await
}

impl Setup {
    pub(crate) async fn postgres() -> Setup {
        Setup::postgres_via(neo_testkit::PgRoute::Direct).await
    }

    /// PostgreSQL reached by `route`: through PgBouncer with `pooler = "transaction"`.
    pub(crate) async fn pgbouncer() -> Setup {
        Setup::postgres_via(neo_testkit::PgRoute::PgBouncer).await
    }

    async fn postgres_via(route: neo_testkit::PgRoute) -> Setup {
        let test_db = route.database().await;
        let redis = neo_testkit::redis().await;
        let db = Db::connect(
            &(if route.is_pooled() {
                DbConfig::behind_transaction_pooler(test_db.url(), test_db.direct_url())
            } else {
                DbConfig::with_url(test_db.url())
            }),
        )
        .await
        .unwrap();
        let outbox = Outbox::new(&db, OutboxConfig::default()).unwrap();
        let cache = HybridCache::<Organization>::tiered(
            CacheConfig {
                key_prefix: redis.key_prefix().to_owned(),
                ..CacheConfig::named("orgs")
            },
            redis.url(),
        )
        .unwrap();
        let orgs = OrganizationService::new(&db, outbox.clone(), Some(cache), OrgConfig::default())
            .unwrap();
        assert_eq!(orgs.migrate().await.unwrap().applied, MIGRATIONS);
        Setup {
            _servers: Some((test_db, redis)),
            roles: None,
            backend: Backend::Postgres {
                db,
                outbox,
                isolation: None,
            },
            orgs,
            tenant: None,
        }
    }

    /// A tenant-isolated PostgreSQL setup reached by `route`: the owner role migrates (for
    /// `tenants`' schemas, or the shared tables once) and grants, the application role runs
    /// the service; the contract tests act for the first tenant.
    pub(crate) async fn isolated(
        isolation: Isolation,
        route: neo_testkit::PgRoute,
        tenants: &[TenantId],
    ) -> Setup {
        let test_db = neo_testkit::PgRoute::Direct.database().await;
        let roles = test_db.split_roles(route.is_pooled()).await.unwrap();
        let redis = neo_testkit::redis().await;
        let owner = Db::connect(&DbConfig::with_url(roles.owner_url()))
            .await
            .unwrap();
        let owner_outbox = Outbox::new(&owner, OutboxConfig::default()).unwrap();
        let config = OrgConfig::default();
        let owner_store = PgOrganizationStore::tenant_isolated(
            &owner,
            owner_outbox,
            &config.schema,
            isolation.of(),
        )
        .unwrap();
        let mut schemas = vec![Schema::new(&OutboxConfig::default().schema).unwrap()];
        match isolation {
            Isolation::Schemas => {
                for tenant in tenants {
                    let report = owner_store.for_tenant(*tenant).migrate().await.unwrap();
                    assert_eq!(report.applied, MIGRATIONS);
                    schemas.push(isolation.of().schema_of(*tenant).unwrap().unwrap());
                }
            }
            Isolation::Rls => {
                assert_eq!(owner_store.migrate().await.unwrap().applied, RLS_MIGRATIONS);
                schemas.push(Schema::new(&config.schema).unwrap());
            }
        }
        for schema in &schemas {
            neo_db::tenancy::grant_app_role(&owner, schema, roles.app())
                .await
                .unwrap();
        }
        let db = Db::connect(
            &(if route.is_pooled() {
                DbConfig::behind_transaction_pooler(roles.app_url(), test_db.direct_url())
            } else {
                DbConfig::with_url(roles.app_url())
            }),
        )
        .await
        .unwrap();
        let outbox = Outbox::new(&db, OutboxConfig::default()).unwrap();
        let cache = HybridCache::<Organization>::tiered(
            CacheConfig {
                key_prefix: redis.key_prefix().to_owned(),
                ..CacheConfig::named("orgs")
            },
            redis.url(),
        )
        .unwrap();
        let orgs = OrganizationService::new(
            &db,
            outbox.clone(),
            Some(cache),
            OrgConfig {
                tenancy: isolation.config(),
                ..config
            },
        )
        .unwrap();
        Setup {
            _servers: Some((test_db, redis)),
            roles: Some((roles, owner)),
            backend: Backend::Postgres {
                db,
                outbox,
                isolation: Some(isolation.of()),
            },
            orgs,
            tenant: tenants.first().copied(),
        }
    }

    /// The in-memory store keeping tenants apart; the contract tests act for the first.
    pub(crate) async fn memory_isolated(tenants: &[TenantId]) -> Setup {
        let store = InMemoryOrganizationStore::tenant_isolated();
        let cache = HybridCache::<Organization>::memory(CacheConfig::named("orgs")).unwrap();
        let orgs =
            OrganizationService::with_store(store.clone(), Some(cache), OrgConfig::default())
                .unwrap();
        Setup {
            _servers: None,
            roles: None,
            backend: Backend::Memory(store),
            orgs,
            tenant: tenants.first().copied(),
        }
    }

    /// Runs a contract test in the setup's tenant (when it has one).
    pub(crate) async fn run<F: std::future::Future<Output = ()>>(
        self,
        test: impl FnOnce(Setup) -> F,
    ) {
        match self.tenant {
            Some(tenant) => neo_tenant::scope(tenant, test(self)).await,
            None => test(self).await,
        }
    }

    /// The service's cache key of `id` (namespaced by the tenant in a tenant-isolated setup).
    fn cache_key(&self, id: neo_core::OrganizationId) -> String {
        match self.tenant {
            Some(tenant) => format!("org:{tenant}:{id}"),
            None => format!("org:{id}"),
        }
    }

    /// The database's direct URL as the superuser that created it (bypasses row-level
    /// security: only for checking what is really stored).
    pub(crate) fn superuser_url(&self) -> &str {
        self._servers
            .as_ref()
            .expect("a PostgreSQL setup")
            .0
            .direct_url()
    }

    /// The owner and application roles (a tenant-isolated PostgreSQL setup only).
    pub(crate) fn roles(&self) -> &neo_testkit::SplitRoles {
        &self.roles.as_ref().expect("a tenant-isolated setup").0
    }

    async fn memory() -> Setup {
        let store = InMemoryOrganizationStore::new();
        let cache = HybridCache::<Organization>::memory(CacheConfig::named("orgs")).unwrap();
        let orgs =
            OrganizationService::with_store(store.clone(), Some(cache), OrgConfig::default())
                .unwrap();
        orgs.migrate().await.unwrap();
        Setup {
            _servers: None,
            roles: None,
            backend: Backend::Memory(store),
            orgs,
            tenant: None,
        }
    }

    /// The PostgreSQL parts (for checks that read the tables).
    pub(crate) fn pg_parts(&self) -> (&Db, &Outbox) {
        match &self.backend {
            Backend::Postgres { db, outbox, .. } => (db, outbox),
            Backend::Memory(_) => panic!("not a PostgreSQL setup"),
        }
    }

    /// A PostgreSQL store on this setup's tables (the service's isolation, no cache).
    pub(crate) fn pg_store(&self) -> PgOrganizationStore {
        let Backend::Postgres {
            db,
            outbox,
            isolation,
        } = &self.backend
        else {
            panic!("not a PostgreSQL setup");
        };
        let schema = OrgConfig::default().schema;
        match isolation {
            None => PgOrganizationStore::new(db, outbox.clone(), &schema).unwrap(),
            Some(isolation) => {
                PgOrganizationStore::tenant_isolated(db, outbox.clone(), &schema, isolation.clone())
                    .unwrap()
            }
        }
    }

    /// Memberships of this setup's organizations (PostgreSQL only), with a tiered role
    /// cache on the setup's Redis and `config`, their limits from `orgs`' settings.
    pub(crate) fn memberships(&self, config: MembershipConfig, orgs: OrgConfig) -> Memberships {
        let (Backend::Postgres { .. }, Some((_, redis))) = (&self.backend, &self._servers) else {
            panic!("memberships need a PostgreSQL setup");
        };
        let store = self.pg_store();
        let cache = HybridCache::<String>::tiered(
            CacheConfig {
                key_prefix: redis.key_prefix().to_owned(),
                ..CacheConfig::named("members")
            },
            redis.url(),
        )
        .unwrap();
        let cursors =
            neo_core::CursorCodec::new(b"members cursor key for the tests!!".to_vec()).unwrap();
        Memberships::new(self.service(orgs), store, Some(cache), config, cursors).unwrap()
    }

    /// Another service (no cache) on the same data, with `config`.
    pub(crate) fn service(&self, config: OrgConfig) -> OrganizationService {
        match &self.backend {
            Backend::Postgres {
                db,
                outbox,
                isolation: None,
            } => OrganizationService::new(db, outbox.clone(), None, config).unwrap(),
            Backend::Postgres {
                db,
                outbox,
                isolation: Some(isolation),
            } => OrganizationService::tenant_isolated(
                db,
                outbox.clone(),
                None,
                config,
                isolation.clone(),
            )
            .unwrap(),
            Backend::Memory(store) => {
                OrganizationService::with_store(store.clone(), None, config).unwrap()
            }
        }
    }

    /// Another service with its own cache (sharing Redis with the others for PostgreSQL), on
    /// the same data, with `config`.
    fn cached_service(&self, config: OrgConfig) -> OrganizationService {
        let cache_config = CacheConfig::named("orgs-own");
        match (&self.backend, &self._servers) {
            (
                Backend::Postgres {
                    db,
                    outbox,
                    isolation,
                },
                Some((_, redis)),
            ) => {
                let cache = HybridCache::<Organization>::tiered(
                    CacheConfig {
                        key_prefix: redis.key_prefix().to_owned(),
                        ..cache_config
                    },
                    redis.url(),
                )
                .unwrap();
                match isolation {
                    None => {
                        OrganizationService::new(db, outbox.clone(), Some(cache), config).unwrap()
                    }
                    Some(isolation) => OrganizationService::tenant_isolated(
                        db,
                        outbox.clone(),
                        Some(cache),
                        config,
                        isolation.clone(),
                    )
                    .unwrap(),
                }
            }
            (Backend::Memory(store), _) => {
                let cache = HybridCache::<Organization>::memory(cache_config).unwrap();
                OrganizationService::with_store(store.clone(), Some(cache), config).unwrap()
            }
            (Backend::Postgres { .. }, None) => unreachable!("a PostgreSQL setup has servers"),
        }
    }

    /// The events written (for PostgreSQL, dispatched from the outbox, so each call returns
    /// those since the last one).
    pub(crate) async fn published(&self) -> Vec<DomainEvent> {
        match &self.backend {
            Backend::Postgres { outbox, .. } => {
                let seen = Arc::new(Mutex::new(Vec::new()));
                let sink = Arc::clone(&seen);
                outbox
                    .dispatch_once(|batch: Vec<DomainEvent>| async move {
                        sink.lock().unwrap().extend(batch);
                        Ok::<(), String>(())
                    })
                    .await
                    .unwrap();
                seen.lock().unwrap().clone()
            }
            Backend::Memory(store) => store.take_events(),
        }
    }
}

/// Each contract test, once per backend: one schema (direct and through PgBouncer), a
/// schema per tenant and row-level security (each direct and through PgBouncer, acting for a
/// tenant), in memory without and with tenants.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::Setup::postgres().await).await })*
        }
        mod memory {
            $(#[tokio::test] async fn $name() { super::$name(super::Setup::memory().await).await })*
        }
        mod pgbouncer {
            $(#[tokio::test] async fn $name() { super::$name(super::Setup::pgbouncer().await).await })*
        }
        contract!(@mode schema_per_tenant, Schemas, Direct, $($name),*);
        contract!(@mode schema_per_tenant_pgbouncer, Schemas, PgBouncer, $($name),*);
        contract!(@mode rls, Rls, Direct, $($name),*);
        contract!(@mode rls_pgbouncer, Rls, PgBouncer, $($name),*);
        mod memory_tenant_isolated {
            $(#[tokio::test] async fn $name() {
                super::Setup::memory_isolated(&[neo_core::TenantId::new()]).await.run(super::$name).await
            })*
        }
    };
    (@mode $module:ident, $isolation:ident, $route:ident, $($name:ident),*) => {
        mod $module {
            $(#[tokio::test] async fn $name() {
                super::Setup::isolated(
                    super::Isolation::$isolation,
                    neo_testkit::PgRoute::$route,
                    &[neo_core::TenantId::new()],
                )
                .await
                .run(super::$name)
                .await
            })*
        }
    };
}

/// Spawns `work` acting for the current tenant, if any (a spawned task does not inherit it).
fn spawn_here<F>(work: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    match neo_tenant::current() {
        Some(tenant) => tokio::spawn(async move { neo_tenant::scope(tenant, work).await }),
        None => tokio::spawn(work),
    }
}

contract!(
    create_get_and_save_write_the_row_the_audit_and_the_events_together,
    bad_input_is_refused_and_nothing_is_written,
    many_reads_and_writes_take_one_query_not_one_per_organization,
    search_pages_by_name_with_keyset_cursors_and_finds_domains,
    soft_delete_hides_and_restore_brings_back,
    tax_ids_are_checked_through_a_timeout_and_nothing_is_written_on_refusal,
    batch_save_writes_each_against_its_own_version,
    concurrent_saves_share_statements_and_each_gets_its_own_answer,
    settings_limit_domains_and_members_per_organization,
    a_duplicate_domain_fails_only_its_own_save,
    the_notifier_chooses_what_is_published,
    metadata_within_configured_limits_above_the_defaults_reads_back,
    saves_write_the_documents_they_changed_and_keep_the_others,
    a_large_batch_save_is_split_and_each_answer_stays_in_place,
);

fn new_org(name: &str) -> NewOrganization {
    NewOrganization::new(name, Slug::slugify(name).unwrap())
}

async fn create_get_and_save_write_the_row_the_audit_and_the_events_together(s: Setup) {
    let acme = s.orgs.create("alice", new_org("Acme Corp")).await.unwrap();
    assert_eq!(acme.status(), OrgStatus::PendingVerification);
    assert_eq!(acme.version(), 1);
    assert_eq!(
        s.orgs.get(acme.id()).await.unwrap(),
        acme,
        "read back as written"
    );
    assert_eq!(
        s.orgs
            .get_by_slug(&Slug::parse("acme-corp").unwrap())
            .await
            .unwrap(),
        acme
    );
    // The second get is an L1 hit.
    let before = s.orgs.cache().unwrap().stats().l1_hits;
    s.orgs.get(acme.id()).await.unwrap();
    assert_eq!(s.orgs.cache().unwrap().stats().l1_hits, before + 1);

    let mut changed = s.orgs.get(acme.id()).await.unwrap();
    changed.verify(vec!["kyc-1".into()]).unwrap();
    let domain = DomainName::parse("acme.example").unwrap();
    let token = changed.add_domain(domain.clone()).unwrap();
    changed.verify_domain(&domain, &token).unwrap();
    let saved = s.orgs.save("bob", changed).await.unwrap();
    assert_eq!(saved.version(), 2);
    let read = s.orgs.get(acme.id()).await.unwrap();
    assert_eq!(read.status(), OrgStatus::Active, "the cache was refreshed");
    assert_eq!(read.domains().len(), 1);
    assert!(read.domains()[0].verified_at.is_some());

    let trail = s.orgs.audit_trail(acme.id()).await.unwrap();
    let actions: Vec<(&str, &str)> = trail
        .iter()
        .map(|a| (a.actor.as_str(), a.action.as_str()))
        .collect();
    assert_eq!(actions, [("alice", "create"), ("bob", "update")]);
    assert_eq!(
        trail[1].before.as_ref().unwrap()["status"],
        "pending_verification"
    );
    assert_eq!(trail[1].after.as_ref().unwrap()["status"], "active");

    let published = s.published().await;
    // Each event names the tenant the store acts for, or, in a store of no tenant, the
    // organization; read back from the outbox.
    let tenants: Vec<Option<uuid::Uuid>> = published
        .iter()
        .map(|e| e.tenant_id().map(neo_core::TenantId::into_uuid))
        .collect();
    let expected = s.tenant.map_or(acme.id().into_uuid(), TenantId::into_uuid);
    assert_eq!(tenants, vec![Some(expected); published.len()]);
    let types: Vec<String> = published
        .iter()
        .map(|e| e.event_type().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "organization.created",
            "organization.verified",
            "organization.domain_added",
            "organization.domain_verified"
        ]
    );
}

async fn bad_input_is_refused_and_nothing_is_written(s: Setup) {
    let acme = s.orgs.create("alice", new_org("Acme")).await.unwrap();
    // A taken slug.
    let duplicate = s.orgs.create("alice", new_org("Acme")).await.unwrap_err();
    assert_eq!(duplicate.kind(), ErrorKind::AlreadyExists, "{duplicate}");
    // Metadata over this service's limits.
    let tight = s.service(OrgConfig {
        metadata_limits: MetadataLimits {
            max_keys: 1,
            ..MetadataLimits::default()
        },
        ..OrgConfig::default()
    });
    let mut wide = new_org("Wide");
    wide.metadata = Metadata::new(
        serde_json::json!({ "a": 1, "b": 2 }),
        &MetadataLimits::default(),
    )
    .unwrap();
    assert_eq!(
        tight.create("alice", wide).await.unwrap_err().kind(),
        ErrorKind::Validation
    );
    // A stale version.
    let mut first = s.orgs.get(acme.id()).await.unwrap();
    let mut second = first.clone();
    first.rename("Acme One", None).unwrap();
    s.orgs.save("alice", first).await.unwrap();
    second.rename("Acme Two", None).unwrap();
    let stale = s.orgs.save("bob", second).await.unwrap_err();
    assert!(
        matches!(
            stale,
            OrgError::Conflict {
                expected: 1,
                actual: 2,
                ..
            }
        ),
        "{stale}"
    );
    assert_eq!(s.orgs.get(acme.id()).await.unwrap().name(), "Acme One");
    // An unknown transition.
    let mut archived = s.orgs.get(acme.id()).await.unwrap();
    archived.archive().unwrap();
    let archived = s.orgs.save("alice", archived).await.unwrap();
    let mut again = archived.clone();
    assert_eq!(
        again.suspend("late").unwrap_err().kind(),
        ErrorKind::Validation
    );
    // Search input.
    assert!(
        s.orgs
            .search(Some("x"), 10, Some("not-a-cursor"), false)
            .await
            .is_err()
    );
    assert!(
        s.orgs
            .search(Some(&"x".repeat(300)), 10, None, false)
            .await
            .is_err()
    );
    assert_eq!(
        s.orgs.audit_trail(acme.id()).await.unwrap().len(),
        3,
        "create, rename, archive"
    );
}

async fn many_reads_and_writes_take_one_query_not_one_per_organization(s: Setup) {
    let news: Vec<NewOrganization> = (0..50)
        .map(|n| new_org(&format!("Batch Org {n:02}")))
        .collect();
    let mut created = s.orgs.batch_create("loader", news).await.unwrap();
    assert_eq!(created.len(), 50);
    // Two of them with domains, which many-id reads bring along in the same query, sorted.
    for (at, names) in [
        (1, &["b.example", "a.example"][..]),
        (2, &["c.example"][..]),
    ] {
        let mut org = created[at].clone();
        for name in names {
            org.add_domain(DomainName::parse(name).unwrap()).unwrap();
        }
        created[at] = s.orgs.save("loader", org).await.unwrap();
    }
    // Documents of their own, some the same as their neighbour's (decoding clones a
    // document whose bytes are the previous row's), some not.
    for (at, plan) in [(3, "growth"), (4, "growth"), (5, "scale"), (7, "scale")] {
        let mut org = created[at].clone();
        org.merge_metadata(
            &serde_json::json!({ "plan": plan }),
            &MetadataLimits::default(),
        )
        .unwrap();
        created[at] = s.orgs.save("loader", org).await.unwrap();
    }
    let mut ids: Vec<_> = created.iter().map(Organization::id).collect();
    ids.push(neo_core::OrganizationId::new()); // missing
    let got = s.orgs.get_many(&ids).await.unwrap();
    assert_eq!(got.len(), 51);
    assert!(
        got[..50]
            .iter()
            .zip(&created)
            .all(|(g, c)| g.as_ref() == Some(c))
    );
    assert!(got[50].is_none());
    assert_eq!(
        s.service(OrgConfig::default())
            .get_many(&ids)
            .await
            .unwrap(),
        got
    );
    // All 50 are now cached: a second call is all L1 hits.
    let hits = s.orgs.cache().unwrap().stats().l1_hits;
    s.orgs.get_many(&ids[..50]).await.unwrap();
    assert_eq!(s.orgs.cache().unwrap().stats().l1_hits, hits + 50);

    s.orgs
        .add_member(created[0].id(), UserId::new(), "owner")
        .await
        .unwrap();
    s.orgs
        .add_member(created[0].id(), UserId::new(), "admin")
        .await
        .unwrap();
    let summaries = s.orgs.summaries(&ids[..3]).await.unwrap();
    let of = |at: usize| {
        summaries
            .iter()
            .find(|x| x.organization.id() == created[at].id())
            .unwrap()
    };
    assert_eq!((of(0).domains, of(0).members), (0, 2));
    let domains = |org: &Organization| -> Vec<String> {
        org.domains().iter().map(|d| d.domain.to_string()).collect()
    };
    assert_eq!(of(1).domains, 2);
    assert_eq!(domains(&of(1).organization), ["a.example", "b.example"]);
    assert_eq!(domains(&of(2).organization), ["c.example"]);
    assert_eq!(of(2).organization, created[2]);
    assert_eq!(
        s.orgs
            .add_member(neo_core::OrganizationId::new(), UserId::new(), "owner")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

async fn search_pages_by_name_with_keyset_cursors_and_finds_domains(s: Setup) {
    let news: Vec<NewOrganization> = (0..25)
        .map(|n| new_org(&format!("Searchable {n:02}")))
        .collect();
    s.orgs.batch_create("seed", news).await.unwrap();
    s.orgs.create("seed", new_org("Other Thing")).await.unwrap();
    let mut names = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .orgs
            .search(Some("searchable"), 10, cursor.as_deref(), names.is_empty())
            .await
            .unwrap();
        if names.is_empty() {
            assert_eq!(page.total, Some(25));
        }
        names.extend(page.items.iter().map(|o| o.name().to_owned()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|n| format!("Searchable {n:02}")).collect();
    assert_eq!(names, expected);
    // Offset pages give the same rows.
    let mut by_offset = Vec::new();
    let mut offset = Some(0);
    while let Some(at) = offset {
        let page = s
            .orgs
            .search_offset(Some("searchable"), at, 10, false)
            .await
            .unwrap();
        assert_eq!(page.next_cursor, None);
        by_offset.extend(page.items.iter().map(|o| o.name().to_owned()));
        offset = page.next_offset;
    }
    assert_eq!(by_offset, expected);
    // Several words: the text as a whole decides, whichever word the index is asked for first.
    for (text, found) in [
        ("searchable 1", 10..20),
        ("ABLE 2", 20..25),
        ("searchable searchable", 0..0),
    ] {
        let page = s.orgs.search(Some(text), 30, None, true).await.unwrap();
        let names: Vec<&str> = page.items.iter().map(|o| o.name()).collect();
        let expected: Vec<String> = found.map(|n| format!("Searchable {n:02}")).collect();
        assert_eq!(names, expected, "{text}");
        assert_eq!(
            page.total,
            Some(i64::try_from(names.len()).unwrap()),
            "{text}"
        );
    }
    // Wildcards are literal.
    assert!(
        s.orgs
            .search(Some("%"), 10, None, false)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // A claimed domain finds its organization.
    let mut other = s
        .orgs
        .get_by_slug(&Slug::parse("other-thing").unwrap())
        .await
        .unwrap();
    other
        .add_domain(DomainName::parse("other.example").unwrap())
        .unwrap();
    s.orgs.save("seed", other).await.unwrap();
    let found = s
        .orgs
        .search(Some("other.example"), 10, None, false)
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1);
}

async fn soft_delete_hides_and_restore_brings_back(s: Setup) {
    let acme = s.orgs.create("alice", new_org("Gone Soon")).await.unwrap();
    s.orgs.get(acme.id()).await.unwrap(); // cached
    let deleted = s
        .orgs
        .delete("alice", acme.id(), acme.version())
        .await
        .unwrap();
    assert!(deleted.deleted_at().is_some());
    assert_eq!(
        s.orgs.get(acme.id()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // Many-id reads leave it out too (the statement reads it; decoding drops it).
    let kept = s.orgs.create("alice", new_org("Kept Here")).await.unwrap();
    for service in [&s.orgs, &s.service(OrgConfig::default())] {
        assert_eq!(
            service.get_many(&[acme.id(), kept.id()]).await.unwrap(),
            [None, Some(kept.clone())]
        );
    }
    assert!(
        s.orgs
            .search(Some("gone"), 10, None, false)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        s.orgs
            .delete("alice", acme.id(), deleted.version())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Validation
    );
    let restored = s
        .orgs
        .restore("alice", acme.id(), deleted.version())
        .await
        .unwrap();
    assert!(restored.deleted_at().is_none());
    assert_eq!(
        s.orgs.get(acme.id()).await.unwrap().version(),
        restored.version()
    );
    assert_eq!(
        s.orgs.get_many(&[acme.id(), kept.id()]).await.unwrap(),
        [Some(restored.clone()), Some(kept)]
    );
    let actions: Vec<String> = s
        .orgs
        .audit_trail(acme.id())
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(actions, ["create", "delete", "restore"]);
    // The cache entry was removed on delete, not left stale.
    assert!(
        s.orgs
            .cache()
            .unwrap()
            .get(&s.cache_key(acme.id()))
            .await
            .unwrap()
            .is_some()
    );
}

struct SlowRegistry;

impl neo_orgs::TaxIdValidator for SlowRegistry {
    fn check<'a>(
        &'a self,
        _country: Option<&'a neo_core::CountryCode>,
        tax_id: &'a str,
    ) -> neo_orgs::TaxIdFuture<'a> {
        Box::pin(async move {
            if tax_id.starts_with("SLOW") {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
            Ok(!tax_id.ends_with("000"))
        })
    }
}

async fn tax_ids_are_checked_through_a_timeout_and_nothing_is_written_on_refusal(s: Setup) {
    let with_tax_id = |name: &str, tax_id: &str| {
        let mut new = new_org(name);
        new.legal.country = Some(neo_core::CountryCode::parse("DE").unwrap());
        new.legal.tax_id = Some(tax_id.to_owned());
        new
    };
    // The default format check.
    s.orgs
        .create("a", with_tax_id("Good Gmbh", "DE123456789"))
        .await
        .unwrap();
    let bad = s
        .orgs
        .create("a", with_tax_id("Bad Gmbh", "FR123"))
        .await
        .unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::Validation, "{bad}");
    // A host's registry, behind a 100 ms timeout.
    let registry = s
        .service(OrgConfig {
            tax_id_check: neo_resilience::ResilienceConfig {
                timeout: Some(std::time::Duration::from_millis(100)),
                ..OrgConfig::default().tax_id_check
            },
            ..OrgConfig::default()
        })
        .with_tax_id_validator(SlowRegistry);
    let refused = registry
        .create("a", with_tax_id("Zero Gmbh", "DE000"))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Validation);
    let started = std::time::Instant::now();
    let slow = registry
        .create("a", with_tax_id("Slow Gmbh", "SLOW1"))
        .await
        .unwrap_err();
    assert_eq!(slow.kind(), ErrorKind::Unavailable, "{slow}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let found = s.orgs.search(Some("gmbh"), 10, None, true).await.unwrap();
    assert_eq!(found.total, Some(1), "only the valid one was written");
    // A changed tax id is checked on save too.
    let mut good = found.items[0].clone();
    good.update_legal(Legal {
        tax_id: Some("FR1".to_owned()),
        country: good.legal().country,
    })
    .unwrap();
    let refused = s.orgs.save("a", good.clone()).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Validation, "{refused}");
    let stored = s.orgs.get(good.id()).await.unwrap();
    assert_eq!(stored.legal().tax_id.as_deref(), Some("DE123456789"));
    assert_eq!(stored.version(), 1, "nothing was written");
}

async fn batch_save_writes_each_against_its_own_version(s: Setup) {
    let news = (0..5)
        .map(|n| new_org(&format!("Batch Save {n}")))
        .collect();
    let created = s.orgs.batch_create("seed", news).await.unwrap();
    s.published().await;
    // The third was saved by someone else meanwhile: its version is stale.
    let mut meanwhile = created[2].clone();
    meanwhile.rename("Renamed Meanwhile", None).unwrap();
    s.orgs.save("carol", meanwhile).await.unwrap();
    s.published().await;
    let mut changed: Vec<Organization> = created.clone();
    for (n, org) in changed.iter_mut().enumerate() {
        org.rename(&format!("Batch Saved {n}"), None).unwrap();
    }
    changed.push(changed[0].clone()); // the same organization twice
    let results = s.orgs.batch_save("dave", changed).await;
    assert_eq!(results.len(), 6);
    for n in [0, 1, 3, 4] {
        let saved = results[n].as_ref().unwrap();
        assert_eq!(
            (saved.version(), saved.name()),
            (2, format!("Batch Saved {n}").as_str())
        );
    }
    assert!(
        matches!(
            results[2],
            Err(OrgError::Conflict {
                expected: 1,
                actual: 2,
                ..
            })
        ),
        "{:?}",
        results[2]
    );
    assert_eq!(
        results[5].as_ref().unwrap_err().kind(),
        ErrorKind::Validation
    );
    // Stored, cached copies evicted, and only the saved ones audited and published.
    assert_eq!(
        s.orgs.get(created[0].id()).await.unwrap().name(),
        "Batch Saved 0"
    );
    assert_eq!(
        s.orgs.get(created[2].id()).await.unwrap().name(),
        "Renamed Meanwhile"
    );
    let renamed: Vec<String> = s
        .published()
        .await
        .iter()
        .filter(|e| e.event_type() == "organization.renamed")
        .map(|e| e.aggregate_id().to_owned())
        .collect();
    let mut expected: Vec<String> = [0, 1, 3, 4]
        .iter()
        .map(|n| created[*n].id().to_string())
        .collect();
    let mut renamed_sorted = renamed.clone();
    renamed_sorted.sort();
    expected.sort();
    assert_eq!(renamed_sorted, expected);
    let trail = s.orgs.audit_trail(created[2].id()).await.unwrap();
    assert_eq!(trail.len(), 2, "create and carol's rename only");
}

async fn concurrent_saves_share_statements_and_each_gets_its_own_answer(s: Setup) {
    let news = (0..200)
        .map(|n| new_org(&format!("Concurrent {n:03}")))
        .collect();
    let created = s.orgs.batch_create("seed", news).await.unwrap();
    let saves = created.iter().cloned().map(|mut org| {
        let orgs = s.orgs.clone();
        spawn_here(async move {
            org.merge_metadata(
                &serde_json::json!({ "touched": true }),
                &MetadataLimits::default(),
            )
            .unwrap();
            orgs.save("load", org).await
        })
    });
    let saved: Vec<Organization> = futures_join(saves).await;
    assert!(saved.iter().all(|o| o.version() == 2));
    // Many saves of one organization at once: exactly one wins, the rest see a conflict.
    let target = s.orgs.get(created[0].id()).await.unwrap();
    let racers = (0..20).map(|n| {
        let (orgs, mut org) = (s.orgs.clone(), target.clone());
        spawn_here(async move {
            org.rename(&format!("Racer {n}"), None).unwrap();
            orgs.save("race", org).await
        })
    });
    let mut outcomes = Vec::new();
    for racer in racers.collect::<Vec<_>>() {
        outcomes.push(racer.await.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1);
    assert!(
        outcomes
            .iter()
            .filter_map(|o| o.as_ref().err())
            .all(|e| e.kind() == ErrorKind::Conflict)
    );
    assert_eq!(s.orgs.get(created[0].id()).await.unwrap().version(), 3);
    assert_eq!(s.orgs.audit_trail(created[0].id()).await.unwrap().len(), 3);
}

async fn futures_join(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<Result<Organization, OrgError>>>,
) -> Vec<Organization> {
    let tasks: Vec<_> = tasks.collect();
    let mut done = Vec::with_capacity(tasks.len());
    for task in tasks {
        done.push(task.await.unwrap().unwrap());
    }
    done
}

async fn settings_limit_domains_and_members_per_organization(s: Setup) {
    let small = s.orgs.create("seed", new_org("Small Plan")).await.unwrap();
    let big = s.orgs.create("seed", new_org("Big Plan")).await.unwrap();
    let mut settings = ConfiguredSettings {
        defaults: OrgSettings::new(1, 2),
        ..ConfiguredSettings::default()
    };
    settings
        .overrides
        .insert("big-plan".to_owned(), OrgSettings::new(3, 5));
    let orgs = s.service(OrgConfig {
        settings,
        ..OrgConfig::default()
    });
    let mut small = orgs.get(small.id()).await.unwrap();
    small
        .add_domain(DomainName::parse("one.small.example").unwrap())
        .unwrap();
    small
        .add_domain(DomainName::parse("two.small.example").unwrap())
        .unwrap();
    let over = orgs.save("seed", small).await.unwrap_err();
    assert_eq!(over.kind(), ErrorKind::Validation, "{over}");
    let mut big = orgs.get(big.id()).await.unwrap();
    big.add_domain(DomainName::parse("one.big.example").unwrap())
        .unwrap();
    big.add_domain(DomainName::parse("two.big.example").unwrap())
        .unwrap();
    assert_eq!(orgs.save("seed", big).await.unwrap().domains().len(), 2);
    let small_id = orgs
        .get_by_slug(&Slug::parse("small-plan").unwrap())
        .await
        .unwrap();
    assert!(
        small_id.domains().is_empty(),
        "the refused save wrote nothing"
    );
    let (first, second) = (UserId::new(), UserId::new());
    orgs.add_member(small_id.id(), first, "owner")
        .await
        .unwrap();
    orgs.add_member(small_id.id(), second, "admin")
        .await
        .unwrap();
    let full = orgs
        .add_member(small_id.id(), UserId::new(), "viewer")
        .await
        .unwrap_err();
    assert_eq!(full.kind(), ErrorKind::Validation, "{full}");
    // Changing an existing member's role is not a new member.
    orgs.add_member(small_id.id(), second, "viewer")
        .await
        .unwrap();
    let summary = orgs.summaries(&[small_id.id()]).await.unwrap();
    assert_eq!(summary[0].members, 2);
}

async fn a_duplicate_domain_fails_only_its_own_save(s: Setup) {
    let news = (0..3)
        .map(|n| new_org(&format!("Domain Owner {n}")))
        .collect();
    let created = s.orgs.batch_create("seed", news).await.unwrap();
    let shared = DomainName::parse("shared.example").unwrap();
    let mut first = created[0].clone();
    first.add_domain(shared.clone()).unwrap();
    s.orgs.save("seed", first).await.unwrap();
    // Alone, and in a batch with a good save.
    let mut thief = created[1].clone();
    thief.add_domain(shared.clone()).unwrap();
    let taken = s.orgs.save("seed", thief.clone()).await.unwrap_err();
    assert_eq!(taken.kind(), ErrorKind::AlreadyExists, "{taken}");
    let mut innocent = created[2].clone();
    innocent.rename("Innocent", None).unwrap();
    let results = s.orgs.batch_save("seed", vec![thief, innocent]).await;
    assert_eq!(
        results[0].as_ref().unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(results[1].as_ref().unwrap().name(), "Innocent");
    let thief = s.orgs.get(created[1].id()).await.unwrap();
    assert!(thief.domains().is_empty());
    assert_eq!(thief.version(), 1);
    // Two saves of one batch claiming the same new domain: one gets it, the other is refused.
    let fresh = DomainName::parse("fresh.example").unwrap();
    let mut one = thief;
    one.add_domain(fresh.clone()).unwrap();
    let mut two = s.orgs.get(created[2].id()).await.unwrap();
    two.add_domain(fresh.clone()).unwrap();
    let results = s.orgs.batch_save("seed", vec![one, two]).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let refused = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_eq!(refused.kind(), ErrorKind::AlreadyExists, "{refused}");
}

/// Keeps metadata edits internal.
struct PublicOnly;

impl Notifier for PublicOnly {
    fn notifications(&self, _org: &Organization, events: Vec<DomainEvent>) -> Vec<DomainEvent> {
        events
            .into_iter()
            .filter(|e| e.event_type() != "organization.metadata_updated")
            .collect()
    }
}

async fn the_notifier_chooses_what_is_published(s: Setup) {
    let orgs = s.service(OrgConfig::default()).with_notifier(PublicOnly);
    let mut org = orgs.create("seed", new_org("Quiet One")).await.unwrap();
    org.merge_metadata(
        &serde_json::json!({ "internal": 1 }),
        &MetadataLimits::default(),
    )
    .unwrap();
    org.rename("Quiet Two", None).unwrap();
    orgs.save("seed", org).await.unwrap();
    let types: Vec<String> = s
        .published()
        .await
        .iter()
        .map(|e| e.event_type().to_owned())
        .collect();
    assert_eq!(types, ["organization.created", "organization.renamed"]);
}

async fn metadata_within_configured_limits_above_the_defaults_reads_back(s: Setup) {
    let wide = MetadataLimits {
        max_keys: 1_000,
        max_bytes: 64 * 1024,
        ..MetadataLimits::default()
    };
    let config = OrgConfig {
        metadata_limits: wide,
        ..OrgConfig::default()
    };
    let keys: serde_json::Map<String, serde_json::Value> = (0..300)
        .map(|n| (format!("key{n}"), serde_json::json!(n)))
        .collect();
    let mut new = new_org("Wide Metadata");
    new.metadata = Metadata::new(serde_json::Value::Object(keys), &wide).unwrap();
    let writer = s.cached_service(config.clone());
    let created = writer.create("seed", new).await.unwrap();
    // From the store, from this cache, and from the shared tier by a second instance.
    assert_eq!(writer.get(created.id()).await.unwrap(), created);
    assert_eq!(writer.get(created.id()).await.unwrap(), created);
    let reader = s.cached_service(config);
    assert_eq!(reader.get(created.id()).await.unwrap(), created);
    assert_eq!(
        reader
            .get(created.id())
            .await
            .unwrap()
            .metadata()
            .as_map()
            .len(),
        300
    );
}

/// Saves send only the JSON documents that changed: each change reaches storage, and a save
/// that changed none of them leaves them as stored.
async fn saves_write_the_documents_they_changed_and_keep_the_others(s: Setup) {
    let created = s
        .orgs
        .create("erin", new_org("Documents Kept"))
        .await
        .unwrap();
    let uncached = s.service(OrgConfig::default());
    let mut org = created.clone();
    org.merge_metadata(
        &serde_json::json!({ "plan": "growth" }),
        &MetadataLimits::default(),
    )
    .unwrap();
    org.update_branding(Branding {
        primary_color: Some(Color::parse("#112233").unwrap()),
        ..Branding::default()
    })
    .unwrap();
    org.update_legal(Legal {
        tax_id: None,
        country: Some(neo_core::CountryCode::parse("FR").unwrap()),
    })
    .unwrap();
    org.verify(vec!["kyc-7".to_owned()]).unwrap();
    let saved = s.orgs.save("erin", org).await.unwrap();
    let stored = uncached.get(created.id()).await.unwrap();
    assert_eq!(stored.metadata(), saved.metadata());
    assert_eq!(
        stored.metadata().get("plan"),
        Some(&serde_json::json!("growth"))
    );
    assert_eq!(
        stored.branding().primary_color.as_ref().map(Color::as_str),
        Some("#112233")
    );
    assert_eq!(
        stored.legal().country.as_ref().map(|c| c.as_str()),
        Some("FR")
    );
    assert_eq!(stored.verification().documents, vec!["kyc-7".to_owned()]);
    assert!(stored.verification().verified_at.is_some());

    // A rename changes no document: all four stay as stored.
    let mut renamed = saved.clone();
    renamed.rename("Documents Still Kept", None).unwrap();
    s.orgs.save("erin", renamed).await.unwrap();
    let after = uncached.get(created.id()).await.unwrap();
    assert_eq!(after.name(), "Documents Still Kept");
    assert_eq!(
        (
            after.metadata(),
            after.branding(),
            after.legal(),
            after.verification()
        ),
        (
            stored.metadata(),
            stored.branding(),
            stored.legal(),
            stored.verification()
        )
    );
    // The same through batch_save, with one document changed.
    let mut merged = after.clone();
    merged
        .merge_metadata(
            &serde_json::json!({ "seats": 5 }),
            &MetadataLimits::default(),
        )
        .unwrap();
    let results = s.orgs.batch_save("erin", vec![merged]).await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let last = uncached.get(created.id()).await.unwrap();
    assert_eq!(
        last.metadata().get("plan"),
        Some(&serde_json::json!("growth"))
    );
    assert_eq!(last.metadata().get("seats"), Some(&serde_json::json!(5)));
    assert_eq!(last.branding(), stored.branding());
}

/// A batch larger than `batch_rows` runs as several statements; every answer still lands at
/// its organization's position, stale and repeated ones included.
async fn a_large_batch_save_is_split_and_each_answer_stays_in_place(s: Setup) {
    let parts = s.service(OrgConfig {
        saves: SaveConfig {
            batch_rows: 3,
            ..SaveConfig::default()
        },
        ..OrgConfig::default()
    });
    let news = (0..10).map(|n| new_org(&format!("Split {n}"))).collect();
    let created = parts.batch_create("seed", news).await.unwrap();
    let mut meanwhile = created[6].clone();
    meanwhile.rename("Split Meanwhile", None).unwrap();
    parts.save("carol", meanwhile).await.unwrap();
    let mut changed = created.clone();
    for (n, org) in changed.iter_mut().enumerate() {
        org.rename(&format!("Split Saved {n}"), None).unwrap();
    }
    changed.push(changed[8].clone()); // the same organization twice, the second refused
    let results = parts.batch_save("dave", changed.clone()).await;
    assert_eq!(results.len(), 11);
    for (position, org) in changed.iter().enumerate() {
        match (position, &results[position]) {
            (10, Err(error)) => assert_eq!(error.kind(), ErrorKind::Validation),
            (6, Err(OrgError::Conflict { actual: 2, .. })) => {}
            (6 | 10, other) => panic!("position {position}: {other:?}"),
            (_, Ok(saved)) => {
                assert_eq!((saved.id(), saved.name()), (org.id(), org.name()));
                assert_eq!(saved.version(), 2);
            }
            (_, Err(error)) => panic!("position {position}: {error}"),
        }
    }
    assert_eq!(
        parts.get(created[6].id()).await.unwrap().name(),
        "Split Meanwhile"
    );
    assert_eq!(
        parts.get(created[9].id()).await.unwrap().name(),
        "Split Saved 9"
    );
}

#[test]
fn a_saves_configuration_with_a_zero_is_refused() {
    let zeroed: [fn(&mut SaveConfig); 4] = [
        |c| c.max_batch = 0,
        |c| c.concurrency = 0,
        |c| c.queue_capacity = 0,
        |c| c.batch_rows = 0,
    ];
    for zero in zeroed {
        let mut saves = SaveConfig::default();
        zero(&mut saves);
        let config = OrgConfig {
            saves,
            ..OrgConfig::default()
        };
        let refused =
            OrganizationService::with_store(InMemoryOrganizationStore::new(), None, config)
                .unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Validation, "{refused}");
        assert!(refused.to_string().contains("batch_rows"), "{refused}");
    }
}

/// Audit records that the first release wrote as `jsonb` read back the same after migration 2
/// turns the columns into `json`.
#[tokio::test]
async fn migration_2_keeps_the_audit_records_written_before_it() {
    let test_db = neo_testkit::postgres().await;
    let db = Db::connect(&DbConfig::with_url(test_db.url()))
        .await
        .unwrap();
    let config = OrgConfig {
        schema: "orgs_upgraded".into(),
        ..OrgConfig::default()
    };
    let schema = neo_db::Schema::new(&config.schema).unwrap();
    neo_db::MigrationSet::new("neo_orgs")
        .unwrap()
        .with(
            1,
            "organizations",
            include_str!("../../migrations/1_organizations.sql"),
        )
        .run_in_schema(&db, &schema)
        .await
        .unwrap();
    let id = neo_core::OrganizationId::new();
    let (created, renamed) = (
        serde_json::json!({"name": "Acme", "version": 1, "metadata": {"tier": "gold"}}),
        serde_json::json!({"name": "Acme Corp", "version": 2, "metadata": {"tier": "gold"}}),
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.organization_audit (organization_id, actor, action, before, after) \
         VALUES ($1, 'alice', 'create', NULL, $2::jsonb), ($1, 'bob', 'update', NULL, $3::jsonb)"
    )))
    .bind(id)
    .bind(&created)
    .bind(&renamed)
    .execute(db.pool())
    .await
    .unwrap();

    let orgs = OrganizationService::new(
        &db,
        Outbox::new(&db, OutboxConfig::default()).unwrap(),
        None,
        config,
    )
    .unwrap();
    assert_eq!(orgs.migrate().await.unwrap().applied, MIGRATIONS[1..]);
    let trail = orgs.audit_trail(id).await.unwrap();
    let read: Vec<_> = trail
        .iter()
        .map(|e| (e.actor.as_str(), e.before.clone(), e.after.clone()))
        .collect();
    assert_eq!(
        read,
        [
            ("alice", None, Some(created.clone())),
            ("bob", Some(created), Some(renamed)),
        ]
    );
}

/// A slug edited by hand in storage into one that is not a slug (or a reserved word) fails
/// the reads that decode it, one organization or many, instead of giving an invalid `Slug`.
#[tokio::test]
async fn a_stored_slug_edited_into_no_slug_fails_the_read() {
    let s = Setup::postgres().await;
    let Backend::Postgres { db, .. } = &s.backend else {
        unreachable!("a PostgreSQL setup")
    };
    let uncached = s.service(OrgConfig::default());
    let before = s
        .orgs
        .create("alice", new_org("Widgets Before"))
        .await
        .unwrap();
    let edited = s
        .orgs
        .create("alice", new_org("Widgets Edited"))
        .await
        .unwrap();
    let ids = [before.id(), edited.id()];
    for slug in [
        "Widgets-Edited",
        "widgets--edited",
        "widgets-edited-",
        " widgets",
        "admin",
    ] {
        sqlx::query("UPDATE neo_orgs.organizations SET slug = $2 WHERE id = $1")
            .bind(edited.id())
            .bind(slug)
            .execute(db.pool())
            .await
            .unwrap();
        let refused = uncached.get_many(&ids).await.unwrap_err();
        assert!(refused.to_string().contains("slug"), "{slug:?}: {refused}");
        let refused = uncached.get(edited.id()).await.unwrap_err();
        assert!(refused.to_string().contains("slug"), "{slug:?}: {refused}");
    }
    sqlx::query("UPDATE neo_orgs.organizations SET slug = 'widgets-edited' WHERE id = $1")
        .bind(edited.id())
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(
        uncached.get_many(&ids).await.unwrap(),
        [Some(before), Some(edited)]
    );
}

/// With the table analysed, a text search weighs its words against PostgreSQL's sample of the
/// names (`pg_stats`), quotes and commas in the sampled names included, and finds the same
/// organizations as the text as a whole.
#[tokio::test]
async fn a_search_after_analyze_finds_what_the_whole_text_matches() {
    let s = Setup::postgres().await;
    let Backend::Postgres { db, .. } = &s.backend else {
        unreachable!("a PostgreSQL setup")
    };
    let mut news: Vec<NewOrganization> = (0..200)
        .map(|n| new_org(&format!("Common Word {n}")))
        .collect();
    news.extend((0..20).map(|n| new_org(&format!("Odd, \"Quoted\" {{Name}} {n}"))));
    s.orgs.batch_create("seed", news).await.unwrap();
    sqlx::query("ANALYZE neo_orgs.organizations")
        .execute(db.pool())
        .await
        .unwrap();
    let (sampled,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_stats WHERE schemaname = 'neo_orgs' \
         AND tablename = 'organizations' AND attname = 'name' AND histogram_bounds IS NOT NULL",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(sampled, 1, "ANALYZE kept a sample of the names");
    for (text, expected) in [
        ("word 199", vec!["Common Word 199"]),
        ("common word 42", vec!["Common Word 42"]),
        ("\"quoted\" {name} 7", vec!["Odd, \"Quoted\" {Name} 7"]),
        ("17 word", vec![]),
    ] {
        let page = s.orgs.search(Some(text), 30, None, true).await.unwrap();
        let names: Vec<&str> = page.items.iter().map(|o| o.name()).collect();
        assert_eq!(names, expected, "{text}");
        assert_eq!(page.total, Some(i64::try_from(expected.len()).unwrap()));
    }
}

/// Records written before migration 4 (JSON in `after`) and the images written after it read
/// back as one trail: the first image's `before` is the last JSON record's `after`, and images
/// read as the same JSON the JSON records hold.
#[tokio::test]
async fn trails_join_json_records_and_images() {
    let s = Setup::postgres().await;
    let Backend::Postgres { db, .. } = &s.backend else {
        unreachable!("a PostgreSQL setup")
    };
    let acme = s
        .orgs
        .create(
            "alice",
            NewOrganization::new("Acme", Slug::parse("acme").unwrap()),
        )
        .await
        .unwrap();
    let legacy = serde_json::json!({"name": "Acme Legacy", "version": 0});
    // Audit ids come from a sequence: 0 sorts before every record the service wrote.
    sqlx::query(
        "INSERT INTO neo_orgs.organization_audit (id, organization_id, actor, action, after) \
         VALUES (0, $1, 'import', 'create', $2::json)",
    )
    .bind(acme.id())
    .bind(&legacy)
    .execute(db.pool())
    .await
    .unwrap();
    let mut renamed = acme.clone();
    renamed.rename("Acme Corp", None).unwrap();
    s.orgs.save("bob", renamed).await.unwrap();

    let trail = s.orgs.audit_trail(acme.id()).await.unwrap();
    let read: Vec<_> = trail
        .iter()
        .map(|e| {
            let name = |image: &Option<serde_json::Value>| {
                image
                    .as_ref()
                    .map(|i| i["name"].as_str().unwrap().to_owned())
            };
            (e.actor.as_str(), name(&e.before), name(&e.after))
        })
        .collect();
    assert_eq!(
        read,
        [
            ("import", None, Some("Acme Legacy".to_owned())),
            (
                "alice",
                Some("Acme Legacy".to_owned()),
                Some("Acme".to_owned())
            ),
            ("bob", Some("Acme".to_owned()), Some("Acme Corp".to_owned())),
        ]
    );
    // The last image is the stored row, field for field.
    let stored: serde_json::Value = sqlx::query_scalar(
        "SELECT row_to_json(o)::jsonb FROM neo_orgs.organizations o WHERE o.id = $1",
    )
    .bind(acme.id())
    .fetch_one(db.pool())
    .await
    .unwrap();
    let image = trail[2].after.as_ref().unwrap();
    assert_eq!(image, &stored);
    assert_eq!(image["version"], 2);
    assert_eq!(image["status"], "pending_verification");
    assert_eq!(image["metadata"], serde_json::json!({}));
    assert!(image["created_at"].is_string() && image["deleted_at"].is_null());
}
