//! Workflows in every mode: jobs that depend on others run after them (fan-out / fan-in);
//! a dependency that dies or is cancelled cancels, fails or still runs its dependents per
//! their policy, passed on down the chain; cycles and unknown dependencies are refused with
//! nothing stored; a batch's callback runs once after every job of the batch; and when the
//! worker running the last dependency dies, the dependency reruns after its lease expires
//! and the dependent runs exactly once.

use crate::worker::spawn_until_stopped;
use crate::{Mode, setup_in};
use neo_core::JobId;
use neo_queue::{
    Depth, Error, Failure, JobError, NewJob, OnDependencyFailure, OnDuplicate, Queue, QueueConfig,
    Worker, WorkerConfig,
};
use neo_testkit::PgRoute;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

fn job(kind: &str) -> NewJob {
    NewJob::new(kind, &json!({})).unwrap()
}

/// Claims everything claimable; returns the claimed jobs' kinds, sorted, and the jobs.
async fn claim_all(queue: &Queue) -> (Vec<String>, Vec<neo_queue::Job>) {
    let jobs = queue.claim("w", 100, None).await.unwrap();
    let mut kinds: Vec<String> = jobs.iter().map(|j| j.kind.clone()).collect();
    kinds.sort();
    (kinds, jobs)
}

async fn state(queue: &Queue, id: JobId) -> String {
    queue.get(id).await.unwrap().expect("stored").state
}

async fn fan_out_and_fan_in_run_in_order(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let a = job("a");
    let b = job("b").depends_on([a.id()]);
    let c = job("c").depends_on([a.id()]);
    let d = job("d").depends_on([b.id(), c.id()]);
    let d_id = d.id();
    // The dependent first: order within the batch does not matter.
    queue
        .enqueue_many(&db, vec![d, c, b, a], OnDuplicate::Error)
        .await
        .unwrap();
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.available, depth.waiting), (1, 3), "{depth:?}");
    assert_eq!(state(&queue, d_id).await, "waiting");

    let (kinds, jobs) = claim_all(&queue).await;
    assert_eq!(kinds, ["a"], "only the root is claimable");
    queue.ack(jobs[0].receipt()).await.unwrap();
    let (kinds, jobs) = claim_all(&queue).await;
    assert_eq!(kinds, ["b", "c"], "the fan-out, in the ack's transaction");
    let b_claim = jobs.iter().find(|j| j.kind == "b").unwrap();
    let c_claim = jobs.iter().find(|j| j.kind == "c").unwrap();
    queue.ack(b_claim.receipt()).await.unwrap();
    assert!(
        claim_all(&queue).await.0.is_empty(),
        "d waits for c as well"
    );
    // The last dependency's ack rides on a claim: the dependent is claimable in it.
    let (claimed, refused) = queue
        .ack_and_claim(&[c_claim.receipt()], "w", 10, None)
        .await
        .unwrap();
    assert!(refused.is_empty());
    let kinds: Vec<&str> = claimed.iter().map(|j| j.kind.as_str()).collect();
    assert_eq!(kinds, ["d"], "the fan-in");
    queue.ack(claimed[0].receipt()).await.unwrap();
    assert_eq!(queue.depth().await.unwrap(), Depth::default());

    // A dependency enqueued by an earlier call, still pending.
    let first = job("a");
    let first_id = first.id();
    queue.enqueue(&db, first, OnDuplicate::Error).await.unwrap();
    let later = queue
        .enqueue(&db, job("b").depends_on([first_id]), OnDuplicate::Error)
        .await
        .unwrap()
        .unwrap();
    let (kinds, jobs) = claim_all(&queue).await;
    assert_eq!(kinds, ["a"]);
    queue.ack_many(&[jobs[0].receipt()]).await.unwrap();
    let (kinds, jobs) = claim_all(&queue).await;
    assert_eq!((kinds, jobs[0].id), (vec!["b".to_owned()], later));
}

