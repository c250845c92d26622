//! Memberships and roles against PostgreSQL and Redis: permissions answered from the cache
//! and invalidated by every change, keyset pages of an organization's members and a user's
//! organizations, `max_members` from the settings. Each test runs on one schema (direct and
//! through PgBouncer) and under row-level security acting for a tenant.

use crate::service::{Isolation, Setup};
use neo_cache::Cache;
use neo_core::{ErrorKind, HasErrorKind, OrganizationId, Slug, UserId};
use neo_orgs::{ConfiguredSettings, MembershipConfig, NewOrganization, OrgConfig, OrgSettings};
use std::collections::BTreeSet;

postgres_modes!(
    can_answers_from_the_cache_and_every_membership_change_invalidates_it,
    members_and_a_users_organizations_come_in_keyset_pages,
    max_members_from_the_settings_is_enforced,
);

fn new_org(name: &str) -> NewOrganization {
    NewOrganization::new(
        name,
        Slug::parse(&name.to_lowercase().replace(' ', "-")).unwrap(),
    )
}

async fn can_answers_from_the_cache_and_every_membership_change_invalidates_it(s: Setup) {
    let mut config = MembershipConfig::default();
    config.roles.insert(
        "billing".to_owned(),
        BTreeSet::from(["invoices:read".to_owned()]),
    );
    let members = s.memberships(config, OrgConfig::default());
    let org = s.orgs.create("seed", new_org("Acme")).await.unwrap();
    let (alice, bob) = (UserId::new(), UserId::new());
    members.add(org.id(), alice, "admin").await.unwrap();
    members.add(org.id(), bob, "owner").await.unwrap();

    assert!(
        members
            .can(alice, org.id(), "members:invite")
            .await
            .unwrap()
    );
    assert!(!members.can(alice, org.id(), "invoices:read").await.unwrap());
    assert!(members.can(bob, org.id(), "anything:at-all").await.unwrap());
    let stranger = UserId::new();
    assert!(
        !members
            .can(stranger, org.id(), "organization:read")
            .await
            .unwrap()
    );
    assert!(
        !members
            .can(alice, OrganizationId::new(), "organization:read")
            .await
            .unwrap()
    );

    // Answered from the cache: a role changed behind the service's back is not seen ...
    let db = s.pg_parts().0.clone();
    let schema = OrgConfig::default().schema;
    let raw =
        format!("UPDATE {schema}.organization_members SET role = 'billing' WHERE user_id = $1");
    let changed = match s.tenant {
        Some(tenant) => {
            let isolation = neo_db::TenantIsolation::row_level_security();
            let mut tx = isolation.begin(&db, tenant).await.unwrap();
            let done = sqlx::query(sqlx::AssertSqlSafe(raw))
                .bind(uuid::Uuid::from(alice))
                .execute(&mut **tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            done.rows_affected()
        }
        None => {
            // In a transaction behind PgBouncer (see neo_db::Pooler).
            let mut conn = db.statement_connection().await.unwrap();
            let done = sqlx::query(sqlx::AssertSqlSafe(raw))
                .persistent(false)
                .bind(uuid::Uuid::from(alice))
                .execute(&mut *conn)
                .await
                .unwrap();
            conn.finish().await.unwrap();
            done.rows_affected()
        }
    };
    assert_eq!(changed, 1);
    assert!(
        members
            .can(alice, org.id(), "members:invite")
            .await
            .unwrap()
    );
    assert_eq!(
        members.role(org.id(), alice).await.unwrap().as_deref(),
        Some("admin")
    );
    // ... and every change through the service invalidates it, the "not a member" too.
    members.add(org.id(), alice, "billing").await.unwrap();
    assert!(
        !members
            .can(alice, org.id(), "members:invite")
            .await
            .unwrap()
    );
    assert!(members.can(alice, org.id(), "invoices:read").await.unwrap());
    members.add(org.id(), stranger, "member").await.unwrap();
    assert!(
        members
            .can(stranger, org.id(), "organization:read")
            .await
            .unwrap()
    );
    members.remove(org.id(), stranger).await.unwrap();
    assert!(
        !members
            .can(stranger, org.id(), "organization:read")
            .await
            .unwrap()
    );
    assert_eq!(members.role(org.id(), stranger).await.unwrap(), None);

    // Refused: a role not configured, removing a non-member; nothing changes.
    let refused = members.add(org.id(), alice, "superuser").await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Validation, "{refused}");
    assert!(
        refused.to_string().contains("not a configured role"),
        "{refused}"
    );
    assert_eq!(
        members.role(org.id(), alice).await.unwrap().as_deref(),
        Some("billing")
    );
    let missing = members.remove(org.id(), stranger).await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    let unknown = members
        .add(OrganizationId::new(), alice, "member")
        .await
        .unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::NotFound);

    // A deleted organization grants nothing.
    let deleted = s
        .orgs
        .delete("seed", org.id(), org.version())
        .await
        .unwrap();
    assert!(deleted.deleted_at().is_some());
    members.remove(org.id(), bob).await.unwrap_err();
    // (The roles cached before the deletion are dropped for the check.)
    let fresh = s.memberships(MembershipConfig::default(), OrgConfig::default());
    fresh.cache().unwrap().clear().await.unwrap();
    assert!(!fresh.can(bob, org.id(), "organization:read").await.unwrap());
}

