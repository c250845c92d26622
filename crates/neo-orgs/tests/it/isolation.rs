//! Cross-tenant isolation: in every isolation mode (a schema per tenant, row-level security,
//! each direct and through PgBouncer, and the in-memory store), tenant A's calls never
//! return, count or change tenant B's organizations, and B's ids and cursors presented by A
//! are NotFound; the same for memberships (PostgreSQL modes). Under row-level security, raw SQL on the application role sees nothing
//! without the tenant setting.

use crate::service::{Isolation, Setup};
use neo_core::{DomainName, ErrorKind, HasErrorKind, OrganizationId, Slug, TenantId, UserId};
use neo_orgs::{NewOrganization, Organization};
use neo_tenant::scope;

/// Each isolation test, once per mode, with two fresh tenants (A acts, B is the victim); those
/// after `postgres only` (memberships and invitations, kept by the PostgreSQL store alone)
/// skip the in-memory store.
macro_rules! isolation {
    ($($name:ident),* ; postgres only: $($pg:ident),* $(,)?) => {
        isolation!(@mode schema_per_tenant, Schemas, Direct, $($name,)* $($pg),*);
        isolation!(@mode schema_per_tenant_pgbouncer, Schemas, PgBouncer, $($name,)* $($pg),*);
        isolation!(@mode rls, Rls, Direct, $($name,)* $($pg),*);
        isolation!(@mode rls_pgbouncer, Rls, PgBouncer, $($name,)* $($pg),*);
        mod memory {
            $(#[tokio::test] async fn $name() {
                let (a, b) = (neo_core::TenantId::new(), neo_core::TenantId::new());
                super::$name(super::Setup::memory_isolated(&[a, b]).await, a, b).await
            })*
        }
    };
    (@mode $module:ident, $isolation:ident, $route:ident, $($name:ident),*) => {
        mod $module {
            $(#[tokio::test] async fn $name() {
                let (a, b) = (neo_core::TenantId::new(), neo_core::TenantId::new());
                let s = super::Setup::isolated(
                    super::Isolation::$isolation,
                    neo_testkit::PgRoute::$route,
                    &[a, b],
                )
                .await;
                super::$name(s, a, b).await
            })*
        }
    };
}

isolation!(
    tenant_a_never_reads_counts_or_changes_tenant_b,
    ids_and_cursors_of_tenant_b_are_not_found_for_tenant_a,
    calls_without_a_tenant_fail_closed;
    postgres only:
    tenant_a_never_reads_or_changes_tenant_bs_memberships,
);

mod members;
use members::tenant_a_never_reads_or_changes_tenant_bs_memberships;

pub(crate) fn new_org(name: &str, slug: &str) -> NewOrganization {
    NewOrganization::new(name, Slug::parse(slug).unwrap())
}

/// What B holds: three live organizations named `Shared …` (one claiming a domain, one with
/// a member, one saved once) and one deleted.
pub(crate) struct Victim {
    pub(crate) live: Vec<Organization>,
    pub(crate) deleted: Organization,
}

pub(crate) async fn seed_victim(s: &Setup, b: TenantId) -> Victim {
    scope(b, async {
        let created = s
            .orgs
            .batch_create(
                "bob",
                (0..4)
                    .map(|n| new_org(&format!("Shared {n}"), &format!("shared-{n}")))
                    .collect(),
            )
            .await
            .unwrap();
        let mut claimed = created[0].clone();
        claimed
            .add_domain(DomainName::parse("bravo.example").unwrap())
            .unwrap();
        let claimed = s.orgs.save("bob", claimed).await.unwrap();
        s.orgs
            .add_member(created[1].id(), UserId::new(), "admin")
            .await
            .unwrap();
        let deleted = s
            .orgs
            .delete("bob", created[3].id(), created[3].version())
            .await
            .unwrap();
        let live = vec![
            claimed,
            s.orgs.get(created[1].id()).await.unwrap(),
            s.orgs.get(created[2].id()).await.unwrap(),
        ];
        Victim { live, deleted }
    })
    .await
}

