//! neo-orgs memberships and invitations: the figures issue 31 sets goals for — `can()`
//! answered from the cache, the first page of an organization with 10,000 members, and
//! accepting an invitation (the membership, the invitation and its event in one
//! transaction).

use crate::check;
use crate::orgs::{median, service, time, unique};
use crate::report::Row;
use neo_cache::{CacheConfig, HybridCache};
use neo_core::{CursorCodec, EmailAddress, Slug, UserId};
use neo_orgs::{
    ConfiguredSettings, MembershipConfig, Memberships, NewOrganization, OrgConfig, OrgSettings,
    PgOrganizationStore,
};
use std::time::Duration;

/// Members of the large organization.
pub const LARGE_ORG_MEMBERS: usize = 10_000;

/// The figures.
#[derive(Debug, Clone)]
pub struct Figures {
    /// `can()` answered from L1, median.
    pub can_cached: Duration,
    /// The first page (100) of the members of an organization with
    /// [`LARGE_ORG_MEMBERS`], median.
    pub members_first_page: Duration,
    /// `accept` of an invitation, median.
    pub accept: Duration,
}

/// Measures the figures on the server at `url`.
pub fn measure(url: &str) -> Figures {
    let rt = crate::runtime();
    rt.block_on(async {
        let run = unique("m");
        let schema = format!("bench_members_{}", run.replace('-', "_"));
        let (db, _) = service(url, &schema, false).await;
        let outbox = check(neo_events::Outbox::new(
            &db,
            neo_events::OutboxConfig {
                schema: format!("{schema}_events"),
                channel: format!("{schema}_events"),
                ..neo_events::OutboxConfig::default()
            },
        ));
        let store = check(PgOrganizationStore::new(&db, outbox, &schema));
        let config = OrgConfig {
            schema: schema.clone(),
            settings: ConfiguredSettings {
                defaults: OrgSettings::new(10, 100_000),
                ..ConfiguredSettings::default()
            },
            ..OrgConfig::default()
        };
        let orgs = check(neo_orgs::OrganizationService::with_store(
            store.clone(),
            None,
            config,
        ));
        let cache = check(HybridCache::<String>::memory(CacheConfig::named(&schema)));
        let cursors = check(CursorCodec::new(
            b"bench members cursor key, 32 bytes+".to_vec(),
        ));
        let members = check(Memberships::new(
            orgs.clone(),
            store,
            Some(cache),
            MembershipConfig::default(),
            cursors,
        ));
        let org = check(
            orgs.create(
                "bench",
                NewOrganization::new(
                    "Large Org",
                    check(Slug::parse(&format!("large-{schema}").replace('_', "-"))),
                ),
            )
            .await,
        );
        // 10,000 members in one statement (as an import would), then statistics current.
        let users: Vec<uuid::Uuid> = (0..LARGE_ORG_MEMBERS)
            .map(|_| uuid::Uuid::from(UserId::new()))
            .collect();
        check(
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {schema}.organization_members (organization_id, user_id, role) \
                 SELECT $1, u, 'member' FROM UNNEST($2::uuid[]) u"
            )))
            .bind(uuid::Uuid::from(org.id()))
            .bind(&users)
            .execute(db.pool())
            .await,
        );
        check(
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "VACUUM ANALYZE {schema}.organization_members"
            )))
            .execute(db.pool())
            .await,
        );
        let user = check(UserId::from_uuid(users[0]));
        assert!(check(members.can(user, org.id(), "members:read").await));
        let mut cans = Vec::new();
        for _ in 0..5_000 {
            cans.push(
                time(async {
                    assert!(check(members.can(user, org.id(), "members:read").await));
                })
                .await,
            );
        }
        let mut pages = Vec::new();
        for _ in 0..200 {
            pages.push(
                time(async {
                    let page = check(members.members(org.id(), None, 100).await);
                    assert_eq!(page.items.len(), 100);
                })
                .await,
            );
        }
        let mut accepts = Vec::new();
        for n in 0..200 {
            let email = check(EmailAddress::parse(&format!("invitee{n}@example.com")));
            let (_, token) = check(members.invite("bench", org.id(), &email, "member").await);
            accepts.push(
                time(async {
                    check(members.accept(token.expose(), UserId::new()).await);
                })
                .await,
            );
        }
        Figures {
            can_cached: median(cans),
            members_first_page: median(pages),
            accept: median(accepts),
        }
    })
}

/// The report rows of [`measure`], against the goals.
pub fn rows(url: &str) -> Vec<Row> {
    let f = measure(url);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    vec![
        Row::figure(
            "orgs can(), cached (L1), median",
            format!("{:.2} µs", us(f.can_cached)),
            "≤ 2 µs",
            us(f.can_cached) <= 2.0,
        ),
        Row::figure(
            format!(
                "orgs members of an org with {LARGE_ORG_MEMBERS} members, first page of 100, median"
            ),
            format!("{:.2} ms", ms(f.members_first_page)),
            "< 5 ms",
            ms(f.members_first_page) < 5.0,
        ),
        Row::figure(
            "orgs accept an invitation (member + invitation + event), median",
            format!("{:.2} ms", ms(f.accept)),
            "< 5 ms",
            ms(f.accept) < 5.0,
        ),
    ]
}

#[cfg(test)]
mod tests {
    /// The figures run against the test PostgreSQL.
    #[test]
    fn the_member_figures_run() {
        let rt = crate::runtime();
        let test_db = rt.block_on(neo_testkit::postgres());
        let figures = super::measure(test_db.url());
        assert!(
            figures.can_cached < figures.members_first_page,
            "{figures:?}"
        );
    }
}
