//! Progress and output in every mode: recorded by a running handler, readable by id while it
//! runs and after its ack; fenced (a lost or cancelled claim records nothing); bad values
//! refused; a worker that dies mid-job leaves its last progress, and the retry's run goes on
//! from there.

use crate::worker::spawn_until_stopped;
use crate::{Mode, setup_in};
use neo_queue::{Error, JobContext, NewJob, OnDuplicate, QueueConfig, Worker, WorkerConfig};
use neo_testkit::PgRoute;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

async fn a_handler_records_progress_and_output_readable_by_id_after_the_ack(
    mode: Mode,
    route: PgRoute,
) {
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let id = queue
        .enqueue(&db, NewJob::new("report", &1).unwrap(), OnDuplicate::Error)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(queue.job_output(id).await.unwrap(), None);
    let halfway = Arc::new(Notify::new());
    let go_on = Arc::new(Notify::new());
    let (at_half, proceed) = (Arc::clone(&halfway), Arc::clone(&go_on));
    let worker =
        Worker::new(queue.clone(), WorkerConfig::default()).handle("report", move |_job| {
            let (at_half, proceed) = (Arc::clone(&at_half), Arc::clone(&proceed));
            async move {
                let context = JobContext::current().unwrap();
                context.record_progress(Some(50.0), None).await.unwrap();
                at_half.notify_one();
                proceed.notified().await;
                let output = json!({ "rows": 1200 });
                context
                    .record_progress(Some(100.0), Some(&output))
                    .await
                    .unwrap();
                Ok(())
            }
        });
    let (stop, run) = spawn_until_stopped(worker);
    tokio::time::timeout(Duration::from_secs(5), halfway.notified())
        .await
        .unwrap();
    let seen = queue.job_output(id).await.unwrap().unwrap();
    assert_eq!((seen.progress, seen.output.clone()), (Some(50.0), None));
    assert_eq!(seen.kind, "report");
    go_on.notify_one();
    let deadline = Instant::now() + Duration::from_secs(5);
    while queue.get(id).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "not acked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The job is gone (acked); what it recorded stays.
    let done = queue.job_output(id).await.unwrap().unwrap();
    assert_eq!(done.progress, Some(100.0));
    assert_eq!(done.output, Some(json!({ "rows": 1200 })));
    assert!(done.updated_at >= seen.updated_at);
    stop.send(()).unwrap();
    assert_eq!(run.await.unwrap().unwrap().succeeded, 1);
}

async fn progress_is_fenced_and_bad_values_are_refused(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| QueueConfig {
        max_output_bytes: 100,
        ..c
    })
    .await;
    let id = queue
        .enqueue(&db, NewJob::new("p", &1).unwrap(), OnDuplicate::Error)
        .await
        .unwrap()
        .unwrap();
    let job = queue.claim("w", 1, None).await.unwrap().remove(0);
    let receipt = job.receipt();
    for bad in [-1.0, 100.5, f32::NAN] {
        let refused = queue
            .record_progress(receipt, Some(bad), None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused,
                Error::Invalid {
                    what: "job progress",
                    ..
                }
            ),
            "{refused}"
        );
    }
    let big = json!({ "blob": "x".repeat(200) });
    let refused = queue
        .record_progress(receipt, None, Some(&big))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            Error::Invalid {
                what: "job output",
                ..
            }
        ),
        "{refused}"
    );
    queue
        .record_progress(receipt, Some(10.0), Some(&json!("ok")))
        .await
        .unwrap();
    // An older claim of the same job (a stale fence) records nothing.
    let stale = neo_queue::Receipt {
        id,
        fence: receipt.fence - 1,
    };
    assert!(matches!(
        queue.record_progress(stale, Some(90.0), None).await,
        Err(Error::LeaseLost { .. })
    ));
    // Nor does a cancelled one.
    queue.cancel(&[id]).await.unwrap();
    assert!(matches!(
        queue.record_progress(receipt, Some(90.0), None).await,
        Err(Error::LeaseLost { .. })
    ));
    let kept = queue.job_output(id).await.unwrap().unwrap();
    assert_eq!(
        (kept.progress, kept.output),
        (Some(10.0), Some(json!("ok")))
    );
}

