//! Noisy-neighbour fairness of neo-queue's claims: tenant A holds a large backlog while
//! tenant B enqueues one job every 10 ms. Measures B's enqueue → handler-start latency with
//! fair claims, against B alone on an idle queue and against claims that ignore tenants, and
//! the total rate of jobs run with and without fair claims.

use crate::check;
use neo_db::Db;
use neo_queue::{NewJob, OnDuplicate, Queue, QueueConfig, Worker, WorkerConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Tenant A's backlog in the full report (the figure).
pub const FULL_BACKLOG: usize = 1_000_000;
/// Tenant A's backlog in the short report (`compare --quick --markdown`).
pub const SHORT_BACKLOG: usize = 100_000;
/// How often tenant B enqueues a job.
const B_EVERY: Duration = Duration::from_millis(10);
const A: &str = "tenant-a";
const B: &str = "tenant-b";

/// What one run (or the runs of several rounds, merged) measured.
#[derive(Debug, Clone)]
pub struct Run {
    /// B's enqueue → start latencies, sorted; a job of B not started when the run ended
    /// counts as waiting until then (a lower bound of its latency).
    pub b_latencies: Vec<Duration>,
    /// B's jobs that had not started when the run ended.
    pub b_unstarted: usize,
    /// How long B's enqueue calls took (to their commit), sorted.
    pub b_enqueue: Vec<Duration>,
    /// B's latencies from the enqueue call's return to the start, of the jobs that started,
    /// sorted: the worker's part of [`b_latencies`](Self::b_latencies).
    pub b_after_enqueue: Vec<Duration>,
    /// Jobs (of both tenants) run per second over the run (the median over rounds).
    pub jobs_per_second: f64,
}

impl Run {
    /// The runs of several rounds as one: all of B's latencies, the median rate.
    fn merge(runs: &[Run]) -> Run {
        let jobs_per_second = median(runs.iter().map(|r| r.jobs_per_second).collect());
        let merged = |part: fn(&Run) -> &Vec<Duration>| {
            let mut all: Vec<Duration> = runs.iter().flat_map(|r| part(r).clone()).collect();
            all.sort();
            all
        };
        Run {
            b_latencies: merged(|r| &r.b_latencies),
            b_unstarted: runs.iter().map(|r| r.b_unstarted).sum(),
            b_enqueue: merged(|r| &r.b_enqueue),
            b_after_enqueue: merged(|r| &r.b_after_enqueue),
            jobs_per_second,
        }
    }

    /// The `q` quantile of B's latencies.
    pub fn b_quantile(&self, q: f64) -> Duration {
        crate::report::quantile(&self.b_latencies, q)
    }
}

/// The three runs the fairness rows compare.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Tenant A's backlog in the loaded runs.
    pub backlog: usize,
    /// B alone on an idle queue (fair claims).
    pub idle: Run,
    /// A's backlog and B, fair claims.
    pub fair: Run,
    /// A's backlog and B, claims that ignore tenants.
    pub unfair: Run,
    /// The median over the rounds of the rate with fair claims over the rate without.
    pub rate_ratio: f64,
}

/// Overrides the worker's `claim_batch` for a run of the fairness bench (to compare sizes).
pub const CLAIM_BATCH_VAR: &str = "NEO_BENCH_FAIR_CLAIM_BATCH";

/// Overrides the worker's `express_claim` for a run of the fairness bench (0 turns express
/// claims off, to see what they cost the fair rate and give B's latency).
pub const EXPRESS_CLAIM_VAR: &str = "NEO_BENCH_FAIR_EXPRESS_CLAIM";

