//! Statements that take organizations by id read them by the primary key whatever the
//! statistics say.

use neo_core::{Slug, UserId};
use neo_db::{Db, DbConfig};
use neo_events::{Outbox, OutboxConfig};
use neo_orgs::{NewOrganization, Organization, OrganizationStore, PgOrganizationStore};
use neo_testkit::PgRoute;

/// The table is analysed while every organization is deleted (the statistics see no live
/// one), then gets 5,000 live ones; the generic plans of the statements `add_member` and
/// `summaries` prepared (taking the organization's row lock, reading summaries), read back
/// from the one connection's prepared statements, must find the ids in the primary key.
/// Written with `deleted_at IS NULL`, they read every live organization out of
/// `organizations_name_id` instead.
#[tokio::test]
async fn organizations_taken_by_id_are_read_by_the_primary_key_whatever_the_statistics_say() {
    let test_db = PgRoute::Direct.database().await;
    // One connection, so that its prepared statements are the ones the calls used.
    let db = Db::connect(&DbConfig {
        max_connections: 1,
        ..DbConfig::with_url(test_db.url())
    })
    .await
    .unwrap();
    let outbox = Outbox::new(&db, OutboxConfig::default()).unwrap();
    outbox.migrate().await.unwrap();
    let schema = "orgs_plans";
    let store = PgOrganizationStore::new(&db, outbox, schema).unwrap();
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
    let (id, other) = (live[0].id(), live[1].id());

    store
        .add_member(id, UserId::new(), "member", 100)
        .await
        .unwrap();
    assert_eq!(store.summaries(&[id]).await.unwrap().len(), 1);

    let plans =
        neo_testkit::generic_plans(db.pool(), &["%FOR UPDATE", "SELECT s.*%"], |statement| {
            if statement.ends_with("FOR UPDATE") {
                format!("'{other}'")
            } else {
                format!("'{{{other}}}'")
            }
        })
        .await
        .unwrap();
    assert_eq!(plans.len(), 2, "the row lock and the summaries: {plans:?}");
    for (statement, plan) in plans {
        assert!(
            plan.contains("organizations_pkey") && !plan.contains("organizations_name_id"),
            "{statement}\n{plan}"
        );
    }
}
