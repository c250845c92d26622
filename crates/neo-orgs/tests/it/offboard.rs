//! Offboarding a tenant from every store at once: organizations in its own schema (schema per
//! tenant, the schema dropped at the end), its jobs, outbox events (the organizations' own
//! events among them, which name the tenant the service acts for), webhook endpoints, messages
//! and deliveries in shared tables, its cache entries in Redis; another tenant untouched; an
//! offboarding interrupted by a failing store resumes and finishes. And, in each isolation
//! mode (a schema per tenant, row-level security, direct and through PgBouncer), the
//! organization store's offboarding exports and erases every organization table: members,
//! invitations, domain claims, verifications and their history with the rest.

use neo_cache::{Cache, CacheConfig, EntryOptions, HybridCache};
use neo_core::{Slug, TenantId};
use neo_db::{Db, DbConfig, SchemaFor, TenantMigrationConfig, TenantMigrator, schema_per_tenant};
use neo_events::{
    AddressPolicy, DomainEvent, NewEndpoint, Outbox, OutboxConfig, WebhookConfig, Webhooks,
};
use neo_orgs::{
    NewOrganization, OrgConfig, OrganizationService, OrganizationTenantData, PgOrganizationStore,
};
use neo_queue::{NewJob, OnDuplicate, Queue, QueueConfig};
use neo_tenant::{DataFuture, ExportSink, OffboardConfig, Offboarding, TenantData, read_archive};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

struct World {
    _servers: (neo_testkit::TestDatabase, neo_testkit::TestRedis),
    db: Db,
    schema_for: SchemaFor,
    migrator: TenantMigrator,
    queue: Queue,
    outbox: Outbox,
    webhooks: Webhooks,
    cache: HybridCache<String>,
}

async fn world() -> World {
    let test_db = neo_testkit::PgRoute::Direct.database().await;
    let redis = neo_testkit::redis().await;
    let db = Db::connect(&DbConfig::with_url(test_db.url()))
        .await
        .unwrap();
    let queue = Queue::new(&db, QueueConfig::default()).unwrap();
    queue.migrate().await.unwrap();
    let outbox = Outbox::new(&db, OutboxConfig::default()).unwrap();
    outbox.migrate().await.unwrap();
    let webhooks = Webhooks::new(
        &db,
        queue.clone(),
        WebhookConfig {
            addresses: AddressPolicy {
                allow_loopback: true,
                allow_private: false,
            },
            require_https: false,
            ..WebhookConfig::default()
        },
    )
    .unwrap();
    webhooks.migrate().await.unwrap();
    let schema_for = schema_per_tenant("t_").unwrap();
    let migrator = TenantMigrator::new(
        &db,
        vec![PgOrganizationStore::migrations().unwrap()],
        schema_for.clone(),
        TenantMigrationConfig::default(),
    )
    .unwrap();
    let cache = HybridCache::<String>::tiered(
        CacheConfig {
            key_prefix: redis.key_prefix().to_owned(),
            ..CacheConfig::named("sessions")
        },
        redis.url(),
    )
    .unwrap();
    World {
        _servers: (test_db, redis),
        db,
        schema_for,
        migrator,
        queue,
        outbox,
        webhooks,
        cache,
    }
}

impl World {
    /// Provisions `tenant` and gives it `n` of everything.
    async fn seed(&self, tenant: TenantId, n: usize) {
        self.migrator.provision(tenant).await.unwrap();
        let schema = (self.schema_for)(tenant).unwrap();
        let orgs = OrganizationService::tenant_isolated(
            &self.db,
            self.outbox.clone(),
            None,
            OrgConfig::default(),
            neo_db::TenantIsolation::schema_per_tenant("t_").unwrap(),
        )
        .unwrap();
        assert_eq!(
            neo_db::TenantIsolation::schema_per_tenant("t_")
                .unwrap()
                .schema_of(tenant)
                .unwrap(),
            Some(schema),
            "the service's schema is the migrator's"
        );
        self.webhooks
            .create_endpoint(
                NewEndpoint::new("http://127.0.0.1:9/hook")
                    .tenant(tenant)
                    .subscribe("*"),
            )
            .await
            .unwrap();
        let mut events = Vec::new();
        for i in 0..n {
            let name = format!("Org {i} of {tenant}");
            let new = NewOrganization::new(&name, Slug::slugify(&format!("org-{i}")).unwrap());
            neo_tenant::scope(tenant, orgs.create("admin", new))
                .await
                .unwrap();
            let job = NewJob::new("mail.send", &i).unwrap().tenant_id(tenant);
            self.queue
                .enqueue(self.db.pool(), job, OnDuplicate::Skip)
                .await
                .unwrap();
            events.push(
                DomainEvent::new("invoice.paid", "invoice", &format!("inv-{i}"), &i)
                    .unwrap()
                    .tenant(tenant),
            );
            self.cache
                .for_tenant(&tenant)
                .set(&format!("user:{i}"), name, &EntryOptions::default())
                .await
                .unwrap();
        }
        self.outbox
            .publish_many(self.db.pool(), &events)
            .await
            .unwrap();
        self.webhooks.fan_out(&events).await.unwrap();
    }

