//! Endpoint statistics: attempts, success rate and latency percentiles over a window, capped
//! per status.

use crate::webhooks::{Running, config, event, finish, publish, receiver_and_endpoint, setup};
use neo_core::{ErrorKind, HasErrorKind};
use neo_events::{DeliveryStatus, WebhookConfig, Webhooks};
use neo_testkit::{PgRoute, ScriptedResponse};
use std::time::{Duration, Instant};

async fn stats_count_attempts_success_and_latency_over_the_window(route: PgRoute) {
    let s = setup(route, config(&[50])).await;
    let (receiver, endpoint) = receiver_and_endpoint(&s, |e| e).await;
    // The first request fails, every other one is answered after 40 ms.
    receiver.push(ScriptedResponse::status(500));
    receiver.set_default(ScriptedResponse::ok().delay(Duration::from_millis(40)));
    let events: Vec<_> = (1..=3).map(|n| event("organization.created", n)).collect();
    publish(&s, &events).await;
    let running = Running::start(&s);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s
        .webhooks
        .deliveries(endpoint.id, Some(DeliveryStatus::Delivered), 10)
        .await
        .unwrap()
        .len()
        < 3
    {
        assert!(Instant::now() < deadline, "never delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    finish(running, &s, receiver).await;

    let hour = Duration::from_secs(3600);
    let stats = s.webhooks.endpoint_stats(endpoint.id, hour).await.unwrap();
    assert_eq!(stats.endpoint_id, endpoint.id);
    assert_eq!(
        (
            stats.deliveries,
            stats.attempts,
            stats.delivered,
            stats.dead,
            stats.pending
        ),
        (3, 4, 3, 0, 0)
    );
    assert_eq!(stats.success_rate, Some(0.75));
    let (p50, p99) = (stats.latency_p50.unwrap(), stats.latency_p99.unwrap());
    assert!(p50 >= Duration::from_millis(40), "{p50:?}");
    assert!(p99 >= p50 && p99 < Duration::from_secs(5), "{p99:?}");
    assert!(!stats.truncated);

    // A window after the deliveries counts nothing.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let empty = s
        .webhooks
        .endpoint_stats(endpoint.id, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!((empty.deliveries, empty.attempts), (0, 0));
    assert_eq!((empty.success_rate, empty.latency_p50), (None, None));

    // The cap bounds each status's rows and says so.
    let capped = Webhooks::new(
        &s.db,
        s.queue.clone(),
        WebhookConfig {
            stats_max_deliveries: 2,
            ..config(&[50])
        },
    )
    .unwrap()
    .endpoint_stats(endpoint.id, hour)
    .await
    .unwrap();
    assert_eq!((capped.deliveries, capped.delivered), (2, 2));
    assert!(capped.truncated);

    let unknown = s
        .webhooks
        .endpoint_stats(uuid::Uuid::now_v7(), hour)
        .await
        .unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::NotFound, "{unknown}");
    let zero = WebhookConfig {
        stats_max_deliveries: 0,
        ..WebhookConfig::default()
    };
    let refused = Webhooks::new(&s.db, s.queue.clone(), zero).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Validation);
}

neo_testkit::over_routes!(stats_count_attempts_success_and_latency_over_the_window);
