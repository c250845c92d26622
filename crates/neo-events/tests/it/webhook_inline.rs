//! First attempts made inline by fan-out (`WebhookConfig::inline_attempts`): a lone event is
//! sent without a worker, its job is still enqueued (the backstop that makes the retry, or
//! the first attempt after a crash) and counts the inline attempt, moved to the retry's time
//! when the attempt fails and cancelled when it settled the delivery; a batch larger than the free slots takes the worker path.

use crate::webhooks::{
    Running, config, delivery_in, event, finish, no_job_left, publish, receiver_and_endpoint, setup,
};
use neo_events::DeliveryStatus;
use neo_testkit::ScriptedResponse;
use std::time::{Duration, Instant};

async fn a_lone_event_goes_out_inline_and_its_job_is_withdrawn(route: neo_testkit::PgRoute) {
    let s = setup(
        route,
        neo_events::WebhookConfig {
            inline_attempts: 2,
            ..config(&[100])
        },
    )
    .await;
    let (receiver, endpoint) = receiver_and_endpoint(&s, |e| e).await;
    let mut running = Running::default();
    running.dispatcher(&s); // no worker
    publish(&s, &[event("organization.created", 1)]).await;
    assert_eq!(
        receiver.wait_for(1, Duration::from_secs(5)).await.len(),
        1,
        "sent without a worker"
    );
    let delivered = delivery_in(&s, endpoint.id, DeliveryStatus::Delivered).await;
    assert_eq!(delivered.attempts, 1);
    // Its job, enqueued as the backstop, is cancelled once the attempt is recorded.
    no_job_left(&s).await;

    // Three events at once do not fit two slots: they wait for a worker.
    publish(
        &s,
        &[1, 2, 3].map(|n| event("organization.updated", 10 + n)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.requests().len(), 1, "a batch took the worker path");
    assert_eq!(s.queue.depth().await.unwrap().available, 3);

    running.worker(&s);
    assert_eq!(receiver.wait_for(4, Duration::from_secs(5)).await.len(), 4);
    // The worker acks the three; the backstop (request timeout 500 ms + 1 s) passes with
    // nothing sent again.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.queue.depth().await.unwrap().available + s.queue.depth().await.unwrap().running > 0 {
        assert!(Instant::now() < deadline, "jobs left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(receiver.requests().len(), 4, "no second send");
    finish(running, &s, receiver).await;
}

async fn a_failed_inline_attempt_is_retried_by_its_job_on_schedule_and_counts_as_the_first(
    route: neo_testkit::PgRoute,
) {
    // Two attempts in all: the inline one and the job's. The backstop (request timeout 5 s +
    // first retry 100 ms) is far off: the failed attempt moves its job to the retry's time.
    let s = setup(
        route,
        neo_events::WebhookConfig {
            inline_attempts: 4,
            request_timeout: Duration::from_secs(5),
            ..config(&[100])
        },
    )
    .await;
    let (receiver, endpoint) = receiver_and_endpoint(&s, |e| e).await;
    receiver.push(ScriptedResponse::status(500));
    receiver.push(ScriptedResponse::status(503));
    let mut running = Running::default();
    running.dispatcher(&s);
    let published = Instant::now();
    publish(&s, &[event("organization.created", 1)]).await;
    let pending = loop {
        let d = delivery_in(&s, endpoint.id, DeliveryStatus::Pending).await;
        if d.attempts == 1 {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pending.response_status, Some(500));
    let next = pending.next_attempt_at.expect("a retry time");
    assert!(
        next < chrono::Utc::now() + chrono::Duration::seconds(1),
        "the retry is due on schedule, not at the backstop: {pending:?}"
    );
    running.worker(&s);
    let dead = delivery_in(&s, endpoint.id, DeliveryStatus::Dead).await;
    assert_eq!(
        dead.attempts, 2,
        "the job's attempt was the delivery's second and last"
    );
    assert_eq!(dead.response_status, Some(503));
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    // The retry came from the job, moved to the schedule's 100 ms: not sooner, and well
    // before the 5.1 s backstop.
    let gap = requests[1].at.duration_since(requests[0].at);
    assert!(gap >= Duration::from_millis(100), "{gap:?}");
    let since = requests[1].at.duration_since(published);
    assert!(since < Duration::from_secs(4), "{since:?}");
    finish(running, &s, receiver).await;
}

/// Attempts that settle together have their jobs withdrawn together (in batches,
/// `WebhookConfig::withdrawals`): every one of them goes.
async fn inline_attempts_settling_together_withdraw_every_job(route: neo_testkit::PgRoute) {
    let s = setup(
        route,
        neo_events::WebhookConfig {
            inline_attempts: 8,
            ..config(&[100])
        },
    )
    .await;
    let (receiver, endpoint) = receiver_and_endpoint(&s, |e| e).await;
    let mut running = Running::default();
    running.dispatcher(&s); // no worker: only inline attempts send
    publish(
        &s,
        &[1, 2, 3, 4, 5].map(|n| event("organization.created", n)),
    )
    .await;
    assert_eq!(
        receiver.wait_for(5, Duration::from_secs(5)).await.len(),
        5,
        "five deliveries fit eight slots: all sent inline"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let delivered = s
            .webhooks
            .deliveries(endpoint.id, Some(DeliveryStatus::Delivered), 10)
            .await
            .unwrap();
        if delivered.len() == 5 {
            assert!(delivered.iter().all(|d| d.attempts == 1), "{delivered:?}");
            break;
        }
        assert!(Instant::now() < deadline, "delivered: {delivered:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    no_job_left(&s).await;
    finish(running, &s, receiver).await;
}

neo_testkit::over_routes!(
    a_lone_event_goes_out_inline_and_its_job_is_withdrawn,
    inline_attempts_settling_together_withdraw_every_job,
    a_failed_inline_attempt_is_retried_by_its_job_on_schedule_and_counts_as_the_first,
);