/// The worker of every run: a pool of the size a service would run, otherwise the defaults
/// (claims of 500, express claims of 8); `claim_batch` from [`CLAIM_BATCH_VAR`] and
/// `express_claim` from [`EXPRESS_CLAIM_VAR`] when set.
fn worker_config() -> WorkerConfig {
    let defaults = WorkerConfig::default();
    let from_env = |var: &str| std::env::var(var).ok().and_then(|v| v.parse().ok());
    WorkerConfig {
        concurrency: 200,
        claim_batch: from_env(CLAIM_BATCH_VAR).unwrap_or(defaults.claim_batch),
        express_claim: from_env(EXPRESS_CLAIM_VAR).unwrap_or(defaults.express_claim),
        ..defaults
    }
}

/// A fresh queue in schema `schema`, migrated, with `backlog` jobs of tenant A already
/// waiting, analysed as a backlog that built up over time would be.
async fn queue_with_backlog(db: &Db, schema: &str, fair: bool, backlog: usize) -> Queue {
    crate::db::drop_schemas(db, &[schema]).await;
    let queue = check(Queue::new(
        db,
        QueueConfig {
            schema: schema.to_owned(),
            channel: format!("{schema}_jobs"),
            fair_claims: fair,
            ..QueueConfig::default()
        },
    ));
    check(queue.migrate().await);
    if backlog > 0 {
        top_up(db, schema, backlog).await;
        check(
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE {schema}.jobs")))
                .execute(db.pool())
                .await,
        );
    }
    queue
}

/// Brings tenant A's waiting jobs in `schema` back to `backlog`, older than any job of B, in
/// one statement (UUIDv7 ids, as `NewJob` makes them).
async fn top_up(db: &Db, schema: &str, backlog: usize) {
    let insert = format!(
        "INSERT INTO {schema}.jobs (id, kind, payload, max_attempts, tenant, run_at) \
         SELECT (lpad(to_hex(floor(extract(epoch FROM clock_timestamp()) * 1000)::int8), 12, '0') \
                 || '7' || substr(replace(gen_random_uuid()::text, '-', ''), 14, 19))::uuid, \
                'noop', to_jsonb(i), 8, '{A}', now() - interval '1 hour' + i * interval '1 microsecond' \
         FROM generate_series(1, $1::int8 - (SELECT count(*) FROM {schema}.jobs \
                                             WHERE state = 'available' AND tenant = '{A}')) AS i"
    );
    check(
        sqlx::query(sqlx::AssertSqlSafe(insert))
            .bind(i64::try_from(backlog).unwrap_or(i64::MAX))
            .execute(db.pool())
            .await,
    );
}

