//! Trace context across the queue: a job enqueued inside a traced span carries its context,
//! and the job's run span links to it.

use crate::setup;
use neo_core::TraceContext;
use neo_queue::{NewJob, OnDuplicate, Worker, WorkerConfig};
use neo_testkit::{PgRoute, TraceCapture};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A request's context with a trace id of its own.
fn request_context() -> TraceContext {
    let id = uuid::Uuid::now_v7();
    let span: [u8; 8] = id.as_bytes()[8..].try_into().unwrap();
    TraceContext::new(*id.as_bytes(), span, true)
        .unwrap()
        .with_tracestate("neo=test")
        .unwrap()
}

async fn a_job_enqueued_in_a_span_runs_in_a_span_linked_to_it(route: PgRoute) {
    let capture = TraceCapture::install();
    let (_t, db, queue) = setup(route, |c| c).await;
    let request = request_context();
    let span = tracing::info_span!(
        "request",
        traceparent = %request,
        tracestate = request.tracestate().unwrap()
    );
    let traced = span.in_scope(|| NewJob::new("traced", &"in the request").unwrap());
    let untraced = NewJob::new("traced", &"outside any span").unwrap();
    // Explicitly without a context, inside the span.
    let cleared = span.in_scope(|| {
        NewJob::new("traced", &"cleared")
            .unwrap()
            .trace_context(None)
    });
    queue
        .enqueue_many(&db, vec![traced, untraced, cleared], OnDuplicate::Skip)
        .await
        .unwrap();

    // Stored with the job, in the column migration 5 added.
    let stored: Vec<(serde_json::Value, Option<String>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT payload, trace_context->>'traceparent' FROM {}.jobs ORDER BY payload::text",
            queue.config().schema
        )))
        // Unnamed, in a transaction behind PgBouncer (see neo_db::Pooler).
        .persistent(false)
        .fetch_all(&mut *db.statement_connection().await.unwrap())
        .await
        .unwrap();
    let by_payload: Vec<(&str, Option<&str>)> = stored
        .iter()
        .map(|(p, t)| (p.as_str().unwrap(), t.as_deref()))
        .collect();
    let request_header = request.traceparent();
    assert_eq!(
        by_payload,
        vec![
            ("cleared", None),
            ("in the request", Some(request_header.as_str())),
            ("outside any span", None),
        ]
    );

    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let worker = Worker::new(queue.clone(), WorkerConfig::default()).handle("traced", move |job| {
        let record = Arc::clone(&record);
        async move {
            let payload = job.payload.as_str().unwrap().to_owned();
            record.lock().unwrap().push((payload, job.trace_context));
            Ok(())
        }
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "the jobs did not run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(stop);
    run.await.unwrap().unwrap();

    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(seen[0], ("cleared".to_owned(), None));
    // The handler gets the context back whole, tracestate included.
    assert_eq!(
        seen[1],
        ("in the request".to_owned(), Some(request.clone()))
    );
    assert_eq!(seen[2], ("outside any span".to_owned(), None));

    // Exactly one run span links to the request; it names the job and the link.
    let linked = capture.linked_to("neo_queue.job", request.trace_id());
    assert_eq!(linked.len(), 1, "{linked:?}");
    assert_eq!(linked[0].links, vec![request.clone()]);
    assert_eq!(linked[0].field("kind"), Some("traced"));
    assert_eq!(
        linked[0].field("link.traceparent"),
        Some(request_header.as_str())
    );
}

neo_testkit::over_routes!(a_job_enqueued_in_a_span_runs_in_a_span_linked_to_it);
