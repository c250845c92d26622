use neo_core::{ErrorKind, HasErrorKind};
use neo_db::{Db, DbConfig};
use neo_events::{DomainEvent, EventBus, Outbox, OutboxConfig};
use neo_testkit::PgRoute;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

fn ok(_: Vec<DomainEvent>) -> std::future::Ready<Result<(), String>> {
    std::future::ready(Ok(()))
}
use std::time::{Duration, Instant};

/// A fresh database reached by `route` (`pooler = "transaction"` through PgBouncer, with
/// the direct URL for LISTEN), a `Db` and a migrated outbox on it.
async fn setup(route: PgRoute) -> (neo_testkit::TestDatabase, Db, Outbox) {
    let test_db = route.database().await;
    let db = Db::connect(
        &(if route.is_pooled() {
            DbConfig::behind_transaction_pooler(test_db.url(), test_db.direct_url())
        } else {
            DbConfig::with_url(test_db.url())
        }),
    )
    .await
    .unwrap();
    let outbox = Outbox::new(
        &db,
        OutboxConfig {
            batch_size: 50,
            ..OutboxConfig::default()
        },
    )
    .unwrap();
    assert_eq!(outbox.migrate().await.unwrap().applied, vec![1, 3]);
    (test_db, db, outbox)
}

fn event(n: u32) -> DomainEvent {
    DomainEvent::new(
        "organization.created",
        "organization",
        &format!("org_{n}"),
        &serde_json::json!({ "n": n }),
    )
    .unwrap()
}

/// Dispatches one batch; returns its events (oldest first).
async fn dispatched(outbox: &Outbox) -> Vec<DomainEvent> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    outbox
        .dispatch_once(move |batch: Vec<DomainEvent>| async move {
            sink.lock().unwrap().extend(batch);
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    seen.lock().unwrap().clone()
}

async fn an_event_exists_if_and_only_if_its_transaction_commits(route: PgRoute) {
    let (_t, db, outbox) = setup(route).await;
    let mut uow = db.begin().await.unwrap();
    outbox.publish(&mut *uow, &event(1)).await.unwrap();
    uow.rollback().await.unwrap();
    assert_eq!(outbox.pending().await.unwrap(), 0);

    let mut uow = db.begin().await.unwrap();
    outbox
        .publish_many(&mut *uow, &[event(2), event(3)])
        .await
        .unwrap();
    assert_eq!(
        outbox.dispatch_once(ok).await.unwrap(),
        0,
        "uncommitted events are not dispatched"
    );
    uow.commit().await.unwrap();
    assert_eq!(outbox.pending().await.unwrap(), 2);
}

async fn dispatch_hands_events_over_in_order_and_a_failing_handler_leaves_them_pending(
    route: PgRoute,
) {
    let (_t, db, outbox) = setup(route).await;
    let events: Vec<DomainEvent> = (0..5).map(event).collect();
    outbox.publish_many(&db, &events).await.unwrap();

    let err = outbox
        .dispatch_once(|_| async { Err::<(), _>("downstream is down") })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal);
    assert_eq!(
        outbox.pending().await.unwrap(),
        5,
        "nothing marked after a failure"
    );

    let seen = dispatched(&outbox).await;
    assert_eq!(seen.len(), 5);
    assert_eq!(
        seen, events,
        "the same events, oldest first, with every field"
    );
    assert_eq!(outbox.pending().await.unwrap(), 0);
}

async fn parallel_dispatchers_never_take_the_same_event(route: PgRoute) {
    let (_t, db, outbox) = setup(route).await;
    let events: Vec<DomainEvent> = (0..300).map(event).collect();
    outbox.publish_many(&db, &events).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let outbox = outbox.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = Arc::new(Mutex::new(Vec::new()));
                let sink = Arc::clone(&got);
                let n = outbox
                    .dispatch_once(move |batch: Vec<DomainEvent>| async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        sink.lock()
                            .unwrap()
                            .extend(batch.iter().map(DomainEvent::id));
                        Ok::<(), String>(())
                    })
                    .await
                    .unwrap();
                mine.extend(got.lock().unwrap().drain(..));
                if n == 0 {
                    return mine;
                }
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 300, "each event dispatched once");
    assert_eq!(unique.len(), 300);
}

