//! neo-queue beside the crates.io queues a user would pick instead, on the same PostgreSQL,
//! runs alternating between libraries (issue 36):
//!
//! - drain: `DRAIN_JOBS` pending no-op jobs, concurrency 32, neo's [`Worker`] against
//!   graphile_worker 0.14 with its local queue (`LocalQueueConfig::default()`, 100 jobs) and
//!   a 2 ms `complete_job_batch_delay`, the settings its guide recommends for many small jobs;
//! - enqueue: `ENQUEUE_JOBS` jobs in batches of 1,000, neo's `enqueue_many` against
//!   apalis-postgres 1.0's `push_tasks` (one UNNEST insert per batch, as its README shows);
//! - idle enqueue → start latency, one job at a time, neo against graphile (local queue).
//!
//! For exploring settings, `NEO_BENCH_PREFETCH` / `NEO_BENCH_CLAIM_BATCH` /
//! `NEO_BENCH_COMPLETE_BATCH` (neo's worker, [`WorkerConfig`]'s defaults unless set),
//! `NEO_BENCH_GRAPHILE_SIZE` (graphile's local queue, its default 100) and
//! `NEO_BENCH_DRAIN_ONLY` (skip the enqueue and latency rows), `NEO_BENCH_LATENCY_ONLY` (only
//! the idle-latency rows) override the defaults;
//! `NEO_BENCH_ACK_RIDE_WAIT_MS` sets neo's `ack_ride_wait` (0: acks not riding on claims).
//! `NEO_BENCH_DRAIN_STATS=1` prints, after each drain, what the server did for it: commits
//! (`pg_stat_database.xact_commit`) and statements (`pg_stat_statements`) per job, and each
//! statement's calls, rows per call and mean execution time.
//!
//! The times are taken inside each run (the enqueue of a drain and the workers' start-up and
//! shutdown are not counted), so these are figures rather than [`crate::Pair`]s.

use crate::check;
use crate::queue::queue_on;
use crate::report::Row;
use graphile_worker::{
    IntoTaskHandlerResult, LocalQueueConfig, RawJobSpec, TaskHandler, WorkerContext, WorkerOptions,
};
use neo_queue::{NewJob, OnDuplicate, Worker, WorkerConfig};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};

/// Jobs pending at the start of a drain.
pub const DRAIN_JOBS: usize = 50_000;
/// Jobs enqueued per enqueue run.
pub const ENQUEUE_JOBS: usize = 50_000;
/// Handlers running at once in a drain.
pub const CONCURRENCY: usize = 32;
const BATCH: usize = 1_000;

/// graphile_worker's no-op task.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Noop {
    n: usize,
}

/// What a graphile handler reports to: a count and who to wake at `target`.
#[derive(Debug, Clone)]
struct Progress {
    done: Arc<AtomicUsize>,
    target: Arc<AtomicUsize>,
    reached: Arc<Notify>,
}

impl Progress {
    fn new() -> Self {
        Progress {
            done: Arc::default(),
            target: Arc::new(AtomicUsize::new(usize::MAX)),
            reached: Arc::new(Notify::new()),
        }
    }

    /// Counts one job; wakes the waiter when the target is reached.
    fn tick(&self) {
        if self.done.fetch_add(1, Ordering::SeqCst) + 1 == self.target.load(Ordering::SeqCst) {
            self.reached.notify_one();
        }
    }

    /// Resets the count and waits for `target` more jobs from now on.
    fn expect(&self, target: usize) {
        self.done.store(0, Ordering::SeqCst);
        self.target.store(target, Ordering::SeqCst);
    }
}

impl TaskHandler for Noop {
    const IDENTIFIER: &'static str = "noop";

    async fn run(self, ctx: WorkerContext) -> impl IntoTaskHandlerResult {
        if let Some(progress) = ctx.get_ext::<Progress>() {
            progress.tick();
        }
        Ok::<(), String>(())
    }
}

async fn graphile_pool(url: &str) -> sqlx::PgPool {
    check(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await,
    )
}

