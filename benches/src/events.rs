//! neo-events: publishing in the caller's transaction next to the same transaction without
//! it, and webhook delivery end to end (outbox → fan-out → neo-queue → signed POST to a local
//! receiver) next to the same POSTs sent straight with reqwest.

use crate::db::bench_database_url;
use crate::{Pair, check};
use neo_db::{Db, DbConfig};
use neo_events::{
    AddressPolicy, DomainEvent, NewEndpoint, Outbox, OutboxConfig, WebhookConfig, Webhooks,
};
use neo_queue::{Queue, QueueConfig, Worker, WorkerConfig};
use neo_testkit::HttpReceiver;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::sync::{Semaphore, oneshot};

/// Events per iteration of the delivery pair.
pub const DELIVERIES: usize = 2_000;
/// Requests in flight at once (the worker's concurrency, and the raw baseline's).
const IN_FLIGHT: usize = 256;
/// First attempts the fan-out may make inline (`WebhookConfig::inline_attempts`) unless
/// `NEO_BENCH_WEBHOOK_INLINE` says otherwise (0 for the worker path only, to compare).
const INLINE_ATTEMPTS: usize = 32;

fn inline_attempts() -> usize {
    std::env::var("NEO_BENCH_WEBHOOK_INLINE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(INLINE_ATTEMPTS)
}

/// Whether the dispatcher runs `Outbox::run` with `Webhooks::fan_out` as its handler (a claim
/// transaction and a fan-out transaction per round), as before `Webhooks::dispatch` (one), when
/// `NEO_BENCH_WEBHOOK_TWO_TX` is 1: to compare.
fn two_transactions() -> bool {
    std::env::var("NEO_BENCH_WEBHOOK_TWO_TX").is_ok_and(|v| v == "1")
}

/// Everything a webhook pipeline needs, in its own schemas on the server at `url`.
#[derive(Debug)]
pub struct Pipeline {
    /// The pool.
    pub db: Db,
    /// The outbox.
    pub outbox: Outbox,
    /// The webhooks.
    pub webhooks: Webhooks,
    /// The receiver every delivery goes to.
    pub receiver: HttpReceiver,
    stop: Vec<oneshot::Sender<()>>,
    /// The dispatcher's and the worker's tasks, which [`stop`](Pipeline::stop) waits for.
    running: tokio::task::JoinSet<()>,
}

/// Drops the schemas of an earlier run named `prefix` (the webhooks') and `prefix_q` (the
/// queue's): endpoints and jobs left by it would take a share of every delivery. Then creates
/// the queue in `prefix_q` on channel `prefix_jobs`, with `config`'s other settings.
pub(crate) async fn fresh_queue(db: &Db, prefix: &str, config: QueueConfig) -> Queue {
    crate::db::drop_schemas(db, &[prefix, &format!("{prefix}_q")]).await;
    let queue = check(Queue::new(
        db,
        QueueConfig {
            schema: format!("{prefix}_q"),
            channel: format!("{prefix}_jobs"),
            ..config
        },
    ));
    check(queue.migrate().await);
    queue
}

fn event(n: usize) -> DomainEvent {
    check(DomainEvent::new(
        "organization.updated",
        "organization",
        &format!("org_{n}"),
        &serde_json::json!({ "n": n, "name": "Organization number n", "plan": "growth" }),
    ))
}

impl Pipeline {
    /// Migrates the tables into a fresh schema `prefix` (queue in `prefix_q`), starts a
    /// receiver with one endpoint subscribed to everything, an outbox dispatcher and a
    /// delivery worker.
    pub async fn start(url: &str, prefix: &str) -> Pipeline {
        Self::start_with(url, prefix, None, |endpoint| endpoint).await
    }

    /// As [`start`](Pipeline::start), sealing endpoint secrets and headers with `sealer`
    /// when one is given, the endpoint as `endpoint` makes it.
    pub async fn start_with(
        url: &str,
        prefix: &str,
        sealer: Option<neo_db::seal::Sealer>,
        endpoint: impl FnOnce(NewEndpoint) -> NewEndpoint,
    ) -> Pipeline {
        let db = crate::db::connect(url, 16).await;
        let queue = fresh_queue(&db, prefix, QueueConfig::default()).await;
        let outbox = check(Outbox::new(
            &db,
            OutboxConfig {
                schema: prefix.to_owned(),
                channel: format!("{prefix}_outbox"),
                ..OutboxConfig::default()
            },
        ));
        check(outbox.migrate().await);
        let config = WebhookConfig {
            schema: prefix.to_owned(),
            addresses: AddressPolicy {
                allow_loopback: true,
                allow_private: false,
            },
            require_https: false,
            // A lone event's first attempt goes out from the fan-out (issue 36, item 3); a
            // backlog's batches do not fit and take the worker path.
            inline_attempts: inline_attempts(),
            ..WebhookConfig::default()
        };
        let webhooks = check(match sealer {
            Some(sealer) => Webhooks::sealed(&db, queue.clone(), config, sealer),
            None => Webhooks::new(&db, queue.clone(), config),
        });
        check(webhooks.migrate().await);
        let receiver = check(HttpReceiver::start().await);
        check(
            webhooks
                .create_endpoint(endpoint(
                    NewEndpoint::new(receiver.url("/hook")).subscribe("*"),
                ))
                .await,
        );
        let mut stop = Vec::new();
        let mut running = tokio::task::JoinSet::new();
        let (stop_dispatcher, stopped) = oneshot::channel::<()>();
        stop.push(stop_dispatcher);
        let (o, w) = (outbox.clone(), webhooks.clone());
        running.spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            if two_transactions() {
                let fan_out = move |events: Vec<DomainEvent>| {
                    let w = w.clone();
                    async move { w.fan_out(&events).await }
                };
                check(o.run(fan_out, stopped).await);
            } else {
                check(w.dispatch(&o, stopped).await);
            }
        });
        let worker = webhooks.handle(Worker::new(
            queue,
            WorkerConfig {
                concurrency: IN_FLIGHT,
                claim_batch: IN_FLIGHT,
                complete_batch: 1_000,
                ..WorkerConfig::default()
            },
        ));
        let (stop_worker, stopped) = oneshot::channel::<()>();
        stop.push(stop_worker);
        running.spawn(async move {
            check(
                worker
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await,
            );
        });
        Pipeline {
            db,
            outbox,
            webhooks,
            receiver,
            stop,
            running,
        }
    }

    /// Publishes events in one committed transaction.
    pub async fn publish(&self, events: &[DomainEvent]) {
        let mut uow = check(self.db.begin().await);
        check(self.outbox.publish_many(&mut *uow, events).await);
        check(uow.commit().await);
    }

    /// Publishes `n` events in one transaction and waits until the receiver has them all.
    pub async fn deliver(&self, n: usize) {
        let before = self.receiver.requests().len();
        let events: Vec<DomainEvent> = (0..n).map(event).collect();
        self.publish(&events).await;
        let got = self
            .receiver
            .wait_for(before + n, Duration::from_secs(120))
            .await;
        assert!(got.len() >= before + n, "deliveries did not arrive in time");
    }

    /// Stops the dispatcher and the worker, and waits until both have returned: a claim
    /// still in flight would otherwise hold the queue's locks while the next run drops its
    /// schema (the `curves` run's webhook points deadlocked on that).
    pub async fn stop(mut self) {
        for stop in self.stop {
            let _ = stop.send(());
        }
        while let Some(done) = self.running.join_next().await {
            check(done);
        }
        self.webhooks.shutdown().await;
    }
}

