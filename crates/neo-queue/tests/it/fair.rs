//! Noisy-neighbour fairness: claims take turns across tenants within a priority, and a cap on
//! one tenant's running jobs holds across workers.

use crate::setup;
use neo_queue::{Job, NewJob, OnDuplicate, QueueConfig, Worker, WorkerConfig};
use neo_testkit::PgRoute;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

fn job(tenant: Option<&str>, n: usize) -> NewJob {
    let job = NewJob::new("t", &json!({ "n": n })).unwrap();
    match tenant {
        Some(tenant) => job.tenant(tenant),
        None => job,
    }
}

/// Claimed jobs per tenant (`-` for none).
fn per_tenant(jobs: &[Job]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for job in jobs {
        *counts
            .entry(job.tenant.clone().unwrap_or_else(|| "-".to_owned()))
            .or_insert(0) += 1;
    }
    counts
}

/// Tenant A's 2,000 older jobs, then tenant B's 3 and 2 without a tenant.
async fn backlog(db: &neo_db::Db, queue: &neo_queue::Queue) {
    let a: Vec<NewJob> = (0..2_000).map(|n| job(Some("a"), n)).collect();
    queue.enqueue_many(db, a, OnDuplicate::Skip).await.unwrap();
    let rest = vec![
        job(Some("b"), 0),
        job(Some("b"), 1),
        job(Some("b"), 2),
        job(None, 0),
        job(None, 1),
    ];
    queue
        .enqueue_many(db, rest, OnDuplicate::Skip)
        .await
        .unwrap();
}

fn counts(pairs: &[(&str, usize)]) -> HashMap<String, usize> {
    pairs.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
}

async fn another_tenants_jobs_are_claimed_next_despite_a_big_backlog(route: PgRoute) {
    let (_t, db, queue) = setup(route, |c| c).await;
    assert!(queue.config().fair_claims, "fair by default");
    backlog(&db, &queue).await;

    // Every tenant's oldest first (the jobs without a tenant take turns as one more tenant),
    // then each tenant's second, the oldest of those first: A's.
    let first = queue.claim("w", 4, None).await.unwrap();
    assert_eq!(
        per_tenant(&first),
        counts(&[("a", 2), ("b", 1), ("-", 1)]),
        "{first:?}"
    );
    let second = queue.claim("w", 10, None).await.unwrap();
    assert_eq!(
        per_tenant(&second),
        counts(&[("a", 7), ("b", 2), ("-", 1)]),
        "{second:?}"
    );
    // Within a tenant, oldest first; nothing is handed out twice.
    let a: Vec<u64> = first
        .iter()
        .chain(&second)
        .filter(|j| j.tenant.as_deref() == Some("a"))
        .map(|j| j.payload["n"].as_u64().unwrap())
        .collect();
    assert_eq!(a, (0..9).collect::<Vec<_>>());
    assert!(first.iter().chain(&second).all(|j| j.fence == 1));
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.available, depth.running), (2_000 - 9, 14));
    // Once B is served, A's backlog takes whole claims.
    let third = queue.claim("w", 50, None).await.unwrap();
    assert_eq!(per_tenant(&third), counts(&[("a", 50)]));
}

async fn unfair_claims_serve_the_oldest_whatever_the_tenant(route: PgRoute) {
    let (_t, db, queue) = setup(route, |c| QueueConfig {
        fair_claims: false,
        ..c
    })
    .await;
    backlog(&db, &queue).await;
    let claimed = queue.claim("w", 100, None).await.unwrap();
    assert_eq!(
        per_tenant(&claimed),
        counts(&[("a", 100)]),
        "B waits behind A's backlog: what fair claims prevent"
    );
}

