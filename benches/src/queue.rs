//! neo-queue end to end: enqueue a batch, let a worker pool claim, run no-op handlers and ack
//! in batches; next to the unbatched way (one enqueue, one claim, one ack per job). A
//! periodic round: one tick of 1,000 periodic jobs, next to the same jobs as one plain batch.
//! And claims under a global concurrency limit or a rate limit that never binds, next to
//! the same claims without; and an enqueue of jobs carrying their tenant, next to the same
//! jobs without one.

use crate::db::bench_database_url;
use crate::{Pair, check};
use chrono::{DateTime, TimeDelta, Utc};
use neo_db::{Db, DbConfig};
use neo_queue::{
    NewJob, OnDuplicate, Periodic, PeriodicConfig, PeriodicJobs, Queue, QueueConfig, RateLimit,
    Schedule, Worker, WorkerConfig,
};
use std::cell::Cell;
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

/// A queue in its own schema on the server at `url`, migrated, from empty tables: a schema
/// an earlier run left is dropped first (on a server kept between runs,
/// `NEO_BENCH_DATABASE_URL`, the batched pair's table otherwise carried the dead rows of the
/// runs before it: 1,034,033 dead rows after seven runs).
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
    configured_queue(rt, config, schema, |c| c)
}

/// [`queue_with`] with its queue's configuration changed by `configure`.
fn configured_queue(
    rt: &Runtime,
    config: &DbConfig,
    schema: &str,
    configure: impl FnOnce(QueueConfig) -> QueueConfig,
) -> (Db, Queue) {
    let db = check(rt.block_on(Db::connect(config)));
    rt.block_on(crate::db::drop_schemas(&db, &[schema]));
    let queue = check(Queue::new(
        &db,
        configure(QueueConfig {
            schema: schema.to_owned(),
            channel: format!("{schema}_jobs"),
            ..QueueConfig::default()
        }),
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
    let periodic = periodic_pair(&rt, url);
    let max_running = limited_claims_pair(
        &rt,
        url,
        "queue/claims_max_running_vs_unlimited",
        // Issue 30: claims with a global concurrency limit at ≥ 0.7× the unlimited rate.
        Some(1.0 / 0.7),
        |c| QueueConfig {
            max_running: Some(1_000_000_000),
            ..c
        },
    );
    let rate_limited = limited_claims_pair(
        &rt,
        url,
        "queue/claims_rate_limited_vs_unlimited",
        None,
        |c| QueueConfig {
            rate_limit: Some(RateLimit::new(1_000_000_000, Duration::from_secs(1))),
            ..c
        },
    );
    let tenant_carrying = tenant_carrying_pair(&rt, url);
    let rt_raw = Rc::clone(&rt);
    vec![
        periodic,
        max_running,
        rate_limited,
        tenant_carrying,
        Pair {
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
        },
    ]
}

/// Periodic jobs due on every tick of the periodic pair.
pub const PERIODIC_JOBS: usize = 1_000;
/// Rounds (or batches) between two truncations of the pair's jobs table, so that the table
/// does not grow through the run (the truncation is amortised over them, on both sides).
const ROUNDS_PER_TRUNCATE: u32 = 20;

/// `queue/periodic_round_1000_vs_one_batch`: a scheduler's round in which 1,000 per-minute
/// periodic jobs are due (their state read, then one statement that advances all 1,000 last
/// ticks and inserts their jobs), reported per scheduled job, next to the same 1,000 jobs
/// (unique keys included) enqueued as one plain batch: the ratio is the cost of the
/// exactly-once bookkeeping.
fn periodic_pair(rt: &Rc<Runtime>, url: &str) -> Pair {
    let (db, queue) = queue_on(rt, url, "bench_queue_periodic");
    let (raw_db, raw_queue) = queue_on(rt, url, "bench_queue_periodic_raw");
    let mut periodic = PeriodicJobs::new(queue.clone(), PeriodicConfig::default());
    let minutely = check(Schedule::cron("* * * * *"));
    for n in 0..PERIODIC_JOBS {
        periodic = check(periodic.register(check(Periodic::job(
            &format!("bench-{n}"),
            minutely.clone(),
            "noop",
            &n,
        ))));
    }
    let start = check(DateTime::parse_from_rfc3339("2001-01-01T00:00:00Z")).with_timezone(&Utc);
    check(rt.block_on(periodic.tick_at(start)));
    let now = Cell::new(start);
    let rounds = Cell::new(0u32);
    let raw_rounds = Cell::new(0u32);
    let (rt_ours, rt_raw) = (Rc::clone(rt), Rc::clone(rt));
    Pair {
        name: "queue/periodic_round_1000_vs_one_batch",
        target: None,
        per_iteration: Some(PERIODIC_JOBS as u64),
        raw_per_iteration: None,
        ours: Box::new(move || {
            now.set(now.get() + TimeDelta::minutes(1));
            rt_ours.block_on(async {
                let report = check(periodic.tick_at(now.get()).await);
                assert_eq!(
                    report.enqueued as usize, PERIODIC_JOBS,
                    "every periodic job due"
                );
                truncate_every(&db, &queue, &rounds).await;
            });
        }),
        raw: Box::new(move || {
            rt_raw.block_on(async {
                let n = raw_rounds.get();
                let jobs = (0..PERIODIC_JOBS)
                    .map(|i| check(NewJob::new("noop", &i)).unique_key(format!("batch:{n}:{i}")))
                    .collect();
                check(
                    raw_queue
                        .enqueue_many(&raw_db, jobs, OnDuplicate::Skip)
                        .await,
                );
                truncate_every(&raw_db, &raw_queue, &raw_rounds).await;
            });
        }),
    }
}

/// Jobs per iteration of the tenant-carrying pair.
const TENANT_JOBS: usize = 1_000;

/// `queue/enqueue_1000_tenant_vs_plain`: 1,000 jobs that each carry their tenant
/// (`NewJob::tenant_id`) enqueued in one batch, next to the same jobs without one, each side
/// on its own queue: the ratio is what carrying the tenant costs an enqueue (issue 34: at
/// most 2 %).
fn tenant_carrying_pair(rt: &Rc<Runtime>, url: &str) -> Pair {
    let (db, queue) = queue_on(rt, url, "bench_queue_tenant");
    let (raw_db, raw_queue) = queue_on(rt, url, "bench_queue_tenant_raw");
    let tenant = neo_core::TenantId::new();
    let (rounds, raw_rounds) = (Cell::new(0u32), Cell::new(0u32));
    let (rt_ours, rt_raw) = (Rc::clone(rt), Rc::clone(rt));
    Pair {
        name: "queue/enqueue_1000_tenant_vs_plain",
        target: Some(1.02),
        per_iteration: Some(TENANT_JOBS as u64),
        raw_per_iteration: None,
        ours: Box::new(move || {
            rt_ours.block_on(async {
                let jobs = (0..TENANT_JOBS)
                    .map(|i| check(NewJob::new("noop", &i)).tenant_id(tenant))
                    .collect();
                check(queue.enqueue_many(&db, jobs, OnDuplicate::Error).await);
                truncate_every(&db, &queue, &rounds).await;
            });
        }),
        raw: Box::new(move || {
            rt_raw.block_on(async {
                check(
                    raw_queue
                        .enqueue_many(&raw_db, jobs(TENANT_JOBS), OnDuplicate::Error)
                        .await,
                );
                truncate_every(&raw_db, &raw_queue, &raw_rounds).await;
            });
        }),
    }
}

/// Jobs claimed and acknowledged per iteration of the limited-claims pairs...
const LIMITED_CLAIMS: usize = 1_000;
/// ...in claims of this many, each acknowledged in one batch...
const CLAIM_BATCH: usize = 100;
/// ...from a backlog of this many, enqueued (after emptying the table) when the next
/// iteration would run out: the enqueue is amortised over the iterations, on both sides.
const CLAIM_BACKLOG: usize = 20_000;

/// `name`: claims of [`CLAIM_BATCH`] due jobs from a [`CLAIM_BACKLOG`] backlog, each
/// followed by the ack of its jobs, on a queue configured by `limit` (a limit that never
/// binds: both sides claim the same jobs), next to the same on a queue without it. Reported
/// per job; the ratio is the limit's cost: the claim's transaction, its advisory lock and the
/// statement's count of leases or of the window's starts.
fn limited_claims_pair(
    rt: &Rc<Runtime>,
    url: &str,
    name: &'static str,
    target: Option<f64>,
    limit: impl FnOnce(QueueConfig) -> QueueConfig,
) -> Pair {
    let pool = DbConfig {
        max_connections: 16,
        ..DbConfig::with_url(url)
    };
    let schema = name.replace(['/', '-'], "_");
    let (db, queue) = configured_queue(rt, &pool, &format!("bench_{schema}"), limit);
    let (raw_db, raw_queue) = configured_queue(rt, &pool, &format!("bench_{schema}_raw"), |c| c);
    let (left, raw_left) = (Cell::new(0), Cell::new(0));
    let (rt_ours, rt_raw) = (Rc::clone(rt), Rc::clone(rt));
    Pair {
        name,
        target,
        per_iteration: Some(LIMITED_CLAIMS as u64),
        raw_per_iteration: None,
        ours: Box::new(move || rt_ours.block_on(claim_and_ack(&db, &queue, &left))),
        raw: Box::new(move || rt_raw.block_on(claim_and_ack(&raw_db, &raw_queue, &raw_left))),
    }
}

/// One iteration of a limited-claims pair: [`LIMITED_CLAIMS`] jobs claimed and acknowledged,
/// `left` the backlog's jobs not claimed yet.
async fn claim_and_ack(db: &Db, queue: &Queue, left: &Cell<usize>) {
    if left.get() < LIMITED_CLAIMS {
        truncate(db, queue).await;
        for _ in 0..CLAIM_BACKLOG / 5_000 {
            check(queue.enqueue_many(db, jobs(5_000), OnDuplicate::Skip).await);
        }
        left.set(CLAIM_BACKLOG);
    }
    let mut claimed = 0;
    while claimed < LIMITED_CLAIMS {
        let batch = check(queue.claim("bench", CLAIM_BATCH, None).await);
        assert_eq!(batch.len(), CLAIM_BATCH, "the limit never binds");
        claimed += batch.len();
        let receipts: Vec<_> = batch.iter().map(|j| j.receipt()).collect();
        let refused = check(queue.ack_many(&receipts).await);
        assert!(refused.is_empty(), "every ack lands");
    }
    left.set(left.get() - claimed);
}

/// Empties the queue's jobs table.
async fn truncate(db: &Db, queue: &Queue) {
    let sql = format!("TRUNCATE {}.jobs", queue.config().schema);
    check(
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .persistent(false)
            .execute(db.pool())
            .await,
    );
}

/// Counts a round and empties the queue's jobs table every [`ROUNDS_PER_TRUNCATE`] rounds.
async fn truncate_every(db: &Db, queue: &Queue, rounds: &Cell<u32>) {
    rounds.set(rounds.get() + 1);
    if rounds.get().is_multiple_of(ROUNDS_PER_TRUNCATE) {
        truncate(db, queue).await;
    }
}

/// The pairs of this module, on the bench PostgreSQL.
pub fn pairs() -> Vec<Pair> {
    pairs_on(&bench_database_url())
}

/// Jobs a latency probe runs before it records: the first claims of a fresh worker prepare
/// and plan their statements on new connections, which an idle worker that has run before
/// does not (in blocks of 100 samples, each block's first job would be its p99).
pub const START_LATENCY_WARMUP: usize = 5;

/// Enqueue → handler start latency with LISTEN/NOTIFY, one job at a time, `samples` times
/// after [`START_LATENCY_WARMUP`] unrecorded ones: returns the sorted latencies.
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
        for i in 0..samples + START_LATENCY_WARMUP {
            let at = Instant::now();
            check(
                queue
                    .enqueue(&db, check(NewJob::new("noop", &i)), OnDuplicate::Skip)
                    .await,
            );
            started.notified().await;
            if i >= START_LATENCY_WARMUP {
                latencies.push(at.elapsed());
            }
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
        let rt3 = Rc::new(crate::runtime());
        let mut pair = periodic_pair(&rt3, test_db.url());
        for _ in 0..2 {
            (pair.ours)();
            (pair.raw)();
        }
        let latencies = start_latencies(test_db.url(), 5);
        assert_eq!(latencies.len(), 5);
        assert!(latencies[4] < Duration::from_secs(5), "{latencies:?}");
    }
}
