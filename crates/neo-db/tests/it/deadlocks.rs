//! Real deadlocks and serialization failures retried by `transaction_with_retry`, and real
//! blocking chains ended by the lock resolver.

use crate::setup;
use futures_util::future::BoxFuture;
use neo_db::diagnostics::lock_waits;
use neo_db::{
    Db, Isolation, LockResolver, LockResolverConfig, ResolverAction, TransactionRetryConfig,
};
use neo_testkit::PgRoute;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

const ROWS: &str = "CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL DEFAULT 0);
                    INSERT INTO counters (id) VALUES (1), (2)";

fn retry(max_attempts: u32) -> TransactionRetryConfig {
    TransactionRetryConfig {
        max_attempts,
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        budget: Duration::from_secs(20),
        isolation: Isolation::ReadCommitted,
    }
}

/// Increments row `first` then row `second` in one transaction; on their first attempts
/// (1 and 2 of the shared count) both sides meet at `barrier` holding their first lock, so
/// the opposite orders deadlock.
async fn opposite_order(
    db: Db,
    config: TransactionRetryConfig,
    barrier: Arc<Barrier>,
    attempts: Arc<AtomicU32>,
    first: i32,
    second: i32,
) -> neo_db::Result<()> {
    db.transaction_with_retry_using(&config, move |tx| {
        let (barrier, attempts) = (Arc::clone(&barrier), Arc::clone(&attempts));
        Box::pin(async move {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            sqlx::query("UPDATE counters SET n = n + 1 WHERE id = $1")
                .bind(first)
                .execute(&mut *tx)
                .await?;
            if attempt <= 2 {
                barrier.wait().await;
            }
            sqlx::query("UPDATE counters SET n = n + 1 WHERE id = $1")
                .bind(second)
                .execute(&mut *tx)
                .await?;
            Ok(())
        })
    })
    .await
}

async fn deadlock(
    config: TransactionRetryConfig,
) -> (Vec<neo_db::Result<()>>, u32, Db, neo_testkit::TestDatabase) {
    let (t, db) = setup(PgRoute::Direct, &[ROWS]).await;
    let barrier = Arc::new(Barrier::new(2));
    let attempts = Arc::new(AtomicU32::new(0));
    let a = tokio::spawn(opposite_order(
        db.clone(),
        config,
        Arc::clone(&barrier),
        Arc::clone(&attempts),
        1,
        2,
    ));
    let b = tokio::spawn(opposite_order(
        db.clone(),
        config,
        Arc::clone(&barrier),
        Arc::clone(&attempts),
        2,
        1,
    ));
    let results = vec![a.await.unwrap(), b.await.unwrap()];
    (results, attempts.load(Ordering::SeqCst), db, t)
}

#[tokio::test]
async fn a_real_deadlock_aborts_one_side_with_40p01_without_retries() {
    let (results, attempts, _db, _t) = deadlock(retry(1)).await;
    assert_eq!(attempts, 2);
    let victims: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(victims.len(), 1, "{results:?}");
    assert_eq!(victims[0].sqlstate(), Some("40P01"));
    assert!(neo_core::HasErrorKind::is_retryable(victims[0]));
}

#[tokio::test]
async fn the_deadlock_victim_is_run_again_and_both_transactions_commit() {
    let (results, attempts, db, _t) = deadlock(retry(5)).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(attempts, 3, "the victim ran twice");
    let counts = counters(&db).await;
    assert_eq!(counts, [2, 2], "both transactions' increments, once each");
}

