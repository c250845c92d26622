//! Cancellation in every mode: pending jobs by id, unique key and query; a running job's
//! handler sees its token and its fenced ack, nack and heartbeat are refused; a job cancelled
//! while its worker is dead is not brought back by the rescue.

use crate::worker::spawn_until_stopped;
use crate::{Mode, setup_in};
use neo_queue::{
    CancelFilter, Error, Failure, JobContext, NewJob, OnDuplicate, QueueConfig, Worker,
    WorkerConfig,
};
use neo_testkit::PgRoute;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

async fn pending_jobs_are_cancelled_by_id_unique_key_and_query(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let jobs = vec![
        NewJob::new("a", &json!({})).unwrap(),
        NewJob::new("b", &json!({})).unwrap().unique_key("k"),
        NewJob::new("r", &json!({ "acct": 1, "x": 1 })).unwrap(),
        NewJob::new("r", &json!({ "acct": 1, "x": 2 })).unwrap(),
        NewJob::new("r", &json!({ "acct": 2 })).unwrap(),
    ];
    let ids = crate::enqueue_all(&queue, &db, jobs).await;

    let by_id = queue.cancel(&[ids[0]]).await.unwrap();
    assert_eq!((by_id.pending, by_id.running.len()), (vec![ids[0]], 0));
    let by_key = queue.cancel_unique_keys(&["k".to_owned()]).await.unwrap();
    assert_eq!(by_key.pending, vec![ids[1]]);
    // The key is free again.
    let again = queue
        .enqueue(
            &db,
            NewJob::new("b", &json!({})).unwrap().unique_key("k"),
            OnDuplicate::Error,
        )
        .await
        .unwrap()
        .unwrap();
    let filter = CancelFilter::kind("r")
        .unwrap()
        .payload_contains(json!({ "acct": 1 }));
    let mut by_query = queue.cancel_matching(&filter).await.unwrap().pending;
    by_query.sort();
    let mut expected = vec![ids[2], ids[3]];
    expected.sort();
    assert_eq!(by_query, expected);
    // Nothing left to cancel among them.
    assert!(queue.cancel(&ids[..4]).await.unwrap().is_empty());
    assert!(queue.cancel_matching(&filter).await.unwrap().is_empty());

    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.available, depth.cancelled), (2, 4), "{depth:?}");
    assert_eq!(queue.get(ids[0]).await.unwrap().unwrap().state, "cancelled");
    let mut claimed: Vec<_> = queue
        .claim("w", 10, None)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    claimed.sort();
    let mut left = vec![ids[4], again];
    left.sort();
    assert_eq!(claimed, left, "cancelled jobs are never claimed");

    let bad = CancelFilter::kind("Not A Kind").unwrap_err();
    assert!(matches!(bad, Error::Invalid { .. }), "{bad:?}");
}

async fn a_cancelled_claim_is_refused_on_ack_nack_and_heartbeat(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let mut ids = Vec::new();
    for n in 0..2 {
        ids.push(
            queue
                .enqueue(&db, NewJob::new("c", &n).unwrap(), OnDuplicate::Error)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let claimed = queue.claim("w", 2, None).await.unwrap();
    let cancelled = queue.cancel(&ids).await.unwrap();
    assert_eq!(cancelled.running.len(), 2);
    assert!(cancelled.pending.is_empty());
    let receipts: Vec<_> = claimed.iter().map(|j| j.receipt()).collect();
    assert!(matches!(
        queue.heartbeat(&receipts).await,
        Err(Error::LeaseLost { .. })
    ));
    assert_eq!(
        queue.ack_many(&receipts[..1]).await.unwrap().len(),
        1,
        "ack refused"
    );
    let refused = queue
        .nack_many(&[Failure::retry(receipts[1], "late")])
        .await
        .unwrap();
    assert_eq!(refused.len(), 1, "nack refused");
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.running, depth.cancelled), (0, 2));
    assert_eq!(queue.rescue_expired().await.unwrap(), 0);
}

async fn a_running_handler_sees_its_cancellation_and_its_ack_is_refused(
    mode: Mode,
    route: PgRoute,
) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let id = queue
        .enqueue(&db, NewJob::new("long", &1).unwrap(), OnDuplicate::Error)
        .await
        .unwrap()
        .unwrap();
    let started = Arc::new(Notify::new());
    let saw = Arc::new(AtomicUsize::new(0));
    let (signal, seen) = (Arc::clone(&started), Arc::clone(&saw));
    let worker = Worker::new(queue.clone(), WorkerConfig::default()).handle("long", move |_job| {
        let (signal, seen) = (Arc::clone(&signal), Arc::clone(&seen));
        async move {
            let context = JobContext::current().expect("a worker sets the context");
            assert!(!context.is_cancelled());
            signal.notify_one();
            if tokio::time::timeout(Duration::from_secs(10), context.cancelled())
                .await
                .is_ok()
            {
                assert!(context.is_cancelled());
                seen.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
    });
    let (stop, run) = spawn_until_stopped(worker);
    tokio::time::timeout(Duration::from_secs(5), started.notified())
        .await
        .unwrap();
    let sent = Instant::now();
    assert_eq!(queue.cancel(&[id]).await.unwrap().running, vec![id]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while saw.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the handler did not see the cancel"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Told by the notification, not the heartbeat (a third of the 60 s lease).
    assert!(sent.elapsed() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(()).unwrap();
    let report = run.await.unwrap().unwrap();
    assert_eq!((report.succeeded, report.lease_lost), (0, 1), "{report:?}");
    assert_eq!(queue.get(id).await.unwrap().unwrap().state, "cancelled");
    assert_eq!(JobContext::current().map(|c| c.receipt()), None);
}

/// Fault: the worker running a job dies; the job is cancelled while the dead worker's lease
/// still holds it. The rescue does not bring it back and no other worker runs it.
async fn a_job_cancelled_while_its_worker_is_dead_never_runs_again(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| QueueConfig {
        lease: Duration::from_millis(500),
        ..c
    })
    .await;
    let id = queue
        .enqueue(&db, NewJob::new("x", &1).unwrap(), OnDuplicate::Error)
        .await
        .unwrap()
        .unwrap();
    let taken = Arc::new(Notify::new());
    let signal = Arc::clone(&taken);
    let a = Worker::new(queue.clone(), WorkerConfig::default()).handle("x", move |_job| {
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
    assert_eq!(queue.cancel(&[id]).await.unwrap().running, vec![id]);

    let ran = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&ran);
    let b = Worker::new(
        queue.clone(),
        WorkerConfig {
            poll_interval: Duration::from_millis(100),
            ..WorkerConfig::default()
        },
    )
    .handle("x", move |_job| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    });
    let (stop, b_run) = spawn_until_stopped(b);
    // Well past the dead worker's lease and several rescues.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.send(()).unwrap();
    b_run.await.unwrap().unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.available, depth.running, depth.cancelled), (0, 0, 1));
}

over_modes!(
    pending_jobs_are_cancelled_by_id_unique_key_and_query,
    a_cancelled_claim_is_refused_on_ack_nack_and_heartbeat,
    a_running_handler_sees_its_cancellation_and_its_ack_is_refused,
    a_job_cancelled_while_its_worker_is_dead_never_runs_again,
);
