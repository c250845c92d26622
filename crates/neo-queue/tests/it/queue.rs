use crate::{Mode, setup, setup_in};
use chrono::Utc;
use neo_core::{ErrorKind, HasErrorKind};
use neo_queue::{Error, Failure, NewJob, OnDuplicate, QueueConfig};
use neo_testkit::PgRoute;
use serde_json::json;
use std::time::Duration;

fn job(kind: &str, n: i64) -> NewJob {
    NewJob::new(kind, &json!({ "n": n })).unwrap()
}

async fn claims_by_priority_then_age_and_not_before_run_at(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let later = Utc::now() + chrono::Duration::seconds(3600);
    let ids = queue
        .enqueue_many(
            &db,
            vec![
                job("a", 1),
                job("a", 2).priority(5),
                job("a", 3).run_at(later),
                job("a", 4),
            ],
            OnDuplicate::Skip,
        )
        .await
        .unwrap();
    assert!(ids.iter().all(Option::is_some));
    let claimed = queue.claim("w", 10, None).await.unwrap();
    let order: Vec<i64> = claimed
        .iter()
        .map(|j| j.payload["n"].as_i64().unwrap())
        .collect();
    assert_eq!(
        order,
        vec![2, 1, 4],
        "priority first, the scheduled job not yet"
    );
    assert!(claimed.iter().all(|j| j.attempt == 1 && j.fence == 1));
    assert!(
        queue.claim("w2", 10, None).await.unwrap().is_empty(),
        "claimed jobs are not handed out twice"
    );

    let receipts: Vec<_> = claimed.iter().map(|j| j.receipt()).collect();
    assert!(queue.ack_many(&receipts).await.unwrap().is_empty());
    assert!(
        queue.get(claimed[0].id).await.unwrap().is_none(),
        "acked jobs are gone"
    );
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.available, depth.running, depth.dead), (1, 0, 0));
}

async fn a_job_exists_only_if_the_enqueuing_transaction_commits(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let mut uow = db.begin().await.unwrap();
    let id = queue
        .enqueue(&mut *uow, job("a", 1), OnDuplicate::Skip)
        .await
        .unwrap()
        .unwrap();
    uow.rollback().await.unwrap();
    assert!(queue.get(id).await.unwrap().is_none());

    let mut uow = db.begin().await.unwrap();
    let id = queue
        .enqueue(&mut *uow, job("a", 2), OnDuplicate::Skip)
        .await
        .unwrap()
        .unwrap();
    assert!(
        queue.claim("w", 1, None).await.unwrap().is_empty(),
        "not visible before commit"
    );
    uow.commit().await.unwrap();
    assert_eq!(queue.claim("w", 1, None).await.unwrap()[0].id, id);
}

async fn unique_keys_skip_or_refuse_duplicates_while_pending(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let first = queue
        .enqueue(&db, job("a", 1).unique_key("k1"), OnDuplicate::Skip)
        .await
        .unwrap();
    assert!(first.is_some());
    let skipped = queue
        .enqueue_many(
            &db,
            vec![
                job("a", 2).unique_key("k1"),
                job("a", 3).unique_key("k2"),
                job("a", 4).unique_key("k2"),
            ],
            OnDuplicate::Skip,
        )
        .await
        .unwrap();
    assert_eq!(
        skipped.iter().map(Option::is_some).collect::<Vec<_>>(),
        vec![false, true, false]
    );

    let err = queue
        .enqueue(&db, job("a", 5).unique_key("k1"), OnDuplicate::Error)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Duplicate { key } if key == "k1"),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);

    // Once the job is done, its key is free again.
    let claimed = queue.claim("w", 10, None).await.unwrap();
    for j in &claimed {
        queue.ack(j.receipt()).await.unwrap();
    }
    assert!(
        queue
            .enqueue(&db, job("a", 6).unique_key("k1"), OnDuplicate::Error)
            .await
            .unwrap()
            .is_some()
    );
}

