use neo_cache::{Cache, CacheConfig, HybridCache};
use neo_core::{DomainName, ErrorKind, HasErrorKind, Metadata, MetadataLimits, Slug, UserId};
use neo_db::{Db, DbConfig};
use neo_events::{DomainEvent, Outbox, OutboxConfig};
use neo_orgs::{
    NewOrganization, OrgConfig, OrgError, OrgStatus, Organization, OrganizationService,
};
use std::sync::{Arc, Mutex};

pub(crate) struct Setup {
    _db: neo_testkit::TestDatabase,
    _redis: neo_testkit::TestRedis,
    pub(crate) db: Db,
    pub(crate) outbox: Outbox,
    pub(crate) orgs: OrganizationService,
}

pub(crate) async fn setup() -> Setup {
    let test_db = neo_testkit::postgres().await;
    let redis = neo_testkit::redis().await;
    let db = Db::connect(&DbConfig::with_url(test_db.url()))
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
    let orgs =
        OrganizationService::new(&db, outbox.clone(), Some(cache), OrgConfig::default()).unwrap();
    assert_eq!(orgs.migrate().await.unwrap().applied, vec![1]);
    Setup {
        _db: test_db,
        _redis: redis,
        db,
        outbox,
        orgs,
    }
}

fn new_org(name: &str) -> NewOrganization {
    NewOrganization::new(name, Slug::slugify(name).unwrap())
}

async fn published(outbox: &Outbox) -> Vec<DomainEvent> {
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

#[tokio::test]
async fn create_get_and_save_write_the_row_the_audit_and_the_events_together() {
    let s = setup().await;
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

    let types: Vec<String> = published(&s.outbox)
        .await
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

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_written() {
    let s = setup().await;
    let acme = s.orgs.create("alice", new_org("Acme")).await.unwrap();
    // A taken slug.
    let duplicate = s.orgs.create("alice", new_org("Acme")).await.unwrap_err();
    assert_eq!(duplicate.kind(), ErrorKind::AlreadyExists, "{duplicate}");
    // Metadata over this service's limits.
    let tight = OrganizationService::new(
        &s.db,
        s.outbox.clone(),
        None,
        OrgConfig {
            metadata_limits: MetadataLimits {
                max_keys: 1,
                ..MetadataLimits::default()
            },
            ..OrgConfig::default()
        },
    )
    .unwrap();
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

#[tokio::test]
async fn many_reads_and_writes_take_one_query_not_one_per_organization() {
    let s = setup().await;
    let news: Vec<NewOrganization> = (0..50)
        .map(|n| new_org(&format!("Batch Org {n:02}")))
        .collect();
    let created = s.orgs.batch_create("loader", news).await.unwrap();
    assert_eq!(created.len(), 50);
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
    let summaries = s.orgs.summaries(&ids[..2]).await.unwrap();
    let first = summaries
        .iter()
        .find(|x| x.organization.id() == created[0].id())
        .unwrap();
    assert_eq!((first.domains, first.members), (0, 2));
    assert_eq!(
        s.orgs
            .add_member(neo_core::OrganizationId::new(), UserId::new(), "owner")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn search_pages_by_name_with_keyset_cursors_and_finds_domains() {
    let s = setup().await;
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

#[tokio::test]
async fn soft_delete_hides_and_restore_brings_back() {
    let s = setup().await;
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
            .get(&format!("org:{}", acme.id()))
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

#[tokio::test]
async fn tax_ids_are_checked_through_a_timeout_and_nothing_is_written_on_refusal() {
    let s = setup().await;
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
    let registry = OrganizationService::new(
        &s.db,
        s.outbox.clone(),
        None,
        OrgConfig {
            tax_id_check: neo_resilience::ResilienceConfig {
                timeout: Some(std::time::Duration::from_millis(100)),
                ..OrgConfig::default().tax_id_check
            },
            ..OrgConfig::default()
        },
    )
    .unwrap()
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
}
