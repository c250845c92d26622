//! Primary failover under write load: writers insert through a neo-db pool whose URL names
//! both servers with `target_session_attrs=read-write`; the primary is killed and the
//! replica promoted (`pg_ctl promote`). Prints and asserts the seconds until writes resume,
//! the writes that failed beyond the retry budget, and the acknowledged writes missing on
//! the new primary (none may be, with a synchronous standby).

use neo_commons::db::{Db, DbConfig, FailoverConfig};
use neo_testkit::{PgReplicaOptions, PgReplicaPair};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Writers inserting at once.
const WRITERS: usize = 4;
/// How long one write is retried (every `RETRY_PAUSE`) before its caller sees the error.
const RETRY_BUDGET: Duration = Duration::from_secs(15);
const RETRY_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct Report {
    acknowledged: usize,
    resumed_after: Duration,
    failed_beyond_budget: u64,
    retried_attempts: u64,
    lost: usize,
}

/// One write with retries: `Ok` once it committed, `Err` when the budget ran out.
async fn write_with_retries(db: &Db, id: i64, retried: &AtomicU64) -> Result<(), sqlx::Error> {
    let started = Instant::now();
    loop {
        // Client-chosen ids make a retry of a write whose commit was not acknowledged
        // harmless.
        let outcome = sqlx::query(
            "INSERT INTO writes (id, at) VALUES ($1, clock_timestamp()) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .execute(db.pool())
        .await;
        match outcome {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() >= RETRY_BUDGET => return Err(e),
            Err(_) => {
                retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

async fn failover_under_load(synchronous: bool) -> Report {
    let pair = tokio::task::spawn_blocking(move || {
        PgReplicaPair::start_with(PgReplicaOptions {
            synchronous,
            ..PgReplicaOptions::default()
        })
    })
    .await
    .unwrap()
    .unwrap();
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        pair.primary().port(),
        pair.replica().port()
    );
    let new_primary_url = pair.replica().url();
    let db = Db::connect(&DbConfig {
        max_connections: 8,
        acquire_timeout: Duration::from_secs(3),
        failover: FailoverConfig {
            check_interval: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
        },
        ..DbConfig::with_url(url)
    })
    .await
    .unwrap();
    sqlx::query("CREATE TABLE writes (id int8 PRIMARY KEY, at timestamptz NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();

    let next_id = Arc::new(AtomicI64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (db, next_id, stop, acked, failed, retried) = (
                db.clone(),
                Arc::clone(&next_id),
                Arc::clone(&stop),
                Arc::clone(&acked),
                Arc::clone(&failed),
                Arc::clone(&retried),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    match write_with_retries(&db, id, &retried).await {
                        Ok(()) => acked.lock().unwrap().push((id, Instant::now())),
                        Err(e) => {
                            println!("write {id} failed beyond the retry budget: {e}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_kill = acked.lock().unwrap().len();
    assert!(before_kill > 0, "writes flow before the failover");
    let (pair, killed_at) = tokio::task::spawn_blocking(move || {
        let mut pair = pair;
        pair.primary_mut().kill().unwrap();
        let killed_at = Instant::now();
        pair.promote().unwrap();
        (pair, killed_at)
    })
    .await
    .unwrap();
    // Keep writing until writes resumed, then two seconds more.
    let deadline = killed_at + RETRY_BUDGET + Duration::from_secs(5);
    let resumed_after = loop {
        let resumed = acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, at)| *at > killed_at)
            .map(|(_, at)| at.duration_since(killed_at))
            .min();
        if let Some(after) = resumed {
            break after;
        }
        assert!(Instant::now() < deadline, "writes never resumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }

    let acknowledged: Vec<i64> = acked.lock().unwrap().iter().map(|(id, _)| *id).collect();
    let check = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&new_primary_url)
        .await
        .unwrap();
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM writes WHERE id = ANY($1)")
        .bind(&acknowledged)
        .fetch_one(&check)
        .await
        .unwrap();
    check.close().await;
    db.close().await;
    drop(pair);
    Report {
        acknowledged: acknowledged.len(),
        resumed_after,
        failed_beyond_budget: failed.load(Ordering::Relaxed),
        retried_attempts: retried.load(Ordering::Relaxed),
        lost: acknowledged.len() - usize::try_from(found).unwrap(),
    }
}

fn print(kind: &str, report: &Report) {
    println!(
        "primary failover ({kind}): writes resumed {:.2} s after the kill (goal < 10 s); \
         {} writes acknowledged, {} lost on the new primary; {} failed beyond the {} s retry \
         budget (goal 0); {} retried attempts",
        report.resumed_after.as_secs_f64(),
        report.acknowledged,
        report.lost,
        report.failed_beyond_budget,
        RETRY_BUDGET.as_secs(),
        report.retried_attempts
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_synchronous_standby_writes_resume_on_the_promoted_replica_and_none_is_lost() {
    let report = failover_under_load(true).await;
    print("synchronous standby", &report);
    assert!(report.resumed_after < Duration::from_secs(10), "{report:?}");
    assert_eq!(report.failed_beyond_budget, 0, "{report:?}");
    assert_eq!(report.lost, 0, "acknowledged writes lost: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_asynchronous_standby_writes_resume_and_the_loss_is_reported() {
    // Asynchronous replication may lose the writes acknowledged in the last moments before
    // the kill that the replica had not received: reported, not asserted.
    let report = failover_under_load(false).await;
    print("asynchronous standby", &report);
    assert!(report.resumed_after < Duration::from_secs(10), "{report:?}");
    assert_eq!(report.failed_beyond_budget, 0, "{report:?}");
}
