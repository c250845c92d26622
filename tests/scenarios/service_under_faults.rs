//! The example service (`examples/orgs-service`) under a bounded load from a second task on
//! loopback while faults happen: Redis killed and restarted, PostgreSQL restarted, a webhook
//! receiver failing then recovering, the delivering worker process killed mid-job. Each
//! scenario prints and asserts what callers saw, that every acknowledged organization's
//! event was delivered (none lost), the duplicate deliveries, and the recovery time.

use neo_commons::events::{AddressPolicy, NewEndpoint};
use neo_testkit::{HttpReceiver, PgServer, RedisServer, ScriptedResponse};
use orgs_service::{Roles, Service, ServiceConfig};
use serde_json::{Value, json};
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Requests per second the load sends (a create, then a get of what it created).
const RATE: u64 = 40;

/// A fresh PostgreSQL and Redis of the scenario's own (it kills them), the service, and a
/// receiver subscribed to every organization event.
struct World {
    pg: PgServer,
    redis: RedisServer,
    receiver: HttpReceiver,
    service: Service,
    config: ServiceConfig,
    base: String,
    stop: watch::Sender<bool>,
    running: tokio::task::JoinHandle<()>,
}

fn config(pg: &PgServer, redis: &RedisServer) -> ServiceConfig {
    let mut config = ServiceConfig::new(pg.url(), redis.url());
    config.webhooks.addresses = AddressPolicy {
        allow_loopback: true,
        allow_private: false,
    };
    config.webhooks.require_https = false;
    config.webhooks.retry_schedule = [100, 200, 400, 800, 1_600, 3_200, 6_400]
        .map(Duration::from_millis)
        .to_vec();
    config.webhooks.breaker.open_for = Duration::from_millis(500);
    // The receiver answers in at most 300 ms. A first attempt made inline by a process that
    // dies meanwhile is made again by its job, due `request_timeout` + 1 s after fan-out.
    config.webhooks.request_timeout = Duration::from_secs(5);
    config.queue.lease = Duration::from_secs(2);
    config.worker.poll_interval = Duration::from_millis(200);
    config
}

impl World {
    /// Starts everything; the service serves the API, and dispatches and delivers webhooks
    /// too when `in_process_background` (otherwise a worker process does).
    async fn start(in_process_background: bool) -> World {
        let pg = PgServer::start().unwrap();
        let redis = RedisServer::start().unwrap();
        let config = config(&pg, &redis);
        let service = Service::compose(config.clone()).await.unwrap();
        let receiver = HttpReceiver::start().await.unwrap();
        service
            .webhooks
            .create_endpoint(NewEndpoint::new(receiver.url("/hook")).subscribe("organization.*"))
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = watch::channel(false);
        let roles = if in_process_background {
            Roles::all(listener)
        } else {
            let mut roles = Roles::background(false, false);
            roles.api = Some(listener);
            roles
        };
        let runner = service.clone();
        let running = tokio::spawn(async move { runner.run(roles, stopped).await.unwrap() });
        World {
            pg,
            redis,
            receiver,
            service,
            config,
            base,
            stop,
            running,
        }
    }

    /// Stops the service (finishing what is in flight) and the receiver.
    async fn stop(self) {
        self.stop.send_replace(true);
        self.running.await.unwrap();
        self.receiver.shutdown().await;
    }