async fn an_expired_claim_cannot_ack_and_the_job_is_redelivered_with_a_new_fence(
    mode: Mode,
    route: PgRoute,
) {
    let (_t, db, queue) = setup_in(mode, route, |c| QueueConfig {
        lease: Duration::from_millis(300),
        ..c
    })
    .await;
    queue
        .enqueue(&db, job("a", 1), OnDuplicate::Skip)
        .await
        .unwrap();
    let stale = queue.claim("worker-a", 1, None).await.unwrap().remove(0);
    queue.heartbeat(&[stale.receipt()]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Expired: refused even before anyone else claims it.
    let err = queue.ack(stale.receipt()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(matches!(
        queue.heartbeat(&[stale.receipt()]).await,
        Err(Error::LeaseLost { .. })
    ));

    assert_eq!(queue.rescue_expired().await.unwrap(), 1);
    let fresh = queue.claim("worker-b", 1, None).await.unwrap().remove(0);
    assert_eq!(fresh.id, stale.id);
    assert_eq!((fresh.attempt, fresh.fence), (2, 2));
    assert!(
        fresh
            .last_error
            .as_deref()
            .unwrap()
            .contains("lease expired")
    );
    assert!(matches!(
        queue.ack(stale.receipt()).await,
        Err(Error::LeaseLost { .. })
    ));
    queue.ack(fresh.receipt()).await.unwrap();
}

async fn failures_retry_with_backoff_then_go_to_the_dead_letters(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let id = queue
        .enqueue(&db, job("a", 1).max_attempts(2), OnDuplicate::Skip)
        .await
        .unwrap()
        .unwrap();
    let permanent = queue
        .enqueue(&db, job("a", 2), OnDuplicate::Skip)
        .await
        .unwrap()
        .unwrap();

    let claimed = queue.claim("w", 10, None).await.unwrap();
    let failures: Vec<Failure> = claimed
        .iter()
        .map(|j| {
            let error = format!("boom {}", j.payload["n"]);
            if j.id == permanent {
                Failure::permanent(j.receipt(), error)
            } else {
                Failure::retry(j.receipt(), error)
            }
        })
        .collect();
    assert!(queue.nack_many(&failures).await.unwrap().is_empty());

    // Retried after the backoff (200 ms ± 50 %), not before.
    assert!(queue.claim("w", 10, None).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(350)).await;
    let again = queue.claim("w", 10, None).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempt), (id, 2));
    assert_eq!(again[0].last_error.as_deref(), Some("boom 1"));
    queue
        .nack_many(&[Failure::retry(again[0].receipt(), "still broken")])
        .await
        .unwrap();

    let dead = queue.dead_letters(10).await.unwrap();
    let reasons: Vec<(&str, i32)> = dead
        .iter()
        .map(|d| (d.last_error.as_deref().unwrap(), d.attempts))
        .collect();
    assert_eq!(reasons, vec![("boom 2", 1), ("still broken", 2)]);
    assert_eq!(queue.depth().await.unwrap().dead, 2);

    assert_eq!(queue.requeue(&[id]).await.unwrap(), vec![id]);
    let back = queue.claim("w", 10, None).await.unwrap();
    assert_eq!((back[0].id, back[0].attempt), (id, 1));
}

async fn bad_jobs_and_settings_are_refused_before_writing(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    for kind in ["", "Upper", "has space", &"k".repeat(200)] {
        let err = NewJob::new(kind, &1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Validation, "{kind:?}");
    }
    let err = queue
        .enqueue(&db, job("a", 1).max_attempts(0), OnDuplicate::Skip)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation);
    assert_eq!(queue.depth().await.unwrap().available, 0);
    for bad in [
        QueueConfig {
            schema: "pg_catalog".into(),
            ..QueueConfig::default()
        },
        QueueConfig {
            channel: "no spaces".into(),
            ..QueueConfig::default()
        },
        QueueConfig {
            default_max_attempts: 0,
            ..QueueConfig::default()
        },
    ] {
        assert_eq!(
            neo_queue::Queue::new(&db, bad).unwrap_err().kind(),
            ErrorKind::Validation
        );
    }
}

