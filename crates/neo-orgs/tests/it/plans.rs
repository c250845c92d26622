//! Statements that take organizations by id read them by the primary key whatever the
//! statistics say.

use neo_core::{CursorCodec, OrganizationId, Slug, UserId};
use neo_db::{Db, DbConfig};
use neo_events::{Outbox, OutboxConfig};
use neo_orgs::{
    MembershipConfig, Memberships, NewOrganization, OrgConfig, Organization, OrganizationService,
    OrganizationStore, PgOrganizationStore,
};
use neo_testkit::{PgRoute, TestDatabase};

/// A store in `schema` on one connection (so that its prepared statements are the ones the
/// calls used), whose table was analysed while every organization was deleted (the
/// statistics see no live one) and then got 5,000 live ones (`live`, their ids).
struct Analysed {
    _test_db: TestDatabase,
    db: Db,
    outbox: Outbox,
    store: PgOrganizationStore,
    live: Vec<OrganizationId>,
}

async fn analysed_while_every_organization_was_deleted(schema: &str) -> Analysed {
    let test_db = PgRoute::Direct.database().await;
    let db = Db::connect(&DbConfig {
        max_connections: 1,
        ..DbConfig::with_url(test_db.url())
    })
    .await
    .unwrap();
    let outbox = Outbox::new(&db, OutboxConfig::default()).unwrap();
    outbox.migrate().await.unwrap();
    let store = PgOrganizationStore::new(&db, outbox.clone(), schema).unwrap();
    let table = neo_db::TableName::new("organizations")
        .unwrap()
        .in_schema(&neo_db::Schema::new(schema).unwrap());
    store.migrate().await.unwrap();
    let organizations = |first: usize, n: usize| -> Vec<Organization> {
        (first..first + n)
            .map(|i| {
                let slug = Slug::parse(&format!("org-{i}")).unwrap();
                Organization::create(NewOrganization::new(format!("Org {i}"), slug)).unwrap()
            })
            .collect()
    };
    let run = async |sql: String| {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(db.pool())
            .await
            .unwrap();
    };
    store
        .insert("seed", &organizations(0, 50), &[])
        .await
        .unwrap();
    run(format!("UPDATE {table} SET deleted_at = now()")).await;
    run(format!("ANALYZE {table}")).await;
    let live = organizations(50, 5_000);
    store.insert("seed", &live, &[]).await.unwrap();
    Analysed {
        _test_db: test_db,
        db,
        outbox,
        store,
        live: live.iter().map(Organization::id).collect(),
    }
}

/// Asserts that every plan reads organizations by `organizations_pkey` and none out of
/// `organizations_name_id`.
fn assert_read_by_primary_key(plans: &[(String, String)]) {
    for (statement, plan) in plans {
        assert!(
            plan.contains("organizations_pkey") && !plan.contains("organizations_name_id"),
            "{statement}\n{plan}"
        );
    }
}

/// The generic plans of the statements `add_member` and `summaries` prepared (taking the
/// organization's row lock, reading summaries) must find the ids in the primary key.
/// Written with `deleted_at IS NULL`, they read every live organization out of
/// `organizations_name_id` instead.
#[tokio::test]
async fn organizations_taken_by_id_are_read_by_the_primary_key_whatever_the_statistics_say() {
    let a = analysed_while_every_organization_was_deleted("orgs_plans").await;
    let (id, other) = (a.live[0], a.live[1]);

    a.store
        .add_member(id, UserId::new(), "member", 100)
        .await
        .unwrap();
    assert_eq!(a.store.summaries(&[id]).await.unwrap().len(), 1);

    let plans =
        neo_testkit::generic_plans(a.db.pool(), &["%FOR UPDATE", "SELECT s.*%"], |statement| {
            if statement.ends_with("FOR UPDATE") {
                format!("'{other}'")
            } else {
                format!("'{{{other}}}'")
            }
        })
        .await
        .unwrap();
    assert_eq!(plans.len(), 2, "the row lock and the summaries: {plans:?}");
    assert_read_by_primary_key(&plans);
}

/// The same for the memberships' statements that join organizations: a member's role (the
/// permission check on a cache miss), a user's organizations, removing a member. Written
/// with `deleted_at IS NULL`, the role and the removal read the organization's id out of
/// `organizations_name_id` (its last column), and a user's organizations were read by
/// walking every live organization in that index.
#[tokio::test]
async fn memberships_read_organizations_by_the_primary_key_whatever_the_statistics_say() {
    let schema = "orgs_plans_members";
    let a = analysed_while_every_organization_was_deleted(schema).await;
    let service = OrganizationService::new(
        &a.db,
        a.outbox.clone(),
        None,
        OrgConfig {
            schema: schema.to_owned(),
            ..OrgConfig::default()
        },
    )
    .unwrap();
    let cursors = CursorCodec::new(b"members cursor key for the tests!!".to_vec()).unwrap();
    let memberships = Memberships::new(
        service,
        a.store.clone(),
        None,
        MembershipConfig::default(),
        cursors,
    )
    .unwrap();
    let (id, user) = (a.live[0], UserId::new());
    a.store.add_member(id, user, "member", 100).await.unwrap();

    assert_eq!(
        memberships.role(id, user).await.unwrap().as_deref(),
        Some("member")
    );
    let page = memberships.organizations_of(user, None, 10).await.unwrap();
    assert_eq!(page.items.len(), 1);
    memberships.remove(id, user).await.unwrap();

    let other = a.live[1];
    let plans = neo_testkit::generic_plans(
        a.db.pool(),
        &[
            "SELECT m.role FROM%",
            "SELECT o.id, o.name, o.slug, m.role%",
            "DELETE FROM%organization_members% m USING%",
        ],
        |statement| {
            if statement.starts_with("SELECT o.id") {
                format!("'{user}', '{}', 10", uuid::Uuid::nil())
            } else {
                format!("'{other}', '{user}'")
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(
        plans.len(),
        3,
        "the role, the user's organizations and the removal: {plans:?}"
    );
    assert_read_by_primary_key(&plans);
}