    /// Waits until every event in the outbox is dispatched and each of its deliveries is
    /// delivered or dead; returns the delivery statuses.
    async fn settled(&self, timeout: Duration) -> BTreeMap<String, i64> {
        let deadline = Instant::now() + timeout;
        loop {
            let pending_events: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM neo_events.outbox WHERE processed_at IS NULL",
            )
            .fetch_one(self.service.db.pool())
            .await
            .unwrap_or(-1);
            let statuses: BTreeMap<String, i64> = sqlx::query(
                "SELECT status, count(*) FROM neo_events.webhook_deliveries GROUP BY status",
            )
            .fetch_all(self.service.db.pool())
            .await
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            .unwrap_or_default();
            let open = statuses
                .iter()
                .filter(|(status, _)| !matches!(status.as_str(), "delivered" | "dead"))
                .count();
            if pending_events == 0 && open == 0 && !statuses.is_empty() {
                return statuses;
            }
            assert!(
                Instant::now() < deadline,
                "not settled in {timeout:?}: {pending_events} events undispatched, deliveries {statuses:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Per created slug, how many deliveries of its `organization.created` event the receiver
    /// accepted.
    fn accepted_creations(&self) -> HashMap<String, usize> {
        let mut accepted = HashMap::new();
        for request in self.receiver.requests() {
            let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
                continue;
            };
            if body["type"] == "organization.created" && request.answered == 200 {
                let slug = body["data"]["slug"].as_str().unwrap_or_default().to_owned();
                *accepted.entry(slug).or_insert(0) += 1;
            }
        }
        accepted
    }
}

/// Runs a blocking server operation (`pg_ctl`, a process kill) without stalling the
/// runtime's other tasks (the load, the service).
fn blocking<T>(operation: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(operation)
}

/// What the load's callers saw.
#[derive(Debug, Default)]
struct Seen {
    served: usize,
    errors: usize,
    /// Slugs whose create was acknowledged (201).
    created: Vec<String>,
    /// When each request finished, and whether it was served.
    outcomes: Vec<(Instant, bool)>,
}

/// A bounded load on the API from a second task: creates an organization and reads it back,
/// `RATE` requests a second, until stopped.
struct Load {
    seen: Arc<Mutex<Seen>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(base: &str, name: &str) -> Load {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop, stopped) = watch::channel(false);
        let (base, name, record) = (base.to_owned(), name.to_owned(), Arc::clone(&seen));
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut tick = tokio::time::interval(Duration::from_millis(2_000 / RATE));
            let mut n = 0;
            while !*stopped.borrow() {
                tick.tick().await;
                n += 1;
                let slug = format!("{name}-{n}");
                let created = http
                    .post(format!("{base}/organizations"))
                    .json(&json!({ "name": format!("Load {name} {n}"), "slug": slug }))
                    .send()
                    .await;
                let id = match created {
                    Ok(response) if response.status() == 201 => {
                        let body: Value = response.json().await.unwrap_or_default();
                        let mut seen = record.lock().unwrap();
                        seen.served += 1;
                        seen.created.push(slug);
                        seen.outcomes.push((Instant::now(), true));
                        body["id"].as_str().map(str::to_owned)
                    }
                    _ => {
                        let mut seen = record.lock().unwrap();
                        seen.errors += 1;
                        seen.outcomes.push((Instant::now(), false));
                        None
                    }
                };
                if let Some(id) = id {
                    let read = http.get(format!("{base}/organizations/{id}")).send().await;
                    let ok = read.is_ok_and(|r| r.status() == 200);
                    let mut seen = record.lock().unwrap();
                    if ok {
                        seen.served += 1;
                    } else {
                        seen.errors += 1;
                    }
                    seen.outcomes.push((Instant::now(), ok));
                }
            }
        });
        Load { seen, stop, task }
    }

    async fn finish(self) -> Seen {
        self.stop.send_replace(true);
        self.task.await.unwrap();
        Arc::try_unwrap(self.seen)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_default()
    }
}

/// The first request served after `since`, as time after it.
fn recovered_after(seen: &Seen, since: Instant) -> Option<Duration> {
    seen.outcomes
        .iter()
        .find(|(at, ok)| *ok && *at > since)
        .map(|(at, _)| at.duration_since(since))
}

/// Every acknowledged create delivered at least once: none lost. Returns the duplicates.
fn account(world: &World, seen: &Seen) -> usize {
    let accepted = world.accepted_creations();
    let lost: Vec<&String> = seen
        .created
        .iter()
        .filter(|slug| !accepted.contains_key(*slug))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged but never delivered: {lost:?}"
    );
    accepted.values().map(|n| n - 1).sum()
}

