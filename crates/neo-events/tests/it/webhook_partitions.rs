//! The deliveries partitioned by time (webhooks migration 20): retention archives and drops
//! whole partitions with their attempts and never touches pending deliveries; deliveries
//! written before the migration stay readable and deliverable.

use crate::rows_by_partition;
use crate::webhooks::{
    Isolation, Mode, Running, Sealing, config, event, finish, publish, receiver_and_endpoint,
    setup_in, wait_until, worker_path,
};
use neo_core::{ErrorKind, HasErrorKind};
use neo_db::{Db, DbConfig};
use neo_events::{
    DeliveryStatus, NewEndpoint, Outbox, OutboxConfig, PartitionConfig, Webhooks, ZstdJsonLines,
};
use neo_queue::{Queue, QueueConfig, Worker, WorkerConfig};
use neo_testkit::{HttpReceiver, PgRoute, ScriptedResponse};
use std::time::Duration;

#[tokio::test]
async fn retention_archives_deliveries_with_their_attempts_and_keeps_pending_ones_direct() {
    retention_archives_deliveries_with_their_attempts_and_keeps_pending_ones(PgRoute::Direct).await;
}

#[tokio::test]
async fn retention_archives_deliveries_with_their_attempts_and_keeps_pending_ones_pgbouncer() {
    retention_archives_deliveries_with_their_attempts_and_keeps_pending_ones(PgRoute::PgBouncer)
        .await;
}

/// The attempt history rows of `delivery`, as `to_jsonb` gives them, by slot.
async fn attempts_of(db: &Db, delivery: i64) -> Vec<serde_json::Value> {
    let mut conn = db.statement_connection().await.unwrap();
    let rows = sqlx::query_scalar(
        "SELECT to_jsonb(a) FROM neo_events.webhook_delivery_attempts a \
         WHERE a.delivery_id = $1 ORDER BY a.slot",
    )
    .persistent(false)
    .bind(delivery)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    conn.finish().await.unwrap();
    rows
}

