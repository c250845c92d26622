//! The tenant in spans and in the handler's task: the enqueue, claim and job spans carry a
//! `tenant` field, and a worker runs each job's handler inside `neo_tenant::scope` of the job's
//! tenant, so the stores the handler calls (here the queue itself, bound to no tenant) act for
//! it.

use crate::{Mode, isolated};
use neo_core::TenantId;
use neo_queue::{JobError, NewJob, OnDuplicate, Worker, WorkerConfig};
use neo_testkit::PgRoute;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;

/// `(span name, tenant)` for every `tenant` recorded on a span.
#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<(String, String)>>>);

struct Visit<'a>(&'a Mutex<Vec<(String, String)>>, &'static str);

impl tracing::field::Visit for Visit<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "tenant" {
            self.0
                .lock()
                .unwrap()
                .push((self.1.to_owned(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "tenant" {
            let value = format!("{value:?}");
            self.0.lock().unwrap().push((self.1.to_owned(), value));
        }
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Recorded {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        attrs.record(&mut Visit(&self.0, attrs.metadata().name()));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let name = ctx.span(id).map_or("?", |s| s.metadata().name());
        values.record(&mut Visit(&self.0, name));
    }
}

impl Recorded {
    fn tenants_of(&self, span: &str) -> BTreeSet<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(name, _)| name == span)
            .map(|(_, tenant)| tenant.clone())
            .collect()
    }
}

/// What a handler saw: its job's tenant, its task's tenant, and the running jobs the queue
/// counted for the task's tenant.
type Seen = (Option<TenantId>, Option<TenantId>, i64);

/// A worker over a row-level-security queue (claims spanning tenants) runs A's and B's jobs,
/// each handler as its job's tenant; every span names the tenant. The test runs on one thread,
/// so the subscriber set for it sees the worker's tasks too.
#[tokio::test(flavor = "current_thread")]
async fn spans_carry_the_tenant_and_handlers_run_as_their_jobs_tenant() {
    let recorded = Recorded::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(recorded.clone()));
    let (a, b) = (TenantId::new(), TenantId::new());
    let (_s, db, queue) = isolated(Mode::Rls, PgRoute::Direct, |c| c, &[a, b]).await;
    for (tenant, n) in [(a, 3), (b, 2)] {
        let jobs: Vec<NewJob> = (0..n).map(|i| NewJob::new("whoami", &i).unwrap()).collect();
        queue
            .for_tenant(tenant)
            .enqueue_many(&db, jobs, OnDuplicate::Skip)
            .await
            .unwrap();
    }
    // What each handler saw: the job's tenant, the task's tenant, and the depth the queue
    // (bound to no tenant) reports for the task's tenant.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let (sink, store) = (Arc::clone(&seen), queue.clone());
    let worker = Worker::new(
        queue.clone(),
        WorkerConfig {
            concurrency: 2,
            poll_interval: Duration::from_millis(50),
            ..WorkerConfig::default()
        },
    )
    .handle("whoami", move |job| {
        let (sink, store) = (Arc::clone(&sink), store.clone());
        async move {
            let running = store.depth().await.map_err(JobError::retry)?.running;
            sink.lock()
                .unwrap()
                .push((job.tenant_id().unwrap(), neo_tenant::current(), running));
            Ok(())
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.lock().unwrap().len() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    assert_eq!(run.await.unwrap().unwrap().succeeded, 5);
    let seen = seen.lock().unwrap().clone();
    for (job_tenant, task_tenant, running) in &seen {
        assert!(job_tenant.is_some());
        assert_eq!(
            job_tenant, task_tenant,
            "the handler runs as its job's tenant"
        );
        assert!(
            *running >= 1,
            "the store saw the job's tenant's running job"
        );
    }
    assert_eq!(seen.iter().filter(|s| s.0 == Some(a)).count(), 3);

    let both: BTreeSet<String> = [a.to_string(), b.to_string()].into();
    assert_eq!(recorded.tenants_of("neo_queue.enqueue"), both);
    assert_eq!(recorded.tenants_of("neo_queue.job"), both);
    // A claim across tenants records the tenant when all its jobs are one tenant's.
    let before = recorded.tenants_of("neo_queue.claim");
    let lone = TenantId::new();
    queue
        .for_tenant(lone)
        .enqueue(&db, NewJob::new("whoami", &9).unwrap(), OnDuplicate::Skip)
        .await
        .unwrap();
    assert!(!before.contains(&lone.to_string()));
    assert_eq!(queue.claim("w", 5, None).await.unwrap().len(), 1);
    assert!(
        recorded
            .tenants_of("neo_queue.claim")
            .contains(&lone.to_string())
    );
}