/// Publish inside a transaction against the same transaction without it.
fn publish_pair(rt: &Rc<Runtime>, url: &str) -> Pair {
    let (db, outbox) = rt.block_on(async {
        let db = check(Db::connect(&DbConfig::with_url(url)).await);
        check(
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS bench_events_orgs (id uuid PRIMARY KEY, slug text NOT NULL UNIQUE, \
                 name text NOT NULL, metadata jsonb NOT NULL DEFAULT '{}', created_at timestamptz NOT NULL DEFAULT now(), \
                 updated_at timestamptz NOT NULL DEFAULT now(), version integer NOT NULL DEFAULT 1)",
            )
            .execute(db.pool())
            .await,
        );
        let outbox = publish_outbox(&db);
        check(outbox.migrate().await);
        (db, outbox)
    });
    // The business write: creating an organization (the row neo-orgs writes), whose
    // `organization.created` event ours publishes in the same transaction.
    let business = |db: Db| async move {
        let mut uow = check(db.begin().await);
        let id = uuid::Uuid::now_v7();
        check(
            sqlx::query(
                "INSERT INTO bench_events_orgs (id, slug, name, metadata) VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(format!("acme-{}", id.simple()))
            .bind("Acme")
            .bind(serde_json::json!({ "plan": "growth" }))
            .execute(&mut **uow)
            .await,
        );
        uow
    };
    let (rt_ours, rt_raw, raw_db) = (Rc::clone(rt), Rc::clone(rt), db.clone());
    Pair {
        name: "events/publish_as_own_statement",
        // One more statement (and round trip) in the transaction: reported, no target; the
        // target applies to publishing in the business statement (next row).
        target: None,
        per_iteration: None,
        raw_per_iteration: None,
        ours: Box::new(move || {
            rt_ours.block_on(async {
                let mut uow = business(db.clone()).await;
                let created = check(DomainEvent::new(
                    "organization.created",
                    "organization",
                    "org_1",
                    &serde_json::json!({ "name": "Acme", "plan": "growth" }),
                ));
                check(outbox.publish(&mut *uow, &created).await);
                check(uow.commit().await);
            });
        }),
        raw: Box::new(move || {
            rt_raw.block_on(async {
                check(business(raw_db.clone()).await.commit().await);
            });
        }),
    }
}

