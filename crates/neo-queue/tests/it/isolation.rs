//! Cross-tenant isolation of a tenant-isolated queue, in each mode (a schema per tenant, row-level
//! security), each directly and through PgBouncer: tenant A's calls never return, count or
//! change tenant B's jobs, B's job ids presented by A find nothing, calls without a tenant fail
//! closed. Under row-level security, raw SQL on the application role sees nothing without the
//! tenant setting. (The queue has no in-memory implementation.)

use crate::{Mode, isolated};
use neo_core::{ErrorKind, HasErrorKind, JobId, TenantId};
use neo_db::TenantIsolation;
use neo_queue::{Error, Failure, NewJob, OnDuplicate, Queue};
use neo_tenant::{TenantData, scope};
use neo_testkit::PgRoute;

/// Each isolation test, once per tenant-isolated mode and route, with two fresh tenants (A
/// acts, B is the victim).
macro_rules! isolation {
    ($($name:ident),* $(,)?) => {
        isolation!(@mode schema_per_tenant, Schemas, Direct, $($name),*);
        isolation!(@mode schema_per_tenant_pgbouncer, Schemas, PgBouncer, $($name),*);
        isolation!(@mode rls, Rls, Direct, $($name),*);
        isolation!(@mode rls_pgbouncer, Rls, PgBouncer, $($name),*);
    };
    (@mode $module:ident, $mode:ident, $route:ident, $($name:ident),*) => {
        mod $module {
            $(#[tokio::test] async fn $name() {
                super::$name(crate::Mode::$mode, neo_testkit::PgRoute::$route).await
            })*
        }
    };
}

isolation!(
    tenant_a_never_reads_counts_or_changes_tenant_b,
    calls_without_a_tenant_fail_closed,
    enqueue_in_a_callers_transaction_acts_for_its_tenant_only,
    enqueue_across_tenants_needs_each_jobs_tenant_and_shared_tables,
);

fn job(kind: &str, n: i64) -> NewJob {
    NewJob::new(kind, &serde_json::json!({ "n": n })).unwrap()
}

/// What B holds: two available jobs (one with unique key `k`) and one dead letter.
struct Victim {
    available: Vec<JobId>,
    dead: JobId,
}

async fn seed_victim(queue: &Queue, db: &neo_db::Db, b: TenantId) -> Victim {
    let qb = queue.for_tenant(b);
    let dead = qb
        .enqueue(db, job("b", 0).priority(10), OnDuplicate::Error)
        .await
        .unwrap()
        .unwrap();
    let available: Vec<JobId> = qb
        .enqueue_many(
            db,
            vec![job("b", 1).unique_key("k"), job("b", 2)],
            OnDuplicate::Error,
        )
        .await
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let claimed = qb.claim("w", 1, None).await.unwrap();
    assert_eq!(claimed[0].id, dead);
    assert_eq!(claimed[0].tenant_id().unwrap(), Some(b), "stamped with B");
    qb.record_progress(
        claimed[0].receipt(),
        Some(5.0),
        Some(&serde_json::json!("b's")),
    )
    .await
    .unwrap();
    qb.nack_many(&[Failure::permanent(claimed[0].receipt(), "boom")])
        .await
        .unwrap();
    Victim { available, dead }
}

/// B's view of its own jobs: depth, dead letters and each job as stored.
async fn victim_view(
    queue: &Queue,
    b: TenantId,
    victim: &Victim,
) -> impl PartialEq + std::fmt::Debug {
    let qb = queue.for_tenant(b);
    let depth = qb.depth().await.unwrap();
    let dead: Vec<JobId> = qb
        .dead_letters(10)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    let mut stored = Vec::new();
    for id in victim.available.iter().chain([&victim.dead]) {
        stored.push(qb.get(*id).await.unwrap().expect("B's job is there"));
    }
    let output = qb
        .job_output(victim.dead)
        .await
        .unwrap()
        .expect("B's output");
    (
        (depth.available, depth.running, depth.dead),
        dead,
        format!("{stored:?} {output:?}"),
    )
}

