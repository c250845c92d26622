//! Multi-region delivery: each region's worker pool claims only its endpoints' deliveries, so
//! a region whose workers are stopped delays no other region.

use crate::webhooks::{Running, Setup, config, event, publish, setup};
use neo_core::{ErrorKind, HasErrorKind};
use neo_events::{DeliveryStatus, NewEndpoint};
use neo_queue::{Worker, WorkerConfig};
use neo_testkit::{HttpReceiver, PgRoute};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A worker claiming only the kinds it handles.
fn worker(s: &Setup) -> Worker {
    Worker::new(
        s.queue.clone(),
        WorkerConfig {
            concurrency: 8,
            poll_interval: Duration::from_millis(50),
            shutdown_grace: Duration::from_millis(100),
            only_known_kinds: true,
            ..WorkerConfig::default()
        },
    )
}

/// A delivery worker pool for `region` (`None`: the default one), until the sender fires.
fn region_pool(
    s: &Setup,
    region: Option<&str>,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let worker = match region {
        Some(region) => s.webhooks.handle_region(worker(s), region).unwrap(),
        None => s.webhooks.handle(worker(s)),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        worker
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (stop, task)
}

async fn delivered(s: &Setup, endpoint: uuid::Uuid) -> usize {
    s.webhooks
        .deliveries(endpoint, Some(DeliveryStatus::Delivered), 100)
        .await
        .unwrap()
        .len()
}

async fn each_region_delivers_its_own_endpoints_and_a_stopped_region_delays_no_other(
    route: PgRoute,
) {
    let s = setup(route, config(&[100])).await;
    let (eu, us, home) = (
        HttpReceiver::start().await.unwrap(),
        HttpReceiver::start().await.unwrap(),
        HttpReceiver::start().await.unwrap(),
    );
    let endpoint = |receiver: &HttpReceiver, region: Option<&str>| {
        let new = NewEndpoint::new(receiver.url("/hook")).subscribe("*");
        match region {
            Some(region) => new.region(region),
            None => new,
        }
    };
    let e_eu = s
        .webhooks
        .create_endpoint(endpoint(&eu, Some("eu-west")))
        .await
        .unwrap();
    let e_us = s
        .webhooks
        .create_endpoint(endpoint(&us, Some("us_east")))
        .await
        .unwrap();
    let e_home = s
        .webhooks
        .create_endpoint(endpoint(&home, None))
        .await
        .unwrap();
    assert_eq!(e_eu.region.as_deref(), Some("eu-west"));
    assert_eq!(
        s.webhooks
            .endpoint(e_us.id)
            .await
            .unwrap()
            .region
            .as_deref(),
        Some("us_east")
    );
    assert_eq!(e_home.region, None);

    // The eu-west pool is down; us_east's pool and the default one run.
    let mut running = Running::default();
    running.dispatcher(&s);
    let (home_stop, home_task) = region_pool(&s, None);
    let (us_stop, us_task) = region_pool(&s, Some("us_east"));
    let started = Instant::now();
    let events: Vec<_> = (1..=3).map(|n| event("organization.created", n)).collect();
    publish(&s, &events).await;
    while delivered(&s, e_us.id).await < 3 || delivered(&s, e_home.id).await < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "us_east ({}) or the default region ({}) was held back",
            delivered(&s, e_us.id).await,
            delivered(&s, e_home.id).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        eu.requests().is_empty(),
        "another region's worker sent eu-west's deliveries"
    );
    let waiting = s.webhooks.deliveries(e_eu.id, None, 10).await.unwrap();
    assert_eq!(waiting.len(), 3);
    assert!(
        waiting
            .iter()
            .all(|d| d.status == DeliveryStatus::Pending && d.attempts == 0)
    );
    assert_eq!(us.requests().len(), 3);
    assert_eq!(home.requests().len(), 3);

    // eu-west's pool comes up and sends what waited.
    let (eu_stop, eu_task) = region_pool(&s, Some("eu-west"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while delivered(&s, e_eu.id).await < 3 {
        assert!(Instant::now() < deadline, "eu-west never delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(eu.requests().len(), 3);
    assert_eq!(us.requests().len(), 3, "nothing sent twice");
    for (stop, task) in [
        (home_stop, home_task),
        (us_stop, us_task),
        (eu_stop, eu_task),
    ] {
        let _ = stop.send(());
        task.await.unwrap();
    }
    running.stop().await;
    s.webhooks.shutdown().await;

    // Bad region names are refused.
    let refused = s
        .webhooks
        .create_endpoint(endpoint(&eu, Some("EU west")))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Validation, "{refused}");
    assert_eq!(
        s.webhooks.handle_region(worker(&s), "").unwrap_err().kind(),
        ErrorKind::Validation
    );
    let claims_all = Worker::new(s.queue.clone(), WorkerConfig::default());
    assert_eq!(
        s.webhooks
            .handle_region(claims_all, "eu-west")
            .unwrap_err()
            .kind(),
        ErrorKind::Validation,
        "a region worker claiming every kind would dead-letter other regions' jobs"
    );
}

neo_testkit::over_routes!(
    each_region_delivers_its_own_endpoints_and_a_stopped_region_delays_no_other
);