/// Events per iteration of the tenant-carrying publish pair.
const TENANT_EVENTS: usize = 100;

/// `events/publish_100_tenant_vs_plain`: 100 events that each carry their tenant
/// (`DomainEvent::tenant`) published in one statement and committed, next to the same events
/// without one: the ratio is what carrying the tenant costs a publish (issue 34: at most 2 %).
fn publish_tenant_pair(rt: &Rc<Runtime>, url: &str) -> Pair {
    let db = rt.block_on(async { check(Db::connect(&DbConfig::with_url(url)).await) });
    // The outbox made by `publish_pair`, which runs first.
    let outbox = publish_outbox(&db);
    let tenant = neo_core::TenantId::new();
    let events = move |tenant: Option<neo_core::TenantId>| -> Vec<DomainEvent> {
        (0..TENANT_EVENTS)
            .map(|i| {
                let event = check(DomainEvent::new(
                    "organization.created",
                    "organization",
                    &format!("org_{i}"),
                    &serde_json::json!({ "name": "Acme", "plan": "growth" }),
                ));
                match tenant {
                    Some(tenant) => event.tenant(tenant),
                    None => event,
                }
            })
            .collect()
    };
    let publish = move |db: Db, outbox: Outbox, events: Vec<DomainEvent>| async move {
        let mut uow = check(db.begin().await);
        check(outbox.publish_many(&mut *uow, &events).await);
        check(uow.commit().await);
    };
    let (rt_ours, rt_raw, raw_db, raw_outbox) =
        (Rc::clone(rt), Rc::clone(rt), db.clone(), outbox.clone());
    Pair {
        name: "events/publish_100_tenant_vs_plain",
        target: Some(1.02),
        per_iteration: Some(TENANT_EVENTS as u64),
        raw_per_iteration: None,
        ours: Box::new(move || {
            rt_ours.block_on(publish(db.clone(), outbox.clone(), events(Some(tenant))));
        }),
        raw: Box::new(move || {
            rt_raw.block_on(publish(raw_db.clone(), raw_outbox.clone(), events(None)));
        }),
    }
}

/// The outbox both publish pairs write to (in its own schema and channel).
fn publish_outbox(db: &Db) -> Outbox {
    check(Outbox::new(
        db,
        OutboxConfig {
            schema: "bench_events_publish".to_owned(),
            channel: "bench_events_publish".to_owned(),
            ..OutboxConfig::default()
        },
    ))
}

