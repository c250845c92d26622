use crate::{Mode, setup, setup_in};
use neo_queue::{JobError, NewJob, OnDuplicate, QueueConfig, Worker, WorkerConfig};
use neo_testkit::PgRoute;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};

async fn the_worker_runs_every_job_once_and_dead_letters_what_it_cannot_run(
    mode: Mode,
    route: PgRoute,
) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let jobs: Vec<NewJob> = (0..300)
        .map(|n| NewJob::new("count", &json!({ "n": n })).unwrap())
        .collect();
    queue
        .enqueue_many(&db, jobs, OnDuplicate::Skip)
        .await
        .unwrap();
    queue
        .enqueue(
            &db,
            NewJob::new("no.such.kind", &1).unwrap(),
            OnDuplicate::Skip,
        )
        .await
        .unwrap();
    queue
        .enqueue(
            &db,
            NewJob::new("bad.payload", &"oops").unwrap(),
            OnDuplicate::Skip,
        )
        .await
        .unwrap();

    let seen = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(Notify::new());
    let (counter, done) = (Arc::clone(&seen), Arc::clone(&all_done));
    let worker = Worker::new(
        queue.clone(),
        WorkerConfig {
            concurrency: 8,
            ..WorkerConfig::default()
        },
    )
    .handle("count", move |_job| {
        let (counter, done) = (Arc::clone(&counter), Arc::clone(&done));
        async move {
            if counter.fetch_add(1, Ordering::SeqCst) + 1 == 300 {
                done.notify_one();
            }
            Ok(())
        }
    })
    .handle("bad.payload", |job| async move {
        let parsed: serde_json::Map<String, serde_json::Value> =
            serde_json::from_value(job.payload).map_err(JobError::permanent)?;
        let _ = parsed;
        Ok(())
    });
    let (stop, run) = spawn_until_stopped(worker);
    tokio::time::timeout(Duration::from_secs(20), all_done.notified())
        .await
        .unwrap();
    // Let the last acks land, then stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(()).unwrap();
    let report = run.await.unwrap().unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 300, "every job once");
    assert_eq!(report.succeeded, 300);
    assert_eq!(report.failed, 2);
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.available, depth.running, depth.dead), (0, 0, 2));
    let reasons: Vec<String> = queue
        .dead_letters(10)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|d| d.last_error)
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("no handler for job kind \"no.such.kind\"")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("invalid type")),
        "{reasons:?}"
    );
}

async fn a_notification_wakes_an_idle_worker_long_before_its_poll(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let started = Arc::new(Notify::new());
    let signal = Arc::clone(&started);
    let worker = Worker::new(
        queue.clone(),
        WorkerConfig {
            poll_interval: Duration::from_secs(30),
            ..WorkerConfig::default()
        },
    )
    .handle("ping", move |_job| {
        let signal = Arc::clone(&signal);
        async move {
            signal.notify_one();
            Ok(())
        }
    });
    let (stop, run) = spawn_until_stopped(worker);
    tokio::time::sleep(Duration::from_millis(300)).await; // idle, listening
    let enqueued = Instant::now();
    queue
        .enqueue(&db, NewJob::new("ping", &1).unwrap(), OnDuplicate::Skip)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), started.notified())
        .await
        .unwrap();
    let latency = enqueued.elapsed();
    assert!(latency < Duration::from_secs(1), "woken after {latency:?}");
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
}

/// Enqueue wakes workers only for jobs due now: a job scheduled for later sends no
/// notification, and an idle worker still runs it once due, found by its poll.
async fn a_job_scheduled_for_later_runs_when_due_without_a_wake_up(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let started = Arc::new(Notify::new());
    let signal = Arc::clone(&started);
    let worker = Worker::new(
        queue.clone(),
        WorkerConfig {
            poll_interval: Duration::from_millis(200),
            ..WorkerConfig::default()
        },
    )
    .handle("later", move |_job| {
        let signal = Arc::clone(&signal);
        async move {
            signal.notify_one();
            Ok(())
        }
    });
    let (stop, run) = spawn_until_stopped(worker);
    tokio::time::sleep(Duration::from_millis(300)).await; // idle, listening
    let due = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    queue
        .enqueue(
            &db,
            NewJob::new("later", &1).unwrap().run_at(due),
            OnDuplicate::Skip,
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("the job scheduled for later never ran");
    let ran_at = chrono::Utc::now();
    assert!(ran_at >= due, "started {} before it was due", due - ran_at);
    stop.send(()).unwrap();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.succeeded, 1, "{report:?}");
}

