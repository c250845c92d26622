//! The rate limit in every mode: never more than `allowed` jobs of a partition started in any
//! window of `period`, enforced in the claim, across racing workers; a partition at its limit
//! does not hold back the others; a worker killed mid-window holds no budget past the window;
//! bad limits are refused with the field named.

use crate::worker::spawn_until_stopped;
use crate::{Mode, setup_in};
use neo_queue::{
    Error, Job, NewJob, OnDuplicate, Queue, QueueConfig, RateLimit, RatePartition, Worker,
    WorkerConfig,
};
use neo_testkit::PgRoute;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

fn rated(
    allowed: u32,
    period: Duration,
    partition: RatePartition,
    fair: bool,
) -> impl FnOnce(QueueConfig) -> QueueConfig {
    move |c| QueueConfig {
        rate_limit: Some(RateLimit::new(allowed, period).partition(partition)),
        fair_claims: fair,
        ..c
    }
}

async fn enqueue(queue: &Queue, db: &neo_db::Db, kind: &str, n: usize) {
    let jobs: Vec<NewJob> = (0..n).map(|i| NewJob::new(kind, &i).unwrap()).collect();
    queue
        .enqueue_many(db, jobs, OnDuplicate::Error)
        .await
        .unwrap();
}

fn per_kind(jobs: &[Job]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for job in jobs {
        *counts.entry(job.kind.clone()).or_insert(0) += 1;
    }
    counts
}

/// Claims (fair and plain) take at most what each kind has left in the window, skip a
/// noisy kind at its limit for a quiet one behind it, and take the rest in a later window.
async fn claims_take_at_most_each_partitions_budget(mode: Mode, route: PgRoute) {
    let period = Duration::from_millis(1_500);
    for fair in [true, false] {
        let (_t, db, queue) =
            setup_in(mode, route, rated(5, period, RatePartition::Kind, fair)).await;
        // The noisy kind's 300 jobs are older: every claim's first candidates.
        enqueue(&queue, &db, "noisy", 300).await;
        enqueue(&queue, &db, "quiet", 3).await;
        let started = Instant::now();
        let mut claimed = Vec::new();
        for _ in 0..3 {
            claimed.extend(queue.claim("w", 10, None).await.unwrap());
        }
        assert!(started.elapsed() < period, "the claims took a window");
        let counts = per_kind(&claimed);
        assert_eq!(counts.get("noisy"), Some(&5), "fair {fair}: {counts:?}");
        assert_eq!(counts.get("quiet"), Some(&3), "fair {fair}: {counts:?}");
        // Quiet has 2 left in the window, noisy none.
        enqueue(&queue, &db, "quiet", 5).await;
        let more = per_kind(&queue.claim("w", 10, None).await.unwrap());
        assert_eq!(
            more,
            HashMap::from([("quiet".to_owned(), 2)]),
            "fair {fair}"
        );
        assert!(queue.claim("w", 10, None).await.unwrap().is_empty());

        for (limit, field) in [
            (RateLimit::new(0, period), "rate_limit.allowed"),
            (RateLimit::new(5, Duration::ZERO), "rate_limit.period"),
            (
                RateLimit::new(5, Duration::from_micros(500)),
                "rate_limit.period",
            ),
        ] {
            let refused = Queue::new(
                &db,
                QueueConfig {
                    rate_limit: Some(limit),
                    ..QueueConfig::default()
                },
            )
            .unwrap_err();
            assert!(
                matches!(refused, Error::Invalid { what, .. } if what == field),
                "{refused}"
            );
        }

        // A window later, each kind has its budget again, and no more.
        tokio::time::sleep(period + period / 8).await;
        // (The first claim's candidates may all be the noisy kind's, which fills its budget:
        // the next one leaves it out.)
        let mut again = Vec::new();
        for _ in 0..3 {
            again.extend(queue.claim("w", 20, None).await.unwrap());
        }
        let later = per_kind(&again);
        assert_eq!(
            later,
            HashMap::from([("noisy".to_owned(), 5), ("quiet".to_owned(), 3)]),
            "fair {fair}"
        );
    }

    if mode == Mode::Rls {
        // Only the system role sees the counts: the application role sees none.
        let (s, db, queue) =
            setup_in(mode, route, rated(5, period, RatePartition::Kind, true)).await;
        enqueue(&queue, &db, "k", 2).await;
        assert_eq!(queue.claim("w", 10, None).await.unwrap().len(), 2);
        let mut tx = db.begin().await.unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM neo_queue.rate_limit_starts")
            .persistent(false)
            .fetch_one(&mut **tx)
            .await
            .unwrap();
        assert_eq!(seen, 0, "the application role sees no count");
        drop(tx);
        let mut conn = queue.system_db().statement_connection().await.unwrap();
        let counted: i64 =
            sqlx::query_scalar("SELECT sum(started)::int8 FROM neo_queue.rate_limit_starts")
                .persistent(false)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        conn.finish().await.unwrap();
        assert_eq!(counted, 2, "the system role counted both starts");
        drop(s);
    }
}

