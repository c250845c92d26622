//! Webhook delivery to a flaky receiver (one failing a fraction of requests, at random or in a
//! fixed pattern), with the endpoint breaker and without one: the attempt rate a steady feed
//! of messages gets, and whether every message is delivered once the retry schedule allows.
//! The scenario suite asserts on it; the compare report shows it as `webhooks/flaky_receiver`.

use crate::check;
use neo_events::{AddressPolicy, DomainEvent, NewEndpoint, WebhookConfig, Webhooks};
use neo_queue::{QueueConfig, Worker, WorkerConfig};
use neo_resilience::BreakerConfig;
use neo_testkit::{HttpReceiver, ScriptedResponse};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How the receiver fails.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Flakiness {
    /// Each request fails (503) with this probability.
    Random(f64),
    /// 2 of every 5 requests fail (503), always in the same places.
    TwoOfFive,
}

impl Flakiness {
    /// The fraction of requests that fail.
    pub fn fraction(self) -> f64 {
        match self {
            Flakiness::Random(p) => p,
            Flakiness::TwoOfFive => 0.4,
        }
    }
}

impl std::fmt::Display for Flakiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flakiness::Random(p) => write!(f, "random p={p}"),
            Flakiness::TwoOfFive => f.write_str("2 of 5"),
        }
    }
}

/// The endpoint breaker a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// One that never judges (the baseline: what the retry schedule alone allows).
    Off,
    /// [`WebhookConfig::default`]'s.
    Defaults,
    /// Short windows: the last second's calls (at least 10), open for 1 s.
    Short,
}

impl Breaker {
    fn apply(self, config: &mut WebhookConfig) {
        match self {
            Breaker::Off => {
                config.breaker = BreakerConfig {
                    minimum_calls: u32::MAX,
                    ..config.breaker
                };
            }
            Breaker::Defaults => {}
            Breaker::Short => {
                config.breaker = BreakerConfig {
                    window_duration: Some(Duration::from_secs(1)),
                    minimum_calls: 10,
                    open_for: Duration::from_secs(1),
                    ..config.breaker
                };
            }
        }
    }
}

/// What one run saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlakyRun {
    /// Requests per second the receiver got while messages were fed (after a warm-up).
    pub attempts_per_second: f64,
    /// Messages fed.
    pub messages: usize,
    /// Messages delivered by the end.
    pub delivered: usize,
    /// How long after the feed ended the last message was delivered.
    pub drained_in: Duration,
}

/// Messages fed per tick (every 50 ms: 200 messages/s).
const PER_TICK: usize = 10;
const TICK: Duration = Duration::from_millis(50);
/// Retries: 20 of 100 ms each (21 attempts: a message failing at random half of the time is
/// dead-lettered with probability 2^-21).
const RETRIES: usize = 20;

fn event(n: usize) -> DomainEvent {
    check(DomainEvent::new(
        "organization.updated",
        "organization",
        &format!("org_{n}"),
        &serde_json::json!({ "n": n }),
    ))
}

/// Feeds 200 messages/s for `feed` to an endpoint at a receiver failing as `flakiness`
/// says, through a fresh queue and webhook schema `prefix` on the server at `url`, with a
/// 100 ms retry schedule and the `breaker` setting; counts the attempts from `warm_up` to the
/// end of the feed, then waits up to `drain` for every message to be delivered.
pub async fn run(
    url: &str,
    prefix: &str,
    flakiness: Flakiness,
    breaker: Breaker,
    feed: Duration,
) -> FlakyRun {
    let warm_up = Duration::from_millis(300);
    let drain = Duration::from_secs(20);
    let db = crate::db::connect(url, 16).await;
    let queue = crate::events::fresh_queue(
        &db,
        prefix,
        QueueConfig {
            lease: Duration::from_secs(2),
            ..QueueConfig::default()
        },
    )
    .await;
    let mut config = WebhookConfig {
        schema: prefix.to_owned(),
        addresses: AddressPolicy {
            allow_loopback: true,
            allow_private: false,
        },
        require_https: false,
        retry_schedule: vec![Duration::from_millis(100); RETRIES],
        retry_jitter: 0.0,
        ..WebhookConfig::default()
    };
    breaker.apply(&mut config);
    let webhooks = check(Webhooks::new(&db, queue.clone(), config));
    check(webhooks.migrate().await);
    let receiver = check(HttpReceiver::start().await);
    let failure = ScriptedResponse::status(503);
    match flakiness {
        Flakiness::Random(p) => receiver.fail_fraction(p, failure, 0x5eed),
        Flakiness::TwoOfFive => {
            receiver.fail_pattern(vec![true, true, false, false, false], failure);
        }
    }
    check(
        webhooks
            .create_endpoint(NewEndpoint::new(receiver.url("/hook")).subscribe("*"))
            .await,
    );
    let worker = webhooks.handle(Worker::new(
        queue,
        WorkerConfig {
            concurrency: 64,
            poll_interval: Duration::from_millis(20),
            shutdown_grace: Duration::from_millis(100),
            ..WorkerConfig::default()
        },
    ));
    let (stop, stopped) = oneshot::channel::<()>();
    let working = tokio::spawn(async move {
        check(
            worker
                .run(async {
                    let _ = stopped.await;
                })
                .await,
        );
    });

    let started = Instant::now();
    let mut messages = 0;
    let mut ticks = tokio::time::interval(TICK);
    while started.elapsed() < feed {
        ticks.tick().await;
        let events: Vec<DomainEvent> = (messages..messages + PER_TICK).map(event).collect();
        check(webhooks.fan_out(&events).await);
        messages += PER_TICK;
    }
    let fed_until = Instant::now();
    let counted_from = started + warm_up;
    let attempts = receiver
        .requests()
        .iter()
        .filter(|r| r.at >= counted_from && r.at <= fed_until)
        .count();
    let attempts_per_second = attempts as f64 / (fed_until - counted_from).as_secs_f64();

    let delivered_sql =
        format!("SELECT count(*) FROM {prefix}.webhook_deliveries WHERE status = 'delivered'");
    let delivered = loop {
        let delivered: i64 = check(
            sqlx::query_scalar(sqlx::AssertSqlSafe(delivered_sql.clone()))
                .fetch_one(db.pool())
                .await,
        );
        let delivered = usize::try_from(delivered).unwrap_or(0);
        if delivered >= messages || fed_until.elapsed() > drain {
            break delivered;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let drained_in = fed_until.elapsed();
    let _ = stop.send(());
    let _ = working.await;
    webhooks.shutdown().await;
    receiver.shutdown().await;
    crate::db::drop_schemas(&db, &[prefix, &format!("{prefix}_q")]).await;
    FlakyRun {
        attempts_per_second,
        messages,
        delivered,
        drained_in,
    }
}
