//! Periodic jobs against PostgreSQL: N schedulers racing for the same ticks enqueue each
//! once (in every mode, directly and through PgBouncer), catch-up policies after a downtime,
//! pause, one statement per round, and a scheduler killed mid-tick. Time is driven through
//! `PeriodicJobs::tick_at` (no waiting for real ticks), except in the test that runs the
//! scheduler beside workers for a few seconds.

use crate::{Mode, setup, setup_in};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use neo_core::{ErrorKind, HasErrorKind};
use neo_queue::{
    CatchUp, CronField, Error, NewJob, Periodic, PeriodicConfig, PeriodicJobs, Queue, Schedule,
    Worker, WorkerConfig,
};
use neo_testkit::PgRoute;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A periodic job whose one job's payload names it and its tick.
fn stamped(name: &str, schedule: &str) -> Periodic {
    let owner = name.to_owned();
    Periodic::each_tick(name, schedule.parse().unwrap(), move |tick| {
        Ok(vec![NewJob::new(
            "periodic.test",
            &json!({"name": owner, "tick": tick}),
        )?])
    })
    .unwrap()
}

/// Every pending job, claimed: (periodic name, tick) of each, in order.
async fn claim_all(queue: &Queue) -> Vec<(String, DateTime<Utc>)> {
    let mut all = Vec::new();
    loop {
        let jobs = queue.claim("test", 1_000, None).await.unwrap();
        if jobs.is_empty() {
            break;
        }
        for job in jobs {
            let name = job.payload["name"].as_str().unwrap().to_owned();
            let tick: DateTime<Utc> = serde_json::from_value(job.payload["tick"].clone()).unwrap();
            all.push((name, tick));
        }
    }
    all.sort();
    all
}

/// A whole minute an hour ago: ticks of per-minute crons fall on it.
fn minute_ago_hour() -> DateTime<Utc> {
    (Utc::now() - TimeDelta::hours(1))
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap()
}

fn s(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

/// Three schedulers (three registries, as three processes would have) race for five ticks of
/// a per-second cron and an interval: each tick is enqueued by exactly one of them.
async fn three_schedulers_racing_enqueue_each_tick_once(mode: Mode, route: PgRoute) {
    let (_t, _db, queue) = setup_in(mode, route, |c| c).await;
    let registry = || {
        PeriodicJobs::new(queue.clone(), PeriodicConfig::default())
            .register(stamped("sec", "* * * * * *"))
            .unwrap()
            .register(stamped("two", "every 2s"))
            .unwrap()
    };
    let schedulers = [registry(), registry(), registry()];
    let t0 = minute_ago_hour();
    for scheduler in &schedulers {
        let report = scheduler.tick_at(t0).await.unwrap();
        assert_eq!(report.enqueued, 0, "registration enqueues nothing");
    }
    for k in 1..=5 {
        let now = t0 + s(k) + TimeDelta::milliseconds(1);
        let (a, b, c) = tokio::join!(
            schedulers[0].tick_at(now),
            schedulers[1].tick_at(now),
            schedulers[2].tick_at(now)
        );
        let reports = [a.unwrap(), b.unwrap(), c.unwrap()];
        let due = if k % 2 == 0 { 2 } else { 1 };
        let enqueued: u64 = reports.iter().map(|r| r.enqueued).sum();
        assert_eq!(enqueued, due, "tick {k}: {reports:?}");
        let advanced: usize = reports.iter().map(|r| r.advanced.len()).sum();
        assert_eq!(advanced, due as usize, "tick {k}: one advance per due job");
    }
    let jobs = claim_all(&queue).await;
    let distinct: BTreeSet<_> = jobs.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        jobs.len(),
        "a tick enqueued twice: {jobs:?}"
    );
    let per_name = |name: &str| jobs.iter().filter(|(n, _)| n == name).count();
    assert_eq!((per_name("sec"), per_name("two")), (5, 2), "{jobs:?}");
    let stored = queue.periodic_jobs().await.unwrap();
    let last: BTreeMap<_, _> = stored
        .iter()
        .map(|s| (s.name.as_str(), s.last_tick))
        .collect();
    assert_eq!(last["sec"], t0 + s(5));
    assert_eq!(last["two"], t0 + s(4));
}

