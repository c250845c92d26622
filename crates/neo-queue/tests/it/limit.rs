//! The global concurrency limit in every mode: never more than `max_running` jobs claimed at
//! once across workers, enforced in the claim; a worker that dies holding slots frees them
//! when its leases expire; a limit of 0 is refused with the field named.

use crate::worker::spawn_until_stopped;
use crate::{Mode, setup_in};
use neo_queue::{Error, NewJob, OnDuplicate, Queue, QueueConfig, Worker, WorkerConfig};
use neo_testkit::PgRoute;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

fn limited(max: u32) -> impl FnOnce(QueueConfig) -> QueueConfig {
    move |c| QueueConfig {
        max_running: Some(max),
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

async fn claims_never_exceed_the_global_limit(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, limited(3)).await;
    enqueue(&queue, &db, "l", 10).await;
    let first = queue.claim("a", 10, None).await.unwrap();
    assert_eq!(first.len(), 3, "the limit, not the batch");
    assert!(
        queue.claim("b", 10, None).await.unwrap().is_empty(),
        "no room"
    );
    queue.ack(first[0].receipt()).await.unwrap();
    assert_eq!(
        queue.claim("b", 10, None).await.unwrap().len(),
        1,
        "one slot freed"
    );

    let refused = Queue::new(&db, limited(0)(QueueConfig::default())).unwrap_err();
    assert!(
        matches!(
            refused,
            Error::Invalid {
                what: "max_running",
                ..
            }
        ),
        "{refused}"
    );
}

async fn workers_together_run_at_most_the_limit(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, limited(3)).await;
    enqueue(&queue, &db, "l", 24).await;
    let (now, peak, ran) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (now, peak, ran) = (Arc::clone(&now), Arc::clone(&peak), Arc::clone(&ran));
        let worker = Worker::new(
            queue.clone(),
            WorkerConfig {
                concurrency: 4,
                poll_interval: Duration::from_millis(50),
                ..WorkerConfig::default()
            },
        )
        .handle("l", move |_job| {
            let (now, peak, ran) = (Arc::clone(&now), Arc::clone(&peak), Arc::clone(&ran));
            async move {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        });
        workers.push(spawn_until_stopped(worker));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while ran.load(Ordering::SeqCst) < 24 {
        assert!(
            Instant::now() < deadline,
            "only {} ran",
            ran.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut succeeded = 0;
    for (stop, run) in workers {
        stop.send(()).unwrap();
        succeeded += run.await.unwrap().unwrap().succeeded;
    }
    assert_eq!(succeeded, 24);
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        (1..=3).contains(&peak),
        "peak {peak} running past the limit of 3"
    );
}

/// Fault: a worker dies holding every slot. No other worker runs a job until the dead
/// worker's leases expire; then the slots are free and the jobs run.
async fn slots_of_a_dead_worker_free_when_its_leases_expire(mode: Mode, route: PgRoute) {
    let lease = Duration::from_millis(1500);
    let (_t, db, queue) = setup_in(mode, route, |c| QueueConfig {
        lease,
        ..limited(2)(c)
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
    let a_run = tokio::spawn(a.run(std::future::pending()));
    tokio::time::timeout(Duration::from_secs(5), both.notified())
        .await
        .unwrap();
    a_run.abort();
    let died = Instant::now();
    let _ = a_run.await;
    enqueue(&queue, &db, "l", 2).await;

    let first_run = Arc::new(std::sync::Mutex::new(None::<Instant>));
    // Counted apart: under load a rescued job may lose its lease again and run twice (at least
    // once), which must not stand in for a new job's run.
    let (new_ran, rescued_ran) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (at, count) = (Arc::clone(&first_run), Arc::clone(&new_ran));
    let b = Worker::new(
        queue.clone(),
        WorkerConfig {
            poll_interval: Duration::from_millis(50),
            ..WorkerConfig::default()
        },
    )
    .handle("l", move |_job| {
        at.lock().unwrap().get_or_insert_with(Instant::now);
        count.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    })
    .handle("hang", {
        let count = Arc::clone(&rescued_ran);
        move |_job| {
            count.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        }
    });
    let (stop, b_run) = spawn_until_stopped(b);
    let deadline = Instant::now() + Duration::from_secs(20);
    // Both new jobs and both rescued ones ran, and all four are done.
    loop {
        let depth = queue.depth().await.unwrap();
        let done = depth.available == 0 && depth.running == 0 && depth.dead == 0;
        if done && new_ran.load(Ordering::SeqCst) >= 2 && rescued_ran.load(Ordering::SeqCst) >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed slots were not used: {depth:?}, new jobs ran {}, rescued ones {}",
            new_ran.load(Ordering::SeqCst),
            rescued_ran.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = first_run.lock().unwrap().expect("a new job ran");
    // The dead worker's claim, moments before it died, held both slots for a lease.
    assert!(
        first - died >= lease / 2,
        "a job ran {:?} after the death, while the dead worker's slots were held",
        first - died
    );
    stop.send(()).unwrap();
    let report = b_run.await.unwrap().unwrap();
    assert_eq!(report.succeeded, 4, "one accepted ack per job: {report:?}");
}

over_modes!(
    claims_never_exceed_the_global_limit,
    workers_together_run_at_most_the_limit,
    slots_of_a_dead_worker_free_when_its_leases_expire,
);

// The cost of a limit that never binds (claims per second with and without it) is measured by
// the compare bench rows `queue/claims_max_running_vs_unlimited` and
// `queue/claims_rate_limited_vs_unlimited` (benches/src/queue.rs).
