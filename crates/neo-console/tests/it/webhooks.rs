//! One endpoint's deliveries with every attempt, and recovering the failed ones since a time.

use crate::common::{csrf, get, post, setup};
use axum::http::StatusCode;
use neo_events::{DeliveryStatus, NewEndpoint};
use neo_queue::{Worker, WorkerConfig};
use neo_testkit::{HttpReceiver, ScriptedResponse};
use std::time::{Duration, Instant};

async fn until<F: AsyncFnMut() -> bool>(what: &str, mut done: F) {
    let started = Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_shows_every_attempt_of_its_deliveries_escaped() {
    let s = setup().await;
    let receiver = HttpReceiver::start().await.unwrap();
    receiver.push(ScriptedResponse::status(503).body("<script>alert('x')</script> overloaded"));
    receiver.set_default(ScriptedResponse::ok().body("thanks"));
    let endpoint = s
        .endpoint(NewEndpoint::new(receiver.url("/hook")).description("attempts"))
        .await;
    let worker = s.webhooks.handle(Worker::new(
        s.queue.clone(),
        WorkerConfig {
            poll_interval: Duration::from_millis(100),
            ..WorkerConfig::default()
        },
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    s.fan_out(serde_json::json!({ "n": 1 }), None).await;
    let dead = async || {
        s.webhooks
            .deliveries(endpoint.id, Some(DeliveryStatus::Dead), 10)
            .await
            .unwrap()
    };
    until("the first attempt to fail", async || {
        dead().await.len() == 1
    })
    .await;
    let delivery = dead().await.remove(0);
    // Replayed from the console: the second attempt is delivered.
    let app = s.operator();
    let page = get(&app, &format!("/ops/webhooks/{}", endpoint.id)).await;
    let token = csrf(&page.body);
    let replay = post(
        &app,
        &format!("/ops/deliveries/{}/replay", delivery.id),
        &format!("csrf={token}"),
    )
    .await;
    assert_eq!(replay.status, StatusCode::SEE_OTHER, "{}", replay.body);
    until("the replay to be delivered", async || {
        s.webhooks.delivery(delivery.id).await.unwrap().status == DeliveryStatus::Delivered
    })
    .await;

    let page = get(&app, &format!("/ops/webhooks/{}", endpoint.id)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(
        page.body.matches("class=\"attempt\"").count(),
        2,
        "{}",
        page.body
    );
    let first = &page.body[page.body.find("data-attempt=\"1\"").unwrap()..];
    let first = &first[..first.find("</tr>").unwrap()];
    assert!(
        first.contains(">dead<") && first.contains(">503<"),
        "{first}"
    );
    assert!(
        first.contains("&lt;script&gt;alert('x')&lt;/script&gt; overloaded"),
        "{first}"
    );
    let second = &page.body[page.body.find("data-attempt=\"2\"").unwrap()..];
    let second = &second[..second.find("</tr>").unwrap()];
    assert!(
        second.contains(">delivered<") && second.contains(">200<") && second.contains("thanks"),
        "{second}"
    );
    assert!(!page.body.contains("<script"), "unescaped: {}", page.body);
    // The delivery's own page lists both attempts too.
    let detail = get(&app, &format!("/ops/deliveries/{}", delivery.id)).await;
    assert_eq!(detail.body.matches("class=\"attempt\"").count(), 2);
    assert!(
        !detail.body.contains("<script"),
        "unescaped: {}",
        detail.body
    );

    let _ = stop.send(());
    worker.await.unwrap().unwrap();
}

#[tokio::test]
async fn recover_sends_again_the_deliveries_dead_since_the_time_given() {
    let s = setup().await;
    let endpoint = s
        .endpoint(NewEndpoint::new("http://127.0.0.1:9/hook"))
        .await;
    for n in 0..3 {
        s.fan_out(serde_json::json!({ "n": n }), None).await;
    }
    let ids: Vec<i64> = s
        .webhooks
        .deliveries(endpoint.id, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids.len(), 3);
    // Two went dead ten minutes ago, one two hours ago.
    let mut conn = s.db.statement_connection().await.unwrap();
    sqlx::query(
        "UPDATE neo_events.webhook_deliveries SET status = 'dead', \
         updated_at = now() - CASE WHEN id = $1 THEN interval '2 hours' ELSE interval '10 minutes' END",
    )
    .persistent(false)
    .bind(ids[0])
    .execute(&mut *conn)
    .await
    .unwrap();
    conn.finish().await.unwrap();

    let app = s.operator();
    let page = get(&app, &format!("/ops/webhooks/{}", endpoint.id)).await;
    assert!(page.body.contains("id=\"recover\""), "{}", page.body);
    let token = csrf(&page.body);
    let path = format!("/ops/webhooks/{}/recover", endpoint.id);
    let bad = post(&app, &path, &format!("csrf={token}&since=yesterday")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let refused = post(&app, &path, "since=2000-01-01T00:00").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M");
    let recovered = post(&app, &path, &format!("csrf={token}&since={since}")).await;
    assert_eq!(
        recovered.status,
        StatusCode::SEE_OTHER,
        "{}",
        recovered.body
    );
    let status = async |id| s.webhooks.delivery(id).await.unwrap().status;
    assert_eq!(
        status(ids[0]).await,
        DeliveryStatus::Dead,
        "older than since"
    );
    assert_eq!(status(ids[1]).await, DeliveryStatus::Pending);
    assert_eq!(status(ids[2]).await, DeliveryStatus::Pending);
}

/// Delivers one event to a receiver that always answers `answer`, replaying it `replays`
/// times, through webhooks keeping `history` attempts; returns the attempts read back and
/// the rows in the history table.
async fn attempts_kept(
    history: u32,
    replays: usize,
    answer: u16,
) -> (Vec<neo_events::DeliveryAttempt>, i64) {
    let s = setup().await;
    let webhooks = neo_events::Webhooks::new(
        &s.db,
        s.queue.clone(),
        neo_events::WebhookConfig {
            attempt_history: history,
            ..crate::common::webhook_config()
        },
    )
    .unwrap();
    let receiver = HttpReceiver::start().await.unwrap();
    receiver.set_default(ScriptedResponse::status(answer));
    let done = if answer < 300 {
        DeliveryStatus::Delivered
    } else {
        DeliveryStatus::Dead
    };
    let endpoint = webhooks
        .create_endpoint(NewEndpoint::new(receiver.url("/hook")).subscribe("*"))
        .await
        .unwrap();
    let worker = webhooks.handle(Worker::new(
        s.queue.clone(),
        WorkerConfig {
            poll_interval: Duration::from_millis(100),
            ..WorkerConfig::default()
        },
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let event =
        neo_events::DomainEvent::new("organization.created", "organization", "o", &1).unwrap();
    webhooks.fan_out(&[event]).await.unwrap();
    for round in 0..=replays {
        let attempts = i32::try_from(round + 1).unwrap();
        until("the attempt to fail", async || {
            let d = webhooks
                .deliveries(endpoint.id, None, 1)
                .await
                .unwrap()
                .remove(0);
            d.status == done && d.attempts == attempts
        })
        .await;
        if round < replays {
            // The job that finished the delivery is acknowledged after its outcome is
            // written; a replay before that ack enqueues nothing (the delivery's job key is
            // still held), so wait for it.
            until("the delivery's job to be acknowledged", async || {
                let depth = s.queue.depth().await.unwrap();
                depth.running == 0 && depth.available == 0
            })
            .await;
            let id = webhooks.deliveries(endpoint.id, None, 1).await.unwrap()[0].id;
            assert!(webhooks.replay(id).await.unwrap());
        }
    }
    let id = webhooks.deliveries(endpoint.id, None, 1).await.unwrap()[0].id;
    let kept = webhooks.delivery_attempts(None, &[id]).await.unwrap();
    let mut conn = s.db.statement_connection().await.unwrap();
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM neo_events.webhook_delivery_attempts WHERE delivery_id = $1",
    )
    .persistent(false)
    .bind(id)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    conn.finish().await.unwrap();
    let _ = stop.send(());
    worker.await.unwrap().unwrap();
    (kept, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_keeps_its_latest_attempts_only_and_none_when_told() {
    let (kept, _) = attempts_kept(2, 3, 500).await;
    let numbers: Vec<i32> = kept.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, vec![3, 4], "the latest two of four: {kept:#?}");
    assert!(
        kept.iter()
            .all(|a| a.outcome == "dead" && a.response_status == Some(500))
    );
    assert!(
        attempts_kept(0, 1, 500).await.0.is_empty(),
        "attempt_history 0 keeps none"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_attempt_that_delivers_is_read_from_its_delivery_row_and_writes_no_history() {
    let (kept, rows) = attempts_kept(20, 0, 204).await;
    assert_eq!(rows, 0, "no history row for a first-attempt success");
    assert_eq!(kept.len(), 1, "{kept:#?}");
    assert_eq!(kept[0].attempt, 1);
    assert_eq!(kept[0].outcome, "delivered");
    assert_eq!(kept[0].response_status, Some(204));
    assert!(kept[0].duration_ms.is_some());
}
