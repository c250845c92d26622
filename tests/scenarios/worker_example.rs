//! `examples/worker` (no HTTP API) on the test server: a `report.build` job enqueued from
//! outside runs, its `report.ready` event goes through the outbox to a webhook endpoint, the
//! same worker delivers it, signed, to a local receiver; then the worker stops gracefully and
//! reports the job done and the delivery recorded.

use neo_commons::events::{AddressPolicy, DeliveryStatus, NewEndpoint, Verifier};
use neo_commons::queue::{NewJob, OnDuplicate};
use serde_json::{Value, json};
use std::time::Duration;
use webhook_worker::{Config, REPORT_JOB, WorkerService};

#[tokio::test]
async fn the_worker_runs_a_job_delivers_its_webhook_and_stops_gracefully() {
    let pg = neo_testkit::postgres().await;
    let mut config = Config {
        db: neo_commons::db::DbConfig::with_url(pg.url()),
        ..Config::default()
    };
    // The receiver listens on loopback, over plain HTTP.
    config.webhooks.addresses = AddressPolicy {
        allow_loopback: true,
        allow_private: false,
    };
    config.webhooks.require_https = false;
    let service = WorkerService::compose(config).await.unwrap();

    let receiver = neo_testkit::HttpReceiver::start().await.unwrap();
    let endpoint = service
        .webhooks
        .create_endpoint(NewEndpoint::new(receiver.url("/hooks")).subscribe("report.*"))
        .await
        .unwrap();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner = service.clone();
    let running = tokio::spawn(async move { runner.run(stopped).await.map_err(|e| e.to_string()) });

    let job = NewJob::new(REPORT_JOB, &json!({ "report": "q3" })).unwrap();
    let job_id = job.id();
    service
        .queue
        .enqueue(service.db.pool(), job, OnDuplicate::Skip)
        .await
        .unwrap();

    let received = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(received.len(), 1, "no webhook within 20 s");
    let hook = &received[0];
    Verifier::new(vec![endpoint.secret().clone()])
        .verify_headers(
            hook.header("webhook-id"),
            hook.header("webhook-timestamp"),
            hook.header("webhook-signature"),
            &hook.body,
        )
        .unwrap();
    let body: Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(body["type"], "report.ready");
    assert!(
        hook.body.windows(4).any(|w| w == b"\"q3\""),
        "the payload names the report: {body}"
    );
    let built: i64 = sqlx::query_scalar("SELECT count(*) FROM reports WHERE name = 'q3'")
        .fetch_one(service.db.pool())
        .await
        .unwrap();
    assert_eq!(built, 1);

    stop.send_replace(true);
    let report = tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("the worker did not stop within 15 s")
        .unwrap()
        .unwrap();
    // The report job acknowledged. The webhook went out as the fan-out's inline first
    // attempt (its delivery job cancelled once it was recorded) or through the delivery
    // job, acknowledged too: either way it is recorded as delivered.
    assert!(report.succeeded >= 1, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
    // An inline attempt records its outcome a moment after the receiver answered.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let delivered = service
            .webhooks
            .deliveries(endpoint.id, Some(DeliveryStatus::Delivered), 10)
            .await
            .unwrap();
        if delivered.len() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the webhook is not recorded as delivered: {delivered:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        service.queue.get(job_id).await.unwrap(),
        None,
        "the job is acknowledged"
    );
    receiver.shutdown().await;
    println!(
        "job {job_id} ran, webhook {:?} delivered, worker stopped: {report:?}",
        hook.header("webhook-id")
    );
}
