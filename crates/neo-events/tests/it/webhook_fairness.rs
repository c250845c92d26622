//! Noisy neighbours: one tenant's huge fan-out to a slow endpoint does not delay another
//! tenant's deliveries. Delivery jobs name their tenant, so the queue's fair claims (and its
//! cap on one tenant's running jobs) decide whose delivery runs next.

use crate::webhooks::{Setup, event, setup_with, worker_path};
use neo_core::TenantId;
use neo_events::{DomainEvent, NewEndpoint};
use neo_queue::{QueueConfig, Worker, WorkerConfig};
use neo_testkit::{HttpReceiver, ScriptedResponse};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Tenant A's events: 120, each delivered to an endpoint that takes 300 ms to answer.
const A_EVENTS: u32 = 120;

/// Publishes A's fan-out, waits until A's deliveries hold the worker, then publishes one
/// event of tenant B; returns how long B's delivery took and how many of A's had arrived
/// by then.
async fn b_behind_a(s: &Setup) -> (Option<Duration>, usize) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let slow = HttpReceiver::start().await.unwrap();
    slow.set_default(ScriptedResponse::ok().delay(Duration::from_millis(300)));
    let fast = HttpReceiver::start().await.unwrap();
    for (receiver, tenant) in [(&slow, a), (&fast, b)] {
        s.webhooks
            .create_endpoint(
                NewEndpoint::new(receiver.url("/hook"))
                    .tenant(tenant)
                    .subscribe("*"),
            )
            .await
            .unwrap();
    }
    // A worker of eight slots: A's deliveries alone would keep it busy for 4.5 s.
    let (stop, stopped) = oneshot::channel::<()>();
    let worker = s.webhooks.handle(Worker::new(
        s.queue.clone(),
        WorkerConfig {
            concurrency: 8,
            poll_interval: Duration::from_millis(50),
            shutdown_grace: Duration::from_millis(100),
            ..WorkerConfig::default()
        },
    ));
    let run = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    // Fanned out directly (the dispatcher's job), so A's deliveries are all queued at once.
    let a_events: Vec<DomainEvent> = (0..A_EVENTS)
        .map(|n| event("organization.updated", n).tenant(a))
        .collect();
    s.webhooks.fan_out(&a_events).await.unwrap();
    slow.wait_for(8, Duration::from_secs(10)).await;

    let at = Instant::now();
    s.webhooks
        .fan_out(&[event("organization.created", 0).tenant(b)])
        .await
        .unwrap();
    let took = tokio::time::timeout(
        Duration::from_millis(1_500),
        fast.wait_for(1, Duration::from_secs(2)),
    )
    .await
    .ok()
    .map(|_| at.elapsed());
    let a_done = slow.requests().len();
    let _ = stop.send(());
    run.await.unwrap().unwrap();
    s.webhooks.shutdown().await;
    slow.shutdown().await;
    fast.shutdown().await;
    (took, a_done)
}

#[tokio::test]
async fn a_tenants_fan_out_to_a_slow_endpoint_does_not_delay_another_tenant() {
    // Fair claims alone: B's job is claimed as soon as one of A's deliveries frees a slot.
    let s = setup_with(worker_path(crate::webhooks::config(&[100])), |q| q).await;
    let (took, a_done) = b_behind_a(&s).await;
    let took = took.expect("B's delivery within 1.5 s");
    assert!(took < Duration::from_millis(1_000), "{took:?}");
    assert!(
        a_done < A_EVENTS as usize / 2,
        "A still has a backlog: {a_done}"
    );
}

#[tokio::test]
async fn a_cap_on_running_deliveries_keeps_slots_free_for_other_tenants() {
    // With at most four of A's deliveries running, B's takes a free slot at once.
    let s = setup_with(worker_path(crate::webhooks::config(&[100])), |q| {
        QueueConfig {
            max_running_per_tenant: Some(4),
            ..q
        }
    })
    .await;
    let (took, a_done) = b_behind_a(&s).await;
    let took = took.expect("B's delivery within 1.5 s");
    assert!(took < Duration::from_millis(250), "{took:?}");
    assert!(
        a_done < A_EVENTS as usize / 2,
        "A still has a backlog: {a_done}"
    );
}

#[tokio::test]
async fn without_fair_claims_another_tenant_waits_behind_the_backlog() {
    // The control: claims that ignore tenants serve A's older deliveries first.
    let s = setup_with(worker_path(crate::webhooks::config(&[100])), |q| {
        QueueConfig {
            fair_claims: false,
            ..q
        }
    })
    .await;
    let (took, _) = b_behind_a(&s).await;
    assert_eq!(took, None, "B waited more than 1.5 s behind A's backlog");
}