async fn a_worker_lost_mid_job_loses_its_lease_and_the_job_runs_again_elsewhere(
    mode: Mode,
    route: PgRoute,
) {
    let (_t, db, queue) = setup_in(mode, route, |c| QueueConfig {
        lease: Duration::from_millis(500),
        ..c
    })
    .await;
    queue
        .enqueue(&db, NewJob::new("slow", &1).unwrap(), OnDuplicate::Skip)
        .await
        .unwrap();

    // Worker A takes the job and hangs; then it disappears (its task is dropped).
    let taken = Arc::new(Notify::new());
    let signal = Arc::clone(&taken);
    let a = Worker::new(queue.clone(), WorkerConfig::default()).handle("slow", move |_job| {
        let signal = Arc::clone(&signal);
        async move {
            signal.notify_one();
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let a_run = tokio::spawn(a.run(std::future::pending()));
    tokio::time::timeout(Duration::from_secs(5), taken.notified())
        .await
        .unwrap();
    a_run.abort();
    let _ = a_run.await;

    // Worker B rescues it after the lease and runs it.
    let done = Arc::new(Notify::new());
    let signal = Arc::clone(&done);
    let b = Worker::new(
        queue.clone(),
        WorkerConfig {
            poll_interval: Duration::from_millis(100),
            ..WorkerConfig::default()
        },
    )
    .handle("slow", move |job| {
        let signal = Arc::clone(&signal);
        async move {
            assert_eq!(job.attempt, 2);
            signal.notify_one();
            Ok(())
        }
    });
    let (stop, b_run) = spawn_until_stopped(b);
    tokio::time::timeout(Duration::from_secs(10), done.notified())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    let report = b_run.await.unwrap().unwrap();
    assert_eq!(report.succeeded, 1);
    assert_eq!(queue.depth().await.unwrap().running, 0);
}

async fn shutdown_hands_back_jobs_that_did_not_finish_in_the_grace_period(
    mode: Mode,
    route: PgRoute,
) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    queue
        .enqueue(&db, NewJob::new("stuck", &1).unwrap(), OnDuplicate::Skip)
        .await
        .unwrap();
    let taken = Arc::new(Notify::new());
    let signal = Arc::clone(&taken);
    let worker = Worker::new(
        queue.clone(),
        WorkerConfig {
            shutdown_grace: Duration::from_millis(200),
            ..WorkerConfig::default()
        },
    )
    .handle("stuck", move |_job| {
        let signal = Arc::clone(&signal);
        async move {
            signal.notify_one();
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let (stop, run) = spawn_until_stopped(worker);
    tokio::time::timeout(Duration::from_secs(5), taken.notified())
        .await
        .unwrap();
    stop.send(()).unwrap();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.released, 1);
    let back = queue.claim("w", 1, None).await.unwrap();
    assert_eq!(back[0].attempt, 1, "a released job keeps its attempt");
}

#[tokio::test]
async fn workers_resume_after_a_postgres_restart_and_nothing_acknowledged_is_lost() {
    use neo_db::{Db, DbConfig};
    use neo_queue::Queue;
    use std::collections::HashMap;
    use std::sync::Mutex;

    let mut server = tokio::task::spawn_blocking(neo_testkit::PgServer::start)
        .await
        .unwrap()
        .unwrap();
    let db = Db::connect(&DbConfig {
        acquire_timeout: Duration::from_secs(10),
        ..DbConfig::with_url(server.url())
    })
    .await
    .unwrap();
    let queue = Queue::new(
        &db,
        QueueConfig {
            lease: Duration::from_secs(3),
            ..QueueConfig::default()
        },
    )
    .unwrap();
    queue.migrate().await.unwrap();
    let first: Vec<NewJob> = (0..200).map(|n| NewJob::new("work", &n).unwrap()).collect();
    let mut ids: Vec<_> = first.iter().map(NewJob::id).collect();
    queue
        .enqueue_many(&db, first, OnDuplicate::Skip)
        .await
        .unwrap();

    let runs: Arc<Mutex<HashMap<neo_core::JobId, usize>>> = Arc::default();
    let seen = Arc::clone(&runs);
    let worker = Worker::new(
        queue.clone(),
        WorkerConfig {
            concurrency: 4,
            poll_interval: Duration::from_millis(200),
            ..WorkerConfig::default()
        },
    )
    .handle("work", move |job| {
        let seen = Arc::clone(&seen);
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            *seen.lock().unwrap().entry(job.id).or_default() += 1;
            Ok(())
        }
    });
    let (stop, run) = spawn_until_stopped(worker);
    // Restart the server while jobs are being worked.
    tokio::time::sleep(Duration::from_millis(150)).await;
    server = tokio::task::spawn_blocking(move || {
        server.restart().unwrap();
        server
    })
    .await
    .unwrap();
    // Jobs enqueued after the restart are picked up too.
    let second: Vec<NewJob> = (200..250)
        .map(|n| NewJob::new("work", &n).unwrap())
        .collect();
    ids.extend(second.iter().map(NewJob::id));
    queue
        .enqueue_many(&db, second, OnDuplicate::Skip)
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let depth = queue.depth().await.unwrap();
        if depth.available == 0 && depth.running == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "jobs left: {depth:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(()).unwrap();
    let report = run.await.unwrap().unwrap();
    let all_ran = {
        let runs = runs.lock().unwrap();
        ids.iter().all(|id| runs.contains_key(id))
    };
    assert!(all_ran, "every job ran");
    assert_eq!(
        report.succeeded, 250,
        "every job acknowledged exactly once: {report:?}"
    );
    assert_eq!(queue.depth().await.unwrap().dead, 0);
    drop(server);
}

async fn a_busy_worker_still_stops_when_asked(route: PgRoute) {
    let (_t, db, queue) = setup(route, |c| c).await;
    let jobs: Vec<NewJob> = (0..3000)
        .map(|n| NewJob::new("busy", &n).unwrap())
        .collect();
    queue
        .enqueue_many(&db, jobs, OnDuplicate::Skip)
        .await
        .unwrap();
    let worker = Worker::new(
        queue.clone(),
        WorkerConfig {
            concurrency: 4,
            claim_batch: 4,
            ..WorkerConfig::default()
        },
    )
    .handle("busy", |_job| async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(())
    });
    let (stop, run) = spawn_until_stopped(worker);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = Instant::now();
    stop.send(()).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the worker stopped")
        .unwrap()
        .unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert!(
        report.succeeded > 0 && report.succeeded < 3000,
        "{report:?}"
    );
    let depth = queue.depth().await.unwrap();
    assert_eq!(depth.running, 0, "nothing left claimed: {depth:?}");
    assert_eq!(depth.available as u64 + report.succeeded, 3000);
}

/// Runs `worker` on its own task until the returned sender fires or is dropped.
pub(crate) fn spawn_until_stopped(
    worker: Worker,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<neo_queue::Result<neo_queue::WorkerReport>>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    (stop, run)
}

/// `worker` with a handler for no-op "warm" jobs that counts them, and that count (for
/// [`warm_up`]).
fn with_warm_handler(worker: Worker) -> (Worker, Arc<AtomicUsize>) {
    let warmed = Arc::new(AtomicUsize::new(0));
    let warm = Arc::clone(&warmed);
    let worker = worker.handle("warm", move |_job| {
        warm.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    });
    (worker, warmed)
}

/// Runs `n` no-op "warm" jobs through a worker that counts them in `warmed`, so that it has
/// timed its jobs and claims and holds jobs ahead of its slots (it buffers only jobs it
/// expects to start soon); returns when all have run.
async fn warm_up(db: &neo_db::Db, queue: &neo_queue::Queue, warmed: &AtomicUsize, n: usize) {
    let jobs: Vec<NewJob> = (0..n).map(|i| NewJob::new("warm", &i).unwrap()).collect();
    queue
        .enqueue_many(db, jobs, OnDuplicate::Skip)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while warmed.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "warm-up jobs did not run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Their acks land, and the worker is idle again.
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn prefetched_jobs_go_back_at_shutdown_and_can_be_claimed_again(route: PgRoute) {
    let (_t, db, queue) = setup(route, |c| c).await;
    let taken = Arc::new(Notify::new());
    let signal = Arc::clone(&taken);
    let worker = Worker::new(
        queue.clone(),
        WorkerConfig {
            concurrency: 1,
            prefetch: 10,
            shutdown_grace: Duration::from_millis(200),
            ..WorkerConfig::default()
        },
    )
    .handle("stuck", move |_job| {
        let signal = Arc::clone(&signal);
        async move {
            signal.notify_one();
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let (worker, warmed) = with_warm_handler(worker);
    let (stop, run) = spawn_until_stopped(worker);
    warm_up(&db, &queue, &warmed, 30).await;
    let jobs: Vec<NewJob> = (0..11).map(|n| NewJob::new("stuck", &n).unwrap()).collect();
    queue
        .enqueue_many(&db, jobs, OnDuplicate::Skip)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), taken.notified())
        .await
        .unwrap();
    // One job runs, the other ten wait in the worker's buffer, claimed.
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.available, depth.running), (0, 11), "{depth:?}");
    stop.send(()).unwrap();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.released, 11, "{report:?}");
    assert_eq!(report.succeeded, 30, "{report:?}");
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.available, depth.running), (11, 0), "{depth:?}");
    let back = queue.claim("other", 20, None).await.unwrap();
    assert_eq!(back.len(), 11);
    assert!(
        back.iter().all(|job| job.attempt == 1),
        "a job handed back keeps its attempt"
    );
}