async fn a_chosen_retry_delay_replaces_the_backoff_and_a_snooze_spends_no_attempt(
    mode: Mode,
    route: PgRoute,
) {
    // A backoff of an hour: only an explicit delay can bring these jobs back within the test.
    let (_t, db, queue) = setup_in(mode, route, |c| QueueConfig {
        retry_initial: Duration::from_secs(3600),
        ..c
    })
    .await;
    let ids = queue
        .enqueue_many(
            &db,
            vec![job("a", 1).max_attempts(1), job("a", 2).max_attempts(5)],
            OnDuplicate::Skip,
        )
        .await
        .unwrap();
    let (snoozed, retried) = (ids[0].unwrap(), ids[1].unwrap());
    let claimed = queue.claim("w", 10, None).await.unwrap();
    let failures: Vec<Failure> = claimed
        .iter()
        .map(|j| {
            if j.id == snoozed {
                Failure::snooze(j.receipt(), Duration::from_millis(100))
            } else {
                Failure::retry(j.receipt(), "429").retry_in(Duration::from_millis(100))
            }
        })
        .collect();
    assert!(queue.nack_many(&failures).await.unwrap().is_empty());
    assert!(queue.claim("w", 10, None).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(250)).await;
    let again = queue.claim("w", 10, None).await.unwrap();
    let by_id = |id| again.iter().find(|j| j.id == id).unwrap();
    // The snoozed job had one attempt and did not spend it, so it is not dead.
    assert_eq!(by_id(snoozed).attempt, 1);
    assert_eq!(by_id(snoozed).last_error, None);
    assert_eq!(by_id(retried).attempt, 2);
    assert_eq!(by_id(retried).last_error.as_deref(), Some("429"));
    assert_eq!(queue.depth().await.unwrap().dead, 0);
}

async fn a_typed_tenant_is_stored_as_text_and_read_back_typed(route: PgRoute) {
    let (_t, db, queue) = setup(route, |c| c).await;
    let tenant = neo_core::TenantId::new();
    let ids = queue
        .enqueue_many(
            &db,
            vec![
                job("t", 1).tenant_id(tenant),
                job("t", 2),
                job("t", 3).tenant("eu-west/acme"),
            ],
            OnDuplicate::Skip,
        )
        .await
        .unwrap();
    let stored = queue.get(ids[0].unwrap()).await.unwrap().unwrap();
    assert_eq!(stored.tenant.as_deref(), Some(tenant.to_string().as_str()));
    assert_eq!(stored.tenant_id().unwrap(), Some(tenant));

    let mut claimed = queue.claim("w", 10, None).await.unwrap();
    claimed.sort_by_key(|j| j.payload["n"].as_i64());
    assert_eq!(claimed.len(), 3);
    assert_eq!(claimed[0].tenant_id().unwrap(), Some(tenant));
    assert_eq!(
        claimed[1].tenant_id().unwrap(),
        None,
        "no tenant is no tenant"
    );
    let untyped = claimed[2].tenant_id().unwrap_err();
    assert_eq!(untyped.kind(), ErrorKind::Validation);
    assert!(untyped.to_string().contains("job tenant"), "{untyped}");
    assert_eq!(claimed[2].tenant.as_deref(), Some("eu-west/acme"));

    // A batch whose jobs name one tenant (or none) sends it once; each job still has it.
    let typed = tenant.to_string();
    for (batch, expected) in [
        (
            vec![job("t", 4).tenant_id(tenant), job("t", 5).tenant_id(tenant)],
            Some(typed.as_str()),
        ),
        (
            vec![
                job("t", 6).tenant("eu-west/acme"),
                job("t", 7).tenant("eu-west/acme"),
            ],
            Some("eu-west/acme"),
        ),
        (vec![job("t", 8), job("t", 9)], None),
        (
            vec![
                job("t", 10).tenant(typed.clone()),
                job("t", 11).tenant_id(tenant),
            ],
            Some(typed.as_str()),
        ),
    ] {
        let ids = queue
            .enqueue_many(&db, batch, OnDuplicate::Skip)
            .await
            .unwrap();
        for id in ids {
            let stored = queue.get(id.unwrap()).await.unwrap().unwrap();
            assert_eq!(stored.tenant.as_deref(), expected);
        }
    }
}

