//! The sampler against a real PostgreSQL: only the lease holder samples, its gauges match
//! the database, a tenant with 10k endpoints gives a bounded number of series, and every
//! metric a real run records is catalogued.

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use neo_cache::{Cache, CacheConfig, HybridCache};
use neo_db::{Db, DbConfig};
use neo_events::{Outbox, OutboxConfig, WebhookConfig, Webhooks};
use neo_observe::{ObserveConfig, Sampler};
use neo_queue::{NewJob, OnDuplicate, Queue, QueueConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub(crate) struct Setup {
    test_db: neo_testkit::TestDatabase,
    pub(crate) db: Db,
    pub(crate) queue: Queue,
    pub(crate) webhooks: Webhooks,
}

pub(crate) async fn setup() -> Setup {
    let test_db = neo_testkit::postgres().await;
    let db = Db::connect(&DbConfig::with_url(test_db.url()))
        .await
        .unwrap();
    let queue = Queue::new(&db, QueueConfig::default()).unwrap();
    queue.migrate().await.unwrap();
    let outbox = Outbox::new(&db, OutboxConfig::default()).unwrap();
    outbox.migrate().await.unwrap();
    let webhooks = Webhooks::new(&db, queue.clone(), WebhookConfig::default()).unwrap();
    webhooks.migrate().await.unwrap();
    Sampler::new(&db, ObserveConfig::default(), "setup")
        .unwrap()
        .migrate()
        .await
        .unwrap();
    Setup {
        test_db,
        db,
        queue,
        webhooks,
    }
}

fn fast() -> ObserveConfig {
    ObserveConfig {
        interval: Duration::from_millis(100),
        lease_ttl: Duration::from_millis(600),
        ..ObserveConfig::default()
    }
}

/// Gauge values by name and sorted labels.
pub(crate) type Gauges = BTreeMap<(String, Vec<(String, String)>), f64>;

/// Gauges and their last values by (name, labels).
pub(crate) fn gauges(snapshotter: &Snapshotter) -> Gauges {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Gauge(v) => {
                let labels = key
                    .key()
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                Some(((key.key().name().to_owned(), labels), v.into_inner()))
            }
            _ => None,
        })
        .collect()
}

fn gauge(g: &Gauges, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    g.get(&(name.to_owned(), labels)).copied()
}

#[tokio::test]
async fn only_the_lease_holder_samples_and_another_takes_over() {
    let s = setup().await;
    let a = Sampler::new(&s.db, fast(), "a").unwrap();
    let b = Sampler::new(&s.db, fast(), "b").unwrap();
    let (ra, rb) = (DebuggingRecorder::new(), DebuggingRecorder::new());
    let (sa, sb) = (ra.snapshotter(), rb.snapshotter());

    for _ in 0..3 {
        let first = {
            let _guard = metrics::set_default_local_recorder(&ra);
            a.sample().await.unwrap()
        };
        let second = {
            let _guard = metrics::set_default_local_recorder(&rb);
            b.sample().await.unwrap()
        };
        assert!(first.leader, "a holds the lease and renews it");
        assert_eq!(first.queues.len(), 1);
        assert!(!second.leader, "b must not sample while a holds the lease");
        assert!(second.queues.is_empty() && second.outboxes.is_empty() && second.locks.is_none());
    }
    let (ga, gb) = (gauges(&sa), gauges(&sb));
    assert_eq!(gauge(&ga, "neo_observe_leader", &[]), Some(1.0));
    assert_eq!(gauge(&gb, "neo_observe_leader", &[]), Some(0.0));
    let depth = |g: &BTreeMap<_, _>| {
        gauge(
            g,
            "neo_queue_depth_jobs",
            &[("queue", "neo_queue"), ("state", "available")],
        )
    };
    assert_eq!(depth(&ga), Some(0.0), "the leader set the depth gauges");
    assert_eq!(depth(&gb), None, "the follower queried nothing");

    // a stops renewing (as if its process died): b takes over once the lease expires.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        b.sample().await.unwrap().leader,
        "b takes the expired lease"
    );
    assert!(!a.sample().await.unwrap().leader, "a lost it");

    // A spawned sampler that stops gives the lease up at once.
    let handle = a.spawn();
    let c = Sampler::new(&s.db, fast(), "c").unwrap();
    assert!(!c.sample().await.unwrap().leader, "b still holds it");
    drop(b);
    tokio::time::sleep(Duration::from_millis(700)).await;
    // a's background task renews every 100 ms, so it has taken the lease b let expire.
    assert!(!c.sample().await.unwrap().leader, "the spawned a holds it");
    handle.stop().await;
    assert!(
        c.sample().await.unwrap().leader,
        "a released the lease when stopped"
    );
}

