use redis::AsyncCommands as _;

#[tokio::test]
async fn each_test_gets_a_flushed_database_of_its_own() {
    let a = neo_testkit::redis().await;
    let b = neo_testkit::redis().await;
    assert_ne!(a.key_prefix(), b.key_prefix());
    let mut conn_a = a.connection().await.unwrap();
    let mut conn_b = b.connection().await.unwrap();
    let () = conn_a.set("greeting", "hello").await.unwrap();
    let seen_a: Option<String> = conn_a.get("greeting").await.unwrap();
    let seen_b: Option<String> = conn_b.get("greeting").await.unwrap();
    assert_eq!(seen_a.as_deref(), Some("hello"));
    if a.database() != b.database() {
        assert_eq!(
            seen_b,
            None,
            "databases {} and {} leaked",
            a.database(),
            b.database()
        );
    }
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut conn_a).await.unwrap();
    assert_eq!(size, 1);
}

#[tokio::test]
async fn the_server_is_redis_7_or_newer() {
    let r = neo_testkit::redis().await;
    let mut conn = r.connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .unwrap();
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .expect("INFO reports redis_version");
    let major: u32 = version.split('.').next().unwrap().parse().unwrap();
    assert!(major >= 7, "Redis 7+ required, got {version}");
}