/// Catch-up after a ten-minute downtime of a per-minute cron: skip runs nothing (the latest
/// tick is past the grace), once runs the latest tick, all:3 the latest three, all:100 every
/// missed one. Afterwards every policy runs the next on-time tick.
async fn catch_up_policies_after_a_downtime(route: PgRoute) {
    let (_t, _db, queue) = setup(route, |c| c).await;
    let config = PeriodicConfig {
        skip_grace: Duration::from_secs(5),
        ..PeriodicConfig::default()
    };
    let periodic = PeriodicJobs::new(queue.clone(), config)
        .register(stamped("skip", "* * * * *").catch_up(CatchUp::Skip))
        .unwrap()
        .register(stamped("once", "* * * * *").catch_up(CatchUp::Once))
        .unwrap()
        .register(stamped("all3", "* * * * *").catch_up(CatchUp::All { max: 3 }))
        .unwrap()
        .register(stamped("all100", "* * * * *").catch_up(CatchUp::All { max: 100 }))
        .unwrap();
    let t0 = minute_ago_hour();
    periodic.tick_at(t0 + s(1)).await.unwrap();
    // Down from t0 + 1 s to t0 + 10 min 30 s: ticks t0 + 1 min ..= t0 + 10 min were missed.
    let report = periodic.tick_at(t0 + s(630)).await.unwrap();
    assert_eq!(report.enqueued, 1 + 3 + 10, "{report:?}");
    assert_eq!(report.advanced.len(), 4, "skip advances too: {report:?}");
    let jobs = claim_all(&queue).await;
    let ticks = |name: &str| -> Vec<i64> {
        jobs.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| (*t - t0).num_minutes())
            .collect()
    };
    assert_eq!(ticks("skip"), Vec::<i64>::new());
    assert_eq!(ticks("once"), vec![10]);
    assert_eq!(ticks("all3"), vec![8, 9, 10]);
    assert_eq!(ticks("all100"), (1..=10).collect::<Vec<_>>());
    // Back on time: the 11th minute's tick, 2 s late, runs under every policy.
    let report = periodic.tick_at(t0 + s(662)).await.unwrap();
    assert_eq!(report.enqueued, 4, "{report:?}");
    let jobs = claim_all(&queue).await;
    assert!(jobs.iter().all(|(_, t)| *t == t0 + s(660)), "{jobs:?}");
}

/// A paused periodic job passes its ticks without enqueuing (the pause persisted: another
/// registry sees it), is listed as paused with no next run, and is not caught up on resume.
async fn a_paused_periodic_job_enqueues_nothing_until_resumed(route: PgRoute) {
    let (_t, _db, queue) = setup(route, |c| c).await;
    let registry = || {
        PeriodicJobs::new(queue.clone(), PeriodicConfig::default())
            .register(stamped("p", "* * * * *").catch_up(CatchUp::All { max: 100 }))
            .unwrap()
            .register(stamped("q", "* * * * *"))
            .unwrap()
    };
    let t0 = minute_ago_hour();
    registry().tick_at(t0 + s(1)).await.unwrap();
    assert!(queue.pause_periodic("p", Some("ops")).await.unwrap());
    assert!(!queue.pause_periodic("p", None).await.unwrap(), "already");

    let other = registry();
    let listed = other.list().await.unwrap();
    let p = listed.iter().find(|s| s.name == "p").unwrap();
    assert_eq!(p.paused_by.as_deref(), Some("ops"));
    assert!(p.paused_at.is_some() && p.next_run.is_none(), "{p:?}");
    let q = listed.iter().find(|s| s.name == "q").unwrap();
    assert!(q.paused_at.is_none() && q.next_run.is_some(), "{q:?}");
    assert_eq!(q.last_tick, Some(t0 + s(1)));
    assert_eq!(q.schedule, "* * * * *");

    for minute in 1..=3 {
        let report = other.tick_at(t0 + s(60 * minute + 1)).await.unwrap();
        assert_eq!(report.paused, vec!["p".to_owned()], "{report:?}");
        assert_eq!(report.enqueued, 1, "only q: {report:?}");
    }
    assert!(queue.resume_periodic("p").await.unwrap());
    assert!(!queue.resume_periodic("p").await.unwrap(), "not paused");
    let report = other.tick_at(t0 + s(241)).await.unwrap();
    assert_eq!(report.enqueued, 2, "{report:?}");
    let jobs = claim_all(&queue).await;
    let p_ticks: Vec<_> = jobs
        .iter()
        .filter(|(n, _)| n == "p")
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(p_ticks, vec![t0 + s(240)], "paused ticks not caught up");
}