#[tokio::test]
async fn serialization_failures_are_retried_at_serializable() {
    let (_t, db) = setup(PgRoute::Direct, &[ROWS]).await;
    let config = TransactionRetryConfig {
        isolation: Isolation::Serializable,
        ..retry(5)
    };
    let barrier = Arc::new(Barrier::new(2));
    let attempts = Arc::new(AtomicU32::new(0));
    // Write skew: each reads the sum of both rows and writes it into its own row.
    let side = |id: i32| {
        let (db, barrier, attempts) = (db.clone(), Arc::clone(&barrier), Arc::clone(&attempts));
        tokio::spawn(async move {
            db.transaction_with_retry_using(&config, move |tx| {
                let (barrier, attempts) = (Arc::clone(&barrier), Arc::clone(&attempts));
                Box::pin(async move {
                    let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                    let sum: i64 = sqlx::query_scalar("SELECT sum(n) + 1 FROM counters")
                        .fetch_one(&mut *tx)
                        .await?;
                    if attempt <= 2 {
                        barrier.wait().await;
                    }
                    sqlx::query("UPDATE counters SET n = $2 WHERE id = $1")
                        .bind(id)
                        .bind(i32::try_from(sum).unwrap())
                        .execute(&mut *tx)
                        .await?;
                    Ok(())
                })
            })
            .await
        })
    };
    let (a, b) = (side(1), side(2));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    assert_eq!(attempts.load(Ordering::SeqCst), 3, "one side retried once");
    let counts = counters(&db).await;
    // Serial outcome: the first commits 1, the second reads it and writes 2.
    let mut sorted = counts.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [1, 2], "{counts:?}");
}

/// A body that always fails with SQLSTATE `code`, counting its attempts.
fn always(
    attempts: Arc<AtomicU32>,
    code: &'static str,
) -> impl for<'t> FnMut(&'t mut sqlx::PgConnection) -> BoxFuture<'t, neo_db::Result<()>> {
    move |tx| {
        let attempts = Arc::clone(&attempts);
        let sql = format!("DO $$ BEGIN RAISE EXCEPTION 'forced' USING ERRCODE = '{code}'; END $$");
        Box::pin(async move {
            attempts.fetch_add(1, Ordering::SeqCst);
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await?;
            Ok(())
        })
    }
}