/// B's view of its own data, to compare before and after A's calls.
async fn victim_view(s: &Setup, b: TenantId, victim: &Victim) -> (Vec<Organization>, i64, usize) {
    scope(b, async {
        let ids: Vec<OrganizationId> = victim.live.iter().map(Organization::id).collect();
        let live: Vec<Organization> = s
            .orgs
            .get_many(&ids)
            .await
            .unwrap()
            .into_iter()
            .map(Option::unwrap)
            .collect();
        let total = s
            .orgs
            .search(None, 10, None, true)
            .await
            .unwrap()
            .total
            .unwrap();
        let mut audit = 0;
        for id in ids.iter().chain([&victim.deleted.id()]) {
            audit += s.orgs.audit_trail(*id).await.unwrap().len();
        }
        (live, total, audit)
    })
    .await
}

async fn tenant_a_never_reads_counts_or_changes_tenant_b(s: Setup, a: TenantId, b: TenantId) {
    let victim = seed_victim(&s, b).await;
    let before = victim_view(&s, b, &victim).await;
    assert_eq!(before.1, 3, "B counts its own three live organizations");
    scope(a, async {
        // A has organizations of its own with the same names, and B's slugs are free for A
        // (taken per tenant: A cannot learn that B holds one).
        let own = s
            .orgs
            .batch_create(
                "alice",
                vec![new_org("Shared A", "shared-0"), new_org("Alpha", "alpha")],
            )
            .await
            .unwrap();
        let own_ids: Vec<OrganizationId> = own.iter().map(Organization::id).collect();

        // Lists, searches, pages and counts: only A's rows.
        for (text, expected) in [(None, 2), (Some("shared"), 1), (Some("bravo.example"), 0)] {
            let page = s.orgs.search(text, 50, None, true).await.unwrap();
            assert!(
                page.items.iter().all(|o| own_ids.contains(&o.id())),
                "{text:?}"
            );
            assert_eq!(page.items.len(), expected, "{text:?}");
            assert_eq!(page.total, Some(expected as i64), "{text:?}");
            let offset = s.orgs.search_offset(text, 0, 50, true).await.unwrap();
            assert_eq!(offset.items, page.items, "{text:?}");
            assert_eq!(offset.total, Some(expected as i64), "{text:?}");
        }
        // Reads by B's keys.
        let victim_ids: Vec<OrganizationId> = victim.live.iter().map(Organization::id).collect();
        assert!(
            s.orgs
                .get_many(&victim_ids)
                .await
                .unwrap()
                .iter()
                .all(Option::is_none)
        );
        assert!(s.orgs.summaries(&victim_ids).await.unwrap().is_empty());
        for id in victim_ids.iter().chain([&victim.deleted.id()]) {
            assert!(s.orgs.audit_trail(*id).await.unwrap().is_empty());
        }
        assert_eq!(
            s.orgs
                .get_by_slug(&Slug::parse("shared-1").unwrap())
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound
        );
        // Writes to B's organizations, as B read them: none happens.
        let mut renamed = victim.live[2].clone();
        renamed.rename("Taken over", None).unwrap();
        assert_eq!(
            s.orgs.save("alice", renamed).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        let batch: Vec<Organization> = victim
            .live
            .iter()
            .cloned()
            .map(|mut o| {
                o.rename("Batch takeover", None).unwrap();
                o
            })
            .collect();
        for outcome in s.orgs.batch_save("alice", batch).await {
            assert_eq!(outcome.unwrap_err().kind(), ErrorKind::NotFound);
        }
        let live = &victim.live[1];
        assert_eq!(
            s.orgs
                .delete("alice", live.id(), live.version())
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            s.orgs
                .restore("alice", victim.deleted.id(), victim.deleted.version())
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            s.orgs
                .add_member(live.id(), UserId::new(), "intruder")
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound
        );
    })
    .await;
    // B's rows, counts and audit trails are as they were.
    assert_eq!(victim_view(&s, b, &victim).await, before);
}

async fn ids_and_cursors_of_tenant_b_are_not_found_for_tenant_a(
    s: Setup,
    a: TenantId,
    b: TenantId,
) {
    let victim = seed_victim(&s, b).await;
    // Read by B first, so B's copies sit in the shared cache.
    let b_cursor = scope(b, async {
        for org in &victim.live {
            s.orgs.get(org.id()).await.unwrap();
        }
        let page = s.orgs.search(None, 1, None, false).await.unwrap();
        page.next_cursor.expect("B has more than one page")
    })
    .await;
    scope(a, async {
        s.orgs
            .batch_create(
                "alice",
                (0..3)
                    .map(|n| new_org(&format!("Alpha {n}"), &format!("alpha-{n}")))
                    .collect(),
            )
            .await
            .unwrap();
        for org in victim.live.iter().chain([&victim.deleted]) {
            assert_eq!(
                s.orgs.get(org.id()).await.unwrap_err().kind(),
                ErrorKind::NotFound,
                "B's cached organization is not A's"
            );
        }
        let refused = s.orgs.search(None, 1, Some(&b_cursor), false).await;
        assert_eq!(refused.unwrap_err().kind(), ErrorKind::NotFound);
        // A's own cursors work.
        let first = s.orgs.search(None, 1, None, false).await.unwrap();
        let next = s
            .orgs
            .search(None, 1, first.next_cursor.as_deref(), false)
            .await
            .unwrap();
        assert_eq!(next.items.len(), 1);
        assert_ne!(next.items[0].id(), first.items[0].id());
    })
    .await;
    // And A's cursor is refused to B.
    let a_cursor = scope(a, async {
        s.orgs
            .search(None, 1, None, false)
            .await
            .unwrap()
            .next_cursor
            .unwrap()
    })
    .await;
    scope(b, async {
        let refused = s.orgs.search(None, 1, Some(&a_cursor), false).await;
        assert_eq!(refused.unwrap_err().kind(), ErrorKind::NotFound);
    })
    .await;
}

async fn calls_without_a_tenant_fail_closed(s: Setup, _a: TenantId, b: TenantId) {
    let victim = seed_victim(&s, b).await;
    let id = victim.live[0].id();
    let unauthorized = |e: neo_orgs::OrgError| {
        assert!(
            matches!(e, neo_orgs::OrgError::Tenant(_)),
            "a typed tenant error, got {e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::Unauthorized);
    };
    unauthorized(s.orgs.get(id).await.unwrap_err());
    unauthorized(s.orgs.get_many(&[id]).await.unwrap_err());
    unauthorized(s.orgs.search(None, 10, None, true).await.unwrap_err());
    unauthorized(s.orgs.summaries(&[id]).await.unwrap_err());
    unauthorized(s.orgs.audit_trail(id).await.unwrap_err());
    unauthorized(
        s.orgs
            .create("nobody", new_org("Nobody", "nobody"))
            .await
            .unwrap_err(),
    );
    let mut renamed = victim.live[0].clone();
    renamed.rename("Nobody's", None).unwrap();
    unauthorized(s.orgs.save("nobody", renamed).await.unwrap_err());
    unauthorized(
        s.orgs
            .delete("nobody", id, victim.live[0].version())
            .await
            .unwrap_err(),
    );
    // Nothing changed for B.
    scope(b, async {
        assert_eq!(s.orgs.get(id).await.unwrap(), victim.live[0]);
    })
    .await;
}

/// Raw SQL on the application role (never the owner, never a superuser): without the tenant
/// setting it sees no row of the shared tables and can write none; with A's it sees only A's;
/// a setting from an earlier transaction on the same connection is gone.
async fn raw_sql_on_the_app_role(route: neo_testkit::PgRoute) {
    use sqlx::Connection as _;
    let (a, b) = (TenantId::new(), TenantId::new());
    let s = Setup::isolated(Isolation::Rls, route, &[a, b]).await;
    seed_victim(&s, b).await;
    scope(a, async {
        s.orgs
            .create("alice", new_org("Alpha", "alpha"))
            .await
            .unwrap();
    })
    .await;
    let tables = [
        "organizations",
        "organization_domains",
        "organization_members",
        "organization_audit",
    ];
    // As a superuser (which bypasses row-level security): every row is there.
    let mut superuser = sqlx::PgConnection::connect(s.superuser_url())
        .await
        .unwrap();
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM neo_orgs.organizations")
        .fetch_one(&mut superuser)
        .await
        .unwrap();
    assert_eq!(all, 5, "B's four and A's one");

    let app = s.pg_parts().0;
    let mut tx = app.begin().await.unwrap();
    let facts = neo_testkit::RoleFacts::read(&mut tx, "neo_orgs.organizations")
        .await
        .unwrap();
    assert!(
        facts.bound_by_policies(),
        "the app role bypasses nothing: {facts:?}"
    );
    assert_eq!(facts.table_owner, s.roles().owner());
    assert_eq!(facts.role, s.roles().app());
    // The tenant never set: zero rows everywhere, and no write gets in.
    for table in tables {
        let seen: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM neo_orgs.{table}"
        )))
        .persistent(false)
        .fetch_one(&mut **tx)
        .await
        .unwrap();
        assert_eq!(seen, 0, "{table} without a tenant");
    }
    let updated = sqlx::query("UPDATE neo_orgs.organizations SET name = 'gone'")
        .persistent(false)
        .execute(&mut **tx)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 0);
    tx.rollback().await.unwrap();

    // With A's setting: A's row only; writing a row for B is refused by the policy.
    let isolation = neo_db::TenantIsolation::row_level_security();
    let mut tx = isolation.begin(app, a).await.unwrap();
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM neo_orgs.organizations")
        .persistent(false)
        .fetch_all(&mut **tx)
        .await
        .unwrap();
    assert_eq!(names, vec!["Alpha".to_owned()]);
    let deleted = sqlx::query("DELETE FROM neo_orgs.organization_members")
        .persistent(false)
        .execute(&mut **tx)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 0, "B's member is out of A's reach");
    let smuggled = sqlx::query(
        "INSERT INTO neo_orgs.organization_members (organization_id, user_id, role, tenant_id) \
         SELECT id, gen_random_uuid(), 'x', $1 FROM neo_orgs.organizations LIMIT 1",
    )
    .persistent(false)
    .bind(b.into_uuid())
    .execute(&mut **tx)
    .await
    .unwrap_err();
    assert!(
        smuggled.to_string().contains("row-level security"),
        "{smuggled}"
    );
    drop(tx);

    // On a direct connection, a committed transaction's setting does not outlive it.
    if !route.is_pooled() {
        let mut conn = app.acquire().await.unwrap();
        sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
        sqlx::query("SELECT set_config('neo.tenant_id', $1, true)")
            .bind(a.to_string())
            .execute(&mut *conn)
            .await
            .unwrap();
        sqlx::query("COMMIT").execute(&mut *conn).await.unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM neo_orgs.organizations")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(seen, 0, "the setting ended with its transaction");
    }
    // The superuser still sees all five: nothing was changed.
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM neo_orgs.organizations ORDER BY name")
            .fetch_all(&mut superuser)
            .await
            .unwrap();
    assert_eq!(
        names,
        ["Alpha", "Shared 0", "Shared 1", "Shared 2", "Shared 3"]
    );
}