/// One round enqueuing a tick of 1,000 periodic jobs is one statement (and one more that
/// reads their state), counted by pg_stat_statements.
async fn a_tick_of_a_thousand_periodic_jobs_is_one_statement(route: PgRoute) {
    let (_t, db, queue) = setup(route, |c| c).await;
    let mut periodic = PeriodicJobs::new(queue.clone(), PeriodicConfig::default());
    for n in 0..1_000 {
        periodic = periodic
            .register(stamped(&format!("job-{n}"), "* * * * *"))
            .unwrap();
    }
    let t0 = minute_ago_hour();
    periodic.tick_at(t0 + s(1)).await.unwrap();
    let mut conn = db.statement_connection().await.unwrap();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .persistent(false)
        .execute(&mut *conn)
        .await
        .unwrap();
    conn.finish().await.unwrap();
    let counted = || async {
        let mut conn = db.statement_connection().await.unwrap();
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT query, calls FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND query LIKE '%jobs%' AND query NOT LIKE '%pg_stat_statements%'",
        )
        .persistent(false)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        conn.finish().await.unwrap();
        rows.into_iter().collect::<BTreeMap<_, _>>()
    };
    let before = counted().await;
    let report = periodic.tick_at(t0 + s(61)).await.unwrap();
    let after = counted().await;
    assert_eq!(report.enqueued, 1_000);
    assert_eq!(report.advanced.len(), 1_000);
    let ran: BTreeMap<_, _> = after
        .iter()
        .map(|(q, calls)| (q.clone(), calls - before.get(q).copied().unwrap_or(0)))
        .filter(|(_, calls)| *calls > 0)
        .collect();
    let inserts: i64 = ran
        .iter()
        .filter(|(q, _)| q.contains("INSERT INTO") && q.contains("UNNEST"))
        .map(|(_, c)| c)
        .sum();
    assert_eq!(
        ran.values().sum::<i64>(),
        2,
        "state read + enqueue: {ran:#?}"
    );
    assert_eq!(
        inserts, 2,
        "both statements write (register, enqueue): {ran:#?}"
    );
    assert!(
        ran.keys().any(|q| q.contains("WITH advanced AS")),
        "the enqueue statement ran: {ran:#?}"
    );
}