#[tokio::test]
async fn retries_stop_at_the_attempts_or_the_budget_and_other_errors_are_not_retried() {
    let (_t, db) = setup(PgRoute::Direct, &[ROWS]).await;
    let attempts = Arc::new(AtomicU32::new(0));
    let error = db
        .transaction_with_retry_using(&retry(3), always(Arc::clone(&attempts), "40001"))
        .await
        .unwrap_err();
    assert_eq!(
        (error.sqlstate(), attempts.load(Ordering::SeqCst)),
        (Some("40001"), 3)
    );

    let attempts = Arc::new(AtomicU32::new(0));
    let budget = TransactionRetryConfig {
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(100),
        budget: Duration::from_millis(250),
        ..retry(100)
    };
    let started = Instant::now();
    let error = db
        .transaction_with_retry_using(&budget, always(Arc::clone(&attempts), "40P01"))
        .await
        .unwrap_err();
    assert_eq!(error.sqlstate(), Some("40P01"));
    let made = attempts.load(Ordering::SeqCst);
    assert!(
        (2..100).contains(&made),
        "{made} attempts within a 250ms budget"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    let attempts = Arc::new(AtomicU32::new(0));
    let error = db
        .transaction_with_retry_using(&retry(5), always(Arc::clone(&attempts), "23505"))
        .await
        .unwrap_err();
    assert_eq!(
        (error.sqlstate(), attempts.load(Ordering::SeqCst)),
        (Some("23505"), 1)
    );
}

/// A session of `db` that locks row `id` and then runs `pg_sleep(30)` in the same
/// transaction: an active head of a chain. Returns its pid and the task. Statements go as
/// the route allows (unnamed behind a transaction pooler, which pins the server connection
/// to the transaction: the pid is the session holding the lock).
async fn active_holder(
    db: &Db,
    id: i32,
) -> (i32, tokio::task::JoinHandle<Result<(), sqlx::Error>>) {
    let mut tx = db.begin().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .persistent(db.pooler().named_statements())
        .fetch_one(&mut **tx)
        .await
        .unwrap();
    db.statement("UPDATE counters SET n = n + 100 WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await
        .unwrap();
    let sleep = db.statement("SELECT pg_sleep(30)");
    let task = tokio::spawn(async move {
        sleep.execute(&mut **tx).await?;
        Ok(())
    });
    (pid, task)
}

/// Runs `sql` on its own, as the route allows (in a transaction behind a pooler).
async fn execute(db: &Db, sql: &'static str) -> neo_db::Result<()> {
    let mut conn = db.statement_connection().await?;
    db.statement(sql).execute(&mut *conn).await?;
    conn.finish().await
}

async fn wait_for_waiters(db: &Db, n: usize) {
    for _ in 0..200 {
        if lock_waits(db).await.unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "fewer than {n} lock waits: {:?}",
        lock_waits(db).await.unwrap()
    );
}

async fn the_resolver_cancels_the_head_of_a_long_chain_and_nothing_outside_its_database(
    route: PgRoute,
) {
    let (_t, db) = setup(route, &[ROWS]).await;
    let (_t2, other) = setup(route, &[ROWS]).await;
    let config = LockResolverConfig {
        enabled: true,
        interval: Duration::from_millis(100),
        threshold: Duration::from_millis(800),
        terminate_idle_in_transaction: false,
    };

    // Another database has its own long chain: the resolver of `db` must leave it alone.
    let (other_head, other_task) = active_holder(&other, 1).await;
    let other_waiter = {
        let other = other.clone();
        tokio::spawn(
            async move { execute(&other, "UPDATE counters SET n = n + 1 WHERE id = 1").await },
        )
    };
    wait_for_waiters(&other, 1).await;

    // Here: A holds row 1 and sleeps; B holds row 2 and waits for row 1; C waits for row 2.
    let (head, head_task) = active_holder(&db, 1).await;
    let b = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut tx = db.begin().await?;
            db.statement("UPDATE counters SET n = n + 1 WHERE id = 2")
                .execute(&mut **tx)
                .await?;
            db.statement("UPDATE counters SET n = n + 1 WHERE id = 1")
                .execute(&mut **tx)
                .await?;
            tx.commit().await
        })
    };
    wait_for_waiters(&db, 1).await;
    let c = {
        let db = db.clone();
        tokio::spawn(
            async move { execute(&db, "UPDATE counters SET n = n + 1 WHERE id = 2").await },
        )
    };
    wait_for_waiters(&db, 2).await;

    // Nothing has waited long enough yet.
    let resolver = LockResolver::new(&db, config);
    assert_eq!(resolver.resolve_once().await.unwrap(), vec![]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let resolved = resolver.resolve_once().await.unwrap();
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    let chain = &resolved[0];
    assert_eq!(
        (chain.blocker_pid, chain.action),
        (head, ResolverAction::Cancelled)
    );
    assert_eq!(chain.blocker_state, "active");
    assert_eq!(
        chain.waiting_pids.len(),
        2,
        "B directly and C behind B: {chain:?}"
    );
    assert!(chain.longest_wait >= Duration::from_millis(800));

    // A's statement was cancelled (57014); B and C then went through.
    let cancelled = head_task.await.unwrap().unwrap_err();
    assert_eq!(
        cancelled
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some("57014")
    );
    b.await.unwrap().unwrap();
    c.await.unwrap().unwrap();
    let counts = counters(&db).await;
    assert_eq!(counts, [1, 2], "A rolled back, B and C committed");

    // The other database's chain is untouched: its head still sleeps, its waiter still waits.
    assert!(!other_task.is_finished() && !other_waiter.is_finished());
    let waits = lock_waits(&other).await.unwrap();
    assert!(
        waits.iter().any(|w| w.blocking_pid == other_head),
        "{waits:?}"
    );
    let mut conn = other.statement_connection().await.unwrap();
    other
        .statement("SELECT pg_cancel_backend($1)")
        .bind(other_head)
        .execute(&mut *conn)
        .await
        .unwrap();
    conn.finish().await.unwrap();
    assert!(other_task.await.unwrap().is_err());
    other_waiter.await.unwrap().unwrap();
}

