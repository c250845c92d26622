use neo_core::{ErrorKind, HasErrorKind};
use neo_db::{Db, DbConfig};
use neo_events::{
    AddressPolicy, DeliveryStatus, DomainEvent, EventError, EventTypeInfo, NewEndpoint,
    OperationalEvent, Outbox, OutboxConfig, SignedHeaders, Verifier, WebhookConfig, Webhooks,
};
use neo_queue::{Queue, QueueConfig, Worker, WorkerConfig};
use neo_testkit::{HttpReceiver, PgRoute, ReceivedRequest, ScriptedResponse};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub(crate) struct Setup {
    _test_db: Option<neo_testkit::TestDatabase>,
    _split: Option<crate::tenancy::SplitDbs>,
    /// The `Db` of tenant-scoped calls (the application role's under row-level security).
    pub(crate) db: Db,
    /// The `Db` of cross-tenant work and of the tests' raw SQL (`db` itself without
    /// row-level security).
    pub(crate) system: Db,
    /// Under row-level security.
    pub(crate) rls: bool,
    pub(crate) queue: Queue,
    pub(crate) outbox: Outbox,
    pub(crate) webhooks: Webhooks,
}

/// `config` with every first attempt on the worker path (no inline attempts): for tests
/// whose subject is the delivery job (its claim, fairness, spans, timing).
pub(crate) fn worker_path(config: WebhookConfig) -> WebhookConfig {
    WebhookConfig {
        inline_attempts: 0,
        ..config
    }
}

/// A config for loopback receivers, with a fast retry schedule.
pub(crate) fn config(schedule_ms: &[u64]) -> WebhookConfig {
    WebhookConfig {
        addresses: AddressPolicy {
            allow_loopback: true,
            allow_private: false,
        },
        require_https: false,
        request_timeout: Duration::from_millis(500),
        retry_schedule: schedule_ms
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect(),
        retry_jitter: 0.0,
        ..WebhookConfig::default()
    }
}

/// Whether endpoint secrets and headers are sealed at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sealing {
    /// `Webhooks::new`: stored as given.
    Off,
    /// `Webhooks::sealed`, with a data key cache like production's.
    On,
}

/// How tenants' rows are kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolation {
    /// Shared tables, tenants as data, one role (`Webhooks::new`).
    Shared,
    /// Row-level security: the application role acts for a tenant, the system role runs
    /// dispatch, fan-out and delivery; the contract test runs in a tenant's scope and its
    /// events name that tenant ([`event`]).
    Rls,
}

/// How a contract test reaches PostgreSQL, whether secrets are sealed and how tenants are
/// kept apart. The webhook contract (the tests listed in `contract!` below) holds in every
/// mode.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mode {
    pub(crate) route: PgRoute,
    pub(crate) sealing: Sealing,
    pub(crate) isolation: Isolation,
}

impl Mode {
    /// Runs `test` as the mode wants it: under row-level security in a tenant's scope.
    pub(crate) async fn run<F: Future<Output = ()>>(self, test: F) {
        match self.isolation {
            Isolation::Shared => test.await,
            Isolation::Rls => neo_tenant::scope(neo_core::TenantId::new(), test).await,
        }
    }
}

/// Runs each contract test once per mode, as tests named `<test>::<mode>`:
/// `contract!([plain = (Direct, Off, Shared), rls = (Direct, Off, Rls)] test_a, test_b)`.
macro_rules! contract {
    ($modes:tt $($test:ident),+ $(,)?) => {
        $( contract!(@modes $test $modes); )+
    };
    (@modes $test:ident [$($mode:ident = ($route:ident, $sealing:ident, $isolation:ident)),+]) => {
        mod $test {
            $(
                #[tokio::test]
                async fn $mode() {
                    let mode = super::Mode {
                        route: neo_testkit::PgRoute::$route,
                        sealing: super::Sealing::$sealing,
                        isolation: super::Isolation::$isolation,
                    };
                    mode.run(super::$test(mode)).await;
                }
            )+
        }
    };
}

contract!(
    [
        plain = (Direct, Off, Shared),
        sealed = (Direct, On, Shared),
        pgbouncer = (PgBouncer, Off, Shared),
        pgbouncer_sealed = (PgBouncer, On, Shared),
        rls = (Direct, Off, Rls),
        rls_sealed = (Direct, On, Rls),
        rls_pgbouncer = (PgBouncer, Off, Rls)
    ]
    endpoints_refuse_bad_input_and_keep_their_secret_out_of_debug,
    failures_follow_the_schedule_then_dead_letter_and_replay_keeps_the_webhook_id,
    a_replay_made_before_the_dead_jobs_ack_is_delivered,
    retry_after_is_honoured_and_gone_disables_the_endpoint,
    the_ssrf_guard_refuses_names_that_resolve_to_loopback,
    a_rotated_secret_signs_next_to_the_old_one_during_the_overlap,
    an_endpoint_rate_limit_spreads_deliveries,
    a_fifo_endpoint_gets_one_message_at_a_time_in_order,
    a_failing_endpoint_opens_its_breaker_and_says_so,
    purge_removes_finished_deliveries_and_keeps_pending_ones,
    deleting_an_endpoint_takes_its_deliveries_and_purge_takes_orphans,
);

// Events without a tenant, and endpoints receiving every tenant's events, exist only in shared
// tables: under row-level security every row belongs to one tenant. What these check under
// row-level security (signed deliveries reaching only the tenant's endpoints, delivery jobs
// naming the tenant) is checked in `webhook_isolation`.
contract!(
    [
        plain = (Direct, Off, Shared),
        sealed = (Direct, On, Shared),
        pgbouncer = (PgBouncer, Off, Shared),
        pgbouncer_sealed = (PgBouncer, On, Shared)
    ]
    committed_events_reach_subscribed_endpoints_signed_and_once,
    delivery_jobs_name_their_events_tenant_on_fan_out_fifo_turns_and_replay,
);

