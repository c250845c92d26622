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

/// Whether a plaintext `PING` to `port` gets `+PONG` back.
fn plaintext_pong(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(500)));
    let mut buf = [0_u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut buf).is_ok()
        && &buf == b"+PONG\r\n"
}

#[tokio::test]
async fn a_tls_server_has_certificates_and_no_plaintext_port_even_after_a_restart() {
    let mut server = tokio::task::spawn_blocking(|| {
        neo_testkit::RedisServer::start_with(neo_testkit::RedisServerOptions {
            tls: true,
            ..neo_testkit::RedisServerOptions::default()
        })
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        server.url().starts_with("rediss://127.0.0.1:"),
        "{}",
        server.url()
    );
    let certs = server.certificates().unwrap().clone();
    for file in [
        certs.ca_file(),
        certs.server_cert_file(),
        certs.server_key_file(),
        certs.client_cert_file(),
        certs.client_key_file(),
    ] {
        let pem = std::fs::read_to_string(&file).unwrap();
        assert!(pem.starts_with("-----BEGIN"), "{}: {pem}", file.display());
    }
    assert!(
        !plaintext_pong(server.port()),
        "the TLS port answered plaintext"
    );
    let port = server.port();
    let mut server = tokio::task::spawn_blocking(move || server.restart().map(|()| server))
        .await
        .unwrap()
        .unwrap();
    assert!(server.is_running() && server.port() == port);
    assert!(!plaintext_pong(port));

    let shared = neo_testkit::redis_tls().await;
    assert_ne!(shared.port(), port);
    assert!(shared.url().starts_with("rediss://"));
    assert_ne!(
        shared.key_prefix(),
        neo_testkit::redis_tls().await.key_prefix()
    );
}

#[tokio::test]
async fn the_shared_cluster_has_three_masters_with_a_replica_each_covering_every_slot() {
    let cluster = neo_testkit::redis_cluster().await;
    assert_eq!(cluster.nodes().len(), 6);
    let client = redis::Client::open(cluster.nodes()[0].as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut conn)
        .await
        .unwrap();
    for expected in [
        "cluster_state:ok",
        "cluster_slots_assigned:16384",
        "cluster_size:3",
    ] {
        assert!(info.contains(expected), "{expected} missing from {info}");
    }
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await
        .unwrap();
    let count = |role: &str| nodes.lines().filter(|l| l.contains(role)).count();
    assert_eq!((count("master"), count("slave")), (3, 3), "{nodes}");
    assert_ne!(
        cluster.key_prefix(),
        neo_testkit::redis_cluster().await.key_prefix()
    );
}
