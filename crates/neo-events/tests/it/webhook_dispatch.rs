//! `Webhooks::dispatch`: outbox events claimed and fanned out in one transaction, inline
//! first attempts sent before its commit and recorded only after it. A round that does not
//! commit (rolled back, or its connection killed as a crashing dispatcher's would be) leaves
//! no delivery and the event pending; the next round sends it again and records it once.

use crate::webhooks::{
    Running, Setup, config, delivery_in, event, finish, only_job_cancelled, publish,
    receiver_and_endpoint, setup,
};
use neo_events::{DeliveryStatus, NewEndpoint, WebhookConfig};
use neo_testkit::{HttpReceiver, PgRoute};
use std::time::{Duration, Instant};

fn inline(slots: usize) -> WebhookConfig {
    WebhookConfig {
        inline_attempts: slots,
        ..config(&[100])
    }
}

fn webhook_id(receiver: &HttpReceiver, n: usize) -> String {
    receiver.requests()[n]
        .header("webhook-id")
        .unwrap()
        .to_owned()
}

/// The dispatcher task: `Webhooks::dispatch` until stopped.
fn dispatcher(
    s: &Setup,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<u64>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (outbox, webhooks) = (s.outbox.clone(), s.webhooks.clone());
    let task = tokio::spawn(async move {
        webhooks
            .dispatch(&outbox, async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    (stop, task)
}

async fn one_transaction_per_round_sends_inline_and_a_worker_takes_the_rest(route: PgRoute) {
    let s = setup(route, inline(2)).await;
    let (receiver, endpoint) = receiver_and_endpoint(&s, |e| e).await;
    let (stop, task) = dispatcher(&s);
    publish(&s, &[event("organization.created", 1)]).await;
    assert_eq!(
        receiver.wait_for(1, Duration::from_secs(5)).await.len(),
        1,
        "sent without a worker"
    );
    let delivered = delivery_in(&s, endpoint.id, DeliveryStatus::Delivered).await;
    assert_eq!(delivered.attempts, 1);
    assert_eq!(
        s.outbox.pending().await.unwrap(),
        0,
        "the event was marked processed"
    );
    // Its job, enqueued as the backstop, is cancelled once the attempt is recorded.
    only_job_cancelled(&s).await;

    // A batch larger than the free slots takes the worker path.
    publish(
        &s,
        &[1, 2, 3].map(|n| event("organization.updated", 10 + n)),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.outbox.pending().await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "events left in the outbox");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(receiver.requests().len(), 1, "a batch took the worker path");
    assert_eq!(s.queue.depth().await.unwrap().available, 3);
    let mut running = Running::default();
    running.worker(&s);
    assert_eq!(receiver.wait_for(4, Duration::from_secs(5)).await.len(), 4);
    stop.send(()).unwrap();
    assert_eq!(task.await.unwrap(), 4, "events dispatched");
    finish(running, &s, receiver).await;
}

/// More events than free slots, of which fewer deliveries than slots: the fan-out statement
/// did not return the rows to send, so the inline attempt reads them once committed.
async fn an_inline_attempt_without_its_rows_reads_them_after_the_commit(route: PgRoute) {
    let s = setup(route, inline(2)).await;
    let receiver = HttpReceiver::start().await.unwrap();
    let endpoint = s
        .webhooks
        .create_endpoint(NewEndpoint::new(receiver.url("/hook")).subscribe("invoice.paid"))
        .await
        .unwrap();
    publish(
        &s,
        &[
            event("organization.created", 1),
            event("organization.updated", 2),
            event("invoice.paid", 3),
        ],
    )
    .await;
    assert_eq!(s.webhooks.dispatch_once(&s.outbox).await.unwrap(), 3);
    assert_eq!(
        receiver.wait_for(1, Duration::from_secs(5)).await.len(),
        1,
        "sent without a worker"
    );
    let delivered = delivery_in(&s, endpoint.id, DeliveryStatus::Delivered).await;
    assert_eq!(delivered.attempts, 1);
    s.webhooks.shutdown().await;
    receiver.shutdown().await;
}

/// Claims and fans out in a transaction left open; returns it with what fan-out made.
async fn fanned_out_uncommitted(s: &Setup) -> (neo_db::UnitOfWork, neo_events::FannedOut) {
    let mut tx = s.db.begin().await.unwrap();
    let events = s.outbox.claim(&mut tx).await.unwrap();
    assert_eq!(events.len(), 1);
    let fanned = s.webhooks.fan_out_in(&mut tx, &events).await.unwrap();
    assert_eq!(fanned.created(), 1);
    (tx, fanned)
}

/// After a round that did not commit: nothing recorded, the event pending; the next round
/// sends it again (same `webhook-id`) and records it delivered once.
async fn sent_again_and_recorded_once(s: &Setup, receiver: &HttpReceiver, endpoint: uuid::Uuid) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        s.webhooks
            .deliveries(endpoint, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.queue.depth().await.unwrap().available, 0, "no job either");
    assert_eq!(
        s.outbox.pending().await.unwrap(),
        1,
        "the event is claimed again"
    );
    assert_eq!(s.webhooks.dispatch_once(&s.outbox).await.unwrap(), 1);
    assert_eq!(receiver.wait_for(2, Duration::from_secs(5)).await.len(), 2);
    assert_eq!(
        webhook_id(receiver, 0),
        webhook_id(receiver, 1),
        "the same message"
    );
    let delivered = delivery_in(s, endpoint, DeliveryStatus::Delivered).await;
    assert_eq!(delivered.attempts, 1);
    assert_eq!(
        s.webhooks
            .deliveries(endpoint, None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(s.outbox.pending().await.unwrap(), 0);
}

async fn an_inline_attempt_goes_out_before_the_commit_and_is_recorded_after_it(route: PgRoute) {
    let s = setup(route, inline(2)).await;
    let (receiver, endpoint) = receiver_and_endpoint(&s, |e| e).await;
    publish(&s, &[event("organization.created", 1)]).await;
    let (tx, fanned) = fanned_out_uncommitted(&s).await;
    assert_eq!(
        receiver.wait_for(1, Duration::from_secs(5)).await.len(),
        1,
        "sent before the commit"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        s.webhooks
            .deliveries(endpoint.id, None, 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing visible before the commit"
    );
    tx.commit().await.unwrap();
    fanned.committed();
    let delivered = delivery_in(&s, endpoint.id, DeliveryStatus::Delivered).await;
    assert_eq!(delivered.attempts, 1);
    assert_eq!(receiver.requests().len(), 1);
    s.webhooks.shutdown().await;
    receiver.shutdown().await;
}

async fn a_rolled_back_round_records_nothing_and_the_event_is_sent_again(route: PgRoute) {
    let s = setup(route, inline(2)).await;
    let (receiver, endpoint) = receiver_and_endpoint(&s, |e| e).await;
    publish(&s, &[event("organization.created", 1)]).await;
    let (tx, fanned) = fanned_out_uncommitted(&s).await;
    assert_eq!(receiver.wait_for(1, Duration::from_secs(5)).await.len(), 1);
    tx.rollback().await.unwrap();
    drop(fanned);
    sent_again_and_recorded_once(&s, &receiver, endpoint.id).await;
    s.webhooks.shutdown().await;
    receiver.shutdown().await;
}

/// The dispatcher's connection is killed between the inline POST and the commit, as a crash
/// would cut it: the commit fails and the next round delivers.
async fn a_round_cut_off_before_its_commit_is_dispatched_again() {
    let s = setup(PgRoute::Direct, inline(2)).await;
    let (receiver, endpoint) = receiver_and_endpoint(&s, |e| e).await;
    publish(&s, &[event("organization.created", 1)]).await;
    let (mut tx, fanned) = fanned_out_uncommitted(&s).await;
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut **tx)
        .await
        .unwrap();
    assert_eq!(receiver.wait_for(1, Duration::from_secs(5)).await.len(), 1);
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(s.db.pool())
        .await
        .unwrap();
    assert!(killed);
    assert!(
        tx.commit().await.is_err(),
        "the cut-off round did not commit"
    );
    drop(fanned);
    sent_again_and_recorded_once(&s, &receiver, endpoint.id).await;
    s.webhooks.shutdown().await;
    receiver.shutdown().await;
}

#[tokio::test]
async fn a_round_cut_off_before_its_commit_is_dispatched_again_direct() {
    a_round_cut_off_before_its_commit_is_dispatched_again().await;
}

neo_testkit::over_routes!(
    an_inline_attempt_without_its_rows_reads_them_after_the_commit,
    one_transaction_per_round_sends_inline_and_a_worker_takes_the_rest,
    an_inline_attempt_goes_out_before_the_commit_and_is_recorded_after_it,
    a_rolled_back_round_records_nothing_and_the_event_is_sent_again,
);
