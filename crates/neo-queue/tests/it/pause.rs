//! Pause and resume across workers, in every mode: a paused queue's claims come back empty on
//! every worker within one poll interval, resuming wakes them, and a job whose worker died
//! while the queue was paused is rescued but not run until the queue is resumed.

use crate::worker::spawn_until_stopped;
use crate::{Mode, setup_in};
use neo_queue::{NewJob, OnDuplicate, QueueConfig, Worker, WorkerConfig};
use neo_testkit::PgRoute;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

fn counting(queue: &neo_queue::Queue, ran: &Arc<AtomicUsize>, poll: Duration) -> Worker {
    let ran = Arc::clone(ran);
    Worker::new(
        queue.clone(),
        WorkerConfig {
            poll_interval: poll,
            ..WorkerConfig::default()
        },
    )
    .handle("p", move |_job| {
        ran.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    })
}

async fn a_paused_queue_runs_nothing_on_any_worker_until_resumed(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let ran = Arc::new(AtomicUsize::new(0));
    let poll = Duration::from_millis(200);
    // Two workers, as two processes would be.
    let (stop_a, run_a) = spawn_until_stopped(counting(&queue, &ran, poll));
    let (stop_b, run_b) = spawn_until_stopped(counting(&queue, &ran, poll));
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert!(queue.pause(Some("test")).await.unwrap(), "was running");
    assert!(!queue.pause(None).await.unwrap(), "already paused");
    let status = queue.pause_status().await.unwrap().expect("paused");
    assert_eq!(status.paused_by.as_deref(), Some("test"));
    let jobs: Vec<NewJob> = (0..5).map(|n| NewJob::new("p", &n).unwrap()).collect();
    queue
        .enqueue_many(&db, jobs, OnDuplicate::Error)
        .await
        .unwrap();
    // Several poll intervals and the enqueue's notification: nothing starts.
    tokio::time::sleep(poll * 4).await;
    assert_eq!(ran.load(Ordering::SeqCst), 0, "a paused queue ran jobs");
    assert!(queue.claim("direct", 10, None).await.unwrap().is_empty());
    assert_eq!(queue.depth().await.unwrap().available, 5);

    let resumed = Instant::now();
    assert!(queue.resume().await.unwrap());
    assert!(!queue.resume().await.unwrap(), "already running");
    assert_eq!(queue.pause_status().await.unwrap(), None);
    while ran.load(Ordering::SeqCst) < 5 {
        assert!(
            resumed.elapsed() < poll + Duration::from_millis(800),
            "resumed jobs did not run within one poll interval"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop_a.send(()).unwrap();
    stop_b.send(()).unwrap();
    let (a, b) = (run_a.await.unwrap().unwrap(), run_b.await.unwrap().unwrap());
    assert_eq!(a.succeeded + b.succeeded, 5);
}

/// Fault: a worker dies holding a job while the queue is paused. Its lease expires and the
/// job is rescued, but no worker runs it until the queue is resumed; then it runs once more.
async fn a_job_whose_worker_died_during_a_pause_waits_for_the_resume(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| QueueConfig {
        lease: Duration::from_millis(500),
        ..c
    })
    .await;
    queue
        .enqueue(&db, NewJob::new("p", &1).unwrap(), OnDuplicate::Error)
        .await
        .unwrap();
    let taken = Arc::new(Notify::new());
    let signal = Arc::clone(&taken);
    let a = Worker::new(queue.clone(), WorkerConfig::default()).handle("p", move |_job| {
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
    queue.pause(None).await.unwrap();
    a_run.abort();
    let _ = a_run.await;

    let ran = Arc::new(AtomicUsize::new(0));
    let (stop, b_run) = spawn_until_stopped(counting(&queue, &ran, Duration::from_millis(100)));
    // Past the lease: B's rescue hands the job back, the pause keeps it from running.
    let deadline = Instant::now() + Duration::from_secs(5);
    while queue.depth().await.unwrap().available < 1 {
        assert!(
            Instant::now() < deadline,
            "the dead worker's job was not rescued"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ran.load(Ordering::SeqCst), 0, "ran while paused");

    queue.resume().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ran.load(Ordering::SeqCst) < 1 {
        assert!(Instant::now() < deadline, "not run after the resume");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    assert_eq!(b_run.await.unwrap().unwrap().succeeded, 1);
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.available, depth.running), (0, 0));
}

over_modes!(
    a_paused_queue_runs_nothing_on_any_worker_until_resumed,
    a_job_whose_worker_died_during_a_pause_waits_for_the_resume,
);