async fn only_jobs_due_now_wake_the_workers(mode: Mode, route: PgRoute) {
    let (t, db, queue) = setup_in(mode, route, |c| c).await;
    // LISTEN on the direct URL (a transaction pooler cannot keep it).
    let mut listener = sqlx::postgres::PgListener::connect(t.direct_url())
        .await
        .unwrap();
    listener.listen(&queue.config().channel).await.unwrap();
    let later = Utc::now() + chrono::Duration::seconds(3600);
    queue
        .enqueue_many(&db, vec![job("a", 1).run_at(later)], OnDuplicate::Skip)
        .await
        .unwrap();
    let woken = tokio::time::timeout(Duration::from_millis(300), listener.recv()).await;
    assert!(woken.is_err(), "a job scheduled for later woke the workers");
    queue
        .enqueue_many(
            &db,
            vec![job("a", 2).run_at(later), job("a", 3)],
            OnDuplicate::Skip,
        )
        .await
        .unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
    assert!(
        matches!(woken, Ok(Ok(_))),
        "a due job must wake the workers: {woken:?}"
    );
}

over_modes!(
    claims_by_priority_then_age_and_not_before_run_at,
    a_job_exists_only_if_the_enqueuing_transaction_commits,
    unique_keys_skip_or_refuse_duplicates_while_pending,
    an_expired_claim_cannot_ack_and_the_job_is_redelivered_with_a_new_fence,
    failures_retry_with_backoff_then_go_to_the_dead_letters,
    bad_jobs_and_settings_are_refused_before_writing,
    a_chosen_retry_delay_replaces_the_backoff_and_a_snooze_spends_no_attempt,
    only_jobs_due_now_wake_the_workers,
);

/// Tenants as free text: only without tenant isolation (an isolated queue's tenants are ids).
mod fixed_only {
    use super::a_typed_tenant_is_stored_as_text_and_read_back_typed;
    neo_testkit::over_routes!(a_typed_tenant_is_stored_as_text_and_read_back_typed);
}

/// A prepared claim switches to a generic plan while the jobs table is small (sequential
/// scans), and PostgreSQL keeps it when a burst fills the table, until the next analyze. A
/// claim that runs longer on the server than `replan_claims_after` makes the claims be
/// prepared again under a new text, so the next ones are planned for the table as it is;
/// claims that run within it keep their text. (How long a stale plan takes after a burst
/// depends on the planner's choice, measured in docs/PERFORMANCE.md; here the bound is set
/// so that the test decides which claims ran long.)
#[tokio::test]
async fn a_claim_that_ran_long_on_the_server_makes_the_claims_be_prepared_again() {
    let test_db = PgRoute::Direct.database().await;
    let db = crate::one_connection(&test_db).await;
    let prepared_claims = async |db: &neo_db::Db| -> Vec<String> {
        sqlx::query_scalar(
            "SELECT coalesce(substring(statement FROM 'neo_queue plan [0-9]+'), 'base') \
             FROM pg_prepared_statements WHERE statement LIKE '%FOR UPDATE SKIP LOCKED%' \
             AND statement NOT LIKE '%pg_prepared_statements%' \
             ORDER BY prepare_time",
        )
        .fetch_all(db.pool())
        .await
        .unwrap()
    };
    let jobs = |n: i64| (0..n).map(|n| job("noop", n)).collect::<Vec<_>>();

    // Within the bound (the default, 30 ms, far above a claim of one on a small table).
    let queue = neo_queue::Queue::new(&db, QueueConfig::default()).unwrap();
    queue.migrate().await.unwrap();
    queue
        .enqueue_many(&db, jobs(6), OnDuplicate::Error)
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(queue.claim("w", 1, None).await.unwrap().len(), 1);
    }
    // The fair claim, then (its jobs being one party's) the sole claim.
    assert_eq!(prepared_claims(&db).await, ["base", "base"]);

    // Past the bound (one microsecond: every claim that took a job ran long): each claim is
    // prepared under the next text, and every job is still claimed once.
    let queue = neo_queue::Queue::new(
        &db,
        QueueConfig {
            replan_claims_after: Duration::from_micros(1),
            ..QueueConfig::default()
        },
    )
    .unwrap();
    let mut claimed = Vec::new();
    for _ in 0..3 {
        claimed.extend(queue.claim("w", 1, None).await.unwrap());
    }
    assert_eq!(
        prepared_claims(&db).await,
        ["base", "base", "neo_queue plan 1", "neo_queue plan 2"]
    );
    assert!(queue.claim("w", 1, None).await.unwrap().is_empty());
    let ids: std::collections::BTreeSet<_> = claimed.iter().map(|job| job.id).collect();
    assert_eq!(ids.len(), 3, "each remaining job claimed once");
}