async fn a_dead_dependency_applies_each_policy(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let a = job("a");
    let cancel = job("cancel")
        .depends_on([a.id()])
        .on_dependency_failure(OnDependencyFailure::Cancel);
    let fail = job("fail")
        .depends_on([a.id()])
        .on_dependency_failure(OnDependencyFailure::Fail);
    let run = job("run")
        .depends_on([a.id()])
        .on_dependency_failure(OnDependencyFailure::Run);
    // Behind the cancelled and the failed one (the queue's default policy: cancel), and
    // behind the one that still runs.
    let after_cancel = job("after").depends_on([cancel.id()]);
    let after_fail = job("after")
        .depends_on([fail.id()])
        .on_dependency_failure(OnDependencyFailure::Fail);
    let after_run = job("after").depends_on([run.id()]);
    let ids: Vec<JobId> = [
        &a,
        &cancel,
        &fail,
        &run,
        &after_cancel,
        &after_fail,
        &after_run,
    ]
    .iter()
    .map(|j| j.id())
    .collect();
    queue
        .enqueue_many(
            &db,
            vec![a, cancel, fail, run, after_cancel, after_fail, after_run],
            OnDuplicate::Error,
        )
        .await
        .unwrap();
    let (_, jobs) = claim_all(&queue).await;
    assert_eq!(jobs.len(), 1);
    let refused = queue
        .nack_many(&[Failure::permanent(jobs[0].receipt(), "bad input")])
        .await
        .unwrap();
    assert!(refused.is_empty());

    assert_eq!(state(&queue, ids[0]).await, "dead");
    assert_eq!(state(&queue, ids[1]).await, "cancelled");
    let failed = queue.get(ids[2]).await.unwrap().unwrap();
    assert_eq!(failed.state, "dead");
    assert_eq!(
        failed.last_error.as_deref(),
        Some(format!("dependency {} died", ids[0]).as_str())
    );
    assert_eq!(state(&queue, ids[3]).await, "available", "run anyway");
    assert_eq!(state(&queue, ids[4]).await, "cancelled", "passed on");
    assert_eq!(state(&queue, ids[5]).await, "dead", "passed on");
    assert_eq!(
        state(&queue, ids[6]).await,
        "waiting",
        "its dependency runs"
    );
    let (kinds, jobs) = claim_all(&queue).await;
    assert_eq!(kinds, ["run"]);
    queue.ack(jobs[0].receipt()).await.unwrap();
    assert_eq!(claim_all(&queue).await.1[0].id, ids[6]);

    // A dependency already dead when the dependent is enqueued: the policy applies at once.
    let now_failed = queue
        .enqueue(
            &db,
            job("late")
                .depends_on([ids[0]])
                .on_dependency_failure(OnDependencyFailure::Fail),
            OnDuplicate::Error,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state(&queue, now_failed).await, "dead");
    let still_runs = queue
        .enqueue(
            &db,
            job("late")
                .depends_on([ids[0]])
                .on_dependency_failure(OnDependencyFailure::Run),
            OnDuplicate::Error,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state(&queue, still_runs).await, "available");
}

async fn cancellation_propagates_to_dependents(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let a = job("a");
    let b = job("b").depends_on([a.id()]);
    let c = job("c").depends_on([b.id()]);
    let runs = job("runs")
        .depends_on([b.id()])
        .on_dependency_failure(OnDependencyFailure::Run);
    let fails = job("fails")
        .depends_on([a.id()])
        .on_dependency_failure(OnDependencyFailure::Fail);
    let ids: Vec<JobId> = [&a, &b, &c, &runs, &fails].iter().map(|j| j.id()).collect();
    queue
        .enqueue_many(&db, vec![a, b, c, runs, fails], OnDuplicate::Error)
        .await
        .unwrap();
    // A running dependency cancelled: its dependents follow at once.
    let (_, claimed) = claim_all(&queue).await;
    let cancelled = queue.cancel(&[ids[0]]).await.unwrap();
    assert_eq!(cancelled.running, vec![ids[0]]);
    assert_eq!(state(&queue, ids[1]).await, "cancelled");
    assert_eq!(state(&queue, ids[2]).await, "cancelled", "passed on");
    assert_eq!(state(&queue, ids[3]).await, "available");
    let fails = queue.get(ids[4]).await.unwrap().unwrap();
    assert_eq!(
        (fails.state.as_str(), fails.last_error),
        ("dead", Some(format!("dependency {} was cancelled", ids[0])))
    );
    assert!(matches!(
        queue.ack(claimed[0].receipt()).await,
        Err(Error::LeaseLost { .. })
    ));

    // A waiting job can be cancelled itself; its dependency then finishes as usual.
    let root = job("root");
    let root_id = root.id();
    let waiting = job("w").depends_on([root_id]);
    let waiting_id = waiting.id();
    queue
        .enqueue_many(&db, vec![root, waiting], OnDuplicate::Error)
        .await
        .unwrap();
    let cancelled = queue.cancel(&[waiting_id]).await.unwrap();
    assert_eq!(cancelled.pending, vec![waiting_id]);
    let (kinds, jobs) = claim_all(&queue).await;
    assert_eq!(kinds, ["root", "runs"]);
    let receipts: Vec<_> = jobs.iter().map(neo_queue::Job::receipt).collect();
    assert!(queue.ack_many(&receipts).await.unwrap().is_empty());
    assert_eq!(state(&queue, waiting_id).await, "cancelled");
    assert!(claim_all(&queue).await.1.is_empty());
}