async fn buffered_jobs_keep_their_leases_while_they_wait(route: PgRoute) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    // Nine jobs of 150 ms through one slot take 1.35 s, more than twice the lease: the eight
    // buffered at first outlive their claim's lease unless the heartbeat covers them. The
    // worker's own rescue runs every 50 ms, so an uncovered lease would be rescued and the
    // job claimed again.
    let (_t, db, queue) = setup(route, |c| QueueConfig {
        lease: Duration::from_millis(600),
        ..c
    })
    .await;
    let runs: Arc<Mutex<HashMap<neo_core::JobId, Vec<i32>>>> = Arc::default();
    let all_done = Arc::new(Notify::new());
    let (seen, done) = (Arc::clone(&runs), Arc::clone(&all_done));
    let worker = Worker::new(
        queue.clone(),
        WorkerConfig {
            concurrency: 1,
            prefetch: 8,
            poll_interval: Duration::from_millis(50),
            ..WorkerConfig::default()
        },
    )
    .handle("slow", move |job| {
        let (seen, done) = (Arc::clone(&seen), Arc::clone(&done));
        async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let mut runs = seen.lock().unwrap();
            runs.entry(job.id).or_default().push(job.attempt);
            if runs.values().map(Vec::len).sum::<usize>() == 9 {
                done.notify_one();
            }
            Ok(())
        }
    });
    let (worker, warmed) = with_warm_handler(worker);
    let (stop, run) = spawn_until_stopped(worker);
    warm_up(&db, &queue, &warmed, 30).await;
    let jobs: Vec<NewJob> = (0..9).map(|n| NewJob::new("slow", &n).unwrap()).collect();
    queue
        .enqueue_many(&db, jobs, OnDuplicate::Skip)
        .await
        .unwrap();
    // Claimed at once: one runs, eight wait in the buffer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.available, depth.running), (0, 9), "{depth:?}");
    tokio::time::timeout(Duration::from_secs(20), all_done.notified())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    let report = run.await.unwrap().unwrap();
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), 9, "every job ran: {runs:?}");
    assert!(
        runs.values().all(|attempts| attempts == &[1]),
        "each job ran once, under its first claim: {runs:?}"
    );
    assert_eq!(
        (
            report.succeeded,
            report.lease_lost,
            report.expired_before_start
        ),
        (39, 0, 0),
        "{report:?}"
    );
}