async fn priority_comes_before_turns_and_kinds_still_filter(route: PgRoute) {
    let (_t, db, queue) = setup(route, |c| c).await;
    let jobs = vec![
        job(Some("a"), 0),
        job(Some("a"), 1).priority(5),
        job(Some("a"), 2).priority(5),
        job(Some("b"), 3),
        job(Some("b"), 4).priority(5),
        NewJob::new("other", &5).unwrap().tenant("b").priority(9),
        job(None, 6).priority(5),
        job(Some("c"), 7).run_at(chrono::Utc::now() + chrono::Duration::hours(1)),
    ];
    queue
        .enqueue_many(&db, jobs, OnDuplicate::Skip)
        .await
        .unwrap();
    let kinds = vec!["t".to_owned()];
    let claimed = queue.claim("w", 10, Some(&kinds)).await.unwrap();
    let order: Vec<u64> = claimed
        .iter()
        .map(|j| j.payload["n"].as_u64().unwrap())
        .collect();
    // Priority 5 first: a's first, b's, the untenanted one (turn 1, by age), then a's second;
    // then priority 0: a's, b's. Not the other kind, not c's scheduled job.
    assert_eq!(order, vec![1, 4, 6, 2, 0, 3]);
    let rest = queue.claim("w", 10, None).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].kind, "other");
}

async fn the_cap_on_a_tenants_running_jobs_holds_for_claims_at_once(route: PgRoute) {
    let (_t, db, queue) = setup(route, |c| QueueConfig {
        max_running_per_tenant: Some(3),
        ..c
    })
    .await;
    let mut jobs: Vec<NewJob> = (0..60).map(|n| job(Some("a"), n)).collect();
    jobs.extend((0..60).map(|n| job(Some("b"), n)));
    jobs.extend((0..10).map(|n| job(None, n)));
    queue
        .enqueue_many(&db, jobs, OnDuplicate::Skip)
        .await
        .unwrap();

    // Sixteen claims at once, from eight "workers": at most three of a tenant in all.
    let claims = (0..16).map(|i| {
        let queue = queue.clone();
        tokio::spawn(async move { queue.claim(&format!("w{}", i % 8), 5, None).await })
    });
    let mut all = Vec::new();
    for claim in claims {
        all.extend(claim.await.unwrap().unwrap());
    }
    assert_eq!(
        per_tenant(&all),
        counts(&[("a", 3), ("b", 3), ("-", 10)]),
        "jobs without a tenant are not capped"
    );
    assert!(
        queue.claim("w", 10, None).await.unwrap().is_empty(),
        "A and B are at their cap"
    );
    // One of A's finishes: room for one more of A.
    let done = all
        .iter()
        .find(|j| j.tenant.as_deref() == Some("a"))
        .unwrap();
    queue.ack(done.receipt()).await.unwrap();
    let next = queue.claim("w", 10, None).await.unwrap();
    assert_eq!(per_tenant(&next), counts(&[("a", 1)]));
}

