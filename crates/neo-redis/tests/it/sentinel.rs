//! A Redis Sentinel group (neo-testkit) through `SentinelConnections`.

use neo_core::{ErrorKind, HasErrorKind};
use neo_redis::{Error, RedisConfig, SentinelConnections};
use neo_testkit::RedisSentinelGroup;
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_master_the_sentinels_name_serves_reads_and_writes() {
    let group = neo_testkit::redis_sentinel().await;
    let config = RedisConfig::sentinel(group.sentinels().to_vec(), group.master_name())
        .timeout(Duration::from_secs(2));
    let connections = SentinelConnections::connect(&config).unwrap();
    assert!(format!("{connections:?}").contains("opened: false"));
    let key = format!("{}greeting", group.key_prefix());
    let mut conn = connections.get().await.unwrap();
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("hello")
        .query_async(&mut conn)
        .await
        .unwrap();
    let value: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut connections.get().await.unwrap())
        .await
        .unwrap();
    assert_eq!(value, "hello");
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await.unwrap();
    assert_eq!(
        role.first(),
        Some(&redis::Value::BulkString(b"master".to_vec()))
    );
    assert!(format!("{connections:?}").contains("opened: true"));
}

#[tokio::test]
async fn unreachable_sentinels_are_named_in_the_error() {
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let config = RedisConfig::sentinel(
        ports.iter().map(|p| format!("redis://127.0.0.1:{p}")),
        "nowhere",
    )
    .timeout(Duration::from_millis(300));
    let connections = SentinelConnections::connect(&config).unwrap();
    let started = Instant::now();
    let err = connections.get().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "{err}");
    assert!(matches!(err, Error::SentinelUnreachable { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let text = err.to_string();
    for port in ports {
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    }
    assert!(text.contains("nowhere"), "{text}");
}

#[tokio::test]
async fn other_modes_are_refused_with_the_settings_named() {
    let err = SentinelConnections::connect(&RedisConfig::new("redis://127.0.0.1:1")).unwrap_err();
    assert!(err.to_string().contains("sentinel.addresses"), "{err}");
}

#[tokio::test]
async fn writes_follow_the_master_after_a_failover() {
    let mut group = tokio::task::spawn_blocking(RedisSentinelGroup::start)
        .await
        .unwrap()
        .unwrap();
    let config = RedisConfig::sentinel(group.sentinels(), group.master_name())
        .timeout(Duration::from_millis(500));
    let connections = SentinelConnections::connect(&config).unwrap();
    let set = |value: u32| {
        let connections = connections.clone();
        async move {
            let mut conn = connections.get().await?;
            redis::cmd("SET")
                .arg("k")
                .arg(value)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| Error::Unavailable(e.to_string()))
        }
    };
    set(1).await.unwrap();
    let (old, group_back) = tokio::task::spawn_blocking(move || {
        let old = group.kill_master().unwrap();
        (old, group)
    })
    .await
    .unwrap();
    group = group_back;
    let killed_at = Instant::now();
    let mut failures = 0;
    loop {
        match set(2).await {
            Ok(()) => break,
            Err(_) => failures += 1,
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(20),
            "writes did not resume"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        failures > 0,
        "the first write after the kill cannot succeed"
    );
    let (new, _group) = tokio::task::spawn_blocking(move || (group.master_port().unwrap(), group))
        .await
        .unwrap();
    assert_ne!(old, new);
    // The sentinels close the promoted master's client connections once more as they finish
    // reconfiguring it (`CLIENT KILL TYPE normal`): a call may fail then, and the next
    // reconnects.
    let mut value = None;
    for _ in 0..20 {
        let Ok(mut conn) = connections.get().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if let Ok(v) = redis::cmd("GET")
            .arg("k")
            .query_async::<u32>(&mut conn)
            .await
        {
            value = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(value, Some(2));
}