async fn a_buffered_job_whose_lease_was_lost_is_not_started_under_it(route: PgRoute) {
    use std::sync::Mutex;
    let (_t, db, queue) = setup(route, |c| QueueConfig {
        lease: Duration::from_millis(900),
        ..c
    })
    .await;
    let first = Arc::new(Notify::new());
    let go_on = Arc::new(Notify::new());
    let runs: Arc<Mutex<Vec<(neo_core::JobId, i32)>>> = Arc::default();
    let (started, proceed, seen) = (Arc::clone(&first), Arc::clone(&go_on), Arc::clone(&runs));
    let worker = Worker::new(
        queue.clone(),
        WorkerConfig {
            concurrency: 1,
            prefetch: 4,
            poll_interval: Duration::from_millis(50),
            ..WorkerConfig::default()
        },
    )
    .handle("t", move |job| {
        let (started, proceed, seen) = (
            Arc::clone(&started),
            Arc::clone(&proceed),
            Arc::clone(&seen),
        );
        async move {
            let first = seen.lock().unwrap().is_empty();
            seen.lock().unwrap().push((job.id, job.attempt));
            if first {
                started.notify_one();
                proceed.notified().await;
            }
            Ok(())
        }
    });
    let (worker, warmed) = with_warm_handler(worker);
    let (stop, run) = spawn_until_stopped(worker);
    warm_up(&db, &queue, &warmed, 30).await;
    let jobs: Vec<NewJob> = (0..5).map(|n| NewJob::new("t", &n).unwrap()).collect();
    queue
        .enqueue_many(&db, jobs, OnDuplicate::Skip)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), first.notified())
        .await
        .unwrap();
    let running = runs.lock().unwrap()[0].0;
    // The four buffered claims are lost (as if the worker had been cut off past its lease):
    // expired in the table, so the next heartbeat is refused for them.
    let mut tx = db.begin().await.unwrap();
    let expired = sqlx::query(
        "UPDATE neo_queue.jobs SET lease_expires_at = now() - interval '1 second' \
         WHERE state = 'running' AND id <> $1",
    )
    .persistent(false)
    .bind(running)
    .execute(&mut **tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(expired.rows_affected(), 4);
    // Past a heartbeat (every 300 ms), the running job finishes.
    tokio::time::sleep(Duration::from_millis(700)).await;
    go_on.notify_one();
    let deadline = Instant::now() + Duration::from_secs(10);
    while runs.lock().unwrap().len() < 5 {
        assert!(Instant::now() < deadline, "{:?}", runs.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    let report = run.await.unwrap().unwrap();
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 5, "each job ran once: {runs:?}");
    assert!(
        runs[1..].iter().all(|(_, attempt)| *attempt == 2),
        "the four lost claims ran only after being rescued and claimed again: {runs:?}"
    );
    assert_eq!(
        (report.succeeded, report.expired_before_start),
        (35, 4),
        "{report:?}"
    );
}

over_modes!(
    the_worker_runs_every_job_once_and_dead_letters_what_it_cannot_run,
    a_notification_wakes_an_idle_worker_long_before_its_poll,
    a_job_scheduled_for_later_runs_when_due_without_a_wake_up,
    a_worker_lost_mid_job_loses_its_lease_and_the_job_runs_again_elsewhere,
    shutdown_hands_back_jobs_that_did_not_finish_in_the_grace_period,
);

/// Tests that reach into the fixed schema's table, or that need no second mode.
mod fixed_only {
    use super::*;
    neo_testkit::over_routes!(
        a_busy_worker_still_stops_when_asked,
        prefetched_jobs_go_back_at_shutdown_and_can_be_claimed_again,
        buffered_jobs_keep_their_leases_while_they_wait,
        a_buffered_job_whose_lease_was_lost_is_not_started_under_it,
    );
}
