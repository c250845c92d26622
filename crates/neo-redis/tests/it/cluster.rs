//! A six-node Redis Cluster (neo-testkit) through `ClusterConnections`.

use neo_redis::{ClusterConnections, Error, RedisConfig, RedisConnections};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[tokio::test]
async fn set_and_get_reach_keys_in_every_masters_slots() {
    let cluster = neo_testkit::redis_cluster().await;
    // One seed is enough: it tells the client the rest of the cluster.
    let config = RedisConfig::cluster([cluster.nodes()[0].clone()]).timeout(Duration::from_secs(2));
    let connections = ClusterConnections::connect(&config).unwrap();
    assert!(format!("{connections:?}").contains("opened: false"));

    let keys: Vec<String> = (0..24)
        .map(|i| format!("{}key-{i}", cluster.key_prefix()))
        .collect();
    let mut conn = connections.get().await.unwrap();
    let mut ranges = BTreeSet::new();
    for key in &keys {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        // redis-cli gives the three masters 0-5460, 5461-10922 and 10923-16383.
        ranges.insert(slot / 5462);
        let () = redis::cmd("SET")
            .arg(key)
            .arg(format!("value of {key}"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    assert_eq!(
        ranges.len(),
        3,
        "the keys did not cover all three masters: {ranges:?}"
    );
    for key in &keys {
        let mut conn = connections.get().await.unwrap();
        let value: String = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(value, format!("value of {key}"));
    }
    assert!(format!("{connections:?}").contains("opened: true"));
}

#[tokio::test]
async fn unreachable_seed_nodes_are_named_in_the_error() {
    // Ports that were free a moment ago: nothing listens there.
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let nodes: Vec<String> = ports
        .iter()
        .map(|p| format!("redis://:s3cret@127.0.0.1:{p}"))
        .collect();
    let config = RedisConfig::cluster(nodes).timeout(Duration::from_millis(300));
    let connections = ClusterConnections::connect(&config).unwrap();
    let started = Instant::now();
    let Err(error) = connections.get().await else {
        panic!("connected to nothing");
    };
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let Error::Unreachable { nodes, .. } = &error else {
        panic!("{error:?}");
    };
    let expected: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    assert_eq!(nodes, &expected);
    let text = error.to_string();
    assert!(
        expected.iter().all(|n| text.contains(n)) && !text.contains("s3cret"),
        "{text}"
    );
    // A failed attempt is not kept: the next call tries again (and fails the same way).
    assert!(matches!(
        connections.get().await,
        Err(Error::Unreachable { .. })
    ));
}

#[tokio::test]
async fn cluster_settings_are_refused_by_the_standalone_connections_and_back() {
    let cluster = RedisConfig::cluster(["redis://127.0.0.1:7000"]);
    assert!(matches!(
        RedisConnections::connect(&cluster),
        Err(Error::Config(_))
    ));
    let standalone = RedisConfig::new("redis://127.0.0.1:6379");
    assert!(matches!(
        ClusterConnections::connect(&standalone),
        Err(Error::Config(_))
    ));
}
