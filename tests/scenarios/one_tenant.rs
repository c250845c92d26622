//! One typed tenant along the whole path of the example service (`examples/orgs-service`):
//! an organization's change writes its audit row and its events; the dispatcher fans the
//! events out to webhook endpoints; each delivery and its neo-queue job name the tenant of
//! the organization that caused them, which an endpoint registered for that tenant receives
//! alone.

use neo_commons::core::{Slug, TenantId};
use neo_commons::events::{AddressPolicy, Delivery, NewEndpoint};
use neo_commons::orgs::NewOrganization;
use orgs_service::{Roles, Service, ServiceConfig};
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The service on the shared test servers; nothing listens at the endpoints' URLs because
/// no delivery worker runs: the delivery jobs stay in the queue to be read.
async fn service() -> (neo_testkit::TestDatabase, neo_testkit::TestRedis, Service) {
    let pg = neo_testkit::postgres().await;
    let redis = neo_testkit::redis().await;
    let mut config = ServiceConfig::new(pg.url(), redis.url());
    redis.key_prefix().clone_into(&mut config.cache.key_prefix);
    config.webhooks.addresses = AddressPolicy {
        allow_loopback: true,
        allow_private: false,
    };
    config.webhooks.require_https = false;
    // Nor does fan-out make first attempts inline: every delivery's job waits, due now.
    config.webhooks.inline_attempts = 0;
    let service = Service::compose(config).await.unwrap();
    (pg, redis, service)
}

/// Runs the service's dispatcher alone until the outbox is empty and `deliveries` exist.
async fn dispatch(service: &Service, deliveries: i64) {
    let (stop, stopped) = watch::channel(false);
    let runner = service.clone();
    let running =
        tokio::spawn(async move { runner.run(Roles::background(true, false), stopped).await });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (undispatched, created): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM neo_events.outbox WHERE processed_at IS NULL), \
                    (SELECT count(*) FROM neo_events.webhook_deliveries)",
        )
        .fetch_one(service.db.pool())
        .await
        .unwrap();
        if undispatched == 0 && created == deliveries {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not dispatched: {undispatched} events left, {created} of {deliveries} deliveries"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send_replace(true);
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_delivery_its_job_and_the_audit_row_name_the_organization_that_caused_them() {
    let (_pg, _redis, service) = service().await;
    let acme = service
        .orgs
        .create(
            "alice",
            NewOrganization::new("Acme", Slug::parse("acme").unwrap()),
        )
        .await
        .unwrap();
    let globex = service
        .orgs
        .create(
            "alice",
            NewOrganization::new("Globex", Slug::parse("globex").unwrap()),
        )
        .await
        .unwrap();
    let mut renamed = acme.clone();
    renamed.rename("Acme Corporation", None).unwrap();
    service.orgs.save("bob", renamed).await.unwrap();
    let tenant_of: HashMap<TenantId, &str> =
        HashMap::from([(acme.tenant_id(), "acme"), (globex.tenant_id(), "globex")]);

    // Every organization's events, and Acme's alone for the endpoint registered for it.
    let every = service
        .webhooks
        .create_endpoint(NewEndpoint::new("http://127.0.0.1:9/every").subscribe("organization.*"))
        .await
        .unwrap();
    let acme_only = service
        .webhooks
        .create_endpoint(
            NewEndpoint::new("http://127.0.0.1:9/acme")
                .tenant(acme.tenant_id())
                .subscribe("*"),
        )
        .await
        .unwrap();
    assert_eq!(
        service
            .webhooks
            .endpoints(Some(acme.tenant_id()))
            .await
            .unwrap(),
        vec![acme_only.clone()]
    );
    // Acme's two events to both endpoints, Globex's one to the first.
    dispatch(&service, 5).await;

    // Which organization each event came from, as the outbox recorded its aggregate.
    let aggregate: HashMap<uuid::Uuid, String> =
        sqlx::query("SELECT id, aggregate_id FROM neo_events.outbox")
            .fetch_all(service.db.pool())
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
    let organization_of = |delivery: &Delivery| aggregate[&delivery.message_id].clone();

    // Each delivery names the tenant of the organization whose change caused it.
    let mut deliveries = service
        .webhooks
        .deliveries(every.id, None, 10)
        .await
        .unwrap();
    let to_acme = service
        .webhooks
        .deliveries(acme_only.id, None, 10)
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 3);
    assert_eq!(to_acme.len(), 2);
    assert!(
        to_acme
            .iter()
            .all(|d| d.tenant_id == Some(acme.tenant_id()))
    );
    deliveries.extend(to_acme);
    for delivery in &deliveries {
        let tenant = delivery.tenant_id.expect("a delivery names its tenant");
        assert_eq!(
            tenant.to_string(),
            organization_of(delivery),
            "{delivery:?}"
        );
    }

    // Each delivery's queue job names the same tenant.
    let jobs = service.queue.claim("scenario", 100, None).await.unwrap();
    assert_eq!(jobs.len(), 5, "one job per delivery");
    let mut jobs_per_organization: BTreeMap<&str, usize> = BTreeMap::new();
    for job in &jobs {
        let delivery = service
            .webhooks
            .delivery(job.payload["delivery"].as_i64().unwrap())
            .await
            .unwrap();
        let tenant = job
            .tenant_id()
            .unwrap()
            .expect("a delivery job names its tenant");
        assert_eq!(Some(tenant), delivery.tenant_id, "{job:?}");
        *jobs_per_organization.entry(tenant_of[&tenant]).or_default() += 1;
    }
    assert_eq!(
        jobs_per_organization,
        BTreeMap::from([("acme", 4), ("globex", 1)])
    );

    // The audit rows of the changes that caused them name the same organizations.
    let audited: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "SELECT organization_id, action FROM neo_orgs.organization_audit ORDER BY id",
    )
    .fetch_all(service.db.pool())
    .await
    .unwrap();
    let (acme_id, globex_id) = (acme.id().into_uuid(), globex.id().into_uuid());
    assert_eq!(
        audited,
        vec![
            (acme_id, "create".to_owned()),
            (globex_id, "create".to_owned()),
            (acme_id, "update".to_owned()),
        ]
    );
    let audited_tenants: BTreeSet<uuid::Uuid> = audited.iter().map(|(id, _)| *id).collect();
    let job_tenants: BTreeSet<uuid::Uuid> = jobs
        .iter()
        .map(|job| job.tenant_id().unwrap().unwrap().into_uuid())
        .collect();
    assert_eq!(job_tenants, audited_tenants);
    let acme_trail = service.orgs.audit_trail(acme.id()).await.unwrap();
    let actions: Vec<(&str, &str)> = acme_trail
        .iter()
        .map(|a| (a.actor.as_str(), a.action.as_str()))
        .collect();
    assert_eq!(actions, [("alice", "create"), ("bob", "update")]);
}