async fn the_running_dispatcher_is_woken_by_a_commit_and_feeds_the_bus(route: PgRoute) {
    let (_t, db, outbox) = setup(route).await;
    let slow_poll = Outbox::new(
        &db,
        OutboxConfig {
            poll_interval: Duration::from_secs(30),
            ..OutboxConfig::default()
        },
    )
    .unwrap();
    let bus = EventBus::new(16);
    let mut subscriber = bus.subscribe();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let dispatcher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            slow_poll
                .run(
                    move |events: Vec<DomainEvent>| {
                        bus.publish(&events);
                        std::future::ready(Ok::<(), String>(()))
                    },
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let published = Instant::now();
    let e = event(7);
    outbox.publish(&db, &e).await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(5), subscriber.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received.id(), e.id());
    assert!(
        published.elapsed() < Duration::from_secs(1),
        "{:?}",
        published.elapsed()
    );
    stop.send(()).unwrap();
    assert_eq!(dispatcher.await.unwrap().unwrap(), 1);
}

async fn archival_moves_old_processed_events_in_batches(route: PgRoute) {
    let (_t, db, _outbox) = setup(route).await;
    let small = Outbox::new(
        &db,
        OutboxConfig {
            archive_batch: 7,
            batch_size: 100,
            ..OutboxConfig::default()
        },
    )
    .unwrap();
    small
        .publish_many(&db, &(0..20).map(event).collect::<Vec<_>>())
        .await
        .unwrap();
    small.dispatch_once(ok).await.unwrap();
    small.publish(&db, &event(99)).await.unwrap(); // still pending: never archived
    assert_eq!(
        small.archive(Duration::from_secs(3600)).await.unwrap(),
        0,
        "not old enough"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(small.archive(Duration::from_millis(1)).await.unwrap(), 20);
    assert_eq!(small.pending().await.unwrap(), 1);
    let archived: i64 = sqlx::query_scalar("SELECT count(*) FROM neo_events.outbox_archive")
        .persistent(false)
        .fetch_one(&mut *db.statement_connection().await.unwrap())
        .await
        .unwrap();
    assert_eq!(archived, 20);
}

#[test]
fn event_types_and_ids_are_validated() {
    for bad in [
        "created",
        "Organization.created",
        "organization..created",
        "organization.",
        "organization.9x",
        "",
    ] {
        let err = DomainEvent::new(bad, "organization", "org_1", &1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Validation, "{bad:?}");
    }
    assert!(DomainEvent::new("organization.created", "Organization", "org_1", &1).is_err());
    assert!(DomainEvent::new("organization.created", "organization", "", &1).is_err());
    assert!(event(1).with_metadata(serde_json::json!([1])).is_err());
    let e = event(1)
        .correlated_with(uuid::Uuid::now_v7())
        .schema_version(2);
    assert_eq!(e.version(), 2);
    assert!(e.correlation_id().is_some());
}

async fn the_publish_cte_records_events_in_the_business_statement(route: PgRoute) {
    let (_t, db, outbox) = setup(route).await;
    let mut conn = db.statement_connection().await.unwrap();
    sqlx::query("CREATE TABLE orgs (id uuid PRIMARY KEY, name text NOT NULL)")
        .persistent(false)
        .execute(&mut *conn)
        .await
        .unwrap();
    conn.finish().await.unwrap();
    let insert = format!(
        "WITH {} INSERT INTO orgs (id, name) VALUES ($1, $2)",
        outbox.publish_cte(3)
    );
    // Every column set on one of them, to read each back.
    let first = event(1).correlated_with(uuid::Uuid::now_v7());
    let second = event(2)
        .tenant(neo_core::TenantId::new())
        .with_metadata(serde_json::json!({ "actor": "alice" }))
        .unwrap()
        .caused_by(first.id())
        .schema_version(3);
    let events = [first, second];
    for commit in [false, true] {
        let mut uow = db.begin().await.unwrap();
        let (json, channel) = outbox.publish_params(&events);
        sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
            .bind(uuid::Uuid::now_v7())
            .bind("Acme")
            .bind(json)
            .bind(channel)
            .persistent(false)
            .execute(&mut **uow)
            .await
            .unwrap();
        if commit {
            uow.commit().await.unwrap();
        } else {
            uow.rollback().await.unwrap();
            assert_eq!(
                outbox.pending().await.unwrap(),
                0,
                "rolled back with the business row"
            );
        }
    }
    let mut seen = dispatched(&outbox).await;
    seen.sort_by_key(|e| e.aggregate_id().to_owned());
    assert_eq!(seen, events.to_vec(), "read back exactly as written");
}

async fn conditional_publish_ctes_record_only_what_their_condition_allows(route: PgRoute) {
    let (_t, db, outbox) = setup(route).await;
    let mut conn = db.statement_connection().await.unwrap();
    sqlx::query("CREATE TABLE orgs (id text PRIMARY KEY, name text NOT NULL)")
        .persistent(false)
        .execute(&mut *conn)
        .await
        .unwrap();
    conn.finish().await.unwrap();
    let mut conn = db.statement_connection().await.unwrap();
    sqlx::query("INSERT INTO orgs VALUES ('org_1', 'Acme'), ('org_2', 'Globex')")
        .persistent(false)
        .execute(&mut *conn)
        .await
        .unwrap();
    conn.finish().await.unwrap();
    // Renames one organization when it exists; publishes only if a row changed.
    let when = format!(
        "WITH updated AS (UPDATE orgs SET name = $2 WHERE id = $1 RETURNING id), {} \
         SELECT count(*) FROM updated",
        outbox.publish_cte_when(3, "EXISTS (SELECT 1 FROM updated)")
    );
    for (id, changed) in [("org_9", 0_i64), ("org_1", 1)] {
        let events = [event(1)];
        let (json, channel) = outbox.publish_params(&events);
        let mut conn = db.statement_connection().await.unwrap();
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(when.clone()))
            .bind(id)
            .bind("Renamed")
            .bind(json)
            .bind(channel)
            .persistent(false)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        conn.finish().await.unwrap();
        assert_eq!(count, changed);
        assert_eq!(
            outbox.pending().await.unwrap(),
            changed,
            "after renaming {id}"
        );
    }
    // Renames both, but publishes only the events of the rows it changed.
    let matching = format!(
        "WITH updated AS (UPDATE orgs SET name = 'Both' WHERE id = ANY($1) RETURNING id), {} \
         SELECT count(*) FROM updated",
        outbox.publish_cte_matching(2, "e.aggregate_id IN (SELECT id FROM updated)")
    );
    let events = [event(2), event(3)];
    let (json, channel) = outbox.publish_params(&events);
    let mut conn = db.statement_connection().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(matching))
        .bind(vec!["org_2", "org_3"])
        .bind(json)
        .bind(channel)
        .persistent(false)
        .execute(&mut *conn)
        .await
        .unwrap();
    conn.finish().await.unwrap();
    let ids: Vec<String> = dispatched(&outbox)
        .await
        .iter()
        .map(|e| e.aggregate_id().to_owned())
        .collect();
    assert_eq!(
        ids,
        ["org_1", "org_2"],
        "org_3 does not exist: its event is not recorded"
    );
}

neo_testkit::over_routes!(
    an_event_exists_if_and_only_if_its_transaction_commits,
    dispatch_hands_events_over_in_order_and_a_failing_handler_leaves_them_pending,
    parallel_dispatchers_never_take_the_same_event,
    the_running_dispatcher_is_woken_by_a_commit_and_feeds_the_bus,
    archival_moves_old_processed_events_in_batches,
    the_publish_cte_records_events_in_the_business_statement,
    conditional_publish_ctes_record_only_what_their_condition_allows,
);