/// The business insert with a `WITH` item that publishes its event (`Outbox::publish_cte`),
/// against the same insert alone.
fn publish_cte_pair(rt: &Rc<Runtime>, url: &str) -> Pair {
    let db = rt.block_on(async { check(Db::connect(&DbConfig::with_url(url)).await) });
    // The table and outbox made by `publish_pair`, which runs first.
    let outbox = publish_outbox(&db);
    const INSERT: &str =
        "INSERT INTO bench_events_orgs (id, slug, name, metadata) VALUES ($1, $2, $3, $4)";
    let with_event = format!("WITH {} {INSERT}", outbox.publish_cte(5));
    let (rt_ours, rt_raw, raw_db) = (Rc::clone(rt), Rc::clone(rt), db.clone());
    let org = || {
        let id = uuid::Uuid::now_v7();
        (id, format!("acme-{}", id.simple()))
    };
    Pair {
        name: "events/publish_in_business_statement",
        target: Some(1.3),
        per_iteration: None,
        raw_per_iteration: None,
        ours: Box::new(move || {
            rt_ours.block_on(async {
                let created = [check(DomainEvent::new(
                    "organization.created",
                    "organization",
                    "org_1",
                    &serde_json::json!({ "name": "Acme", "plan": "growth" }),
                ))];
                let (events, channel) = outbox.publish_params(&created);
                let (id, slug) = org();
                let mut uow = check(db.begin().await);
                check(
                    sqlx::query(sqlx::AssertSqlSafe(with_event.clone()))
                        .bind(id)
                        .bind(slug)
                        .bind("Acme")
                        .bind(serde_json::json!({ "plan": "growth" }))
                        .bind(events)
                        .bind(channel)
                        .execute(&mut **uow)
                        .await,
                );
                check(uow.commit().await);
            });
        }),
        raw: Box::new(move || {
            rt_raw.block_on(async {
                let (id, slug) = org();
                let mut uow = check(raw_db.begin().await);
                check(
                    sqlx::query(INSERT)
                        .bind(id)
                        .bind(slug)
                        .bind("Acme")
                        .bind(serde_json::json!({ "plan": "growth" }))
                        .execute(&mut **uow)
                        .await,
                );
                check(uow.commit().await);
            });
        }),
    }
}

/// Webhook delivery end to end against the same POSTs sent straight with reqwest.
///
/// The pipeline starts on the pair's first iteration, not when the pairs are built: its
/// dispatcher and worker LISTEN, and PostgreSQL wakes every listening backend of the database
/// on each committed NOTIFY, so a pipeline started early would be woken by every transaction
/// of the publish pairs measured before it and take CPU from them.
fn delivery_pair(rt: &Rc<Runtime>, url: &str) -> Pair {
    let pipeline = Rc::new(tokio::sync::OnceCell::<Pipeline>::new());
    let (raw_pipeline, url, raw_url) = (Rc::clone(&pipeline), url.to_owned(), url.to_owned());
    let client = reqwest::Client::new();
    let body = serde_json::to_string(&serde_json::json!({
        "type": "organization.updated",
        "timestamp": chrono::Utc::now(),
        "data": { "n": 1, "name": "Organization number n", "plan": "growth" },
    }))
    .unwrap_or_default();
    let (rt_ours, rt_raw) = (Rc::clone(rt), Rc::clone(rt));
    Pair {
        name: "events/webhook_delivery_vs_raw_post",
        // Reported per delivery: the pipeline's rate (target ≥ 5,000/s) and its ratio to
        // POSTing the same bodies straight from memory with the same concurrency.
        target: None,
        per_iteration: Some(DELIVERIES as u64),
        raw_per_iteration: Some(DELIVERIES as u64),
        ours: Box::new(move || {
            rt_ours.block_on(async {
                started(&pipeline, &url).await.deliver(DELIVERIES).await;
            });
        }),
        raw: Box::new(move || {
            rt_raw.block_on(async {
                let target = started(&raw_pipeline, &raw_url).await.receiver.url("/raw");
                let slots = Arc::new(Semaphore::new(IN_FLIGHT));
                let mut sent = tokio::task::JoinSet::new();
                for _ in 0..DELIVERIES {
                    let permit = check(Arc::clone(&slots).acquire_owned().await);
                    let (client, target, body) = (client.clone(), target.clone(), body.clone());
                    sent.spawn(async move {
                        let response = check(
                            client
                                .post(target)
                                .header("content-type", "application/json")
                                .body(body)
                                .send()
                                .await,
                        );
                        assert!(response.status().is_success());
                        drop(permit);
                    });
                }
                while let Some(done) = sent.join_next().await {
                    check(done);
                }
            });
        }),
    }
}

/// The delivery pair's pipeline, started by whichever side runs first.
async fn started<'a>(pipeline: &'a tokio::sync::OnceCell<Pipeline>, url: &str) -> &'a Pipeline {
    pipeline
        .get_or_init(|| Pipeline::start(url, "bench_events_delivery"))
        .await
}

/// The pairs of this module on the server at `url`.
pub fn pairs_on(url: &str) -> Vec<Pair> {
    let rt = Rc::new(crate::runtime());
    vec![
        publish_pair(&rt, url),
        publish_cte_pair(&rt, url),
        publish_tenant_pair(&rt, url),
        delivery_pair(&rt, url),
    ]
}