/// A graphile worker on `schema` with its best documented throughput settings.
async fn graphile_worker(
    pool: &sqlx::PgPool,
    schema: &str,
    progress: &Progress,
) -> graphile_worker::Worker {
    check(
        WorkerOptions::default()
            .schema(schema)
            .concurrency(CONCURRENCY)
            .pg_pool(pool.clone())
            .listen_os_shutdown_signals(false)
            .local_queue(
                match std::env::var("NEO_BENCH_GRAPHILE_SIZE")
                    .ok()
                    .and_then(|v| v.parse().ok())
                {
                    Some(size) => LocalQueueConfig::default().with_size(size),
                    None => LocalQueueConfig::default(),
                },
            )
            .complete_job_batch_delay(Duration::from_millis(2))
            .add_extension(progress.clone())
            .define_job::<Noop>()
            .init()
            .await,
    )
}

fn graphile_jobs(from: usize, n: usize) -> Vec<RawJobSpec> {
    (from..from + n)
        .map(|n| RawJobSpec {
            identifier: Noop::IDENTIFIER.to_owned(),
            payload: serde_json::json!({ "n": n }),
            spec: graphile_worker::JobSpec::default(),
        })
        .collect()
}

/// One graphile drain of `n` pending jobs: seconds from the worker's start to the last
/// handler.
async fn graphile_drain(url: &str, n: usize) -> Duration {
    let pool = graphile_pool(url).await;
    let progress = Progress::new();
    let worker = Arc::new(graphile_worker(&pool, "bench_graphile_drain", &progress).await);
    let utils = worker.create_utils();
    for from in (0..n).step_by(BATCH) {
        check(
            utils
                .add_raw_jobs(&graphile_jobs(from, BATCH.min(n - from)))
                .await,
        );
    }
    progress.expect(n);
    let reached = progress.reached.notified();
    let started = Instant::now();
    let running = Arc::clone(&worker);
    let run = tokio::spawn(async move { running.run().await });
    reached.await;
    let took = started.elapsed();
    worker.request_shutdown();
    check(check(run.await));
    pool.close().await;
    took
}

