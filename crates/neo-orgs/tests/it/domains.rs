//! Domain verification by DNS against PostgreSQL, a real job queue and a real DNS server
//! (in-process hickory, on a loopback port): the claim's TXT value verifies the domain
//! through the queue job (retried until published), expired claims and slow, huge or
//! malformed answers are refused with typed errors and nothing changed, and verified domains
//! let matching users join when opted in.

use crate::dns_server::{Misbehaving, ZoneServer, misbehaving, resolver_at};
use crate::service::Setup;
use neo_core::{DomainName, EmailAddress, ErrorKind, HasErrorKind, Slug, UserId};
use neo_db::{Db, DbConfig};
use neo_orgs::{
    DnsConfig, DomainRefusal, DomainResolver, DomainVerification, DomainVerificationConfig,
    MembershipConfig, NewOrganization, OrgConfig, OrgError, Organization,
};
use neo_queue::{Queue, QueueConfig, Worker, WorkerConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pg_contract_modes!(
    a_published_token_verifies_the_domain_through_the_queue_job,
    expired_claims_are_refused_and_change_nothing,
    slow_huge_and_malformed_answers_are_refused_with_typed_errors_and_change_nothing,
    verified_domains_let_matching_users_join_when_opted_in,
);

fn domain(text: &str) -> DomainName {
    DomainName::parse(text).unwrap()
}

fn dns() -> DnsConfig {
    DnsConfig {
        timeout: Duration::from_millis(600),
        attempts: 1,
        max_records: 16,
        ..DnsConfig::default()
    }
}

/// A job queue of its own (superuser connection: the queue's tables are not the tenants').
pub(crate) async fn queue(s: &Setup) -> Queue {
    let db = Db::connect(&DbConfig::with_url(s.superuser_url()))
        .await
        .unwrap();
    let queue = Queue::new(
        &db,
        QueueConfig {
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_millis(300),
            ..QueueConfig::default()
        },
    )
    .unwrap();
    queue.migrate().await.unwrap();
    queue
}

async fn verification(
    s: &Setup,
    resolver: impl DomainResolver,
    config: DomainVerificationConfig,
) -> DomainVerification {
    let members = s.memberships(MembershipConfig::default(), OrgConfig::default());
    DomainVerification::new(members, queue(s).await, resolver, config).unwrap()
}

async fn org(s: &Setup, slug: &str) -> Organization {
    s.orgs
        .create(
            "seed",
            NewOrganization::new(slug, Slug::parse(slug).unwrap()),
        )
        .await
        .unwrap()
}

/// Whether the organization's domain is verified, and its version (read past the test
/// service's cache: the verifier saves through its own service).
async fn domain_state(s: &Setup, org: &Organization, name: &str) -> (bool, i64) {
    let stored = s.service(OrgConfig::default()).get(org.id()).await.unwrap();
    let held = stored
        .domains()
        .iter()
        .find(|d| d.domain.as_str() == name)
        .unwrap()
        .verified_at
        .is_some();
    (held, stored.version())
}

/// The default resolver, counting its answered lookups (so a test knows the job has looked,
/// and what it saw: counted once the answer is in, a record added after the count cannot
/// reach that lookup).
struct Counting {
    inner: neo_orgs::HickoryResolver,
    lookups: Arc<AtomicUsize>,
}

impl DomainResolver for Counting {
    fn txt_records<'a>(&'a self, domain: &'a DomainName) -> neo_orgs::TxtFuture<'a> {
        Box::pin(async move {
            let answer = self.inner.txt_records(domain).await;
            self.lookups.fetch_add(1, Ordering::SeqCst);
            answer
        })
    }
}

async fn a_published_token_verifies_the_domain_through_the_queue_job(s: Setup) {
    let server = ZoneServer::start().await;
    let lookups = Arc::new(AtomicUsize::new(0));
    let resolver = Counting {
        inner: server.resolver(dns()),
        lookups: Arc::clone(&lookups),
    };
    let verifier = verification(&s, resolver, DomainVerificationConfig::default()).await;
    let acme = org(&s, "acme").await;
    s.published().await;
    let issued = verifier
        .claim("alice", acme.id(), domain("acme.example"))
        .await
        .unwrap();
    assert!(issued.txt_record.starts_with("neo-verify="));
    assert!(issued.claim.verified_at.is_none() && !issued.claim.expired);
    // Not published yet: refused, nothing changed.
    let before = domain_state(&s, &acme, "acme.example").await;
    let refused = verifier
        .check(acme.id(), &domain("acme.example"))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, OrgError::Domain(DomainRefusal::TokenAbsent)),
        "{refused:?}"
    );
    assert_eq!(domain_state(&s, &acme, "acme.example").await, before);
    // The job runs (and fails, retried with backoff) before the record is published.
    let worker = verifier.register(Worker::new(
        queue(&s).await,
        WorkerConfig {
            poll_interval: Duration::from_millis(50),
            ..WorkerConfig::default()
        },
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    // The direct check above looked once; wait for the job's first (failing) look.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while lookups.load(Ordering::SeqCst) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the job never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        verifier
            .claim_of(acme.id(), &domain("acme.example"))
            .await
            .unwrap()
            .verified_at
            .is_none()
    );
    server.add_txt("acme.example", "v=spf1 -all").await;
    server.add_txt("acme.example", &issued.txt_record).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let claim = loop {
        let claim = verifier
            .claim_of(acme.id(), &domain("acme.example"))
            .await
            .unwrap();
        if claim.verified_at.is_some() {
            break claim;
        }
        assert!(tokio::time::Instant::now() < deadline, "never verified");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.send(()).unwrap();
    let report = running.await.unwrap().unwrap();
    assert!(report.succeeded >= 1 && report.failed >= 1, "{report:?}");
    assert!(claim.verified_at.is_some());
    assert!(domain_state(&s, &acme, "acme.example").await.0);
    let events: Vec<String> = s
        .published()
        .await
        .into_iter()
        .map(|e| e.event_type().to_owned())
        .collect();
    assert!(
        events.contains(&"organization.domain_added".to_owned()),
        "{events:?}"
    );
    assert!(
        events.contains(&"organization.domain_verified".to_owned()),
        "{events:?}"
    );
    let audit = s.orgs.audit_trail(acme.id()).await.unwrap();
    assert_eq!(audit.last().unwrap().actor, "neo_orgs:dns");
    // Checking a verified claim changes nothing; claiming it again is refused.
    let version = domain_state(&s, &acme, "acme.example").await.1;
    verifier
        .check(acme.id(), &domain("acme.example"))
        .await
        .unwrap();
    assert_eq!(domain_state(&s, &acme, "acme.example").await.1, version);
    let again = verifier
        .claim("alice", acme.id(), domain("acme.example"))
        .await
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyExists);
}