/// Three workers of four slots race for two kinds' jobs: no window of `period` ever sees more
/// than `allowed` starts of a kind (counted from the handlers' start times, less the jitter of
/// a claim's commit and dispatch), and every job runs.
async fn racing_workers_never_start_more_than_allowed_per_window(mode: Mode, route: PgRoute) {
    let (allowed, period) = (4usize, Duration::from_millis(600));
    let (_t, db, queue) = setup_in(mode, route, rated(4, period, RatePartition::Kind, true)).await;
    enqueue(&queue, &db, "a", 12).await;
    enqueue(&queue, &db, "b", 12).await;
    let starts: Arc<Mutex<Vec<(String, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let mut worker = Worker::new(
            queue.clone(),
            WorkerConfig {
                concurrency: 4,
                poll_interval: Duration::from_millis(20),
                ..WorkerConfig::default()
            },
        );
        for kind in ["a", "b"] {
            let starts = Arc::clone(&starts);
            worker = worker.handle(kind, move |job| {
                starts
                    .lock()
                    .unwrap()
                    .push((job.kind.clone(), Instant::now()));
                async { Ok(()) }
            });
        }
        workers.push(spawn_until_stopped(worker));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while starts.lock().unwrap().len() < 24 {
        assert!(
            Instant::now() < deadline,
            "only {} ran",
            starts.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut succeeded = 0;
    for (stop, run) in workers {
        stop.send(()).unwrap();
        succeeded += run.await.unwrap().unwrap().succeeded;
    }
    assert_eq!(succeeded, 24, "every job ran once");
    let starts = starts.lock().unwrap().clone();
    let jitter = Duration::from_millis(120);
    for kind in ["a", "b"] {
        let mut at: Vec<Instant> = starts
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, t)| *t)
            .collect();
        at.sort();
        assert_eq!(at.len(), 12);
        for (i, first) in at.iter().enumerate() {
            let within = at[i..]
                .iter()
                .take_while(|t| **t - *first < period - jitter)
                .count();
            assert!(
                within <= allowed,
                "{within} starts of {kind} within {:?} of one another",
                period - jitter
            );
        }
        // Twelve jobs at four a window: at least two windows from the first start to the last.
        assert!(
            at[11] - at[0] >= 2 * period - jitter,
            "{kind}'s jobs all started within {:?}",
            at[11] - at[0]
        );
    }
}

/// Fault: a worker is killed (dropped without shutdown) right after it started the window's
/// budget of jobs, whose leases last far longer than the window. Nothing else starts until
/// the window has passed; then other jobs start, long before the dead worker's leases expire.
async fn a_killed_worker_holds_no_budget_past_the_window(mode: Mode, route: PgRoute) {
    let period = Duration::from_millis(800);
    let (_t, db, queue) = setup_in(mode, route, |c| QueueConfig {
        lease: Duration::from_secs(60),
        ..rated(2, period, RatePartition::Queue, true)(c)
    })
    .await;
    enqueue(&queue, &db, "hang", 2).await;
    let taken = Arc::new(AtomicUsize::new(0));
    let both = Arc::new(Notify::new());
    let (count, signal) = (Arc::clone(&taken), Arc::clone(&both));
    let a = Worker::new(queue.clone(), WorkerConfig::default()).handle("hang", move |_job| {
        let (count, signal) = (Arc::clone(&count), Arc::clone(&signal));
        async move {
            if count.fetch_add(1, Ordering::SeqCst) + 1 == 2 {
                signal.notify_one();
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let before_claim = Instant::now();
    let a_run = tokio::spawn(a.run(std::future::pending()));
    tokio::time::timeout(Duration::from_secs(5), both.notified())
        .await
        .unwrap();
    a_run.abort();
    let _ = a_run.await;
    enqueue(&queue, &db, "l", 2).await;
    assert!(
        queue.claim("probe", 10, None).await.unwrap().is_empty(),
        "the window's budget is spent"
    );

    let starts = Arc::new(Mutex::new(Vec::new()));
    let at = Arc::clone(&starts);
    let b = Worker::new(
        queue.clone(),
        WorkerConfig {
            poll_interval: Duration::from_millis(20),
            ..WorkerConfig::default()
        },
    )
    .handle("l", move |_job| {
        at.lock().unwrap().push(Instant::now());
        async { Ok(()) }
    });
    let (stop, b_run) = spawn_until_stopped(b);
    let deadline = Instant::now() + Duration::from_secs(10);
    while starts.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the budget never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = starts.lock().unwrap()[0];
    assert!(
        first - before_claim >= period,
        "a job started {:?} after the dead worker's claim, within its window",
        first - before_claim
    );
    assert!(
        first - before_claim < Duration::from_secs(10),
        "the budget waited for the leases"
    );
    stop.send(()).unwrap();
    let report = b_run.await.unwrap().unwrap();
    assert_eq!(report.succeeded, 2, "{report:?}");

    // The claims deleted the dead worker's expired slot; once the window has passed, pruning
    // deletes the slots no claim came back for, and nothing more.
    tokio::time::sleep(period + period / 8).await;
    let pruned = queue.prune().await.unwrap();
    assert!(pruned.rate_windows >= 1, "{pruned:?}");
    assert_eq!(queue.prune().await.unwrap().rate_windows, 0);
}

over_modes!(
    claims_take_at_most_each_partitions_budget,
    racing_workers_never_start_more_than_allowed_per_window,
    a_killed_worker_holds_no_budget_past_the_window,
);

/// A rate limit per tenant: a tenant at its limit does not hold back another's jobs (fixed
/// schema: tenants share the table; the other modes' tenants are covered by the kinds above
/// and by their own tables).
#[tokio::test]
async fn a_tenant_at_its_limit_does_not_hold_back_another() {
    for fair in [true, false] {
        let (_t, db, queue) = crate::setup(
            PgRoute::Direct,
            rated(3, Duration::from_secs(60), RatePartition::Tenant, fair),
        )
        .await;
        let noisy: Vec<NewJob> = (0..200)
            .map(|i| NewJob::new("t", &i).unwrap().tenant("noisy"))
            .collect();
        queue
            .enqueue_many(&db, noisy, OnDuplicate::Error)
            .await
            .unwrap();
        let quiet: Vec<NewJob> = (0..2)
            .map(|i| NewJob::new("t", &i).unwrap().tenant("quiet"))
            .chain((0..2).map(|i| NewJob::new("t", &i).unwrap()))
            .collect();
        queue
            .enqueue_many(&db, quiet, OnDuplicate::Error)
            .await
            .unwrap();
        let mut counts = HashMap::new();
        for _ in 0..3 {
            for job in queue.claim("w", 10, None).await.unwrap() {
                *counts
                    .entry(job.tenant.unwrap_or_else(|| "-".to_owned()))
                    .or_insert(0) += 1;
            }
        }
        assert_eq!(
            counts,
            HashMap::from([
                ("noisy".to_owned(), 3),
                ("quiet".to_owned(), 2),
                ("-".to_owned(), 2)
            ]),
            "fair {fair}"
        );
    }
}

/// The limit is configuration: serde (as `NEO_QUEUE_RATE_LIMIT__*` reach it) with a
/// humantime period and a partition by name, the queue's partition by default.
#[test]
fn the_rate_limit_deserializes() {
    let config: QueueConfig = serde_json::from_value(serde_json::json!({
        "rate_limit": { "allowed": 100, "period": "1m", "partition": "tenant" }
    }))
    .unwrap();
    assert_eq!(
        config.rate_limit,
        Some(RateLimit::new(100, Duration::from_secs(60)).partition(RatePartition::Tenant))
    );
    let config: QueueConfig = serde_json::from_value(serde_json::json!({
        "rate_limit": { "allowed": 3, "period": "250ms" }
    }))
    .unwrap();
    assert_eq!(
        config.rate_limit.map(|r| r.partition),
        Some(RatePartition::Queue)
    );
    assert_eq!(QueueConfig::default().rate_limit, None);
    assert!(
        serde_json::from_value::<QueueConfig>(serde_json::json!({
            "rate_limit": { "allowed": 3, "period": "1s", "partition": "worker" }
        }))
        .is_err()
    );
}
