//! neo-queue end to end: enqueue a batch, let a worker pool claim, run no-op handlers and ack
//! in batches; next to the unbatched way (one enqueue, one claim, one ack per job).

use crate::db::bench_database_url;
use crate::{Pair, check};
use neo_db::{Db, DbConfig};
use neo_queue::{NewJob, OnDuplicate, Queue, QueueConfig, Worker, WorkerConfig};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::sync::{Notify, oneshot};

/// Jobs per iteration of the batched pair.
pub const JOBS: usize = 10_000;
/// Jobs per iteration of the unbatched baseline (slower; the ratio is per job).
const UNBATCHED_JOBS: usize = 200;

fn jobs(n: usize) -> Vec<NewJob> {
    (0..n).map(|i| check(NewJob::new("noop", &i))).collect()
}

/// A queue in its own schema on the server at `url`, migrated.
pub fn queue_on(rt: &Runtime, url: &str, schema: &str) -> (Db, Queue) {
    queue_with(
        rt,
        &DbConfig {
            max_connections: 16,
            ..DbConfig::with_url(url)
        },
        schema,
    )
}

/// A queue in its own schema on a pool built from `config`, migrated.
pub fn queue_with(rt: &Runtime, config: &DbConfig, schema: &str) -> (Db, Queue) {
    let db = check(rt.block_on(Db::connect(config)));
    let queue = check(Queue::new(
        &db,
        QueueConfig {
            schema: schema.to_owned(),
            channel: format!("{schema}_jobs"),
            ..QueueConfig::default()
        },
    ));
    check(rt.block_on(queue.migrate()));
    (db, queue)
}

/// The worker's `ack_ride_wait`: `NEO_BENCH_ACK_RIDE_WAIT_MS` when set (0: acks not riding
/// on claims), else the default.
pub fn ack_ride_wait_from_env() -> Duration {
    std::env::var("NEO_BENCH_ACK_RIDE_WAIT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(WorkerConfig::default().ack_ride_wait, Duration::from_millis)
}

/// Enqueues `n` jobs in one statement and runs them through a worker pool; returns when all
/// are acknowledged.
pub async fn run_batched(db: &Db, queue: &Queue, n: usize) {
    check(queue.enqueue_many(db, jobs(n), OnDuplicate::Skip).await);
    let count = Arc::new(AtomicUsize::new(0));
    let all = Arc::new(Notify::new());
    let (c, a) = (Arc::clone(&count), Arc::clone(&all));
    let worker = Worker::new(
        queue.clone(),
        WorkerConfig {
            concurrency: 1_000,
            claim_batch: 1_000,
            complete_batch: 1_000,
            ack_ride_wait: ack_ride_wait_from_env(),
            ..WorkerConfig::default()
        },
    )
    .handle("noop", move |_job| {
        let (c, a) = (Arc::clone(&c), Arc::clone(&a));
        async move {
            if c.fetch_add(1, Ordering::Relaxed) + 1 == n {
                a.notify_one();
            }
            Ok(())
        }
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    all.notified().await;
    let _ = stop.send(());
    let report = check(check(run.await));
    assert_eq!(report.succeeded as usize, n, "every job acknowledged once");
}

/// The pairs of this module on the server at `url`.
pub fn pairs_on(url: &str) -> Vec<Pair> {
    let rt = Rc::new(crate::runtime());
    let (db, queue) = queue_on(&rt, url, "bench_queue_batched");
    let (raw_db, raw_queue) = queue_on(&rt, url, "bench_queue_single");
    let rt_raw = Rc::clone(&rt);
    vec![Pair {
        name: "queue/end_to_end_batched_vs_unbatched",
        // Reported per job: the batched rate (target ≥ 30k jobs/s) and its ratio to one
        // enqueue, one claim and one ack per job (measured on fewer jobs: it is slow).
        target: None,
        per_iteration: Some(JOBS as u64),
        raw_per_iteration: Some(UNBATCHED_JOBS as u64),
        ours: Box::new(move || {
            rt.block_on(run_batched(&db, &queue, JOBS));
        }),
        raw: Box::new(move || {
            rt_raw.block_on(async {
                for job in jobs(UNBATCHED_JOBS) {
                    check(raw_queue.enqueue(&raw_db, job, OnDuplicate::Skip).await);
                }
                for _ in 0..UNBATCHED_JOBS {
                    let claimed = check(raw_queue.claim("single", 1, None).await);
                    check(raw_queue.ack(claimed[0].receipt()).await);
                }
            });
        }),
    }]
}

/// The pairs of this module, on the bench PostgreSQL.
pub fn pairs() -> Vec<Pair> {
    pairs_on(&bench_database_url())
}

/// Enqueue → handler start latency with LISTEN/NOTIFY, one job at a time, `samples` times:
/// returns the sorted latencies.
pub fn start_latencies(url: &str, samples: usize) -> Vec<Duration> {
    let rt = crate::runtime();
    let (db, queue) = queue_on(&rt, url, "bench_queue_latency");
    rt.block_on(async {
        let started = Arc::new(Notify::new());
        let signal = Arc::clone(&started);
        let worker = Worker::new(
            queue.clone(),
            WorkerConfig {
                poll_interval: Duration::from_secs(60),
                ..WorkerConfig::default()
            },
        )
        .handle("noop", move |_job| {
            let signal = Arc::clone(&signal);
            async move {
                signal.notify_one();
                Ok(())
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let run = tokio::spawn(worker.run(async {
            let _ = stopped.await;
        }));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut latencies = Vec::with_capacity(samples);
        for i in 0..samples {
            let at = Instant::now();
            check(
                queue
                    .enqueue(&db, check(NewJob::new("noop", &i)), OnDuplicate::Skip)
                    .await,
            );
            started.notified().await;
            latencies.push(at.elapsed());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = stop.send(());
        check(check(run.await));
        latencies.sort();
        latencies
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pair runs against the test PostgreSQL, and the latency probe measures something.
    #[test]
    fn the_queue_pair_and_latency_probe_run() {
        let rt = check(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
        );
        let test_db = rt.block_on(neo_testkit::postgres());
        let rt2 = crate::runtime();
        let (db, queue) = queue_on(&rt2, test_db.url(), "probe");
        rt2.block_on(run_batched(&db, &queue, 500));
        let latencies = start_latencies(test_db.url(), 5);
        assert_eq!(latencies.len(), 5);
        assert!(latencies[4] < Duration::from_secs(5), "{latencies:?}");
    }
}