async fn retention_archives_deliveries_with_their_attempts_and_keeps_pending_ones(route: PgRoute) {
    let mode = Mode {
        route,
        sealing: Sealing::Off,
        isolation: Isolation::Shared,
    };
    let mut cfg = config(&[100, 60_000]);
    cfg.partitions = PartitionConfig {
        width: Duration::from_secs(1),
        premake: 20,
        retention: Duration::from_secs(1),
        ..PartitionConfig::default()
    };
    // Deliveries through the worker (none runs for the second): no inline first attempts.
    let s = setup_in(mode, worker_path(cfg)).await;
    let (receiver, endpoint) = receiver_and_endpoint(&s, |e| e).await;
    // The first delivery fails once, then succeeds: two attempts in its history.
    receiver.push(ScriptedResponse::status(500));
    receiver.push(ScriptedResponse::ok());
    let running = Running::start(&s);
    publish(&s, &[event("organization.created", 1)]).await;
    receiver.wait_for(2, Duration::from_secs(10)).await;
    wait_until(
        "the first delivery delivered",
        Duration::from_secs(5),
        || async {
            let d = s.webhooks.deliveries(endpoint.id, None, 10).await.unwrap();
            d.len() == 1 && d[0].status == DeliveryStatus::Delivered
        },
    )
    .await;
    running.stop().await;
    // A second later, a delivery nobody sends yet (no worker): pending.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let mut dispatcher = Running::default();
    dispatcher.dispatcher(&s);
    publish(&s, &[event("organization.created", 2)]).await;
    wait_until(
        "the second delivery recorded",
        Duration::from_secs(5),
        || async {
            s.webhooks
                .deliveries(endpoint.id, None, 10)
                .await
                .unwrap()
                .len()
                == 2
        },
    )
    .await;
    dispatcher.stop().await;
    let both = s.webhooks.deliveries(endpoint.id, None, 10).await.unwrap();
    let (first, second) = (both[0].id, both[1].id);
    assert_eq!(both[1].status, DeliveryStatus::Pending);
    let before = rows_by_partition(&s.system, "webhook_deliveries", vec![first, second]).await;
    let (old, pending) = (before[0].0.clone(), before[1].0.clone());
    assert_ne!(old, pending, "created a second apart");
    let attempts = attempts_of(&s.system, first).await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");

    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = ZstdJsonLines::new(dir.path());
    let report = s
        .webhooks
        .maintain_partitions(Some(&archive))
        .await
        .unwrap();
    let dropped: Vec<&str> = report.dropped.iter().map(|p| p.table.as_str()).collect();
    assert!(dropped.contains(&old.as_str()), "{report:?}");
    assert!(!dropped.contains(&pending.as_str()), "{report:?}");
    assert!(
        report.kept_pending.iter().any(|p| p.table == pending),
        "{report:?}"
    );

    // Read back: the delivery and its attempts, equal to what the table held.
    let retired = report.dropped.iter().find(|p| p.table == old).unwrap();
    let lines = neo_tenant::read_archive(&archive.path(retired)).unwrap();
    assert!(lines.iter().all(|l| l.store == "webhooks"));
    let of = |table: &str| -> Vec<serde_json::Value> {
        let mut rows: Vec<serde_json::Value> = lines
            .iter()
            .filter(|l| l.table == table)
            .map(|l| l.row.clone())
            .collect();
        rows.sort_by_key(|r| r["slot"].as_i64());
        rows
    };
    assert_eq!(of("webhook_deliveries"), vec![before[0].1.clone()]);
    assert_eq!(of("webhook_delivery_attempts"), attempts);
    assert_eq!(lines.len(), 3);
    assert_eq!(report.archived_rows, 3);

    // Gone with their attempts; the pending delivery untouched, and still delivered.
    let gone = s.webhooks.delivery(first).await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);
    assert!(attempts_of(&s.system, first).await.is_empty());
    assert_eq!(
        s.webhooks.delivery(second).await.unwrap().status,
        DeliveryStatus::Pending
    );
    receiver.push(ScriptedResponse::ok());
    let mut worker = Running::default();
    worker.worker(&s);
    receiver.wait_for(3, Duration::from_secs(10)).await;
    wait_until(
        "the pending delivery delivered",
        Duration::from_secs(5),
        || async { s.webhooks.delivery(second).await.unwrap().status == DeliveryStatus::Delivered },
    )
    .await;
    finish(worker, &s, receiver).await;
    let report = s.webhooks.maintain_partitions(None).await.unwrap();
    assert!(
        report.dropped.iter().any(|p| p.table == pending),
        "{report:?}"
    );
}

/// The webhook tables' migrations before 20, as an install that has not taken it yet ran them.
fn migrations_before_partitioning() -> neo_db::MigrationSet {
    neo_db::MigrationSet::new("neo_webhooks")
        .unwrap()
        .with(
            1,
            "webhooks",
            include_str!("../../migrations/webhooks/1_webhooks.sql"),
        )
        .with(
            2,
            "deliveries without foreign keys",
            include_str!("../../migrations/webhooks/2_deliveries_without_foreign_keys.sql"),
        )
        .with(
            3,
            "deliveries name their tenant",
            include_str!("../../migrations/webhooks/3_deliveries_name_their_tenant.sql"),
        )
        .with(
            4,
            "endpoints record their seal keys",
            include_str!("../../migrations/webhooks/4_endpoints_record_their_seal_keys.sql"),
        )
        .with(
            6,
            "deliveries carry trace context",
            include_str!("../../migrations/webhooks/6_deliveries_carry_trace_context.sql"),
        )
        .with(
            7,
            "deliveries indexed for sampling",
            include_str!("../../migrations/webhooks/7_deliveries_indexed_for_sampling.sql"),
        )
        .with(
            10,
            "event schemas",
            include_str!("../../migrations/webhooks/10_event_schemas.sql"),
        )
        .with(
            11,
            "endpoint verification",
            include_str!("../../migrations/webhooks/11_endpoint_verification.sql"),
        )
        .with(
            12,
            "endpoint regions",
            include_str!("../../migrations/webhooks/12_endpoint_regions.sql"),
        )
        .with(
            40,
            "deliveries by endpoint",
            include_str!("../../migrations/webhooks/40_deliveries_by_endpoint.sql"),
        )
        .with(
            41,
            "delivery attempts",
            include_str!("../../migrations/webhooks/41_delivery_attempts.sql"),
        )
}