async fn a_cycle_is_refused_and_nothing_is_stored(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let (mut x, mut y, mut z) = (job("x"), job("y"), job("z"));
    let (xi, yi, zi) = (x.id(), y.id(), z.id());
    x = x.depends_on([zi]);
    y = y.depends_on([xi]);
    z = z.depends_on([yi]);
    let free = job("free");
    let after = job("after").depends_on([free.id()]);
    let err = queue
        .enqueue_many(&db, vec![free, x, y, z, after], OnDuplicate::Error)
        .await
        .unwrap_err();
    let Error::DependencyCycle { ids } = &err else {
        panic!("{err:?}")
    };
    let mut on_cycle = ids.clone();
    on_cycle.sort();
    let mut expected = vec![xi, yi, zi];
    expected.sort();
    assert_eq!(on_cycle, expected, "{err}");
    assert!(err.to_string().contains("cycle"), "{err}");

    let me = job("me");
    let me_id = me.id();
    let err = queue
        .enqueue(&db, me.depends_on([me_id]), OnDuplicate::Error)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::DependencyCycle { ids } if ids == &vec![me_id]),
        "{err:?}"
    );
    assert_eq!(
        queue.depth().await.unwrap(),
        Depth::default(),
        "nothing stored"
    );
    assert!(queue.get(xi).await.unwrap().is_none());
}

async fn unknown_dependencies_are_refused(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let nowhere = JobId::new();
    let known = job("k");
    let known_id = known.id();
    queue.enqueue(&db, known, OnDuplicate::Error).await.unwrap();
    let err = queue
        .enqueue_many(
            &db,
            vec![job("n"), job("d").depends_on([known_id, nowhere])],
            OnDuplicate::Error,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownDependency { ids } if ids == &vec![nowhere]),
        "{err:?}"
    );
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.available, depth.waiting), (1, 0), "nothing stored");

    // A completed job is gone: a dependency on it is unknown too.
    let (_, jobs) = claim_all(&queue).await;
    queue.ack(jobs[0].receipt()).await.unwrap();
    let err = queue
        .enqueue(&db, job("d").depends_on([known_id]), OnDuplicate::Error)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownDependency { .. }), "{err:?}");

    // A waiting job cannot hold a unique key.
    let root = job("r");
    let err = queue
        .enqueue_many(
            &db,
            vec![job("d").depends_on([root.id()]).unique_key("once"), root],
            OnDuplicate::Error,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                what: "job dependencies",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(queue.depth().await.unwrap(), Depth::default());
}

async fn a_batch_callback_runs_once_after_every_job(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let pages: Vec<NewJob> = (0..6).map(|i| NewJob::new("page", &i).unwrap()).collect();
    let ids = queue
        .enqueue_batch(&db, pages, job("done"), OnDuplicate::Error)
        .await
        .unwrap();
    assert_eq!(ids.len(), 7);
    let finished = Arc::new(AtomicUsize::new(0));
    let seen_at_callback = Arc::new(Mutex::new(Vec::<usize>::new()));
    let (pages_done, at_callback) = (Arc::clone(&finished), Arc::clone(&seen_at_callback));
    let callback_seen = Arc::clone(&finished);
    let worker = Worker::new(
        queue.clone(),
        WorkerConfig {
            concurrency: 4,
            poll_interval: Duration::from_millis(50),
            ..WorkerConfig::default()
        },
    )
    .handle("page", move |job| {
        let done = Arc::clone(&pages_done);
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            done.fetch_add(1, Ordering::SeqCst);
            // One page fails for good: the callback still runs (its policy is `Run`).
            if job.payload == json!(3) {
                return Err(JobError::permanent("page 3 is corrupt"));
            }
            Ok(())
        }
    })
    .handle("done", move |_job| {
        at_callback
            .lock()
            .unwrap()
            .push(callback_seen.load(Ordering::SeqCst));
        async { Ok(()) }
    });
    let (stop, run) = spawn_until_stopped(worker);
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen_at_callback.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the callback never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).unwrap();
    let report = run.await.unwrap().unwrap();
    assert_eq!(
        *seen_at_callback.lock().unwrap(),
        vec![6],
        "once, after all six pages"
    );
    assert_eq!(
        report.succeeded, 6,
        "five pages and the callback: {report:?}"
    );
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.dead, depth.waiting, depth.available), (1, 0, 0));
    assert!(matches!(
        queue
            .enqueue_batch(&db, Vec::new(), job("done"), OnDuplicate::Error)
            .await,
        Err(Error::Invalid { what: "batch", .. })
    ));
}