/// Runs a worker over `queue` for `length` while B enqueues one job every 10 ms.
async fn run(db: &Db, queue: &Queue, length: Duration) -> Run {
    // Per B job (by its number): when it was enqueued and when its handler started.
    let enqueued: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let mut enqueue_returned: Vec<Instant> = Vec::new();
    let started: Arc<Mutex<Vec<Option<Instant>>>> = Arc::default();
    let ran = Arc::new(AtomicU64::new(0));
    let (s, r) = (Arc::clone(&started), Arc::clone(&ran));
    let worker = Worker::new(queue.clone(), worker_config()).handle("noop", move |job| {
        let (s, r) = (Arc::clone(&s), Arc::clone(&r));
        async move {
            let at = Instant::now();
            r.fetch_add(1, Ordering::Relaxed);
            if job.tenant.as_deref() == Some(B) {
                let n = job.payload.as_u64().unwrap_or(0) as usize;
                let mut started = neo_core::sync::lock(&s);
                if started.len() <= n {
                    started.resize(n + 1, None);
                }
                started[n] = Some(at);
            }
            Ok(())
        }
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    // Let the worker listen and take its first claims before B starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ran_before = ran.load(Ordering::Relaxed);
    let began = Instant::now();
    let mut tick = tokio::time::interval(B_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0usize;
    while began.elapsed() < length {
        tick.tick().await;
        let job = check(NewJob::new("noop", &n)).tenant(B);
        neo_core::sync::lock(&enqueued).push(Instant::now());
        check(queue.enqueue(db, job, OnDuplicate::Skip).await);
        enqueue_returned.push(Instant::now());
        n += 1;
    }
    // B's last job gets the time any other had to start.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ended = Instant::now();
    let ran_during = ran.load(Ordering::Relaxed) - ran_before;
    let _ = stop.send(());
    check(check(worker.await));
    let enqueued = neo_core::sync::lock(&enqueued).clone();
    let started = neo_core::sync::lock(&started).clone();
    // When B's job `i` started, if it did before the run ended.
    let start_of = |i: usize| started.get(i).copied().flatten().filter(|s| *s <= ended);
    let mut b_unstarted = 0;
    let mut b_latencies: Vec<Duration> = enqueued
        .iter()
        .enumerate()
        .map(|(i, at)| match start_of(i) {
            Some(start) => start.saturating_duration_since(*at),
            None => {
                b_unstarted += 1;
                ended.saturating_duration_since(*at)
            }
        })
        .collect();
    b_latencies.sort();
    let mut b_enqueue: Vec<Duration> = enqueued
        .iter()
        .zip(&enqueue_returned)
        .map(|(at, returned)| returned.saturating_duration_since(*at))
        .collect();
    b_enqueue.sort();
    let mut b_after_enqueue: Vec<Duration> = enqueue_returned
        .iter()
        .enumerate()
        .filter_map(|(i, returned)| Some(start_of(i)?.saturating_duration_since(*returned)))
        .collect();
    b_after_enqueue.sort();
    Run {
        b_latencies,
        b_unstarted,
        b_enqueue,
        b_after_enqueue,
        jobs_per_second: ran_during as f64 / ended.duration_since(began).as_secs_f64(),
    }
}

/// Measures on the server at `url`, in `rounds` rounds of three runs of `length` each: B
/// alone, then A's `backlog` (topped up before each round) and B with fair claims, then with
/// claims that ignore tenants. Alternating the runs lets drift of a shared machine fall on
/// all three alike.
pub fn measure(url: &str, backlog: usize, length: Duration, rounds: usize) -> Figures {
    let rt = crate::runtime();
    rt.block_on(async {
        let db = crate::db::connect(url, 16).await;
        let schemas = ["bench_fair_idle", "bench_fair_on", "bench_fair_off"];
        let idle_queue = queue_with_backlog(&db, schemas[0], true, 0).await;
        let fair_queue = queue_with_backlog(&db, schemas[1], true, backlog).await;
        let unfair_queue = queue_with_backlog(&db, schemas[2], false, backlog).await;
        let (mut idle, mut fair, mut unfair) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds.max(1) {
            idle.push(run(&db, &idle_queue, length).await);
            top_up(&db, schemas[1], backlog).await;
            fair.push(run(&db, &fair_queue, length).await);
            top_up(&db, schemas[2], backlog).await;
            unfair.push(run(&db, &unfair_queue, length).await);
        }
        crate::db::drop_schemas(&db, &schemas).await;
        Figures {
            backlog,
            rate_ratio: median(
                fair.iter()
                    .zip(&unfair)
                    .map(|(f, u)| f.jobs_per_second / u.jobs_per_second)
                    .collect(),
            ),
            idle: Run::merge(&idle),
            fair: Run::merge(&fair),
            unfair: Run::merge(&unfair),
        }
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runs work against the test PostgreSQL and fair claims serve B despite A's backlog.
    #[test]
    fn the_fairness_runs_measure_something() {
        let rt = check(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
        );
        let test_db = rt.block_on(neo_testkit::postgres());
        let f = measure(test_db.url(), 20_000, Duration::from_millis(500), 1);
        assert!(f.idle.b_latencies.len() >= 10, "{f:?}");
        assert_eq!(f.fair.b_unstarted, 0, "{:?}", f.fair);
        assert!(f.fair.jobs_per_second > 0.0 && f.rate_ratio > 0.0, "{f:?}");
    }
}
