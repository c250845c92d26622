//! Dedicated servers that a test stops, kills and restarts.

use neo_testkit::{PgServer, RedisServer};
use redis::AsyncCommands as _;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_committed_data_across_stop_kill_and_restart() {
    let mut server = tokio::task::spawn_blocking(PgServer::start)
        .await
        .unwrap()
        .unwrap();
    let url = server.url();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&url)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (v int)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&pool)
        .await
        .unwrap();

    server.stop().unwrap();
    assert!(!server.is_running());
    let down = sqlx::query("SELECT 1").execute(&pool).await;
    assert!(down.is_err(), "queries fail while the server is down");

    server.restart().unwrap();
    sqlx::query("INSERT INTO t VALUES (2)")
        .execute(&pool)
        .await
        .unwrap();
    server.kill().unwrap();
    server.restart().unwrap();
    let total: i64 = sqlx::query_scalar("SELECT sum(v) FROM t")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        total, 3,
        "the pool reconnects and committed rows survive a crash"
    );
    assert_eq!(server.url(), url, "same port after restart");
}

#[tokio::test]
async fn redis_goes_away_and_comes_back_empty_on_the_same_port() {
    let mut server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap()
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let () = conn.set("k", "v").await.unwrap();
    server.kill().unwrap();
    assert!(!server.is_running());
    let down: redis::RedisResult<Option<String>> = conn.get("k").await;
    assert!(down.is_err(), "commands fail while the server is down");
    server.restart().unwrap();
    assert!(server.is_running());
    let mut fresh = client.get_multiplexed_async_connection().await.unwrap();
    let value: Option<String> = fresh.get("k").await.unwrap();
    assert_eq!(value, None, "persistence is off: a restart starts empty");
}

#[test]
fn dropping_a_server_stops_it_and_deletes_its_data() {
    let server = RedisServer::start().unwrap();
    let port = server.port();
    drop(server);
    let refused = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(refused.is_err(), "port {port} still answers after drop");
}