#[tokio::test]
async fn rls_raw_sql_on_the_app_role_without_the_tenant_sees_nothing() {
    raw_sql_on_the_app_role(neo_testkit::PgRoute::Direct).await;
}

#[tokio::test]
async fn rls_raw_sql_on_the_app_role_without_the_tenant_sees_nothing_through_pgbouncer() {
    raw_sql_on_the_app_role(neo_testkit::PgRoute::PgBouncer).await;
}

/// Through the HTTP router behind neo-tenant's layer (tenant from `x-tenant-id`): A's requests
/// never see, count or change B's organizations.
#[cfg(feature = "http")]
mod http {
    use super::*;

    async fn serve(s: &Setup) -> String {
        let app = neo_orgs::http::router(s.orgs.clone()).layer(neo_tenant::http::TenantLayer::new(
            neo_tenant::http::HeaderResolver::new(axum::http::HeaderName::from_static(
                "x-tenant-id",
            )),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    async fn through_the_router(s: Setup, a: TenantId, b: TenantId) {
        let victim = seed_victim(&s, b).await;
        let base = serve(&s).await;
        let http = reqwest::Client::new();
        let as_a = |request: reqwest::RequestBuilder| request.header("x-tenant-id", a.to_string());
        let created = as_a(http.post(format!("{base}/organizations")))
            .json(&serde_json::json!({"name": "Alpha", "slug": "shared-0"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status().as_u16(), 201, "B's slug is free for A");
        let page: serde_json::Value = as_a(http.get(format!("{base}/organizations?count=true")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["total"], 1, "{page}");
        assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
        for org in victim.live.iter().chain([&victim.deleted]) {
            let id = org.id();
            let read = as_a(http.get(format!("{base}/organizations/{id}")))
                .send()
                .await
                .unwrap();
            assert_eq!(read.status().as_u16(), 404);
            let version = org.version();
            let deleted = as_a(http.delete(format!("{base}/organizations/{id}?version={version}")))
                .send()
                .await
                .unwrap();
            assert_eq!(deleted.status().as_u16(), 404);
            let patched = as_a(http.patch(format!("{base}/organizations/{id}")))
                .json(&serde_json::json!({"version": version, "name": "Taken over"}))
                .send()
                .await
                .unwrap();
            assert_eq!(patched.status().as_u16(), 404);
            let restored = as_a(http.post(format!("{base}/organizations/{id}/restore")))
                .json(&serde_json::json!({"version": version}))
                .send()
                .await
                .unwrap();
            assert_eq!(restored.status().as_u16(), 404);
        }
        let by_slug = as_a(http.get(format!("{base}/organizations/by-slug/shared-1")))
            .send()
            .await
            .unwrap();
        assert_eq!(by_slug.status().as_u16(), 404);
        // No tenant header: refused before the service is called.
        let anonymous = http
            .get(format!("{base}/organizations"))
            .send()
            .await
            .unwrap();
        assert!(anonymous.status().is_client_error());
        // B's organizations are as they were.
        scope(b, async {
            for org in &victim.live {
                assert_eq!(&s.orgs.get(org.id()).await.unwrap(), org);
            }
        })
        .await;
    }

    #[tokio::test]
    async fn rls() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let s = Setup::isolated(Isolation::Rls, neo_testkit::PgRoute::Direct, &[a, b]).await;
        through_the_router(s, a, b).await;
    }

    #[tokio::test]
    async fn schema_per_tenant() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let s = Setup::isolated(Isolation::Schemas, neo_testkit::PgRoute::Direct, &[a, b]).await;
        through_the_router(s, a, b).await;
    }

    #[tokio::test]
    async fn memory() {
        let (a, b) = (TenantId::new(), TenantId::new());
        through_the_router(Setup::memory_isolated(&[a, b]).await, a, b).await;
    }
}

/// The isolation mode is configuration like the rest of [`neo_orgs::OrgConfig`]: loaded from
/// `NEO_ORGS_TENANCY__*`, off by default, and a bad mode name is a configuration error.
#[test]
#[allow(clippy::result_large_err, reason = "figment's Jail API")]
fn the_isolation_mode_loads_from_neo_orgs_variables() {
    use neo_db::{TenancyConfig, TenancyMode};
    use neo_orgs::OrgConfig;
    figment::Jail::expect_with(|jail| {
        let config: OrgConfig = neo_core::config::from_env("NEO_ORGS_").unwrap();
        assert_eq!(config.tenancy, TenancyConfig::default());
        assert_eq!(config.tenancy.mode, TenancyMode::None);
        jail.set_env("NEO_ORGS_TENANCY__MODE", "row_level_security");
        jail.set_env("NEO_ORGS_TENANCY__RLS_SETTING", "app.tenant");
        let config: OrgConfig = neo_core::config::from_env("NEO_ORGS_").unwrap();
        assert_eq!(config.tenancy.mode, TenancyMode::RowLevelSecurity);
        assert!(
            config
                .tenancy
                .isolation()
                .unwrap()
                .unwrap()
                .is_row_level_security()
        );
        jail.set_env("NEO_ORGS_TENANCY__MODE", "schema_per_tenant");
        jail.set_env("NEO_ORGS_TENANCY__SCHEMA_PREFIX", "acme_");
        let config: OrgConfig = neo_core::config::from_env("NEO_ORGS_").unwrap();
        let schema = config
            .tenancy
            .isolation()
            .unwrap()
            .unwrap()
            .schema_of(TenantId::new())
            .unwrap()
            .unwrap();
        assert!(schema.as_str().starts_with("acme_"), "{schema:?}");
        jail.set_env("NEO_ORGS_TENANCY__MODE", "rls");
        let err = neo_core::config::from_env::<OrgConfig>("NEO_ORGS_").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration);
        Ok(())
    });
}