/// A fair claim reads the due jobs without a tenant from `jobs_claim_untenanted`, in claim
/// order, and stops at its limit: it does not sort every due job without a tenant, as it did
/// when it read them through `jobs_claim_by_tenant`, led by their null tenant. The plan is
/// read as PostgreSQL keeps it for the prepared claim (generic), for a table analysed while
/// it held 50 jobs and holding 5,050 when the claim was planned.
#[tokio::test]
async fn a_fair_claim_reads_the_jobs_without_a_tenant_in_claim_order() {
    let test_db = PgRoute::Direct.database().await;
    let db = crate::one_connection(&test_db).await;
    let queue = neo_queue::Queue::new(&db, QueueConfig::default()).unwrap();
    assert!(queue.config().fair_claims, "claims are fair by default");
    queue.migrate().await.unwrap();
    let jobs = |n: i64| (0..n).map(|n| job("noop", n)).collect::<Vec<_>>();
    crate::enqueue_all(&queue, &db, jobs(50)).await;
    crate::analyze_jobs(&queue, &db).await;
    crate::enqueue_all(&queue, &db, jobs(5_000)).await;
    assert_eq!(queue.claim("w", 100, None).await.unwrap().len(), 100);
    let plans = neo_testkit::generic_plans(
        db.pool(),
        &["WITH RECURSIVE tenants%FOR UPDATE SKIP LOCKED%"],
        |_| "100, 'w', 60000".to_owned(),
    )
    .await
    .unwrap();
    assert_eq!(plans.len(), 1, "the fair claim: {plans:?}");
    let (statement, plan) = &plans[0];
    // The plan's sorts are the candidates' (by turn) and the result's (by claim order), not
    // one of the jobs read from the table.
    assert!(
        plan.contains("jobs_claim_untenanted") && !plan.contains("Sort Key: j"),
        "{statement}\n{plan}"
    );
}

/// The ack, heartbeat and release read the jobs by primary key and never rescan the
/// receipts, whatever the statistics say: here the table was last analysed after a
/// drain (its pages, no job) and holds 20,000 jobs when 1,000 claims are reported. Joined to
/// the jobs, the receipts were rescanned once per job under such statistics (95 to 220 ms
/// per ack of 1,000 in the batched bench instead of 2 ms). Each plan is PostgreSQL's for
/// the statement as the call ran it (planned per call, with its values). The nack has the
/// same filter and nothing to join either; its text is longer than `pg_stat_activity` keeps.
#[tokio::test]
async fn receipts_are_probed_by_primary_key_whatever_the_statistics_say() {
    let test_db = PgRoute::Direct.database().await;
    let db = crate::one_connection(&test_db).await;
    let queue = neo_queue::Queue::new(&db, QueueConfig::default()).unwrap();
    queue.migrate().await.unwrap();
    let jobs = |n: i64| (0..n).map(|n| job("noop", n)).collect::<Vec<_>>();
    let claim_all = async |n: usize| {
        let mut receipts = Vec::new();
        while receipts.len() < n {
            let batch = queue.claim("w", n - receipts.len(), None).await.unwrap();
            assert!(!batch.is_empty(), "{n} jobs to claim");
            receipts.extend(batch.iter().map(neo_queue::Job::receipt));
        }
        receipts
    };
    crate::enqueue_all(&queue, &db, jobs(2_000)).await;
    let drained = claim_all(2_000).await;
    assert!(queue.ack_many(&drained).await.unwrap().is_empty());
    crate::analyze_jobs(&queue, &db).await;
    crate::enqueue_all(&queue, &db, jobs(20_000)).await;

    let receipts = claim_all(1_000).await;
    let list = |f: &dyn Fn(&neo_queue::Receipt) -> String| {
        receipts.iter().map(f).collect::<Vec<_>>().join(",")
    };
    let arguments = format!(
        "'{{{}}}'::uuid[], '{{{}}}'::int8[]",
        list(&|r| r.id.to_string()),
        list(&|r| r.fence.to_string())
    );
    queue.heartbeat(&receipts).await.unwrap();
    let heartbeat = custom_plan(&test_db, "%SET lease_expires_at%", &arguments, ", 60000").await;
    assert!(queue.ack_many(&receipts).await.unwrap().is_empty());
    let ack = custom_plan(&test_db, "%DELETE FROM%", &arguments, "").await;
    let released = claim_all(10).await;
    assert!(queue.release(&released).await.unwrap().is_empty());
    let release = custom_plan(&test_db, "%SET state = 'available'%", &arguments, "").await;
    for (statement, plan) in [heartbeat, ack, release] {
        assert_probes_by_primary_key(&statement, &plan);
    }
}

