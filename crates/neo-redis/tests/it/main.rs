//! neo-redis against a real Redis started by neo-testkit (or `NEO_TEST_REDIS_URL`).
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod cluster;
mod sentinel;
mod tls;

use neo_core::{ErrorKind, HasErrorKind};
use neo_redis::{Error, RedisConfig, RedisConnections};
use neo_testkit::RedisServer;
use std::time::{Duration, Instant};

#[tokio::test]
async fn calls_share_the_connections_round_robin_and_each_opens_on_first_use() {
    let redis = neo_testkit::redis().await;
    let config = RedisConfig::new(redis.url()).pool_size(3);
    let connections = RedisConnections::connect(&config).unwrap();
    assert!(
        format!("{connections:?}").contains("opened: 0"),
        "{connections:?}"
    );

    let key = format!("{}greeting", redis.key_prefix());
    let mut first = connections.get().unwrap();
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("hello")
        .query_async(&mut first)
        .await
        .unwrap();
    for _ in 0..6 {
        let mut conn = connections.get().unwrap();
        let value: String = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(value, "hello");
    }
    let shown = format!("{connections:?}");
    assert!(
        shown.contains("size: 3") && shown.contains("opened: 3"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_url_that_does_not_parse_is_a_config_error_that_does_not_repeat_it() {
    let error = RedisConnections::connect(&RedisConfig::new("not a url with s3cret")).unwrap_err();
    assert!(
        matches!(&error, Error::InvalidSetting { setting, .. } if setting == "url"),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::Configuration);
    assert!(!error.to_string().contains("s3cret"), "{error}");
}

#[tokio::test]
async fn a_call_to_a_stopped_server_fails_within_the_timeout_and_the_connection_reopens() {
    let mut server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap()
        .unwrap();
    let timeout = Duration::from_millis(300);
    let connections =
        RedisConnections::connect(&RedisConfig::new(server.url()).pool_size(1).timeout(timeout))
            .unwrap();
    let ping = async |connections: &RedisConnections| {
        let mut conn = connections.get().unwrap();
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    assert_eq!(ping(&connections).await.unwrap(), "PONG");

    server.stop().unwrap();
    let started = Instant::now();
    assert!(ping(&connections).await.is_err());
    assert!(
        started.elapsed() < timeout * 4,
        "failed after {:?}",
        started.elapsed()
    );

    let mut server = tokio::task::spawn_blocking(move || server.restart().map(|()| server))
        .await
        .unwrap()
        .unwrap();
    // The call that finds the connection broken fails; one after it reopens the connection.
    let mut answered = false;
    for _ in 0..20 {
        if ping(&connections).await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered, "the connection never reopened");
    server.stop().unwrap();
}