    /// What is left of `tenant` in each place.
    async fn left(&self, tenant: TenantId) -> BTreeMap<&'static str, i64> {
        let schema = (self.schema_for)(tenant).unwrap();
        let by_tenant = [
            (
                "jobs",
                "SELECT count(*) FROM neo_queue.jobs WHERE tenant = $1::text",
            ),
            (
                "outbox",
                "SELECT count(*) FROM neo_events.outbox WHERE tenant_id = $1",
            ),
            (
                "outbox: organizations' events",
                "SELECT count(*) FROM neo_events.outbox WHERE tenant_id = $1 \
                 AND aggregate_type = 'organization'",
            ),
            (
                "endpoints",
                "SELECT count(*) FROM neo_events.webhook_endpoints WHERE tenant_id = $1",
            ),
            (
                "messages",
                "SELECT count(*) FROM neo_events.webhook_messages WHERE tenant_id = $1",
            ),
            (
                "deliveries",
                "SELECT count(*) FROM neo_events.webhook_deliveries WHERE tenant_id = $1",
            ),
        ];
        let mut left = BTreeMap::new();
        for (what, sql) in by_tenant {
            let n: i64 = sqlx::query_scalar(sql)
                .bind(tenant.as_uuid())
                .fetch_one(self.db.pool())
                .await
                .unwrap();
            left.insert(what, n);
        }
        let orgs: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(format!("{schema}.organizations"))
            .fetch_one(self.db.pool())
            .await
            .unwrap();
        let orgs = match orgs {
            Some(table) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                    .fetch_one(self.db.pool())
                    .await
                    .unwrap()
            }
            None => -1,
        };
        left.insert("organizations (-1: no schema)", orgs);
        let cached = self
            .cache
            .for_tenant(&tenant)
            .get("user:0")
            .await
            .unwrap()
            .is_some();
        left.insert("cache user:0", i64::from(cached));
        left
    }

    fn offboarding(&self, dir: &std::path::Path, queue: Arc<dyn TenantData>) -> Offboarding {
        Offboarding::new(OffboardConfig::in_dir(dir))
            .with(self.webhooks.clone())
            .with_shared(queue)
            .with(self.outbox.clone())
            .with(OrganizationTenantData::new(
                &self.db,
                self.schema_for.clone(),
            ))
            .with(self.cache.clone())
            .with(self.migrator.clone())
    }
}

/// A store that loses its database on its first purge (the way a crash mid-way does), then
/// behaves.
struct FailFirstPurge<T> {
    inner: T,
    failed: AtomicBool,
}

impl<T: TenantData> TenantData for FailFirstPurge<T> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn export<'a>(&'a self, tenant: TenantId, sink: &'a mut dyn ExportSink) -> DataFuture<'a, u64> {
        self.inner.export(tenant, sink)
    }
    fn purge(&self, tenant: TenantId) -> DataFuture<'_, u64> {
        if !self.failed.swap(true, Ordering::SeqCst) {
            return Box::pin(async {
                Err(neo_tenant::Error::Store {
                    store: "queue".into(),
                    kind: neo_core::ErrorKind::Unavailable,
                    message: "connection reset".into(),
                })
            });
        }
        self.inner.purge(tenant)
    }
}

