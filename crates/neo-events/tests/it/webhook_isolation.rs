//! Cross-tenant isolation of the outbox and the webhooks under row-level security: every
//! tenant-scoped call of tenant A — read, list, count, update, delete, replay, offboarding —
//! never returns, counts or changes tenant B's rows, and B's ids presented by A are not found;
//! a call without a tenant fails before any query; the application role without the setting
//! sees no row of any table (and is neither superuser, owner nor `BYPASSRLS`). With a schema
//! per tenant, each tenant's stores reach only their own schema.

use crate::tenancy::role_facts;
use crate::webhooks::{
    Isolation, Mode, Running, Sealing, Setup, config, event, publish, setup_in, wait_until,
};
use neo_core::{ErrorKind, HasErrorKind, TenantId};
use neo_events::{DeliveryStatus, Endpoint, EventError, NewEndpoint};
use neo_tenant::{ExportSink, TenantData};
use neo_testkit::{HttpReceiver, PgRoute, ScriptedResponse};
use std::collections::HashMap;
use std::time::Duration;

/// Every table holding tenant rows, the delivery queue's jobs too.
const TABLES: [&str; 8] = [
    "neo_events.outbox",
    "neo_events.outbox_archive",
    "neo_events.webhook_endpoints",
    "neo_events.webhook_subscriptions",
    "neo_events.webhook_messages",
    "neo_events.webhook_deliveries",
    "neo_events.outbox_idempotency",
    "neo_queue.jobs",
];

/// The idempotency key every tenant publishes its second event under: keys are per tenant.
const SHARED_KEY: &str = "same-key-in-every-tenant";

/// Rows exported per table.
#[derive(Default)]
struct Rows(HashMap<String, Vec<serde_json::Value>>);

impl ExportSink for Rows {
    fn row(&mut self, table: &str, row: serde_json::Value) -> Result<(), neo_tenant::Error> {
        self.0.entry(table.to_owned()).or_default().push(row);
        Ok(())
    }
}

async fn rls(route: PgRoute) -> Setup {
    setup_in(
        Mode {
            route,
            sealing: Sealing::Off,
            isolation: Isolation::Rls,
        },
        // One attempt: a failing delivery is dead at once (replay has something to do).
        config(&[]),
    )
    .await
}

/// `count(*)` of each table on `db`, with `sql` run first in the same transaction.
async fn counts(db: &neo_db::Db, first: Option<String>) -> Vec<i64> {
    let mut tx = db.begin().await.unwrap();
    if let Some(sql) = first {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .persistent(false)
            .execute(&mut **tx)
            .await
            .unwrap();
    }
    let mut counts = Vec::new();
    for table in TABLES {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .persistent(false)
                .fetch_one(&mut **tx)
                .await
                .unwrap();
        counts.push(n);
    }
    tx.rollback().await.unwrap();
    counts
}

fn not_found<T: std::fmt::Debug>(result: Result<T, EventError>) {
    let error = result.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound, "{error:?}");
}

/// A tenant's endpoint (subscribed to everything), its two events published (the second
/// under [`SHARED_KEY`]) and dispatched, and their deliveries dead after the one failing
/// attempt.
async fn tenant_with_dead_deliveries(
    s: &Setup,
    receiver: &HttpReceiver,
    tenant: TenantId,
) -> Endpoint {
    neo_tenant::scope(tenant, async {
        let endpoint = s
            .webhooks
            .create_endpoint(NewEndpoint::new(receiver.url("/hook")).subscribe("*"))
            .await
            .unwrap();
        assert_eq!(endpoint.tenant_id, Some(tenant), "the task's tenant");
        publish(s, &[event("organization.created", 1)]).await;
        let mut uow = tenant_tx(s, tenant).await;
        let second = event("organization.renamed", 2);
        let published = s
            .outbox
            .publish_idempotent(&mut *uow, &second, SHARED_KEY)
            .await
            .unwrap();
        uow.commit().await.unwrap();
        assert_eq!(
            (published.event_id, published.duplicate),
            (second.id(), false),
            "another tenant's key is not this tenant's"
        );
        endpoint
    })
    .await
}

