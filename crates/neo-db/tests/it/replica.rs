//! Read replicas (read-your-writes with replay paused, the lag bound, refusals) and failover
//! of a multi-host primary URL, on real streaming replication.

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use neo_db::{Consistency, Db, DbConfig, Error, ReadSession, ReplicaConfig};
use neo_testkit::{PgReplicaOptions, PgReplicaPair};
use sqlx::PgPool;
use std::time::{Duration, Instant};

async fn start_pair(synchronous: bool) -> PgReplicaPair {
    tokio::task::spawn_blocking(move || {
        PgReplicaPair::start_with(PgReplicaOptions {
            synchronous,
            ..PgReplicaOptions::default()
        })
    })
    .await
    .unwrap()
    .unwrap()
}

fn replicated_config(pair: &PgReplicaPair, max_lag: Duration) -> DbConfig {
    DbConfig {
        replica: ReplicaConfig {
            urls: vec![pair.replica().url().into()],
            max_lag,
            refresh_interval: Duration::from_millis(5),
            max_connections: Some(4),
        },
        max_connections: 4,
        ..DbConfig::with_url(pair.primary().url())
    }
}

async fn on_replica(pool: &PgPool) -> bool {
    sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until eventual reads are routed to the replica (its position has been read).
async fn wait_serving(db: &Db) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !on_replica(db.read_pool_for(Consistency::Eventual)).await {
        assert!(
            Instant::now() < deadline,
            "the replica never served: {:?}",
            db.replica_status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A pair of its own with a `notes` table on the primary, and a `Db` with the lag bound
/// `max_lag` whose eventual reads go to the replica (caught up and serving).
async fn notes_pair(max_lag: Duration) -> (PgReplicaPair, Db) {
    let pair = start_pair(false).await;
    let db = Db::connect(&replicated_config(&pair, max_lag))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE notes (id int PRIMARY KEY)")
        .execute(db.pool())
        .await
        .unwrap();
    let pair = on_pair(pair, |pair| {
        pair.wait_caught_up(Duration::from_secs(10)).unwrap();
    })
    .await;
    wait_serving(&db).await;
    (pair, db)
}

/// Runs `step` on the pair off the runtime (pausing, resuming and waiting block).
async fn on_pair(
    pair: PgReplicaPair,
    step: impl FnOnce(&PgReplicaPair) + Send + 'static,
) -> PgReplicaPair {
    tokio::task::spawn_blocking(move || {
        step(&pair);
        pair
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_reads_its_write_on_the_primary_while_replay_is_paused_and_others_read_the_replica()
 {
    let (pair, db) = notes_pair(Duration::from_secs(60)).await;
    // Reads without a session, before any write, go to the replica.
    let replica_count = {
        let pool = db.read_pool();
        assert!(on_replica(pool).await);
        count(pool).await
    };
    assert_eq!(replica_count, 0);

    let pair = on_pair(pair, |pair| pair.pause_replay().unwrap()).await;

    let writer = ReadSession::new();
    let other = ReadSession::new();
    writer
        .scope(async {
            sqlx::query("INSERT INTO notes VALUES (1)")
                .execute(db.pool())
                .await
                .unwrap();
            let lsn = db.wrote().await.unwrap();
            assert!(lsn.is_some(), "the write's position is recorded");
            // Its own reads go to the primary and see the write, however often it asks.
            for _ in 0..20 {
                let pool = db.read_pool();
                assert!(!on_replica(pool).await, "the writer reads on the primary");
                assert_eq!(count(pool).await, 1, "the writer sees its write");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    assert!(writer.last_write().is_some());
    other
        .scope(async {
            let pool = db.read_pool();
            assert!(on_replica(pool).await, "another caller reads the replica");
            assert_eq!(count(pool).await, 0, "which has not replayed the write yet");
        })
        .await;
    assert!(db.replica_skipped_reads() >= 20);

    // A session resumed from the writer's token (the next request) is still held back...
    let next_request = ReadSession::resume(&writer.token()).unwrap();
    let pool = next_request.scope(async { db.read_pool() }).await;
    assert!(!on_replica(pool).await);

    // ...until the replica replays past the write: then its reads go to the replica again.
    let pair = on_pair(pair, |pair| {
        pair.resume_replay().unwrap();
        pair.wait_caught_up(Duration::from_secs(10)).unwrap();
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pool = next_request.scope(async { db.read_pool() }).await;
        if on_replica(pool).await {
            assert_eq!(count(pool).await, 1, "the replica has the write");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the session never returned to the replica"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    db.close().await;
    drop(pair);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_lag_bound_is_skipped_and_reported() {
    // The lag gauge is set by the background refresh, on another thread: a global recorder
    // (each nextest test is its own process; no other test in this binary installs one).
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).unwrap();
    let (pair, db) = notes_pair(Duration::from_millis(500)).await;
    let pair = on_pair(pair, |pair| pair.pause_replay().unwrap()).await;
    // Writes keep arriving while replay is paused: the replica falls behind.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut id = 0;
    loop {
        id += 1;
        sqlx::query("INSERT INTO notes VALUES ($1)")
            .bind(id)
            .execute(db.pool())
            .await
            .unwrap();
        // Reading is what refreshes the cached replay position; a read can also go to the
        // primary for a moment while a refresh is in flight, so the loop waits for the
        // status, not for one read on the primary.
        let _ = on_replica(db.read_pool_for(Consistency::Eventual)).await;
        if db.replica_status().iter().all(|s| !s.serving) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a lagging replica kept serving: {:?}",
            db.replica_status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!on_replica(db.read_pool_for(Consistency::Eventual)).await);
    let status = db.replica_status();
    assert_eq!(status.len(), 1);
    assert!(status[0].healthy && !status[0].serving, "{status:?}");
    assert!(status[0].lag > Duration::from_millis(500), "{status:?}");
    let skipped = db.replica_skipped_reads();
    assert!(skipped >= 1);
    // ... and reported by the metrics: the lag gauge of this replica over the bound, the
    // skipped reads counted with their reason.
    let (mut lag_gauge, mut skipped_counter) = (None, 0);
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<(String, String)> = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        match (key.key().name(), value) {
            (neo_db::metric_names::REPLICA_LAG_SECONDS, DebugValue::Gauge(v))
                if labels == [("replica".to_owned(), status[0].name.clone())] =>
            {
                lag_gauge = Some(v.into_inner());
            }
            (neo_db::metric_names::REPLICA_SKIPPED_READS_TOTAL, DebugValue::Counter(n))
                if labels == [("reason".to_owned(), "lagging".to_owned())] =>
            {
                skipped_counter = n;
            }
            _ => {}
        }
    }
    let lag_gauge = lag_gauge.expect("neo_db_replica_lag_seconds{replica} was set");
    assert!(
        lag_gauge > 0.5,
        "lag gauge {lag_gauge} s, status {status:?}"
    );
    assert!(
        skipped_counter >= 1,
        "skipped reads counted: {skipped_counter}"
    );
    assert_eq!(
        count(db.read_pool_for(Consistency::Eventual)).await,
        i64::from(id)
    );

    let pair = on_pair(pair, |pair| pair.resume_replay().unwrap()).await;
    wait_serving(&db).await;
    db.close().await;
    drop(pair);
}

/// An idle spell is not lag. After seconds without a transaction, a replica that has yet to
/// replay the first new write (replay paused here, to hold that moment) reports no more lag
/// than the time since a refresh last found it caught up, and keeps serving within the bound;
/// the age of its last replayed transaction alone would read the idle spell as lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_spell_is_not_read_as_lag_when_writes_resume() {
    let max_lag = Duration::from_secs(2);
    let (pair, db) = notes_pair(max_lag).await;
    // Idle for longer than the bound; reads keep the cached position fresh.
    let idle_until = Instant::now() + max_lag + Duration::from_secs(1);
    while Instant::now() < idle_until {
        let _ = on_replica(db.read_pool_for(Consistency::Eventual)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pair = on_pair(pair, |pair| pair.pause_replay().unwrap()).await;
    sqlx::query("INSERT INTO notes VALUES (1)")
        .execute(db.pool())
        .await
        .unwrap();
    // Wait for a refresh that saw it behind (paused, with the write waiting).
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let _ = on_replica(db.read_pool_for(Consistency::Eventual)).await;
        let status = db.replica_status().remove(0);
        if status.lag > Duration::ZERO {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no refresh saw the paused replica behind: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        status.serving && status.lag < max_lag,
        "the idle spell was read as lag: {status:?}"
    );
    let pair = on_pair(pair, |pair| pair.resume_replay().unwrap()).await;
    db.close().await;
    drop(pair);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_list_naming_the_primary_is_refused() {
    let pair = neo_testkit::postgres_replicated().await;
    let primary = pair.primary_url("postgres");
    let config = |replica: String| DbConfig {
        replica: ReplicaConfig {
            urls: vec![replica.into()],
            ..ReplicaConfig::default()
        },
        ..DbConfig::with_url(primary.clone())
    };
    // The same server under another spelling of its address.
    let same = primary.replace("127.0.0.1", "localhost");
    let Err(Error::Config(message)) = Db::connect_lazy(&config(same)) else {
        panic!("the primary as a replica is refused");
    };
    assert!(
        message.contains("replica 1") && message.contains("is the primary"),
        "{message}"
    );
    // A primary under a name that differs is refused when connecting: it is not a standby.
    let other_primary = neo_testkit::postgres().await;
    let Err(Error::Config(message)) = Db::connect(&config(other_primary.url().to_owned())).await
    else {
        panic!("a replica that is not in recovery is refused");
    };
    assert!(message.contains("not a standby"), "{message}");
    // The real replica is accepted.
    let db = Db::connect(&config(pair.replica_url("postgres")))
        .await
        .unwrap();
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_host_url_with_a_read_write_target_follows_the_promoted_replica() {
    let mut pair = start_pair(true).await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        // The replica first: it is read-only, so the pool must skip it.
        pair.replica().port(),
        pair.primary().port()
    );
    let db = Db::connect(&DbConfig {
        acquire_timeout: Duration::from_secs(10),
        failover: neo_db::FailoverConfig {
            check_interval: Duration::from_millis(100),
            ..neo_db::FailoverConfig::default()
        },
        ..DbConfig::with_url(url)
    })
    .await
    .unwrap();
    assert_eq!(
        db.primary_host().unwrap(),
        format!("127.0.0.1:{}/postgres", pair.primary().port())
    );
    sqlx::query("CREATE TABLE notes (id int PRIMARY KEY)")
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query("INSERT INTO notes VALUES (1)")
        .execute(db.pool())
        .await
        .unwrap();
    let replica_port = pair.replica().port();
    let pair = tokio::task::spawn_blocking(move || {
        pair.primary_mut().kill().unwrap();
        pair.promote().unwrap();
        pair
    })
    .await
    .unwrap();
    let killed = Instant::now();
    let mut id = 2;
    loop {
        match sqlx::query("INSERT INTO notes VALUES ($1)")
            .bind(id)
            .execute(db.pool())
            .await
        {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    killed.elapsed() < Duration::from_secs(20),
                    "writes never resumed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        id += 1;
    }
    assert_eq!(
        db.primary_host().unwrap(),
        format!("127.0.0.1:{replica_port}/postgres")
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM notes WHERE id = 1")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(
        rows, 1,
        "the write acknowledged before the failover survived"
    );
    db.close().await;
    drop(pair);
}

#[cfg(feature = "env")]
#[test]
#[allow(clippy::result_large_err, reason = "figment's Jail API")]
fn replicas_and_failover_load_from_neo_db_variables_and_stay_hidden() {
    use neo_core::ExposeSecret as _;
    figment::Jail::expect_with(|jail| {
        jail.set_env(
            "NEO_DB_URL",
            "postgres://app:pw@db1:5432,db2:5432/app?target_session_attrs=read-write",
        );
        jail.set_env(
            "NEO_DB_REPLICA__URLS",
            "[\"postgres://app:hidden@r1:5432/app\", \"postgres://app:hidden@r2:5432/app\"]",
        );
        jail.set_env("NEO_DB_REPLICA__MAX_LAG", "2s");
        jail.set_env("NEO_DB_REPLICA__REFRESH_INTERVAL", "20ms");
        jail.set_env("NEO_DB_FAILOVER__CHECK_INTERVAL", "100ms");
        let config = DbConfig::from_env().unwrap();
        assert_eq!(config.replica.urls.len(), 2);
        assert_eq!(
            config.replica.urls[1].expose_secret(),
            "postgres://app:hidden@r2:5432/app"
        );
        assert_eq!(config.replica.max_lag, Duration::from_secs(2));
        assert_eq!(config.replica.refresh_interval, Duration::from_millis(20));
        assert_eq!(config.failover.check_interval, Duration::from_millis(100));
        assert!(!format!("{config:?}").contains("hidden"));
        Ok(())
    });
}

/// `(calls of statements matching pattern, calls of all other statements but this count's)`
/// that `pg_stat_statements` counted in the database of `url`.
/// Calls counted by `pg_stat_statements` in the database of `url` (its own statements left
/// out): those whose text is like `reads`, those like `refreshes`, and all others. One query,
/// so the three come from one scan: a refresh that ends while the counts are read is in
/// exactly one of them, never in one count and missing from another.
async fn calls(url: &str, reads: &str, refreshes: &str) -> Calls {
    let pool = PgPool::connect(url).await.unwrap();
    let (reads, refreshes, others) = sqlx::query_as(
        "SELECT COALESCE(sum(calls) FILTER (WHERE query LIKE $1), 0)::int8, \
                COALESCE(sum(calls) FILTER (WHERE query LIKE $2), 0)::int8, \
                COALESCE(sum(calls) FILTER (WHERE query NOT LIKE $1 AND query NOT LIKE $2), 0)::int8 \
         FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND query NOT LIKE '%pg_stat_statements%'",
    )
    .bind(reads)
    .bind(refreshes)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    Calls {
        reads,
        refreshes,
        others,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Calls {
    reads: i64,
    refreshes: i64,
    others: i64,
}

impl std::ops::Sub for Calls {
    type Output = Calls;
    fn sub(self, before: Calls) -> Calls {
        Calls {
            reads: self.reads - before.reads,
            refreshes: self.refreshes - before.refreshes,
            others: self.others - before.others,
        }
    }
}

/// What the replica bench's row measures, counted: a routed read is one statement on the
/// replica and none on the primary; the replica's replay position is read in the background
/// at most once per `refresh_interval`, not once per read.
///
/// On a replicated pair of its own: on the shared pair the statements of concurrent tests
/// could evict this database's entries from `pg_stat_statements` (it keeps
/// `pg_stat_statements.max` of them) and make a count drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_read_is_one_statement_and_the_replay_position_is_read_once_per_interval() {
    const READS: &str = "%FROM notes%";
    const REFRESHES: &str = "%pg_last_wal_replay_lsn%";
    let refresh_interval = Duration::from_millis(250);
    let pair = start_pair(false).await;
    let db = Db::connect(&DbConfig {
        replica: ReplicaConfig {
            urls: vec![pair.replica().url().into()],
            refresh_interval,
            max_connections: Some(2),
            ..ReplicaConfig::default()
        },
        max_connections: 2,
        ..DbConfig::with_url(pair.primary().url())
    })
    .await
    .unwrap();
    sqlx::raw_sql(
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; \
         CREATE TABLE notes (id int PRIMARY KEY); INSERT INTO notes VALUES (1)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let read = async || {
        sqlx::query_scalar::<_, i32>("SELECT id FROM notes WHERE id = $1")
            .bind(1)
            .fetch_one(db.read_pool())
            .await
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !on_replica(db.read_pool()).await || read().await.is_err() {
        assert!(Instant::now() < deadline, "{:?}", db.replica_status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (primary_url, replica_url) = (pair.primary().url(), pair.replica().url());
    let replica_before = calls(&replica_url, READS, REFRESHES).await;
    let primary_before = calls(&primary_url, READS, REFRESHES).await;

    // Reads for a second: several refresh intervals, each with many reads.
    let started = Instant::now();
    let mut done = 0_i64;
    while started.elapsed() < Duration::from_secs(1) {
        assert_eq!(read().await.unwrap(), 1);
        done += 1;
    }
    let elapsed = started.elapsed();

    let on_replica = calls(&replica_url, READS, REFRESHES).await - replica_before;
    let on_primary = calls(&primary_url, READS, REFRESHES).await - primary_before;
    let (reads, refreshes) = (on_replica.reads, on_replica.refreshes);
    // Each read is one statement, and every one went to the replica: the first WAL after an
    // idle spell (autovacuum's, say), received but not yet replayed, is not read as lag
    // (an_idle_spell_is_not_read_as_lag_when_writes_resume).
    assert_eq!(reads, done, "each read is one statement on the replica");
    assert_eq!(on_primary.reads, 0, "no read went to the primary");
    let most = elapsed.as_millis() as i64 / refresh_interval.as_millis() as i64 + 2;
    assert!(
        refreshes <= most,
        "{refreshes} position reads for {done} reads in {elapsed:?} (at most {most})"
    );
    assert!(
        refreshes >= 1,
        "the position was never refreshed while reads went on"
    );
    assert_eq!(on_replica.others, 0, "nothing else ran on the replica");
    assert_eq!(
        (on_primary.refreshes, on_primary.others),
        (0, 0),
        "nothing touched the primary"
    );
    #[allow(clippy::print_stdout, reason = "the test reports what it counted")]
    {
        println!("{done} routed reads in {elapsed:?}: {refreshes} replay-position reads");
    }
}