async fn an_idle_in_transaction_head_is_terminated_only_when_configured(route: PgRoute) {
    let (_t, db) = setup(route, &[ROWS]).await;
    let mut holder = db.begin().await.unwrap();
    let holder_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .persistent(db.pooler().named_statements())
        .fetch_one(&mut **holder)
        .await
        .unwrap();
    db.statement("UPDATE counters SET n = 100 WHERE id = 1")
        .execute(&mut **holder)
        .await
        .unwrap();
    let waiter = {
        let db = db.clone();
        tokio::spawn(
            async move { execute(&db, "UPDATE counters SET n = n + 1 WHERE id = 1").await },
        )
    };
    wait_for_waiters(&db, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let config = LockResolverConfig {
        threshold: Duration::from_millis(200),
        ..LockResolverConfig::default()
    };
    assert!(
        LockResolver::new(&db, config).spawn().is_none(),
        "off by default"
    );

    let left = LockResolver::new(&db, config).resolve_once().await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        (left[0].blocker_pid, left[0].action),
        (holder_pid, ResolverAction::Left)
    );
    assert_eq!(left[0].blocker_state, "idle in transaction");
    assert!(
        !waiter.is_finished(),
        "a cancel would do nothing: it is left and reported"
    );

    let terminating = LockResolverConfig {
        enabled: true,
        interval: Duration::from_millis(50),
        terminate_idle_in_transaction: true,
        ..config
    };
    let task = LockResolver::new(&db, terminating).spawn().unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the spawned resolver ended the chain")
        .unwrap()
        .unwrap();
    task.abort();
    assert!(
        holder.commit().await.is_err(),
        "the holder's session was terminated"
    );
    let mut conn = db.statement_connection().await.unwrap();
    let n: i32 = sqlx::query_scalar("SELECT n FROM counters WHERE id = 1")
        .persistent(db.pooler().named_statements())
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    conn.finish().await.unwrap();
    assert_eq!(n, 1);
}

neo_testkit::over_routes!(
    the_resolver_cancels_the_head_of_a_long_chain_and_nothing_outside_its_database,
    an_idle_in_transaction_head_is_terminated_only_when_configured,
);

#[test]
#[allow(clippy::result_large_err, reason = "figment's Jail API")]
fn retry_resolver_and_baseline_settings_load_from_neo_db_variables() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("NEO_DB_URL", "postgres://app@db/app");
        jail.set_env("NEO_DB_TRANSACTION_RETRY__MAX_ATTEMPTS", "7");
        jail.set_env("NEO_DB_TRANSACTION_RETRY__BUDGET", "3s");
        jail.set_env("NEO_DB_TRANSACTION_RETRY__ISOLATION", "serializable");
        jail.set_env("NEO_DB_LOCK_RESOLVER__ENABLED", "true");
        jail.set_env("NEO_DB_LOCK_RESOLVER__THRESHOLD", "1m");
        jail.set_env("NEO_DB_QUERY_BASELINES__REGRESSION_RATIO", "2.5");
        jail.set_env("NEO_DB_QUERY_BASELINES__MIN_MEAN", "5ms");
        let config = neo_db::DbConfig::from_env().unwrap();
        assert_eq!(
            config.transaction_retry,
            TransactionRetryConfig {
                max_attempts: 7,
                budget: Duration::from_secs(3),
                isolation: Isolation::Serializable,
                ..TransactionRetryConfig::default()
            }
        );
        assert_eq!(
            config.lock_resolver,
            LockResolverConfig {
                enabled: true,
                threshold: Duration::from_secs(60),
                ..LockResolverConfig::default()
            }
        );
        assert!(!LockResolverConfig::default().enabled);
        assert_eq!(config.query_baselines.regression_ratio, 2.5);
        assert_eq!(config.query_baselines.min_mean, Duration::from_millis(5));
        assert_eq!(config.query_baselines.table, "neo_query_baselines");
        Ok(())
    });
}

/// The `counters` table's values in id order, read as the route allows (an unnamed statement
/// in a transaction behind PgBouncer).
async fn counters(db: &Db) -> Vec<i32> {
    let mut conn = db.statement_connection().await.unwrap();
    let counts = sqlx::query_scalar("SELECT n FROM counters ORDER BY id")
        .persistent(db.pooler().named_statements())
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    conn.finish().await.unwrap();
    counts
}