async fn the_cap_holds_across_two_workers_and_every_job_runs(route: PgRoute) {
    let (_t, db, queue) = setup(route, |c| QueueConfig {
        max_running_per_tenant: Some(2),
        ..c
    })
    .await;
    let mut jobs: Vec<NewJob> = (0..40).map(|n| job(Some("a"), n)).collect();
    jobs.extend((0..10).map(|n| job(Some("b"), n)));
    queue
        .enqueue_many(&db, jobs, OnDuplicate::Skip)
        .await
        .unwrap();

    // Per tenant: running now, most running at once.
    let running: Arc<Mutex<HashMap<String, (usize, usize)>>> = Arc::default();
    let finished = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(Notify::new());
    let mut runs = Vec::new();
    let mut stops = Vec::new();
    for name in ["one", "two"] {
        let (running, finished, all_done) = (
            Arc::clone(&running),
            Arc::clone(&finished),
            Arc::clone(&all_done),
        );
        let worker = Worker::new(
            queue.clone(),
            WorkerConfig {
                name: name.to_owned(),
                concurrency: 8,
                poll_interval: Duration::from_millis(20),
                ..WorkerConfig::default()
            },
        )
        .handle("t", move |job| {
            let (running, finished, all_done) = (
                Arc::clone(&running),
                Arc::clone(&finished),
                Arc::clone(&all_done),
            );
            async move {
                let tenant = job.tenant.clone().unwrap();
                {
                    let mut map = running.lock().unwrap();
                    let entry = map.entry(tenant.clone()).or_insert((0, 0));
                    entry.0 += 1;
                    entry.1 = entry.1.max(entry.0);
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
                running.lock().unwrap().get_mut(&tenant).unwrap().0 -= 1;
                if finished.fetch_add(1, Ordering::SeqCst) + 1 == 50 {
                    all_done.notify_one();
                }
                Ok(())
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        stops.push(stop);
        runs.push(tokio::spawn(worker.run(async {
            let _ = stopped.await;
        })));
    }
    tokio::time::timeout(Duration::from_secs(30), all_done.notified())
        .await
        .unwrap();
    for stop in stops {
        stop.send(()).unwrap();
    }
    let mut succeeded = 0;
    for run in runs {
        succeeded += run.await.unwrap().unwrap().succeeded;
    }
    assert_eq!(succeeded, 50, "every job once");
    let most = running.lock().unwrap().clone();
    // A handler counts itself running only while its claim is held, so this is a lower bound
    // of what the queue let run; the cap is what the queue enforces.
    assert_eq!(most["a"].1, 2, "{most:?}");
    assert!(most["b"].1 <= 2, "{most:?}");
}

/// A tenant of weight 3 gets three jobs per turn, the others one, in every kind of fair claim
/// (plain, by kinds, capped, capped by kinds); a weight of 0 is refused.
async fn weighted_tenants_get_their_weight_in_jobs_per_turn(route: PgRoute) {
    for (kinds, cap) in [
        (false, None),
        (true, None),
        (false, Some(10)),
        (true, Some(10)),
    ] {
        let (_t, db, queue) = setup(route, |c| QueueConfig {
            tenant_weights: [("a".to_owned(), 3), ("c".to_owned(), 1)].into(),
            max_running_per_tenant: cap,
            ..c
        })
        .await;
        for tenant in [Some("a"), Some("b"), Some("c"), None] {
            let jobs: Vec<NewJob> = (0..10).map(|n| job(tenant, n)).collect();
            queue
                .enqueue_many(&db, jobs, OnDuplicate::Skip)
                .await
                .unwrap();
        }
        let only = ["t".to_owned()];
        let kinds = kinds.then_some(&only[..]);
        let first = queue.claim("w", 6, kinds).await.unwrap();
        assert_eq!(
            per_tenant(&first),
            counts(&[("a", 3), ("b", 1), ("c", 1), ("-", 1)]),
            "kinds {kinds:?}, cap {cap:?}"
        );
        // The next turn the same: each tenant's next jobs, oldest first.
        let second = queue.claim("w", 6, kinds).await.unwrap();
        assert_eq!(
            per_tenant(&second),
            counts(&[("a", 3), ("b", 1), ("c", 1), ("-", 1)])
        );
        let a: Vec<u64> = first
            .iter()
            .chain(&second)
            .filter(|j| j.tenant.as_deref() == Some("a"))
            .map(|j| j.payload["n"].as_u64().unwrap())
            .collect();
        assert_eq!(a, vec![0, 1, 2, 3, 4, 5]);
    }
    let (_t, db, _queue) = setup(route, |c| c).await;
    let zero = neo_queue::Queue::new(
        &db,
        QueueConfig {
            tenant_weights: [("a".to_owned(), 0)].into(),
            ..QueueConfig::default()
        },
    )
    .unwrap_err();
    assert!(zero.to_string().contains("tenant weight"), "{zero}");
}

/// A worker whose every slot runs a slow job claims nothing more, however many jobs are
/// enqueued one by one (each a notification): express claims take only what the worker may
/// hold, and it may hold none ahead of slow jobs. Once the slot frees, every job runs.
async fn busy_slots_gather_no_jobs_from_notifications(route: PgRoute) {
    let (_t, db, queue) = setup(route, |c| c).await;
    let release = Arc::new(Notify::new());
    let ran = Arc::new(AtomicUsize::new(0));
    let (wait, count) = (Arc::clone(&release), Arc::clone(&ran));
    let worker = Worker::new(
        queue.clone(),
        WorkerConfig {
            concurrency: 1,
            express_claim: 4,
            poll_interval: Duration::from_millis(50),
            ..WorkerConfig::default()
        },
    )
    .handle("t", move |_job| {
        let (wait, count) = (Arc::clone(&wait), Arc::clone(&count));
        async move {
            if count.fetch_add(1, Ordering::SeqCst) == 0 {
                wait.notified().await;
            }
            Ok(())
        }
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    queue
        .enqueue(&db, job(Some("a"), 0), OnDuplicate::Skip)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ran.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first job never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Other tenants' jobs, one transaction (and one notification) each.
    for n in 1..=20 {
        let tenant = format!("t{n}");
        queue
            .enqueue(&db, job(Some(&tenant), n), OnDuplicate::Skip)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.running, depth.available), (1, 20), "{depth:?}");
    release.notify_one();
    while ran.load(Ordering::SeqCst) < 21 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} ran",
            ran.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    assert_eq!(run.await.unwrap().unwrap().succeeded, 21);
}

/// The payload of the next notification on the queue's channel, or `None` within 300 ms.
async fn next_notice(listener: &mut sqlx::postgres::PgListener) -> Option<String> {
    tokio::time::timeout(Duration::from_millis(300), listener.recv())
        .await
        .ok()
        .map(|n| n.unwrap().payload().to_owned())
}

/// An enqueue of one tenant's due jobs names the tenant in its notification (what a
/// worker's express claim takes); any other enqueue wakes the workers for any jobs.
async fn an_enqueue_of_one_tenant_names_it_when_it_wakes_the_workers(route: PgRoute) {
    let (_t, db, queue) = setup(route, |c| c).await;
    let mut listener = db.listener().await.unwrap().expect("a listener");
    listener.listen(&queue.config().channel).await.unwrap();
    let many = |tenant: Option<&str>, n: usize| (0..n).map(|i| job(tenant, i)).collect::<Vec<_>>();

    queue
        .enqueue_many(&db, many(Some("b"), 3), OnDuplicate::Skip)
        .await
        .unwrap();
    assert_eq!(
        next_notice(&mut listener).await.as_deref(),
        Some("tenant:b")
    );
    let mixed = vec![job(Some("a"), 0), job(Some("b"), 1)];
    queue
        .enqueue_many(&db, mixed, OnDuplicate::Skip)
        .await
        .unwrap();
    assert_eq!(next_notice(&mut listener).await.as_deref(), Some(""));
    queue
        .enqueue_many(&db, many(None, 2), OnDuplicate::Skip)
        .await
        .unwrap();
    assert_eq!(next_notice(&mut listener).await.as_deref(), Some(""));
    // A tenant too long to name in a payload wakes them for any jobs; its jobs are stored.
    let long = "t".repeat(300);
    queue
        .enqueue(&db, job(Some(&long), 0), OnDuplicate::Skip)
        .await
        .unwrap();
    assert_eq!(next_notice(&mut listener).await.as_deref(), Some(""));
    // A job due later wakes nobody.
    let later = job(Some("b"), 9).run_at(chrono::Utc::now() + chrono::Duration::hours(1));
    queue.enqueue(&db, later, OnDuplicate::Skip).await.unwrap();
    assert_eq!(next_notice(&mut listener).await, None);
    assert_eq!(queue.depth().await.unwrap().available, 3 + 2 + 2 + 1 + 1);
}

/// While one party has jobs (one tenant, or only jobs without a tenant) a fair queue claims
/// them as the plain claim does, highest priority then oldest. The claim that first sees
/// another party's jobs is still such a claim and reports them; from the next one on the
/// parties take turns, until a claim takes one party's jobs only.
async fn one_partys_jobs_are_taken_in_order_until_another_party_turns_up(route: PgRoute) {
    let (_t, db, queue) = setup(route, |c| c).await;
    let numbers = |jobs: &[Job]| {
        jobs.iter()
            .map(|j| (j.tenant.clone(), j.payload["n"].as_u64().unwrap()))
            .collect::<Vec<_>>()
    };
    let a = |n: usize| (Some("a".to_owned()), n as u64);
    let mut jobs: Vec<NewJob> = (0..12).map(|n| job(Some("a"), n)).collect();
    jobs.push(job(Some("a"), 12).priority(5));
    queue
        .enqueue_many(&db, jobs, OnDuplicate::Skip)
        .await
        .unwrap();
    let first = queue.claim("w", 3, None).await.unwrap();
    assert_eq!(numbers(&first), [a(12), a(0), a(1)]);

    let others = vec![job(None, 20), job(Some("b"), 21)];
    queue
        .enqueue_many(&db, others, OnDuplicate::Skip)
        .await
        .unwrap();
    let sees_them = queue.claim("w", 2, None).await.unwrap();
    assert_eq!(numbers(&sees_them), [a(2), a(3)]);
    let turns = queue.claim("w", 4, None).await.unwrap();
    assert_eq!(
        numbers(&turns),
        [a(4), (None, 20), (Some("b".to_owned()), 21), a(5)]
    );
    // Jobs without a tenant alone are one party too; a claim finds them at once when the
    // party it took alone has none left.
    let rest = queue.claim("w", 100, None).await.unwrap();
    assert_eq!(numbers(&rest), (6..12).map(a).collect::<Vec<_>>());
    let untenanted = (30..33).map(|n| job(None, n)).collect();
    queue
        .enqueue_many(&db, untenanted, OnDuplicate::Skip)
        .await
        .unwrap();
    let last = queue.claim("w", 2, None).await.unwrap();
    assert_eq!(numbers(&last), [(None, 30), (None, 31)]);
    // A job due later is no party's until it is due: the claims go on in order until a
    // tenant with a due job turns up.
    let later = job(Some("b"), 40).run_at(chrono::Utc::now() + chrono::Duration::hours(1));
    queue.enqueue(&db, later, OnDuplicate::Skip).await.unwrap();
    let untenanted = (41..44).map(|n| job(None, n)).collect();
    queue
        .enqueue_many(&db, untenanted, OnDuplicate::Skip)
        .await
        .unwrap();
    let plain = queue.claim("w", 1, None).await.unwrap();
    assert_eq!(numbers(&plain), [(None, 32)]);
    queue
        .enqueue(&db, job(Some("c"), 50), OnDuplicate::Skip)
        .await
        .unwrap();
    let still_plain = queue.claim("w", 2, None).await.unwrap();
    assert_eq!(numbers(&still_plain), [(None, 41), (None, 42)]);
    let turns_again = queue.claim("w", 2, None).await.unwrap();
    assert_eq!(
        numbers(&turns_again),
        [(None, 43), (Some("c".to_owned()), 50)]
    );
    assert!(
        first
            .iter()
            .chain(&sees_them)
            .chain(&turns)
            .chain(&rest)
            .chain(&last)
            .chain(&plain)
            .chain(&still_plain)
            .chain(&turns_again)
            .all(|j| j.fence == 1)
    );
}

/// A claim for some tenants takes only their due jobs, in turns, highest priority first,
/// however many older jobs other tenants have waiting; never jobs without a tenant.
async fn a_claim_for_tenants_takes_only_their_jobs_in_turns(route: PgRoute) {
    let (_t, db, queue) = setup(route, |c| c).await;
    backlog(&db, &queue).await;
    let later = job(Some("b"), 9).run_at(chrono::Utc::now() + chrono::Duration::hours(1));
    queue.enqueue(&db, later, OnDuplicate::Skip).await.unwrap();
    let tenants = |names: &[&str]| names.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>();
    let numbers = |jobs: &[Job]| {
        jobs.iter()
            .map(|j| (j.tenant.clone().unwrap(), j.payload["n"].as_u64().unwrap()))
            .collect::<Vec<_>>()
    };

    // One tenant (a statement of its own), then several.
    let b = queue
        .claim_for_tenants("w", 10, None, &tenants(&["b"]))
        .await
        .unwrap();
    assert_eq!(
        numbers(&b),
        [("b".into(), 0), ("b".into(), 1), ("b".into(), 2)]
    );
    assert!(b.iter().all(|j| j.fence == 1 && j.attempt == 1));
    let none = queue
        .claim_for_tenants("w", 10, None, &tenants(&["b", "c"]))
        .await
        .unwrap();
    assert!(none.is_empty(), "B's next job is not due: {none:?}");
    // Only known kinds, when asked.
    let none = queue
        .claim_for_tenants("w", 10, Some(&tenants(&["other"])), &tenants(&["a"]))
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    // Turns between the listed tenants, priority first.
    let more = vec![
        job(Some("b"), 10),
        job(Some("b"), 11),
        job(Some("a"), 12).priority(3),
    ];
    queue
        .enqueue_many(&db, more, OnDuplicate::Skip)
        .await
        .unwrap();
    let ab = queue
        .claim_for_tenants("w", 5, None, &tenants(&["a", "b"]))
        .await
        .unwrap();
    assert_eq!(
        numbers(&ab),
        [
            ("a".into(), 12),
            ("a".into(), 0),
            ("b".into(), 10),
            ("a".into(), 1),
            ("b".into(), 11),
        ]
    );
    let depth = queue.depth().await.unwrap();
    // A's 2,000 less 2 of them, the 2 without a tenant and B's job due later wait.
    assert_eq!((depth.available, depth.running), (1_998 + 2 + 1, 8));
    assert!(
        queue
            .claim_for_tenants("w", 5, None, &[])
            .await
            .unwrap()
            .is_empty()
    );
}

/// A queue that limits running jobs refuses a claim that would not keep the limit.
async fn a_claim_for_tenants_is_refused_where_it_would_pass_a_limit(route: PgRoute) {
    let (_t, db, queue) = setup(route, |c| QueueConfig {
        max_running_per_tenant: Some(1),
        ..c
    })
    .await;
    backlog(&db, &queue).await;
    let refused = queue
        .claim_for_tenants("w", 5, None, &["a".to_owned()])
        .await
        .unwrap_err();
    assert!(
        matches!(refused, neo_queue::Error::Invalid { .. }),
        "{refused}"
    );
    assert_eq!(queue.depth().await.unwrap().running, 0);
}

neo_testkit::over_routes!(
    one_partys_jobs_are_taken_in_order_until_another_party_turns_up,
    an_enqueue_of_one_tenant_names_it_when_it_wakes_the_workers,
    a_claim_for_tenants_takes_only_their_jobs_in_turns,
    a_claim_for_tenants_is_refused_where_it_would_pass_a_limit,
    busy_slots_gather_no_jobs_from_notifications,
    weighted_tenants_get_their_weight_in_jobs_per_turn,
    another_tenants_jobs_are_claimed_next_despite_a_big_backlog,
    unfair_claims_serve_the_oldest_whatever_the_tenant,
    priority_comes_before_turns_and_kinds_still_filter,
    the_cap_on_a_tenants_running_jobs_holds_for_claims_at_once,
    the_cap_holds_across_two_workers_and_every_job_runs,
);