/// The custom plan of the statement matching `like` the queue's idle connection ran last,
/// for `receipts` (the receipts' arrays) and `more` (the rest of its arguments).
async fn custom_plan(
    test_db: &neo_testkit::TestDatabase,
    like: &str,
    receipts: &str,
    more: &str,
) -> (String, serde_json::Value) {
    neo_testkit::custom_plan_of_last(test_db.url(), like, &format!("{receipts}{more}"))
        .await
        .unwrap()
}

/// Every scan of the jobs table in `plan` reads `jobs_pkey`, and no nested loop rescans
/// the receipts (a function scan on its inner side).
fn assert_probes_by_primary_key(statement: &str, plan: &serde_json::Value) {
    fn scans(node: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
        out.push(node.clone());
        for child in node["Plans"].as_array().into_iter().flatten() {
            scans(child, out);
        }
    }
    let mut nodes = Vec::new();
    scans(plan, &mut nodes);
    for node in &nodes {
        if node["Relation Name"] == "jobs" && node["Node Type"] != "ModifyTable" {
            let index = if node["Node Type"] == "Bitmap Heap Scan" {
                &node["Plans"][0]["Index Name"]
            } else {
                &node["Index Name"]
            };
            assert!(
                index == "jobs_pkey",
                "the jobs read other than by primary key: {node:#}\n{statement}\n{plan:#}"
            );
        }
        if node["Node Type"] == "Nested Loop" {
            let mut inner = Vec::new();
            scans(&node["Plans"][1], &mut inner);
            assert!(
                inner.iter().all(|n| n["Node Type"] != "Function Scan"),
                "the receipts rescanned per job: {statement}\n{plan:#}"
            );
        }
    }
}

