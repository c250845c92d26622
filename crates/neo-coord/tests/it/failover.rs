//! What a Sentinel failover can lose, and what the fencing token still guarantees.

use neo_coord::{CoordConfig, Coordinator, Error, RedisConfig};
use neo_testkit::RedisSentinelGroup;
use std::time::{Duration, Instant};

/// The resource a lock protects: it remembers the highest fence it was written with and
/// refuses older ones (what the crate docs ask of a protected resource).
#[derive(Default)]
struct FencedLedger {
    highest: u64,
    entries: Vec<&'static str>,
}

impl FencedLedger {
    fn write(&mut self, fence: u64, entry: &'static str) -> Result<(), u64> {
        if fence < self.highest {
            return Err(self.highest);
        }
        self.highest = fence;
        self.entries.push(entry);
        Ok(())
    }
}

async fn on_master(group: &RedisSentinelGroup, args: &[&str]) -> redis::Value {
    let port = group.master_port().unwrap();
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_grant_lost_in_a_failover_goes_to_another_holder_and_the_fence_refuses_the_stale_one() {
    let mut group = tokio::task::spawn_blocking(RedisSentinelGroup::start)
        .await
        .unwrap()
        .unwrap();
    let redis = RedisConfig::sentinel(group.sentinels(), group.master_name())
        .timeout(Duration::from_millis(500));
    let config = CoordConfig {
        key_prefix: "failover:".into(),
        // Long enough that only a lost grant lets the second holder in during the test.
        lock_ttl: Duration::from_secs(60),
        lock_wait: Duration::from_millis(200),
        ..CoordConfig::default()
    };
    let a = Coordinator::connect_redis(&redis, config.clone()).unwrap();
    let b = Coordinator::connect_redis(&redis, config).unwrap();
    let mut ledger = FencedLedger::default();

    // A grant that reached the replica.
    let first = a.lock("ledger").await.unwrap();
    ledger.write(first.fence(), "first").unwrap();
    first.release().await.unwrap();
    on_master(&group, &["WAIT", "1", "2000"]).await;

    // The replica falls behind (frozen, its link cut), so the next grant lives only on the
    // master: the asynchronous replication a crash can outrun.
    let master = group.master_port().unwrap();
    let replica_port = *group
        .server_ports()
        .iter()
        .find(|&&port| port != master)
        .unwrap();
    group.server_mut(replica_port).unwrap().pause().unwrap();
    on_master(&group, &["CLIENT", "KILL", "TYPE", "replica"]).await;
    let stale = a.lock("ledger").await.unwrap().without_extension();
    ledger
        .write(stale.fence(), "stale holder, before the crash")
        .unwrap();

    // The master crashes with the grant; the replica, which never saw it, is promoted.
    let killed_at = Instant::now();
    group.kill_master().unwrap();
    group.server_mut(replica_port).unwrap().resume().unwrap();
    let fresh = loop {
        match b.try_lock("ledger").await {
            Ok(Some(guard)) => break guard,
            Ok(None) => panic!("the grant survived the failover: the replica had it"),
            Err(Error::Unavailable(_)) => {}
            Err(other) => panic!("{other}"),
        }
        assert!(killed_at.elapsed() < Duration::from_secs(20), "no failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        killed_at.elapsed() < Duration::from_secs(20),
        "the second holder got the lock only when it expired"
    );
    assert_ne!(group.master_port().unwrap(), master);

    // Two holders now believe they hold the lock; the fence tells them apart.
    assert!(
        fresh.fence() > stale.fence(),
        "fresh {} > stale {}",
        fresh.fence(),
        stale.fence()
    );
    ledger.write(fresh.fence(), "fresh holder").unwrap();
    assert_eq!(
        ledger.write(stale.fence(), "stale holder, after the failover"),
        Err(fresh.fence())
    );
    assert_eq!(
        ledger.entries,
        ["first", "stale holder, before the crash", "fresh holder"]
    );
    // And the stale holder learns it lost the lock at its next extension (once a call
    // reaches the new master: the sentinels close its clients as they finish the failover).
    let extended = loop {
        match stale.extend().await {
            Err(Error::Unavailable(_)) if killed_at.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => break other,
        }
    };
    assert!(matches!(extended, Err(Error::Lost { .. })), "{extended:?}");
    assert!(!stale.is_held());
    fresh.release().await.unwrap();
}