async fn dead(s: &Setup, tenant: TenantId, endpoint: uuid::Uuid) -> Vec<neo_events::Delivery> {
    neo_tenant::scope(tenant, async {
        s.webhooks
            .deliveries(endpoint, Some(DeliveryStatus::Dead), 100)
            .await
            .unwrap()
    })
    .await
}

async fn tenant_a_never_sees_counts_or_changes_tenant_bs_rows(route: PgRoute) {
    let s = rls(route).await;
    let receiver = HttpReceiver::start().await.unwrap();
    receiver.set_default(ScriptedResponse::status(500));
    let (a, b) = (TenantId::new(), TenantId::new());
    let since = chrono::Utc::now() - chrono::Duration::seconds(60);
    let ea = tenant_with_dead_deliveries(&s, &receiver, a).await;
    let eb = tenant_with_dead_deliveries(&s, &receiver, b).await;
    let running = Running::start(&s);
    for (tenant, endpoint) in [(a, ea.id), (b, eb.id)] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while dead(&s, tenant, endpoint).await.len() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "deliveries never died"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    running.stop().await;
    s.webhooks.shutdown().await;
    // Each endpoint got its own tenant's two events, and only those.
    assert_eq!(receiver.requests().len(), 4);
    let b_deliveries = dead(&s, b, eb.id).await;
    assert!(b_deliveries.iter().all(|d| d.tenant_id == Some(b)));
    let b_delivery = b_deliveries[0].id;

    neo_tenant::scope(a, async {
        let w = &s.webhooks;
        // Reads, lists and counts.
        not_found(w.endpoint(eb.id).await);
        let mine: Vec<uuid::Uuid> = w
            .endpoints(None)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(mine, vec![ea.id]);
        assert_eq!(w.endpoints(Some(a)).await.unwrap().len(), 1);
        not_found(w.delivery(b_delivery).await);
        assert!(w.deliveries(eb.id, None, 100).await.unwrap().is_empty());
        not_found(w.endpoint_stats(eb.id, Duration::from_secs(3600)).await);
        not_found(w.verification(eb.id).await);
        not_found(w.send_verification(eb.id).await);
        not_found(w.confirm_verification(eb.id, "c").await);
        not_found(w.set_url(eb.id, "http://127.0.0.1:9/elsewhere").await);
        let own = w
            .endpoint_stats(ea.id, Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(
            (own.deliveries, own.dead),
            (2, 2),
            "only A's own deliveries"
        );
        assert_eq!(w.deliveries(ea.id, None, 100).await.unwrap().len(), 2);
        // Updates, deletes, replays.
        not_found(w.set_enabled(eb.id, false, Some("by a")).await);
        not_found(w.rotate_secret(eb.id).await);
        not_found(w.subscribe(eb.id, "billing.*").await);
        assert!(!w.unsubscribe(eb.id, "*").await.unwrap());
        assert!(!w.replay(b_delivery).await.unwrap());
        assert_eq!(w.replay_since(eb.id, since).await.unwrap(), 0);
        assert!(!w.delete_endpoint(eb.id).await.unwrap());
    })
    .await;

    // B's rows are as they were.
    neo_tenant::scope(b, async {
        let stored = s.webhooks.endpoint(eb.id).await.unwrap();
        assert!(stored.enabled);
        assert_eq!(stored.url, eb.url, "not re-pointed by A");
        assert_eq!(stored.secret(), eb.secret(), "not rotated");
        assert_eq!(
            s.webhooks.delivery(b_delivery).await.unwrap().status,
            DeliveryStatus::Dead
        );
    })
    .await;
    assert_eq!(
        dead(&s, b, eb.id).await.len(),
        2,
        "nothing replayed or deleted"
    );
    let subs: Vec<String> = sqlx::query_scalar(
        "SELECT filter FROM neo_events.webhook_subscriptions WHERE endpoint_id = $1",
    )
    .bind(eb.id)
    .persistent(false)
    .fetch_all(&mut *s.system.statement_connection().await.unwrap())
    .await
    .unwrap();
    assert_eq!(
        subs,
        vec!["*".to_owned()],
        "not subscribed nor unsubscribed by A"
    );

    // A's key answers A's first event, never B's.
    let b_first: Vec<uuid::Uuid> = b_deliveries.iter().map(|d| d.message_id).collect();
    let mut uow = tenant_tx(&s, a).await;
    let again = s
        .outbox
        .publish_idempotent(
            &mut *uow,
            &event("organization.renamed", 3).tenant(a),
            SHARED_KEY,
        )
        .await
        .unwrap();
    uow.commit().await.unwrap();
    assert!(again.duplicate);
    assert!(
        !b_first.contains(again.event_id.as_uuid()),
        "B's event answered to A"
    );
    assert!(
        dead(&s, a, ea.id)
            .await
            .iter()
            .any(|d| d.message_id == *again.event_id.as_uuid()),
        "A's own first event"
    );

    // A's own calls work on A's rows.
    neo_tenant::scope(a, async {
        let a_delivery = dead(&s, a, ea.id).await[0].id;
        assert!(s.webhooks.replay(a_delivery).await.unwrap());
        assert!(s.webhooks.delete_endpoint(ea.id).await.unwrap());
    })
    .await;
}

async fn calls_without_a_tenant_fail_before_any_query(route: PgRoute) {
    let s = rls(route).await;
    let w = &s.webhooks;
    let id = uuid::Uuid::now_v7();
    let no_tenant = |e: EventError| {
        assert!(matches!(e, EventError::Tenant(_)), "{e:?}");
    };
    no_tenant(
        w.create_endpoint(NewEndpoint::new("http://127.0.0.1:9/hook"))
            .await
            .unwrap_err(),
    );
    no_tenant(w.endpoint(id).await.unwrap_err());
    no_tenant(w.endpoints(None).await.unwrap_err());
    no_tenant(w.set_enabled(id, false, None).await.unwrap_err());
    no_tenant(w.rotate_secret(id).await.unwrap_err());
    no_tenant(w.delete_endpoint(id).await.unwrap_err());
    no_tenant(w.subscribe(id, "*").await.unwrap_err());
    no_tenant(w.unsubscribe(id, "*").await.unwrap_err());
    no_tenant(w.delivery(1).await.unwrap_err());
    no_tenant(w.deliveries(id, None, 10).await.unwrap_err());
    no_tenant(w.verification(id).await.unwrap_err());
    no_tenant(w.send_verification(id).await.unwrap_err());
    no_tenant(w.confirm_verification(id, "c").await.unwrap_err());
    no_tenant(w.set_url(id, "http://127.0.0.1:9/hook").await.unwrap_err());
    no_tenant(
        w.endpoint_stats(id, Duration::from_secs(60))
            .await
            .unwrap_err(),
    );
    no_tenant(w.replay(1).await.unwrap_err());
    no_tenant(w.replay_since(id, chrono::Utc::now()).await.unwrap_err());
    // An event without a tenant is refused by the outbox before its statement.
    let mut uow = s.db.begin().await.unwrap();
    no_tenant(
        s.outbox
            .publish(&mut *uow, &event("organization.created", 1))
            .await
            .unwrap_err(),
    );
    uow.rollback().await.unwrap();
    let mut uow = s.db.begin().await.unwrap();
    no_tenant(
        s.outbox
            .publish_idempotent(&mut *uow, &event("organization.created", 1), "k")
            .await
            .unwrap_err(),
    );
    uow.rollback().await.unwrap();
    // An explicit tenant is enough.
    let tenant = TenantId::new();
    let endpoint = w
        .create_endpoint(NewEndpoint::new("http://127.0.0.1:9/hook").tenant(tenant))
        .await
        .unwrap();
    assert_eq!(w.endpoints(Some(tenant)).await.unwrap(), vec![endpoint]);
}

async fn the_app_role_without_the_setting_sees_and_writes_no_row(route: PgRoute) {
    let s = rls(route).await;
    let receiver = HttpReceiver::start().await.unwrap();
    receiver.set_default(ScriptedResponse::status(500));
    let tenant = TenantId::new();
    let endpoint = tenant_with_dead_deliveries(&s, &receiver, tenant).await;
    assert_eq!(s.webhooks.dispatch_once(&s.outbox).await.unwrap(), 2);
    replayed_into_jobs(&s, tenant, &endpoint).await;
    // One more event, left pending, and one archived.
    let mut tx = tenant_tx(&s, tenant).await;
    s.outbox
        .publish(&mut *tx, &event("organization.deleted", 3).tenant(tenant))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut conn = s.system.statement_connection().await.unwrap();
    sqlx::query("UPDATE neo_events.outbox SET processed_at = now() - interval '1 hour' WHERE processed_at IS NOT NULL")
        .persistent(false)
        .execute(&mut *conn)
        .await
        .unwrap();
    conn.finish().await.unwrap();
    assert_eq!(s.outbox.archive(Duration::from_secs(60)).await.unwrap(), 2);

    let app = role_facts(&s.db, "neo_events.webhook_deliveries").await;
    assert!(app.bound_by_policies(), "the app role: {app:?}");
    let system = role_facts(&s.system, "neo_events.webhook_deliveries").await;
    assert!(
        system.crosses_tenants_only_by_bypassrls(),
        "the system role: {system:?}"
    );

    let system = counts(&s.system, None).await;
    assert!(
        system.iter().all(|n| *n > 0),
        "every table holds rows: {system:?}"
    );
    assert_eq!(
        counts(&s.db, None).await,
        vec![0; TABLES.len()],
        "no setting"
    );
    let other = format!(
        "SELECT set_config('neo.tenant_id', '{}', true)",
        TenantId::new()
    );
    assert_eq!(
        counts(&s.db, Some(other)).await,
        vec![0; TABLES.len()],
        "another tenant"
    );
    let own = format!("SELECT set_config('neo.tenant_id', '{tenant}', true)");
    assert_eq!(
        counts(&s.db, Some(own)).await,
        system,
        "its own tenant sees them all"
    );

    // Nor can it write a row without the setting, or for another tenant with it.
    let mut tx = s.db.begin().await.unwrap();
    let refused = sqlx::query(
        "INSERT INTO neo_events.webhook_endpoints (id, tenant_id, url, secrets) VALUES ($1, $2, 'http://x', '{}')",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(tenant.as_uuid())
    .persistent(false)
    .execute(&mut **tx)
    .await;
    assert!(refused.is_err(), "written without the setting");
    drop(tx);
    let mut tx = neo_db::TenantIsolation::row_level_security()
        .begin(&s.db, TenantId::new())
        .await
        .unwrap();
    let refused = s
        .outbox
        .publish(&mut *tx, &event("organization.created", 4).tenant(tenant))
        .await;
    assert!(refused.is_err(), "another tenant's event written");
    drop(tx);
    let _ = endpoint;
}

/// Waits until `tenant`'s two deliveries to `endpoint` died (their inline first attempts
/// failed) and those attempts' jobs were withdrawn, then replays both: each replay enqueues a
/// job that stays in the queue (no worker runs here), so the tenant has rows in
/// `neo_queue.jobs` too.
async fn replayed_into_jobs(s: &Setup, tenant: TenantId, endpoint: &Endpoint) {
    neo_tenant::scope(tenant, async {
        wait_until(
            "both deliveries dead and their inline jobs withdrawn",
            Duration::from_secs(10),
            || async {
                let dead = s
                    .webhooks
                    .deliveries(endpoint.id, Some(DeliveryStatus::Dead), 10)
                    .await
                    .unwrap()
                    .len();
                let mut tx = s.system.begin().await.unwrap();
                let jobs: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM neo_queue.jobs WHERE tenant = $1")
                        .bind(tenant.to_string())
                        .persistent(false)
                        .fetch_one(&mut **tx)
                        .await
                        .unwrap();
                dead == 2 && jobs == 0
            },
        )
        .await;
        let since = chrono::Utc::now() - chrono::Duration::hours(1);
        assert_eq!(
            s.webhooks.replay_since(endpoint.id, since).await.unwrap(),
            2
        );
    })
    .await;
}

async fn tenant_tx(s: &Setup, tenant: TenantId) -> neo_db::UnitOfWork {
    neo_db::TenantIsolation::row_level_security()
        .begin(&s.db, tenant)
        .await
        .unwrap()
}

async fn offboarding_exports_and_purges_one_tenant_only(route: PgRoute) {
    let s = rls(route).await;
    let receiver = HttpReceiver::start().await.unwrap();
    receiver.set_default(ScriptedResponse::status(500));
    let (a, b) = (TenantId::new(), TenantId::new());
    let ea = tenant_with_dead_deliveries(&s, &receiver, a).await;
    let eb = tenant_with_dead_deliveries(&s, &receiver, b).await;
    assert_eq!(s.webhooks.dispatch_once(&s.outbox).await.unwrap(), 4);
    replayed_into_jobs(&s, a, &ea).await;
    replayed_into_jobs(&s, b, &eb).await;
    let before = counts(&s.system, None).await;

    for store in [&s.outbox as &dyn TenantData, &s.webhooks, &s.queue] {
        let mut rows = Rows::default();
        let n = store.export(a, &mut rows).await.unwrap();
        assert!(n > 0, "{} exported nothing", store.name());
        for (table, rows) in &rows.0 {
            for row in rows {
                let text = row.to_string();
                assert!(
                    !text.contains(&b.to_string()),
                    "{table}: B's row exported: {text}"
                );
                assert!(
                    !text.contains(&eb.id.to_string()),
                    "{table}: B's endpoint exported"
                );
            }
        }
        assert!(store.purge(a).await.unwrap() > 0);
        assert_eq!(store.purge(a).await.unwrap(), 0, "idempotent");
    }
    let after = counts(&s.system, None).await;
    // outbox: A's 2 of 4 gone; archive empty; endpoints, subscriptions: A's 1 of 2;
    // messages and deliveries: A's 2 of 4; idempotency keys: A's 1 of 2; the replayed
    // deliveries' jobs: A's 2 of 4.
    assert_eq!(before, vec![4, 0, 2, 2, 4, 4, 2, 4]);
    assert_eq!(after, vec![2, 0, 1, 1, 2, 2, 1, 2]);
    neo_tenant::scope(b, async {
        assert_eq!(s.webhooks.endpoints(None).await.unwrap().len(), 1);
        assert_eq!(
            s.webhooks.deliveries(eb.id, None, 10).await.unwrap().len(),
            2
        );
    })
    .await;
    neo_tenant::scope(a, async {
        not_found(s.webhooks.endpoint(ea.id).await);
    })
    .await;
}

/// Schema per tenant: each tenant's outbox and webhooks in a schema of their own (and a job
/// kind of their own), reached with the same role; A's store never reaches B's rows.
async fn schema_per_tenant_stores_never_reach_each_others_rows(route: PgRoute) {
    use neo_db::{Db, DbConfig};
    use neo_events::{Outbox, OutboxConfig, Webhooks};
    use neo_queue::{Queue, QueueConfig};
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
    let queue = Queue::new(&db, QueueConfig::default()).unwrap();
    queue.migrate().await.unwrap();
    let (a, b) = (TenantId::new(), TenantId::new());
    let mut stores = Vec::new();
    for tenant in [a, b] {
        let schema = format!("t_{}", tenant.as_uuid().simple());
        let outbox = Outbox::new(
            &db,
            OutboxConfig {
                schema: schema.clone(),
                ..OutboxConfig::default()
            },
        )
        .unwrap();
        outbox.migrate().await.unwrap();
        let webhooks = Webhooks::new(
            &db,
            queue.clone(),
            neo_events::WebhookConfig {
                schema: schema.clone(),
                job_kind: format!("{schema}.deliver"),
                // The test reads the delivery pending before a worker runs.
                inline_attempts: 0,
                ..config(&[])
            },
        )
        .unwrap();
        webhooks.migrate().await.unwrap();
        let endpoint = webhooks
            .create_endpoint(NewEndpoint::new("http://127.0.0.1:9/hook").subscribe("*"))
            .await
            .unwrap();
        let mut uow = db.begin().await.unwrap();
        outbox
            .publish(&mut *uow, &event("organization.created", 1).tenant(tenant))
            .await
            .unwrap();
        uow.commit().await.unwrap();
        assert_eq!(webhooks.dispatch_once(&outbox).await.unwrap(), 1);
        stores.push((outbox, webhooks, endpoint));
    }
    let since = chrono::Utc::now() - chrono::Duration::seconds(60);
    let (a_outbox, wa, ea) = &stores[0];
    let (b_outbox, wb, eb) = &stores[1];
    let b_delivery = wb.deliveries(eb.id, None, 10).await.unwrap()[0].clone();

    not_found(wa.endpoint(eb.id).await);
    let mine: Vec<uuid::Uuid> = wa
        .endpoints(None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(mine, vec![ea.id]);
    assert!(wa.deliveries(eb.id, None, 100).await.unwrap().is_empty());
    // Delivery ids are per schema: B's id names, at most, one of A's own deliveries.
    match wa.delivery(b_delivery.id).await {
        Ok(found) => {
            assert_eq!(found.endpoint_id, ea.id);
            assert_ne!(found.message_id, b_delivery.message_id);
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::NotFound),
    }
    not_found(wa.set_enabled(eb.id, false, None).await);
    not_found(wa.rotate_secret(eb.id).await);
    not_found(wa.subscribe(eb.id, "billing.*").await);
    assert!(!wa.unsubscribe(eb.id, "*").await.unwrap());
    assert_eq!(wa.replay_since(eb.id, since).await.unwrap(), 0);
    assert!(!wa.delete_endpoint(eb.id).await.unwrap());
    assert_eq!(a_outbox.pending().await.unwrap(), 0);

    // Offboarding A from A's stores leaves B's as they were.
    assert!(TenantData::purge(wa, a).await.unwrap() > 0);
    assert!(TenantData::purge(a_outbox, a).await.unwrap() > 0);
    assert_eq!(TenantData::purge(b_outbox, a).await.unwrap(), 0);
    assert_eq!(TenantData::purge(wb, a).await.unwrap(), 0);
    let stored = wb.endpoint(eb.id).await.unwrap();
    assert!(stored.enabled);
    assert_eq!(stored.secret(), eb.secret());
    assert_eq!(
        wb.deliveries(eb.id, None, 10).await.unwrap(),
        vec![b_delivery]
    );
}

neo_testkit::over_routes!(
    schema_per_tenant_stores_never_reach_each_others_rows,
    tenant_a_never_sees_counts_or_changes_tenant_bs_rows,
    calls_without_a_tenant_fail_before_any_query,
    the_app_role_without_the_setting_sees_and_writes_no_row,
    offboarding_exports_and_purges_one_tenant_only,
);