/// Fault: scheduler A dies mid-tick, its round written but not committed (its server
/// connection is killed with pg_terminate_backend while B waits on A's row locks); B then
/// enqueues the tick, and exactly once.
async fn a_scheduler_killed_mid_tick_leaves_the_tick_to_another(route: PgRoute) {
    let (_t, db, queue) = setup(route, |c| c).await;
    let registry = || {
        PeriodicJobs::new(queue.clone(), PeriodicConfig::default())
            .register(stamped("a", "* * * * *"))
            .unwrap()
            .register(stamped("b", "every 1m"))
            .unwrap()
    };
    let (a, b) = (registry(), registry());
    let t0 = minute_ago_hour();
    a.tick_at(t0 + s(1)).await.unwrap();

    let mut uow = db.begin().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .persistent(false)
        .fetch_one(&mut **uow)
        .await
        .unwrap();
    let in_flight = a.tick_in(&mut uow, t0 + s(61)).await.unwrap();
    assert_eq!(in_flight.enqueued, 2, "A wrote the tick, uncommitted");

    let b_round = tokio::spawn(async move { b.tick_at(t0 + s(61)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b_round.is_finished(), "B waits for A's row locks");

    let mut conn = db.statement_connection().await.unwrap();
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .persistent(false)
        .bind(pid)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    conn.finish().await.unwrap();
    assert!(killed);
    let report = tokio::time::timeout(Duration::from_secs(10), b_round)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.enqueued, 2, "B enqueued the tick: {report:?}");
    assert!(uow.commit().await.is_err(), "A's transaction died");

    let jobs = claim_all(&queue).await;
    assert_eq!(
        jobs,
        vec![("a".to_owned(), t0 + s(60)), ("b".to_owned(), t0 + s(60))]
    );
    // A later round of a revived A finds the tick taken.
    let again = registry().tick_at(t0 + s(62)).await.unwrap();
    assert_eq!((again.enqueued, again.advanced.len()), (0, 0), "{again:?}");
}

/// Three workers each run the scheduler of the same per-second cron for a few real seconds:
/// the handlers see every tick once.
async fn workers_running_the_scheduler_run_each_tick_once(route: PgRoute) {
    let (_t, _db, queue) = setup(route, |c| c).await;
    let seen = Arc::new(Mutex::new(Vec::<DateTime<Utc>>::new()));
    let mut stops = Vec::new();
    let mut runs = Vec::new();
    for _ in 0..3 {
        let periodic = PeriodicJobs::new(
            queue.clone(),
            PeriodicConfig {
                poll_interval: Duration::from_millis(200),
                ..PeriodicConfig::default()
            },
        )
        .register(stamped("sec", "* * * * * *"))
        .unwrap();
        let seen = Arc::clone(&seen);
        let worker = Worker::new(
            queue.clone(),
            WorkerConfig {
                poll_interval: Duration::from_millis(100),
                ..WorkerConfig::default()
            },
        )
        .periodic(periodic)
        .handle("periodic.test", move |job| {
            let tick: DateTime<Utc> = serde_json::from_value(job.payload["tick"].clone()).unwrap();
            seen.lock().unwrap().push(tick);
            async { Ok(()) }
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        runs.push(tokio::spawn(worker.run(async {
            let _ = stopped.await;
        })));
    }
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    for stop in stops {
        stop.send(()).unwrap();
    }
    for run in runs {
        run.await.unwrap().unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let distinct: BTreeSet<_> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), seen.len(), "a tick ran twice: {seen:?}");
    assert!(
        (2..=4).contains(&seen.len()),
        "about three ticks in 3.3 s: {seen:?}"
    );
}

/// Under row-level security the round runs on the system role: one periodic job may fan out
/// to several tenants' jobs in its one statement, each job keeping its tenant.
async fn a_periodic_job_fans_out_to_several_tenants_under_rls(route: PgRoute) {
    let tenants = [neo_core::TenantId::new(), neo_core::TenantId::new()];
    let (_t, _db, queue) = crate::isolated(Mode::Rls, route, |c| c, &tenants).await;
    let periodic = PeriodicJobs::new(queue.clone(), PeriodicConfig::default())
        .register(
            Periodic::each_tick("per-tenant", "* * * * *".parse().unwrap(), move |tick| {
                tenants
                    .iter()
                    .map(|t| {
                        Ok(NewJob::new(
                            "periodic.test",
                            &json!({"name": "per-tenant", "tick": tick}),
                        )?
                        .tenant_id(*t))
                    })
                    .collect()
            })
            .unwrap(),
        )
        .unwrap();
    let t0 = minute_ago_hour();
    periodic.tick_at(t0 + s(1)).await.unwrap();
    let report = periodic.tick_at(t0 + s(61)).await.unwrap();
    assert_eq!(report.enqueued, 2, "{report:?}");
    let claimed = queue.claim("test", 10, None).await.unwrap();
    let mut got: Vec<_> = claimed.iter().map(|j| j.tenant.clone().unwrap()).collect();
    let mut want: Vec<_> = tenants.iter().map(ToString::to_string).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

/// A scheduler over a queue that was never migrated refuses to start (the table is missing:
/// not an error that passes), rather than logging the same failure forever.
#[tokio::test]
async fn a_scheduler_over_an_unmigrated_queue_does_not_start() {
    let (_t, db, _queue) = setup(PgRoute::Direct, |c| c).await;
    let bare = Queue::new(
        &db,
        neo_queue::QueueConfig {
            schema: "never_migrated".to_owned(),
            ..neo_queue::QueueConfig::default()
        },
    )
    .unwrap();
    let periodic = PeriodicJobs::new(bare, PeriodicConfig::default())
        .register(stamped("x", "* * * * *"))
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), periodic.run(std::future::pending()))
        .await
        .expect("returned at once");
    assert!(matches!(result, Err(Error::Db(_))), "{result:?}");
}

#[test]
fn an_invalid_cron_is_a_validation_error_naming_the_field() {
    let error = Schedule::cron("0 25 * * *").unwrap_err();
    assert!(
        matches!(&error, Error::Cron { field: CronField::Hour, expression, .. } if expression == "0 25 * * *"),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::Validation);
    assert!(error.to_string().contains("hour field"), "{error}");
    let error = "CRON_TZ=Europe/Berlin 0 0 * 0 *"
        .parse::<Schedule>()
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Cron {
                field: CronField::Month,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        "CRON_TZ=Nowhere/Atlantis 0 0 * * *"
            .parse::<Schedule>()
            .is_err()
    );
    assert!("all:0".parse::<CatchUp>().is_err());
    assert_eq!(
        "all:24".parse::<CatchUp>().unwrap(),
        CatchUp::All { max: 24 }
    );
}

#[test]
fn periodic_config_deserializes_with_durations_and_a_catch_up_policy() {
    let config: PeriodicConfig = serde_json::from_value(json!({
        "poll_interval": "2s",
        "catch_up": "all:12",
    }))
    .unwrap();
    assert_eq!(config.poll_interval, Duration::from_secs(2));
    assert_eq!(config.catch_up, CatchUp::All { max: 12 });
    assert_eq!(config.skip_grace, PeriodicConfig::default().skip_grace);
    assert!(serde_json::from_value::<PeriodicConfig>(json!({"catch_up": "sometimes"})).is_err());
}

#[cfg(feature = "env")]
#[test]
#[allow(clippy::result_large_err, reason = "figment's Jail API")]
fn periodic_config_loads_from_neo_periodic_variables() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("NEO_PERIODIC_POLL_INTERVAL", "250ms");
        jail.set_env("NEO_PERIODIC_SKIP_GRACE", "10s");
        jail.set_env("NEO_PERIODIC_CATCH_UP", "once");
        let config = PeriodicConfig::from_env().unwrap();
        assert_eq!(
            (config.poll_interval, config.skip_grace, config.catch_up),
            (
                Duration::from_millis(250),
                Duration::from_secs(10),
                CatchUp::Once
            )
        );
        jail.set_env("NEO_PERIODIC_CATCH_UP", "all:none");
        let error = PeriodicConfig::from_env().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Validation);
        Ok(())
    });
}

#[tokio::test]
async fn a_name_is_registered_once() {
    let (_t, _db, queue) = setup(PgRoute::Direct, |c| c).await;
    let error = PeriodicJobs::new(queue, PeriodicConfig::default())
        .register(stamped("x", "* * * * *"))
        .unwrap()
        .register(stamped("x", "every 5s"))
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Invalid {
                what: "periodic job name",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        Periodic::job(
            "",
            Schedule::every(Duration::from_secs(1)).unwrap(),
            "k",
            &()
        )
        .is_err()
    );
}

over_modes!(three_schedulers_racing_enqueue_each_tick_once);

/// Direct and through PgBouncer (in a module of its own: `over_modes!` has its own `direct`).
mod routes {
    use super::*;
    neo_testkit::over_routes!(
        catch_up_policies_after_a_downtime,
        a_paused_periodic_job_enqueues_nothing_until_resumed,
        a_tick_of_a_thousand_periodic_jobs_is_one_statement,
        a_scheduler_killed_mid_tick_leaves_the_tick_to_another,
        workers_running_the_scheduler_run_each_tick_once,
        a_periodic_job_fans_out_to_several_tenants_under_rls,
    );
}