async fn expired_claims_are_refused_and_change_nothing(s: Setup) {
    let server = ZoneServer::start().await;
    let verifier = verification(
        &s,
        server.resolver(dns()),
        DomainVerificationConfig {
            claim_ttl: Duration::from_millis(200),
            ..DomainVerificationConfig::default()
        },
    )
    .await;
    let acme = org(&s, "late").await;
    let issued = verifier
        .claim("alice", acme.id(), domain("late.example"))
        .await
        .unwrap();
    server.add_txt("late.example", &issued.txt_record).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = domain_state(&s, &acme, "late.example").await;
    let refused = verifier
        .check(acme.id(), &domain("late.example"))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, OrgError::Domain(DomainRefusal::Expired)),
        "{refused:?}"
    );
    assert_eq!(domain_state(&s, &acme, "late.example").await, before);
    assert!(
        verifier
            .claim_of(acme.id(), &domain("late.example"))
            .await
            .unwrap()
            .expired
    );
    // Claimed again: a fresh expiry, the same token, and it verifies.
    let again = verifier
        .claim("alice", acme.id(), domain("late.example"))
        .await
        .unwrap();
    assert_eq!(again.txt_record, issued.txt_record);
    assert!(!again.claim.expired);
    let verified = verifier
        .check(acme.id(), &domain("late.example"))
        .await
        .unwrap();
    assert!(verified.verified_at.is_some());
}