async fn tenant_a_never_reads_counts_or_changes_tenant_b(mode: Mode, route: PgRoute) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let (_s, db, queue) = isolated(mode, route, |c| c, &[a, b]).await;
    let victim = seed_victim(&queue, &db, b).await;
    let before = victim_view(&queue, b, &victim).await;
    let b_ids: Vec<JobId> = victim
        .available
        .iter()
        .copied()
        .chain([victim.dead])
        .collect();

    // A acts through the task's tenant, on the queue bound to no tenant.
    let own = scope(a, async {
        // B's unique key is free for A (A cannot learn that B holds it).
        let own = queue
            .enqueue(&db, job("a", 1).unique_key("k"), OnDuplicate::Error)
            .await
            .unwrap()
            .unwrap();
        // Reads by B's ids find nothing.
        for id in &b_ids {
            assert_eq!(queue.get(*id).await.unwrap(), None, "B's job {id}");
            assert_eq!(
                queue.job_output(*id).await.unwrap(),
                None,
                "B's output {id}"
            );
        }
        // Lists and counts: only A's.
        assert!(queue.dead_letters(10).await.unwrap().is_empty());
        let depth = queue.depth().await.unwrap();
        assert_eq!((depth.available, depth.running, depth.dead), (1, 0, 0));
        let stored = queue.get(own).await.unwrap().unwrap();
        assert_eq!(stored.tenant_id().unwrap(), Some(a));
        // Updates of B's jobs change nothing.
        assert_eq!(queue.requeue(&b_ids).await.unwrap(), Vec::<JobId>::new());
        // A job of B cannot be enqueued while acting for A.
        let refused = queue
            .enqueue(&db, job("a", 2).tenant_id(b), OnDuplicate::Skip)
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Validation, "{refused}");
        own
    })
    .await;
    // The same through a queue bound to A, whatever the task's tenant (here B's).
    let qa = queue.for_tenant(a);
    scope(b, async {
        for id in &b_ids {
            assert_eq!(qa.get(*id).await.unwrap(), None);
        }
        assert_eq!(qa.depth().await.unwrap().available, 1);
        assert!(qa.requeue(&[victim.dead]).await.unwrap().is_empty());
        // Cancels by B's ids or of B's kind cancel nothing.
        assert!(qa.cancel(&b_ids).await.unwrap().is_empty());
        let b_kind = neo_queue::CancelFilter::kind("b").unwrap();
        assert!(qa.cancel_matching(&b_kind).await.unwrap().is_empty());
    })
    .await;

    // Offboarding A exports and purges A's job and nothing of B's.
    let mut sink = Rows(Vec::new());
    assert_eq!(queue.export(a, &mut sink).await.unwrap(), 1);
    assert_eq!(sink.0.len(), 1);
    assert_eq!(sink.0[0]["id"], own.to_string());
    assert_eq!(queue.purge(a).await.unwrap(), 1);
    assert_eq!(qa.get(own).await.unwrap(), None);

    // B's jobs, counts and dead letters are as they were.
    assert_eq!(victim_view(&queue, b, &victim).await, before);
    // And B's unique key still holds for B.
    let duplicate = queue
        .for_tenant(b)
        .enqueue(&db, job("b", 3).unique_key("k"), OnDuplicate::Error)
        .await
        .unwrap_err();
    assert!(
        matches!(&duplicate, Error::Duplicate { key } if key == "k"),
        "{duplicate}"
    );
}

/// An export sink that keeps the rows.
struct Rows(Vec<serde_json::Value>);

impl neo_tenant::ExportSink for Rows {
    fn row(&mut self, _table: &str, row: serde_json::Value) -> Result<(), neo_tenant::Error> {
        self.0.push(row);
        Ok(())
    }
}

async fn calls_without_a_tenant_fail_closed(mode: Mode, route: PgRoute) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let (_s, db, queue) = isolated(mode, route, |c| c, &[a, b]).await;
    let victim = seed_victim(&queue, &db, b).await;
    let before = victim_view(&queue, b, &victim).await;
    let unauthorized = |e: Error| {
        assert!(
            matches!(e, Error::Tenant(_)),
            "a typed tenant error, got {e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::Unauthorized);
    };
    unauthorized(
        queue
            .enqueue(&db, job("x", 1), OnDuplicate::Skip)
            .await
            .unwrap_err(),
    );
    unauthorized(queue.get(victim.dead).await.unwrap_err());
    unauthorized(queue.dead_letters(10).await.unwrap_err());
    unauthorized(queue.requeue(&[victim.dead]).await.unwrap_err());
    unauthorized(queue.depth().await.unwrap_err());
    unauthorized(queue.job_output(victim.dead).await.unwrap_err());
    unauthorized(queue.cancel(&[victim.dead]).await.unwrap_err());
    // Jobs that name their tenant carry it explicitly: one tenant per call, and a tenant id.
    let named = queue
        .enqueue(&db, job("x", 2).tenant_id(a), OnDuplicate::Skip)
        .await
        .unwrap()
        .unwrap();
    let stored = queue.for_tenant(a).get(named).await.unwrap().unwrap();
    assert_eq!(stored.tenant_id().unwrap(), Some(a));
    for refused in [
        vec![job("x", 3).tenant_id(a), job("x", 4).tenant_id(b)],
        vec![job("x", 5).tenant("eu-west/acme")],
    ] {
        let error = queue
            .enqueue_many(&db, refused, OnDuplicate::Skip)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Validation, "{error}");
    }
    assert_eq!(queue.for_tenant(a).depth().await.unwrap().available, 1);
    if mode == Mode::Schemas {
        // Every call needs the tenant's schema, claims and migrations included.
        unauthorized(queue.claim("w", 10, None).await.unwrap_err());
        unauthorized(queue.rescue_expired().await.unwrap_err());
        unauthorized(queue.migrate().await.unwrap_err());
    }
    assert_eq!(victim_view(&queue, b, &victim).await, before);
}