/// The pairs of this module, on the bench PostgreSQL.
pub fn pairs() -> Vec<Pair> {
    pairs_on(&bench_database_url())
}

/// What [`measure_delivery`] saw.
#[derive(Debug, Clone)]
pub struct DeliveryFigures {
    /// Commit → arrival at the receiver, one event at a time, sorted.
    pub latencies: Vec<Duration>,
    /// Events in the sustained run.
    pub sustained_events: usize,
    /// How long the sustained run took, from the first commit to the last arrival.
    pub sustained: Duration,
}

/// Publish → delivered latency (`samples` events one at a time) and sustained throughput
/// (`sustained_events` published in transactions of 500) through the whole pipeline.
pub fn measure_delivery(url: &str, samples: usize, sustained_events: usize) -> DeliveryFigures {
    let rt = crate::runtime();
    rt.block_on(async {
        let pipeline = Pipeline::start(url, "bench_events_latency").await;
        pipeline.deliver(50).await; // warm up connections
        let mut latencies = Vec::with_capacity(samples);
        for n in 0..samples {
            let before = pipeline.receiver.requests().len();
            pipeline.publish(&[event(n)]).await;
            let committed = Instant::now();
            let got = pipeline
                .receiver
                .wait_for(before + 1, Duration::from_secs(10))
                .await;
            let arrived = got.last().map_or(Instant::now(), |r| r.at);
            latencies.push(arrived.saturating_duration_since(committed));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies.sort();
        let before = pipeline.receiver.requests().len();
        let started = Instant::now();
        for first in (0..sustained_events).step_by(500) {
            let events: Vec<DomainEvent> = (first..(first + 500).min(sustained_events))
                .map(event)
                .collect();
            pipeline.publish(&events).await;
        }
        let got = pipeline
            .receiver
            .wait_for(before + sustained_events, Duration::from_secs(300))
            .await;
        let sustained = got.last().map_or(started.elapsed(), |r| {
            r.at.saturating_duration_since(started)
        });
        pipeline.stop().await;
        DeliveryFigures {
            latencies,
            sustained_events,
            sustained,
        }
    })
}

/// Publish-commit → arrival at the receiver of `events` events published one per
/// transaction at `per_second` (paced, not waiting for arrivals), sorted: the light-load
/// latency a steady trickle of business writes sees.
pub fn measure_light_load(url: &str, per_second: u32, events: usize) -> Vec<Duration> {
    let rt = crate::runtime();
    rt.block_on(async {
        let pipeline = Pipeline::start(url, "bench_events_light").await;
        pipeline.deliver(50).await; // warm up connections
        let before = pipeline.receiver.requests().len();
        let mut committed = std::collections::HashMap::with_capacity(events);
        let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second.max(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for n in 0..events {
            tick.tick().await;
            let event = event(n);
            pipeline.publish(std::slice::from_ref(&event)).await;
            committed.insert(uuid::Uuid::from(event.id()).to_string(), Instant::now());
        }
        let got = pipeline
            .receiver
            .wait_for(before + events, Duration::from_secs(60))
            .await;
        let mut latencies: Vec<Duration> = got
            .iter()
            .skip(before)
            .filter_map(|r| {
                let id = r.headers.get("webhook-id")?.to_str().ok()?;
                Some(r.at.saturating_duration_since(*committed.get(id)?))
            })
            .collect();
        pipeline.stop().await;
        assert_eq!(latencies.len(), events, "deliveries did not arrive in time");
        latencies.sort();
        latencies
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pairs and the latency probe run against the test PostgreSQL.
    #[test]
    fn the_events_pairs_and_delivery_probe_run() {
        let rt = crate::runtime();
        let test_db = rt.block_on(neo_testkit::postgres());
        crate::run_each_once(pairs_on(test_db.url()));
        let figures = measure_delivery(test_db.url(), 5, 1_000);
        assert_eq!(figures.latencies.len(), 5);
        assert!(figures.latencies[4] < Duration::from_secs(5), "{figures:?}");
        assert!(figures.sustained > Duration::ZERO);
        let light = measure_light_load(test_db.url(), 100, 20);
        assert_eq!(light.len(), 20);
        assert!(light[19] < Duration::from_secs(5), "{light:?}");
    }
}
