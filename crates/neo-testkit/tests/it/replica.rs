//! A primary with a streaming replica: replication, paused replay, synchronous standby,
//! promotion.

use neo_testkit::{PgReplicaOptions, PgReplicaPair};
use sqlx::Row as _;
use std::time::Duration;

async fn scalar_i64(url: &str, sql: &'static str) -> i64 {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    let value: i64 = sqlx::query(sql).fetch_one(&pool).await.unwrap().get(0);
    pool.close().await;
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_pair_replicates_a_test_database() {
    let pair = neo_testkit::postgres_replicated().await;
    let db = pair.database().await.unwrap();
    let primary = db.primary().pool().await.unwrap();
    sqlx::query("CREATE TABLE t (v int)")
        .execute(&primary)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES (1), (2)")
        .execute(&primary)
        .await
        .unwrap();
    let replica = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(db.replica_url())
        .await
        .unwrap();
    let mut seen = 0_i64;
    for _ in 0..200 {
        if let Ok(row) = sqlx::query("SELECT count(*) FROM t")
            .fetch_one(&replica)
            .await
        {
            seen = row.get(0);
            if seen == 2 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, 2, "the replica shows the primary's rows");
    let recovering: bool = sqlx::query("SELECT pg_is_in_recovery()")
        .fetch_one(&replica)
        .await
        .unwrap()
        .get(0);
    assert!(recovering, "the replica is a standby");
    let write = sqlx::query("INSERT INTO t VALUES (3)")
        .execute(&replica)
        .await;
    assert!(write.is_err(), "the replica refuses writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_replay_hides_new_writes_until_resumed_and_promotion_accepts_writes() {
    let mut pair = tokio::task::spawn_blocking(|| {
        PgReplicaPair::start_with(PgReplicaOptions {
            synchronous: true,
            ..PgReplicaOptions::default()
        })
    })
    .await
    .unwrap()
    .unwrap();
    assert!(pair.is_synchronous());
    let primary = pair.primary().url();
    let replica = pair.replica().url();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&primary)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (v int)")
        .execute(&pool)
        .await
        .unwrap();
    pair.wait_caught_up(Duration::from_secs(10)).unwrap();
    pair.pause_replay().unwrap();
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(scalar_i64(&primary, "SELECT count(*) FROM t").await, 1);
    assert_eq!(
        scalar_i64(&replica, "SELECT count(*) FROM t").await,
        0,
        "replay is paused"
    );
    pair.resume_replay().unwrap();
    pair.wait_caught_up(Duration::from_secs(10)).unwrap();
    assert_eq!(scalar_i64(&replica, "SELECT count(*) FROM t").await, 1);

    pool.close().await;
    pair.primary_mut().kill().unwrap();
    pair.promote().unwrap();
    let promoted = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&replica)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES (2)")
        .execute(&promoted)
        .await
        .unwrap();
    assert_eq!(scalar_i64(&replica, "SELECT count(*) FROM t").await, 2);
}
