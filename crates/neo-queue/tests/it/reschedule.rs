//! Moving pending jobs in every mode: a job scheduled for later runs at its new time; a
//! claimed, finished or unknown job does not move.

use crate::{Mode, setup_in};
use chrono::{Duration as Span, Utc};
use neo_core::JobId;
use neo_queue::{NewJob, OnDuplicate};
use neo_testkit::PgRoute;
use serde_json::json;

async fn pending_jobs_move_and_claimed_finished_or_unknown_ones_do_not(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let later = Utc::now() + Span::hours(1);
    let jobs = vec![
        NewJob::new("a", &json!({})).unwrap().run_at(later),
        NewJob::new("b", &json!({})).unwrap(),
    ];
    let ids = crate::enqueue_all(&queue, &db, jobs).await;
    // Only `b` is due; claim it, so it is running.
    let claimed = queue.claim("w", 10, None).await.unwrap();
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[1]]
    );

    let now = Utc::now();
    let moved = queue
        .reschedule(&[
            (ids[0], now),
            (ids[1], now + Span::hours(2)),
            (JobId::new(), now),
        ])
        .await
        .unwrap();
    assert_eq!(moved, vec![ids[0]], "only the pending job moves");
    // The running one kept its claim: its fenced ack still holds.
    queue.ack(claimed[0].receipt()).await.unwrap();
    // The moved one is due now, with its attempts untouched.
    let taken = queue.claim("w", 10, None).await.unwrap();
    assert_eq!(taken.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[0]]);
    assert_eq!(taken[0].attempt, 1);
    // Finished (acknowledged) jobs are gone: nothing moves.
    queue.ack(taken[0].receipt()).await.unwrap();
    assert!(queue.reschedule(&[(ids[0], now)]).await.unwrap().is_empty());
    assert!(queue.reschedule(&[]).await.unwrap().is_empty());
}

async fn withdrawn_pending_jobs_leave_no_row_and_others_stay(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let later = Utc::now() + Span::hours(1);
    let jobs = vec![
        NewJob::new("a", &json!({}))
            .unwrap()
            .run_at(later)
            .unique_key("withdrawn-a"),
        NewJob::new("b", &json!({})).unwrap(),
        NewJob::new("c", &json!({})).unwrap().run_at(later),
    ];
    let ids = crate::enqueue_all(&queue, &db, jobs).await;
    // `b` is running: it stays, and its fenced ack still holds.
    let claimed = queue.claim("w", 10, None).await.unwrap();
    assert_eq!(claimed[0].id, ids[1]);
    let gone = queue
        .withdraw(&[ids[0], ids[1], JobId::new()])
        .await
        .unwrap();
    assert_eq!(gone, vec![ids[0]], "only the pending job goes");
    assert!(queue.get(ids[0]).await.unwrap().is_none(), "no row is kept");
    queue.ack(claimed[0].receipt()).await.unwrap();
    let depth = queue.depth().await.unwrap();
    assert_eq!(
        (depth.available, depth.running, depth.cancelled),
        (1, 0, 0),
        "only `c` is left"
    );
    // Its unique key is free again.
    let again = queue
        .enqueue_many(
            &db,
            vec![
                NewJob::new("a", &json!({}))
                    .unwrap()
                    .unique_key("withdrawn-a"),
            ],
            OnDuplicate::Skip,
        )
        .await
        .unwrap();
    assert!(again[0].is_some(), "the key was freed");
    assert!(queue.withdraw(&[]).await.unwrap().is_empty());
}

over_modes!(
    pending_jobs_move_and_claimed_finished_or_unknown_ones_do_not,
    withdrawn_pending_jobs_leave_no_row_and_others_stay,
);

/// Jobs taken by id (withdrawn, moved, dead letters requeued or discarded) are read by the
/// primary key whatever the statistics say. The table is analysed while every job is running
/// (the statistics see none available), then fills with jobs scheduled for later; the
/// generic plans of the withdraw and reschedule statements, read back from the one
/// connection's prepared statements, must find the ids in `jobs_pkey`. Written with
/// `state = 'available'`, they read every available job out of a claim index instead.
#[tokio::test]
async fn jobs_taken_by_id_are_read_by_the_primary_key_whatever_the_statistics_say() {
    let test_db = PgRoute::Direct.database().await;
    let db = crate::one_connection(&test_db).await;
    let queue = neo_queue::Queue::new(&db, neo_queue::QueueConfig::default()).unwrap();
    queue.migrate().await.unwrap();
    let running = (0..50)
        .map(|n| NewJob::new("a", &json!({ "n": n })).unwrap())
        .collect();
    crate::enqueue_all(&queue, &db, running).await;
    assert_eq!(queue.claim("w", 50, None).await.unwrap().len(), 50);
    crate::analyze_jobs(&queue, &db).await;
    let later = Utc::now() + Span::hours(1);
    let pending = (0..5_000)
        .map(|n| NewJob::new("b", &json!({ "n": n })).unwrap().run_at(later))
        .collect();
    let ids = crate::enqueue_all(&queue, &db, pending).await;

    assert_eq!(queue.withdraw(&[ids[0]]).await.unwrap(), vec![ids[0]]);
    let moved = queue
        .reschedule(&[(ids[1], later + Span::hours(1))])
        .await
        .unwrap();
    assert_eq!(moved, vec![ids[1]]);

    let plans = neo_testkit::generic_plans(
        db.pool(),
        &["DELETE FROM%has_dependents%", "WITH moved AS (UPDATE%"],
        |statement| {
            if statement.starts_with("DELETE") {
                format!("'{{{}}}'", ids[2])
            } else {
                format!("'{{{}}}', '{{{later}}}', 'channel'", ids[3])
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(plans.len(), 2, "the withdraw and the reschedule: {plans:?}");
    for (statement, plan) in plans {
        assert!(
            plan.contains("jobs_pkey") && !plan.contains("jobs_claim"),
            "{statement}\n{plan}"
        );
    }
}

/// Each job moves to its own time whatever the order the jobs are given in: of 40 pending
/// jobs given in no order, those given now are due and the others wait. The statement finds
/// each job's time by a binary search of the ids, which the queue sorts first; a job given
/// twice moves to the later time.
#[tokio::test]
async fn each_job_moves_to_its_own_time_whatever_the_order_given() {
    let (_t, db, queue) = crate::setup(PgRoute::Direct, |c| c).await;
    let later = Utc::now() + Span::hours(1);
    let jobs = (0..40)
        .map(|n| NewJob::new("a", &json!({ "n": n })).unwrap().run_at(later))
        .collect();
    let ids = crate::enqueue_all(&queue, &db, jobs).await;
    let now = Utc::now();
    // Every third job now, the others two hours later, given from the last to the first; the
    // first job twice, now and later.
    let mut moves: Vec<(JobId, chrono::DateTime<Utc>)> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            (
                *id,
                if n % 3 == 0 {
                    now
                } else {
                    later + Span::hours(1)
                },
            )
        })
        .rev()
        .collect();
    moves.push((ids[0], later));
    assert_eq!(
        queue.reschedule(&moves).await.unwrap().len(),
        40,
        "each job once"
    );
    let mut due: Vec<JobId> = queue
        .claim("w", 100, None)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    due.sort_unstable();
    let mut expected: Vec<JobId> = ids
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 3 == 0 && *n != 0)
        .map(|(_, id)| *id)
        .collect();
    expected.sort_unstable();
    assert_eq!(due, expected);
}
