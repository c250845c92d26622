#[cfg(feature = "archive")]
use crate::rows_by_partition;
use neo_core::TenantId;
use neo_core::{ErrorKind, HasErrorKind};
use neo_db::{Db, DbConfig, RlsSetting};
use neo_events::{DomainEvent, EventBus, Outbox, OutboxConfig};
use neo_testkit::PgRoute;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

fn ok(_: Vec<DomainEvent>) -> std::future::Ready<Result<(), String>> {
    std::future::ready(Ok(()))
}
use std::time::{Duration, Instant};

/// How a contract test reaches PostgreSQL and keeps tenants apart.
#[derive(Debug, Clone, Copy)]
struct Mode {
    route: PgRoute,
    rls: bool,
}

/// Runs each contract test once per mode: shared tables (direct, PgBouncer) and row-level
/// security (direct, PgBouncer in front of the application role).
macro_rules! over_modes {
    ($($test:ident),+ $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn direct() {
                    super::$test(super::Mode { route: neo_testkit::PgRoute::Direct, rls: false }).await;
                }
                #[tokio::test]
                async fn pgbouncer() {
                    super::$test(super::Mode { route: neo_testkit::PgRoute::PgBouncer, rls: false }).await;
                }
                #[tokio::test]
                async fn rls() {
                    super::$test(super::Mode { route: neo_testkit::PgRoute::Direct, rls: true }).await;
                }
                #[tokio::test]
                async fn rls_pgbouncer() {
                    super::$test(super::Mode { route: neo_testkit::PgRoute::PgBouncer, rls: true }).await;
                }
            }
        )+
    };
}

/// One contract test's database and outbox. Under row-level security the owner migrates
/// (and makes the tests' own tables), the application role publishes acting for `tenant`,
/// the system role dispatches, archives and counts.
struct Env {
    /// The `Db` business writes and publishing use.
    db: Db,
    /// The `Db` of the tests' tables and raw reads.
    owner: Db,
    /// The system `Db` (`db` without row-level security).
    system: Db,
    outbox: Outbox,
    /// The tenant the test acts for, under row-level security.
    tenant: Option<TenantId>,
    app_role: Option<String>,
    _test_db: Option<neo_testkit::TestDatabase>,
    _split: Option<crate::tenancy::SplitDbs>,
}

/// A fresh database reached by `mode.route` (`pooler = "transaction"` through PgBouncer, with
/// the direct URL for LISTEN) and a migrated outbox on it, under row-level security when
/// `mode.rls`.
async fn setup(mode: Mode) -> Env {
    setup_with(
        mode,
        OutboxConfig {
            batch_size: 50,
            ..OutboxConfig::default()
        },
    )
    .await
}

/// [`setup`] with `config`.
async fn setup_with(mode: Mode, config: OutboxConfig) -> Env {
    if mode.rls {
        let split = crate::tenancy::split_dbs(mode.route).await;
        let owner_outbox = Outbox::new(&split.owner, config.clone())
            .unwrap()
            .with_row_level_security(&split.owner, RlsSetting::default());
        assert_eq!(
            owner_outbox.migrate().await.unwrap().applied,
            vec![1, 2, 3, 10, 11, 20]
        );
        split.grant(&[&config.schema]).await;
        let outbox = Outbox::new(&split.app, config)
            .unwrap()
            .with_row_level_security(&split.system, RlsSetting::default());
        assert!(outbox.is_row_level_security());
        return Env {
            db: split.app.clone(),
            owner: split.owner.clone(),
            system: split.system.clone(),
            outbox,
            tenant: Some(TenantId::new()),
            app_role: Some(split.roles.app().to_owned()),
            _test_db: None,
            _split: Some(split),
        };
    }
    let route = mode.route;
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
    let outbox = Outbox::new(&db, config).unwrap();
    assert_eq!(outbox.migrate().await.unwrap().applied, vec![1, 3, 10, 20]);
    Env {
        owner: db.clone(),
        system: db.clone(),
        db,
        outbox,
        tenant: None,
        app_role: None,
        _test_db: Some(test_db),
        _split: None,
    }
}

impl Env {
    /// An outbox on the same tables with `config`.
    fn outbox_with(&self, config: OutboxConfig) -> Outbox {
        let outbox = Outbox::new(&self.db, config).unwrap();
        if self.tenant.is_some() {
            outbox.with_row_level_security(&self.system, RlsSetting::default())
        } else {
            outbox
        }
    }