/// One neo drain of `n` pending jobs, as [`graphile_drain`].
async fn neo_drain(db: &neo_db::Db, queue: &neo_queue::Queue, n: usize) -> Duration {
    for from in (0..n).step_by(BATCH) {
        let jobs = (from..from + BATCH.min(n - from))
            .map(|i| check(NewJob::new("noop", &serde_json::json!({ "n": i }))))
            .collect();
        check(queue.enqueue_many(db, jobs, OnDuplicate::Skip).await);
    }
    let progress = Progress::new();
    progress.expect(n);
    let reached = progress.reached.notified();
    let tick = progress.clone();
    let defaults = WorkerConfig::default();
    let env_or = |var: &str, default: usize| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let worker = Worker::new(
        queue.clone(),
        WorkerConfig {
            concurrency: CONCURRENCY,
            prefetch: env_or("NEO_BENCH_PREFETCH", defaults.prefetch),
            claim_batch: env_or("NEO_BENCH_CLAIM_BATCH", defaults.claim_batch),
            complete_batch: env_or("NEO_BENCH_COMPLETE_BATCH", defaults.complete_batch),
            ack_ride_wait: crate::queue::ack_ride_wait_from_env(),
            ..defaults
        },
    )
    .handle("noop", move |_job| {
        let tick = tick.clone();
        async move {
            tick.tick();
            Ok(())
        }
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let started = Instant::now();
    let run = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    reached.await;
    let took = started.elapsed();
    let _ = stop.send(());
    let report = check(check(run.await));
    assert_eq!(report.succeeded as usize, n, "every job acknowledged once");
    took
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn rate_row(operation: &str, ours: f64, peer: f64, goal: Option<f64>) -> Row {
    let ratio = ours / peer;
    Row {
        operation: operation.to_owned(),
        ours: format!("{ours:.0} jobs/s"),
        raw: format!("{peer:.0} jobs/s"),
        ratio: Some(ratio),
        target: goal.map_or("-".to_owned(), |g| format!("≥ {g:.2}× (neo/peer)")),
        passed: goal.map(|g| ratio >= g),
    }
}

/// What the server did during one drain: its commits and statements, read before and after.
struct ServerCounts {
    pool: sqlx::PgPool,
    commits: i64,
}

impl ServerCounts {
    /// Resets `pg_stat_statements` and reads the commit count; `None` unless
    /// `NEO_BENCH_DRAIN_STATS` is set.
    async fn start(url: &str) -> Option<Self> {
        std::env::var_os("NEO_BENCH_DRAIN_STATS")?;
        let pool = check(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await,
        );
        check(
            sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .execute(&pool)
                .await,
        );
        // Backends flush their counts at most once a second while idle.
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        check(
            sqlx::query("SELECT pg_stat_statements_reset()")
                .execute(&pool)
                .await,
        );
        let commits = Self::commits(&pool).await;
        Some(ServerCounts { pool, commits })
    }

    async fn commits(pool: &sqlx::PgPool) -> i64 {
        let mut conn = check(pool.acquire().await);
        check(
            sqlx::query("SELECT pg_stat_clear_snapshot()")
                .execute(&mut *conn)
                .await,
        );
        check(
            sqlx::query_scalar(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            )
            .fetch_one(&mut *conn)
            .await,
        )
    }

    /// Prints the drain's commits and statements per job, and its statements.
    #[allow(clippy::print_stdout, reason = "asked for with NEO_BENCH_DRAIN_STATS")]
    async fn report(self, side: &str, n: usize) {
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        let commits = Self::commits(&self.pool).await - self.commits;
        let rows: Vec<(String, i64, i64, f64)> = check(
            sqlx::query_as(
                "SELECT query, calls, rows, mean_exec_time FROM pg_stat_statements \
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND query NOT LIKE '%pg_stat%' ORDER BY calls DESC",
            )
            .fetch_all(&self.pool)
            .await,
        );
        let statements: i64 = rows.iter().map(|r| r.1).sum();
        let per_job = |x: i64| x as f64 / n as f64;
        println!(
            "{side}: {commits} commits ({:.4}/job), {statements} statements ({:.4}/job)",
            per_job(commits),
            per_job(statements)
        );
        for (query, calls, rows, mean) in rows.iter().filter(|r| r.1 > 2) {
            let query: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
            let query: String = query.chars().take(90).collect();
            println!(
                "  {calls:>6} calls {:>7.1} rows/call {mean:>7.3} ms  {query}",
                *rows as f64 / *calls as f64
            );
        }
        self.pool.close().await;
    }
}

/// [`neo_drain`] with its [`ServerCounts`] printed when asked.
async fn neo_drain_counted(
    url: &str,
    db: &neo_db::Db,
    queue: &neo_queue::Queue,
    n: usize,
) -> Duration {
    let counts = ServerCounts::start(url).await;
    let took = neo_drain(db, queue, n).await;
    if let Some(counts) = counts {
        counts.report("neo", n).await;
    }
    took
}

/// [`graphile_drain`] with its [`ServerCounts`] printed when asked.
async fn graphile_drain_counted(url: &str, n: usize) -> Duration {
    let counts = ServerCounts::start(url).await;
    let took = graphile_drain(url, n).await;
    if let Some(counts) = counts {
        counts.report("graphile", n).await;
    }
    took
}

/// `queue/drain_vs_graphile`: jobs/s of each over `runs` alternating drains of `n` jobs
/// (medians), and neo/graphile (goal ≥ 1.5); each pair's rates are printed as they come.
#[allow(
    clippy::print_stdout,
    reason = "each pair's figures, beside the medians"
)]
pub fn drain_rows(url: &str, n: usize, runs: usize) -> Vec<Row> {
    let rt = crate::runtime();
    let (db, queue) = queue_on(&rt, url, "bench_queue_drain");
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let neo = || rt.block_on(neo_drain_counted(url, &db, &queue, n));
        let graphile = || rt.block_on(graphile_drain_counted(url, n));
        let (a, b) = if run % 2 == 0 {
            let a = neo();
            (a, graphile())
        } else {
            let b = graphile();
            (neo(), b)
        };
        let (a, b) = (n as f64 / a.as_secs_f64(), n as f64 / b.as_secs_f64());
        println!(
            "drain pair {}: neo {a:.0} jobs/s, graphile {b:.0} jobs/s, {:.3}x (load {})",
            run + 1,
            a / b,
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
        ours.push(a);
        peer.push(b);
    }
    vec![rate_row(
        &format!("queue/drain_vs_graphile ({n} pending, concurrency {CONCURRENCY}, no-op)"),
        median(ours),
        median(peer),
        Some(1.5),
    )]
}

/// apalis-postgres's storage, set up on `url` (its own `apalis` schema).
async fn apalis_pool(url: &str) -> sqlx::PgPool {
    let pool = graphile_pool(url).await;
    check(apalis_postgres::PostgresStorage::<()>::setup(&pool).await);
    pool
}

async fn apalis_enqueue(pool: &sqlx::PgPool, n: usize) -> Duration {
    use apalis::prelude::TaskBuilder;
    let started = Instant::now();
    let mut conn = check(pool.acquire().await);
    for from in (0..n).step_by(BATCH) {
        let tasks: Vec<apalis_postgres::PgTask> = (from..from + BATCH.min(n - from))
            .map(|i| {
                TaskBuilder::new(check(serde_json::to_vec(&serde_json::json!({ "n": i })))).build()
            })
            .collect();
        check(apalis_postgres::queries::push_tasks(&mut *conn, "bench", tasks).await);
    }
    started.elapsed()
}

async fn neo_enqueue(db: &neo_db::Db, queue: &neo_queue::Queue, n: usize) -> Duration {
    let started = Instant::now();
    for from in (0..n).step_by(BATCH) {
        let jobs = (from..from + BATCH.min(n - from))
            .map(|i| check(NewJob::new("noop", &serde_json::json!({ "n": i }))))
            .collect();
        check(queue.enqueue_many(db, jobs, OnDuplicate::Skip).await);
    }
    started.elapsed()
}

/// `queue/enqueue_vs_apalis`: jobs/s of each over `runs` alternating runs of `n` jobs in
/// batches of 1,000 (medians), and neo/apalis. The tables are emptied between runs, untimed.
pub fn enqueue_rows(url: &str, n: usize, runs: usize) -> Vec<Row> {
    let rt = crate::runtime();
    let (db, queue) = queue_on(&rt, url, "bench_queue_enqueue");
    let pool = rt.block_on(apalis_pool(url));
    let empty = |sql: &'static str| {
        check(rt.block_on(sqlx::query(sql).execute(&pool)));
    };
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for run in 0..runs {
        empty("TRUNCATE bench_queue_enqueue.jobs");
        empty("TRUNCATE apalis.jobs CASCADE");
        let neo = || rt.block_on(neo_enqueue(&db, &queue, n));
        let apalis = || rt.block_on(apalis_enqueue(&pool, n));
        let (a, b) = if run % 2 == 0 {
            let a = neo();
            (a, apalis())
        } else {
            let b = apalis();
            (neo(), b)
        };
        ours.push(n as f64 / a.as_secs_f64());
        peer.push(n as f64 / b.as_secs_f64());
    }
    vec![rate_row(
        &format!("queue/enqueue_vs_apalis ({n} jobs, batches of {BATCH})"),
        median(ours),
        median(peer),
        None,
    )]
}