async fn slow_huge_and_malformed_answers_are_refused_with_typed_errors_and_change_nothing(
    s: Setup,
) {
    let server = ZoneServer::start().await;
    let acme = org(&s, "bad-dns").await;
    let name = domain("huge.example");
    let issued = verification(
        &s,
        server.resolver(dns()),
        DomainVerificationConfig::default(),
    )
    .await
    .claim("alice", acme.id(), name.clone())
    .await
    .unwrap();
    // Huge: 40 records of 200 bytes (truncated over UDP, read whole over TCP), the token
    // among them.
    for i in 0..40 {
        server
            .add_txt("huge.example", &format!("{i:03}{}", "x".repeat(197)))
            .await;
    }
    server.add_txt("huge.example", &issued.txt_record).await;
    let before = domain_state(&s, &acme, "huge.example").await;
    let huge = verification(
        &s,
        server.resolver(dns()),
        DomainVerificationConfig::default(),
    )
    .await;
    let refused = huge.check(acme.id(), &name).await.unwrap_err();
    assert!(
        matches!(refused, OrgError::Domain(DomainRefusal::TooLarge(_))),
        "{refused:?}"
    );

    let silent = misbehaving(Misbehaving::Silent).await;
    let slow = verification(
        &s,
        resolver_at(silent, dns()),
        DomainVerificationConfig::default(),
    )
    .await;
    let started = std::time::Instant::now();
    let refused = slow.check(acme.id(), &name).await.unwrap_err();
    assert!(
        matches!(refused, OrgError::Domain(DomainRefusal::Timeout(_))),
        "{refused:?}"
    );
    assert_eq!(refused.kind(), ErrorKind::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the timeout"
    );

    let garbage = misbehaving(Misbehaving::Garbage).await;
    let malformed = verification(
        &s,
        resolver_at(garbage, dns()),
        DomainVerificationConfig::default(),
    )
    .await;
    let refused = malformed.check(acme.id(), &name).await.unwrap_err();
    assert!(
        matches!(
            refused,
            OrgError::Domain(DomainRefusal::Lookup(_) | DomainRefusal::Timeout(_))
        ),
        "{refused:?}"
    );
    assert_eq!(domain_state(&s, &acme, "huge.example").await, before);
    assert!(
        huge.claim_of(acme.id(), &name)
            .await
            .unwrap()
            .verified_at
            .is_none()
    );
}

async fn verified_domains_let_matching_users_join_when_opted_in(s: Setup) {
    let server = ZoneServer::start().await;
    let verifier = verification(
        &s,
        server.resolver(dns()),
        DomainVerificationConfig::default(),
    )
    .await;
    let members = s.memberships(MembershipConfig::default(), OrgConfig::default());
    let acme = org(&s, "joinable").await;
    let name = domain("join.example");
    let issued = verifier
        .claim("alice", acme.id(), name.clone())
        .await
        .unwrap();
    let bob = UserId::new();
    let email = EmailAddress::parse("bob@Join.Example").unwrap();
    let unverified = verifier
        .set_auto_join(acme.id(), &name, true)
        .await
        .unwrap_err();
    assert_eq!(unverified.kind(), ErrorKind::NotFound);
    server.add_txt("join.example", &issued.txt_record).await;
    verifier.check(acme.id(), &name).await.unwrap();
    assert!(
        verifier
            .join_by_email(bob, &email)
            .await
            .unwrap()
            .is_empty(),
        "not opted in"
    );
    assert!(
        verifier
            .set_auto_join(acme.id(), &name, true)
            .await
            .unwrap()
            .auto_join
    );
    assert_eq!(
        verifier.join_by_email(bob, &email).await.unwrap(),
        vec![acme.id()]
    );
    assert_eq!(
        members.role(acme.id(), bob).await.unwrap().as_deref(),
        Some("member")
    );
    assert!(
        verifier
            .join_by_email(bob, &email)
            .await
            .unwrap()
            .is_empty(),
        "already a member"
    );
    let other = EmailAddress::parse("eve@elsewhere.example").unwrap();
    assert!(
        verifier
            .join_by_email(UserId::new(), &other)
            .await
            .unwrap()
            .is_empty()
    );
    verifier
        .set_auto_join(acme.id(), &name, false)
        .await
        .unwrap();
    assert!(
        verifier
            .join_by_email(UserId::new(), &email)
            .await
            .unwrap()
            .is_empty()
    );
}