    /// Event `n`, of the test's tenant under row-level security.
    fn event(&self, n: u32) -> DomainEvent {
        match self.tenant {
            Some(tenant) => event(n).tenant(tenant),
            None => event(n),
        }
    }

    /// A transaction acting for the test's tenant under row-level security.
    async fn begin(&self) -> neo_db::UnitOfWork {
        match self.tenant {
            Some(tenant) => neo_db::TenantIsolation::row_level_security()
                .begin(&self.db, tenant)
                .await
                .unwrap(),
            None => self.db.begin().await.unwrap(),
        }
    }

    /// Publishes `events` with `outbox` and commits.
    async fn publish_now(&self, outbox: &Outbox, events: &[DomainEvent]) {
        let mut uow = self.begin().await;
        outbox.publish_many(&mut *uow, events).await.unwrap();
        uow.commit().await.unwrap();
    }

    /// Runs `sql` as the tables' owner; the application role may then use them.
    async fn ddl(&self, sql: &str) {
        let mut conn = self.owner.statement_connection().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .persistent(false)
            .execute(&mut *conn)
            .await
            .unwrap();
        if let Some(app) = &self.app_role {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO \"{app}\""
            )))
            .persistent(false)
            .execute(&mut *conn)
            .await
            .unwrap();
        }
        conn.finish().await.unwrap();
    }
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