async fn members_and_a_users_organizations_come_in_keyset_pages(s: Setup) {
    let members = s.memberships(MembershipConfig::default(), OrgConfig::default());
    let created = s
        .orgs
        .batch_create(
            "seed",
            (0..4).map(|n| new_org(&format!("Paged {n}"))).collect(),
        )
        .await
        .unwrap();
    let org = created[0].id();
    let mut users: Vec<UserId> = (0..25).map(|_| UserId::new()).collect();
    for (n, user) in users.iter().enumerate() {
        let role = if n == 0 { "owner" } else { "member" };
        members.add(org, *user, role).await.unwrap();
    }
    users.sort_by_key(|u| uuid::Uuid::from(*u));
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = members.members(org, cursor.as_deref(), 10).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 10);
        seen.extend(page.items.iter().map(|m| m.user));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, users, "every member once, by user id");

    // A user in three organizations, one of them deleted: the two live ones, paged.
    let user = users[3];
    members.add(created[1].id(), user, "admin").await.unwrap();
    members.add(created[2].id(), user, "member").await.unwrap();
    s.orgs
        .delete("seed", created[2].id(), created[2].version())
        .await
        .unwrap();
    let first = members.organizations_of(user, None, 1).await.unwrap();
    assert_eq!(first.items.len(), 1);
    let second = members
        .organizations_of(user, first.next_cursor.as_deref(), 1)
        .await
        .unwrap();
    assert_eq!(second.items.len(), 1);
    assert!(
        second.next_cursor.is_none()
            || members
                .organizations_of(user, second.next_cursor.as_deref(), 1)
                .await
                .unwrap()
                .items
                .is_empty()
    );
    let mut listed: Vec<(OrganizationId, String)> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|o| (o.organization, o.role.clone()))
        .collect();
    listed.sort_by_key(|(id, _)| uuid::Uuid::from(*id));
    let mut expected = vec![
        (org, "member".to_owned()),
        (created[1].id(), "admin".to_owned()),
    ];
    expected.sort_by_key(|(id, _)| uuid::Uuid::from(*id));
    assert_eq!(listed, expected);
    let names: Vec<&str> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|o| o.name.as_str())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("Paged ")));

    // Cursors: made for another list, forged, or a zero limit are refused.
    let other_list = members
        .members(
            created[1].id(),
            Some(cursor_of(&members, org).await.as_str()),
            10,
        )
        .await;
    assert_eq!(other_list.unwrap_err().kind(), ErrorKind::Validation);
    let forged = members
        .members(org, Some("bm90LWEtY3Vyc29y"), 10)
        .await
        .unwrap_err();
    assert_eq!(forged.kind(), ErrorKind::Validation);
    assert_eq!(
        members.members(org, None, 0).await.unwrap_err().kind(),
        ErrorKind::Validation
    );
    // An organization without members (or that does not exist) has an empty page.
    assert!(
        members
            .members(created[3].id(), None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        members
            .members(OrganizationId::new(), None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// A cursor of the members list of `org` (which has more than one member).
async fn cursor_of(members: &neo_orgs::Memberships, org: OrganizationId) -> String {
    members
        .members(org, None, 1)
        .await
        .unwrap()
        .next_cursor
        .unwrap()
}

async fn max_members_from_the_settings_is_enforced(s: Setup) {
    let small = s.orgs.create("seed", new_org("Small Team")).await.unwrap();
    let big = s.orgs.create("seed", new_org("Big Team")).await.unwrap();
    let mut settings = ConfiguredSettings {
        defaults: OrgSettings::new(1, 2),
        ..ConfiguredSettings::default()
    };
    settings
        .overrides
        .insert("big-team".to_owned(), OrgSettings::new(1, 3));
    let members = s.memberships(
        MembershipConfig::default(),
        OrgConfig {
            settings,
            ..OrgConfig::default()
        },
    );
    let (first, second) = (UserId::new(), UserId::new());
    members.add(small.id(), first, "owner").await.unwrap();
    members.add(small.id(), second, "member").await.unwrap();
    let third = UserId::new();
    let full = members.add(small.id(), third, "member").await.unwrap_err();
    assert_eq!(full.kind(), ErrorKind::Validation, "{full}");
    assert_eq!(members.role(small.id(), third).await.unwrap(), None);
    // A new role for a member is not a new member.
    members.add(small.id(), second, "admin").await.unwrap();
    assert_eq!(
        members
            .members(small.id(), None, 10)
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    for _ in 0..3 {
        members
            .add(big.id(), UserId::new(), "member")
            .await
            .unwrap();
    }
    assert_eq!(
        members
            .add(big.id(), UserId::new(), "member")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Validation
    );
}