#[tokio::test]
async fn offboarding_removes_a_tenant_everywhere_resumes_and_leaves_the_other() {
    let w = world().await;
    let (a, b) = (TenantId::new(), TenantId::new());
    w.seed(a, 3).await;
    w.seed(b, 2).await;
    let b_before = w.left(b).await;
    let a_before = w.left(a).await;
    assert!(a_before.values().all(|n| *n > 0), "{a_before:?}");
    // Three mail jobs and one delivery job per event.
    assert_eq!(a_before["jobs"], 6);
    // Three invoice events and the three organizations' `organization.created`.
    assert_eq!(a_before["outbox: organizations' events"], 3);
    assert_eq!(a_before["outbox"], 6);
    assert!(b_before.values().all(|n| *n > 0), "{b_before:?}");

    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(FailFirstPurge {
        inner: w.queue.clone(),
        failed: AtomicBool::new(false),
    });
    let first = w.offboarding(dir.path(), queue.clone()).run(a).await;
    assert!(
        matches!(&first, Err(neo_tenant::Error::Store { store, .. }) if store == "queue"),
        "{first:?}"
    );
    let halfway = w.left(a).await;
    assert_eq!(
        halfway["endpoints"], 0,
        "webhooks purged before the failure"
    );
    assert_eq!(
        halfway["jobs"], a_before["jobs"],
        "the queue's purge failed"
    );

    let report = w.offboarding(dir.path(), queue).run(a).await.unwrap();
    assert!(report.resumed);
    assert!(!report.purged.contains_key("webhooks"), "not purged twice");
    assert_eq!(report.purged.get("schema"), Some(&1));

    let after = w.left(a).await;
    assert!(
        after.iter().all(|(what, n)| *n
            == if what.starts_with("organizations") {
                -1
            } else {
                0
            }),
        "{after:?}"
    );
    assert_eq!(w.left(b).await, b_before, "the other tenant is untouched");

    // The archive holds everything exported before the first purge.
    let rows = read_archive(&report.archive).unwrap();
    let count = |store: &str, table: &str| {
        rows.iter()
            .filter(|r| r.store == store && r.table == table)
            .count() as i64
    };
    assert_eq!(count("orgs", "organizations"), 3);
    assert_eq!(count("queue", "jobs"), 6);
    assert_eq!(count("outbox", "outbox"), 6);
    assert_eq!(count("webhooks", "webhook_endpoints"), 1);
    assert_eq!(count("webhooks", "webhook_subscriptions"), 1);
    assert_eq!(count("webhooks", "webhook_messages"), a_before["messages"]);
    assert_eq!(
        count("webhooks", "webhook_deliveries"),
        a_before["deliveries"]
    );
    assert!(
        rows.iter()
            .filter(|r| r.store == "queue")
            .all(|r| r.row["tenant"] == a.to_string())
    );
    assert_eq!(report.exported.values().sum::<u64>(), rows.len() as u64);
}

/// The tenant-isolated offboarding test once per isolation mode and route, with two fresh
/// tenants (A is offboarded, B stays), run as the service's application role (which
/// row-level security binds) or as the superuser (which it does not).
macro_rules! isolated_offboarding {
    ($($module:ident: $isolation:ident, $route:ident, $runner:ident;)*) => {
        $(mod $module {
            #[tokio::test]
            async fn every_organization_table_is_exported_and_erased_for_one_tenant_only() {
                let (a, b) = (neo_core::TenantId::new(), neo_core::TenantId::new());
                let s = crate::service::Setup::isolated(
                    crate::service::Isolation::$isolation,
                    neo_testkit::PgRoute::$route,
                    &[a, b],
                )
                .await;
                super::every_organization_table_is_exported_and_erased_for_one_tenant_only(
                    s,
                    crate::service::Isolation::$isolation,
                    super::Runner::$runner,
                    a,
                    b,
                )
                .await
            }
        })*
    };
}

isolated_offboarding! {
    schema_per_tenant: Schemas, Direct, App;
    schema_per_tenant_pgbouncer: Schemas, PgBouncer, App;
    rls: Rls, Direct, App;
    rls_pgbouncer: Rls, PgBouncer, App;
    rls_as_superuser: Rls, Direct, Superuser;
}

/// Who runs the offboarding.
#[derive(Debug, Clone, Copy)]
enum Runner {
    /// The application role the service runs as.
    App,
    /// The superuser, which row-level security does not bind: only the offboarding's own
    /// `tenant_id` filter keeps it to the tenant.
    Superuser,
}

/// Every organization table, as the offboarding names them.
const ORG_TABLES: [&str; 8] = [
    "organizations",
    "organization_domains",
    "organization_domain_claims",
    "organization_members",
    "organization_invitations",
    "organization_verifications",
    "organization_verification_audit",
    "organization_audit",
];

/// A resolver that finds no record (the claims stay pending).
struct NoRecords;