/// graphile's enqueue → handler start, one job at a time on an idle worker with its local
/// queue, `samples` times after the same warm-up as neo's: the sorted latencies.
pub fn graphile_start_latencies(url: &str, samples: usize) -> Vec<Duration> {
    let rt = crate::runtime();
    rt.block_on(async {
        let pool = graphile_pool(url).await;
        let progress = Progress::new();
        let worker = Arc::new(graphile_worker(&pool, "bench_graphile_latency", &progress).await);
        let utils = worker.create_utils();
        let running = Arc::clone(&worker);
        let run = tokio::spawn(async move { running.run().await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut latencies = Vec::with_capacity(samples);
        for i in 0..samples + crate::queue::START_LATENCY_WARMUP {
            progress.expect(1);
            let reached = progress.reached.notified();
            let at = Instant::now();
            check(utils.add_raw_jobs(&graphile_jobs(i, 1)).await);
            reached.await;
            if i >= crate::queue::START_LATENCY_WARMUP {
                latencies.push(at.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        worker.request_shutdown();
        check(check(run.await));
        latencies.sort();
        latencies
    })
}

/// Blocks the idle-latency samples are taken in, alternating neo and graphile.
const LATENCY_BLOCKS: usize = 5;

/// Idle enqueue → start p50 and p99 of neo and graphile (local queue) over `samples` jobs
/// each, taken in `LATENCY_BLOCKS` alternating blocks once the server has settled (no
/// checkpoint or autovacuum left from the drains before), so drift falls on both alike.
pub fn latency_rows(url: &str, samples: usize) -> Vec<Row> {
    crate::runtime().block_on(crate::db::settle(url, Duration::from_secs(60)));
    let block = samples.div_ceil(LATENCY_BLOCKS).max(1);
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for i in 0..LATENCY_BLOCKS {
        if i % 2 == 0 {
            ours.extend(crate::queue::start_latencies(url, block));
            peer.extend(graphile_start_latencies(url, block));
        } else {
            peer.extend(graphile_start_latencies(url, block));
            ours.extend(crate::queue::start_latencies(url, block));
        }
    }
    ours.sort();
    peer.sort();
    let at = |l: &[Duration], q: f64| l[((l.len() as f64 * q) as usize).min(l.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    [(0.5, "p50", None), (0.99, "p99", Some(4.0))]
        .into_iter()
        .map(|(q, name, goal): (f64, &str, Option<f64>)| {
            let (o, p) = (ms(at(&ours, q)), ms(at(&peer, q)));
            Row {
                operation: format!(
                    "queue idle enqueue→start {name}, neo vs graphile_worker ({samples} jobs)"
                ),
                ours: format!("{o:.2} ms"),
                raw: format!("{p:.2} ms"),
                ratio: Some(o / p),
                target: goal.map_or("-".to_owned(), |g| format!("neo ≤ {g:.0} ms")),
                passed: goal.map(|g| o <= g),
            }
        })
        .collect()
}

/// Every row of this module.
pub fn rows(url: &str, quick: bool) -> Vec<Row> {
    let (n, runs, samples) = if quick {
        (10_000, 1, 100)
    } else {
        (DRAIN_JOBS, 3, 500)
    };
    if std::env::var_os("NEO_BENCH_LATENCY_ONLY").is_some() {
        return latency_rows(url, samples);
    }
    let mut rows = drain_rows(url, n, runs);
    if std::env::var_os("NEO_BENCH_DRAIN_ONLY").is_some() {
        return rows;
    }
    rows.extend(enqueue_rows(url, n.min(ENQUEUE_JOBS), runs));
    rows.extend(latency_rows(url, samples));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each peer runs on the test PostgreSQL and every row holds a figure.
    #[test]
    fn the_peer_rows_run() {
        let rt = crate::runtime();
        let test_db = rt.block_on(neo_testkit::postgres());
        let mut rows = drain_rows(test_db.url(), 500, 1);
        rows.extend(enqueue_rows(test_db.url(), 2_000, 1));
        rows.extend(latency_rows(test_db.url(), 5));
        assert_eq!(rows.len(), 4);
        assert!(
            rows.iter().all(|r| r.ratio.is_some_and(|x| x > 0.0)),
            "{rows:?}"
        );
    }
}
