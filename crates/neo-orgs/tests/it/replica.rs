//! Reads from a streaming replica: a caller reads its own writes while replay is paused,
//! other callers read the replica; the cache is never filled with a copy older than a write.

use neo_cache::{CacheConfig, HybridCache};
use neo_core::Slug;
use neo_db::{Db, DbConfig, ReadSession, ReplicaConfig};
use neo_events::{Outbox, OutboxConfig};
use neo_orgs::{NewOrganization, OrgConfig, OrgError, Organization, OrganizationService};
use neo_testkit::PgReplicaPair;
use std::time::{Duration, Instant};

async fn blocking<T: Send + 'static>(
    pair: PgReplicaPair,
    f: impl FnOnce(&PgReplicaPair) -> T + Send + 'static,
) -> (PgReplicaPair, T) {
    tokio::task::spawn_blocking(move || {
        let out = f(&pair);
        (pair, out)
    })
    .await
    .unwrap()
}

async fn service(db: &Db, cache: Option<HybridCache<Organization>>) -> OrganizationService {
    let outbox = Outbox::new(db, OutboxConfig::default()).unwrap();
    let orgs = OrganizationService::new(db, outbox, cache, OrgConfig::default()).unwrap();
    orgs.migrate().await.unwrap();
    orgs
}

fn new_org(name: &str) -> NewOrganization {
    NewOrganization::new(name, Slug::slugify(name).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_reads_its_own_writes_while_replay_is_paused_and_others_read_the_replica() {
    let pair = tokio::task::spawn_blocking(PgReplicaPair::start)
        .await
        .unwrap()
        .unwrap();
    let db = Db::connect(&DbConfig {
        replica: ReplicaConfig {
            urls: vec![pair.replica().url().into()],
            max_lag: Duration::from_secs(60),
            ..ReplicaConfig::default()
        },
        ..DbConfig::with_url(pair.primary().url())
    })
    .await
    .unwrap();
    let orgs = service(&db, None).await;
    let cached = service(
        &db,
        Some(HybridCache::<Organization>::memory(CacheConfig::named("orgs")).unwrap()),
    )
    .await;
    let before = orgs.create("setup", new_org("Before Pause")).await.unwrap();
    let (pair, caught_up) = blocking(pair, |p| p.wait_caught_up(Duration::from_secs(10))).await;
    caught_up.unwrap();
    // Wait until reads without a session are served by the replica.
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.replica_status().iter().all(|r| !r.serving) {
        assert!(Instant::now() < deadline, "{:?}", db.replica_status());
        let _ = orgs.get(before.id()).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (pair, paused) = blocking(pair, PgReplicaPair::pause_replay).await;
    paused.unwrap();

    let alice = ReadSession::new();
    let bob = ReadSession::new();
    let created = alice
        .scope(async {
            let created = orgs
                .create("alice", new_org("Written While Paused"))
                .await?;
            // Alice reads her organization by id, by slug, in a page and in get_many.
            let got = orgs.get(created.id()).await.expect("get");
            assert_eq!(got.name(), "Written While Paused");
            orgs.get_by_slug(created.slug()).await.expect("by slug");
            let many = orgs
                .get_many(&[created.id(), before.id()])
                .await
                .expect("many");
            assert!(many.iter().all(Option::is_some));
            let page = orgs.search(Some("Paused"), 10, None, true).await?;
            assert_eq!(page.items.len(), 1);
            let renamed = {
                let mut org = got;
                org.rename("Renamed While Paused", None)?;
                orgs.save("alice", org).await.expect("save")
            };
            assert_eq!(
                orgs.get(created.id()).await.expect("get after save").name(),
                "Renamed While Paused"
            );
            // Through the cached service too: the fill reads past the writes.
            assert_eq!(
                cached.get(renamed.id()).await.expect("cached").name(),
                "Renamed While Paused"
            );
            Ok::<_, OrgError>(created)
        })
        .await
        .unwrap();
    assert!(alice.last_write().is_some());
    bob.scope(async {
        // Bob reads the replica, which has not replayed Alice's writes.
        assert!(matches!(
            orgs.get(created.id()).await,
            Err(OrgError::NotFound { .. })
        ));
        let page = orgs.search(Some("Paused"), 10, None, true).await.unwrap();
        assert!(page.items.is_empty());
        // The organization from before the pause is there.
        assert_eq!(orgs.get(before.id()).await.unwrap().name(), "Before Pause");
        // The cache was filled past Alice's writes, so Bob sees them there.
        assert_eq!(
            cached.get(created.id()).await.unwrap().name(),
            "Renamed While Paused"
        );
    })
    .await;
    assert!(db.replica_skipped_reads() > 0);

    let (pair, resumed) = blocking(pair, |p| {
        p.resume_replay()?;
        p.wait_caught_up(Duration::from_secs(10))
    })
    .await;
    resumed.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    bob.scope(async {
        while orgs.get(created.id()).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the replica never showed the write"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    db.close().await;
    drop(pair);
}