/// The webhook tables on a fresh database reached by `route`, secrets stored as given.
pub(crate) async fn setup(route: PgRoute, config: WebhookConfig) -> Setup {
    setup_in(
        Mode {
            route,
            sealing: Sealing::Off,
            isolation: Isolation::Shared,
        },
        config,
    )
    .await
}

/// The webhook tables on a fresh database, reached and sealed as `mode` says.
pub(crate) async fn setup_in(mode: Mode, config: WebhookConfig) -> Setup {
    setup_in_with(mode, config, |q| q).await
}

/// The webhook tables on a fresh database reached directly, secrets stored as given, with
/// the queue's configuration changed by `queue_config`.
pub(crate) async fn setup_with(
    config: WebhookConfig,
    queue_config: impl FnOnce(QueueConfig) -> QueueConfig,
) -> Setup {
    let mode = Mode {
        route: PgRoute::Direct,
        sealing: Sealing::Off,
        isolation: Isolation::Shared,
    };
    setup_in_with(mode, config, queue_config).await
}

/// Queue, outbox and webhooks on a fresh database reached by `mode.route` (`pooler =
/// "transaction"` through PgBouncer, with the direct URL for LISTEN), sealing as
/// `mode.sealing` says, the queue's configuration changed by `queue_config`.
pub(crate) async fn setup_in_with(
    mode: Mode,
    config: WebhookConfig,
    queue_config: impl FnOnce(QueueConfig) -> QueueConfig,
) -> Setup {
    if mode.isolation == Isolation::Rls {
        return rls_setup(mode, config, queue_config).await;
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
    let queue = Queue::new(
        &db,
        queue_config(QueueConfig {
            lease: Duration::from_secs(2),
            ..QueueConfig::default()
        }),
    )
    .unwrap();
    queue.migrate().await.unwrap();
    let outbox = Outbox::new(&db, OutboxConfig::default()).unwrap();
    outbox.migrate().await.unwrap();
    let webhooks = webhooks_on(&db, &queue, config, mode.sealing);
    assert_eq!(
        webhooks.migrate().await.unwrap().applied,
        vec![1, 2, 3, 4, 6, 7, 10, 11, 12, 13, 20, 40, 41]
    );
    Setup {
        _test_db: Some(test_db),
        _split: None,
        system: db.clone(),
        rls: false,
        db,
        queue,
        outbox,
        webhooks,
    }
}

/// The webhooks of `mode` with sealing as `mode.sealing` says.
fn webhooks_on(db: &Db, queue: &Queue, config: WebhookConfig, sealing: Sealing) -> Webhooks {
    match sealing {
        Sealing::Off => Webhooks::new(db, queue.clone(), config).unwrap(),
        Sealing::On => Webhooks::sealed(
            db,
            queue.clone(),
            config,
            crate::webhook_sealing::sealer("k1", &[("k1", crate::webhook_sealing::KEY_1)]),
        )
        .unwrap(),
    }
}

/// Queue, outbox and webhooks under row-level security: migrated and granted by the owner;
/// dispatch, delivery and the queue's claims on the system role; the outbox's `publish`, the
/// webhooks' and the delivery queue's tenant-scoped calls on the application role.
pub(crate) async fn rls_setup(
    mode: Mode,
    config: WebhookConfig,
    queue_config: impl FnOnce(QueueConfig) -> QueueConfig,
) -> Setup {
    let split = crate::tenancy::split_dbs(mode.route).await;
    let setting = neo_db::RlsSetting::default();
    let queue_config = queue_config(QueueConfig {
        lease: Duration::from_secs(2),
        ..QueueConfig::default()
    });
    let rls = || neo_db::TenantIsolation::RowLevelSecurity(setting.clone());
    Queue::tenant_isolated(&split.owner, &split.owner, queue_config.clone(), rls())
        .unwrap()
        .migrate()
        .await
        .unwrap();
    let owner_outbox = Outbox::new(&split.owner, OutboxConfig::default())
        .unwrap()
        .with_row_level_security(&split.owner, setting.clone());
    assert_eq!(
        owner_outbox.migrate().await.unwrap().applied,
        vec![1, 2, 3, 10, 11, 20]
    );
    let owner_webhooks = Webhooks::new(
        &split.owner,
        Queue::new(&split.owner, queue_config.clone()).unwrap(),
        config.clone(),
    )
    .unwrap()
    .with_row_level_security(&split.owner, setting.clone())
    .unwrap();
    assert_eq!(
        owner_webhooks.migrate().await.unwrap().applied,
        vec![1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 20, 40, 41, 42]
    );
    split
        .grant(&[&queue_config.schema, &OutboxConfig::default().schema])
        .await;
    // The delivery queue is tenant-isolated too: its jobs are under the same policy.
    let queue = Queue::tenant_isolated(&split.app, &split.system, queue_config, rls()).unwrap();
    let outbox = Outbox::new(&split.app, OutboxConfig::default())
        .unwrap()
        .with_row_level_security(&split.system, setting.clone());
    let webhooks = webhooks_on(&split.app, &queue, config, mode.sealing)
        .with_row_level_security(&split.system, setting)
        .unwrap();
    Setup {
        _test_db: None,
        db: split.app.clone(),
        system: split.system.clone(),
        rls: true,
        _split: Some(split),
        queue,
        outbox,
        webhooks,
    }
}

impl Setup {
    /// A transaction on `db` acting for the task's tenant under row-level security.
    pub(crate) async fn begin(&self) -> neo_db::UnitOfWork {
        match neo_tenant::current() {
            Some(tenant) if self.rls => neo_db::TenantIsolation::row_level_security()
                .begin(&self.db, tenant)
                .await
                .unwrap(),
            _ => self.db.begin().await.unwrap(),
        }
    }
}

/// The outbox dispatcher (fanning out to webhooks) and a delivery worker, until dropped.
#[derive(Default)]
pub(crate) struct Running {
    stop: Vec<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub(crate) fn start(s: &Setup) -> Self {
        let mut running = Running::default();
        running.dispatcher(s);
        running.worker(s);
        running
    }

    pub(crate) fn dispatcher(&mut self, s: &Setup) {
        let (stop, stopped) = oneshot::channel::<()>();
        let (outbox, webhooks) = (s.outbox.clone(), s.webhooks.clone());
        self.stop.push(stop);
        self.tasks.push(tokio::spawn(async move {
            let fan_out = move |events: Vec<DomainEvent>| {
                let webhooks = webhooks.clone();
                async move { webhooks.fan_out(&events).await }
            };
            outbox
                .run(fan_out, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        }));
    }

    pub(crate) fn worker(&mut self, s: &Setup) {
        self.worker_with(s, WorkerConfig::default());
    }

    /// A delivery worker with `config`, polling and shutting down as the tests' workers do.
    pub(crate) fn worker_with(&mut self, s: &Setup, config: WorkerConfig) {
        let (stop, stopped) = oneshot::channel::<()>();
        let worker = s.webhooks.handle(Worker::new(
            s.queue.clone(),
            WorkerConfig {
                concurrency: 64,
                poll_interval: Duration::from_millis(50),
                shutdown_grace: Duration::from_millis(100),
                ..config
            },
        ));
        self.stop.push(stop);
        self.tasks.push(tokio::spawn(async move {
            worker
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        }));
    }

    /// Kills the tasks where they are, as a crashed process would stop.
    pub(crate) fn abort(self) {
        for task in self.tasks {
            task.abort();
        }
    }

    pub(crate) async fn stop(self) {
        for stop in self.stop {
            let _ = stop.send(());
        }
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

/// An event, naming the task's tenant when it has one (the contract tests under row-level
/// security run in a tenant's scope).
pub(crate) fn event(event_type: &str, n: u32) -> DomainEvent {
    let event = DomainEvent::new(
        event_type,
        "organization",
        &format!("org_{n}"),
        &serde_json::json!({ "n": n }),
    )
    .unwrap();
    match neo_tenant::current() {
        Some(tenant) => event.tenant(tenant),
        None => event,
    }
}

/// Publishes `events` in one transaction; under row-level security in one transaction per
/// tenant, acting for it.
pub(crate) async fn publish(s: &Setup, events: &[DomainEvent]) {
    if !s.rls {
        let mut uow = s.begin().await;
        s.outbox.publish_many(&mut *uow, events).await.unwrap();
        uow.commit().await.unwrap();
        return;
    }
    let mut tenants: Vec<_> = events.iter().map(DomainEvent::tenant_id).collect();
    tenants.dedup();
    for tenant in tenants {
        let mine: Vec<DomainEvent> = events
            .iter()
            .filter(|e| e.tenant_id() == tenant)
            .cloned()
            .collect();
        let mut uow = neo_db::TenantIsolation::row_level_security()
            .begin(&s.db, tenant.unwrap())
            .await
            .unwrap();
        s.outbox.publish_many(&mut *uow, &mine).await.unwrap();
        uow.commit().await.unwrap();
    }
}

/// A receiver and an endpoint pointing at it, subscribed to everything.
pub(crate) async fn receiver_and_endpoint(
    s: &Setup,
    configure: impl FnOnce(NewEndpoint) -> NewEndpoint,
) -> (HttpReceiver, neo_events::Endpoint) {
    let receiver = HttpReceiver::start().await.unwrap();
    let endpoint = s
        .webhooks
        .create_endpoint(configure(
            NewEndpoint::new(receiver.url("/hook")).subscribe("*"),
        ))
        .await
        .unwrap();
    (receiver, endpoint)
}

/// Stops the pipeline, flushes the status writer and stops the receiver.
pub(crate) async fn finish(running: Running, s: &Setup, receiver: HttpReceiver) {
    running.stop().await;
    s.webhooks.shutdown().await;
    receiver.shutdown().await;
}

fn headers(request: &ReceivedRequest) -> SignedHeaders {
    SignedHeaders {
        id: request.header("webhook-id").unwrap().to_owned(),
        timestamp: request
            .header("webhook-timestamp")
            .unwrap()
            .parse()
            .unwrap(),
        signature: request.header("webhook-signature").unwrap().to_owned(),
    }
}

pub(crate) async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn invalid<T: std::fmt::Debug>(result: Result<T, EventError>) -> String {
    let error = result.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Validation, "{error}");
    error.to_string()
}

async fn endpoints_refuse_bad_input_and_keep_their_secret_out_of_debug(mode: Mode) {
    let s = setup_in(mode, config(&[100])).await;
    let w = &s.webhooks;
    for url in [
        "ftp://example.com/hook",
        "https://user:pw@example.com/hook",
        "not a url",
        &format!("https://example.com/{}", "a".repeat(3000)),
    ] {
        invalid(w.create_endpoint(NewEndpoint::new(url)).await);
    }
    invalid(
        w.create_endpoint(NewEndpoint::new("http://example.com/h").subscribe("Organization"))
            .await,
    );
    let reserved = invalid(
        w.create_endpoint(NewEndpoint::new("http://example.com/h").header("webhook-id", "x"))
            .await,
    );
    assert!(reserved.contains("set by the library"), "{reserved}");
    invalid(
        w.create_endpoint(NewEndpoint::new("http://example.com/h").rate_limit(0))
            .await,
    );
    invalid(
        w.register_event_type(&EventTypeInfo {
            name: "nodots".into(),
            description: String::new(),
            schema: None,
        })
        .await,
    );

    // Private addresses need allow_private, even with loopback allowed.
    let private = invalid(
        w.create_endpoint(NewEndpoint::new("http://10.0.0.7/hook"))
            .await,
    );
    assert!(private.contains("allow_private"), "{private}");
    let strict = Webhooks::new(
        &s.db,
        s.queue.clone(),
        WebhookConfig {
            require_https: false,
            ..WebhookConfig::default()
        },
    )
    .unwrap();
    invalid(
        strict
            .create_endpoint(NewEndpoint::new("http://127.0.0.1:9/hook"))
            .await,
    );
    invalid(
        strict
            .create_endpoint(NewEndpoint::new("http://[::1]:9/hook"))
            .await,
    );

    let endpoint = w
        .create_endpoint(
            NewEndpoint::new("http://example.com/hook")
                .subscribe("organization.*")
                .header("x-team", "billing")
                .rate_limit(20)
                .description("billing"),
        )
        .await
        .unwrap();
    let shown = format!("{endpoint:?}");
    assert!(!shown.contains(&endpoint.secret().expose()), "{shown}");
    // Stored as the mode says.
    let at_rest = w.at_rest().await.unwrap();
    match mode.sealing {
        Sealing::Off => assert_eq!(at_rest.plain_rows, 1, "{at_rest:?}"),
        Sealing::On => assert_eq!(
            (at_rest.plain_rows, at_rest.rows_by_key.get("k1")),
            (0, Some(&1)),
            "{at_rest:?}"
        ),
    }
    assert_eq!(w.endpoint(endpoint.id).await.unwrap(), endpoint);
    assert_eq!(w.endpoints(None).await.unwrap(), vec![endpoint.clone()]);
    assert!(w.unsubscribe(endpoint.id, "organization.*").await.unwrap());
    assert!(!w.unsubscribe(endpoint.id, "organization.*").await.unwrap());
    let missing = uuid::Uuid::now_v7();
    assert_eq!(
        w.endpoint(missing).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        w.subscribe(missing, "*").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        w.set_enabled(missing, false, None)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );

    let big = DomainEvent::new(
        "organization.created",
        "organization",
        "org_1",
        &"x".repeat(300 * 1024),
    )
    .unwrap();
    invalid(w.validate_event(&big));
    // Fan-out skips it rather than blocking the outbox.
    assert_eq!(w.fan_out(&[big]).await.unwrap(), 0);
}

async fn committed_events_reach_subscribed_endpoints_signed_and_once(mode: Mode) {
    let s = setup_in(mode, config(&[100])).await;
    let receiver = HttpReceiver::start().await.unwrap();
    let tenant = neo_core::TenantId::new();
    let orgs = s
        .webhooks
        .create_endpoint(
            NewEndpoint::new(receiver.url("/orgs"))
                .subscribe("organization.*")
                .header("x-team", "platform"),
        )
        .await
        .unwrap();
    let billing = s
        .webhooks
        .create_endpoint(
            NewEndpoint::new(receiver.url("/billing")).subscribe("billing.invoice_paid"),
        )
        .await
        .unwrap();
    let tenant_only = s
        .webhooks
        .create_endpoint(
            NewEndpoint::new(receiver.url("/tenant"))
                .tenant(tenant)
                .subscribe("*"),
        )
        .await
        .unwrap();
    let running = Running::start(&s);

    let created = event("organization.created", 1);
    let paid = event("billing.invoice_paid", 2);
    let for_tenant = event("organization.renamed", 3).tenant(tenant);
    publish(&s, &[created.clone(), paid.clone(), for_tenant.clone()]).await;
    // A rolled-back event is never sent.
    let mut uow = s.begin().await;
    s.outbox
        .publish(&mut *uow, &event("organization.deleted", 4))
        .await
        .unwrap();
    uow.rollback().await.unwrap();

    // orgs: created + renamed; billing: paid; tenant: renamed.
    let requests = receiver.wait_for(4, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests_after = receiver.requests();
    assert_eq!(requests_after.len(), 4, "exactly four deliveries");
    let mut seen: HashMap<String, HashSet<String>> = HashMap::new();
    for request in &requests {
        let path = request.uri.path().to_owned();
        let secret = match path.as_str() {
            "/orgs" => orgs.secret(),
            "/billing" => billing.secret(),
            _ => tenant_only.secret(),
        };
        let headers = headers(request);
        Verifier::new(vec![secret.clone()])
            .verify_headers(
                Some(&headers.id),
                Some(&headers.timestamp.to_string()),
                Some(&headers.signature),
                &request.body,
            )
            .unwrap();
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        seen.entry(path.clone())
            .or_default()
            .insert(body["type"].as_str().unwrap().to_owned());
        if path == "/orgs" {
            assert_eq!(request.header("x-team"), Some("platform"));
        }
        let expected_id = match body["type"].as_str().unwrap() {
            "organization.created" => created.id(),
            "billing.invoice_paid" => paid.id(),
            _ => for_tenant.id(),
        };
        assert_eq!(
            headers.id,
            expected_id.to_string(),
            "webhook-id is the event id"
        );
        assert_eq!(
            body["data"]["n"],
            serde_json::json!(body["data"]["n"].as_u64().unwrap())
        );
    }
    let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<HashSet<_>>();
    assert_eq!(
        seen["/orgs"],
        names(&["organization.created", "organization.renamed"])
    );
    assert_eq!(seen["/billing"], names(&["billing.invoice_paid"]));
    assert_eq!(seen["/tenant"], names(&["organization.renamed"]));

    wait_until("deliveries recorded", Duration::from_secs(5), || async {
        let d = s
            .webhooks
            .deliveries(orgs.id, Some(DeliveryStatus::Delivered), 10)
            .await
            .unwrap();
        d.len() == 2
    })
    .await;
    let delivered = s.webhooks.deliveries(orgs.id, None, 10).await.unwrap();
    assert!(
        delivered
            .iter()
            .all(|d| d.attempts == 1 && d.response_status == Some(200) && d.delivered_at.is_some())
    );
    // A delivery names its event's tenant.
    let tenants: HashMap<&str, Option<neo_core::TenantId>> = delivered
        .iter()
        .map(|d| (d.event_type.as_str(), d.tenant_id))
        .collect();
    assert_eq!(tenants["organization.created"], None);
    assert_eq!(tenants["organization.renamed"], Some(tenant));
    let to_tenant = s
        .webhooks
        .deliveries(tenant_only.id, None, 10)
        .await
        .unwrap();
    assert_eq!(to_tenant.len(), 1);
    assert_eq!(to_tenant[0].tenant_id, Some(tenant));
    assert_eq!(tenant_only.tenant_id, Some(tenant));
    assert_eq!(
        s.webhooks.endpoints(Some(tenant)).await.unwrap(),
        vec![tenant_only.clone()]
    );
    // Handing the same events over again (an at-least-once dispatcher) creates nothing.
    assert_eq!(
        s.webhooks
            .fan_out(&[created.clone(), paid.clone(), for_tenant.clone()])
            .await
            .unwrap(),
        0
    );
    finish(running, &s, receiver).await;
}

async fn failures_follow_the_schedule_then_dead_letter_and_replay_keeps_the_webhook_id(mode: Mode) {
    let s = setup_in(mode, config(&[100, 200])).await;
    let (receiver, endpoint) = receiver_and_endpoint(&s, |e| e).await;

    let mut operational = s.webhooks.operational_events();
    receiver.push(ScriptedResponse::status(500).body("x".repeat(10_000)));
    receiver.push(ScriptedResponse::drop_connection());
    // Longer than the 500 ms request timeout.
    receiver.push(ScriptedResponse::ok().delay(Duration::from_millis(800)));
    let running = Running::start(&s);
    let e = event("organization.created", 1);
    publish(&s, std::slice::from_ref(&e)).await;

    let requests = receiver.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(requests.len(), 3);
    let gaps: Vec<Duration> = requests.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[0] >= Duration::from_millis(100), "{gaps:?}");
    // The third attempt waited 200 ms after the second one's failure.
    assert!(gaps[1] >= Duration::from_millis(200), "{gaps:?}");
    let dead = loop {
        let d = s
            .webhooks
            .deliveries(endpoint.id, Some(DeliveryStatus::Dead), 10)
            .await
            .unwrap();
        if let Some(d) = d.into_iter().next() {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(dead.attempts, 3);
    assert!(
        dead.last_error.as_deref().unwrap().contains("timed out"),
        "{dead:?}"
    );
    let exhausted = tokio::time::timeout(Duration::from_secs(5), operational.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        exhausted,
        OperationalEvent::DeliveryExhausted { delivery_id, .. } if delivery_id == dead.id
    ));
    // Nothing more is sent for it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.requests().len(), 3);

    assert!(s.webhooks.replay(dead.id).await.unwrap());
    assert!(
        !s.webhooks.replay(dead.id).await.unwrap(),
        "already pending"
    );
    let requests = receiver.wait_for(4, Duration::from_secs(10)).await;
    let ids: HashSet<&str> = requests
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(ids, HashSet::from([e.id().to_string().as_str()]));
    wait_until(
        "the replay to be delivered",
        Duration::from_secs(5),
        || async {
            s.webhooks.delivery(dead.id).await.unwrap().status == DeliveryStatus::Delivered
        },
    )
    .await;
    finish(running, &s, receiver).await;
}

/// Acks are batched: the job whose last attempt let a delivery die is acknowledged a while
/// later, and still holds its unique key meanwhile. A replay in that window must be sent all
/// the same, to a plain endpoint and as a FIFO endpoint's head.
async fn a_replay_made_before_the_dead_jobs_ack_is_delivered(mode: Mode) {
    let s = setup_in(mode, worker_path(config(&[]))).await;
    let linger = Duration::from_secs(3);
    let mut running = Running::default();
    running.dispatcher(&s);
    running.worker_with(
        &s,
        WorkerConfig {
            complete_batch: 10_000,
            complete_linger: linger,
            ..WorkerConfig::default()
        },
    );
    for fifo in [false, true] {
        let (receiver, endpoint) = receiver_and_endpoint(&s, |e| e.fifo(fifo)).await;
        receiver.push(ScriptedResponse::status(500));
        publish(&s, &[event("organization.created", u32::from(fifo))]).await;
        let dead = delivery_in(&s, endpoint.id, DeliveryStatus::Dead).await;
        let died = Instant::now();
        assert!(s.webhooks.replay(dead.id).await.unwrap(), "fifo: {fifo}");
        assert!(
            died.elapsed() < linger,
            "the replay came after the ack it is to race (fifo: {fifo})"
        );
        // The delivery made before the ack is delivered.
        let delivered = delivery_in(&s, endpoint.id, DeliveryStatus::Delivered).await;
        assert_eq!(delivered.id, dead.id);
        let requests = receiver.requests();
        assert_eq!(requests.len(), 2, "fifo: {fifo}");
        let ids: HashSet<&str> = requests
            .iter()
            .map(|r| r.header("webhook-id").unwrap())
            .collect();
        assert_eq!(
            ids.len(),
            1,
            "the replay keeps the webhook-id (fifo: {fifo})"
        );
        assert!(s.webhooks.delete_endpoint(endpoint.id).await.unwrap());
        receiver.shutdown().await;
    }
    running.stop().await;
    s.webhooks.shutdown().await;
}

async fn retry_after_is_honoured_and_gone_disables_the_endpoint(mode: Mode) {
    let s = setup_in(mode, config(&[50, 50])).await;
    let (receiver, endpoint) = receiver_and_endpoint(&s, |e| e).await;

    let mut operational = s.webhooks.operational_events();
    receiver.push(ScriptedResponse::status(429).retry_after(Duration::from_secs(1)));
    receiver.push(ScriptedResponse::ok());
    let running = Running::start(&s);
    publish(&s, &[event("organization.created", 1)]).await;
    let requests = receiver.wait_for(2, Duration::from_secs(10)).await;
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 was not honoured: {gap:?}"
    );

    receiver.push(ScriptedResponse::status(410).body("g".repeat(10_000)));
    publish(&s, &[event("organization.created", 2)]).await;
    let disabled = tokio::time::timeout(Duration::from_secs(10), operational.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(disabled, OperationalEvent::EndpointDisabled { endpoint_id, .. } if endpoint_id == endpoint.id)
    );
    let stored = s.webhooks.endpoint(endpoint.id).await.unwrap();
    assert!(!stored.enabled);
    assert!(stored.disabled_reason.unwrap().contains("410"));
    // A disabled endpoint gets no new deliveries.
    publish(&s, &[event("organization.created", 3)]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.requests().len(), 3);
    let statuses: Vec<DeliveryStatus> = s
        .webhooks
        .deliveries(endpoint.id, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|d| d.status)
        .collect();
    assert_eq!(
        statuses,
        vec![DeliveryStatus::Delivered, DeliveryStatus::Dead]
    );
    let gone = &s
        .webhooks
        .deliveries(endpoint.id, Some(DeliveryStatus::Dead), 1)
        .await
        .unwrap()[0];
    assert_eq!(gone.response_status, Some(410));
    assert_eq!(
        gone.response_body.as_ref().map(String::len),
        Some(4 * 1024),
        "stored capped"
    );

    // Re-enabled and replayed from the dead letters.
    s.webhooks
        .set_enabled(endpoint.id, true, None)
        .await
        .unwrap();
    let since = chrono::Utc::now() - chrono::Duration::minutes(5);
    assert_eq!(
        s.webhooks.replay_since(endpoint.id, since).await.unwrap(),
        1
    );
    receiver.wait_for(4, Duration::from_secs(10)).await;
    finish(running, &s, receiver).await;
}

async fn the_ssrf_guard_refuses_names_that_resolve_to_loopback(mode: Mode) {
    let s = setup_in(
        mode,
        WebhookConfig {
            require_https: false,
            retry_schedule: vec![Duration::from_secs(60)],
            ..WebhookConfig::default()
        },
    )
    .await;
    let receiver = HttpReceiver::start().await.unwrap();
    // The name passes creation (it is not an IP literal) but resolves to 127.0.0.1.
    let url = format!("http://localhost:{}/hook", receiver.addr().port());
    let endpoint = s
        .webhooks
        .create_endpoint(NewEndpoint::new(url).subscribe("*"))
        .await
        .unwrap();
    let running = Running::start(&s);
    publish(&s, &[event("organization.created", 1)]).await;
    let mut failed = None;
    for _ in 0..250 {
        let d = s.webhooks.deliveries(endpoint.id, None, 1).await.unwrap();
        if let Some(d) = d.into_iter().find(|d| d.attempts > 0) {
            failed = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failed = failed.expect("an attempt was recorded");
    assert_eq!(failed.status, DeliveryStatus::Pending);
    assert!(
        failed
            .last_error
            .as_deref()
            .unwrap()
            .contains("internal address"),
        "{failed:?}"
    );
    assert!(
        receiver.requests().is_empty(),
        "nothing reached the loopback receiver"
    );
    finish(running, &s, receiver).await;
}

async fn a_rotated_secret_signs_next_to_the_old_one_during_the_overlap(mode: Mode) {
    let s = setup_in(mode, config(&[100])).await;
    let (receiver, endpoint) = receiver_and_endpoint(&s, |e| e).await;

    let old = endpoint.secret().clone();
    let new = s.webhooks.rotate_secret(endpoint.id).await.unwrap();
    assert_eq!(
        s.webhooks.endpoint(endpoint.id).await.unwrap().secret(),
        &new
    );
    let running = Running::start(&s);
    publish(&s, &[event("organization.created", 1)]).await;
    let request = receiver
        .wait_for(1, Duration::from_secs(10))
        .await
        .remove(0);
    let headers = headers(&request);
    assert_eq!(headers.signature.split(' ').count(), 2);
    for secret in [old, new] {
        Verifier::new(vec![secret])
            .verify_headers(
                Some(&headers.id),
                Some(&headers.timestamp.to_string()),
                Some(&headers.signature),
                &request.body,
            )
            .unwrap();
    }
    finish(running, &s, receiver).await;
}

async fn an_endpoint_rate_limit_spreads_deliveries(mode: Mode) {
    let s = setup_in(mode, config(&[100])).await;
    let receiver = HttpReceiver::start().await.unwrap();
    s.webhooks
        .create_endpoint(
            NewEndpoint::new(receiver.url("/hook"))
                .subscribe("*")
                .rate_limit(10),
        )
        .await
        .unwrap();
    let running = Running::start(&s);
    let events: Vec<DomainEvent> = (0..25).map(|n| event("organization.created", n)).collect();
    publish(&s, &events).await;
    let requests = receiver.wait_for(25, Duration::from_secs(20)).await;
    assert_eq!(requests.len(), 25);
    // A burst of 10, then 10 per second: the last of 25 comes at least ~1.5 s after the first.
    let spread = requests[24].at - requests[0].at;
    assert!(spread >= Duration::from_millis(1400), "{spread:?}");
    finish(running, &s, receiver).await;
}

async fn a_fifo_endpoint_gets_one_message_at_a_time_in_order(mode: Mode) {
    let s = setup_in(mode, config(&[100, 100, 100])).await;
    let receiver = HttpReceiver::start().await.unwrap();
    // Slow answers would let a non-FIFO endpoint receive several at once.
    receiver.set_default(ScriptedResponse::ok().delay(Duration::from_millis(20)));
    receiver.push(ScriptedResponse::status(500));
    receiver.push(ScriptedResponse::status(503));
    let endpoint = s
        .webhooks
        .create_endpoint(
            NewEndpoint::new(receiver.url("/hook"))
                .subscribe("*")
                .fifo(true),
        )
        .await
        .unwrap();
    assert!(endpoint.fifo);
    let running = Running::start(&s);
    let events: Vec<DomainEvent> = (0..8).map(|n| event("organization.created", n)).collect();
    publish(&s, &events).await;
    let requests = receiver.wait_for(10, Duration::from_secs(20)).await;
    assert_eq!(requests.len(), 10);
    let order: Vec<String> = requests
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    let mut expected = vec![events[0].id().to_string(); 3];
    expected.extend(events[1..].iter().map(|e| e.id().to_string()));
    assert_eq!(
        order, expected,
        "the failing first message held back the rest"
    );
    // Never two at once: each request arrived after the previous one was answered.
    for pair in requests.windows(2) {
        assert!(
            pair[1].at >= pair[0].at + Duration::from_millis(15),
            "overlapping deliveries"
        );
    }
    finish(running, &s, receiver).await;
}

async fn a_failing_endpoint_opens_its_breaker_and_says_so(mode: Mode) {
    let s = setup_in(
        mode,
        WebhookConfig {
            breaker: neo_resilience::BreakerConfig {
                minimum_calls: 3,
                window_calls: 3,
                open_for: Duration::from_millis(300),
                half_open_probes: 1,
                ..neo_resilience::BreakerConfig::default()
            },
            ..config(&[50, 50, 50, 50, 50])
        },
    )
    .await;
    let (receiver, endpoint) = receiver_and_endpoint(&s, |e| e).await;
    receiver.set_default(ScriptedResponse::status(500));
    let mut operational = s.webhooks.operational_events();
    let running = Running::start(&s);
    // The breaker judges no fewer than MIN_JUDGED_ATTEMPTS (20) attempts: 5 messages of 6
    // attempts each give it enough, with attempts left to deliver after recovery.
    let events: Vec<DomainEvent> = (1..=5).map(|n| event("organization.created", n)).collect();
    publish(&s, &events).await;
    let failing = tokio::time::timeout(Duration::from_secs(10), operational.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            failing,
            OperationalEvent::EndpointFailing { endpoint_id, ref last_error } if endpoint_id == endpoint.id && last_error.contains("500")
        ),
        "{failing:?}"
    );
    // While open, attempts are held back (snoozed), not spent: the endpoint recovers and the
    // delivery still arrives.
    receiver.set_default(ScriptedResponse::ok());
    wait_until(
        "the delivery after recovery",
        Duration::from_secs(10),
        || async {
            s.webhooks
                .deliveries(endpoint.id, Some(DeliveryStatus::Delivered), 1)
                .await
                .unwrap()
                .len()
                == 1
        },
    )
    .await;
    finish(running, &s, receiver).await;
}

async fn purge_removes_finished_deliveries_and_keeps_pending_ones(mode: Mode) {
    let s = setup_in(mode, config(&[60_000])).await;
    let (receiver, endpoint) = receiver_and_endpoint(&s, |e| e).await;
    receiver.push(ScriptedResponse::ok());
    receiver.push(ScriptedResponse::status(500)); // stays pending (next attempt in a minute)
    let running = Running::start(&s);
    publish(&s, &[event("organization.created", 1)]).await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    publish(&s, &[event("organization.created", 2)]).await;
    receiver.wait_for(2, Duration::from_secs(10)).await;
    wait_until("both attempts recorded", Duration::from_secs(5), || async {
        let d = s.webhooks.deliveries(endpoint.id, None, 10).await.unwrap();
        d.len() == 2 && d.iter().all(|d| d.attempts == 1)
    })
    .await;
    assert!(s.webhooks.purge(Duration::ZERO, 0).await.is_err());
    assert_eq!(
        s.webhooks
            .purge(Duration::from_secs(3600), 100)
            .await
            .unwrap(),
        0,
        "too recent"
    );
    assert_eq!(s.webhooks.purge(Duration::ZERO, 1).await.unwrap(), 1);
    let left = s.webhooks.deliveries(endpoint.id, None, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].status, DeliveryStatus::Pending);
    finish(running, &s, receiver).await;
}

async fn deleting_an_endpoint_takes_its_deliveries_and_purge_takes_orphans(mode: Mode) {
    let s = setup_in(mode, config(&[60_000])).await;
    let (_kept_receiver, kept) = receiver_and_endpoint(&s, |e| e).await;
    let (_deleted_receiver, deleted) = receiver_and_endpoint(&s, |e| e).await;
    let (_orphaned_receiver, orphaned) = receiver_and_endpoint(&s, |e| e).await;
    let events = [
        event("organization.created", 1),
        event("organization.created", 2),
    ];
    assert_eq!(s.webhooks.fan_out(&events).await.unwrap(), 6);
    let count = |endpoint: uuid::Uuid| {
        let webhooks = s.webhooks.clone();
        async move { webhooks.deliveries(endpoint, None, 10).await.unwrap().len() }
    };

    assert!(s.webhooks.delete_endpoint(deleted.id).await.unwrap());
    assert!(!s.webhooks.delete_endpoint(deleted.id).await.unwrap());
    assert_eq!(count(deleted.id).await, 0, "deleted with its endpoint");
    assert_eq!(count(kept.id).await, 2);

    // A fan-out that ran while its endpoint was deleted leaves deliveries without an
    // endpoint (deliveries hold no foreign key); the endpoint row alone goes here.
    let mut conn = s.system.statement_connection().await.unwrap();
    sqlx::query("DELETE FROM neo_events.webhook_endpoints WHERE id = $1")
        .bind(orphaned.id)
        .persistent(false)
        .execute(&mut *conn)
        .await
        .unwrap();
    conn.finish().await.unwrap();
    assert_eq!(count(orphaned.id).await, 2);
    assert_eq!(
        s.webhooks
            .purge(Duration::from_secs(3600), 100)
            .await
            .unwrap(),
        2,
        "only the orphans: the kept endpoint's deliveries are pending and recent"
    );
    assert_eq!(count(orphaned.id).await, 0);
    assert_eq!(count(kept.id).await, 2);
}

/// Claims every delivery job waiting (no worker runs) and returns, per delivery, the tenant
/// its job names, checking each against the tenant the delivery names; hands the jobs back.
async fn job_tenants(s: &Setup) -> HashMap<i64, Option<neo_core::TenantId>> {
    let jobs = s.queue.claim("test", 100, None).await.unwrap();
    let mut tenants = HashMap::new();
    for job in jobs {
        let delivery = job.payload["delivery"].as_i64().unwrap();
        let tenant = job.tenant_id().unwrap();
        let row = s.webhooks.delivery(delivery).await.unwrap();
        assert_eq!(
            row.tenant_id, tenant,
            "the job and its delivery name the same tenant"
        );
        // And its partition key, which the delivery's lookups name.
        let created_at: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(job.payload["created_at"].clone()).unwrap();
        assert_eq!(created_at, row.created_at);
        tenants.insert(delivery, tenant);
        assert_eq!(s.queue.release(&[job.receipt()]).await.unwrap(), vec![]);
    }
    tenants
}

async fn delivery_jobs_name_their_events_tenant_on_fan_out_fifo_turns_and_replay(mode: Mode) {
    // One attempt: a failing delivery is dead at once.
    let s = setup_in(mode, worker_path(config(&[]))).await;
    let receiver = HttpReceiver::start().await.unwrap();
    receiver.set_default(ScriptedResponse::status(500));
    let tenant = neo_core::TenantId::new();
    let plain = s
        .webhooks
        .create_endpoint(NewEndpoint::new(receiver.url("/plain")).subscribe("*"))
        .await
        .unwrap();
    let fifo = s
        .webhooks
        .create_endpoint(
            NewEndpoint::new(receiver.url("/fifo"))
                .subscribe("*")
                .fifo(true),
        )
        .await
        .unwrap();
    let events = [
        event("organization.created", 1).tenant(tenant),
        event("organization.created", 2),
        event("organization.renamed", 3).tenant(tenant),
    ];

    // Fan-out: a job per plain delivery, one for the FIFO endpoint's first.
    assert_eq!(s.webhooks.fan_out(&events).await.unwrap(), 6);
    let by_message = |deliveries: Vec<neo_events::Delivery>| -> HashMap<String, i64> {
        deliveries
            .into_iter()
            .map(|d| (d.message_id.to_string(), d.id))
            .collect()
    };
    let plain_ids = by_message(s.webhooks.deliveries(plain.id, None, 10).await.unwrap());
    let fifo_ids = by_message(s.webhooks.deliveries(fifo.id, None, 10).await.unwrap());
    let id = |ids: &HashMap<String, i64>, n: usize| ids[&events[n].id().to_string()];
    let expected = HashMap::from([
        (id(&plain_ids, 0), Some(tenant)),
        (id(&plain_ids, 1), None),
        (id(&plain_ids, 2), Some(tenant)),
        (id(&fifo_ids, 0), Some(tenant)),
    ]);
    assert_eq!(job_tenants(&s).await, expected);

    // Every delivery goes dead under the worker: the FIFO endpoint's next ones get their
    // jobs as the earlier ones finish, from the FIFO head.
    let since = chrono::Utc::now() - chrono::Duration::seconds(60);
    let mut running = Running::default();
    running.worker(&s);
    let dead = |endpoint| {
        let webhooks = s.webhooks.clone();
        async move {
            webhooks
                .deliveries(endpoint, Some(DeliveryStatus::Dead), 10)
                .await
                .unwrap()
                .len()
        }
    };
    wait_until("every delivery dead", Duration::from_secs(10), || async {
        dead(plain.id).await == 3 && dead(fifo.id).await == 3
    })
    .await;
    running.stop().await;
    s.webhooks.shutdown().await;

    // Replay: the plain endpoint's replayed delivery gets its job directly, the FIFO
    // endpoint's replayed ones through the FIFO head.
    assert!(s.webhooks.replay(id(&plain_ids, 2)).await.unwrap());
    assert_eq!(s.webhooks.replay_since(fifo.id, since).await.unwrap(), 3);
    assert_eq!(
        job_tenants(&s).await,
        HashMap::from([
            (id(&plain_ids, 2), Some(tenant)),
            (id(&fifo_ids, 0), Some(tenant)),
        ])
    );
    receiver.shutdown().await;
}

/// Waits until the queue holds no job (an inline attempt settled its delivery and withdrew
/// the job enqueued as its backstop: nothing is kept, not even a cancelled row).
pub(crate) async fn no_job_left(s: &Setup) {
    wait_until(
        "the settled attempt's job to be withdrawn",
        Duration::from_secs(5),
        || async {
            let depth = s.queue.depth().await.unwrap();
            depth == neo_queue::Depth::default()
        },
    )
    .await;
}

/// Waits until the endpoint's only delivery has `status`; returns it.
pub(crate) async fn delivery_in(
    s: &Setup,
    endpoint: uuid::Uuid,
    status: neo_events::DeliveryStatus,
) -> neo_events::Delivery {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = s
            .webhooks
            .deliveries(endpoint, Some(status), 10)
            .await
            .unwrap();
        if let Some(d) = found.into_iter().next() {
            return d;
        }
        assert!(Instant::now() < deadline, "no {status:?} delivery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