impl neo_orgs::DomainResolver for NoRecords {
    fn txt_records<'a>(&'a self, _domain: &'a neo_core::DomainName) -> neo_orgs::TxtFuture<'a> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Gives `tenant` a row in every organization table: an organization (its audit), a member,
/// an invitation, a claimed domain (and its claim), a verification moved to review (its
/// history).
async fn seed_every_table(s: &crate::service::Setup, tenant: TenantId, label: &str) {
    use neo_orgs::{
        DomainVerification, DomainVerificationConfig, ManualReview, MembershipConfig,
        OrgVerifications, VerificationDocument,
    };
    let members = s.memberships(MembershipConfig::default(), OrgConfig::default());
    let queue = crate::domains::queue(s).await;
    let domains = DomainVerification::new(
        members.clone(),
        queue.clone(),
        NoRecords,
        DomainVerificationConfig::default(),
    )
    .unwrap();
    let verifications = OrgVerifications::new(members.clone(), queue, ManualReview);
    neo_tenant::scope(tenant, async {
        let org = s
            .orgs
            .create(
                "seed",
                NewOrganization::new(label, Slug::parse(label).unwrap()),
            )
            .await
            .unwrap();
        members
            .add(org.id(), neo_core::UserId::new(), "admin")
            .await
            .unwrap();
        members
            .invite(
                "seed",
                org.id(),
                &neo_core::EmailAddress::parse(&format!("bob@{label}.example")).unwrap(),
                "member",
            )
            .await
            .unwrap();
        domains
            .claim(
                "seed",
                org.id(),
                neo_core::DomainName::parse(&format!("{label}.example")).unwrap(),
            )
            .await
            .unwrap();
        let submitted = verifications
            .submit(
                "seed",
                org.id(),
                vec![VerificationDocument::new("doc-1", "registry_extract")],
            )
            .await
            .unwrap();
        verifications
            .start_review("seed", submitted.id)
            .await
            .unwrap();
    })
    .await;
}

/// How many rows of `tenant` each organization table holds, read as the superuser (which
/// row-level security does not bind): its schema's rows, or its `tenant_id`'s rows of the
/// shared tables; -1 for a table that does not exist.
async fn rows_of(
    s: &crate::service::Setup,
    isolation: crate::service::Isolation,
    tenant: TenantId,
) -> BTreeMap<&'static str, i64> {
    let db = Db::connect(&DbConfig::with_url(s.superuser_url()))
        .await
        .unwrap();
    let own_schema = isolation.of().schema_of(tenant).unwrap();
    let schema = own_schema
        .clone()
        .unwrap_or_else(|| neo_db::Schema::new(&OrgConfig::default().schema).unwrap());
    let mut rows = BTreeMap::new();
    for table in ORG_TABLES {
        let name = format!("{schema}.{table}");
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(&name)
            .fetch_one(db.pool())
            .await
            .unwrap();
        let n = match (exists, &own_schema) {
            (None, _) => -1,
            (Some(_), Some(_)) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {name}")))
                    .fetch_one(db.pool())
                    .await
                    .unwrap()
            }
            (Some(_), None) => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {name} WHERE tenant_id = $1"
            )))
            .bind(tenant.as_uuid())
            .fetch_one(db.pool())
            .await
            .unwrap(),
        };
        rows.insert(table, n);
    }
    rows
}

async fn every_organization_table_is_exported_and_erased_for_one_tenant_only(
    s: crate::service::Setup,
    isolation: crate::service::Isolation,
    runner: Runner,
    a: TenantId,
    b: TenantId,
) {
    seed_every_table(&s, a, "alpha").await;
    seed_every_table(&s, b, "bravo").await;
    let a_before = rows_of(&s, isolation, a).await;
    let b_before = rows_of(&s, isolation, b).await;
    assert!(a_before.values().all(|n| *n > 0), "{a_before:?}");
    assert!(b_before.values().all(|n| *n > 0), "{b_before:?}");

    let db = match runner {
        Runner::App => s.pg_parts().0.clone(),
        Runner::Superuser => Db::connect(&DbConfig::with_url(s.superuser_url()))
            .await
            .unwrap(),
    };
    let data =
        OrganizationTenantData::tenant_isolated(&db, &OrgConfig::default().schema, isolation.of())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = Offboarding::new(OffboardConfig::in_dir(dir.path()))
        .with(data)
        .run(a)
        .await
        .unwrap();

    // A's archive holds every row A had, table by table.
    let archived = read_archive(&report.archive).unwrap();
    let mut exported: BTreeMap<&'static str, i64> = ORG_TABLES.iter().map(|t| (*t, 0)).collect();
    for row in &archived {
        assert_eq!(row.store, "orgs");
        let table = ORG_TABLES
            .iter()
            .find(|t| **t == row.table)
            .unwrap_or_else(|| panic!("an unexpected table {}", row.table));
        *exported.get_mut(table).unwrap() += 1;
        if let Some(owner) = row.row.get("tenant_id") {
            assert_eq!(owner.as_str(), Some(a.to_string().as_str()), "{row:?}");
        }
    }
    assert_eq!(exported, a_before, "the export is A's rows, all of them");
    assert_eq!(
        report.purged.get("orgs").copied(),
        Some(a_before.values().sum::<i64>() as u64)
    );
    let names: Vec<&str> = archived
        .iter()
        .filter(|r| r.table == "organizations")
        .map(|r| r.row["slug"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha"]);

    // A has nothing left; B has all it had.
    let a_after = rows_of(&s, isolation, a).await;
    assert!(a_after.values().all(|n| *n == 0), "{a_after:?}");
    assert_eq!(rows_of(&s, isolation, b).await, b_before, "B is untouched");
}