#[tokio::test]
async fn deliveries_written_before_partitioning_stay_readable_and_deliverable() {
    let test_db = PgRoute::Direct.database().await;
    let db = Db::connect(&DbConfig::with_url(test_db.url()))
        .await
        .unwrap();
    let queue = Queue::new(
        &db,
        QueueConfig {
            lease: Duration::from_secs(2),
            ..QueueConfig::default()
        },
    )
    .unwrap();
    queue.migrate().await.unwrap();
    Outbox::new(&db, OutboxConfig::default())
        .unwrap()
        .migrate()
        .await
        .unwrap();
    let webhooks = Webhooks::new(&db, queue.clone(), config(&[60_000])).unwrap();
    let schema = neo_db::Schema::new("neo_events").unwrap();
    migrations_before_partitioning()
        .run_in_schema(&db, &schema)
        .await
        .unwrap();
    let receiver = HttpReceiver::start().await.unwrap();
    let endpoint = webhooks
        .create_endpoint(NewEndpoint::new(receiver.url("/hook")).subscribe("*"))
        .await
        .unwrap();
    // A dead delivery, a delivered one and a pending one, as the unpartitioned table held
    // them.
    let mut conn = db.acquire().await.unwrap();
    let mut ids = Vec::new();
    for (n, status) in [(1, "dead"), (2, "delivered"), (3, "pending")] {
        let message = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO neo_events.webhook_messages (id, event_type, body) \
             VALUES ($1, 'organization.created', $2)",
        )
        .bind(message)
        .bind(format!("{{\"n\":{n}}}"))
        .execute(&mut *conn)
        .await
        .unwrap();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO neo_events.webhook_deliveries (message_id, endpoint_id, status, attempts) \
             VALUES ($1, $2, $3, 3) RETURNING id",
        )
        .bind(message)
        .bind(endpoint.id)
        .bind(status)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        ids.push(id);
    }
    // A column a later migration added (as webhooks migration 13 adds `replays`): migration
    // 20 copies the columns it finds, values and default with them.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE neo_events.webhook_deliveries ADD COLUMN added_later text NOT NULL DEFAULT 'default'; \
         UPDATE neo_events.webhook_deliveries SET added_later = 'set' WHERE id = {}",
        ids[0]
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);

    assert_eq!(webhooks.migrate().await.unwrap().applied, vec![13, 20]);
    let mut conn = db.acquire().await.unwrap();
    let added: Vec<String> = sqlx::query_scalar(
        "SELECT added_later FROM neo_events.webhook_deliveries WHERE id = ANY($1) ORDER BY id",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(added, ["set", "default", "default"]);
    let default: Option<String> = sqlx::query_scalar(
        "SELECT column_default FROM information_schema.columns \
         WHERE table_schema = 'neo_events' AND table_name = 'webhook_deliveries' AND column_name = 'added_later'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(default.as_deref(), Some("'default'::text"));
    drop(conn);
    let partitions = webhooks.partitions().await.unwrap();
    assert_eq!(partitions[0].table, "webhook_deliveries_unpartitioned");
    // The partitions made since vacuum after 10,000 dead rows (PartitionConfig's default).
    let options: Option<Vec<String>> = sqlx::query_scalar(
        "SELECT c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'neo_events' AND c.relname = $1",
    )
    .bind(&partitions[1].table)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(
        options.unwrap_or_default(),
        [
            "autovacuum_vacuum_scale_factor=0",
            "autovacuum_vacuum_threshold=10000"
        ]
    );
    let (dead, delivered) = (
        webhooks.delivery(ids[0]).await.unwrap(),
        webhooks.delivery(ids[1]).await.unwrap(),
    );
    assert_eq!(
        (dead.status, dead.attempts),
        (DeliveryStatus::Dead, 3),
        "readable after the migration"
    );
    assert_eq!(delivered.status, DeliveryStatus::Delivered);

    // Replayed, the old delivery is sent again and its status written in its old partition.
    receiver.push(ScriptedResponse::ok());
    let worker = webhooks.handle(Worker::new(
        queue.clone(),
        WorkerConfig {
            poll_interval: Duration::from_millis(50),
            shutdown_grace: Duration::from_millis(100),
            ..WorkerConfig::default()
        },
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        worker
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    assert!(webhooks.replay(ids[0]).await.unwrap());
    receiver.wait_for(1, Duration::from_secs(10)).await;
    wait_until(
        "the replayed delivery delivered",
        Duration::from_secs(5),
        || async { webhooks.delivery(ids[0]).await.unwrap().status == DeliveryStatus::Delivered },
    )
    .await;
    // A job enqueued before jobs carried their delivery's `created_at` names the id alone:
    // its delivery is found by id (every partition probed), sent and its status written.
    receiver.push(ScriptedResponse::ok());
    queue
        .enqueue(
            db.pool(),
            neo_queue::NewJob::new(
                &webhooks.config().job_kind,
                &serde_json::json!({ "delivery": ids[2] }),
            )
            .unwrap(),
            neo_queue::OnDuplicate::Error,
        )
        .await
        .unwrap()
        .unwrap();
    let sent = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(sent[1].body.as_ref(), b"{\"n\":3}");
    wait_until(
        "the old job's delivery delivered",
        Duration::from_secs(5),
        || async { webhooks.delivery(ids[2]).await.unwrap().status == DeliveryStatus::Delivered },
    )
    .await;
    let old_job = webhooks.delivery(ids[2]).await.unwrap();
    assert_eq!(old_job.attempts, 4, "the old job's attempt recorded");
    let homes = rows_by_partition(&db, "webhook_deliveries", ids.clone()).await;
    assert!(
        homes
            .iter()
            .all(|(home, _)| home == "webhook_deliveries_unpartitioned")
    );
    // The id sequence goes on past the old ids, now owned by the partitioned table.
    let mut conn = db.acquire().await.unwrap();
    let owner: String =
        sqlx::query_scalar("SELECT pg_get_serial_sequence('neo_events.webhook_deliveries', 'id')")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(owner, "neo_events.webhook_deliveries_id_seq");
    drop(conn);
    let _ = stop.send(());
    task.await.unwrap();
    webhooks.shutdown().await;
    receiver.shutdown().await;
}

async fn deliveries_left(db: &Db) -> i64 {
    let mut conn = db.acquire().await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM neo_events.webhook_deliveries")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

async fn events_left(db: &Db) -> i64 {
    let mut conn = db.acquire().await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM retention_outbox.outbox")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

/// Measures retention of ~100k finished deliveries (and ~100k processed events): a partition
/// detached and dropped against today's batched `DELETE` of the same number of rows, and
/// what a lookup by id costs as partitions add up. Run on demand:
/// `cargo nextest run -p neo-events --all-features --run-ignored only retention_cost`.
#[tokio::test]
#[ignore = "a measurement, run on demand"]
#[allow(clippy::print_stdout, reason = "the measurement reports what it timed")]
async fn retention_cost() {
    const ROWS: i64 = 100_000;
    let mut cfg = config(&[60_000]);
    cfg.partitions = PartitionConfig {
        width: Duration::from_secs(2),
        premake: 5,
        retention: Duration::from_secs(1),
        ..PartitionConfig::default()
    };
    let mode = Mode {
        route: PgRoute::Direct,
        sealing: Sealing::Off,
        isolation: Isolation::Shared,
    };
    let s = setup_in(mode, cfg.clone()).await;
    let endpoint = s
        .webhooks
        .create_endpoint(NewEndpoint::new("http://127.0.0.1:9/hook").subscribe("*"))
        .await
        .unwrap();
    let fill = |status: &'static str| {
        let db = s.system.clone();
        async move {
            let mut conn = db.acquire().await.unwrap();
            sqlx::query(
                "INSERT INTO neo_events.webhook_deliveries (message_id, endpoint_id, status, attempts, \
                 response_status, response_body, duration_ms, updated_at, delivered_at) \
                 SELECT gen_random_uuid(), $1, $2, 1, 200, 'ok', 12, now() - interval '1 hour', now() \
                 FROM generate_series(1, $3)",
            )
            .bind(endpoint.id)
            .bind(status)
            .bind(ROWS)
            .execute(&mut *conn)
            .await
            .unwrap();
            sqlx::query("ANALYZE neo_events.webhook_deliveries")
                .execute(&mut *conn)
                .await
                .unwrap();
        }
    };
    // Today's retention: batched DELETE (Webhooks::purge) of 100k finished deliveries.
    for batch in [1_000_u32, 10_000] {
        fill("delivered").await;
        let started = std::time::Instant::now();
        let purged = s.webhooks.purge(Duration::ZERO, batch).await.unwrap();
        println!(
            "purge (batched DELETE, batch {batch}) of {purged} deliveries: {:?}",
            started.elapsed()
        );
        assert_eq!(purged, ROWS as u64);
    }
    // Partition retention: the same rows in one partition, detached and dropped.
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.webhooks.maintain_partitions(None).await.unwrap();
    fill("delivered").await;
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let started = std::time::Instant::now();
    let report = s.webhooks.maintain_partitions(None).await.unwrap();
    println!(
        "maintain_partitions (ensure, detach + drop, message purge): {:?}, dropped {}",
        started.elapsed(),
        report.dropped.len()
    );
    assert!(report.kept_pending.is_empty());
    assert_eq!(deliveries_left(&s.system).await, 0, "{report:?}");
    // The outbox: 100k processed events, batched move to outbox_archive against detach + drop.
    // In a schema of its own, made with these partitions (the setup's outbox has daily ones).
    let outbox = Outbox::new(
        &s.system,
        OutboxConfig {
            schema: "retention_outbox".to_owned(),
            partitions: cfg.partitions.clone(),
            ..OutboxConfig::default()
        },
    )
    .unwrap();
    outbox.migrate().await.unwrap();
    let fill_outbox = || {
        let db = s.system.clone();
        async move {
            let mut conn = db.acquire().await.unwrap();
            sqlx::query(
                "INSERT INTO retention_outbox.outbox (id, event_type, aggregate_type, aggregate_id, payload, \
                 occurred_at, schema_version, processed_at) \
                 SELECT gen_random_uuid(), 'organization.created', 'organization', 'org_' || i, \
                 jsonb_build_object('n', i), now(), 1, now() - interval '1 hour' FROM generate_series(1, $1) i",
            )
            .bind(ROWS)
            .execute(&mut *conn)
            .await
            .unwrap();
            sqlx::query("ANALYZE retention_outbox.outbox")
                .execute(&mut *conn)
                .await
                .unwrap();
        }
    };
    outbox.ensure_partitions().await.unwrap();
    fill_outbox().await;
    let started = std::time::Instant::now();
    let moved = outbox.archive(Duration::ZERO).await.unwrap();
    println!(
        "outbox archive (batched move, batch 1000) of {moved} events: {:?}",
        started.elapsed()
    );
    outbox.ensure_partitions().await.unwrap();
    fill_outbox().await;
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let started = std::time::Instant::now();
    let report = outbox.maintain_partitions(None).await.unwrap();
    println!(
        "outbox maintain_partitions (ensure, detach + drop): {:?}, dropped {}",
        started.elapsed(),
        report.dropped.len()
    );
    assert_eq!(events_left(&s.system).await, 0, "{report:?}");
    let dir = tempfile::tempdir().unwrap();
    outbox.ensure_partitions().await.unwrap();
    fill_outbox().await;
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let started = std::time::Instant::now();
    let archive = ZstdJsonLines::new(dir.path());
    let report = outbox.maintain_partitions(Some(&archive)).await.unwrap();
    let bytes: u64 = report
        .dropped
        .iter()
        .map(|p| std::fs::metadata(archive.path(p)).unwrap().len())
        .sum();
    println!(
        "outbox maintain_partitions with the zstd archive: {:?}, {} rows, {bytes} bytes",
        started.elapsed(),
        report.archived_rows
    );
    assert_eq!(report.archived_rows, ROWS as u64, "{report:?}");

    // A delivery by id as partitions add up: one primary-key probe per partition.
    let id = {
        fill("delivered").await;
        let mut conn = s.system.acquire().await.unwrap();
        let id: i64 = sqlx::query_scalar("SELECT max(id) FROM neo_events.webhook_deliveries")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO neo_events.webhook_messages (id, event_type, body) \
             SELECT message_id, 'organization.created', '{}' FROM neo_events.webhook_deliveries WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *conn)
        .await
        .unwrap();
        id
    };
    for premake in [5_u32, 50, 200] {
        let wide = Webhooks::new(
            &s.db,
            s.queue.clone(),
            neo_events::WebhookConfig {
                partitions: PartitionConfig {
                    premake,
                    ..cfg.partitions.clone()
                },
                ..cfg.clone()
            },
        )
        .unwrap();
        wide.ensure_partitions().await.unwrap();
        let n = wide.partitions().await.unwrap().len() + 1;
        for _ in 0..200 {
            s.webhooks.delivery(id).await.unwrap();
        }
        let started = std::time::Instant::now();
        for _ in 0..2_000 {
            s.webhooks.delivery(id).await.unwrap();
        }
        println!(
            "delivery(id) with {n} partitions: {:?} per call",
            started.elapsed() / 2_000
        );
    }
}

/// The delivery read and the status write are prepared, their plan reused (planned per call
/// they spent about as long planning as running), and prepared again once one runs long. A
/// generic plan made while today's partition was nearly empty reads the partition whole for
/// each delivery; here the partition then gains 300,000 rows without being analysed, the
/// next read runs long, and both statements are prepared under the next text, whose plan
/// probes each delivery's partition by its primary key.
#[tokio::test]
async fn a_delivery_read_that_runs_long_is_planned_again_for_the_partitions_as_they_are() {
    let test_db = PgRoute::Direct.database().await;
    // The webhooks' own statements on one connection, where the ones under test are
    // prepared; the queue's on a pool of their own.
    let db = Db::connect(&DbConfig {
        max_connections: 1,
        ..DbConfig::with_url(test_db.url())
    })
    .await
    .unwrap();
    let queue_db = Db::connect(&DbConfig::with_url(test_db.url()))
        .await
        .unwrap();
    let queue = Queue::new(&queue_db, QueueConfig::default()).unwrap();
    queue.migrate().await.unwrap();
    let cfg = worker_path(config(&[100]));
    assert_eq!(cfg.replan_after_per_delivery, Duration::from_millis(1));
    let webhooks = Webhooks::new(&db, queue.clone(), cfg).unwrap();
    webhooks.migrate().await.unwrap();
    let receiver = HttpReceiver::start().await.unwrap();
    let endpoint = webhooks
        .create_endpoint(NewEndpoint::new(receiver.url("/hook")).subscribe("*"))
        .await
        .unwrap();
    // Statistics of empty partitions, and no autovacuum to renew them during the test.
    let partitions: Vec<String> = sqlx::query_scalar(
        "SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'neo_events.webhook_deliveries'::regclass",
    )
    .fetch_all(queue_db.pool())
    .await
    .unwrap();
    for partition in &partitions {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {partition} SET (autovacuum_enabled = false)"
        )))
        .execute(queue_db.pool())
        .await
        .unwrap();
    }
    sqlx::query("ANALYZE neo_events.webhook_deliveries")
        .execute(queue_db.pool())
        .await
        .unwrap();

    let worker = webhooks.handle(Worker::new(
        queue.clone(),
        WorkerConfig {
            concurrency: 4,
            poll_interval: Duration::from_millis(20),
            shutdown_grace: Duration::from_millis(100),
            ..WorkerConfig::default()
        },
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let mut sent = 0;
    let mut deliver = async |n: u32| {
        let events: Vec<_> = (sent..sent + n)
            .map(|n| event("organization.created", n))
            .collect();
        sent += n;
        assert_eq!(webhooks.fan_out(&events).await.unwrap(), n as usize);
        wait_until(
            "every delivery delivered",
            Duration::from_secs(30),
            || async {
                let delivered = webhooks
                    .deliveries(endpoint.id, Some(DeliveryStatus::Delivered), 1_000)
                    .await
                    .unwrap();
                delivered.len() == sent as usize
            },
        )
        .await;
    };
    // More reads than PostgreSQL plans for the values before it settles on a generic plan.
    for _ in 0..10 {
        deliver(2).await;
    }
    sqlx::query(
        "INSERT INTO neo_events.webhook_deliveries (message_id, endpoint_id, status, created_at) \
         SELECT gen_random_uuid(), gen_random_uuid(), 'delivered', now() \
         FROM generate_series(1, 300000)",
    )
    .execute(queue_db.pool())
    .await
    .unwrap();
    deliver(20).await;
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    webhooks.shutdown().await;
    assert_eq!(receiver.requests().len(), 40);
    receiver.shutdown().await;

    // The partition the deliveries went to (today's); the others are empty.
    let filled: String = sqlx::query_scalar(
        "SELECT DISTINCT c.relname::text FROM neo_events.webhook_deliveries d \
         JOIN pg_class c ON c.oid = d.tableoid",
    )
    .fetch_one(queue_db.pool())
    .await
    .unwrap();
    let reads = neo_testkit::generic_plans(db.pool(), &["SELECT d.id AS delivery_id%"], |_| {
        "'{1}', '{2026-12-07 00:00:00+00}'".to_owned()
    })
    .await
    .unwrap();
    let (first, stale) = &reads[0];
    assert!(
        stale.contains(&format!("Seq Scan on {filled} ")),
        "the plan made while {filled} was nearly empty: {first}\n{stale}"
    );
    let (statement, plan) = reads
        .iter()
        .find(|(statement, _)| statement.ends_with("/* neo_webhooks plan 1 */"))
        .unwrap_or_else(|| panic!("the read prepared again: {reads:?}"));
    let scans: Vec<&str> = plan
        .lines()
        .filter(|line| line.contains("Scan") && line.contains(&filled))
        .collect();
    assert!(!scans.is_empty(), "{statement}\n{plan}");
    for scan in scans {
        let by_primary_key =
            scan.contains("Bitmap Heap Scan") || (scan.contains("Index") && scan.contains("_pkey"));
        assert!(by_primary_key, "{scan}\n{statement}\n{plan}");
    }
    let writes: Vec<String> = sqlx::query_scalar(
        "SELECT statement FROM pg_prepared_statements WHERE statement LIKE 'WITH u AS%'",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert!(
        writes
            .iter()
            .any(|w| w.ends_with("/* neo_webhooks plan 1 */")),
        "the status write prepared again too: {writes:?}"
    );
}