fn report(
    scenario: &str,
    seen: &Seen,
    statuses: &BTreeMap<String, i64>,
    duplicates: usize,
    recovery: Duration,
) {
    println!(
        "{scenario}: {} requests served, {} errors seen by callers, {} organizations acknowledged, \
         deliveries {statuses:?} (none lost), {duplicates} duplicate deliveries, recovered {recovery:?} \
         after the fault ended",
        seen.served,
        seen.errors,
        seen.created.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_costs_callers_nothing() {
    let mut world = World::start(true).await;
    let cache = world.service.orgs.cache().unwrap().clone();
    assert!(cache.backplane_ready(1, Duration::from_secs(10)).await);
    let load = Load::start(&world.base, "redis");
    tokio::time::sleep(Duration::from_secs(1)).await;
    blocking(|| world.redis.kill()).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = Instant::now();
    blocking(|| world.redis.restart()).unwrap();
    assert!(
        cache.backplane_ready(2, Duration::from_secs(15)).await,
        "the backplane resubscribes after Redis returns"
    );
    let recovery = restarted.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = load.finish().await;
    let statuses = world.settled(Duration::from_secs(30)).await;
    let duplicates = account(&world, &seen);
    report("redis killed 2 s", &seen, &statuses, duplicates, recovery);
    assert_eq!(
        seen.errors, 0,
        "the cache hides a Redis outage from callers"
    );
    assert!(seen.served > 0);
    assert_eq!(statuses.get("dead"), None);
    assert!(recovery < Duration::from_secs(10));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashed_and_restarted_recovers_and_loses_no_acknowledged_event() {
    let mut world = World::start(true).await;
    let load = Load::start(&world.base, "pg");
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A crash (immediate stop), a second down, then the same data again.
    blocking(|| world.pg.kill()).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restarting = Instant::now();
    blocking(|| world.pg.restart()).unwrap();
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = load.finish().await;
    let recovery = recovered_after(&seen, back).expect("requests are served again");
    println!(
        "  postgres down 1 s, its start took {:?}",
        back.duration_since(restarting)
    );
    let statuses = world.settled(Duration::from_secs(30)).await;
    let duplicates = account(&world, &seen);
    report(
        "postgres crashed and restarted",
        &seen,
        &statuses,
        duplicates,
        recovery,
    );
    assert!(seen.served > 0);
    assert!(recovery < Duration::from_secs(5), "{recovery:?}");
    assert_eq!(statuses.get("dead"), None);
    // At least once: a delivery made just before the crash whose status write was lost is
    // sent again; only what the worker held can be.
    let held = world.config.worker.concurrency + world.config.worker.claim_batch;
    assert!(
        duplicates <= held,
        "{duplicates} duplicates, at most {held} were held"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_everything_once_it_recovers() {
    let world = World::start(true).await;
    world.receiver.set_default(ScriptedResponse::status(500));
    let load = Load::start(&world.base, "receiver");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = load.finish().await;
    world.receiver.set_default(ScriptedResponse::ok());
    let recovered = Instant::now();
    let statuses = world.settled(Duration::from_secs(30)).await;
    let recovery = recovered.elapsed();
    let duplicates = account(&world, &seen);
    let failed = world
        .receiver
        .requests()
        .iter()
        .filter(|r| r.answered == 500)
        .count();
    report(
        "receiver failing 2 s",
        &seen,
        &statuses,
        duplicates,
        recovery,
    );
    println!("  {failed} attempts answered 500 before it recovered");
    assert_eq!(seen.errors, 0);
    assert!(failed > 0, "the receiver did fail");
    assert_eq!(duplicates, 0, "a failed attempt is not a delivery");
    assert_eq!(statuses.get("dead"), None);
    assert!(recovery < Duration::from_secs(15), "{recovery:?}");
    world.stop().await;
}

/// The delivering worker as a child process, from the same configuration.
fn worker_process(world: &World) -> std::process::Child {
    let c = &world.config;
    std::process::Command::new(env!("CARGO_BIN_EXE_scenario-worker"))
        .env("NEO_DATABASE_URL", &c.database_url)
        .env("NEO_REDIS_URL", &c.redis_url)
        .env("NEO_WEBHOOKS_ADDRESSES__ALLOW_LOOPBACK", "true")
        .env("NEO_WEBHOOKS_REQUIRE_HTTPS", "false")
        .env(
            "NEO_WEBHOOKS_RETRY_SCHEDULE",
            "[\"100ms\", \"200ms\", \"400ms\", \"800ms\", \"1600ms\"]",
        )
        .env("NEO_WEBHOOKS_BREAKER__OPEN_FOR", "500ms")
        .env("NEO_WEBHOOKS_REQUEST_TIMEOUT", "5s")
        .env("NEO_QUEUE_LEASE", "2s")
        .env("NEO_WORKER_POLL_INTERVAL", "200ms")
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_killed_mid_job_loses_nothing() {
    let world = World::start(false).await;
    // Slow answers keep deliveries in flight when the worker dies.
    world
        .receiver
        .set_default(ScriptedResponse::ok().delay(Duration::from_millis(300)));
    let mut first = worker_process(&world);
    let load = Load::start(&world.base, "worker");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let in_flight_before = world.receiver.requests().len();
    blocking(|| first.kill()).unwrap(); // SIGKILL: no graceful shutdown
    blocking(|| first.wait()).unwrap();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = load.finish().await;
    let mut second = worker_process(&world);
    let statuses = world.settled(Duration::from_secs(30)).await;
    let recovery = killed.elapsed();
    blocking(|| second.kill()).unwrap();
    blocking(|| second.wait()).unwrap();
    let duplicates = account(&world, &seen);
    report(
        "worker process killed",
        &seen,
        &statuses,
        duplicates,
        recovery,
    );
    assert!(
        in_flight_before > 0,
        "deliveries had started before the kill"
    );
    assert_eq!(seen.errors, 0, "the API does not depend on the worker");
    assert_eq!(statuses.get("dead"), None);
    // At least once: only what the killed worker held (claimed, not yet acknowledged) can
    // arrive twice.
    let held = world.config.worker.concurrency + world.config.worker.claim_batch;
    assert!(
        duplicates <= held,
        "{duplicates} duplicates, at most {held} were held"
    );
    assert!(recovery < Duration::from_secs(15), "{recovery:?}");
    world.stop().await;
}