#[tokio::test]
async fn gauges_match_the_database() {
    let s = setup().await;
    let jobs: Vec<NewJob> = (0..5).map(|i| NewJob::new("k", &i).unwrap()).collect();
    s.queue
        .enqueue_many(&s.db, jobs, OnDuplicate::Error)
        .await
        .unwrap();
    let claimed = s.queue.claim("w", 2, None).await.unwrap();
    assert_eq!(claimed.len(), 2);
    // Due jobs of other priorities, the oldest due 120 s ago, and one not due yet.
    let ago = |secs: i64| chrono::Utc::now() - chrono::Duration::seconds(secs);
    let later = vec![
        NewJob::new("k", &5).unwrap().priority(5).run_at(ago(30)),
        NewJob::new("k", &6).unwrap().priority(1).run_at(ago(120)),
        NewJob::new("k", &7).unwrap().priority(9).run_at(ago(-3600)),
    ];
    s.queue
        .enqueue_many(&s.db, later, OnDuplicate::Error)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO neo_events.outbox (id, event_type, aggregate_type, aggregate_id, payload, occurred_at, schema_version, recorded_at) \
         VALUES (gen_random_uuid(), 't', 'a', '1', '{}', now(), 1, now() - interval '90 seconds'), \
                (gen_random_uuid(), 't', 'a', '2', '{}', now(), 1, now() - interval '10 seconds')",
    )
    .execute(s.db.pool())
    .await
    .unwrap();
    // Endpoint e1: 1 of 2 attempted deliveries delivered (100 ms and 300 ms); e2 disabled.
    sqlx::raw_sql(
        "INSERT INTO neo_events.webhook_endpoints (id, url, secrets, enabled) VALUES \
           ('00000000-0000-0000-0000-0000000000e1', 'https://a.example', '{s}', true), \
           ('00000000-0000-0000-0000-0000000000e2', 'https://b.example', '{s}', false); \
         INSERT INTO neo_events.webhook_deliveries (message_id, endpoint_id, status, attempts, duration_ms) VALUES \
           (gen_random_uuid(), '00000000-0000-0000-0000-0000000000e1', 'delivered', 1, 100), \
           (gen_random_uuid(), '00000000-0000-0000-0000-0000000000e1', 'dead', 3, 300), \
           (gen_random_uuid(), '00000000-0000-0000-0000-0000000000e1', 'pending', 0, NULL)",
    )
    .execute(s.db.pool())
    .await
    .unwrap();
    // A real lock wait: one transaction holds a row lock, another waits for it.
    sqlx::raw_sql("CREATE TABLE held (id int PRIMARY KEY); INSERT INTO held VALUES (1)")
        .execute(s.db.pool())
        .await
        .unwrap();
    let mut holder = s.db.begin().await.unwrap();
    sqlx::query("SELECT id FROM held WHERE id = 1 FOR UPDATE")
        .execute(&mut **holder)
        .await
        .unwrap();
    let pool = s.db.pool().clone();
    let waiter = tokio::spawn(async move {
        sqlx::query("UPDATE held SET id = 1 WHERE id = 1")
            .execute(&pool)
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let sample = {
        let _guard = metrics::set_default_local_recorder(&recorder);
        Sampler::new(&s.db, fast(), "only")
            .unwrap()
            .sample()
            .await
            .unwrap()
    };
    holder.rollback().await.unwrap();
    waiter.await.unwrap().unwrap();

    assert!(sample.leader);
    let q = &sample.queues[0];
    assert_eq!((q.available, q.running, q.dead), (6, 2, 0));
    assert!((119.0..150.0).contains(&q.oldest_pending_seconds), "{q:?}");
    let o = &sample.outboxes[0];
    assert_eq!(o.pending, 2);
    assert!(
        (89.0..120.0).contains(&o.lag_seconds),
        "lag {}",
        o.lag_seconds
    );
    let w = &sample.webhooks[0];
    assert_eq!((w.disabled, w.dead), (1, 1));
    assert_eq!(w.endpoints.len(), 1);
    let e = &w.endpoints[0];
    assert_eq!(e.endpoint, "00000000-0000-0000-0000-0000000000e1");
    assert!((e.success_ratio - 0.5).abs() < 1e-9, "{e:?}");
    assert!((e.latency_seconds - 0.2).abs() < 1e-9, "{e:?}");
    assert_eq!(e.pending, 1);
    let locks = sample.locks.clone().unwrap();
    assert!(
        locks.waiting >= 1 && locks.longest_seconds > 0.1,
        "{locks:?}"
    );

    let g = gauges(&snapshotter);
    let state = |st| {
        gauge(
            &g,
            "neo_queue_depth_jobs",
            &[("queue", "neo_queue"), ("state", st)],
        )
    };
    assert_eq!(
        (state("available"), state("running"), state("dead")),
        (Some(6.0), Some(2.0), Some(0.0))
    );
    assert!(
        gauge(
            &g,
            "neo_queue_oldest_pending_seconds",
            &[("queue", "neo_queue")]
        )
        .unwrap()
            >= 0.0
    );
    assert_eq!(
        gauge(
            &g,
            "neo_events_outbox_pending_events",
            &[("outbox", "neo_events")]
        ),
        Some(2.0)
    );
    assert_eq!(
        gauge(&g, "neo_events_webhook_disabled_endpoints", &[]),
        Some(1.0)
    );
    assert_eq!(
        gauge(&g, "neo_events_webhook_dead_deliveries", &[]),
        Some(1.0)
    );
    assert_eq!(
        gauge(
            &g,
            "neo_events_webhook_endpoint_success_ratio",
            &[("endpoint", "00000000-0000-0000-0000-0000000000e1")]
        ),
        Some(0.5)
    );
    assert!(gauge(&g, "neo_db_lock_waits_sessions", &[]).unwrap() >= 1.0);
    assert_eq!(
        gauge(&g, "neo_db_pool_max_connections", &[]),
        Some(f64::from(s.db.stats().max_size))
    );
}

/// Sequential scans of the partitions of `neo_events.webhook_deliveries` holding rows (the
/// table is partitioned by time, webhooks migration 20; an empty partition's scan reads
/// nothing), and index scans of `index` on them, as the statistics say once every backend that
/// read the table has exited.
async fn delivery_scans(db: &Db, index: &str) -> (i64, i64) {
    sqlx::query_as(
        "WITH home AS (SELECT DISTINCT tableoid AS relid FROM neo_events.webhook_deliveries) \
         SELECT (SELECT coalesce(sum(t.seq_scan), 0)::int8 FROM pg_stat_user_tables t \
                 WHERE t.relid IN (SELECT relid FROM home)), \
                (SELECT coalesce(sum(i.idx_scan), 0)::int8 FROM pg_stat_user_indexes i \
                 WHERE i.relid IN (SELECT relid FROM home) AND i.indexrelid IN \
                   (SELECT relid FROM pg_partition_tree(to_regclass('neo_events.' || $1))))",
    )
    .bind(index)
    .fetch_one(db.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn endpoint_health_and_dead_deliveries_read_indexes_not_the_table() {
    let s = setup().await;
    // 30,000 deliveries updated a day ago, 50 in the health window, 20 dead.
    sqlx::raw_sql(
        "INSERT INTO neo_events.webhook_endpoints (id, url, secrets) \
         SELECT gen_random_uuid(), 'https://t.example/' || i, '{s}' FROM generate_series(1, 10) AS i; \
         INSERT INTO neo_events.webhook_deliveries (message_id, endpoint_id, status, attempts, duration_ms, updated_at) \
         SELECT gen_random_uuid(), e.id, CASE WHEN i <= 20 THEN 'dead' ELSE 'delivered' END, 1, 50, \
                CASE WHEN i > 29950 THEN now() ELSE now() - interval '1 day' END \
         FROM generate_series(1, 30000) AS i, \
              LATERAL (SELECT id FROM neo_events.webhook_endpoints ORDER BY id OFFSET i % 10 LIMIT 1) AS e; \
         ANALYZE neo_events.webhook_deliveries",
    )
    .execute(s.db.pool())
    .await
    .unwrap();
    // The sampler on its own pool, closed afterwards: its backends report their scans as they exit.
    let sampling = Db::connect(&DbConfig::with_url(s.test_db.url()))
        .await
        .unwrap();
    // The setup's connections closed first: a backend reports its scans when it exits (an
    // idle one up to seconds later), and the migration's `ATTACH PARTITION` scanned the
    // partition these rows went to, to check its bound. Counts read once they stay put.
    s.db.close().await;
    let reader = Db::connect(&DbConfig::with_url(s.test_db.url()))
        .await
        .unwrap();
    let read = async || {
        (
            delivery_scans(&reader, "webhook_deliveries_updated").await,
            delivery_scans(&reader, "webhook_deliveries_dead").await,
        )
    };
    let mut before = read().await;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let again = read().await;
        if again == before {
            break;
        }
        before = again;
    }
    let sample = Sampler::new(&sampling, ObserveConfig::default(), "plans")
        .unwrap()
        .sample()
        .await
        .unwrap();
    sampling.close().await;
    let w = &sample.webhooks[0];
    assert_eq!(w.dead, 20);
    assert_eq!(
        w.endpoints.len(),
        10,
        "the 50 recent deliveries of 10 endpoints: {w:?}"
    );
    assert!(w.endpoints.iter().all(|e| e.success_ratio == 1.0), "{w:?}");
    let mut after = (before.0, before.1);
    for _ in 0..50 {
        after = (
            delivery_scans(&reader, "webhook_deliveries_updated").await,
            delivery_scans(&reader, "webhook_deliveries_dead").await,
        );
        if after.0.1 > before.0.1 && after.1.1 > before.1.1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        after.0.1 > before.0.1,
        "health read its index: {before:?} {after:?}"
    );
    assert!(
        after.1.1 > before.1.1,
        "the dead count read its index: {before:?} {after:?}"
    );
    assert_eq!(
        after.0.0, before.0.0,
        "no sequential scan of the deliveries"
    );
}

#[tokio::test]
async fn ten_thousand_endpoints_of_one_tenant_give_a_bounded_number_of_series() {
    let s = setup().await;
    sqlx::raw_sql(
        "INSERT INTO neo_events.webhook_endpoints (id, tenant_id, url, secrets) \
         SELECT gen_random_uuid(), '00000000-0000-0000-0000-00000000000a', 'https://t.example/' || i, '{s}' \
         FROM generate_series(1, 10000) AS i; \
         INSERT INTO neo_events.webhook_deliveries (message_id, endpoint_id, tenant_id, status, attempts, duration_ms) \
         SELECT gen_random_uuid(), id, tenant_id, CASE WHEN random() < 0.2 THEN 'dead' ELSE 'delivered' END, 1, 50 \
         FROM neo_events.webhook_endpoints",
    )
    .execute(s.db.pool())
    .await
    .unwrap();
    let config = ObserveConfig {
        max_endpoint_series: 20,
        ..fast()
    };
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let sample = {
        let _guard = metrics::set_default_local_recorder(&recorder);
        Sampler::new(&s.db, config, "bound")
            .unwrap()
            .sample()
            .await
            .unwrap()
    };
    let endpoints = &sample.webhooks[0].endpoints;
    assert_eq!(endpoints.len(), 21, "20 worst endpoints and `other`");
    assert_eq!(endpoints.last().unwrap().endpoint, "other");
    assert!(
        endpoints[..20].iter().all(|e| e.success_ratio == 0.0),
        "the worst come first"
    );
    let g = gauges(&snapshotter);
    for name in [
        "neo_events_webhook_endpoint_success_ratio",
        "neo_events_webhook_endpoint_latency_seconds",
        "neo_events_webhook_endpoint_pending_deliveries",
    ] {
        let series: BTreeSet<_> = g.keys().filter(|(n, _)| n == name).collect();
        assert_eq!(series.len(), 21, "{name}: {} series", series.len());
    }
    let total: usize = g.len();
    assert!(total < 100, "{total} gauge series for 10k endpoints");
    let other = &endpoints[20];
    assert!(
        other.success_ratio > 0.7 && other.success_ratio < 0.9,
        "{other:?}"
    );
}

#[tokio::test]
async fn every_metric_a_real_run_records_is_catalogued() {
    let s = setup().await;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    {
        let _guard = metrics::set_default_local_recorder(&recorder);
        let cache: HybridCache<String> = HybridCache::memory(CacheConfig::named("orgs")).unwrap();
        cache
            .get_or_load("k", || async {
                Ok::<_, std::io::Error>(Some("v".to_owned()))
            })
            .await
            .unwrap();
        cache
            .get_or_load("k", || async {
                Ok::<_, std::io::Error>(Some("v".to_owned()))
            })
            .await
            .unwrap();
        let jobs: Vec<NewJob> = (0..3).map(|i| NewJob::new("k", &i).unwrap()).collect();
        s.queue
            .enqueue_many(&s.db, jobs, OnDuplicate::Error)
            .await
            .unwrap();
        for job in s.queue.claim("w", 3, None).await.unwrap() {
            s.queue.ack(job.receipt()).await.unwrap();
        }
        s.queue.depth().await.unwrap();
        let sampler = Sampler::new(&s.db, fast(), "real")
            .unwrap()
            .with_cache(cache.clone())
            .with_webhooks(s.webhooks.clone());
        let sample = sampler.sample().await.unwrap();
        assert_eq!(sample.caches.len(), 1);
        assert_eq!(sample.caches[0].l1_entries, 1);
        assert!(
            (sample.caches[0].hit_ratio - 0.5).abs() < 1e-9,
            "{:?}",
            sample.caches
        );
    }
    let catalogue: BTreeMap<_, _> = neo_observe::catalogue::all()
        .into_iter()
        .map(|d| (d.name, d))
        .collect();
    let recorded = snapshotter.snapshot().into_vec();
    let names: BTreeSet<&str> = recorded.iter().map(|(k, ..)| k.key().name()).collect();
    assert!(
        names.len() >= 20,
        "only {} metrics recorded: {names:?}",
        names.len()
    );
    for (key, _, _, value) in &recorded {
        let name = key.key().name();
        let def = catalogue
            .get(name)
            .unwrap_or_else(|| panic!("{name} was recorded but is not catalogued"));
        let kind = match value {
            DebugValue::Counter(_) => neo_core::MetricKind::Counter,
            DebugValue::Gauge(_) => neo_core::MetricKind::Gauge,
            DebugValue::Histogram(_) => neo_core::MetricKind::Histogram,
        };
        assert_eq!(def.kind, kind, "{name}");
        let labels: BTreeSet<&str> = key.key().labels().map(|l| l.key()).collect();
        let expected: BTreeSet<&str> = def.labels.iter().copied().collect();
        assert_eq!(labels, expected, "{name}");
    }
    for name in [
        "neo_cache_hits_total",
        "neo_cache_hit_ratio",
        "neo_cache_l1_entries",
        "neo_queue_enqueued_total",
        "neo_queue_acked_total",
        "neo_db_pool_connections",
        "neo_events_webhook_breakers",
        "neo_observe_samples_total",
    ] {
        assert!(names.contains(name), "{name} not recorded: {names:?}");
    }
}

#[test]
fn ten_thousand_endpoint_breakers_give_one_series_per_state_change() {
    use neo_resilience::{BreakerConfig, CircuitBreaker};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let config = BreakerConfig {
            minimum_calls: 1,
            ..BreakerConfig::default()
        };
        for i in 0..10_000 {
            // As neo-events names an endpoint's breaker.
            let breaker = CircuitBreaker::labelled(
                format!("webhook-endpoint-{i}"),
                "webhook-endpoint",
                config,
            )
            .unwrap();
            breaker.try_acquire().unwrap().record(false);
            assert!(breaker.try_acquire().is_err(), "open after a failure");
        }
    });
    let series: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, ..)| key.key().clone())
        .filter(|key| key.name().starts_with("neo_resilience_breaker"))
        .collect();
    assert_eq!(
        series.len(),
        2,
        "one transitions series (to open), one rejections: {series:?}"
    );
    for key in &series {
        assert!(
            key.labels()
                .any(|l| l.key() == "breaker" && l.value() == "webhook-endpoint")
        );
    }
}