async fn enqueue_in_a_callers_transaction_acts_for_its_tenant_only(mode: Mode, route: PgRoute) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let (_s, db, queue) = isolated(mode, route, |c| c, &[a, b]).await;
    let isolation = mode.isolation().unwrap();
    let qa = queue.for_tenant(a);
    // The caller's transaction entered A: the job is A's, and exists once it commits.
    let mut tx = isolation.begin(&db, a).await.unwrap();
    let id = qa
        .enqueue(&mut *tx, job("a", 1), OnDuplicate::Skip)
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        qa.get(id).await.unwrap().unwrap().tenant_id().unwrap(),
        Some(a)
    );
    if mode == Mode::Rls {
        // A transaction acting for B refuses a job of A, and nothing is written.
        let mut tx = isolation.begin(&db, b).await.unwrap();
        let refused = qa
            .enqueue(&mut *tx, job("a", 2), OnDuplicate::Skip)
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Validation, "{refused}");
        tx.rollback().await.unwrap();
        assert_eq!(queue.for_tenant(b).depth().await.unwrap().available, 0);
    }
    assert_eq!(qa.depth().await.unwrap().available, 1);
}

/// Work that spans tenants (a webhook fan-out) enqueues several tenants' jobs in one statement
/// on the system role: under row-level security each job must name its tenant, and each
/// tenant then sees its own; a schema per tenant refuses it (one table per tenant). A refused
/// call writes nothing.
async fn enqueue_across_tenants_needs_each_jobs_tenant_and_shared_tables(
    mode: Mode,
    route: PgRoute,
) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let (_s, _db, queue) = isolated(mode, route, |c| c, &[a, b]).await;
    let system = queue.system_db().clone();
    let both = || vec![job("a", 1).tenant_id(a), job("b", 1).tenant_id(b)];
    if mode == Mode::Schemas {
        let refused = queue
            .enqueue_across_tenants(system.pool(), both(), OnDuplicate::Skip)
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Validation, "{refused}");
        assert!(refused.to_string().contains("per tenant"), "{refused}");
        return;
    }
    // No tenant in scope: the jobs name theirs.
    let mut tx = system.begin().await.unwrap();
    let ids = queue
        .enqueue_across_tenants(&mut *tx, both(), OnDuplicate::Skip)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (ida, idb) = (ids[0].unwrap(), ids[1].unwrap());
    let (qa, qb) = (queue.for_tenant(a), queue.for_tenant(b));
    assert_eq!(
        qa.get(ida).await.unwrap().unwrap().tenant_id().unwrap(),
        Some(a)
    );
    assert_eq!(
        qb.get(idb).await.unwrap().unwrap().tenant_id().unwrap(),
        Some(b)
    );
    assert_eq!(qa.get(idb).await.unwrap(), None, "A does not see B's job");
    assert_eq!(qb.get(ida).await.unwrap(), None, "B does not see A's job");
    // A job without a tenant id is refused, and its neighbours are not written.
    for refused in [
        vec![job("a", 2).tenant_id(a), job("x", 1)],
        vec![job("a", 3).tenant_id(a), job("x", 2).tenant("eu-west/acme")],
    ] {
        let error = queue
            .enqueue_across_tenants(system.pool(), refused, OnDuplicate::Skip)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Validation, "{error}");
    }
    assert_eq!(qa.depth().await.unwrap().available, 1);
    assert_eq!(qb.depth().await.unwrap().available, 1);
}