async fn an_event_exists_if_and_only_if_its_transaction_commits(mode: Mode) {
    let env = setup(mode).await;
    let outbox = &env.outbox;
    let mut uow = env.begin().await;
    outbox.publish(&mut *uow, &env.event(1)).await.unwrap();
    uow.rollback().await.unwrap();
    assert_eq!(outbox.pending().await.unwrap(), 0);

    let mut uow = env.begin().await;
    outbox
        .publish_many(&mut *uow, &[env.event(2), env.event(3)])
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

async fn dispatch_hands_events_over_in_order_and_a_failing_handler_leaves_them_pending(mode: Mode) {
    let env = setup(mode).await;
    let outbox = &env.outbox;
    let events: Vec<DomainEvent> = (0..5).map(|n| env.event(n)).collect();
    env.publish_now(outbox, &events).await;

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

    let seen = dispatched(outbox).await;
    assert_eq!(seen.len(), 5);
    assert_eq!(
        seen, events,
        "the same events, oldest first, with every field"
    );
    assert_eq!(outbox.pending().await.unwrap(), 0);
}

async fn parallel_dispatchers_never_take_the_same_event(mode: Mode) {
    let env = setup(mode).await;
    let outbox = &env.outbox;
    let events: Vec<DomainEvent> = (0..300).map(|n| env.event(n)).collect();
    env.publish_now(outbox, &events).await;
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

async fn the_running_dispatcher_is_woken_by_a_commit_and_feeds_the_bus(mode: Mode) {
    let env = setup(mode).await;
    let outbox = &env.outbox;
    let slow_poll = env.outbox_with(OutboxConfig {
        poll_interval: Duration::from_secs(30),
        ..OutboxConfig::default()
    });
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
    let e = env.event(7);
    env.publish_now(outbox, std::slice::from_ref(&e)).await;
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

async fn archival_moves_old_processed_events_in_batches(mode: Mode) {
    let env = setup(mode).await;
    let small = env.outbox_with(OutboxConfig {
        archive_batch: 7,
        batch_size: 100,
        ..OutboxConfig::default()
    });
    env.publish_now(&small, &(0..20).map(|n| env.event(n)).collect::<Vec<_>>())
        .await;
    small.dispatch_once(ok).await.unwrap();
    env.publish_now(&small, &[env.event(99)]).await; // still pending: never archived
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
        .fetch_one(&mut *env.system.statement_connection().await.unwrap())
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

async fn the_publish_cte_records_events_in_the_business_statement(mode: Mode) {
    let env = setup(mode).await;
    let outbox = &env.outbox;
    env.ddl("CREATE TABLE orgs (id uuid PRIMARY KEY, name text NOT NULL)")
        .await;
    let insert = format!(
        "WITH {} INSERT INTO orgs (id, name) VALUES ($1, $2)",
        outbox.publish_cte(3)
    );
    // Every column set on one of them, to read each back.
    let first = env.event(1).correlated_with(uuid::Uuid::now_v7());
    let second = event(2)
        .tenant(env.tenant.unwrap_or_else(TenantId::new))
        .with_metadata(serde_json::json!({ "actor": "alice" }))
        .unwrap()
        .caused_by(first.id())
        .schema_version(3);
    let events = [first, second];
    for commit in [false, true] {
        let mut uow = env.begin().await;
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
    let mut seen = dispatched(outbox).await;
    seen.sort_by_key(|e| e.aggregate_id().to_owned());
    assert_eq!(seen, events.to_vec(), "read back exactly as written");
}

async fn conditional_publish_ctes_record_only_what_their_condition_allows(mode: Mode) {
    let env = setup(mode).await;
    let outbox = &env.outbox;
    env.ddl("CREATE TABLE orgs (id text PRIMARY KEY, name text NOT NULL)")
        .await;
    env.ddl("INSERT INTO orgs VALUES ('org_1', 'Acme'), ('org_2', 'Globex')")
        .await;
    // Renames one organization when it exists; publishes only if a row changed.
    let when = format!(
        "WITH updated AS (UPDATE orgs SET name = $2 WHERE id = $1 RETURNING id), {} \
         SELECT count(*) FROM updated",
        outbox.publish_cte_when(3, "EXISTS (SELECT 1 FROM updated)")
    );
    for (id, changed) in [("org_9", 0_i64), ("org_1", 1)] {
        let events = [env.event(1)];
        let (json, channel) = outbox.publish_params(&events);
        let mut conn = env.begin().await;
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(when.clone()))
            .bind(id)
            .bind("Renamed")
            .bind(json)
            .bind(channel)
            .persistent(false)
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        conn.commit().await.unwrap();
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
    let events = [env.event(2), env.event(3)];
    let (json, channel) = outbox.publish_params(&events);
    let mut conn = env.begin().await;
    sqlx::query(sqlx::AssertSqlSafe(matching))
        .bind(vec!["org_2", "org_3"])
        .bind(json)
        .bind(channel)
        .persistent(false)
        .execute(&mut **conn)
        .await
        .unwrap();
    conn.commit().await.unwrap();
    let ids: Vec<String> = dispatched(outbox)
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

/// Publishes `event` under `key` in a transaction of its own and commits.
async fn publish_keyed(
    env: &Env,
    outbox: &Outbox,
    event: &DomainEvent,
    key: &str,
) -> neo_events::Published {
    let mut uow = env.begin().await;
    let published = outbox
        .publish_idempotent(&mut *uow, event, key)
        .await
        .unwrap();
    uow.commit().await.unwrap();
    published
}

async fn a_repeated_idempotency_key_records_nothing_and_answers_the_first_event(mode: Mode) {
    let env = setup(mode).await;
    let outbox = &env.outbox;
    let first = env.event(1);
    let published = publish_keyed(&env, outbox, &first, "order-1").await;
    assert_eq!(
        (published.event_id, published.duplicate),
        (first.id(), false)
    );
    let again = publish_keyed(&env, outbox, &env.event(2), "order-1").await;
    assert_eq!((again.event_id, again.duplicate), (first.id(), true));
    assert_eq!(
        outbox.pending().await.unwrap(),
        1,
        "the duplicate recorded nothing"
    );
    let ids: Vec<_> = dispatched(outbox)
        .await
        .iter()
        .map(DomainEvent::id)
        .collect();
    assert_eq!(ids, vec![first.id()]);

    // A key whose transaction rolled back was never taken.
    let mut uow = env.begin().await;
    outbox
        .publish_idempotent(&mut *uow, &env.event(3), "order-2")
        .await
        .unwrap();
    uow.rollback().await.unwrap();
    let fourth = env.event(4);
    let published = publish_keyed(&env, outbox, &fourth, "order-2").await;
    assert_eq!(
        (published.event_id, published.duplicate),
        (fourth.id(), false)
    );

    // A concurrent publisher of the same key waits for the first transaction, then gets its id.
    let fifth = env.event(5);
    let mut holder = env.begin().await;
    outbox
        .publish_idempotent(&mut *holder, &fifth, "order-3")
        .await
        .unwrap();
    let (second_env_event, other) = (env.event(6), outbox.clone());
    let tenant = env.tenant;
    let db = env.db.clone();
    let racer = tokio::spawn(async move {
        let mut uow = match tenant {
            Some(t) => neo_db::TenantIsolation::row_level_security()
                .begin(&db, t)
                .await
                .unwrap(),
            None => db.begin().await.unwrap(),
        };
        let p = other
            .publish_idempotent(&mut *uow, &second_env_event, "order-3")
            .await
            .unwrap();
        uow.commit().await.unwrap();
        p
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !racer.is_finished(),
        "the second publisher waits for the first"
    );
    holder.commit().await.unwrap();
    let raced = racer.await.unwrap();
    assert_eq!((raced.event_id, raced.duplicate), (fifth.id(), true));
    assert_eq!(outbox.pending().await.unwrap(), 2, "events 4 and 5");

    // After the window the key starts over; expired keys are reclaimed.
    // (A window of one second: the repeat inside it must be published within it, which a
    // loaded machine cannot promise for 100 ms.)
    let window = Duration::from_secs(1);
    let short = env.outbox_with(OutboxConfig {
        idempotency_window: window,
        ..OutboxConfig::default()
    });
    let seventh = env.event(7);
    assert!(
        !publish_keyed(&env, &short, &seventh, "order-4")
            .await
            .duplicate
    );
    assert!(
        publish_keyed(&env, &short, &env.event(8), "order-4")
            .await
            .duplicate
    );
    tokio::time::sleep(window + Duration::from_millis(50)).await;
    let ninth = env.event(9);
    let published = publish_keyed(&env, &short, &ninth, "order-4").await;
    assert_eq!(
        (published.event_id, published.duplicate),
        (ninth.id(), false)
    );
    tokio::time::sleep(window + Duration::from_millis(50)).await;
    assert_eq!(short.expire_idempotency_keys().await.unwrap(), 1, "order-4");
    assert!(
        publish_keyed(&env, outbox, &env.event(10), "order-1")
            .await
            .duplicate,
        "kept"
    );

    // Bad keys are refused before any statement.
    for key in [
        String::new(),
        "k".repeat(neo_events::MAX_IDEMPOTENCY_KEY_LEN + 1),
    ] {
        let mut uow = env.begin().await;
        let error = outbox
            .publish_idempotent(&mut *uow, &env.event(11), &key)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Validation, "{error}");
        uow.rollback().await.unwrap();
    }
}

over_modes!(
    a_repeated_idempotency_key_records_nothing_and_answers_the_first_event,
    an_event_exists_if_and_only_if_its_transaction_commits,
    dispatch_hands_events_over_in_order_and_a_failing_handler_leaves_them_pending,
    parallel_dispatchers_never_take_the_same_event,
    the_running_dispatcher_is_woken_by_a_commit_and_feeds_the_bus,
    archival_moves_old_processed_events_in_batches,
    the_publish_cte_records_events_in_the_business_statement,
    conditional_publish_ctes_record_only_what_their_condition_allows,
);

#[cfg(feature = "archive")]
over_modes!(retention_archives_and_drops_old_partitions_and_keeps_pending_work);

/// Partitions one second wide, made 20 ahead, retired one second after they end.
#[cfg(feature = "archive")]
fn second_partitions() -> neo_events::PartitionConfig {
    neo_events::PartitionConfig {
        width: Duration::from_secs(1),
        premake: 20,
        retention: Duration::from_secs(1),
        ..neo_events::PartitionConfig::default()
    }
}

#[cfg(feature = "archive")]
async fn retention_archives_and_drops_old_partitions_and_keeps_pending_work(mode: Mode) {
    let config = OutboxConfig {
        batch_size: 50,
        partitions: second_partitions(),
        ..OutboxConfig::default()
    };
    let env = setup_with(mode, config.clone()).await;
    // Partition DDL runs as the tables' owner.
    let maintainer = Outbox::new(&env.owner, config).unwrap();
    let made = maintainer.partitions().await.unwrap();
    assert_eq!(made[0].table, "outbox_unpartitioned");
    assert_eq!(made[0].from, None);
    assert!(
        made.len() >= 21,
        "the current second and 20 ahead: {made:?}"
    );

    let (e1, e2) = (env.event(1), env.event(2));
    env.publish_now(&env.outbox, &[e1.clone(), e2.clone()])
        .await;
    assert_eq!(dispatched(&env.outbox).await.len(), 2);
    // Across a partition boundary: the next second's partition.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let e3 = env.event(3);
    env.publish_now(&env.outbox, std::slice::from_ref(&e3))
        .await;
    let ids = [*e1.id().as_uuid(), *e2.id().as_uuid(), *e3.id().as_uuid()];
    let before = rows_by_partition(&env.system, "outbox", ids.to_vec()).await;
    assert_eq!(before.len(), 3);
    let part = |id: uuid::Uuid| {
        let id = id.to_string();
        before.iter().find(|r| r.1["id"] == id).unwrap().0.clone()
    };
    let (old, pending) = (part(*e1.id().as_uuid()), part(*e3.id().as_uuid()));
    assert_eq!(
        part(*e2.id().as_uuid()),
        old,
        "one transaction, one recorded_at"
    );
    assert_ne!(old, pending, "published a second apart");
    if env.tenant.is_some() {
        // Through the parent the policy shows the tenant its event; the partition read
        // directly (security on, no policy) shows the application role nothing.
        let env = &env;
        let count = |table: String| async move {
            let mut uow = env.begin().await;
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM neo_events.{table}"
            )))
            .persistent(false)
            .fetch_one(&mut **uow)
            .await
            .unwrap();
            uow.commit().await.unwrap();
            n
        };
        assert_eq!(count("outbox".to_owned()).await, 3);
        assert_eq!(count(format!("\"{pending}\"")).await, 0);
    }

    // Both partitions end more than the retention ago.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = neo_events::ZstdJsonLines::new(dir.path());
    let report = maintainer
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
    assert!(
        dropped.contains(&"outbox_unpartitioned"),
        "empty, and ends at the migration: {report:?}"
    );

    // The archive holds exactly the processed rows of the dropped partition.
    let retired = report.dropped.iter().find(|p| p.table == old).unwrap();
    let mut archived: Vec<serde_json::Value> = neo_tenant::read_archive(&archive.path(retired))
        .unwrap()
        .into_iter()
        .map(|line| {
            assert_eq!(
                (line.store.as_str(), line.table.as_str()),
                ("outbox", "outbox")
            );
            line.row
        })
        .collect();
    archived.sort_by_key(|row| row["id"].as_str().unwrap().to_owned());
    let expected: Vec<serde_json::Value> = before
        .iter()
        .filter(|r| r.0 == old)
        .map(|r| r.1.clone())
        .collect();
    assert_eq!(archived, expected);
    assert!(expected.iter().all(|row| !row["processed_at"].is_null()));

    // The pending event is still there and is dispatched; then its partition goes too.
    assert_eq!(
        rows_by_partition(&env.system, "outbox", ids[..2].to_vec())
            .await
            .len(),
        0
    );
    assert_eq!(env.outbox.pending().await.unwrap(), 1);
    let got = dispatched(&env.outbox).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id(), e3.id());
    let report = maintainer.maintain_partitions(None).await.unwrap();
    assert!(
        report.dropped.iter().any(|p| p.table == pending),
        "{report:?}"
    );
    assert!(report.kept_pending.is_empty(), "{report:?}");
    assert_eq!(
        rows_by_partition(&env.system, "outbox", vec![ids[2]])
            .await
            .len(),
        0
    );
    // Partitions ahead were made again for the time that passed; nothing ahead was dropped.
    let left = maintainer.partitions().await.unwrap();
    assert!(
        left.iter()
            .all(|p| p.to > chrono::Utc::now() - chrono::TimeDelta::seconds(3))
    );
}

/// Rows written before migration 20 stay readable, dispatchable and archivable after it.
#[tokio::test]
async fn migrating_to_partitions_keeps_existing_events() {
    let test_db = PgRoute::Direct.database().await;
    let db = Db::connect(&DbConfig::with_url(test_db.url()))
        .await
        .unwrap();
    let config = OutboxConfig {
        batch_size: 1,
        ..OutboxConfig::default()
    };
    // The outbox as it was before migration 20.
    let before = neo_db::MigrationSet::new("neo_events")
        .unwrap()
        .with(
            1,
            "outbox",
            include_str!("../../migrations/outbox/1_outbox.sql"),
        )
        .with(
            3,
            "events carry trace context",
            include_str!("../../migrations/outbox/3_events_carry_trace_context.sql"),
        )
        .with(
            10,
            "idempotency keys",
            include_str!("../../migrations/outbox/10_idempotency_keys.sql"),
        );
    let schema = neo_db::Schema::new(&config.schema).unwrap();
    before.run_in_schema(&db, &schema).await.unwrap();
    let outbox = Outbox::new(&db, config).unwrap();
    let events: Vec<DomainEvent> = (1..=3).map(event).collect();
    let mut uow = db.begin().await.unwrap();
    outbox.publish_many(&mut *uow, &events).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(dispatched(&outbox).await[0].id(), events[0].id());

    assert_eq!(outbox.migrate().await.unwrap().applied, vec![20]);
    let partitions = outbox.partitions().await.unwrap();
    assert_eq!(partitions[0].table, "outbox_unpartitioned");
    assert!(partitions.len() >= 5, "{partitions:?}");
    assert_eq!(outbox.pending().await.unwrap(), 2);
    assert_eq!(dispatched(&outbox).await[0].id(), events[1].id());
    // New events go to the new partitions, next to the old ones.
    let late = event(4);
    let mut uow = db.begin().await.unwrap();
    outbox.publish(&mut *uow, &late).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(dispatched(&outbox).await[0].id(), events[2].id());
    assert_eq!(dispatched(&outbox).await[0].id(), late.id());
    let mut conn = db.acquire().await.unwrap();
    let homes: Vec<(String, uuid::Uuid)> = sqlx::query_as(
        "SELECT c.relname::text, o.id FROM neo_events.outbox o JOIN pg_class c ON c.oid = o.tableoid",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(homes.len(), 4);
    for (home, id) in &homes {
        if *id == *late.id().as_uuid() {
            assert!(home.starts_with("outbox_p"), "{home}");
        } else {
            assert_eq!(home, "outbox_unpartitioned");
        }
    }
    // The row-wise archive still moves processed events out of the partitioned table.
    assert_eq!(outbox.archive(Duration::ZERO).await.unwrap(), 4);
    let archived: i64 = sqlx::query_scalar("SELECT count(*) FROM neo_events.outbox_archive")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(archived, 4);
}

/// Where each event is: the name of the partition holding it.
async fn homes(db: &Db) -> Vec<(String, uuid::Uuid)> {
    let mut conn = db.acquire().await.unwrap();
    sqlx::query_as(
        "SELECT c.relname::text, o.id FROM neo_events.outbox o \
         JOIN pg_class c ON c.oid = o.tableoid ORDER BY o.id",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap()
}

/// Maintenance fell behind: events go to the DEFAULT partition (an insert never fails), and
/// the next maintenance moves them into the partition it makes for their time.
#[tokio::test]
async fn events_beyond_the_partitions_made_go_to_the_default_and_move_when_maintenance_catches_up()
{
    let test_db = PgRoute::Direct.database().await;
    let db = Db::connect(&DbConfig::with_url(test_db.url()))
        .await
        .unwrap();
    let outbox = Outbox::new(
        &db,
        OutboxConfig {
            partitions: neo_events::PartitionConfig {
                width: Duration::from_secs(1),
                premake: 0,
                ..neo_events::PartitionConfig::default()
            },
            ..OutboxConfig::default()
        },
    )
    .unwrap();
    outbox.migrate().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let late = event(1);
    let mut uow = db.begin().await.unwrap();
    outbox.publish(&mut *uow, &late).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(homes(&db).await[0].0, "outbox_default");

    let made = outbox.ensure_partitions().await.unwrap();
    assert!(!made.is_empty());
    let home = homes(&db).await[0].0.clone();
    assert!(made.iter().any(|p| p.table == home), "{home} in {made:?}");
    // Contiguous ranges from the migration's bound on: no gap, no overlap.
    let partitions = outbox.partitions().await.unwrap();
    for pair in partitions.windows(2) {
        assert_eq!(Some(pair[0].to), pair[1].from, "{partitions:?}");
    }
    assert_eq!(dispatched(&outbox).await[0].id(), late.id());
}
