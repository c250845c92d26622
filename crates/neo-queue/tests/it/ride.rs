//! Acks riding on a claim (`Queue::ack_and_claim`): they commit with the claim or not at all.

use crate::{Mode, setup, setup_in};
use neo_queue::{Job, NewJob, OnDuplicate, QueueConfig, Receipt, Worker, WorkerConfig};
use neo_testkit::PgRoute;
use serde_json::json;
use sqlx::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn job(n: i64) -> NewJob {
    NewJob::new("a", &json!({ "n": n })).unwrap()
}

/// Acks and a claim in one call: the accepted acks delete their jobs (which never run again,
/// even after every lease has expired), a lost lease's ack is refused, and the claim takes
/// the due jobs as a plain claim would.
async fn acks_riding_on_a_claim_finish_their_jobs_for_good(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| QueueConfig {
        lease: Duration::from_millis(300),
        ..c
    })
    .await;
    queue
        .enqueue_many(&db, vec![job(1), job(2), job(3)], OnDuplicate::Skip)
        .await
        .unwrap();
    let first = queue.claim("worker-a", 2, None).await.unwrap();
    assert_eq!(first.len(), 2);
    let lost = Receipt {
        fence: first[1].fence + 1,
        ..first[1].receipt()
    };
    let (claimed, refused) = queue
        .ack_and_claim(&[first[0].receipt(), lost], "worker-a", 5, None)
        .await
        .unwrap();
    assert_eq!(refused, vec![lost], "a stale fence is refused");
    assert_eq!(claimed.len(), 1, "the one job still due: {claimed:?}");
    assert!(queue.get(first[0].id).await.unwrap().is_none(), "acked");

    // Every lease runs out: what was not acknowledged runs again, the acked job never does.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(queue.rescue_expired().await.unwrap(), 2);
    let mut again: Vec<_> = queue
        .claim("worker-b", 5, None)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    again.sort();
    let mut expected = vec![first[1].id, claimed[0].id];
    expected.sort();
    assert_eq!(again, expected);

    // Without acks it is a plain claim.
    queue.enqueue(&db, job(4), OnDuplicate::Skip).await.unwrap();
    let (plain, refused) = queue.ack_and_claim(&[], "worker-b", 5, None).await.unwrap();
    assert_eq!((plain.len(), refused.len()), (1, 0));
}

/// The process dies after the acks ran in the claim's transaction but before it committed
/// (held at the capped claim's lock, then its connection is cut): nothing was acknowledged,
/// the job stays claimed under its lease, and runs again once the lease expires.
async fn an_ack_whose_claim_never_commits_is_not_lost(route: PgRoute) {
    let (t, db, queue) = setup(route, |c| QueueConfig {
        lease: Duration::from_millis(500),
        max_running_per_tenant: Some(10),
        ..c
    })
    .await;
    queue.enqueue(&db, job(1), OnDuplicate::Skip).await.unwrap();
    let held: Job = queue.claim("worker-a", 1, None).await.unwrap().remove(0);
    queue.enqueue(&db, job(2), OnDuplicate::Skip).await.unwrap();

    // Another session holds the lock capped claims take turns on.
    let mut admin = sqlx::PgConnection::connect(t.direct_url()).await.unwrap();
    let key = "hashtextextended('neo_queue claim ' || '\"neo_queue\".\"jobs\"', 0)";
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_advisory_lock({key})"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let riding = queue.clone();
    let receipt = held.receipt();
    let call =
        tokio::spawn(async move { riding.ack_and_claim(&[receipt], "worker-a", 5, None).await });
    // The ack has run (the job is deleted in the open transaction) and the claim waits.
    let pid = loop {
        let waiting: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND wait_event = 'advisory' AND query LIKE '%pg_advisory_xact_lock%'",
        )
        .fetch_optional(&mut admin)
        .await
        .unwrap();
        if let Some(pid) = waiting {
            break pid;
        }
        assert!(!call.is_finished(), "the claim must wait for the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The process dies: its task stops and its connection goes away before the commit.
    call.abort();
    let _ = call.await;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_advisory_unlock({key})"
    )))
    .execute(&mut admin)
    .await
    .unwrap();

    let record = queue.get(held.id).await.unwrap().expect("not acknowledged");
    assert_eq!(record.state, "running");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(queue.rescue_expired().await.unwrap(), 1);
    let again = queue.claim("worker-b", 5, None).await.unwrap();
    let rerun = again.iter().find(|j| j.id == held.id).expect("runs again");
    assert_eq!((rerun.attempt, rerun.fence), (2, held.fence + 1));
    assert!(
        queue.ack(held.receipt()).await.is_err(),
        "the dead process's claim stays fenced off"
    );
    queue.ack(rerun.receipt()).await.unwrap();
}

/// A worker whose acks could wait an hour for a claim: with none coming (the queue looked
/// empty) the completer writes them at once; at shutdown every waiting ack is written; every
/// job ran once and none is left.
async fn a_worker_writes_riding_acks_when_no_claim_comes_and_at_shutdown(
    mode: Mode,
    route: PgRoute,
) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let ran = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&ran);
    let worker = Worker::new(
        queue.clone(),
        WorkerConfig {
            ack_ride_wait: Duration::from_secs(3600),
            ..WorkerConfig::default()
        },
    )
    .handle("a", move |_job| {
        let counted = Arc::clone(&counted);
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let id = queue
        .enqueue(&db, job(1), OnDuplicate::Skip)
        .await
        .unwrap()
        .unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(20), async {
        while queue.get(id).await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        acked.is_ok(),
        "acked long before the hour: no claim was coming"
    );

    queue
        .enqueue_many(&db, (2..=200).map(job).collect(), OnDuplicate::Skip)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while ran.load(Ordering::SeqCst) < 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every job ran");
    stop.send(()).unwrap();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.succeeded, 200, "{report:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 200, "each job once");
    let depth = queue.depth().await.unwrap();
    assert_eq!(
        (depth.available, depth.running, depth.dead),
        (0, 0, 0),
        "{depth:?}"
    );
}

over_modes!(
    acks_riding_on_a_claim_finish_their_jobs_for_good,
    a_worker_writes_riding_acks_when_no_claim_comes_and_at_shutdown,
);

/// The dying claim needs the fixed schema's lock key.
mod fixed_only {
    use super::an_ack_whose_claim_never_commits_is_not_lost;
    neo_testkit::over_routes!(an_ack_whose_claim_never_commits_is_not_lost);
}