/// Fault: the worker running the last dependency dies mid-job. Its dependent stays waiting
/// while the lease holds; then the dependency is rescued and reruns on another worker, and
/// the dependent runs exactly once, after it.
async fn the_dependent_runs_once_after_its_dependency_survives_a_dead_worker(
    mode: Mode,
    route: PgRoute,
) {
    let lease = Duration::from_millis(800);
    let (_t, db, queue) = setup_in(mode, route, |c| QueueConfig { lease, ..c }).await;
    let first = job("first");
    let last = job("last");
    let after = job("after").depends_on([first.id(), last.id()]);
    let after_id = after.id();
    queue
        .enqueue_many(&db, vec![first, last, after], OnDuplicate::Error)
        .await
        .unwrap();
    // `first` completes; the worker then dies running `last`.
    let started = Arc::new(Notify::new());
    let signal = Arc::clone(&started);
    let a = Worker::new(queue.clone(), WorkerConfig::default())
        .handle("first", |_job| async { Ok(()) })
        .handle("last", move |_job| {
            let signal = Arc::clone(&signal);
            async move {
                signal.notify_one();
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    let a_run = tokio::spawn(a.run(std::future::pending()));
    tokio::time::timeout(Duration::from_secs(5), started.notified())
        .await
        .unwrap();
    // Wait for `first`'s ack (acks are batched) before the worker dies.
    let deadline = Instant::now() + Duration::from_secs(5);
    while queue.depth().await.unwrap().running != 1 {
        assert!(Instant::now() < deadline, "first was not acked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a_run.abort();
    let died = Instant::now();
    let _ = a_run.await;
    assert_eq!(state(&queue, after_id).await, "waiting");

    let (lasts, afters) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let after_ran_at = Arc::new(Mutex::new(None::<(Instant, usize)>));
    let (l, n, at) = (
        Arc::clone(&lasts),
        Arc::clone(&afters),
        Arc::clone(&after_ran_at),
    );
    let lasts_seen = Arc::clone(&lasts);
    let b = Worker::new(
        queue.clone(),
        WorkerConfig {
            poll_interval: Duration::from_millis(50),
            ..WorkerConfig::default()
        },
    )
    .handle("last", move |_job| {
        l.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    })
    .handle("after", move |_job| {
        n.fetch_add(1, Ordering::SeqCst);
        at.lock()
            .unwrap()
            .get_or_insert((Instant::now(), lasts_seen.load(Ordering::SeqCst)));
        async { Ok(()) }
    });
    let (stop, b_run) = spawn_until_stopped(b);
    let deadline = Instant::now() + Duration::from_secs(15);
    while afters.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the dependent never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(()).unwrap();
    let report = b_run.await.unwrap().unwrap();
    let (ran_at, lasts_before) = after_ran_at.lock().unwrap().expect("ran");
    assert!(
        ran_at - died >= lease / 2,
        "the dependent ran {:?} after the death, while its dependency's lease held",
        ran_at - died
    );
    assert_eq!(lasts_before, 1, "after the rerun of its dependency");
    assert_eq!(lasts.load(Ordering::SeqCst), 1);
    assert_eq!(afters.load(Ordering::SeqCst), 1, "exactly once");
    assert_eq!(report.succeeded, 2, "{report:?}");
    assert_eq!(queue.depth().await.unwrap(), Depth::default());
}

over_modes!(
    fan_out_and_fan_in_run_in_order,
    a_dead_dependency_applies_each_policy,
    cancellation_propagates_to_dependents,
    a_cycle_is_refused_and_nothing_is_stored,
    unknown_dependencies_are_refused,
    a_batch_callback_runs_once_after_every_job,
    the_dependent_runs_once_after_its_dependency_survives_a_dead_worker,
);