/// Raw SQL on the application role (never the owner, never a superuser): without the tenant
/// setting it sees no job and changes none; with A's it sees A's only and cannot write one of
/// B's; the system role (`BYPASSRLS`, not the owner) sees every tenant's.
async fn raw_sql_on_the_app_role(route: PgRoute) {
    use sqlx::Connection as _;
    let (a, b) = (TenantId::new(), TenantId::new());
    let (s, db, queue) = isolated(Mode::Rls, route, |c| c, &[a, b]).await;
    seed_victim(&queue, &db, b).await;
    queue
        .for_tenant(a)
        .enqueue(&db, job("a", 1), OnDuplicate::Skip)
        .await
        .unwrap();
    let mut superuser = sqlx::PgConnection::connect(s.direct_url()).await.unwrap();
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM neo_queue.jobs")
        .fetch_one(&mut superuser)
        .await
        .unwrap();
    assert_eq!(all, 4, "B's three and A's one");
    let outputs: i64 = sqlx::query_scalar("SELECT count(*) FROM neo_queue.job_outputs")
        .fetch_one(&mut superuser)
        .await
        .unwrap();
    assert_eq!(outputs, 1, "B's one");

    let mut tx = db.begin().await.unwrap();
    let facts = neo_testkit::RoleFacts::read(&mut tx, "neo_queue.jobs")
        .await
        .unwrap();
    assert_eq!(facts.role, s.roles().app());
    assert!(
        facts.bound_by_policies(),
        "the app role bypasses nothing: {facts:?}"
    );
    assert_eq!(
        facts.table_owner,
        s.roles().owner(),
        "and does not own the table"
    );
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM neo_queue.jobs")
        .persistent(false)
        .fetch_one(&mut **tx)
        .await
        .unwrap();
    assert_eq!(seen, 0, "no tenant set, no job seen");
    let outputs: i64 = sqlx::query_scalar("SELECT count(*) FROM neo_queue.job_outputs")
        .persistent(false)
        .fetch_one(&mut **tx)
        .await
        .unwrap();
    assert_eq!(outputs, 0, "no tenant set, no output seen");
    let changed = sqlx::query("UPDATE neo_queue.jobs SET state = 'available'")
        .persistent(false)
        .execute(&mut **tx)
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 0);
    let deleted = sqlx::query("DELETE FROM neo_queue.jobs")
        .persistent(false)
        .execute(&mut **tx)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 0);
    tx.rollback().await.unwrap();

    let mut tx = TenantIsolation::row_level_security()
        .begin(&db, a)
        .await
        .unwrap();
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM neo_queue.jobs")
        .persistent(false)
        .fetch_all(&mut **tx)
        .await
        .unwrap();
    assert_eq!(kinds, vec!["a".to_owned()]);
    let smuggled = sqlx::query(
        "INSERT INTO neo_queue.jobs (id, kind, payload, max_attempts, tenant) \
         VALUES (gen_random_uuid(), 'x', '{}', 1, $1)",
    )
    .persistent(false)
    .bind(b.to_string())
    .execute(&mut **tx)
    .await
    .unwrap_err();
    assert!(
        smuggled.to_string().contains("row-level security"),
        "{smuggled}"
    );
    drop(tx);

    // The system role crosses tenants by design, and owns nothing either.
    let system = queue.system_db();
    let mut tx = system.begin().await.unwrap();
    let facts = neo_testkit::RoleFacts::read(&mut tx, "neo_queue.jobs")
        .await
        .unwrap();
    assert!(facts.crosses_tenants_only_by_bypassrls(), "{facts:?}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM neo_queue.jobs")
        .persistent(false)
        .fetch_one(&mut **tx)
        .await
        .unwrap();
    assert_eq!(count, 4);
    tx.rollback().await.unwrap();
    // Nothing changed.
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM neo_queue.jobs")
        .fetch_one(&mut superuser)
        .await
        .unwrap();
    assert_eq!(all, 4);
}

#[tokio::test]
async fn rls_raw_sql_on_the_app_role_without_the_tenant_sees_nothing() {
    raw_sql_on_the_app_role(PgRoute::Direct).await;
}

#[tokio::test]
async fn rls_raw_sql_on_the_app_role_without_the_tenant_sees_nothing_through_pgbouncer() {
    raw_sql_on_the_app_role(PgRoute::PgBouncer).await;
}

/// Under row-level security the fair claim takes turns across tenant ids: B's one job is
/// claimed with A's first despite A's backlog.
#[tokio::test]
async fn rls_fair_claims_take_turns_across_tenant_ids() {
    let (a, b) = (TenantId::new(), TenantId::new());
    let (_s, db, queue) = isolated(Mode::Rls, PgRoute::Direct, |c| c, &[a, b]).await;
    let backlog: Vec<NewJob> = (0..50).map(|n| job("a", n)).collect();
    queue
        .for_tenant(a)
        .enqueue_many(&db, backlog, OnDuplicate::Skip)
        .await
        .unwrap();
    queue
        .for_tenant(b)
        .enqueue(&db, job("b", 0), OnDuplicate::Skip)
        .await
        .unwrap();
    // Claims span tenants: no tenant needed, none in scope.
    let claimed = queue.claim("w", 2, None).await.unwrap();
    let mut tenants: Vec<Option<TenantId>> =
        claimed.iter().map(|j| j.tenant_id().unwrap()).collect();
    tenants.sort();
    let mut expected = vec![Some(a), Some(b)];
    expected.sort();
    assert_eq!(tenants, expected);
}