/// Fault: the worker dies mid-job after recording progress. The job is rescued and run again
/// elsewhere; the second run reads the first's progress and goes on from it.
async fn a_retry_after_a_worker_died_reads_the_progress_it_left(mode: Mode, route: PgRoute) {
    let (_t, db, queue) = setup_in(mode, route, |c| QueueConfig {
        lease: Duration::from_millis(500),
        ..c
    })
    .await;
    let id = queue
        .enqueue(&db, NewJob::new("resume", &1).unwrap(), OnDuplicate::Error)
        .await
        .unwrap()
        .unwrap();
    let recorded = Arc::new(Notify::new());
    let signal = Arc::clone(&recorded);
    let a = Worker::new(queue.clone(), WorkerConfig::default()).handle("resume", move |_job| {
        let signal = Arc::clone(&signal);
        async move {
            let context = JobContext::current().unwrap();
            context
                .record_progress(Some(30.0), Some(&json!({ "cursor": 300 })))
                .await
                .unwrap();
            signal.notify_one();
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let a_run = tokio::spawn(a.run(std::future::pending()));
    tokio::time::timeout(Duration::from_secs(5), recorded.notified())
        .await
        .unwrap();
    a_run.abort();
    let _ = a_run.await;

    let finished = Arc::new(Notify::new());
    let signal = Arc::clone(&finished);
    let reader = queue.clone();
    let b = Worker::new(
        queue.clone(),
        WorkerConfig {
            poll_interval: Duration::from_millis(100),
            ..WorkerConfig::default()
        },
    )
    .handle("resume", move |job| {
        let (signal, reader) = (Arc::clone(&signal), reader.clone());
        async move {
            assert_eq!(job.attempt, 2);
            let before = reader.job_output(job.id).await.unwrap().unwrap();
            assert_eq!(before.output, Some(json!({ "cursor": 300 })));
            let context = JobContext::current().unwrap();
            context
                .record_progress(Some(100.0), Some(&json!({ "cursor": 1000 })))
                .await
                .unwrap();
            signal.notify_one();
            Ok(())
        }
    });
    let (stop, b_run) = spawn_until_stopped(b);
    tokio::time::timeout(Duration::from_secs(10), finished.notified())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(()).unwrap();
    assert_eq!(b_run.await.unwrap().unwrap().succeeded, 1);
    let out = queue.job_output(id).await.unwrap().unwrap();
    assert_eq!(
        (out.progress, out.output),
        (Some(100.0), Some(json!({ "cursor": 1000 })))
    );
}

/// An export sink that keeps each row with its table.
struct Tables(Vec<(String, serde_json::Value)>);

impl neo_tenant::ExportSink for Tables {
    fn row(&mut self, table: &str, row: serde_json::Value) -> Result<(), neo_tenant::Error> {
        self.0.push((table.to_owned(), row));
        Ok(())
    }
}

/// Offboarding: a tenant's export hands over the outputs its handlers recorded (table
/// `job_outputs`) beside its jobs, also once the job was acknowledged, and nothing of another
/// tenant's; the purge deletes them.
async fn the_tenant_export_carries_its_outputs(mode: Mode, route: PgRoute) {
    use neo_tenant::TenantData;
    let (_t, db, queue) = setup_in(mode, route, |c| c).await;
    let tenant = queue.tenant().unwrap_or_else(neo_core::TenantId::new);
    let ids: Vec<_> = (0..2)
        .map(|n| NewJob::new("report", &n).unwrap().tenant_id(tenant))
        .collect();
    queue
        .enqueue_many(&db, ids, OnDuplicate::Error)
        .await
        .unwrap();
    let jobs = queue.claim("w", 10, None).await.unwrap();
    assert_eq!(jobs.len(), 2);
    for (n, job) in jobs.iter().enumerate() {
        queue
            .record_progress(job.receipt(), Some(100.0), Some(&json!({ "n": n })))
            .await
            .unwrap();
    }
    // One job finished (acked: its row is gone, its output stays), one still running.
    queue.ack(jobs[0].receipt()).await.unwrap();
    let mut sink = Tables(Vec::new());
    assert_eq!(queue.export(tenant, &mut sink).await.unwrap(), 3);
    let outputs: Vec<_> = sink
        .0
        .iter()
        .filter(|(table, _)| table == "job_outputs")
        .map(|(_, row)| row["id"].as_str().unwrap().to_owned())
        .collect();
    let mut expected: Vec<_> = jobs.iter().map(|j| j.id.to_string()).collect();
    expected.sort();
    let mut outputs = outputs;
    outputs.sort();
    assert_eq!(outputs, expected, "{:?}", sink.0);
    assert_eq!(
        sink.0.iter().filter(|(table, _)| table == "jobs").count(),
        1,
        "the running job"
    );
    let mut other = Tables(Vec::new());
    assert_eq!(
        queue
            .export(neo_core::TenantId::new(), &mut other)
            .await
            .unwrap(),
        0,
        "another tenant has nothing"
    );
    queue.purge(tenant).await.unwrap();
    assert_eq!(queue.job_output(jobs[0].id).await.unwrap(), None);
}

over_modes!(
    the_tenant_export_carries_its_outputs,
    a_handler_records_progress_and_output_readable_by_id_after_the_ack,
    progress_is_fenced_and_bad_values_are_refused,
    a_retry_after_a_worker_died_reads_the_progress_it_left,
);
