//! Snooze and retention in every mode: a snoozed run spends no attempt, even when a later run
//! dies mid-way; dead letters, cancelled jobs and outputs are pruned after their retention,
//! oldest first, in bounded batches, by `Queue::prune` and by a running worker.

use crate::worker::spawn_until_stopped;
use crate::{Mode, setup_in};
use neo_queue::{
    Failure, JobError, NewJob, OnDuplicate, Pruned, QueueConfig, Worker, WorkerConfig,
};
use neo_testkit::PgRoute;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

fn retaining(c: QueueConfig) -> QueueConfig {
    QueueConfig {
        retain_dead: Some(Duration::from_millis(300)),
        retain_cancelled: Some(Duration::from_millis(300)),
        retain_outputs: Some(Duration::from_millis(300)),
        prune_batch: 2,
        ..c
    }
}

async fn finished_rows_are_pruned_after_their_retention_in_bounded_batches(
    mode: Mode,
    route: PgRoute,
) {
    let (_t, db, queue) = setup_in(mode, route, retaining).await;
    let jobs: Vec<NewJob> = (0..10).map(|n| NewJob::new("r", &n).unwrap()).collect();
    queue
        .enqueue_many(&db, jobs, OnDuplicate::Error)
        .await
        .unwrap();
    let claimed = queue.claim("w", 7, None).await.unwrap();
    // Every claimed job records an output; 3 are acked, 3 dead-lettered, 1 stays running.
    for job in &claimed {
        queue
            .record_progress(job.receipt(), Some(100.0), Some(&json!(job.id)))
            .await
            .unwrap();
    }
    let receipts: Vec<_> = claimed.iter().map(|j| j.receipt()).collect();
    queue.ack_many(&receipts[..3]).await.unwrap();
    let failures: Vec<_> = receipts[3..6]
        .iter()
        .map(|r| Failure::permanent(*r, "bad"))
        .collect();
    queue.nack_many(&failures).await.unwrap();
    let running = claimed[6].id;
    // The 3 pending jobs and the running one are cancelled.
    let cancel = queue
        .cancel_matching(&neo_queue::CancelFilter::kind("r").unwrap())
        .await
        .unwrap();
    assert_eq!(cancel.pending.len(), 3);
    assert_eq!(cancel.running, vec![running]);

    // Nothing is old enough yet.
    assert_eq!(queue.prune().await.unwrap(), Pruned::default());
    tokio::time::sleep(Duration::from_millis(400)).await;
    // A dead letter younger than the retention stays.
    let young = queue
        .enqueue(&db, NewJob::new("r", &99).unwrap(), OnDuplicate::Error)
        .await
        .unwrap()
        .unwrap();
    let job = queue.claim("w", 1, None).await.unwrap().remove(0);
    assert_eq!(job.id, young);
    queue
        .nack_many(&[Failure::permanent(job.receipt(), "young")])
        .await
        .unwrap();

    let first = queue.prune().await.unwrap();
    assert_eq!(
        (first.dead, first.cancelled, first.outputs, first.more),
        (2, 2, 2, true)
    );
    let second = queue.prune().await.unwrap();
    // 4 cancelled (3 pending + the running one); 7 outputs.
    assert_eq!((second.dead, second.cancelled, second.outputs), (1, 2, 2));
    let mut rest = second;
    while rest.more {
        rest = queue.prune().await.unwrap();
    }
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.dead, depth.cancelled), (1, 0), "{depth:?}");
    assert_eq!(queue.get(young).await.unwrap().unwrap().state, "dead");
    for job in &claimed {
        assert_eq!(queue.job_output(job.id).await.unwrap(), None);
    }
}

/// Fault: a worker dies mid-job on the job's last attempt; another worker's rescue
/// dead-letters it, and the same worker prunes it once its retention has passed.
async fn a_running_worker_prunes_what_a_dead_worker_left(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| QueueConfig {
        lease: Duration::from_millis(400),
        prune_interval: Duration::from_millis(100),
        ..retaining(c)
    })
    .await;
    queue
        .enqueue(
            &db,
            NewJob::new("once", &1).unwrap().max_attempts(1),
            OnDuplicate::Error,
        )
        .await
        .unwrap();
    let taken = Arc::new(Notify::new());
    let signal = Arc::clone(&taken);
    let a = Worker::new(queue.clone(), WorkerConfig::default()).handle("once", move |_job| {
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
    let b = Worker::new(
        queue.clone(),
        WorkerConfig {
            poll_interval: Duration::from_millis(100),
            ..WorkerConfig::default()
        },
    )
    .handle("once", |_job| async { Ok(()) });
    let (stop, b_run) = spawn_until_stopped(b);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut was_dead = false;
    loop {
        let depth = queue.depth().await.unwrap();
        was_dead |= depth.dead == 1;
        if was_dead && depth.dead == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not dead-lettered then pruned: {depth:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.send(()).unwrap();
    assert_eq!(b_run.await.unwrap().unwrap().succeeded, 0);
}

/// Fault: a snoozed run spends no attempt, so when the next run's worker dies the job still
/// has an attempt left and runs to completion (with two attempts allowed).
async fn a_snooze_spends_no_attempt_even_when_a_later_run_dies(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| QueueConfig {
        lease: Duration::from_millis(400),
        ..c
    })
    .await;
    let id = queue
        .enqueue(
            &db,
            NewJob::new("s", &1).unwrap().max_attempts(2),
            OnDuplicate::Error,
        )
        .await
        .unwrap()
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let taken = Arc::new(Notify::new());
    let (count, signal) = (Arc::clone(&runs), Arc::clone(&taken));
    // A: the first run snoozes; the second hangs, and A dies.
    let a = Worker::new(
        queue.clone(),
        WorkerConfig {
            poll_interval: Duration::from_millis(50),
            ..WorkerConfig::default()
        },
    )
    .handle("s", move |_job| {
        let (count, signal) = (Arc::clone(&count), Arc::clone(&signal));
        async move {
            if count.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(JobError::Snooze(Duration::from_millis(50)));
            }
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
    let done = Arc::new(Notify::new());
    let signal = Arc::clone(&done);
    let b = Worker::new(
        queue.clone(),
        WorkerConfig {
            poll_interval: Duration::from_millis(100),
            ..WorkerConfig::default()
        },
    )
    .handle("s", move |job| {
        let signal = Arc::clone(&signal);
        async move {
            assert_eq!(job.attempt, 2, "the snooze did not count");
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
    assert_eq!(b_run.await.unwrap().unwrap().succeeded, 1);
    assert_eq!(queue.get(id).await.unwrap(), None, "acked");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

over_modes!(
    finished_rows_are_pruned_after_their_retention_in_bounded_batches,
    a_running_worker_prunes_what_a_dead_worker_left,
    a_snooze_spends_no_attempt_even_when_a_later_run_dies,
);
