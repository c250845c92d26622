//! Webhook delivery under faults: every event is accounted for.
#![allow(
    clippy::print_stdout,
    reason = "the fault tests print what they measured"
)]

use crate::webhooks::{Running, event, publish, setup};
use neo_events::{DeliveryStatus, DomainEvent, WebhookConfig};
use neo_resilience::BreakerConfig;
use neo_testkit::{HttpReceiver, PgRoute, ReceivedRequest, ScriptedResponse};
use sqlx::Row;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn fast_config() -> WebhookConfig {
    WebhookConfig {
        retry_schedule: [10, 20, 40, 80].map(Duration::from_millis).to_vec(),
        retry_jitter: 0.1,
        breaker: BreakerConfig {
            minimum_calls: 20,
            open_for: Duration::from_millis(100),
            ..BreakerConfig::default()
        },
        ..crate::webhooks::config(&[])
    }
}

/// Per `webhook-id`, how many requests were answered 200.
fn accepted_per_message(requests: &[ReceivedRequest]) -> HashMap<String, usize> {
    let mut accepted = HashMap::new();
    for r in requests {
        let id = r.header("webhook-id").unwrap().to_owned();
        let count = accepted.entry(id).or_insert(0);
        if r.answered == 200 {
            *count += 1;
        }
    }
    accepted
}

/// The rows of `sql` (no parameters), on a statement connection: safe through PgBouncer.
async fn rows(s: &crate::webhooks::Setup, sql: &'static str) -> Vec<sqlx::postgres::PgRow> {
    let mut conn = s.db.statement_connection().await.unwrap();
    let rows = s.db.statement(sql).fetch_all(&mut *conn).await.unwrap();
    conn.finish().await.unwrap();
    rows
}

/// `(status, count)` of every delivery.
async fn statuses(s: &crate::webhooks::Setup) -> HashMap<String, i64> {
    rows(
        s,
        "SELECT status, count(*) FROM neo_events.webhook_deliveries GROUP BY status",
    )
    .await
    .iter()
    .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
    .collect()
}