/// A batch of receipts in any order is matched job by job: with stale receipts (fence 1) for
/// half the jobs and current ones (fence 2) for the other half, mixed, the heartbeat, ack and
/// nack refuse exactly the stale ones. Each job finds its receipt by a binary search of the
/// ids, which the queue sends in id order; in any other order a stale receipt could be
/// checked against another receipt's fence.
#[tokio::test]
async fn receipts_in_any_order_refuse_exactly_the_stale_ones() {
    let (_t, db, short) = crate::setup(PgRoute::Direct, |c| QueueConfig {
        lease: Duration::from_millis(200),
        ..c
    })
    .await;
    let queue = neo_queue::Queue::new(
        &db,
        QueueConfig {
            lease: Duration::from_secs(60),
            ..short.config().clone()
        },
    )
    .unwrap();
    crate::enqueue_all(&queue, &db, (0..40).map(|n| job("a", n)).collect()).await;
    let first = short.claim("w", 40, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(queue.rescue_expired().await.unwrap(), 40);
    let second = queue.claim("w", 40, None).await.unwrap();
    assert!(second.iter().all(|j| j.fence == 2));

    // Stale receipts for the first 20 jobs of the second claim, current ones for the rest,
    // interleaved.
    let (stale_half, fresh_half) = second.split_at(20);
    let stale: Vec<neo_queue::Receipt> = stale_half
        .iter()
        .map(|j| first.iter().find(|f| f.id == j.id).unwrap().receipt())
        .collect();
    let fresh: Vec<neo_queue::Receipt> = fresh_half.iter().map(neo_queue::Job::receipt).collect();
    let mixed: Vec<neo_queue::Receipt> = stale
        .iter()
        .zip(&fresh)
        .flat_map(|(s, f)| [*f, *s])
        .rev()
        .collect();
    let ids = |receipts: &[neo_queue::Receipt]| {
        receipts
            .iter()
            .map(|r| r.id)
            .collect::<std::collections::BTreeSet<_>>()
    };

    match queue.heartbeat(&mixed).await {
        Err(Error::LeaseLost { ids: lost }) => {
            assert_eq!(
                lost.into_iter().collect::<std::collections::BTreeSet<_>>(),
                ids(&stale)
            );
        }
        other => panic!("the stale receipts refused: {other:?}"),
    }
    assert_eq!(ids(&queue.ack_many(&mixed).await.unwrap()), ids(&stale));
    // The jobs of the stale receipts are still held by their current ones. A nack of stale
    // receipts for ten of them and current ones for the other ten, and for one of these its
    // stale receipt too (a job's newest claim has the highest fence, and is the one matched):
    // the first ten are refused, the others nacked.
    let current = |j: &neo_queue::Job| j.receipt();
    let failures: Vec<Failure> = stale[..10]
        .iter()
        .copied()
        .chain(stale_half[10..].iter().map(current))
        .chain([stale[10]])
        .map(|r| Failure::retry(r, "failed"))
        .rev()
        .collect();
    assert_eq!(
        ids(&queue.nack_many(&failures).await.unwrap()),
        ids(&stale[..10])
    );
    for j in fresh_half {
        assert!(queue.get(j.id).await.unwrap().is_none(), "acked");
    }
    for (n, j) in stale_half.iter().enumerate() {
        let job = queue.get(j.id).await.unwrap().unwrap();
        let expected = if n < 10 {
            (
                "running",
                Some("lease expired: the worker stopped without finishing the job"),
            )
        } else {
            ("available", Some("failed"))
        };
        assert_eq!((job.state.as_str(), job.last_error.as_deref()), expected);
    }
}

/// The order the queue sends receipts in (a `JobId`'s, its UUID's bytes) is PostgreSQL's
/// order of `uuid`, which the receipts' binary search relies on.
#[tokio::test]
async fn job_ids_order_as_postgresql_orders_uuids() {
    let test_db = PgRoute::Direct.database().await;
    let db = crate::one_connection(&test_db).await;
    let mut ids: Vec<neo_core::JobId> = (0..2_000).map(|_| neo_core::JobId::new()).collect();
    let sorted_by_postgres: Vec<neo_core::JobId> =
        sqlx::query_scalar("SELECT array_agg(u ORDER BY u) FROM unnest($1::uuid[]) AS u")
            .bind(&ids)
            .fetch_one(db.pool())
            .await
            .unwrap();
    ids.sort_unstable();
    assert_eq!(ids, sorted_by_postgres);
}

/// An ack that meets heartbeats of the same claims still takes every job: the heartbeat
/// changes only the lease, and each job's row is tested again as it is when the ack reaches
/// it (fence, state, lease), so a concurrent heartbeat never makes the ack refuse a claim.
#[tokio::test]
async fn an_ack_racing_heartbeats_of_the_same_claims_takes_every_job() {
    let (_t, db, queue) = crate::setup(PgRoute::Direct, |c| c).await;
    for round in 0..5 {
        crate::enqueue_all(&queue, &db, (0..300).map(|n| job("a", n)).collect()).await;
        let receipts: Vec<neo_queue::Receipt> = queue
            .claim("w", 300, None)
            .await
            .unwrap()
            .iter()
            .map(neo_queue::Job::receipt)
            .collect();
        assert_eq!(receipts.len(), 300);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let beating = {
            let (queue, receipts, done) = (queue.clone(), receipts.clone(), done.clone());
            tokio::spawn(async move {
                let mut beats = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    // Refused once the ack has taken the jobs; only the race matters here.
                    let _ = queue.heartbeat(&receipts).await;
                    beats += 1;
                }
                beats
            })
        };
        // Let the heartbeats run before the ack meets them.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refused = queue.ack_many(&receipts).await.unwrap();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let beats = beating.await.unwrap();
        assert!(beats > 0, "round {round}: the heartbeats ran");
        assert!(refused.is_empty(), "round {round}: refused {refused:?}");
    }
}