async fn wait_settled(
    s: &crate::webhooks::Setup,
    total: i64,
    timeout: Duration,
) -> HashMap<String, i64> {
    let deadline = Instant::now() + timeout;
    loop {
        let counts = statuses(s).await;
        let settled = counts.get("delivered").copied().unwrap_or(0)
            + counts.get("dead").copied().unwrap_or(0);
        if settled == total {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "not settled in time: {counts:?} of {total}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ten_thousand_events_with_faults_are_all_delivered_or_dead_lettered_never_lost(
    route: PgRoute,
) {
    const EVENTS: u32 = 10_000;
    let s = setup(route, fast_config()).await;
    let receiver = HttpReceiver::start().await.unwrap();
    let endpoint = s
        .webhooks
        .create_endpoint(neo_events::NewEndpoint::new(receiver.url("/hook")).subscribe("*"))
        .await
        .unwrap();
    // The first 6,000 answers: a fault in about a third of them (500, 429 with Retry-After: 0,
    // a dropped connection, now and then a 503 slower than the request timeout), then 200.
    // Bursts of failures (every 600th answer starts 12 in a row) dead-letter a few messages.
    for n in 0..6_000_u32 {
        receiver.push(match (n % 600, n % 10) {
            (0..12, _) => ScriptedResponse::status(500),
            (_, 0) => ScriptedResponse::status(500),
            (_, 1) => ScriptedResponse::status(429).retry_after(Duration::ZERO),
            (_, 2) => ScriptedResponse::drop_connection(),
            (_, 3) if n % 500 == 3 => {
                ScriptedResponse::status(503).delay(Duration::from_millis(700))
            }
            _ => ScriptedResponse::ok(),
        });
    }
    let running = Running::start(&s);
    let started = Instant::now();
    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(500) {
        let events: Vec<DomainEvent> = chunk
            .iter()
            .map(|n| event("organization.created", *n))
            .collect();
        publish(&s, &events).await;
    }
    let counts = wait_settled(&s, i64::from(EVENTS), Duration::from_secs(240)).await;
    let took = started.elapsed();
    running.stop().await;
    s.webhooks.shutdown().await;

    let requests = receiver.requests();
    let accepted = accepted_per_message(&requests);
    let outbox_ids: Vec<String> = rows(&s, "SELECT id::text FROM neo_events.outbox")
        .await
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(outbox_ids.len(), EVENTS as usize);
    let dead = s
        .webhooks
        .deliveries(endpoint.id, Some(DeliveryStatus::Dead), EVENTS)
        .await
        .unwrap();
    let dead_ids: std::collections::HashSet<String> =
        dead.iter().map(|d| d.message_id.to_string()).collect();
    for id in &outbox_ids {
        let times = accepted.get(id).copied().unwrap_or(0);
        if dead_ids.contains(id) {
            assert_eq!(times, 0, "a dead-lettered message was accepted: {id}");
        } else {
            assert_eq!(
                times, 1,
                "a delivered message was accepted {times} times: {id}"
            );
        }
    }
    let faults = requests.iter().filter(|r| r.answered != 200).count();
    println!(
        "{route}: {EVENTS} events, {} requests ({faults} faults), {counts:?}, settled in {took:?}",
        requests.len()
    );
    assert_eq!(counts.get("pending"), None);
    receiver.shutdown().await;
}

async fn killed_dispatchers_and_workers_lose_nothing_and_keep_the_webhook_id(route: PgRoute) {
    const EVENTS: u32 = 600;
    let s = setup(route, fast_config()).await;
    let receiver = HttpReceiver::start().await.unwrap();
    // Slow answers keep deliveries in flight when a worker is killed.
    receiver.set_default(ScriptedResponse::ok().delay(Duration::from_millis(30)));
    s.webhooks
        .create_endpoint(neo_events::NewEndpoint::new(receiver.url("/hook")).subscribe("*"))
        .await
        .unwrap();
    let publisher = {
        let (db, outbox) = (s.db.clone(), s.outbox.clone());
        tokio::spawn(async move {
            for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(20) {
                let events: Vec<DomainEvent> = chunk
                    .iter()
                    .map(|n| event("organization.created", *n))
                    .collect();
                let mut uow = db.begin().await.unwrap();
                outbox.publish_many(&mut *uow, &events).await.unwrap();
                uow.commit().await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // Kill and restart the dispatcher and the worker over and over: an aborted task drops its
    // transactions and connections mid-batch and its in-flight requests mid-answer.
    let mut kills = 0;
    while !publisher.is_finished() || kills < 6 {
        let mut running = Running::default();
        running.dispatcher(&s);
        running.worker(&s);
        tokio::time::sleep(Duration::from_millis(150)).await;
        running.abort();
        kills += 1;
    }
    publisher.await.unwrap();
    // The lease (2 s) of killed workers' jobs runs out, and a last worker finishes.
    let running = Running::start(&s);
    let counts = wait_settled(&s, i64::from(EVENTS), Duration::from_secs(60)).await;
    running.stop().await;
    s.webhooks.shutdown().await;
    assert_eq!(
        counts.get("delivered").copied(),
        Some(i64::from(EVENTS)),
        "{counts:?}"
    );
    let requests = receiver.requests();
    let accepted = accepted_per_message(&requests);
    assert_eq!(
        accepted.len(),
        EVENTS as usize,
        "every message reached the receiver"
    );
    assert!(accepted.values().all(|n| *n >= 1));
    let duplicates: usize = accepted.values().map(|n| n - 1).sum();
    println!(
        "{route}: {kills} kills, {} requests, {duplicates} duplicate deliveries (same webhook-id)",
        requests.len()
    );
    receiver.shutdown().await;
}

// Dispatcher, workers and publisher in parallel: a multi-threaded runtime.
neo_testkit::over_routes!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    ten_thousand_events_with_faults_are_all_delivered_or_dead_lettered_never_lost,
    killed_dispatchers_and_workers_lose_nothing_and_keep_the_webhook_id,
);
